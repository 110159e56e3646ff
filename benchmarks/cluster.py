"""The Dask executor against the local one, in one run: the overhead per job and the speed-up curve.

  grid       recipes/income.yaml's model, a 24-point grid (4 lr x 2 hidden x 3 dropout, --epochs per trial;
             --quick: 6 points), num_workers 4, on: the local executor with -j 2, a 2-worker LocalCluster and
             a 4-worker one (1 thread each, 127.0.0.1, no dashboard). Each starts from a copy of one store
             holding the data steps (built first, untimed), so every trial is built.
  overhead   the same three on a grid of 48 no-op `python` trials: (executor's seconds - local's) x slots /
             jobs is what the executor adds to each job (target: under 0.1 s a job).

Run:
    .venv/bin/python benchmarks/cluster.py            # ~15 min on 2 cores
    .venv/bin/python benchmarks/cluster.py --quick    # ~4 min
Prints a table; exits 0 (a missed target is reported, not raised).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

GRID = """
  bench_grid:
    builder: tune
    params:
      target: model
      space:
        optimizer.lr: {{log: [1.0e-3, 3.0e-2], points: {lr_points}}}
        model.hidden: {{choice: [[32], [64, 32]]}}
        model.dropout: {dropout}
      objective: {{metric: val_loss, mode: min}}
      optimizer: grid
      num_workers: 4
"""

NOOP = """
name: noop
steps:
  f:
    builder: python
    params: {function: "noop_steps:f", x: 0.0}
  grid:
    builder: tune
    params:
      target: f
      space: {x: {uniform: [0.0, 1.0], points: 48}}
      objective: {metric: loss}
      optimizer: grid
      num_workers: 4
"""

NOOP_STEPS = """
import json


def f(ctx):
    (ctx.out / "metrics.json").write_text(json.dumps({"loss": ctx.params["x"]}))
"""


def modelbuild(store: Path, cwd: Path, *args) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "modelbuild", "--store", str(store), *args], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        sys.exit(f"modelbuild {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - start


def cluster(workers: int):
    from distributed import LocalCluster

    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address="127.0.0.1:0")


def scheduler_rate(workers: int = 2, tasks: int = 2000) -> float:
    """Trivial tasks a second through this machine's scheduler: its load per job, without modelbuild."""
    from distributed import Client

    with cluster(workers) as c, Client(c) as client:
        client.gather(client.map(abs, range(100)))
        start = time.perf_counter()
        client.gather(client.map(abs, range(tasks)))
        return tasks / (time.perf_counter() - start)


def sizes(store: Path) -> tuple[int, int]:
    """Bytes of one trial's artifact (what a worker pushes and the client substitutes) and of the splits (what
    a worker with a store of its own substitutes once before its first trial)."""
    def size(path: Path) -> int:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

    objects = list((store / "objects").iterdir())
    trials = [size(p) for p in objects if p.name.endswith("-model")]
    splits = [size(p) for p in objects if p.name.endswith("-splits")]
    return (sum(trials) // max(1, len(trials)), splits[0] if splits else 0)


def run_all(work: Path, base: Path, args: list[str]) -> dict[str, float]:
    """Seconds of one build on each executor, each from a fresh copy of `base` (a store)."""
    out = {}
    for name, workers in (("local -j 2", 0), ("dask 2 workers", 2), ("dask 4 workers", 4)):
        store = work / f"store-{name.replace(' ', '')}"
        shutil.rmtree(store, ignore_errors=True)
        if base.exists():
            shutil.copytree(base, store, symlinks=True)
        if not workers:
            out[name] = modelbuild(store, work, *args, "-j", "2")
        else:
            with cluster(workers) as c:
                url = c.scheduler_address.replace("tcp://", "dask://")
                modelbuild(work / "warm", work, "build", "noop.yaml", "-t", "f", "--executor", url)  # imports warm
                out[name] = modelbuild(store, work, *args, "--executor", url)
        print(f"  {args[1]} on {name}: {out[name]:.1f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 6-point grid")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per trial")
    args = ap.parse_args()
    lr_points, dropout = (3, "{choice: [0.1]}") if args.quick else (4, "{uniform: [0.0, 0.3], points: 3}")
    points = lr_points * 2 * (1 if args.quick else 3)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        recipe = (REPO / "recipes" / "income.yaml").read_text().rstrip() + "\n"
        (work / "income.yaml").write_text(recipe + GRID.format(lr_points=lr_points, dropout=dropout))
        (work / "noop.yaml").write_text(NOOP)
        (work / "noop_steps.py").write_text(NOOP_STEPS)
        over = [f"steps.model.params.trainer.max_epochs={args.epochs}"]
        seconds = modelbuild(work / "base", work, "build", "income.yaml", "-t", "splits", *over)
        print(f"data steps built in {seconds:.1f} s (untimed below)", flush=True)
        noop = run_all(work, work / "none", ["build", "noop.yaml", "--json"])
        grid = run_all(work, work / "base", ["build", "income.yaml", "-t", "bench_grid", "--json", *over])
        trial_bytes, split_bytes = sizes(work / "store-local-j2")
    rate = scheduler_rate()
    local = noop["local -j 2"]
    print(f"\n| executor | {points}-trial income grid | speed-up | 48 no-op trials | added per job |")
    print("| --- | --- | --- | --- | --- |")
    for name in grid:
        slots = 2 if name.startswith("local") else int(name.split()[1])
        added = (noop[name] - local) * min(slots, 4) / 48
        print(f"| {name} | {grid[name]:.1f} s | {grid['local -j 2'] / grid[name]:.2f}x | {noop[name]:.1f} s | "
              f"{added:+.3f} s |")
    worst = max((noop[n] - local) * int(n.split()[1]) / 48 for n in noop if n.startswith("dask"))
    print(f"\noverhead per job of the Dask executor: {worst:.3f} s (target < 0.1 s: {worst < 0.1})")
    print(f"scheduler: {rate:.0f} trivial tasks/s; a trial's artifact {trial_bytes / 1e6:.2f} MB, the splits "
          f"{split_bytes / 1e6:.2f} MB")
    print(json.dumps({"grid": grid, "noop": noop, "cores": os.cpu_count(), "scheduler_tasks_per_s": round(rate),
                      "trial_bytes": trial_bytes, "split_bytes": split_bytes}))


if __name__ == "__main__":
    main()
