"""The benchmark builder against lm-evaluation-harness's own command line, on the same model and task.

modelbuild: `modelbuild build` of a one-step recipe scoring the model on a task (`benchmark`, tasks
{mc: TASK}, limit N) into a fresh store; lm-eval: `lm_eval --model hf --model_args pretrained=MODEL --tasks
TASK --limit N` from the bundled tasks' folder. Both are timed as whole CLI processes (start, imports, model
load, scoring), alternating, the median of --repeat runs. Target: modelbuild's samples per second >= 0.95x
lm-eval's. Then a task is added to the recipe and rebuilt: only the new task's step (and the step that
gathers the tasks) may build.

Run (about 3 minutes on two idle cores with the tiny model):
    python benchmarks/llm_eval.py                          # a tiny GPT-2 made from a config
    python benchmarks/llm_eval.py --model PATH --limit 100 # any save_pretrained causal LM folder
Prints a Markdown table; exits 0 (a missed target is reported, not fatal).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "builders")]  # tiny_lm, from the tests

RECIPE = """name: llmbench
steps:
  bench:
    builder: benchmark
    inputs: {{model: {{path: {model}}}}}
    params: {{tasks: {tasks}, limit: {limit}, batch_size: {batch}}}
"""
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def timed(cmd: list, cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **OFFLINE, **env}, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def ours(work: Path, model: Path, task: str, limit: int, batch: int) -> float:
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    (work / "recipe.yaml").write_text(RECIPE.format(model=model, tasks=f"{{mc: {task}}}", limit=limit, batch=batch))
    return timed([sys.executable, "-m", "modelbuild", "--store", store, "build", "recipe.yaml"], work,
                 {"PYTHONPATH": str(REPO)})


def theirs(work: Path, model: Path, task: str, limit: int, batch: int) -> float:
    from modelbuild.benchmarks_lm.tasks import BUNDLED_DIR

    tasks = work / "tasks"
    shutil.rmtree(tasks, ignore_errors=True)
    shutil.copytree(BUNDLED_DIR, tasks)
    return timed([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                  f"pretrained={model},dtype=float32", "--tasks", task, "--include_path", tasks, "--limit",
                  str(limit), "--batch_size", str(batch), "--device", "cpu", "--seed", "0"], tasks,
                 {"HF_DATASETS_CACHE": str(work / "hfcache")})


def added_task(work: Path, model: Path, task: str, limit: int, batch: int) -> dict:
    """Build with one task, add another, rebuild: the statuses of the second build."""
    (work / "recipe.yaml").write_text(RECIPE.format(model=model, tasks=f"{{mc: {task}, arith: mb_arith}}",
                                                    limit=limit, batch=batch))
    proc = subprocess.run([sys.executable, "-m", "modelbuild", "--store", work / "store", "build", "recipe.yaml",
                           "--json"], cwd=work, env={**os.environ, **OFFLINE, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, check=True)
    return {s["step"]: s["status"] for s in json.loads(proc.stdout)["steps"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a save_pretrained causal LM folder (default: a tiny GPT-2)")
    ap.add_argument("--task", default="mb_mc")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llm-eval-bench-"))
    try:
        model = args.model
        if model is None:
            from test_benchmark import tiny_lm
            model = tiny_lm(work / "tiny")
        model = model.resolve()
        runs = {"modelbuild": [], "lm_eval": []}
        for _ in range(args.repeat):
            runs["modelbuild"].append(ours(work, model, args.task, args.limit, args.batch_size))
            runs["lm_eval"].append(theirs(work, model, args.task, args.limit, args.batch_size))
        statuses = added_task(work, model, args.task, args.limit, args.batch_size)  # same settings: mc cached
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rate = {k: args.limit / statistics.median(v) for k, v in runs.items()}
    ratio = rate["modelbuild"] / rate["lm_eval"]
    print(f"model {model.name}, task {args.task}, {args.limit} samples, batch {args.batch_size}, "
          f"median of {args.repeat} runs (whole CLI processes)\n")
    print("| tool | median s | samples/s |\n|---|---|---|")
    for k, v in runs.items():
        print(f"| {k} | {statistics.median(v):.1f} | {rate[k]:.2f} |")
    print(f"\nratio modelbuild / lm_eval: {ratio:.2f}x (target >= 0.95x: {'met' if ratio >= 0.95 else 'MISSED'})")
    print(f"rebuild with mb_arith added: {statuses}")
    only_new = statuses == {"bench.mc": "cached", "bench.arith": "built", "bench": "built"}
    print(f"only the new task scored: {'yes' if only_new else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
