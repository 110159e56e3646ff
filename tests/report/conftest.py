"""One small recipe built once for the report tests: ingest, validate (quarantine), split, a tuned tabular
model, its evaluation with a gate, a profile, drift between two splits, and a report step that writes the page
and the model card."""

from __future__ import annotations

import random

import pytest

from tests.conftest import Cli, Project

RECIPE = """
name: rep
steps:
  raw:
    builder: ingest
    description: the rows as written
    inputs: {data: {path: data.csv}}
  checked:
    builder: validate
    inputs: {table: raw}
    params:
      schema: {columns: {x1: {dtype: float64, checks: {le: 2.5}}}}
      on_fail: quarantine
      max_bad_fraction: 0.1
  splits:
    builder: split
    inputs: {data: checked}
    params: {method: stratified, stratify: label, fractions: {train: 0.6, validation: 0.2, test: 0.2}, seed: 0}
  model:
    builder: train
    inputs: {data: splits}
    params:
      task: tabular-classification
      data: {target: label, drop: [sex]}
      model: {hidden: [8]}
      batch_size: 64
      optimizer: {lr: 0.01}
      trainer: {max_epochs: 2, enable_model_summary: false}
  tuned:
    builder: tune
    params:
      target: model
      space: {optimizer.lr: {choice: [0.01, 0.03]}}
      objective: {metric: val_loss, mode: min}
      optimizer: grid
  evaluate:
    builder: evaluate
    inputs: {model: tuned, data: splits}
    params:
      protected: [sex]
      bootstrap: 100
      gates: {accuracy: ">= 0.6"}
  profile:
    builder: profile
    inputs: {data: splits}
    params: {table: train}
  drift:
    builder: drift
    description: the test split against the train split, reported only
    inputs: {reference: splits, current: splits}
    params: {ignore: [label], alert: false}
  audit:
    builder: report
    inputs: {evaluate: evaluate}
    params: {model_card: true}
"""

STEPS = ["raw", "checked", "splits", "model", "tuned", "evaluate", "profile", "drift", "audit"]


def write_project(project: Project) -> None:
    rng = random.Random(0)
    lines = ["x1,x2,colour,sex,label"]
    for _ in range(600):
        x1, x2, colour, sex = rng.gauss(0, 1), rng.gauss(0, 1), rng.choice(["red", "green"]), rng.choice("FM")
        signal = x1 + 0.5 * x2 + (colour == "red") + (0.3 if sex == "M" else 0.0) + rng.gauss(0, 0.3)
        lines.append(f"{x1:.4f},{x2:.4f},{colour},{sex},{'yes' if signal > 0.5 else 'no'}")
    project.write("data.csv", "\n".join(lines) + "\n")
    project.write("recipe.yaml", RECIPE)


@pytest.fixture(scope="package")  # one build for the page, card, builder and browser tests
def built(tmp_path_factory):
    pytest.importorskip("lightning")
    pytest.importorskip("fairlearn")
    root = tmp_path_factory.mktemp("report")
    project = Project(root / "project")
    project.mkdir()
    write_project(project)
    cli = Cli(project, root / "store")
    result = cli.build("recipe.yaml")
    return cli, result
