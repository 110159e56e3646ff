"""Scoring a model artifact on a table: which task it is, and its predictions on every row it can score.

The task is read from the artifact (json only): a tabular export's config.json names it
(`tabular-classification`, `tabular-regression`); a save_pretrained folder's config.json lists its
architecture (`...ForSequenceClassification` -> sequence-classification, `...ForCausalLM` / `...LMHeadModel`
-> causal-lm); a LoRA adapter's adapter_config.json has its peft task type; a GGUF file (or a folder holding
one, as `finetune` takes it) is a causal LM. torch and transformers are imported by the scoring functions only.

A causal LM is scored the way it was trained (`Framing`): a model that `finetune` trained with `task: sft`
on prompt/response pairs is scored on pairs framed as training framed them (the chat template or the
recipe's template, loss on the response tokens only: training/pretrained.py's `sft_examples`), so its
perplexity here is the validation perplexity training reports; any other causal LM on plain text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BuildError, RecipeError, did_you_mean

META = ".meta.json"  # the artifact's lineage, as the store writes it


@dataclass
class Scored:
    """What a model said about a table. Classification: `y_true` class indices, `proba` [n, k];
    regression: `y_true` and `y_pred` numbers; language: per-block `losses` (summed) and `tokens`.
    A column scored as predictions (columns.py) has classification's `y_pred`, a `score` that ranks the rows
    (roc_auc), and `proba` only when the column is a probability.
    `keep` marks the table rows scored (a row without a label, or with a class the model does not know, is
    not), so protected columns can be filtered alike."""

    task: str
    classes: list = field(default_factory=list)
    y_true: object = None
    y_pred: object = None
    proba: object = None
    score: object = None
    losses: list = field(default_factory=list)
    tokens: list = field(default_factory=list)
    keep: object = None
    rows: int = 0
    skipped: int = 0
    framing: str | None = None  # language: how the text was put to the model (Framing.describe)


@dataclass(frozen=True)
class Framing:
    """How a causal LM's data are put to it: prompt/response pairs framed as `sft` trains on them (the
    columns, the template: None for the tokenizer's chat template, tokens per pair: None for the model's
    positions up to 1024) and where these settings came from (`training` or `params`)."""

    prompt: str
    response: str
    template: str | None = None
    max_length: int | None = None
    source: str = "params"

    def as_json(self) -> dict:
        return {"prompt_column": self.prompt, "response_column": self.response, "template": self.template,
                "max_length": self.max_length, "from": self.source}


def detect_task(model: Path) -> str | None:
    """The task of a model artifact, from its own files; None when they do not say."""
    model = Path(model)
    if _gguf(model):
        return "causal-lm"
    config = read_json(model / "config.json")
    if config.get("task") in ("tabular-classification", "tabular-regression"):
        return config["task"]
    architectures = " ".join(config.get("architectures") or [])
    if "ForSequenceClassification" in architectures:
        return "sequence-classification"
    if "ForCausalLM" in architectures or "LMHeadModel" in architectures:
        return "causal-lm"
    adapter = read_json(model / "adapter_config.json")
    return {"SEQ_CLS": "sequence-classification", "CAUSAL_LM": "causal-lm"}.get(adapter.get("task_type"))


def _gguf(model: Path) -> bool:
    """A .gguf file, or a folder holding one and no config.json: what `finetune` reads as a GGUF model."""
    from ..training.pretrained import locate

    try:
        return locate(model).gguf_file is not None
    except BuildError:
        return False


def training_params(model: Path) -> dict:
    """The params the model was trained with (its lineage); {} for a model from outside the store."""
    return dict((read_json(Path(model) / META).get("derivation") or {}).get("params") or {})


def training_data_params(model: Path) -> dict:
    """The `data:` params the model was trained with (its lineage), for the default column names."""
    return dict(training_params(model).get("data") or {})


def framing(task: str, model: Path, params: dict) -> Framing | None:
    """The pairs a causal LM is scored on, or None for plain text. `pairs:` names them; else a model that
    `finetune` trained with `task: sft` is scored on its training's columns, template and max_length, unless
    `text:` asks for plain text. Scoring as training framed the data is what makes evaluate's perplexity and
    training's val_perplexity the same number."""
    from ..training.params import SFT_DATA_DEFAULT

    if task != "causal-lm":
        return None
    trained = training_params(model) if model is not None else {}
    sft = trained.get("task") == "sft"
    if params.get("pairs") is None and (params.get("text") or not sft):
        return None
    data = {**SFT_DATA_DEFAULT, **(trained.get("data") or {} if sft else {}), **(params.get("pairs") or {})}
    source = "params" if params.get("pairs") is not None else "training"
    return Framing(data["prompt"], data["response"], data.get("template"),
                   params.get("max_length") or (trained.get("max_length") if sft else None), source)


def label_column(task: str, model: Path, override: str | None) -> str | None:
    if override:
        return override
    if task.startswith("tabular-"):
        return (read_json(Path(model) / "config.json").get("target") or {}).get("name")
    if task == "sequence-classification":
        return training_data_params(model).get("label", "label")
    return None


def text_column(task: str, model: Path, override: str | None) -> str | None:
    if override:
        return override
    data = training_data_params(model)
    if task == "sequence-classification":
        return data.get("text", "text")
    if task == "causal-lm":
        return data.get("column", "text")
    return None


def classes_of(task: str, model: Path) -> list:
    """The class labels, in output order, from the artifact's config.json."""
    config = read_json(Path(model) / "config.json")
    if task == "tabular-classification":
        return list((config.get("target") or {}).get("classes") or [])
    if task == "sequence-classification":
        id2label = config.get("id2label") or (read_json(Path(model) / "base_model.json").get("id2label")) or {}
        return [id2label[k] for k in sorted(id2label, key=int)]
    return []


# ---- scoring ------------------------------------------------------------------------------------------
def score(task: str, model: Path, table, *, target: str | None, text: str | None, params: dict, log,
          pairs: Framing | None = None) -> Scored:
    """Score `model` on a pyarrow `table`; a causal LM on `pairs` when given, else on the `text` column."""
    import torch

    torch.set_num_threads(params["num_threads"])
    with torch.no_grad():
        if task.startswith("tabular-"):
            return _tabular(task, model, table, target, params)
        if task == "sequence-classification":
            return _sequence_classification(model, table, target, text, params)
        if pairs is not None:
            return _causal_lm_pairs(model, table, pairs, params, log)
        return _causal_lm(model, table, text, params, log)


def _tabular(task: str, model: Path, table, target: str, params: dict) -> Scored:
    import numpy as np
    import torch

    from ..training.tabular import _key, load

    try:
        net, preprocess = load(model)
    except (OSError, ValueError, RuntimeError) as e:
        raise BuildError(f"cannot load the tabular model {model}: {e}. The `model` input must be a `train` "
                         f"artifact of a tabular task") from None
    values = table.column(target).to_pylist()
    if task == "tabular-classification":
        index = {_key(c): i for i, c in enumerate(net.config["target"]["classes"])}
        labels = np.array([index.get(_key(v), -1) if v is not None else -1 for v in values], dtype=np.int64)
        keep = labels >= 0
    else:
        labels = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        keep = np.isfinite(labels)
    rows = table.filter(keep) if not keep.all() else table
    outputs = []
    batch = max(1, params["batch_size"])
    for start in range(0, rows.num_rows, batch):
        numeric, categorical = preprocess(rows.slice(start, batch))
        outputs.append(net(numeric, categorical).double())
    width = len(net.config["target"].get("classes") or []) if task == "tabular-classification" else 0
    out = torch.cat(outputs) if outputs else torch.zeros((0, width) if width else (0,), dtype=torch.float64)
    scored = Scored(task, keep=keep, rows=len(values), skipped=int((~keep).sum()))
    if task == "tabular-classification":
        scored.classes = list(net.config["target"]["classes"])
        scored.y_true, scored.proba = labels[keep], torch.softmax(out, dim=1).numpy()
    else:
        scored.y_true, scored.y_pred = labels[keep], out.numpy()
    return scored


def _sequence_classification(model: Path, table, target: str, text: str, params: dict) -> Scored:
    import numpy as np
    import torch

    from ..training.pretrained import load_model, load_tokenizer

    net = load_model("sequence-classification", model).eval()
    tok = load_tokenizer(model)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    classes = [net.config.id2label[i] for i in range(net.config.num_labels)]
    index = {str(c): i for i, c in enumerate(classes)}
    values = table.column(target).to_pylist()
    labels = np.array([index.get(str(v), -1) if v is not None else -1 for v in values], dtype=np.int64)
    keep = labels >= 0
    texts = [t or "" for t, k in zip(table.column(text).to_pylist(), keep, strict=True) if k]
    positions = getattr(net.config, "n_positions", None) or getattr(net.config, "max_position_embeddings", None)
    length = params["max_length"] or min(positions or 512, 512)
    outputs = []
    for start in range(0, len(texts), params["batch_size"]):
        enc = tok(texts[start:start + params["batch_size"]], truncation=True, max_length=length, padding=True,
                  return_tensors="pt")
        outputs.append(net(**enc).logits.double())
    out = torch.cat(outputs) if outputs else torch.zeros((0, len(classes)), dtype=torch.float64)
    return Scored("sequence-classification", classes=classes, y_true=labels[keep],
                  proba=torch.softmax(out, dim=1).numpy(), keep=keep, rows=len(values), skipped=int((~keep).sum()))


def _causal_lm(model: Path, table, text: str, params: dict, log) -> Scored:
    """Rows of the text column, each followed by EOS, joined and cut into blocks of max_length tokens (the
    training block size by default); the loss of each block is summed over its predicted tokens."""
    import numpy as np
    import torch

    from ..training.pretrained import load_model, load_tokenizer

    net = load_model("causal-lm", model).eval()
    tok = load_tokenizer(model)
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
    texts = [t or "" for t in table.column(text).to_pylist()]
    ids = [i for row in tok(texts, add_special_tokens=False)["input_ids"] for i in row + ([eos] if eos is not None else [])]
    positions = getattr(net.config, "n_positions", None) or getattr(net.config, "max_position_embeddings", None)
    trained = training_data_params(model).get("block_size")
    block = params["max_length"] or trained or min(positions or 128, 128)
    if positions and block > positions:
        block = positions
    blocks = [ids[i:i + block] for i in range(0, len(ids), block)]
    blocks = [b for b in blocks if len(b) >= 2]
    if not blocks:
        raise BuildError(f"the text column {text!r} has {len(ids)} tokens: nothing to score (a block needs 2)")
    losses, tokens = [], []
    for start in range(0, len(blocks), params["batch_size"]):
        chunk = blocks[start:start + params["batch_size"]]
        width = max(len(b) for b in chunk)
        batch = torch.full((len(chunk), width), eos or 0, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, b in enumerate(chunk):
            batch[i, :len(b)], mask[i, :len(b)] = torch.tensor(b), 1
        logits = net(input_ids=batch, attention_mask=mask).logits.double()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch[:, 1:], reduction="none")
        counted = mask[:, 1:].double()
        losses += (nll * counted).sum(dim=1).tolist()
        tokens += counted.sum(dim=1).long().tolist()
    log.info("causal-lm: %d rows, %d blocks of up to %d tokens", len(texts), len(blocks), block)
    return Scored("causal-lm", losses=losses, tokens=tokens, keep=np.ones(len(texts), dtype=bool), rows=len(texts),
                  framing=f"plain text: the rows of {text!r}, each followed by EOS, joined and cut into blocks of "
                          f"{block} tokens; loss on every token")


LOGIT_CELLS = 2 ** 28  # logits (rows x tokens x vocabulary) computed at once: 1 GiB of float32


def _causal_lm_pairs(model: Path, table, framing: Framing, params: dict, log) -> Scored:
    """Each (prompt, response) row framed by training/pretrained.py's `sft_examples`, as `sft` trains and
    validates on it; the loss of each pair summed over its response tokens, in float32 as the training loss.
    A row without a prompt or a response, or whose prompt fills max_length, is not scored."""
    import numpy as np
    import torch

    from ..training.pretrained import (
        DEFAULT_TEMPLATE,
        IGNORE,
        PadCollate,
        load_model,
        load_tokenizer,
        sft_examples,
    )

    net = load_model("causal-lm", model).eval()
    tok = load_tokenizer(model)
    positions = getattr(net.config, "n_positions", None) or getattr(net.config, "max_position_embeddings", None)
    length = min(framing.max_length or 1024, positions or 1024)
    examples, keep = [], []
    for prompt, response in zip(table.column(framing.prompt).to_pylist(), table.column(framing.response).to_pylist(),
                                strict=True):
        rows = sft_examples(tok, [(prompt, response)], template=framing.template, max_length=length)[0] \
            if prompt and response else []
        examples += rows
        keep.append(bool(rows))
    if not examples:
        raise BuildError(f"no row has both a {framing.prompt!r} prompt and a {framing.response!r} response within "
                         f"max_length={length} tokens: nothing to score")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    collate = PadCollate(pad if pad is not None else 0)
    losses, tokens, start = [], [], 0
    while start < len(examples):
        width = max(len(r["input_ids"]) for r in examples[start:start + params["batch_size"]])
        size = max(1, min(params["batch_size"], LOGIT_CELLS // (width * net.config.vocab_size)))
        batch = collate(examples[start:start + size])
        logits = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        labels = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=IGNORE,
                                                reduction="none")
        losses += nll.double().sum(dim=1).tolist()
        tokens += (labels != IGNORE).sum(dim=1).tolist()
        start += size
    chat = framing.template is None and getattr(tok, "chat_template", None)  # sft_examples' own rule
    how = "the tokenizer's chat template (a user turn, then the assistant's)" if chat else \
        f"the template {framing.template or DEFAULT_TEMPLATE!r} and EOS"
    log.info("causal-lm: %d prompt/response pairs of %r and %r, up to %d tokens, framed by %s", len(examples),
             framing.prompt, framing.response, length, how)
    keep = np.asarray(keep, dtype=bool)
    return Scored("causal-lm", losses=losses, tokens=tokens, keep=keep, rows=len(keep), skipped=int((~keep).sum()),
                  framing=f"prompt + response framed by {how}; loss on the response tokens only, as sft trains")


def require_columns(table_columns: list[str], wanted: list[tuple[str, str, str | None]], step: str) -> None:
    """A RecipeError (exit 2, before anything is scored) for a column the data lacks; `wanted` holds
    (param key, what it is, column name) triples."""
    for key, what, column in wanted:
        if column is not None and column not in table_columns:
            raise RecipeError(f"the {what} {column!r}{did_you_mean(column, table_columns)} is not a column of the "
                              f"evaluation data; its columns are: {', '.join(table_columns)}. Fix the name in the "
                              f"step's params, or evaluate a table that has it", step=step, key=key)


def read_json(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}
