"""The retraining loop end to end through the real CLI: a model promoted to `production` is served; traffic from
shifted data and its feedback land in the server's logs; the monitor recipe's drift alerts (exit 4) on the
logged requests, decay measures the feedback, the candidate retrained on old + new data builds (nothing of the
reference side is rebuilt) and passes its gate against `production`; `promote` moves the tag, the history shows
both, and a restarted server reports the new digest."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
from conftest import REPO, Cli, Project, write_tabular_csv

sys.path.insert(0, str(REPO / "tests" / "serving"))

pytest.importorskip("litserve")
pytest.importorskip("lightning")

TRAIN = """
      task: tabular-classification
      data: {target: label}
      model: {hidden: [16]}
      batch_size: 32
      optimizer: {lr: 0.01}
      trainer: {max_epochs: 4, enable_model_summary: false}
"""
RECIPE = f"""
name: loop
steps:
  raw: {{builder: ingest, inputs: {{data: {{path: data.csv}}}}}}
  splits:
    builder: split
    inputs: {{data: raw}}
    params: {{method: stratified, stratify: label, fractions: {{train: 0.7, test: 0.3}}}}
  model:
    builder: train
    inputs: {{data: splits}}
    params: {TRAIN}
  evaluation:
    builder: evaluate
    inputs: {{model: model, data: splits}}
    params: {{bootstrap: 0, gates: {{accuracy: ">= 0.6"}}}}
  drift:
    builder: drift
    inputs: {{reference: splits, current: {{log: logs, glob: "requests-*"}}}}
    params: {{columns: [x1, x2, colour]}}
  decay:
    builder: decay
    inputs: {{requests: {{log: logs, glob: "requests-*"}}, feedback: {{log: logs, glob: "feedback-*"}}, evaluation: evaluation}}
    params: {{window: 1d, min_labels: 10}}
  new_raw: {{builder: ingest, inputs: {{data: {{path: new.csv}}}}}}
  combined:
    builder: python
    inputs: {{reference: raw, new: new_raw}}
    params: {{function: "loop_steps:combine", packages: [pandas]}}
  candidate_splits:
    builder: split
    inputs: {{data: combined}}
    params: {{method: stratified, stratify: label, fractions: {{train: 0.7, test: 0.3}}}}
  candidate:
    builder: train
    inputs: {{data: candidate_splits}}
    params: {TRAIN}
  candidate_evaluation:
    builder: evaluate
    inputs: {{model: candidate, data: candidate_splits, baseline: {{tag: production}}}}
    params: {{bootstrap: 0, gates: {{accuracy: ">= baseline - 0.01"}}}}
"""
STEPS = '''
from modelbuild.table import read_table, write_table


def combine(ctx):
    import pandas as pd

    frames = [read_table(ctx.inputs[n]).to_pandas() for n in ("reference", "new")]
    write_table(pd.concat(frames, ignore_index=True), ctx.out)
'''


def shifted_rows(n: int, seed: int = 1) -> list[dict]:
    """The same labelling rule as data.csv, with x1 moved up by 1.5: the inputs changed, the rule did not."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        x1, x2, colour = rng.gauss(1.5, 1), rng.gauss(0, 1), rng.choice(["red", "green", "blue"])
        label = "yes" if x1 + 0.5 * x2 + (colour == "red") + rng.gauss(0, 0.1) > 0.5 else "no"
        rows.append({"x1": round(x1, 4), "x2": round(x2, 4), "colour": colour, "label": label})
    return rows


@pytest.mark.slow(minutes=2)  # two trainings, two servers (~2 min on two busy cores)
def test_the_loop_detects_retrains_gates_promotes_and_serves_the_new_model(tmp_path):
    import httpx
    from served import Served

    project = Project(tmp_path / "project")
    project.mkdir()
    write_tabular_csv(project, 600)
    new = shifted_rows(400)
    project.write("new.csv", "x1,x2,colour,label\n" + "".join(f"{r['x1']},{r['x2']},{r['colour']},{r['label']}\n"
                                                           for r in new))
    project.write("recipe.yaml", RECIPE)
    project.write("loop_steps.py", STEPS)
    (project / "logs").mkdir()
    cli = Cli(project, tmp_path / "store")
    first = cli.build("recipe.yaml", "-t", "evaluation")
    model = Path(first["by_step"]["model"]["path"])
    cli("promote", "production", "loop:model", "--reason", "first model")

    with Served(cli, "production", "--log-dir", project / "logs") as server:
        for i, row in enumerate(new[:200]):
            record = {k: row[k] for k in ("x1", "x2", "colour")}
            r = httpx.post(server.url + "/predict", json={"records": [record]}, headers={"X-Request-Id": f"q{i}"},
                           timeout=30)
            assert r.status_code == 200, r.text
            feedback = {"request_id": f"q{i}", "label": row["label"]}
            assert httpx.post(server.url + "/feedback", json=feedback, timeout=30).json() == {"ok": True}
    assert not list((project / "logs").glob("*.open"))  # stopping closed the segments

    result = cli.build("recipe.yaml", "-k", check=4)
    status = cli.statuses(result)
    assert {s: status[s] for s in ("raw", "splits", "model", "evaluation")} == dict.fromkeys(
        ("raw", "splits", "model", "evaluation"), "cached")
    assert status["drift"] == "failed" and "x1" in result["by_step"]["drift"]["error"]
    decay = json.loads((Path(result["by_step"]["decay"]["path"]) / "decay.json").read_text())
    assert decay["labelled"] == 200 and decay["unknown_feedback"] == 0
    assert status["candidate"] == "built" and status["candidate_evaluation"] == "built"

    candidate = Path(result["by_step"]["candidate"]["path"])
    cli("promote", "production", "loop:candidate")
    moves = json.loads(cli("tag", "--history", "production", "--json").stdout)
    assert [m["new"] for m in moves] == [f"objects/{model.name}", f"objects/{candidate.name}"]
    assert cli("path", "production~1").stdout.strip() == str(model)

    with Served(cli, "production", "--log-dir", project / "logs2") as server:
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        assert f'digest="{candidate.name.split("-")[0]}"' in metrics
