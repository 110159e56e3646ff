"""The language-model tasks (modelbuild/training/lm.py) through `loop.fit`: they learn, their export loads
offline with AutoModelFor*.from_pretrained and gives the trained model's logits, and bad models or data are
clear errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import subprocess
import sys

import pytest

pa = pytest.importorskip("pyarrow")
torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
transformers = pytest.importorskip("transformers")

from modelbuild.builders.base import BuildContext  # noqa: E402
from modelbuild.builders.tokenizer import Tokenizer  # noqa: E402
from modelbuild.builders.train import Train  # noqa: E402
from modelbuild.errors import BuildError, RecipeError  # noqa: E402
from modelbuild.table import write_table  # noqa: E402
from modelbuild.training import lm, loop  # noqa: E402
from modelbuild.training.tasks import load_task  # noqa: E402

GPT2 = {"architecture": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 32}
LLAMA = {"architecture": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 32}
BERT = {"architecture": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 64}
MOODS = {"pos": "good fine happy glad bright", "neg": "bad sad grim dark awful", "neu": "table chair door wall"}


def lines(rows: int, seed: int = 0) -> list[str]:
    """Text with structure a tiny model can learn: words made of syllables, in repeating phrases."""
    rng = random.Random(seed)
    phrases = ["the king is dead", "long live the queen", "to be or not to be", "a horse a horse",
               "now is the winter of our discontent", "all the world is a stage"]
    return [" ".join(rng.choice(phrases) for _ in range(rng.randint(1, 3))) + rng.choice(".!?") for _ in range(rows)]


def moods(rows: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    filler = "the a it was and then we saw".split()
    texts, labels = [], []
    for _ in range(rows):
        label = rng.choice(sorted(MOODS))
        words = rng.sample(filler, 3) + [rng.choice(MOODS[label].split())] + rng.sample(filler, 2)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("lm")


@pytest.fixture(scope="module")
def text(root):
    write_table(pa.table({"text": lines(400)}), root / "text")
    return root / "text"


@pytest.fixture(scope="module")
def labelled(root):
    texts, labels = moods(600)
    write_table(pa.table({"sentence": texts, "mood": labels}), root / "labelled")
    return root / "labelled"


def train_tokenizer(root, source, name, **params):
    out = root / name
    out.mkdir()
    params = Tokenizer().normalise(params, file="r.yaml", step="tok")
    Tokenizer().build(BuildContext(step="tok", inputs={"data": source}, out=out, params=params, recipe_dir=root))
    return out


@pytest.fixture(scope="module")
def bpe(root, text):
    return train_tokenizer(root, text, "bpe", kind="bpe", vocab_size=300)


@pytest.fixture(scope="module")
def wordpiece(root, labelled):
    return train_tokenizer(root, labelled, "wordpiece", kind="wordpiece", vocab_size=120, column="sentence")


def context(tmp_path, task: str, inputs: dict, model=None, data=None, name="out", **loop_params):
    trainer = {"max_steps": 30, "log_every_n_steps": 1, **loop_params.pop("trainer", {})}
    params = {"task": task, "model": model or {}, "data": data or {}, "batch_size": 8, "trainer": trainer,
              "optimizer": {"lr": 0.01}, **loop_params}
    params = Train().normalise(params, file="r.yaml", step="lm")
    out = tmp_path / name
    out.mkdir()
    return BuildContext(step="lm", inputs=inputs, out=out, params=params, recipe_dir=tmp_path,
                        work=tmp_path / f"{name}-work")


def fit(tmp_path, task: str, inputs: dict, model=None, data=None, name="out", **loop_params):
    """Train through the real loop; return (task, artifact folder, metrics)."""
    ctx = context(tmp_path, task, inputs, model, data, name, **loop_params)
    t = load_task(task, ctx, ctx.params)
    return t, ctx.out, loop.fit(ctx, t, ctx.params)


def logged_losses(out) -> list[float]:
    with open(out / "logs" / "metrics.csv") as f:
        return [float(r["train_loss_step"]) for r in csv.DictReader(f) if r.get("train_loss_step")]


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory, text, bpe):
    tmp = tmp_path_factory.mktemp("gpt2")
    return fit(tmp, "causal-lm", {"data": text, "tokenizer": bpe}, GPT2, {"block_size": 32})


def test_causal_lm_learns_and_reports_perplexity(gpt2_run):
    task, out, metrics = gpt2_run
    losses = logged_losses(out)
    assert len(losses) == 30
    assert losses[-1] < losses[0] - 1.0, losses
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]), rel=1e-5)
    assert metrics["val_loss"] < math.log(300)  # better than guessing among 300 tokens
    assert metrics["tokens"] == metrics["samples"] * 32


def test_causal_lm_export_loads_offline_with_the_same_logits(gpt2_run, monkeypatch):
    task, out, _ = gpt2_run
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    names = sorted(p.name for p in out.iterdir() if p.is_file())
    assert names == ["config.json", "generation_config.json", "metrics.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json"]
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert len(tok) == model.config.vocab_size == 300
    assert model.config.eos_token_id == tok.eos_token_id == 0
    ids = tok("the king is dead. long live", return_tensors="pt")["input_ids"]
    trained = task.model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, trained(ids).logits)
    generated = model.generate(ids, max_new_tokens=6)
    assert torch.equal(generated, trained.generate(ids, max_new_tokens=6))  # greedy: generation_config
    assert generated.shape[1] == ids.shape[1] + 6
    config = json.loads((out / "config.json").read_text())
    assert str(out.parent) not in json.dumps(config) and "local_files_only" not in (out / "tokenizer_config.json"
                                                                                     ).read_text()


def test_causal_lm_rebuild_is_bit_identical(tmp_path, text, bpe):
    a = fit(tmp_path, "causal-lm", {"data": text, "tokenizer": bpe}, GPT2, {"block_size": 16}, "a",
            trainer={"max_steps": 4})[1]
    b = fit(tmp_path, "causal-lm", {"data": text, "tokenizer": bpe}, GPT2, {"block_size": 16}, "b",
            trainer={"max_steps": 4})[1]
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "metrics.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_causal_lm_llama(tmp_path, text, bpe):
    task, out, metrics = fit(tmp_path, "causal-lm", {"data": text, "tokenizer": bpe}, LLAMA, {"block_size": 32},
                             trainer={"max_steps": 5, "val_check_interval": 5})
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, task.model.eval()(ids).logits)
    assert "val_loss" in metrics


def test_blocks_eos_stride_and_validation(tmp_path, bpe):
    source = tmp_path / "rows"
    write_table(pa.table({"text": ["to be", None, "or not to be"] * 10}), source)
    ctx = context(tmp_path, "causal-lm", {"data": source, "tokenizer": bpe}, GPT2,
                  {"block_size": 4, "stride": 2, "validation_fraction": 0.2})
    task = load_task("causal-lm", ctx, ctx.params)
    task.setup()
    tok = task.tokenizer
    train = torch.stack([r["input_ids"] for r in task.train_data])
    assert train.shape[1] == 4 and torch.equal(train[1][:2], train[0][2:])  # windows every 2 tokens
    stream = train[::2].flatten().tolist()
    eos = tok.eos_token_id
    assert stream[:len(tok("to be")["input_ids"]) + 2] == tok("to be")["input_ids"] + [eos, eos]  # a null row: ""
    val = torch.stack([r["input_ids"] for r in task.val_data])
    held = [i for i in range(30) if math.floor((i + 1) * 0.2) > math.floor(i * 0.2)]
    assert held == [4, 9, 14, 19, 24, 29]  # every fifth row
    texts = ["to be", "", "or not to be"]
    expected = [t for i in held for t in tok(texts[i % 3], add_special_tokens=False)["input_ids"] + [eos]]
    assert val.flatten().tolist() == expected[:val.numel()] and val.numel() > len(expected) - 4
    no_val = context(tmp_path, "causal-lm", {"data": source, "tokenizer": bpe}, GPT2,
                     {"block_size": 4, "validation_fraction": 0}, name="nv")
    task = load_task("causal-lm", no_val, no_val.params)
    task.setup()
    assert task.val_dataloader() is None


def test_causal_lm_uses_a_splits_validation_table(tmp_path, bpe):
    split = tmp_path / "split"
    write_table(pa.table({"text": lines(60)}), split / "train")
    write_table(pa.table({"text": ["to be or not to be"] * 8}), split / "validation")
    ctx = context(tmp_path, "causal-lm", {"data": split, "tokenizer": bpe}, GPT2, {"block_size": 8})
    task = load_task("causal-lm", ctx, ctx.params)
    task.setup()
    per_row = len(task.tokenizer("to be or not to be")["input_ids"]) + 1
    assert len(task.val_data) == per_row * 8 // 8


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory, labelled, wordpiece):
    tmp = tmp_path_factory.mktemp("bert")
    return fit(tmp, "sequence-classification", {"data": labelled, "tokenizer": wordpiece}, BERT,
               {"text": "sentence", "label": "mood", "max_length": 16}, trainer={"max_steps": 136},
               optimizer={"lr": 0.003})  # two epochs of 68 batches; validation ends each


def test_sequence_classification_learns(bert_run):
    task, out, metrics = bert_run
    assert metrics["val_accuracy"] > 0.9, metrics
    assert 0.9 < metrics["val_f1"] <= 1.0
    losses = logged_losses(out)
    assert sum(losses[-5:]) < sum(losses[:5])


def test_sequence_classification_export_loads_with_sorted_labels(bert_run, monkeypatch):
    task, out, _ = bert_run
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert model.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    batch = tok(["it was a good day", "it was dark and grim"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        assert torch.equal(logits, task.model.eval()(**batch).logits)
    assert [model.config.id2label[i] for i in logits.argmax(-1).tolist()] == ["pos", "neg"]


def test_sequence_classification_gpt2_from_a_pretrained_model_input(tmp_path, gpt2_run):
    """A `model` input (another step's causal LM) gets a classification head; its tokenizer comes along."""
    _, causal, _ = gpt2_run
    source = tmp_path / "t"
    write_table(pa.table({"text": ["the king is dead", "long live the queen"] * 20, "label": [2, 10] * 20}), source)
    task, out, _ = fit(tmp_path, "sequence-classification", {"data": source, "model": causal}, None,
                       {"max_length": 16}, trainer={"max_steps": 3})
    assert type(task.model).__name__ == "GPT2ForSequenceClassification"
    assert task.model.config.id2label == {0: "2", 1: "10"}  # sorted by value, not as strings
    assert task.model.config.pad_token_id == task.tokenizer.pad_token_id
    base = transformers.AutoModelForCausalLM.from_pretrained(str(causal))
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(str(out))
    assert reloaded.config.num_labels == 2
    assert not torch.equal(base.transformer.wte.weight, reloaded.transformer.wte.weight)  # it trained
    ctx = context(tmp_path, "sequence-classification", {"data": source, "model": causal}, None, name="fresh")
    fresh = load_task("sequence-classification", ctx, ctx.params)
    fresh.setup()
    assert torch.equal(base.transformer.h[0].mlp.c_fc.weight, fresh.model.transformer.h[0].mlp.c_fc.weight)
    assert fresh.model.training  # from_pretrained's eval mode would switch dropout off


def test_tokenizer_larger_than_the_model_vocabulary(tmp_path, text, bpe):
    with pytest.raises(BuildError, match=r"tokenizer has 300 tokens .* vocabulary has 100; set model.vocab_size"):
        fit(tmp_path, "causal-lm", {"data": text, "tokenizer": bpe}, {**GPT2, "vocab_size": 100}, {"block_size": 8})


def test_pretrained_model_smaller_than_the_tokenizer(tmp_path, text, bpe):
    small = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_layer=1, n_embd=8, n_head=2,
                                                                 n_positions=16))
    small.save_pretrained(str(tmp_path / "small"))
    with pytest.raises(BuildError, match=r"tokenizer has 300 tokens .* vocabulary has 50"):
        fit(tmp_path, "causal-lm", {"data": text, "tokenizer": bpe, "model": tmp_path / "small"}, None,
            {"block_size": 8})


def test_unknown_architecture(tmp_path, text, bpe):
    with pytest.raises(RecipeError, match=r"unknown architecture 'gtp2' for task causal-lm \(did you mean 'gpt2'") as e:
        Train().normalise({"task": "causal-lm", "model": {"architecture": "gtp2"}, "trainer": {"max_steps": 1}},
                          file="r.yaml", step="lm")
    assert e.value.key == "params.model.architecture" and e.value.step == "lm"
    with pytest.raises(RecipeError, match=r"'bert' .*serves sequence-classification only"):
        lm.check_model_params("causal-lm", {"architecture": "bert"})
    ctx = context(tmp_path, "causal-lm", {"data": text, "tokenizer": bpe}, GPT2, {"block_size": 16})
    ctx.params["model"] = {"architecture": "mamba"}
    with pytest.raises(BuildError, match="unknown architecture 'mamba'"):
        loop.fit(ctx, load_task("causal-lm", ctx, ctx.params), ctx.params)


@pytest.mark.parametrize("task, model, data, key, message", [
    ("causal-lm", {**GPT2, "n_layers": 2}, None, "model.n_layers", "did you mean 'n_layer'"),
    ("causal-lm", {**GPT2, "eos_token_id": 3}, None, "model.eos_token_id", "set by the task"),
    ("sequence-classification", {**BERT, "num_labels": 3}, None, "model.num_labels", "set by the task"),
    ("causal-lm", {**GPT2, "n_embd": 31}, None, "model.n_embd", "multiple of n_head"),
    ("causal-lm", {**GPT2, "hidden_size": 32}, None, "model.hidden_size", "the same setting"),
    ("causal-lm", {**GPT2, "n_layer": 1.5}, None, "model.n_layer", "whole number"),
    ("causal-lm", GPT2, {"block_size": 64}, "model.n_positions", "block_size is 64 but the model has 32"),
    ("causal-lm", {"n_layer": 2}, None, "model.architecture", "needs model.architecture"),
    ("causal-lm", GPT2, {"colum": "text"}, "data.colum", "did you mean 'column'"),
    ("causal-lm", GPT2, {"validation_fraction": 1}, "data.validation_fraction", r"up to \(not including\) 1"),
    ("causal-lm", GPT2, {"block_size": 1}, "data.block_size", "at least 2"),
    ("sequence-classification", BERT, {"label": ""}, "data.label", "must name a column"),
])
def test_check_model_params(task, model, data, key, message):
    with pytest.raises(RecipeError, match=message) as e:
        lm.check_model_params(task, model, data, file="r.yaml", step="lm")
    assert e.value.key == f"params.{key}"


def test_check_model_params_accepts_good_settings():
    lm.check_model_params("causal-lm", GPT2, {"block_size": 32})
    lm.check_model_params("causal-lm", {"architecture": "gpt2", "hidden_size": 64, "num_attention_heads": 4}, {})
    lm.check_model_params("sequence-classification", {}, {"text": "t", "label": "l"})  # a pretrained model input
    lm.check_model_params("sequence-classification", LLAMA, {"max_length": 32})


def test_architecture_key_lists_match_transformers():
    for arch, (config_name, keys, _) in lm.ARCHITECTURES.items():
        config = getattr(transformers, config_name)
        fields = {f.name for f in dataclasses.fields(config)}
        assert set(keys) <= fields, (arch, set(keys) - fields)
        assert lm.ALIASES.get(arch, {}) == {k: v for k, v in config.attribute_map.items()
                                            if k in lm.ALIASES.get(arch, {})}


def test_data_errors(tmp_path, text, bpe, labelled, wordpiece):
    with pytest.raises(BuildError, match=r"needs a tokenizer: add `tokenizer: <step>`"):
        fit(tmp_path, "causal-lm", {"data": text}, GPT2, {"block_size": 16}, name="a")
    with pytest.raises(BuildError, match=r"params.data.column names column 'txt'.*did you mean 'text'"):
        fit(tmp_path, "causal-lm", {"data": text, "tokenizer": bpe}, GPT2, {"column": "txt", "block_size": 16}, name="b")
    one = tmp_path / "one"
    write_table(pa.table({"text": ["a b", "c d"], "label": ["x", "x"]}), one)
    with pytest.raises(BuildError, match=r"'label' has 1 distinct value\(s\).*at least two"):
        fit(tmp_path, "sequence-classification", {"data": one, "tokenizer": wordpiece}, BERT, name="c")
    null = tmp_path / "null"
    write_table(pa.table({"text": ["a b", "c d"], "label": ["x", None]}), null)
    with pytest.raises(BuildError, match=r"row 1 .* has no 'label' label"):
        fit(tmp_path, "sequence-classification", {"data": null, "tokenizer": wordpiece}, BERT, name="d")
    with pytest.raises(BuildError, match=r"set params.model.architecture"):
        fit(tmp_path, "sequence-classification", {"data": labelled, "tokenizer": wordpiece}, None,
            {"text": "sentence", "label": "mood"}, name="e")
    short = tmp_path / "short"
    write_table(pa.table({"text": ["to be"]}), short)
    with pytest.raises(BuildError, match=r"fewer than one block"):
        fit(tmp_path, "causal-lm", {"data": short, "tokenizer": bpe}, GPT2, {"block_size": 32,
                                                                            "validation_fraction": 0}, name="f")


def test_importing_lm_is_cheap():
    code = "import sys, modelbuild.training.lm; print(sorted({'torch', 'lightning', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
