"""How chat messages become a causal LM's prompt: the way the model was trained to read them."""

from __future__ import annotations


class PromptFormat:
    """(tokenizer, messages) -> prompt text, chosen from the model's lineage: the tokenizer's chat template
    where it has one; a `finetune` step of task `sft` frames the last user message as its training did (its
    `template`); a plain language model continues the messages' text. A class, not a closure: LitServe
    pickles it into the inference worker."""

    def __init__(self, meta: dict):
        params = (meta.get("derivation") or {}).get("params") or {}
        self.sft, self.template = params.get("task") == "sft", params.get("template")

    def __call__(self, tok, messages: list[dict]) -> str:
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if self.sft:
            from ..training.pretrained import prompt_text

            user = [m["content"] for m in messages if m["role"] == "user"]
            return prompt_text(tok, user[-1] if user else "", self.template)
        return "\n".join(m["content"] for m in messages if m["content"])
