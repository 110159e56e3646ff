"""GPU check: train recipes/tinylm.yaml's GPT-2 step on one CUDA device in bf16 and print its throughput.

On a machine without CUDA it prints why and exits 0 (CI never has a GPU). With CUDA it:
  1. builds the tinylm recipe's upstream steps (plays, speeches, split, tokenizer) on CPU, untimed;
  2. builds `model` with `accelerator: gpu, devices: 1, precision: bf16-mixed` and a batch of 64;
  3. prints tokens/s, samples/s, time in fit, peak GPU memory and the final losses (from the lineage);
  4. runs `build --check --target model`, which on GPU compares metrics within the step's `tolerance`
     instead of bytes, and prints what it reported.

Run:
    .venv/bin/python benchmarks/gpu_check.py                 # 300 steps, as in the recipe
    .venv/bin/python benchmarks/gpu_check.py --steps 100 --batch-size 32
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


def modelbuild(folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "modelbuild", "--store", str(folder / "store"), *args]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    if check and proc.returncode:
        sys.exit(f"`modelbuild {' '.join(args)}` failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="bf16-mixed")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: skipped, no CUDA device (torch.cuda.is_available() is False)")
        return 0
    print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")

    with tempfile.TemporaryDirectory(prefix="mb-gpu-") as tmp:
        folder = Path(tmp)
        shutil.copytree(REPO / "recipes", folder / "recipes")
        started = time.perf_counter()
        modelbuild(folder, "build", "recipes/tinylm.yaml", "--target", "tokenizer")
        print(f"upstream steps (CPU): {time.perf_counter() - started:.1f} s")

        overrides = [f"steps.model.params.trainer.max_steps={args.steps}",
                     "steps.model.params.trainer.accelerator=gpu", "steps.model.params.trainer.devices=1",
                     f"steps.model.params.trainer.precision={args.precision}",
                     f"steps.model.params.batch_size={args.batch_size}"]
        started = time.perf_counter()
        result = json.loads(modelbuild(folder, "build", "recipes/tinylm.yaml", "--target", "model", "--json",
                                       *overrides).stdout)
        wall = time.perf_counter() - started
        step = next(s for s in result["steps"] if s["step"] == "model")
        meta = json.loads((Path(step["path"]) / ".meta.json").read_text())["metrics"]
        print(f"model ({args.precision}, batch {args.batch_size}, {args.steps} steps): build {wall:.1f} s, "
              f"fit {meta.get('fit_seconds')} s")
        for name in ("tokens_per_second", "samples_per_second", "gpu_peak_memory_mb", "device", "precision",
                     "train_loss", "val_loss", "val_perplexity", "reproducibility", "tolerance"):
            if name in meta:
                print(f"  {name}: {meta[name]}")

        check = modelbuild(folder, "build", "recipes/tinylm.yaml", "--target", "model", "--check", *overrides,
                           check=False)
        print(f"build --check: exit {check.returncode}")
        print("  " + (check.stdout + check.stderr).strip().replace("\n", "\n  "))
        return 0 if check.returncode in (0, 6) else check.returncode


if __name__ == "__main__":
    sys.exit(main())
