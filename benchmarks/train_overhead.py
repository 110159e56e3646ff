"""What modelbuild costs on top of Lightning: the same model and data trained by a bare Lightning script and
by `modelbuild build`, in one run.

Data: a synthetic table (--rows rows: six numbers, three categories, a binary label) ingested and split
80/20 by modelbuild once, untimed. Model: modelbuild's tabular MLP (hidden 64, 32), batch 256, AdamW, a
fixed number of epochs, 2 CPU threads, deterministic algorithms, no validation (`limit_val_batches: 0`), in
both. The bare script builds the same `TabularMLP` from the artifact's config.json, encodes the same train
table with `tabular.encode`, and calls `Trainer.fit` with no logger, no checkpoints and no progress bar.

Measured, interleaved (modelbuild, bare, modelbuild, ...) --repeat times. On a shared machine other
work slows single runs by several times, so the figures compare each tool's best run (the least disturbed);
the median of the paired ratios is printed beside them:
  throughput   training samples / seconds inside `Trainer.fit`: bare (timed around fit) vs modelbuild (the
               build's `fit_seconds` fact, which includes its checkpoints, callbacks and reseeding)
  overhead     modelbuild: wall time of the whole `modelbuild build` process minus its time in fit (Python
               start, recipe and derivation, worker, imports, reading the data, export, hashing, commit);
               the bare script's own time outside fit (its imports and data) is shown beside it

  loop cost    in one process, interleaved (at least 5 runs each): `loop.fit` of the task against a plain
               `Trainer.fit` of the very same module, loader and optimizer, so process start-up, the
               machine's noise between processes and the script's own module are out of the comparison;
               what is left is the loop's callbacks, sampler, logger and checkpoints

Run:
    .venv/bin/python benchmarks/train_overhead.py                  # 60000 rows, 3 epochs, 3 repeats
    .venv/bin/python benchmarks/train_overhead.py --rows 20000 --repeat 1

Target: throughput ratio (modelbuild / bare) >= 0.95. Exits 0 after printing; a missed target is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RECIPE = """
name: bench
steps:
  raw:
    builder: ingest
    inputs: {data: {path: data.csv}}
  splits:
    builder: split
    inputs: {data: raw}
    params: {fractions: {train: 0.8, validation: 0.2}}
  model:
    builder: train
    inputs: {data: splits}
    params:
      task: tabular-classification
      data: {target: label}
      model: {hidden: [64, 32], dropout: 0.1}
      batch_size: 256
      optimizer: {name: adamw, lr: 0.003}
      num_threads: 2
      seed: 0
      trainer: {max_epochs: EPOCHS, limit_val_batches: 0, num_sanity_val_steps: 0, enable_model_summary: false}
"""

BARE = '''
"""Plain Lightning: the same network and data, nothing else."""
import json, sys, time
t0 = time.perf_counter()
import lightning.pytorch as pl
import torch
from modelbuild.table import read_table
from modelbuild.training.tabular import TabularMLP, encode

train_table, config_file, epochs, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
config = json.loads(open(config_file).read())
table = read_table(train_table)
numeric, categorical = encode(table, config)
classes = {c: i for i, c in enumerate(config["target"]["classes"])}
labels = torch.tensor([classes[v] for v in table.column("label").to_pylist()])
torch.set_num_threads(2)
pl.seed_everything(seed, verbose=False)


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = TabularMLP(config)

    def training_step(self, batch, batch_idx):
        x, c, y = batch
        loss = torch.nn.functional.cross_entropy(self.net.raw(x, c), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.003, weight_decay=0.0)


loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(numeric, categorical, labels), batch_size=256,
                                     shuffle=True)
trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, deterministic=True, accelerator="cpu", devices=1)
fit_started = time.perf_counter()
trainer.fit(Module(), loader)
fit = time.perf_counter() - fit_started
print(json.dumps({"samples": len(labels) * epochs, "fit_seconds": fit, "wall_seconds": time.perf_counter() - t0}))
'''


def write_data(folder: Path, rows: int) -> None:
    import random

    rng = random.Random(0)
    with open(folder / "data.csv", "w") as f:
        f.write("a,b,c,d,e,g,colour,shape,size,label\n")
        for _ in range(rows):
            xs = [rng.gauss(0, 1) for _ in range(6)]
            colour, shape, size = rng.choice("rgbkw"), rng.choice(["box", "ball", "cone"]), rng.choice("SML")
            label = int(xs[0] + 0.5 * xs[1] - xs[2] * xs[3] + (colour == "r") + rng.gauss(0, 0.3) > 0.5)
            f.write(",".join(f"{x:.4f}" for x in xs) + f",{colour},{shape},{size},{label}\n")


def modelbuild(folder: Path, *args: str) -> dict:
    cmd = [sys.executable, "-m", "modelbuild", "--store", str(folder / "store"), "build", "recipe.yaml", "--json",
           *args]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode:
        sys.exit(f"modelbuild build failed:\n{proc.stdout}\n{proc.stderr}")
    return {s["step"]: s for s in json.loads(proc.stdout)["steps"]}


def run_modelbuild(folder: Path, seed: int) -> dict:
    started = time.perf_counter()
    steps = modelbuild(folder, f"steps.model.params.seed={seed}")
    wall = time.perf_counter() - started
    assert steps["model"]["status"] == "built", steps["model"]
    meta = json.loads((Path(steps["model"]["path"]) / ".meta.json").read_text())
    metrics = meta["metrics"]
    return {"samples": metrics["samples"], "fit_seconds": metrics["fit_seconds"], "wall_seconds": wall,
            "path": steps["model"]["path"]}


def run_bare(folder: Path, splits: str, config: str, epochs: int, seed: int) -> dict:
    script = folder / "bare.py"
    script.write_text(BARE)
    proc = subprocess.run([sys.executable, str(script), f"{splits}/train", config, str(epochs), str(seed)],
                          cwd=folder, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode:
        sys.exit(f"bare Lightning script failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


INPROCESS = '''
"""In one process, interleaved: modelbuild's loop.fit and a plain Trainer.fit of the very same task module."""
import json, logging, statistics, sys, time
from pathlib import Path
import lightning.pytorch as pl
import torch
from modelbuild.builders.base import BuildContext
from modelbuild.builders.train import Train
from modelbuild.training import loop
from modelbuild.training.tasks import load_task

splits, params, repeat = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
logging.disable(logging.WARNING)
work = Path(sys.argv[4])
p = Train().normalise(params, file=None, step="model")
runs = {"loop": [], "plain": []}


def task(name):
    out = work / name
    out.mkdir()
    ctx = BuildContext(step="model", inputs={"data": splits}, out=out, params=p, recipe_dir=work, seed=0,
                       work=work / f"{name}.work")
    return ctx, load_task(p["task"], ctx, p)


for i in range(repeat):
    ctx, t = task(f"loop{i}")
    loop.fit(ctx, t, p)
    runs["loop"].append(ctx.facts["fit_seconds"])
    _, t = task(f"plain{i}")
    loop._set_determinism(True, p["num_threads"])
    pl.seed_everything(0, verbose=False)
    t.setup()
    loop._install_optimizer(t.module, p)
    trainer = pl.Trainer(**p["trainer"], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         deterministic=True)
    started = time.perf_counter()
    trainer.fit(t.module, t.train_dataloader(), t.val_dataloader())
    runs["plain"].append(time.perf_counter() - started)
print(json.dumps({k: [min(v), statistics.median(v)] for k, v in runs.items()}))
'''


def run_in_process(folder: Path, splits: str, epochs: int, repeat: int) -> dict:
    """The loop's own cost, without two processes' noise: loop.fit against Trainer.fit of the same module."""
    import yaml

    params = yaml.safe_load(RECIPE.replace("EPOCHS", str(epochs)))["steps"]["model"]["params"]
    script, work = folder / "inprocess.py", folder / "inprocess"
    script.write_text(INPROCESS)
    work.mkdir()
    proc = subprocess.run([sys.executable, str(script), splits, json.dumps(params), str(repeat), str(work)],
                          cwd=folder, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode:
        sys.exit(f"in-process comparison failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mb-train-bench-") as tmp:
        folder = Path(tmp)
        write_data(folder, args.rows)
        (folder / "recipe.yaml").write_text(RECIPE.replace("EPOCHS", str(args.epochs)))
        splits = modelbuild(folder, "-t", "splits")["splits"]["path"]
        rows = []
        for i in range(args.repeat):
            mb = run_modelbuild(folder, seed=100 + i)
            bare = run_bare(folder, splits, str(Path(mb["path"]) / "config.json"), args.epochs, seed=100 + i)
            rows.append((bare, mb))
            print(f"run {i + 1}: bare {bare['samples'] / bare['fit_seconds']:.0f} samples/s "
                  f"(fit {bare['fit_seconds']:.2f} s, wall {bare['wall_seconds']:.2f} s); modelbuild "
                  f"{mb['samples'] / mb['fit_seconds']:.0f} samples/s (fit {mb['fit_seconds']:.2f} s, build "
                  f"{mb['wall_seconds']:.2f} s)", flush=True)
        inproc = run_in_process(folder, splits, args.epochs, max(args.repeat, 5))
    def speed(run):
        return run["samples"] / run["fit_seconds"]

    best = max(speed(m) for _, m in rows) / max(speed(b) for b, _ in rows)
    median = statistics.median(speed(m) / speed(b) for b, m in rows)
    overhead = min(m["wall_seconds"] - m["fit_seconds"] for _, m in rows)
    bare_outside = min(b["wall_seconds"] - b["fit_seconds"] for b, _ in rows)
    print(f"\n{args.rows} rows ({int(args.rows * 0.8)} train), {args.epochs} epochs, {args.repeat} runs each")
    print(f"throughput ratio modelbuild/bare: {best:.3f} best run of each (median of paired runs {median:.3f}); "
          f"target >= 0.95: {'met' if best >= 0.95 else 'MISSED'}")
    print(f"modelbuild fixed overhead outside training: {overhead:.2f} s, best run (the bare script's own time "
          f"outside fit, imports and data: {bare_outside:.2f} s; difference {overhead - bare_outside:.2f} s)")
    (loop_min, loop_median), (plain_min, plain_median) = inproc["loop"], inproc["plain"]
    print(f"the loop's own cost, in one process (loop.fit vs Trainer.fit of the same module, {max(args.repeat, 5)} "
          f"interleaved runs): time in fit {loop_min:.2f} s vs {plain_min:.2f} s best, throughput ratio "
          f"{plain_min / loop_min:.3f} best ({plain_median / loop_median:.3f} median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
