"""tokenizer: train a BPE (byte-level, GPT-2 style), WordPiece or Unigram tokenizer on a text column.

The output is a directory that `transformers.AutoTokenizer.from_pretrained(path)` loads offline::

    <artifact>/
      tokenizer.json          the `tokenizers` serialisation: normaliser, pre-tokeniser, model, decoder
      tokenizer_config.json   special tokens by role (bos, eos, unk, pad, cls, sep, mask), model_max_length
      metrics.json            kind, vocab_size reached, rows trained on, tokens in them (special tokens
                              not counted), avg_tokens_per_row

| kind      | normaliser                    | pre-tokeniser / decoder      | default special tokens             |
| --------- | ----------------------------- | ---------------------------- | ---------------------------------- |
| bpe       | none (Lowercase if lowercase) | ByteLevel (no unknown bytes) | <|endoftext|> (bos, eos, unk, pad) |
| wordpiece | BertNormalizer                | BertPreTokenizer / WordPiece | [PAD] [UNK] [CLS] [SEP] [MASK]     |
| unigram   | NFKC (+ Lowercase)            | Metaspace                    | <pad> <unk> <s> </s>               |

Special tokens take the first ids, in list order. Their roles come from their names ([PAD], <pad>, <unk>,
<s>, </s>, <|endoftext|>, [CLS], [SEP], [MASK], ...) or from `roles:`; a BPE tokenizer's bos, unk and pad
default to its eos, as GPT-2's do. WordPiece adds [CLS] ... [SEP] around a sequence (BERT's template).

Rows stream from the table (`iter_batches`) into `train_from_iterator`, so a corpus larger than memory
trains. The output is byte-identical on rebuild, whatever the thread count. The `tokenizers` trainers
iterate Rust hash maps, whose order changes from run to run (random hash keys), so:
- byte-level BPE is deterministic as it is: the alphabet is the 256 bytes in order, and ties between
  merges are broken by token ids;
- WordPiece assigns ids to its '##'-continuation characters in hash order, and those ids break ties
  between merges. Every '##c' seen in the corpus is therefore given an id up front (in character order)
  by passing it to the trainer as a special token; it is made an ordinary token again after training
  (so every '##c' is in the vocabulary, and counts towards vocab_size);
- Unigram sums its EM statistics in hash order (scores differ in the 14th digit) and gives characters
  that only survive as required characters evenly spaced scores in hash order. Scores are rounded to
  six decimals, those characters are re-scored in character order, and the vocabulary is sorted by
  (score, piece). A pruning decision that hinges on a score difference below 1e-12 could in principle
  still differ; `build --check` would report it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import BuildError, RecipeError, did_you_mean
from .base import Builder, Param

KINDS = ("bpe", "wordpiece", "unigram")
DEFAULT_SPECIALS = {
    "bpe": ["<|endoftext|>"],
    "wordpiece": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "unigram": ["<pad>", "<unk>", "<s>", "</s>"],
}
ROLES = ("bos", "eos", "unk", "pad", "cls", "sep", "mask")
ROLE_NAMES = {  # well-known spellings of each role
    "bos": ("<s>", "<bos>", "<|startoftext|>", "<|begin_of_text|>", "[BOS]"),
    "eos": ("</s>", "<eos>", "<|endoftext|>", "<|end_of_text|>", "[EOS]"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "cls": ("<cls>", "[CLS]"),
    "sep": ("<sep>", "[SEP]"),
    "mask": ("<mask>", "[MASK]"),
}
BYTES = 256  # the byte-level alphabet
BATCH_ROWS = 8192
SCORE_DECIMALS = 6  # Unigram scores are rounded to this many decimals (see the module docstring)
REQUIRED_STEP = 1e-4  # the score step the Unigram trainer gives characters it keeps only as required


class Tokenizer(Builder):
    """Train a tokenizer on a table's text column.

    Example::

        tokenizer:
          builder: tokenizer
          inputs: {data: split}          # a table, or a split (its `train` table is read)
          params: {kind: bpe, vocab_size: 4000, max_length: 128}
    """

    name = "tokenizer"
    env = ("tokenizers", "transformers")
    params = {
        "kind": Param("str", default="bpe", choices=KINDS),
        "vocab_size": Param("int", default=8000, help="the size of the vocabulary, special tokens included"),
        "min_frequency": Param("int", help="bpe, wordpiece: a merge needs this many occurrences (default 2)"),
        "column": Param("str", default="text", help="the text column to train on"),
        "table": Param("str", help="the table to read when the input holds several (default: train)"),
        "lowercase": Param("bool", default=False),
        "special_tokens": Param("list", help="special tokens, given the first ids in this order; "
                                             "default per kind: <|endoftext|> (bpe), [PAD] [UNK] [CLS] [SEP] "
                                             "[MASK] (wordpiece), <pad> <unk> <s> </s> (unigram)"),
        "roles": Param("dict", help="role -> special token, for tokens whose names do not say their role, "
                                    "e.g. {eos: '<|end|>'}; roles: " + ", ".join(ROLES)),
        "max_length": Param("int", help="model_max_length saved with the tokenizer"),
        "sample_rows": Param("int", help="train on at most this many rows, evenly spaced through the table"),
    }

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        def fail(key, message):
            raise RecipeError(message, file=file, step=step, key=f"params.{key}")

        kind = params["kind"]
        specials = special_tokens(params)
        if not all(isinstance(t, str) and t for t in specials):
            fail("special_tokens", f"special_tokens must be a list of non-empty strings, got {specials!r}")
        twice = sorted({t for t in specials if specials.count(t) > 1})
        if twice:
            fail("special_tokens", f"special_tokens lists {', '.join(twice)} more than once; list each once")
        for role, token in (params["roles"] or {}).items():
            if role not in ROLES:
                fail(f"roles.{role}", f"unknown role {role!r}{did_you_mean(role, ROLES)}; roles are {', '.join(ROLES)}")
            if token not in specials:
                fail(f"roles.{role}", f"role {role} names {token!r}, which is not in special_tokens "
                                      f"({', '.join(specials)}); add it there")
        roles = special_roles(params)
        if kind in ("wordpiece", "unigram") and "unk" not in roles:
            fail("special_tokens", f"a {kind} tokenizer needs an unknown token: add '[UNK]' or '<unk>' to "
                                   f"special_tokens, or name one with `roles: {{unk: TOKEN}}`")
        smallest = len(specials) + (BYTES if kind == "bpe" else 1)
        if params["vocab_size"] < smallest:
            why = f"the 256 bytes and {len(specials)} special token(s)" if kind == "bpe" else \
                f"{len(specials)} special token(s) and at least one character"
            fail("vocab_size", f"vocab_size {params['vocab_size']} cannot hold {why}; set it to at least {smallest}")
        if params["min_frequency"] is not None:
            if kind == "unigram":
                fail("min_frequency", "min_frequency applies to bpe and wordpiece; a unigram tokenizer prunes by "
                                      "likelihood instead. Remove it")
            if params["min_frequency"] < 1:
                fail("min_frequency", f"min_frequency must be at least 1, got {params['min_frequency']}")
        for key in ("max_length", "sample_rows"):
            if params[key] is not None and params[key] < 1:
                fail(key, f"{key} must be at least 1, got {params[key]}")

    def build(self, ctx) -> None:
        from transformers import PreTrainedTokenizerFast

        from ..table import DATA, iter_batches, read_schema, require_columns, summary

        p = ctx.params
        source = _source_table(ctx, p["table"])
        schema = read_schema(source)
        require_columns({"column": p["column"]}, schema, ctx.step)
        if not str(schema.field(p["column"]).type).endswith("string"):
            raise BuildError(f"step '{ctx.step}': params.column {p['column']!r} is a "
                             f"{schema.field(p['column']).type} column; a tokenizer trains on text (strings)")
        total = (summary(source) or {}).get("rows")
        if total is None:
            import pyarrow.parquet as pq
            total = pq.ParquetFile(source / DATA).metadata.num_rows
        keep = min(total, p["sample_rows"] or total)

        def texts():
            """Lists of strings: the kept rows, nulls and empty strings dropped."""
            row = 0
            for batch in iter_batches(source, batch_rows=BATCH_ROWS, columns=[p["column"]]):
                values = batch.column(0).to_pylist()
                if keep < total:  # row i is kept when floor((i + 1) * keep / total) steps up
                    values = [v for i, v in enumerate(values, row) if (i + 1) * keep // total > i * keep // total]
                row += batch.num_rows
                ctx.progress(row, total, f"{row} of {total} rows")
                yield [v for v in values if v]

        specials, roles = special_tokens(p), special_roles(p)
        tok = _train(p, specials, roles, texts)
        reached = tok.get_vocab_size(with_added_tokens=True)
        if reached > p["vocab_size"]:
            raise BuildError(f"step '{ctx.step}': the corpus needs {reached} tokens just for its characters and "
                             f"special tokens, more than vocab_size {p['vocab_size']}; raise vocab_size above "
                             f"{reached}, or set `lowercase: true` to need fewer characters")
        rows = tokens = 0
        for batch in texts():
            rows += len(batch)
            tokens += sum(len(e.ids) for e in tok.encode_batch(batch, add_special_tokens=False))
        if rows == 0:
            raise BuildError(f"step '{ctx.step}': column {p['column']!r} of {source} has no text to train on")
        kwargs = {f"{role}_token": token for role, token in roles.items()}
        extra = [t for t in specials if t not in roles.values()]
        if extra:
            kwargs["extra_special_tokens"] = extra
        if p["max_length"]:
            kwargs["model_max_length"] = p["max_length"]
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
        wrapped.save_pretrained(str(ctx.out))
        ctx.write_metrics({"kind": p["kind"], "vocab_size": reached, "rows": rows, "tokens": tokens,
                           "avg_tokens_per_row": round(tokens / rows, 4)})
        ctx.log.info("trained a %s tokenizer: %d tokens in the vocabulary (asked for %d) from %d rows; "
                     "%.2f tokens per row", p["kind"], reached, p["vocab_size"], rows, tokens / rows)


def special_tokens(params: dict) -> list:
    """The special tokens, in id order: the param, or the kind's defaults."""
    given = params.get("special_tokens")
    return list(given) if given is not None else list(DEFAULT_SPECIALS[params.get("kind") or "bpe"])


def special_roles(params: dict) -> dict:
    """role -> token, from `roles:` first, then from well-known names; BPE's bos, unk and pad default to eos."""
    specials = special_tokens(params)
    roles = dict(params.get("roles") or {})
    for role in ROLES:
        if role not in roles:
            named = [t for t in specials if t in ROLE_NAMES[role]]
            if named:
                roles[role] = named[0]
    if (params.get("kind") or "bpe") == "bpe" and specials:
        roles.setdefault("eos", specials[0])
        for role in ("bos", "unk", "pad"):
            roles.setdefault(role, roles["eos"])
    return {role: roles[role] for role in ROLES if role in roles}


def _source_table(ctx, table: str | None) -> Path:
    """The table to read: `table` inside the input, a split's `train`, or the input itself."""
    from ..table import DATA, input_table

    if table is None and len(ctx.inputs) == 1:
        root = Path(next(iter(ctx.inputs.values())))
        if not (root / DATA).is_file() and (root / "train" / DATA).is_file():
            table = "train"
    return input_table(ctx, table)


def _train(p: dict, specials: list, roles: dict, texts):
    """A trained `tokenizers.Tokenizer`, in its canonical (rebuild-identical) form."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    kind, lower = p["kind"], p["lowercase"]
    min_frequency = p["min_frequency"] or 2
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        if lower:
            tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=p["vocab_size"], min_frequency=min_frequency,
                                      special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(texts(), trainer=trainer)
        return tok
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=roles["unk"]))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lower)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        continuing = _continuing_characters(tok, texts)
        trainer = trainers.WordPieceTrainer(vocab_size=p["vocab_size"], min_frequency=min_frequency,
                                            special_tokens=specials + continuing, show_progress=False)
        tok.train_from_iterator(texts(), trainer=trainer)
        state = json.loads(tok.to_str())
        state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] not in set(continuing)]
        tok = Tokenizer.from_str(json.dumps(state))
        if "cls" in roles and "sep" in roles:
            cls, sep = roles["cls"], roles["sep"]
            tok.post_processor = processors.TemplateProcessing(
                single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
                special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])
        return tok
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lower else []))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=p["vocab_size"], special_tokens=specials, unk_token=roles["unk"],
                                      show_progress=False)
    tok.train_from_iterator(texts(), trainer=trainer)
    state = json.loads(tok.to_str())
    state["model"]["vocab"] = _canonical_unigram(state["model"]["vocab"], len(specials))
    return Tokenizer.from_str(json.dumps(state))


def _continuing_characters(tok, texts) -> list[str]:
    """'##c' for every character c seen after the first position of a pre-tokenised word, in order."""
    seen: set[str] = set()
    for batch in texts():
        text = tok.normalizer.normalize_str("\n".join(batch))
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(text):
            seen.update(word[1:])
    return [f"##{c}" for c in sorted(seen)]


def _canonical_unigram(vocab: list, n_special: int) -> list:
    """The trained [piece, score] list, made independent of the trainer's hash-map order.

    The trainer scores characters kept only because every character must be encodable as
    min_score, min_score + 1e-4, ... in hash order; those are re-scored in character order. Then every
    score is rounded and pieces are sorted by (score descending, piece); special tokens stay first.
    """
    special, rest = vocab[:n_special], [list(v) for v in vocab[n_special:]]
    if rest:
        low = min(score for _, score in rest)
        singles: dict[float, list[int]] = {}
        for i, (piece, score) in enumerate(rest):
            if len(piece) == 1:
                singles.setdefault(score, []).append(i)
        steps, penalty = [], 0.0
        while (score := low + penalty) in singles:  # the trainer's own float arithmetic, repeated
            steps += singles[score]
            penalty += REQUIRED_STEP
        if len(steps) > 1:
            pieces, scores = sorted(rest[i][0] for i in steps), sorted((rest[i][1] for i in steps), reverse=True)
            for i, piece, score in zip(steps, pieces, scores, strict=True):
                rest[i] = [piece, score]
    rest = [[piece, round(score, SCORE_DECIMALS)] for piece, score in rest]
    rest.sort(key=lambda ps: (-ps[1], ps[0]))
    return [list(v) for v in special] + rest
