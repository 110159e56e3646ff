"""Tuning a real `train` step through the CLI: a tiny tabular model, one epoch per trial. A trial with the
recipe's own params is the recipe's own model (a cache hit), the best trial reaches a downstream step, and
the tune artifact is reproducible."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import TABULAR_STEPS, write_tabular_csv

pytest.importorskip("lightning")
pytest.importorskip("nevergrad")

RECIPE = TABULAR_STEPS + """
  model:
    builder: train
    inputs: {data: splits}
    params:
      task: tabular-classification
      data: {target: label}
      model: {hidden: [8]}
      batch_size: 64
      optimizer: {lr: 0.003}
      trainer: {max_epochs: 1, enable_model_summary: false}
  tuned:
    builder: tune
    params:
      target: model
      space:
        optimizer: {lr: {log: [0.003, 0.03], points: 2}}
      objective: {metric: val_accuracy, mode: max}
      optimizer: grid
  files:
    builder: python
    inputs: {model: tuned}
    params: {function: "steps:files"}
"""

STEPS = """
import os


def files(ctx):
    (ctx.out / "files.txt").write_text("\\n".join(sorted(os.listdir(ctx.inputs["model"]))) + "\\n")
"""


def lrs_under(root: Path) -> list[float]:
    """The optimizer.lr hparam of each TensorBoard run under a log root (real wall times: live events)."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import plugin_data_pb2

    runs = EventMultiplexer().AddRunsFromDirectory(str(root))
    runs.Reload()
    out = []
    for run in runs.Runs():
        content = runs.PluginRunToTagToContent("hparams")[run]["_hparams_/session_start_info"]
        out.append(plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams["optimizer.lr"]
                   .number_value)
        assert min(e.wall_time for e in runs.Scalars(run, "val_accuracy")) > 1e9
    return out


def test_tune_a_train_step(project, cli):
    write_tabular_csv(project, rows=400)
    project.write("recipe.yaml", RECIPE)
    project.write("steps.py", STEPS)
    own = cli.build("recipe.yaml", "-t", "model")["by_step"]["model"]["path"]
    plan = cli("plan", "recipe.yaml").stdout
    assert "tune: 2 trials of model (grid), maximise val_accuracy: 1 in the store, 1 to build" in plan
    result = cli.build()
    assert cli.statuses(result)["tuned"] == "built" and cli.statuses(result)["files"] == "built"
    tuned = Path(result["by_step"]["tuned"]["path"])
    shown = json.loads(cli("show", "demo:tuned", "--json").stdout)["metrics"]
    assert (shown["trials_built"], shown["trials_cached"]) == (1, 1)  # lr 0.003 is the recipe's own model
    trials = json.loads((tuned / "trials.json").read_text())["trials"]
    assert [t["params"] for t in trials] == [{"optimizer.lr": 0.003}, {"optimizer.lr": 0.03}]
    assert trials[0]["path"] == str(Path(own).relative_to(cli.store))
    best = json.loads((tuned / "best.json").read_text())
    assert best["objective"] == max(t["objective"] for t in trials)
    files = (Path(result["by_step"]["files"]["path"]) / "files.txt").read_text().split()
    assert "model.safetensors" in files and "metrics.json" in files
    assert {"trials.csv", "trials.json", "best.json", "objective.png", "metrics.json"} <= {
        p.name for p in tuned.iterdir()}
    again = cli.build()
    assert set(cli.statuses(again).values()) == {"cached"}
    assert sorted(lrs_under(cli.store / "logs/tensorboard/demo/model")) == [0.003, 0.03]  # one log root
    check = cli.build("recipe.yaml", "-t", "tuned", "--check")
    assert check["by_step"]["tuned"]["reproducible"] is True
    # a flipped byte in the best trial's model: the trial is rebuilt before anything reads it again
    model = cli.store / best["path"] / "model.safetensors"
    os.chmod(model, 0o644)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    rebuilt = cli.build()
    assert cli.statuses(rebuilt)["tuned"] == "built"
    now = json.loads((Path(rebuilt["by_step"]["tuned"]["path"]) / "best.json").read_text())
    assert json.loads(cli("show", str(cli.store / now["path"]), "--json").stdout)["damaged"] == []
    assert cli("verify").returncode == 0
