"""The benchmark builder through the real CLI, on a tiny GPT-2 made from a config (no download, seconds):
each task its own derivation, lm-eval's metrics with standard errors and the per-sample table, gates against
a baseline, lm-eval's own command line agreeing with us, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Cli, Project

from modelbuild.benchmarks_lm import make_tasks
from modelbuild.benchmarks_lm.tasks import BUNDLED_DIR
from modelbuild.table import read_table

LIMIT = 8


def tiny_lm(out: Path) -> Path:
    """A 2-layer GPT-2 with a byte-level BPE tokenizer trained on the bundled tasks' text, saved offline."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [line for p in sorted(BUNDLED_DIR.glob("*.jsonl")) for line in p.read_text().splitlines()]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(fast), n_layer=2, n_embd=32, n_head=2, n_positions=256,
                                       bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id))
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


OWN_TASK = """
task: colours
dataset_path: json
dataset_kwargs:
  data_files: {test: colours.jsonl}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{choices.index(answer)}}"
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
"""
COLOURS = [{"question": f"What colour is {thing}?", "choices": ["red", "green", "blue", "white"], "answer": a}
           for thing, a in [("a tomato", "red"), ("grass", "green"), ("the sky", "blue"), ("snow", "white"),
                            ("a leaf", "green"), ("a cherry", "red")]]


def recipe(tasks: str, gates: str = "{}", baseline: str = "") -> str:
    return f"""
name: bench
steps:
  bench:
    builder: benchmark
    inputs: {{model: {{path: tiny}}{baseline}}}
    params: {{tasks: {tasks}, limit: {LIMIT}, gates: {gates}}}
"""


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = Project(tmp_path_factory.mktemp("bench"))
    tiny_lm(root / "tiny")
    root.write("colours.yaml", OWN_TASK)
    root.write("colours.jsonl", jsonl(COLOURS))
    return root, Cli(root, root / "store")


@pytest.fixture(scope="module")
def first(env):
    root, cli = env
    root.write("recipe.yaml", recipe("{mc: mb_mc}"))
    return cli.build()


def test_scores_a_task_with_lm_eval_metrics_errors_and_samples(env, first):
    root, cli = env
    task = Path(first["by_step"]["bench.mc"]["path"])
    metrics = json.loads((task / "metrics.json").read_text())
    assert metrics["samples"] == LIMIT and 0 <= metrics["acc"] <= 1 and metrics["acc_stderr"] > 0
    assert metrics["acc_ci_low"] < metrics["acc"] < metrics["acc_ci_high"]
    samples = read_table(task / "samples").to_pylist()
    assert [s["doc_id"] for s in samples] == list(range(LIMIT))
    assert len(json.loads(samples[0]["loglikelihoods"])) == 4 == len(json.loads(samples[0]["choices"]))
    assert sum(s["acc"] for s in samples) / LIMIT == pytest.approx(metrics["acc"])
    gathered = json.loads((Path(first["by_step"]["bench"]["path"]) / "metrics.json").read_text())
    assert gathered["mc.acc_norm"] == metrics["acc_norm"]
    assert "| mc.acc |" in (Path(first["by_step"]["bench"]["path"]) / "summary.md").read_text()
    log = (cli.store / "logs" / f"{first['by_step']['bench.mc']['key']}.log").read_text()
    assert "fatal:" not in log and "Traceback" not in log  # lm-eval's git describe and host report stay out


def test_adding_a_task_scores_only_that_task(env, first):
    root, cli = env
    root.write("recipe.yaml", recipe("{mc: mb_mc, colours: colours.yaml}"))
    plan = cli("plan", "recipe.yaml").stdout
    assert [line.split()[:2] for line in plan.splitlines()] == [
        ["bench.mc", "cached"], ["bench.colours", "build"], ["bench", "build"]], plan
    again = cli.build()
    assert cli.statuses(again) == {"bench.mc": "cached", "bench.colours": "built", "bench": "built"}
    metrics = json.loads((Path(again["by_step"]["bench"]["path"]) / "metrics.json").read_text())
    assert metrics["colours.samples"] == len(COLOURS) and "mc.acc" in metrics


def test_gate_against_a_baseline_model_scored_on_the_same_tasks(env, first):
    """The same model as baseline: its task steps have the model's keys (cache hits), and a gate asking
    for a gain of 0.5 fails with exit 4 and the table of gates."""
    root, cli = env
    root.write("gated.yaml", recipe("{mc: mb_mc}", gates='{mc.acc: ">= baseline + 0.5", mc.acc_norm: ">= baseline"}',
                                    baseline=", baseline: {path: tiny}"))
    result = cli.build("gated.yaml", check=4)
    assert result["by_step"]["bench.baseline.mc"]["status"] == "cached"
    error = result["by_step"]["bench"]["error"]
    assert "mc.acc" in error and "FAIL" in error and "baseline + 0.5" in error, error
    gates = json.loads((Path(result["by_step"]["bench"]["path"]) / "gates.json").read_text())
    assert [g["passed"] for g in gates["gates"]] == [False, True]


@pytest.mark.slow  # lm-eval's own process: imports, its task index and the model again (~1.5 min on two cores)
def test_our_accuracy_equals_the_lm_eval_command_line(env, first, tmp_path):
    """lm_eval run directly on the same model folder and task, same samples and seed: the same acc."""
    root, _ = env
    tasks = tmp_path / "tasks"
    shutil.copytree(BUNDLED_DIR, tasks)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                           f"pretrained={root / 'tiny'},dtype=float32", "--tasks", "mb_mc", "--include_path",
                           str(tasks), "--limit", str(LIMIT), "--seed", "0", "--batch_size", "8", "--device", "cpu",
                           "--output_path", str(out)], cwd=tasks, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                               "HF_DATASETS_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["mb_mc"]
    ours = json.loads((Path(first["by_step"]["bench.mc"]["path"]) / "metrics.json").read_text())
    assert ours["acc"] == theirs["acc,none"] and ours["acc_norm"] == theirs["acc_norm,none"]
    assert ours["acc_stderr"] == pytest.approx(theirs["acc_stderr,none"])


@pytest.mark.parametrize("case, files, code, words", [
    ("unknown task", {}, 2, ["unknown task 'mb_mcc'", "did you mean 'mb_mc'"]),
    ("missing data", {"t.yaml": OWN_TASK}, 2, ["colours.jsonl", "does not exist"]),
    ("missing field", {"t.yaml": OWN_TASK, "colours.jsonl": jsonl([COLOURS[0], {"choices": ["a"], "answer": "a"}])},
     3, ["colours.jsonl, line 2", "'question'"]),
    ("answer not a choice", {"t.yaml": OWN_TASK, "colours.jsonl": jsonl([{**COLOURS[0], "answer": "pink"}])},
     3, ["colours.jsonl, line 1", "'pink' is not one of its choices"]),
    ("not a language model", {"t.yaml": OWN_TASK, "colours.jsonl": jsonl(COLOURS),
                              "tiny/config.json": json.dumps({"architectures": ["BertForSequenceClassification"]})},
     2, ["not a causal language model", "sequence-classification"]),
])
def test_bad_input(project, cli, case, files, code, words):
    for name, text in files.items():
        project.write(name, text)
    (project / "tiny").mkdir(exist_ok=True)
    task = "t.yaml" if files else "mb_mcc"
    project.write("recipe.yaml", recipe(f"{{x: {task}}}"))
    proc = cli("build", "recipe.yaml", check=code)
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def test_bundled_sets_are_the_seeded_generators_output(tmp_path, monkeypatch):
    monkeypatch.setattr(make_tasks, "HERE", tmp_path)
    make_tasks.main()
    for name in ("mb_arith.jsonl", "mb_mc.jsonl", "mb_instruct.jsonl"):
        assert (tmp_path / name).read_bytes() == (BUNDLED_DIR / name).read_bytes()
    arith = [json.loads(x) for x in (BUNDLED_DIR / "mb_arith.jsonl").read_text().splitlines()]
    mc = [json.loads(x) for x in (BUNDLED_DIR / "mb_mc.jsonl").read_text().splitlines()]
    assert len(arith) >= 200 and len({r["question"] for r in arith}) == len(arith)
    assert len(mc) >= 200 and all(len(set(r["choices"])) == 4 and r["answer"] in r["choices"] for r in mc)
