"""Token-by-token generation with the KV cache, yielding text as it grows: what streaming needs."""

from __future__ import annotations


def stream_text(net, tok, prompt: str, *, max_tokens: int, temperature: float | None = None,
                seed: int | None = None, positions: int | None = None):
    """Yield the new text after each generated token; greedy unless `temperature` > 0. The prompt is cut
    from the left so that prompt and answer fit the model's positions."""
    import torch

    ids = tok(prompt, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        ids = torch.tensor([[start or 0]])
    if positions:
        max_tokens = max(1, min(max_tokens, positions - 1))
        ids = ids[:, -(positions - max_tokens):]
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    eos, new, said, past, step = tok.eos_token_id, [], "", None, ids
    with torch.no_grad():
        for _ in range(max_tokens):
            out = _forward(net, step, past)
            past, logits = out.past_key_values, out.logits[0, -1]
            if temperature and temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            else:
                token = int(logits.argmax())
            if token == eos:
                break
            new.append(token)
            text = tok.decode(new, skip_special_tokens=True)
            if len(text) > len(said) and not text.endswith("\ufffd"):  # a whole character, not half a UTF-8 one
                yield text[len(said):]
                said = text
            step = torch.tensor([[token]])


def _forward(net, ids, past):
    """One step: the logits after `ids`, and the cache extended by them."""
    return net(input_ids=ids, past_key_values=past, use_cache=True)
