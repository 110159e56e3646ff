"""Shared fixtures: run the real CLI in a subprocess against a temporary store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# Tests kill trainings a few seconds in: there, checkpoints follow checkpoint_every_n_steps alone (by default a
# single-process training also waits 30 s between two; see modelbuild/training/loop.py).
os.environ.setdefault("MODELBUILD_CHECKPOINT_SECONDS", "0")

REPO = Path(__file__).resolve().parents[1]

# ---- slow tests and the CI time budget -----------------------------------------------------------------------
# Slow tests run after the others: modules holding only slow tests go last, and a mixed module runs its slow tests
# after its quick ones (under `--dist loadscope` a module stays on one worker, so its fixtures are built once).
# MODELBUILD_TEST_DEADLINE (a Unix time; .ci/run sets it from its own start) skips a slow test whose estimate,
# `@pytest.mark.slow(minutes=N)` (2 unless given), would run past it: CI keeps to its time and runs every slow
# test that fits, and the summary names the ones it left for `pytest -m slow`.
SLOW_MINUTES_DEFAULT = 2


def _is_slow(item) -> bool:
    return item.get_closest_marker("slow") is not None


def _slow_minutes(item) -> float:
    marker = item.get_closest_marker("slow")
    return 0 if marker is None else marker.kwargs.get("minutes", SLOW_MINUTES_DEFAULT)


def pytest_collection_modifyitems(config, items):
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    # quick modules first, then slow-only modules from the shortest estimate, so that a deadline leaves out few
    ordered = sorted(modules.values(), key=lambda group: (all(map(_is_slow, group)),
                                                         sum(map(_slow_minutes, group))))
    items[:] = [item for group in ordered for item in sorted(group, key=_is_slow)]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    deadline = os.environ.get("MODELBUILD_TEST_DEADLINE")
    minutes = _slow_minutes(item)
    if not deadline or not minutes:
        return
    left = float(deadline) - time.time()
    if minutes * 60 > left:
        pytest.skip(f"CI time budget: about {minutes} min needed, {max(left, 0) / 60:.1f} min left before "
                    f"MODELBUILD_TEST_DEADLINE; run it with `pytest -m slow`")


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
