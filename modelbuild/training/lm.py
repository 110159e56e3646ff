"""Language-model tasks on a text column: causal language modelling and sequence classification.

Both use a transformers model, built from a config sized in the recipe or, when the step has a `model`
input (a pretrained model directory), loaded from it; the tokenizer comes from the `tokenizer` input, or
from the `model` input when there is none. The artifact is a `save_pretrained` folder (config.json,
model.safetensors, generation_config.json for causal LMs, tokenizer.json, tokenizer_config.json), so
`AutoModelForCausalLM` / `AutoModelForSequenceClassification` / `AutoTokenizer.from_pretrained(artifact)`
load it offline. Nothing is pickled.

`causal-lm`::

    model: {architecture: gpt2, n_layer: 2, n_embd: 128, n_head: 4, n_positions: 128}
    data:  {column: text, block_size: 128, stride: 128, validation_fraction: 0.1}

Rows of `column` are tokenised without special tokens, joined with the tokenizer's EOS (or SEP) token
after each row, and cut into blocks of `block_size` tokens every `stride` tokens (default: block_size, so
blocks do not overlap); the tail shorter than a block is dropped. Validation uses the split's
`validation` table (blocks that do not overlap), or else every row whose index i has
floor((i+1)*f) > floor(i*f) for f = validation_fraction (evenly spaced rows, no seed needed); 0: none.
Metrics: val_loss (mean over predicted tokens) and val_perplexity = exp(val_loss).

`sequence-classification`::

    model: {architecture: bert, hidden_size: 128, num_hidden_layers: 2, num_attention_heads: 2}
    data:  {text: text, label: label, max_length: 128, validation_fraction: 0.1}

Labels are the distinct values of the training table's label column, sorted by value (so 2 before 10)
and mapped to ids 0..n-1; config.json's id2label / label2id spell them as strings. Texts are truncated
to max_length tokens (at most the model's positions) and padded per batch. Validation: the split's
`validation` table, or held-out rows as for causal-lm. Metrics: val_loss, val_accuracy, val_f1 (macro over the classes present in the labels or predictions).

`model:` keys are the config's own fields (checked against a list per architecture, without importing
transformers: see `check_model_params`); for GPT-2 the generic names hidden_size, num_hidden_layers,
num_attention_heads and max_position_embeddings are accepted too. vocab_size defaults to the tokenizer's
size and may not be smaller; the special token ids are the tokenizer's.

Importing this module is cheap: torch, lightning and transformers are imported when a task runs, so a
builder's `check()` may call `check_model_params`.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

from ..errors import BuildError, RecipeError, did_you_mean
from .task import Task, check_keys, train_validation_tables

_GPT2 = ("n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function", "resid_pdrop",
         "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "initializer_range", "scale_attn_weights",
         "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "tie_word_embeddings")
_LLAMA = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
          "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps", "rope_parameters",
          "attention_bias", "attention_dropout", "mlp_bias", "head_dim", "tie_word_embeddings")
_BERT = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
         "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
         "initializer_range", "layer_norm_eps", "classifier_dropout")
# architecture -> (config class in transformers, its fields a recipe may set, the tasks it serves)
ARCHITECTURES = {
    "gpt2": ("GPT2Config", _GPT2, ("causal-lm", "sequence-classification")),
    "llama": ("LlamaConfig", _LLAMA, ("causal-lm", "sequence-classification")),
    "bert": ("BertConfig", _BERT, ("sequence-classification",)),
}
ALIASES = {"gpt2": {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
                    "max_position_embeddings": "n_positions"}}
# (size, layers, heads, positions) field names, after aliases
_SHAPE = {"gpt2": ("n_embd", "n_layer", "n_head", "n_positions")}
_SHAPE_DEFAULT = ("hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings")
SET_BY_TASK = {
    "bos_token_id": "the tokenizer's", "eos_token_id": "the tokenizer's", "pad_token_id": "the tokenizer's",
    "num_labels": "the number of distinct labels", "id2label": "the sorted labels",
    "label2id": "the sorted labels",
}
DATA_KEYS = {
    "causal-lm": {"column": "text", "block_size": 128, "stride": None, "validation_fraction": 0.1},
    "sequence-classification": {"text": "text", "label": "label", "max_length": 128, "validation_fraction": 0.1},
}
BATCH_ROWS = 4096  # rows tokenised at a time
MODEL_CLASSES = {"causal-lm": "AutoModelForCausalLM", "sequence-classification": "AutoModelForSequenceClassification"}


# ---- recipe checks (no heavy imports) -----------------------------------------------------------------
def check_model_params(task: str, model_params: dict | None, data_params: dict | None = None, *,
                       file: str | None = None, step: str | None = None) -> None:
    """Raise a RecipeError for `model:` or `data:` params that cannot work: an unknown architecture for the
    task, a config key the architecture does not have, a key the task sets itself, sizes that do not fit.
    Cheap: nothing is imported. `architecture` may be missing (a step with a pretrained `model` input)."""
    def fail(key, message):
        raise RecipeError(message, file=file, step=step, key=f"params.{key}")

    if data_params is not None and not isinstance(data_params, dict):
        fail("data", f"data must be a mapping, got {data_params!r}")
    if model_params is not None and not isinstance(model_params, dict):
        fail("model", f"model must be a mapping, got {model_params!r}")
    model = dict(model_params or {})
    data = {**DATA_KEYS[task], **data_params} if data_params is not None else {}
    if data_params is not None:
        for key in data_params:
            if key not in DATA_KEYS[task]:
                fail(f"data.{key}", f"unknown key {key!r} for task {task}{did_you_mean(key, DATA_KEYS[task])}; "
                                    f"it takes: {', '.join(DATA_KEYS[task])}")
        _check_data(task, data, fail)
    arch = model.pop("architecture", None)
    for key in model:
        if key in SET_BY_TASK:
            fail(f"model.{key}", f"model.{key} is set by the task from {SET_BY_TASK[key]}; remove it")
    if arch is None:
        if model:
            fail("model.architecture", f"model.{next(iter(model))} needs model.architecture: one of "
                                       f"{', '.join(a for a, v in ARCHITECTURES.items() if task in v[2])}")
        return
    fields = _config_fields(task, arch, fail)
    for key, value in model.items():
        if key != "vocab_size" and key not in fields:
            fail(f"model.{key}", f"{arch} has no config key {key!r}{did_you_mean(key, fields)}; it takes: "
                                 f"vocab_size, {', '.join(sorted(fields))}")
        if key == "vocab_size" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            fail("model.vocab_size", f"vocab_size must be a whole number above 0, got {value!r}")
    config = {ALIASES.get(arch, {}).get(k, k): v for k, v in model.items()}
    twice = [k for k, v in ALIASES.get(arch, {}).items() if k in model and v in model]
    if twice:
        fail(f"model.{twice[0]}", f"model.{twice[0]} and model.{ALIASES[arch][twice[0]]} are the same setting; "
                                  f"give one of them")
    size, layers, heads, positions = _SHAPE.get(arch, _SHAPE_DEFAULT)
    for key in (size, layers, heads, positions):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            fail(f"model.{key}", f"{key} must be a whole number above 0, got {value!r}")
    if config.get(size) and config.get(heads) and config[size] % config[heads]:
        fail(f"model.{size}", f"{size} ({config[size]}) must be a multiple of {heads} ({config[heads]})")
    block = data.get("block_size") if task == "causal-lm" else None  # max_length is capped at the positions
    if config.get(positions) and isinstance(block, int) and block > config[positions]:
        fail(f"model.{positions}", f"data.block_size is {block} but the model has {config[positions]} positions "
                                   f"({positions}); raise {positions} or lower data.block_size")


def _config_fields(task: str, arch, fail) -> tuple:
    usable = [a for a, v in ARCHITECTURES.items() if task in v[2]]
    if arch not in usable:
        hint = did_you_mean(arch, usable)
        if arch in ARCHITECTURES:
            hint = f" ({arch} serves {', '.join(ARCHITECTURES[arch][2])} only)"
        fail("model.architecture", f"unknown architecture {arch!r} for task {task}{hint}; choose one of "
                                   f"{', '.join(usable)}")
    return ARCHITECTURES[arch][1] + tuple(ALIASES.get(arch, ()))


def _check_data(task: str, data: dict, fail) -> None:
    sizes = ("block_size", "stride") if task == "causal-lm" else ("max_length",)
    for key in sizes:
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            fail(f"data.{key}", f"{key} must be a whole number above 0, got {value!r}")
    if task == "causal-lm" and data["block_size"] is not None and data["block_size"] < 2:
        fail("data.block_size", "block_size must be at least 2: a block predicts each token from the ones before")
    f = data.get("validation_fraction")
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
        fail("data.validation_fraction", f"validation_fraction must be a number from 0 up to (not including) 1, "
                                         f"got {f!r}")
    for key in ("column",) if task == "causal-lm" else ("text", "label"):
        if not isinstance(data.get(key), str) or not data[key]:
            fail(f"data.{key}", f"data.{key} must name a column, got {data.get(key)!r}")


# ---- pretrained models and tokenizers -----------------------------------------------------------------
def load_pretrained(kind: str, path, **kw):
    """A transformers model for `kind` ('causal-lm' or 'sequence-classification') from a local directory,
    offline, in float32 unless `dtype=` says otherwise. A `.gguf` file is loaded through `gguf_file=`.
    Extra keywords go to `from_pretrained` (e.g. num_labels, id2label, label2id for a classifier)."""
    import torch
    import transformers

    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        kw.setdefault("gguf_file", path.name)
        path = path.parent
    kw.setdefault("dtype", torch.float32)
    cls = getattr(transformers, MODEL_CLASSES[kind])
    try:
        return cls.from_pretrained(str(path), local_files_only=True, **kw)
    except (OSError, ValueError, KeyError) as e:
        raise BuildError(f"cannot load a pretrained {kind} model from {path}: {e}. The `model` input must be a "
                         f"save_pretrained folder (config.json and weights) or a .gguf file") from None


def load_tokenizer(path):
    """`AutoTokenizer.from_pretrained` on a local tokenizer or model directory (or a .gguf file), offline."""
    from transformers import AutoTokenizer

    path, kw = Path(path), {}
    if path.is_file() and path.suffix == ".gguf":
        path, kw = path.parent, {"gguf_file": path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, **kw)
    except (OSError, ValueError, KeyError) as e:
        raise BuildError(f"cannot load a tokenizer from {path}: {e}. Give the step a `tokenizer` input (a "
                         f"tokenizer step) or a `model` input that ships its tokenizer") from None
    for key in ("local_files_only", "is_local", "gguf_file"):  # how it was loaded, not what it is: not saved
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer


def model_from_config(task: str, model_params: dict, vocab_size: int, step: str, **extra):
    """A freshly initialised transformers model for `task` from the recipe's `model:` params."""
    import transformers

    params = dict(model_params)
    arch = params.pop("architecture", None)
    if arch is None:
        raise BuildError(f"step '{step}': set params.model.architecture ("
                         f"{', '.join(a for a, v in ARCHITECTURES.items() if task in v[2])}) to build a model "
                         f"from a config, or give the step a `model` input (a pretrained model)")
    try:
        check_model_params(task, {"architecture": arch, **params}, step=step)
    except RecipeError as e:
        raise BuildError(str(e)) from None
    config = {ALIASES.get(arch, {}).get(k, k): v for k, v in params.items()}
    config.setdefault("vocab_size", vocab_size)
    try:
        config = getattr(transformers, ARCHITECTURES[arch][0])(**config, **extra)
    except (TypeError, ValueError) as e:
        raise BuildError(f"step '{step}': params.model does not make a valid {arch} config: {e}") from None
    cls = getattr(transformers, MODEL_CLASSES[task])
    return cls.from_config(config)


def check_vocabulary(model, tokenizer, step: str, largest_id: int | None = None) -> None:
    """BuildError when the tokenizer's ids do not all fit the model's embedding table."""
    rows = model.get_input_embeddings().num_embeddings
    size = len(tokenizer)
    if size > rows or (largest_id is not None and largest_id >= rows):
        raise BuildError(f"step '{step}': the tokenizer has {size} tokens (largest id in the data: "
                         f"{largest_id}) but the model's vocabulary has {rows}; set model.vocab_size to at least "
                         f"{size} (or leave it out to use the tokenizer's size), or train the tokenizer with a "
                         f"smaller vocab_size")


# ---- the tasks ----------------------------------------------------------------------------------------
class _TextTask(Task):
    """What both tasks share: the tokenizer, the model (from a config or pretrained) and the export.

    A builder that adapts a pretrained model (finetune) may override `_load_tokenizer()`, `_make_model(**extra)`
    (extra: config overrides such as token ids and labels), `prepare_model(model)` (e.g. to add LoRA
    adapters before training) and `export(out)`."""

    def __init__(self, ctx, params: dict):
        super().__init__(ctx, params)
        self.tokenizer = self.model = None
        self.train_data = self.val_data = None
        step = ctx.step
        check_keys(step, "data", params.get("data") or {}, DATA_KEYS[self.name])
        self.data = {**DATA_KEYS[self.name], **(params.get("data") or {})}
        self.model_params = dict(params.get("model") or {})
        try:
            check_model_params(self.name, self.model_params, params.get("data") or {}, step=step)
        except RecipeError as e:
            raise BuildError(str(e)) from None

    def _load_tokenizer(self):
        inputs = self.ctx.inputs
        if "tokenizer" in inputs:
            return load_tokenizer(inputs["tokenizer"])
        if "model" in inputs:
            return load_tokenizer(inputs["model"])
        raise BuildError(f"step '{self.ctx.step}' ({self.name}) needs a tokenizer: add `tokenizer: <step>` under "
                         f"`inputs:` (a tokenizer step), or a pretrained `model` input that ships one")

    def _make_model(self, **extra):
        if "model" in self.ctx.inputs:
            if self.model_params:
                raise BuildError(f"step '{self.ctx.step}' has a pretrained `model` input, so params.model "
                                 f"({', '.join(self.model_params)}) would be ignored; remove params.model")
            model = load_pretrained(self.name, self.ctx.inputs["model"], **extra)
            return model.train()  # from_pretrained gives eval mode, which Lightning keeps (no dropout)
        return model_from_config(self.name, self.model_params, len(self.tokenizer), self.ctx.step, **extra)

    def prepare_model(self, model):
        """Return the model to train; a subclass may wrap it (LoRA adapters)."""
        return model

    def _loader(self, rows, shuffle: bool, collate=None):
        from torch.utils.data import DataLoader

        return DataLoader(_Rows(rows), batch_size=self.params.get("batch_size") or 8, shuffle=shuffle,
                          num_workers=0, collate_fn=collate)

    def export(self, out: Path) -> None:
        self.model.save_pretrained(str(out))
        self.tokenizer.save_pretrained(str(out))


class CausalLM(_TextTask):
    """Next-token prediction on blocks of a tokenised text column."""

    name = "causal-lm"

    def setup(self) -> None:
        from transformers import GenerationConfig

        step, d = self.ctx.step, self.data
        tok = self.tokenizer = self._load_tokenizer()
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        if eos is None:
            raise BuildError(f"step '{step}': the tokenizer has no end-of-sequence token (eos or sep) to put "
                             f"between rows; give the tokenizer step one, e.g. `special_tokens: [<|endoftext|>]`")
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        bos = tok.bos_token_id if tok.bos_token_id is not None else eos
        block = d["block_size"]
        train_table, val_table = train_validation_tables(self.ctx)
        fraction = 0.0 if val_table is not None else d["validation_fraction"]
        train_ids, held_out = _token_stream(train_table, d["column"], tok, eos, fraction, step)
        val_ids = held_out if val_table is None else _token_stream(val_table, d["column"], tok, eos, 0.0, step)[0]
        self.train_data = _blocks(train_ids, block, d["stride"] or block)
        self.val_data = _blocks(val_ids, block, block)
        if len(self.train_data) == 0:
            raise BuildError(f"step '{step}': the training text has {len(train_ids)} tokens, fewer than one block "
                             f"of data.block_size={block}; lower block_size or add text")
        self.check_epoch(len(self.train_data))
        model = self._make_model(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
        model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
                                                   do_sample=False, num_beams=1)
        positions = _positions(model.config)
        if positions is not None and block > positions:
            raise BuildError(f"step '{step}': data.block_size is {block} but the model has {positions} positions; "
                             f"lower data.block_size")
        largest = max(int(train_ids.max(initial=0)), int(val_ids.max(initial=0)))
        check_vocabulary(model, tok, step, largest)
        self.ctx.log.info("causal-lm: %d training blocks, %d validation blocks of %d tokens (%d + %d tokens)",
                          len(self.train_data), len(self.val_data), block, len(train_ids), len(val_ids))
        self.model = self.prepare_model(model)
        self.module = _modules()["causal"](self.model)

    def train_dataloader(self):
        return self._loader(self.train_data, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_data, shuffle=False) if len(self.val_data) else None

    def tokens(self, batch) -> int:
        return int(batch["input_ids"].numel())


class SequenceClassification(_TextTask):
    """One label per text: a transformers sequence-classification head."""

    name = "sequence-classification"

    def setup(self) -> None:
        step, d = self.ctx.step, self.data
        tok = self.tokenizer = self._load_tokenizer()
        if tok.pad_token_id is None:
            if tok.eos_token is None:
                raise BuildError(f"step '{step}': the tokenizer has neither a pad nor an eos token to pad batches "
                                 f"with; give the tokenizer step a pad token")
            tok.pad_token = tok.eos_token
        train_table, val_table = train_validation_tables(self.ctx)
        fraction = 0.0 if val_table is not None else d["validation_fraction"]
        texts, labels, val_texts, val_labels = _labelled_rows(train_table, d, fraction, step)
        if val_table is not None:
            val_texts, val_labels = _labelled_rows(val_table, d, 0.0, step)[:2]
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise BuildError(f"step '{step}': column {d['label']!r} has {len(classes)} distinct value(s) in the "
                             f"training data ({', '.join(map(repr, classes))}); classification needs at least two")
        unseen = sorted(set(val_labels) - set(classes))
        if unseen:
            raise BuildError(f"step '{step}': the validation data has labels the training data lacks: "
                             f"{', '.join(map(repr, unseen[:5]))}; split with `method: stratified`")
        self.check_epoch(len(texts))
        ids = {c: i for i, c in enumerate(classes)}
        model = self._make_model(num_labels=len(classes), id2label={i: str(c) for c, i in ids.items()},
                                 label2id={str(c): i for c, i in ids.items()}, pad_token_id=tok.pad_token_id)
        model.config.pad_token_id = tok.pad_token_id
        positions = _positions(model.config)
        length = min(d["max_length"], positions) if positions else d["max_length"]
        self.train_data = _encode(tok, texts, labels, ids, length)
        self.val_data = _encode(tok, val_texts, val_labels, ids, length)
        largest = max((max(r["input_ids"], default=0) for r in self.train_data + self.val_data), default=0)
        check_vocabulary(model, tok, step, largest)
        self.ctx.log.info("sequence-classification: %d classes, %d training and %d validation rows",
                          len(classes), len(self.train_data), len(self.val_data))
        self.model = self.prepare_model(model)
        self.module = _modules()["classifier"](self.model, len(classes))

    def train_dataloader(self):
        return self._loader(self.train_data, shuffle=True, collate=_Pad(self.tokenizer.pad_token_id))

    def val_dataloader(self):
        if not self.val_data:
            return None
        return self._loader(self.val_data, shuffle=False, collate=_Pad(self.tokenizer.pad_token_id))

    def tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum())


# ---- data ---------------------------------------------------------------------------------------------
class _Rows:
    """A map-style dataset over a list (or tensor) of samples."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


class _Pad:
    """Collate {input_ids, label} rows into padded input_ids, attention_mask and labels tensors."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows):
        import torch

        ids, mask = right_pad([r["input_ids"] for r in rows], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask,
                "labels": torch.tensor([r["label"] for r in rows], dtype=torch.long)}


def right_pad(sequences: list[list[int]], fill: int):
    """Token-id lists as one [n, longest] tensor padded on the right with `fill`, and its attention mask."""
    import torch

    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), fill, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return out, mask


def _held_out(i: int, fraction: float) -> bool:
    """Row i is held out for validation: evenly spaced rows, floor((i+1)*f) > floor(i*f)."""
    return fraction > 0 and math.floor((i + 1) * fraction) > math.floor(i * fraction)


def _column_batches(table, wanted: dict[str, str], step: str):
    """Batches of the columns `wanted` names ({'data.text': column}), in that order; a missing column is a
    BuildError naming its param."""
    from ..table import iter_batches, read_schema, require_columns

    require_columns(wanted, read_schema(table), step)
    yield from iter_batches(table, batch_rows=BATCH_ROWS, columns=list(wanted.values()))


def _token_stream(table, column: str, tok, eos: int, fraction: float, step: str):
    """(kept ids, held-out ids): every row's tokens followed by eos, as int64 arrays."""
    import numpy as np

    kept, held, row = [], [], 0
    for batch in _column_batches(table, {"data.column": column}, step):
        texts = [t or "" for t in batch.column(0).to_pylist()]
        for ids in tok(texts, add_special_tokens=False, verbose=False)["input_ids"]:
            (held if _held_out(row, fraction) else kept).append(ids + [eos])
            row += 1
    def flat(parts):
        return np.fromiter((i for ids in parts for i in ids), dtype=np.int64)
    return flat(kept), flat(held)


def _blocks(ids, block: int, stride: int):
    """A (n, block) int64 tensor of windows of `ids` starting every `stride` tokens; the short tail is dropped."""
    import numpy as np
    import torch

    if len(ids) < block:
        return []
    windows = np.lib.stride_tricks.sliding_window_view(ids, block)[::stride]
    return [{"input_ids": row} for row in torch.from_numpy(np.array(windows))]


def _labelled_rows(table, d: dict, fraction: float, step: str):
    """(texts, labels, held-out texts, held-out labels); null labels refused."""
    texts, labels, held_texts, held_labels, row = [], [], [], [], 0
    for batch in _column_batches(table, {"data.text": d["text"], "data.label": d["label"]}, step):
        for text, label in zip(*(c.to_pylist() for c in batch.columns), strict=True):
            if label is None:
                raise BuildError(f"step '{step}': row {row} of {table} has no {d['label']!r} label; drop or fill "
                                 f"null labels first (a clean step)")
            into = (held_texts, held_labels) if _held_out(row, fraction) else (texts, labels)
            into[0].append(text or "")
            into[1].append(label)
            row += 1
    return texts, labels, held_texts, held_labels


def _encode(tok, texts: list, labels: list, label2id: dict, length: int) -> list[dict]:
    rows = []
    for start in range(0, len(texts), BATCH_ROWS):
        chunk = texts[start:start + BATCH_ROWS]
        for ids, label in zip(tok(chunk, truncation=True, max_length=length)["input_ids"],
                              labels[start:start + BATCH_ROWS], strict=True):
            rows.append({"input_ids": ids, "label": label2id[label]})
    return rows


def _positions(config) -> int | None:
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


# ---- the LightningModules -----------------------------------------------------------------------------
@cache
def _modules() -> dict:
    """The LightningModule classes, defined on first use so that importing this module stays cheap."""
    import lightning as L
    import torch

    class _Base(L.LightningModule):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, **batch):
            return self.model(**batch)

        def _reduce(self, values):
            """Sum a tensor over every process (DDP), so each rank logs the same number."""
            if self.trainer.world_size > 1:
                return self.trainer.strategy.reduce(values, reduce_op="sum")
            return values

    class CausalModule(_Base):
        """train_loss per step and epoch; val_loss and val_perplexity as exact means over predicted tokens."""

        def training_step(self, batch, batch_idx):
            ids = batch["input_ids"]
            loss = self.model(input_ids=ids, labels=ids).loss
            self.log("train_loss", loss, on_step=True, on_epoch=True, batch_size=len(ids))
            return loss

        def on_validation_epoch_start(self):
            self._val = torch.zeros(2, dtype=torch.float64, device=self.device)

        def validation_step(self, batch, batch_idx):
            ids = batch["input_ids"]
            loss = self.model(input_ids=ids, labels=ids).loss
            predicted = ids.shape[0] * (ids.shape[1] - 1)
            self._val += torch.stack([loss.detach().double() * predicted, loss.new_tensor(predicted).double()])

        def on_validation_epoch_end(self):
            total, count = self._reduce(self._val).tolist()
            if count:
                loss = total / count
                self.log("val_loss", loss)
                self.log("val_perplexity", math.exp(min(loss, 80.0)))

    class ClassifierModule(_Base):
        """train_loss per step and epoch; val_loss, val_accuracy and macro val_f1 from a confusion matrix."""

        def __init__(self, model, num_labels: int):
            super().__init__(model)
            self.num_labels = num_labels

        def training_step(self, batch, batch_idx):
            loss = self.model(**batch).loss
            self.log("train_loss", loss, on_step=True, on_epoch=True, batch_size=len(batch["labels"]))
            return loss

        def on_validation_epoch_start(self):
            self._loss = torch.zeros(2, dtype=torch.float64, device=self.device)
            self._confusion = torch.zeros(self.num_labels, self.num_labels, dtype=torch.long, device=self.device)

        def validation_step(self, batch, batch_idx):
            out = self.model(**batch)
            labels = batch["labels"]
            self._loss += torch.stack([out.loss.detach().double() * len(labels),
                                       out.loss.new_tensor(len(labels)).double()])
            cells = labels * self.num_labels + out.logits.argmax(-1)
            self._confusion += torch.bincount(cells, minlength=self.num_labels ** 2).view_as(self._confusion)

        def on_validation_epoch_end(self):
            total, count = self._reduce(self._loss).tolist()
            if not count:
                return
            confusion = self._reduce(self._confusion).double()
            true_pos = confusion.diag()
            actual, predicted = confusion.sum(1), confusion.sum(0)
            present = (actual + predicted) > 0
            f1 = (2 * true_pos / (actual + predicted).clamp(min=1))[present].mean()
            self.log("val_loss", total / count)
            self.log("val_accuracy", float(true_pos.sum() / count))
            self.log("val_f1", float(f1))

    return {"causal": CausalModule, "classifier": ClassifierModule}
