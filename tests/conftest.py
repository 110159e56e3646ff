"""Shared fixtures: run the real CLI in a subprocess against a temporary store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Tests kill trainings a few seconds in: there, checkpoints follow checkpoint_every_n_steps alone (by default a
# single-process training also waits 30 s between two; see modelbuild/training/loop.py).
os.environ.setdefault("MODELBUILD_CHECKPOINT_SECONDS", "0")

REPO = Path(__file__).resolve().parents[1]


class Cli:
    """The `modelbuild` command, run in a subprocess with its own store, from a project folder."""

    def __init__(self, project: Path, store: Path):
        self.project, self.store = project, store

    def __call__(self, *args, check: int | None = 0, env: dict | None = None, timeout: float = 300):
        proc = subprocess.run([sys.executable, "-m", "modelbuild", "--store", str(self.store), *map(str, args)],
                              cwd=self.project, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        if check is not None and proc.returncode != check:
            raise AssertionError(f"modelbuild {' '.join(map(str, args))} exited {proc.returncode}, expected "
                                 f"{check}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def build(self, recipe="recipe.yaml", *args, check: int | None = 0, env=None) -> dict:
        proc = self("build", recipe, "--json", *args, check=check, env=env)
        result = json.loads(proc.stdout)
        result["by_step"] = {s["step"]: s for s in result["steps"]}
        result["stderr"] = proc.stderr
        return result

    def statuses(self, result: dict) -> dict:
        return {s["step"]: s["status"] for s in result["steps"]}

    def popen(self, *args, env=None, **kw):
        return subprocess.Popen([sys.executable, "-m", "modelbuild", "--store", str(self.store), *map(str, args)],
                                cwd=self.project, env={**os.environ, **(env or {})}, **kw)


class Project(type(Path())):
    """A project folder; `write(name, text)` adds a dedented file to it."""

    def write(self, name: str, text: str) -> Path:
        path = self / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return Path(path)


# Two command steps, one feeding the other: the store the bad-input and store-trust corpora start from.
TWO_STEPS = """
name: demo
steps:
  prepare:
    builder: command
    params: {cmd: 'echo pear > "$MB_OUT/fruit.txt"'}
  train:
    builder: command
    inputs: [prepare]
    params: {cmd: 'cat "$MB_IN_PREPARE/fruit.txt" > "$MB_OUT/model.txt"'}
"""


# A small tabular project: data.csv (x1, x2, colour -> label yes/no) ingested and split 80/20 by label. Recipes
# that train on it add their own steps after TABULAR_STEPS.
TABULAR_STEPS = """
name: demo
steps:
  raw:
    builder: ingest
    inputs: {data: {path: data.csv}}
  splits:
    builder: split
    inputs: {data: raw}
    params: {method: stratified, stratify: label, fractions: {train: 0.8, validation: 0.2}}
"""


def write_tabular_csv(project: Project, rows: int = 2500, seed: int = 0) -> None:
    """data.csv: the label is (mostly) x1 + x2/2 + [colour is red] > 0.5."""
    import random

    rng = random.Random(seed)
    lines = ["x1,x2,colour,label"]
    for _ in range(rows):
        x1, x2, colour = rng.gauss(0, 1), rng.gauss(0, 1), rng.choice(["red", "green", "blue"])
        label = "yes" if x1 + 0.5 * x2 + (colour == "red") + rng.gauss(0, 0.1) > 0.5 else "no"
        lines.append(f"{x1:.4f},{x2:.4f},{colour},{label}")
    project.write("data.csv", "\n".join(lines) + "\n")


@pytest.fixture
def project(tmp_path):
    root = Project(tmp_path / "project")
    root.mkdir()
    return root


@pytest.fixture
def cli(project, tmp_path):
    return Cli(project, tmp_path / "store")
