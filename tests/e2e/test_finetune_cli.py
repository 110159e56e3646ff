"""`modelbuild build` of finetune steps, in a subprocess against a temporary store.

A tiny llama saved next to the recipe stands in for a pretrained model, so that caching, `--check`
(bit-identical CPU rebuilds), a param change, an adapter whose base is another step's artifact, and a bad
`model` input are all checked in seconds. The slow test builds recipes/smollm-sft.yaml as a user would
and asks the fine-tuned SmolLM2 a question.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import REPO, Cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("lightning")

os.environ["HF_HUB_OFFLINE"] = "1"

RECIPE = """
name: ft
steps:
  pairs:
    builder: ingest
    inputs: {data: {path: pairs.jsonl}}
  splits:
    builder: split
    inputs: {data: pairs}
    params: {fractions: {train: 0.75, validation: 0.25}}
  merged:
    builder: finetune
    inputs: {model: {path: tiny}, data: splits}
    params:
      task: sft
      method: lora
      lora: {r: 4, alpha: 8}
      num_threads: 1
      batch_size: 4
      optimizer: {lr: 0.01}
      trainer: {max_steps: 4}
  adapter:
    builder: finetune
    description: LoRA on the merged model, saved alone; its base is the artifact of `merged`
    inputs: {model: merged, data: splits}
    params:
      task: sft
      method: lora
      lora: {r: 2, merge: false}
      num_threads: 1
      optimizer: {lr: 0.01}
      trainer: {max_steps: 2}
"""
WORDS = ["<pad>", "<eos>", "<unk>", "###", "Instruction", "Response", ":", "\n", "what", "is", "the", "capital",
         "of", "france", "paris", "japan", "tokyo", "two", "plus", "four", "?", "."]
PAIRS = [("what is the capital of france?", "paris."), ("what is the capital of japan?", "tokyo."),
         ("what is two plus two?", "four."), ("what is the capital of the capital?", "paris.")] * 2


def save_tiny_llama(folder: Path) -> None:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w ]"), behavior="isolated")
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                         unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)


@pytest.fixture
def tiny_project(project, cli):
    save_tiny_llama(project / "tiny")
    project.write("pairs.jsonl", "".join(json.dumps({"instruction": p, "response": r}) + "\n" for p, r in PAIRS))
    project.write("recipe.yaml", RECIPE)
    return cli


def test_finetune_steps_are_cached_reproducible_and_rebuilt_on_a_param_change(tiny_project):
    cli = tiny_project
    first = cli.build()
    assert cli.statuses(first) == dict.fromkeys(("pairs", "splits", "merged", "adapter"), "built")
    assert set(cli.statuses(cli.build()).values()) == {"cached"}

    merged = Path(first["by_step"]["merged"]["path"])
    model = transformers.AutoModelForCausalLM.from_pretrained(merged, local_files_only=True)
    assert not any("lora" in name for name in model.state_dict())
    import modelbuild

    ids = torch.tensor([[3, 4, 6, 8, 9, 10, 11, 12, 13, 20]])
    with torch.no_grad():
        assert torch.equal(modelbuild.load_model(merged)(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    metrics = json.loads((merged / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["reproducibility"] == "bit-identical" and "val_loss" in metrics

    adapter = Path(first["by_step"]["adapter"]["path"])
    base = json.loads((adapter / "base_model.json").read_text())
    assert base["path"] == f"objects/{merged.name}"  # relative to the store root: the same in every store
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base["path"]
    from peft import PeftConfig, PeftModel

    from modelbuild.training.pretrained import load_adapter_model

    with torch.no_grad():
        expected = load_adapter_model("sft", adapter).eval()(input_ids=ids).logits
        assert expected.shape == (1, 10, len(WORDS))
        # docs/training.md's lines for peft alone: the base path is relative to the store root, two folders up
        base_model = transformers.AutoModelForCausalLM.from_pretrained(
            adapter.parents[1] / PeftConfig.from_pretrained(adapter).base_model_name_or_path)
        peft_model = PeftModel.from_pretrained(base_model, adapter).eval()
        assert torch.equal(peft_model(input_ids=ids).logits, expected)
        assert torch.equal(modelbuild.load_model(adapter)(input_ids=ids).logits, expected)

    check = cli.build("recipe.yaml", "--check")
    assert all(s["reproducible"] for s in check["steps"]), check["steps"]

    changed = cli.build("recipe.yaml", "steps.merged.params.optimizer.lr=0.02")
    assert cli.statuses(changed) == {"pairs": "cached", "splits": "cached", "merged": "built", "adapter": "built"}


def test_a_model_input_without_a_model_fails_the_step(tiny_project, project):
    (project / "empty").mkdir()
    (project / "empty" / "README.md").write_text("weights were never copied here\n")
    recipe = (project / "recipe.yaml").read_text().replace("{model: {path: tiny}", "{model: {path: empty}")
    project.write("bad.yaml", recipe)
    result = tiny_project.build("bad.yaml", check=1)
    assert result["by_step"]["merged"]["status"] == "failed"
    assert "adapter" not in result["by_step"] or result["by_step"]["adapter"]["status"] != "built"
    error = result["by_step"]["merged"]["error"]
    assert error.startswith("step 'merged': the pretrained model folder ") and "holds no model" in error, error
    assert "config.json" in error and ".gguf" in error
    assert "Traceback" not in result["stderr"]


@pytest.mark.slow(minutes=12)  # the heldout step loads the fine-tune and the GGUF once more
@pytest.mark.timeout(3000)
def test_smollm_sft_recipe_builds_a_model_that_answers(tmp_path):
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    cli = Cli(tmp_path, tmp_path / "store")
    first = json.loads(cli("build", "recipes/smollm-sft.yaml", "--json", timeout=2400).stdout)
    assert {s["step"]: s["status"] for s in first["steps"]} == dict.fromkeys(
        ("instructions", "splits", "sft", "heldout", "bench.arith", "bench.baseline.arith", "bench.mc",
         "bench.baseline.mc", "bench"), "built")
    again = json.loads(cli("build", "recipes/smollm-sft.yaml", "--json").stdout)
    assert {s["status"] for s in again["steps"]} == {"cached"}

    path = next(s["path"] for s in first["steps"] if s["step"] == "sft")
    assert cli("path", "smollm-sft:sft").stdout.strip().endswith(Path(path).name)
    metrics = json.loads((Path(path) / "metrics.json").read_text())
    assert metrics["steps"] == 15 and "val_loss" in metrics
    heldout = next(Path(s["path"]) for s in first["steps"] if s["step"] == "heldout")  # framed as training framed it
    assert json.loads((heldout / "metrics.json").read_text())["perplexity"] == pytest.approx(
        metrics["val_perplexity"], rel=1e-3)  # the LoRA merge rounds once: 2.2354 against 2.2356
    tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    reply = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply, reply
    bench = next(Path(s["path"]) for s in first["steps"] if s["step"] == "bench")
    gates = json.loads((bench / "gates.json").read_text())
    assert gates["passed"] and {g["metric"] for g in gates["gates"]} == {"arith.exact_match", "mc.acc_norm"}
    assert "| arith.exact_match |" in (bench / "summary.md").read_text()
