"""`{log: DIR}` sources through the real CLI: closed segments of a request log (as `modelbuild serve` writes
them) become a content-keyed artifact; an open segment, a touched file or a feedback segment outside the
glob change nothing; a new closed segment rebuilds what reads the log; an empty window is exit 3."""

from __future__ import annotations

import json
import os

import pytest


def segment(folder, name, records, start=0, day="2026-12-01"):
    lines = [json.dumps({"id": f"r{start + i}", "time": f"{day}T10:{i % 60:02d}:00.000Z", "digest": "abc",
                         "route": "/predict", "status": 200, "inputs": {"records": [rec]},
                         "outputs": {"predictions": ["yes"]}}) for i, rec in enumerate(records)]
    (folder / name).write_text("\n".join(lines) + "\n")


@pytest.fixture
def logs(project):
    import pandas as pd

    (project / "ref").mkdir()
    pd.DataFrame({"x": [float(i % 10) for i in range(200)], "colour": ["red", "blue"] * 100}).to_parquet(
        project / "ref" / "data.parquet")
    folder = project / "logs"
    folder.mkdir()
    rows = [{"x": float(i % 10), "colour": ["red", "blue"][i % 2]} for i in range(40)]
    segment(folder, "requests-20261201T100000Z-000001.jsonl", rows[:20])
    segment(folder, "requests-20261201T100000Z-000002.jsonl", rows[20:], start=20)
    segment(folder, "requests-20261201T100000Z-000003.jsonl.open", rows[:5], start=40)  # still being written
    (folder / "feedback-20261201T100000Z-000001.jsonl").write_text('{"request_id": "r1", "label": "no"}\n')
    project.write("recipe.yaml", """
        name: lg
        steps:
          drift:
            builder: drift
            inputs: {reference: {path: ref}, current: {log: logs, glob: "requests-*"}}
    """)
    return folder


def drift_of(result) -> dict:
    from pathlib import Path
    return json.loads((Path(result["by_step"]["drift"]["path"]) / "drift.json").read_text())


def test_closed_segments_are_imported_and_keyed_by_content(project, cli, logs):
    first = cli.build()
    assert drift_of(first)["current"]["rows"] == 40  # the open segment is not read
    shown = json.loads(cli("show", "--json", "lg:drift").stdout)
    assert shown["inputs"]["current"]["kind"] == "log" and shown["inputs"]["current"]["files"] == 2
    os.utime(logs / "requests-20261201T100000Z-000001.jsonl", (1, 1))  # touched, same content
    (logs / "requests-20261201T100000Z-000003.jsonl.open").write_text("")  # the open segment grows or shrinks
    (logs / "feedback-20261201T100000Z-000002.jsonl").write_text('{"request_id": "r2", "label": "yes"}\n')
    assert cli.statuses(cli.build()) == {"drift": "cached"}
    segment(logs, "requests-20261201T100000Z-000004.jsonl", [{"x": float(i), "colour": "red"} for i in range(10)], start=60)
    third = cli.build()
    assert cli.statuses(third) == {"drift": "built"} and drift_of(third)["current"]["rows"] == 50


def test_a_time_window_selects_records(project, cli, logs):
    text = (project / "recipe.yaml").read_text()
    project.write("window.yaml", text.replace('glob: "requests-*"', 'glob: "requests-*", until: "2026-12-01T10:10:00Z"'))
    assert drift_of(cli.build("window.yaml"))["current"]["rows"] == 20  # 10 minutes of each closed segment
    project.write("empty.yaml", text.replace('glob: "requests-*"', 'glob: "requests-*", since: "2027-01-01"'))
    proc = cli("build", "empty.yaml", check=3)
    assert "an empty log window" in proc.stderr and "key 'inputs.current'" in proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    project.write("typo.yaml", text.replace('glob: "requests-*"', 'glob: "requests-*", lst: 7d'))
    assert "did you mean 'last'" in cli("build", "typo.yaml", check=2).stderr
