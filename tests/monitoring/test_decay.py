"""decay through the real CLI: feedback joined with a request log (modelbuild serve's segment format) by
request id; accuracy per day against the model's own evaluation; a gate that fails is exit 4 with the
result kept; a label for an unknown request is exit 3 (or counted, with `unknown_feedback: drop`)."""

from __future__ import annotations

import json
from pathlib import Path


def write_logs(project, wrong_day2: int = 40, unknown: bool = False) -> None:
    logs = project / "logs"
    logs.mkdir(exist_ok=True)
    requests, feedback = [], []
    for day, wrong in ((1, 10), (2, wrong_day2)):
        for i in range(100):
            rid = f"d{day}-{i}"
            prediction = "yes" if i % 2 else "no"
            label = prediction if i >= wrong else ("no" if prediction == "yes" else "yes")
            stamp = f"2026-12-0{day}T{i // 10:02d}:{i % 60:02d}:00.000Z"
            requests.append({"id": rid, "time": stamp, "digest": "abc", "route": "/predict", "status": 200,
                             "inputs": {"records": [{"x": i}]}, "outputs": {"predictions": [prediction]}})
            feedback.append({"request_id": rid, "label": label, "time": stamp, "digest": "abc"})
    if unknown:
        feedback.append({"request_id": "from-elsewhere", "label": "yes", "time": "2026-12-02T12:00:00Z"})
    for name, records in (("requests-20261201T000000Z-000001.jsonl", requests),
                          ("feedback-20261201T000000Z-000001.jsonl", feedback)):
        (logs / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    (project / "evaluation").mkdir(exist_ok=True)
    (project / "evaluation" / "metrics.json").write_text('{"accuracy": 0.9, "f1": 0.9}')
    project.write("recipe.yaml", """
        name: dc
        steps:
          decay:
            builder: decay
            inputs:
              requests: {log: logs, glob: "requests-*"}
              feedback: {log: logs, glob: "feedback-*"}
              evaluation: {path: evaluation}
            params: {gates: {accuracy: ">= baseline - 0.05"}, unknown_feedback: %s}
    """ % ("drop" if unknown == "drop" else "error"))


def test_accuracy_per_day_against_the_evaluation_fails_its_gate(project, cli):
    write_logs(project)
    result = cli.build(check=4)
    step = result["by_step"]["decay"]
    assert "1 of 1 decay gates failed (accuracy)" in step["error"]
    decay = json.loads((Path(step["path"]) / "decay.json").read_text())
    assert [(w["start"][:10], w["labelled"], w["accuracy"]) for w in decay["windows"]] == [
        ("2026-12-01", 100, 0.9), ("2026-12-02", 100, 0.6)]
    assert decay["overall"]["accuracy"] == 0.75 and decay["baseline"]["accuracy"] == 0.9
    assert 'modelbuild_decay_accuracy{step="decay"} 0.75' in (Path(step["path"]) / "monitor.prom").read_text()


def test_a_model_that_holds_up_passes(project, cli):
    write_logs(project, wrong_day2=8)
    result = cli.build()
    assert json.loads((Path(result["by_step"]["decay"]["path"]) / "gates.json").read_text())["passed"] is True


def test_a_label_for_an_unknown_request_is_exit_3_or_dropped(project, cli):
    write_logs(project, wrong_day2=8, unknown=True)
    proc = cli("build", "recipe.yaml", check=3)
    assert "1 feedback labels name requests the request log does not hold (from-elsewhere)" in proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    write_logs(project, wrong_day2=8, unknown="drop")
    decay = json.loads((Path(cli.build()["by_step"]["decay"]["path"]) / "decay.json").read_text())
    assert decay["unknown_feedback"] == 1 and decay["labelled"] == 200
