"""A 12-trial tabular search end to end, with warm workers and without (MODELBUILD_WARM=0), in one run.

Each trial trains a small MLP (the `train` builder, tabular-classification) on a synthetic table of --rows
rows (x1, x2, colour -> label) for --epochs epochs: lr 3 points x hidden 2 x dropout 2 = 12 trials, a grid,
two at a time (-j 2, num_workers 2). The data steps are built first in each store, untimed. Both searches
must find the same trials with the same results (their val_loss values are compared); the ratio is
cold / warm end to end (target >= 2x).

Run:
    .venv/bin/python benchmarks/warm_search.py             # ~3 min on 2 cores
    .venv/bin/python benchmarks/warm_search.py --cold-only # the "before" figure alone
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = """
name: search
steps:
  raw:
    builder: ingest
    inputs: {data: {path: data.csv}}
  splits:
    builder: split
    inputs: {data: raw}
    params: {method: stratified, stratify: label, fractions: {train: 0.8, validation: 0.2}}
  model:
    builder: train
    inputs: {data: splits}
    params:
      task: tabular-classification
      data: {target: label}
      batch_size: 64
      trainer: {max_epochs: EPOCHS, enable_model_summary: false}
  search:
    builder: tune
    params:
      target: model
      space:
        optimizer.lr: {log: [1.0e-3, 3.0e-2], points: 3}
        model.hidden: {choice: [[32], [64, 32]]}
        model.dropout: {choice: [0.0, 0.2]}
      objective: {metric: val_loss, mode: min}
      optimizer: grid
      num_workers: 2
"""


def write_data(folder: Path, rows: int) -> None:
    rng = random.Random(0)
    lines = ["x1,x2,colour,label"]
    for _ in range(rows):
        x1, x2, colour = rng.gauss(0, 1), rng.gauss(0, 1), rng.choice(["red", "green", "blue"])
        label = "yes" if x1 + 0.5 * x2 + (colour == "red") + rng.gauss(0, 0.1) > 0.5 else "no"
        lines.append(f"{x1:.4f},{x2:.4f},{colour},{label}")
    (folder / "data.csv").write_text("\n".join(lines) + "\n")


def build(folder: Path, store: Path, warm: bool, *args: str) -> tuple[float, dict]:
    env = {**os.environ, "MODELBUILD_WARM": "1" if warm else "0"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "modelbuild", "--store", str(store), "build", "recipe.yaml",
                           "--json", "-j", "2", *args], cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"modelbuild build failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds, json.loads(proc.stdout)


def search(folder: Path, warm: bool) -> tuple[float, list]:
    store = folder / ("store-warm" if warm else "store-cold")
    build(folder, store, warm, "-t", "splits")
    seconds, result = build(folder, store, warm, "-t", "search")
    path = next(s["path"] for s in result["steps"] if s["step"] == "search")
    trials = json.loads((Path(path) / "trials.json").read_text())["trials"]
    return seconds, sorted((json.dumps(t["params"], sort_keys=True), t["objective"]) for t in trials)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--cold-only", action="store_true", help="measure without warm workers only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_data(folder, args.rows)
        (folder / "recipe.yaml").write_text(RECIPE.replace("EPOCHS", str(args.epochs)))
        cold, cold_trials = search(folder, warm=False)
        print(f"cold (MODELBUILD_WARM=0): {len(cold_trials)} trials in {cold:.1f} s ({cold / len(cold_trials):.2f} s "
              "a trial)")
        if args.cold_only:
            return
        warm, warm_trials = search(folder, warm=True)
        print(f"warm (zygotes):          {len(warm_trials)} trials in {warm:.1f} s ({warm / len(warm_trials):.2f} s "
              "a trial)")
        same = cold_trials == warm_trials
        print(f"same trials and results: {'yes' if same else 'NO'}")
        ratio = cold / warm
        print(f"cold / warm: {ratio:.2f}x (target >= 2x: {'met' if ratio >= 2 else 'MISSED'})")


if __name__ == "__main__":
    main()
