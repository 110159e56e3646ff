"""`validate` through the real CLI: bad data stops the build with exit code 3 and a table of failures,
leaves nothing in the store for the step, and skips what depends on it; quarantine builds."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("pandera")
pq = pytest.importorskip("pyarrow.parquet")

CSV = """id,age,state
1,34,CA
2,-1,NY
3,51,TX
4,200,CA
5,28,ZZ
6,45,NY
"""

RECIPE = """
name: people
steps:
  raw:
    builder: ingest
    inputs: {{data: {{path: people.csv}}}}
  check:
    builder: validate
    inputs: {{table: raw}}
    params:
      schema:
        columns:
          id: {{dtype: int64, unique: true}}
          age: {{dtype: int64, checks: {{ge: 0, le: 120}}}}
          state: {{dtype: str, checks: {{isin: [CA, NY, TX]}}}}
{extra}
  report:
    builder: command
    inputs: {{table: check}}
    params: {{cmd: 'echo ok > "$MB_OUT/ok"'}}
"""


def traced_keys(store: Path) -> set[str]:
    with sqlite3.connect(store / "trace.sqlite") as db:
        return {key for (key,) in db.execute("SELECT key FROM trace")}


def test_bad_rows_stop_the_build_with_exit_code_3_and_a_table(project, cli):
    project.write("people.csv", CSV)
    project.write("recipe.yaml", RECIPE.format(extra=""))
    result = cli.build(check=3)
    assert cli.statuses(result) == {"raw": "built", "check": "failed", "report": "skipped"}
    assert result["exit_code"] == 3
    error = result["by_step"]["check"]["error"]
    assert error.startswith("step 'check': 3 rows of 6 fail the schema:")
    lines = {tuple(c.strip() for c in line.split(" | "))[:2]: line for line in error.splitlines()}
    assert ("age", "ge(0)") in lines and ("age", "le(120)") in lines and ("state", "isin(['CA', 'NY', 'TX'])") in lines
    assert "on_fail: quarantine" in error
    assert traced_keys(cli.store) == {result["by_step"]["raw"]["key"]}  # nothing for check, nor for report
    log = Path(cli.store / "logs" / f"{result['by_step']['check']['key']}.log").read_text()
    assert "row 1: age: ge(0): -1" in log and "row 4: state: isin(['CA', 'NY', 'TX']): 'ZZ'" in log

    proc = cli("build", "recipe.yaml", check=3)  # without --json: the table is on stderr, no traceback
    assert "error: step 'check': 3 rows of 6 fail the schema:" in proc.stderr
    assert "| isin(['CA', 'NY', 'TX']) |" in proc.stderr and "Traceback" not in proc.stderr


def test_quarantine_builds_and_sets_the_bad_rows_aside(project, cli):
    project.write("people.csv", CSV)
    project.write("recipe.yaml", RECIPE.format(extra="      on_fail: quarantine\n      max_bad_fraction: 0.5"))
    result = cli.build()
    assert cli.statuses(result) == {"raw": "built", "check": "built", "report": "built"}
    out = Path(result["by_step"]["check"]["path"])
    assert pq.read_table(out / "data.parquet").column("id").to_pylist() == [1, 3, 6]
    aside = pq.read_table(out / "quarantine" / "data.parquet").to_pylist()
    assert [(r["id"], r["failure"], r["row"]) for r in aside] == [
        (2, "age: ge(0)", 1), (4, "age: le(120)", 3), (5, "state: isin(['CA', 'NY', 'TX'])", 4)]
    report = json.loads((out / "validation.json").read_text())
    assert (report["rows"], report["passed_rows"], report["failed_rows"]) == (6, 3, 3)
    meta = json.loads((out / ".meta.json").read_text())
    assert meta["metrics"] == {"rows": 6, "failed_rows": 3}
    assert cli.statuses(cli.build()) == {"raw": "cached", "check": "cached", "report": "cached"}
