"""The lineage verbs stay light: show, diff, why-depends, graph, log, path, gc, verify, report and runs import no
ML library.

Each verb runs `modelbuild.cli.main([...])` in a fresh interpreter against a small built store, then prints
which heavy modules got imported. The python step's module imports pandas at its top, so a verb that
loaded a step's user code to describe it would be caught too.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = {"torch", "lightning", "pytorch_lightning", "transformers", "pandas", "pyarrow", "dvc", "litserve"}

RECIPE = """
name: light
steps:
  raw:
    builder: command
    inputs: {data: {path: data.txt}}
    params: {cmd: 'sort "$MB_IN_DATA" > "$MB_OUT/sorted.txt"'}
  upper:
    builder: python
    inputs: {text: raw}
    params: {function: "steps:upper"}
"""

STEPS = """
try:
    import pandas  # noqa: F401 - a heavy import at module level: the lineage verbs must never run it
except ImportError:
    pass


def upper(ctx):
    (ctx.out / "upper.txt").write_text((ctx.inputs["text"] / "sorted.txt").read_text().upper())
"""

VERBS = {
    "show": ["show", "light:upper"],
    "show-json": ["show", "--json", "light:upper"],
    "diff": ["diff", "light:raw", "light:upper"],
    "why-depends": ["why-depends", "light:upper", "light:raw"],
    "graph-artifact": ["graph", "light:upper"],
    "graph-recipe": ["graph", "recipe.yaml", "--format", "mermaid"],
    "log": ["log", "light:upper"],
    "path": ["path", "light:raw", "light:upper"],
    "gc-dry-run": ["gc", "--dry-run"],
    "gc": ["gc"],
    "verify": ["verify"],
    "report-artifact": ["report", "light:upper"],
    "report-recipe": ["report", "recipe.yaml"],
    "runs": ["runs", "recipe.yaml", "--sort", "seconds"],
}

PROBE = """
import contextlib, io, json, sys
from modelbuild.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main({argv!r})
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    project = tmp_path_factory.mktemp("light")
    (project / "recipe.yaml").write_text(RECIPE)
    (project / "steps.py").write_text(STEPS)
    (project / "data.txt").write_text("pear\napple\n")
    store = project / "store"
    subprocess.run([sys.executable, "-m", "modelbuild", "--store", str(store), "build", "recipe.yaml"],
                   cwd=project, check=True, capture_output=True, text=True)
    return project, store


@pytest.mark.parametrize("argv", list(VERBS.values()), ids=list(VERBS))
def test_lineage_verb_imports_no_ml_library(argv, built):
    project, store = built
    probe = PROBE.format(argv=["--store", str(store), *argv], heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=project, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, proc.stderr
    assert result["heavy"] == []
