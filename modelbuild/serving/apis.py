"""One LitAPI per task: what a request holds, what the model is asked, what the response says.

Each runs in LitServe's inference worker process (`setup` loads the model there). A request that does not
fit is an HTTPException raised in `decode_request`: LitServe carries it back to the client as that status,
never as a 500.
"""

from __future__ import annotations

from pathlib import Path

import litserve as ls
from fastapi import HTTPException

from . import metrics


def _problem(status: int, message: str, fields: list[tuple[str, str]] | None = None) -> HTTPException:
    detail = {"error": message}
    if fields:
        detail["fields"] = [{"field": f, "problem": p} for f, p in fields]
    return HTTPException(status, detail=detail)


def die_with_parent() -> None:
    """A server killed with SIGKILL cannot stop its worker: the kernel does (Linux's PR_SET_PDEATHSIG)."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class _Model(ls.LitAPI):
    """The model folder and how many threads torch may use; the batch-size histogram."""

    def __init__(self, model: Path, threads: int, **kw):
        super().__init__(**kw)
        self.model_dir, self.threads = str(model), threads

    def setup(self, device):
        import torch

        die_with_parent()
        torch.set_num_threads(self.threads)
        self.batch_sizes = metrics.batch_size_histogram()
        self.load()



class TabularAPI(_Model):
    """`POST /predict {"records": [{column: value, ...}, ...]}` (or one record) -> predictions, and for a
    classifier the probability of each class. Records are checked against the training data's schema."""

    def __init__(self, model: Path, threads: int, schema, **kw):
        super().__init__(model, threads, **kw)
        self.schema = schema

    def load(self):
        from ..training.tabular import load

        self.net, self.preprocess = load(self.model_dir)
        self.config = self.net.config

    def decode_request(self, request):
        records = request.get("records", request) if isinstance(request, dict) else request
        records = [records] if isinstance(records, dict) else records
        if not isinstance(records, list) or not records:
            raise _problem(422, 'send {"records": [{column: value, ...}, ...]}, one or more records')
        fields = [(f"records[{i}].{name}", problem) for i, record in enumerate(records)
                  for name, problem in self.schema.check(record)]
        if fields:
            raise _problem(422, "the records do not fit the schema the model was trained on", fields)
        return records

    def predict(self, records):
        import torch

        self.batch_sizes.observe(1)
        columns = {c.name: [r[c.name] for r in records] for c in self.schema.columns}
        with torch.no_grad():
            out = self.net(*self.preprocess(columns)).double()
        if self.config["task"] == "tabular-regression":
            return {"predictions": out.tolist()}
        classes = self.config["target"]["classes"]
        proba = torch.softmax(out, dim=1)
        return {"predictions": [classes[i] for i in proba.argmax(dim=1).tolist()],
                "probabilities": [dict(zip(map(str, classes), row, strict=True)) for row in proba.tolist()]}

    def encode_response(self, output):
        return output


class TextClassifierAPI(_Model):
    """`POST /predict {"text": "..."}` -> {"label": ..., "probabilities": {label: p}}. Requests that arrive
    together are answered by one model call (LitServe's dynamic batching: max_batch_size, batch_timeout)."""

    def load(self):
        from ..training.pretrained import load_model, load_tokenizer

        self.net = load_model("sequence-classification", self.model_dir).eval()
        self.tok = load_tokenizer(self.model_dir)
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        config = self.net.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        self.max_length = min(positions or 512, 512)

    def batch(self, inputs):
        self.batch_sizes.observe(len(inputs))
        return list(inputs)

    def unbatch(self, output):
        return list(output)

    def decode_request(self, request):
        text = request.get("text") if isinstance(request, dict) else None
        if not isinstance(text, str):
            raise _problem(422, 'send {"text": "..."}: a JSON object with a string `text`',
                           [("text", f"expected string, got {type(text).__name__}")])
        unknown = sorted(set(request) - {"text"})
        if unknown:
            raise _problem(422, "unknown fields", [(k, 'unknown field; the only field is "text"') for k in unknown])
        return text

    def predict(self, texts):
        import torch

        single = isinstance(texts, str)
        if single:
            self.batch_sizes.observe(1)
        enc = self.tok([texts] if single else texts, truncation=True, max_length=self.max_length, padding=True,
                       return_tensors="pt")
        with torch.no_grad():
            proba = torch.softmax(self.net(**enc).logits.double(), dim=1).tolist()
        out = [{"label": self.labels[max(range(len(p)), key=p.__getitem__)],
                "probabilities": dict(zip(self.labels, p, strict=True))} for p in proba]
        return out[0] if single else out

    def encode_response(self, output):
        return output


class _LanguageModel(_Model):
    """A causal LM behind an OpenAI-compatible route; `predict` yields text as it is generated."""

    def __init__(self, model: Path, threads: int, prompt_format, **kw):
        super().__init__(model, threads, **kw)
        self.prompt_format = prompt_format  # how chat messages become the model's prompt

    def load(self):
        from ..training.pretrained import load_model, load_tokenizer

        self.net = load_model("causal-lm", self.model_dir).eval()
        self.tok = load_tokenizer(self.model_dir)
        config = self.net.config
        self.positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)

    def generate(self, prompt: str, context: dict):
        self.batch_sizes.observe(1)
        from .generate import stream_text

        yield from stream_text(self.net, self.tok, prompt, max_tokens=context.get("max_tokens") or 16,
                               temperature=context.get("temperature"), seed=context.get("seed"),
                               positions=self.positions)


class ChatAPI(_LanguageModel):
    """`/v1/chat/completions`, streaming or not (LitServe's OpenAISpec)."""

    def predict(self, request, context):
        messages = [{"role": m.role, "content": m.content if isinstance(m.content, str) else ""}
                    for m in request.messages]
        yield from self.generate(self.prompt_format(self.tok, messages), context)


class CompletionAPI(_LanguageModel):
    """`/v1/completions`, streaming or not (CompletionSpec)."""

    def predict(self, request, context):
        yield from self.generate(request.prompt, context)

