"""The tokenizer builder: each kind trains, loads with AutoTokenizer offline, round-trips text, honours
vocab_size, and rebuilds byte-identically (also in another process, where Rust's hash maps iterate in
another order)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

pa = pytest.importorskip("pyarrow")
pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from modelbuild.builders.base import BuildContext  # noqa: E402
from modelbuild.builders.tokenizer import Tokenizer, _canonical_unigram, special_roles  # noqa: E402
from modelbuild.errors import BuildError, RecipeError  # noqa: E402
from modelbuild.table import write_table  # noqa: E402

WORDS = ("the king queen lord lady castle night ghost sword crown blood heart love death hope fear sweet "
         "noble brave false true father mother brother sister friend enemy speak hear see know think bear "
         "give take come go stay fly fight sleep dream wake weep laugh Denmark Verona Rome étude naïve").split()
SENTENCE = "To be, or not to be, that is the question."


def corpus(rows=1500, seed=0) -> list[str]:
    """Deterministic English-like lines, with punctuation, capitals and a few accented words: real words and
    words made of syllables, so that every kind can reach a vocabulary of a few hundred tokens."""
    rng = random.Random(seed)
    syllables = "ba be bi bo ru sa te lo mi ne qua ster tho wen gar pol ith ung".split()
    made = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(400)]
    lines = []
    for _ in range(rows):
        words = [rng.choice(WORDS if rng.random() < 0.6 else made) for _ in range(rng.randint(3, 14))]
        words[0] = words[0].capitalize()
        lines.append(" ".join(words) + rng.choice([".", "!", "?", ",", ";"]))
    lines[::50] = [SENTENCE] * len(lines[::50])
    return lines


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "table"
    write_table(pa.table({"text": corpus(), "n": list(range(1500))}), path)
    return path


def build(tmp_path, source, out="out", **params):
    """Run the builder; return the output folder."""
    out = tmp_path / out
    out.mkdir()
    params = Tokenizer().normalise(params, file="r.yaml", step="tok")
    Tokenizer().build(BuildContext(step="tok", inputs={"data": source}, out=out, params=params, recipe_dir=tmp_path))
    return out


REBUILD = """
import sys
from pathlib import Path
from modelbuild.builders.base import BuildContext
from modelbuild.builders.tokenizer import Tokenizer
tmp, source, kind, size = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
(tmp / "c").mkdir()
params = Tokenizer().normalise({"kind": kind, "vocab_size": size}, file="r.yaml", step="tok")
Tokenizer().build(BuildContext(step="tok", inputs={"data": source}, out=tmp / "c", params=params, recipe_dir=tmp))
"""


def auto(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def files(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_each_kind_trains_loads_and_round_trips(tmp_path, table, kind, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = build(tmp_path, table, kind=kind, vocab_size=300, max_length=64)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "tokenizer.json", "tokenizer_config.json"]
    tok = auto(out)
    assert len(tok) == 300  # the corpus is large enough to reach vocab_size
    assert tok.model_max_length == 64
    ids = tok(SENTENCE, add_special_tokens=False)["input_ids"]
    decoded = tok.decode(ids)
    if kind == "wordpiece":  # WordPiece splits punctuation off and decodes with spaces between words
        assert decoded.replace(" ", "") == SENTENCE.replace(" ", "")
    else:
        assert decoded == SENTENCE
    assert tok.unk_token_id is not None and tok.pad_token_id is not None
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == kind and metrics["vocab_size"] == 300 and metrics["rows"] == 1500
    assert metrics["avg_tokens_per_row"] == pytest.approx(metrics["tokens"] / 1500, abs=1e-4)


def test_special_tokens_and_roles_per_kind(tmp_path, table):
    bpe = auto(build(tmp_path, table, "bpe", kind="bpe", vocab_size=300))
    assert bpe.convert_ids_to_tokens(0) == "<|endoftext|>"
    assert bpe.bos_token == bpe.eos_token == bpe.pad_token == bpe.unk_token == "<|endoftext|>"
    wordpiece = auto(build(tmp_path, table, "wp", kind="wordpiece", vocab_size=300))
    assert wordpiece.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ids = wordpiece("to be")["input_ids"]
    assert ids[0] == wordpiece.cls_token_id and ids[-1] == wordpiece.sep_token_id  # BERT's template
    assert wordpiece.mask_token == "[MASK]" and wordpiece.eos_token is None
    unigram = auto(build(tmp_path, table, "uni", kind="unigram", vocab_size=300))
    assert (unigram.pad_token, unigram.unk_token, unigram.bos_token, unigram.eos_token) == ("<pad>", "<unk>", "<s>",
                                                                                            "</s>")
    custom = auto(build(tmp_path, table, "custom", kind="bpe", vocab_size=300,
                        special_tokens=["<|pad|>", "<|end|>", "<|user|>"], roles={"eos": "<|end|>"}))
    assert (custom.pad_token, custom.eos_token, custom.bos_token) == ("<|pad|>", "<|end|>", "<|end|>")
    assert custom.convert_tokens_to_ids("<|user|>") == 2 and "<|user|>" in custom.all_special_tokens
    assert custom("hi <|user|> there", add_special_tokens=False)["input_ids"].count(2) == 1  # never split


def test_lowercase(tmp_path, table):
    for kind in ("bpe", "wordpiece", "unigram"):
        tok = auto(build(tmp_path, table, kind, kind=kind, vocab_size=300, lowercase=True))
        assert tok("KING") == tok("king")


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_rebuild_is_byte_identical_in_and_across_processes(tmp_path, table, kind):
    first = files(build(tmp_path, table, "a", kind=kind, vocab_size=260 if kind != "bpe" else 400))
    again = files(build(tmp_path, table, "b", kind=kind, vocab_size=260 if kind != "bpe" else 400))
    assert first == again
    subprocess.run([sys.executable, "-c", REBUILD, str(tmp_path), str(table), kind, "260" if kind != "bpe" else "400"],
                   check=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "RAYON_NUM_THREADS": "1"})
    assert files(tmp_path / "c") == first


def test_vocab_size_caps_the_vocabulary(tmp_path, table):
    for kind, size in (("bpe", 270), ("wordpiece", 200), ("unigram", 120)):
        tok = auto(build(tmp_path, table, kind, kind=kind, vocab_size=size))
        assert len(tok) == size, kind


def test_reads_a_splits_train_table_and_samples_rows(tmp_path):
    split = tmp_path / "split"
    write_table(pa.table({"text": corpus(400)}), split / "train")
    write_table(pa.table({"text": ["never seen"]}), split / "validation")
    out = build(tmp_path, split, kind="bpe", vocab_size=280, sample_rows=100)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == 100
    sampled = build(tmp_path, split, "table", kind="bpe", vocab_size=280, sample_rows=100, table="train")
    assert files(sampled) == files(out)


def test_nulls_and_empty_strings_are_skipped(tmp_path):
    source = tmp_path / "t"
    write_table(pa.table({"text": ["the king", None, "", "the queen"] * 50}), source)
    out = build(tmp_path, source, kind="bpe", vocab_size=270)
    assert json.loads((out / "metrics.json").read_text())["rows"] == 100


def test_build_errors_name_the_problem(tmp_path, table):
    with pytest.raises(BuildError, match=r"'txt'.*did you mean 'text'"):
        build(tmp_path, table, "a", column="txt")
    with pytest.raises(BuildError, match=r"'n' is a int64 column"):
        build(tmp_path, table, "b", column="n")
    with pytest.raises(BuildError, match=r"needs \d+ tokens just for its characters.*raise vocab_size"):
        build(tmp_path, table, "c", kind="wordpiece", vocab_size=30)
    empty = tmp_path / "empty"
    write_table(pa.table({"text": pa.array([None, ""], pa.string())}), empty)
    with pytest.raises(BuildError, match="no text to train on"):
        build(tmp_path, empty, "d", vocab_size=300)


@pytest.mark.parametrize("params, key, message", [
    ({"kind": "bpe", "vocab_size": 100}, "params.vocab_size", "cannot hold the 256 bytes and 1 special token"),
    ({"kind": "unigram", "min_frequency": 3}, "params.min_frequency", "applies to bpe and wordpiece"),
    ({"kind": "wordpiece", "special_tokens": ["[CLS]", "[SEP]"]}, "params.special_tokens", "needs an unknown token"),
    ({"special_tokens": ["<a>", "<a>"]}, "params.special_tokens", "more than once"),
    ({"special_tokens": ["<a>"], "roles": {"eoss": "<a>"}}, "params.roles.eoss", "did you mean 'eos'"),
    ({"special_tokens": ["<a>"], "roles": {"eos": "<b>"}}, "params.roles.eos", "not in special_tokens"),
    ({"kind": "sentencepiece"}, "params.kind", "is not one of"),
    ({"sample_rows": 0}, "params.sample_rows", "at least 1"),
])
def test_recipe_errors(params, key, message):
    with pytest.raises(RecipeError, match=message) as e:
        Tokenizer().normalise(params, file="r.yaml", step="tok")
    assert e.value.key == key


def test_roles_from_names():
    assert special_roles({"kind": "wordpiece"}) == {"unk": "[UNK]", "pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]",
                                                    "mask": "[MASK]"}
    assert special_roles({"kind": "unigram", "special_tokens": ["<unk>", "</s>"]}) == {"eos": "</s>", "unk": "<unk>"}
    assert special_roles({"kind": "bpe", "special_tokens": ["<s>", "</s>", "<pad>"]}) == {
        "bos": "<s>", "eos": "</s>", "unk": "</s>", "pad": "<pad>"}


def test_canonical_unigram_ignores_hash_order():
    """The trainer scores characters kept only as required characters min, min+1e-4, ... in hash order,
    and sums scores in hash order (noise in the 14th digit): both are made canonical."""
    low = -12.25
    trained = [["the", -2.0], ["▁king", -3.5000000000000004], ["▁queen", -3.5], ["x", low]]
    def required(order):
        out, penalty = [], 0.0
        for c in order:
            out.append([c, low + penalty])
            penalty += 1e-4
        return out
    one = [["<unk>", 0.0]] + sorted(trained + required("QZJ"), key=lambda p: -p[1])
    two = [["<unk>", 0.0]] + sorted(trained + required("JQZ"), key=lambda p: -p[1])
    assert one != two
    assert _canonical_unigram(one, 1) == _canonical_unigram(two, 1)
    canonical = _canonical_unigram(one, 1)
    assert canonical[0] == ["<unk>", 0.0] and [p for p, _ in canonical[1:4]] == ["the", "▁king", "▁queen"]
