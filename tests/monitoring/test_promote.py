"""Promotion and tag history through the real CLI: `promote` moves a tag only past an evaluation's gates
(exit 4 otherwise, the tag unmoved), every move is kept (`tag --history`), `show TAG~1` / `TAG@TIME` name
what the tag named then, and gc keeps every artifact a tag ever named unless told to forget."""

from __future__ import annotations

import json
import math
import time

import pytest
from conftest import Cli, Project

pytest.importorskip("lightning")

RECIPE = """
name: pr
steps:
  raw: {builder: ingest, inputs: {data: {path: data.csv}}}
  splits:
    builder: split
    inputs: {data: raw}
    params: {method: stratified, stratify: label, fractions: {train: 0.7, test: 0.3}}
  model:
    builder: train
    inputs: {data: splits}
    params:
      task: tabular-classification
      data: {target: label}
      model: {hidden: [8]}
      batch_size: 32
      seed: %(seed)s
      optimizer: {lr: 0.01}
      trainer: {max_epochs: 4, enable_model_summary: false}
  evaluate:
    builder: evaluate
    inputs: {model: model, data: splits}
    params: {bootstrap: 0, gates: {accuracy: "%(gate)s"}}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from conftest import write_tabular_csv

    root = tmp_path_factory.mktemp("promote")
    project = Project(root / "project")
    project.mkdir()
    write_tabular_csv(project, rows=600)
    project.write("good.yaml", RECIPE % {"seed": 0, "gate": ">= 0.6"})
    project.write("strict.yaml", RECIPE % {"seed": 1, "gate": ">= 0.999"})  # the model 'strict' cannot pass
    cli = Cli(project, root / "store")
    models = {}
    for name, code in (("strict", 4), ("good", 0)):  # pr:model roots the good one: strict only tags keep
        result = cli.build(f"{name}.yaml", check=code)
        models[name] = "objects/" + result["by_step"]["model"]["path"].rsplit("/objects/", 1)[1]
    return cli, models


def history(cli: Cli, tag: str) -> list[dict]:
    return json.loads(cli("tag", "--history", tag, "--json").stdout)


def test_promote_refuses_a_model_whose_gates_failed_and_leaves_the_tag(store):
    cli, models = store
    cli("promote", "production", models["good"])
    proc = cli("promote", "production", models["strict"], check=4)
    assert proc.stderr.startswith("error: cannot promote") and "pr:evaluate" in proc.stderr
    assert "failed accuracy" in proc.stderr and "Traceback" not in proc.stderr
    assert cli("path", "production").stdout.strip().endswith(models["good"])


def test_promote_refuses_a_model_no_evaluation_gated(store, tmp_path):
    cli, models = store
    splits = json.loads(cli("show", "--json", "pr:splits").stdout)["path"]
    proc = cli("promote", "staging", splits, check=4)
    assert "no evaluation with gates has judged it" in proc.stderr
    assert cli("roots").stdout.count("tag:staging") == 0


def test_every_move_is_kept_and_the_past_is_named(store):
    cli, models = store
    cli("promote", "prod2", models["good"], "--reason", "first model")
    first_moved = time.time()
    time.sleep(1.1)
    cli("tag", "prod2", models["strict"], "--reason", "try it", env={"MODELBUILD_USER": "oncall"})
    cli("promote", "prod2", models["good"])
    moves = history(cli, "prod2")
    assert [(m["action"], m["old"], m["new"]) for m in moves] == [
        ("promote", None, models["good"]), ("tag", models["good"], models["strict"]),
        ("promote", models["strict"], models["good"])]
    assert moves[0]["reason"] == "first model" and moves[2]["reason"] == "passed pr:evaluate"
    assert moves[1]["user"] == "oncall" and moves[1]["reason"] == "try it"
    text = cli("tag", "--history", "prod2").stdout.splitlines()
    assert text[0].startswith("prod2~0") and "try it" in text[1] and text[2].startswith("prod2~2")
    assert cli("path", "prod2~1").stdout.strip().endswith(models["strict"])
    assert cli("path", "prod2~2").stdout.strip().endswith(models["good"])
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(math.ceil(first_moved)))
    shown = json.loads(cli("show", "--json", f"prod2@{when}").stdout)
    assert shown["path"] == models["good"] and shown["step"] == "model"
    proc = cli("show", "prod2@2000-01-01", check=2)
    assert "did not exist yet then" in proc.stderr
    proc = cli("show", "prod2~7", check=2)
    assert "has moved only 3 times" in proc.stderr
    assert "is not a time" in cli("show", "prod2@yesterday-ish", check=2).stderr


def test_gc_keeps_what_a_tag_named_until_told_to_forget(store):
    cli, models = store
    cli("tag", "prod3", models["strict"])
    cli("promote", "prod3", models["good"])
    cli("tag", "--delete", "prod2")
    cli("gc")
    assert (cli.store / models["strict"]).is_dir()  # prod3~1 and prod2's past
    assert cli("path", "prod3~1").stdout.strip().endswith(models["strict"])
    out = cli("gc", "--forget-tag-history").stdout
    assert models["strict"] in out and not (cli.store / models["strict"]).exists()
    assert (cli.store / models["good"]).is_dir()  # what prod3 names now
    assert [m["new"] for m in history(cli, "prod3")] == [models["good"]]
    assert "has moved only 1 times" in cli("path", "prod3~1", check=2).stderr


def test_promote_and_tag_history_import_no_ml_library(store):
    """They are lineage verbs: a scheduled job calls them after every build, and they read records only."""
    import subprocess
    import sys

    cli, models = store
    heavy = {"torch", "lightning", "transformers", "pandas", "pyarrow", "dvc", "litserve", "scipy"}
    for argv in (["promote", "prod4", models["good"]], ["tag", "--history", "prod4"], ["show", "prod4~0"]):
        probe = ("import contextlib, io, json, sys\nfrom modelbuild.cli import main\n"
                 "with contextlib.redirect_stdout(io.StringIO()):\n"
                 f"    code = main({['--store', str(cli.store), *argv]!r})\n"
                 f"print(json.dumps([code, sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})]))")
        proc = subprocess.run([sys.executable, "-c", probe], cwd=cli.project, capture_output=True, text=True)
        assert json.loads(proc.stdout.strip().splitlines()[-1]) == [0, []], (argv, proc.stderr)
