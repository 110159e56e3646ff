"""evaluate through the real CLI: a tiny tabular model scored on its test split with protected columns.
Passing gates and a byte-identical `build --check`; a gate that cannot pass (exit 4, the gate table, the
evaluation kept, nothing downstream, the same failure from the cache); a baseline named by a tag; bad input
as one clear paragraph with the right exit code."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from conftest import Cli, Project

pytest.importorskip("lightning")
pytest.importorskip("fairlearn")

RECIPE = """
name: ev
steps:
  raw: {builder: ingest, inputs: {data: {path: data.csv}}}
  splits:
    builder: split
    inputs: {data: raw}
    params: {method: stratified, stratify: label, fractions: {train: 0.6, validation: 0.2, test: 0.2}}
  model:
    builder: train
    inputs: {data: splits}
    params:
      task: tabular-classification
      data: {target: label, drop: [sex, grp]}
      model: {hidden: [16]}
      batch_size: 32
      optimizer: {lr: 0.01}
      trainer: {max_epochs: 4, enable_model_summary: false}
  evaluate:
    builder: evaluate
    inputs: {model: model, data: splits%(baseline)s}
    params:
      protected: [sex, grp]
      bootstrap: 200
      gates: %(gates)s
  downstream:
    builder: command
    inputs: {report: evaluate}
    params: {cmd: 'cp "$MB_IN_REPORT/metrics.json" "$MB_OUT/"'}
"""


def recipe(gates: str = '{accuracy: ">= 0.6", demographic_parity_difference: "<= 0.9"}', baseline: str = "") -> str:
    return RECIPE % {"gates": gates, "baseline": f", baseline: {baseline}" if baseline else ""}


def write_project(project: Project) -> None:
    rng = random.Random(0)
    lines = ["x1,x2,colour,sex,grp,label"]
    for _ in range(800):
        x1, x2, colour = rng.gauss(0, 1), rng.gauss(0, 1), rng.choice(["red", "green", "blue"])
        sex, grp = rng.choice(["F", "M"]), rng.choice(["a", "b", "c"])
        signal = x1 + 0.5 * x2 + (colour == "red") + (0.4 if sex == "M" else 0.0) + rng.gauss(0, 0.3)
        lines.append(f"{x1:.4f},{x2:.4f},{colour},{sex},{grp},{'yes' if signal > 0.5 else 'no'}")
    project.write("data.csv", "\n".join(lines) + "\n")
    project.write("recipe.yaml", recipe())


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    project = Project(root / "project")
    project.mkdir()
    write_project(project)
    cli = Cli(project, root / "store")
    return cli, cli.build()


def objects(cli: Cli) -> set[str]:
    return {p.name for p in (cli.store / "objects").iterdir() if p.name != ".links"}


def test_evaluation_passes(first):
    cli, result = first
    assert set(cli.statuses(result).values()) == {"built"}
    artifact = Path(result["by_step"]["evaluate"]["path"])
    files = {str(p.relative_to(artifact)) for p in artifact.rglob("*") if p.is_file()}
    assert {"metrics.json", "evaluation.json", "gates.json", "summary.md", "confusion_matrix.png",
            "calibration.png", "groups/sex.csv", "groups/grp.csv"} <= files
    metrics = json.loads((artifact / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.75 and metrics["rows"] == 160
    assert metrics["accuracy_ci_low"] < metrics["accuracy"] < metrics["accuracy_ci_high"]
    for name in ("demographic_parity_difference", "sex.demographic_parity_difference", "grp.fpr_gap", "ece"):
        assert isinstance(metrics[name], float), name
    assert json.loads((artifact / "gates.json").read_text())["passed"] is True


@pytest.mark.slow  # --check rebuilds the whole closure, training included (~30 s on 2 busy cores)
def test_rebuild_is_byte_identical(first):
    cli, _ = first
    check = cli.build("recipe.yaml", "--check")
    assert check["by_step"]["evaluate"]["reproducible"] and check["by_step"]["evaluate"]["check"] == "bytes"


def test_a_gate_that_cannot_pass_fails_with_exit_4_and_keeps_the_evaluation(first):
    cli, _ = first
    cli.project.write("strict.yaml", recipe('{accuracy: ">= 0.99", sex.demographic_parity_difference: "<= 0.9"}'))
    failed = cli.build("strict.yaml", check=4)
    ev = failed["by_step"]["evaluate"]
    assert ev["status"] == "failed" and failed["by_step"]["downstream"]["status"] == "skipped"
    assert "1 of 2 evaluation gates failed (accuracy)" in ev["error"]
    assert "Traceback" not in failed["stderr"]
    kept = Path(ev["path"])
    assert kept.is_dir() and json.loads((kept / "gates.json").read_text())["passed"] is False
    shown = json.loads(cli("show", "ev:evaluate", "--json").stdout)
    assert shown["path"] == f"objects/{kept.name}" and shown["failure"]["type"] == "GateFailed"
    assert "\nfailed     GateFailed: " in cli("show", "ev:evaluate").stdout
    before = objects(cli)
    proc = cli("build", "strict.yaml", check=4)  # from the cache: the recorded failure, not a rebuild
    assert re.search(r"accuracy +0\.\d+ +>= 0\.99 +0\.99 +FAIL", proc.stderr), proc.stderr
    assert re.search(r"sex\.demographic_parity_difference +[\d.]+ +<= 0\.9 +0\.9 +pass", proc.stderr)
    assert f"objects/{kept.name}" in proc.stderr
    again = cli.build("strict.yaml", check=4)
    assert again["by_step"]["evaluate"]["seconds"] == 0 and again["by_step"]["downstream"]["status"] == "skipped"
    assert objects(cli) == before  # nothing downstream was built, and the evaluation was not rebuilt
    plan = json.loads(cli("plan", "strict.yaml", "--json").stdout)
    actions = {s["step"]: (s["action"], s["reasons"]) for s in plan["steps"]}
    assert actions["evaluate"][0] == "cached" and "its recorded result is a failure" in actions["evaluate"][1][0]
    assert actions["downstream"] == ("skip", ["input report fails, so this step is not built"])


def test_a_baseline_named_by_a_tag(first):
    cli, result = first
    cli("tag", "prod-model", "ev:model")
    cli.project.write("vs_model.yaml", recipe('{accuracy: ">= baseline - 0.01"}', "{tag: prod-model}"))
    passed = cli.build("vs_model.yaml")
    ev = Path(passed["by_step"]["evaluate"]["path"])
    assert json.loads((ev / "baseline" / "metrics.json").read_text())["accuracy"] == \
        json.loads((ev / "metrics.json").read_text())["accuracy"]  # the same model, scored on the same data
    info = json.loads(cli("show", "ev:evaluate", "--json").stdout)
    assert info["inputs"]["baseline"]["tag"] == "prod-model"
    # a baseline evaluation (its metrics.json is used as it is), and a gate it cannot pass
    cli("tag", "prod-eval", result["by_step"]["evaluate"]["path"])
    cli.project.write("vs_eval.yaml", recipe('{accuracy: "> baseline"}', "{tag: prod-eval}"))
    failed = cli.build("vs_eval.yaml", check=4)
    assert "> baseline" in failed["by_step"]["evaluate"]["error"]
    # moving the tag changes the key: the plan says so
    cli("tag", "prod-eval", "ev:splits")
    assert "source baseline changed" in cli("plan", "vs_eval.yaml").stdout


def test_a_missing_tag_is_a_recipe_error(first):
    cli, _ = first
    cli.project.write("no_tag.yaml", recipe('{accuracy: ">= baseline"}', "{tag: prod-modle}"))
    proc = cli("build", "no_tag.yaml", check=2)
    assert "step 'evaluate', key 'inputs.baseline.tag': there is no tag 'prod-modle'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("gates", "protected", "says"), [
    ('{accuracy: "=> 0.8"}', "[sex]", "unknown operator '=>'"),
    ('{acuracy: ">= 0.8"}', "[sex]", "evaluate writes no metric 'acuracy' (did you mean 'accuracy'?)"),
    ('{accuracy: ">= baseline"}', "[sex]", "has no `baseline` input"),
    ('{accuracy: ">= 0.5"}', "[sex, gender]", "the protected column 'gender' is not a column of the evaluation data"),
])
def test_bad_input_is_one_clear_paragraph_with_exit_2(first, gates, protected, says):
    cli, _ = first
    cli.project.write("bad.yaml", recipe(gates).replace("protected: [sex, grp]", f"protected: {protected}"))
    proc = cli("build", "bad.yaml", "-t", "evaluate", check=2)
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error and says in error[0] and "step 'evaluate'" in error[0], proc.stderr
    assert "Traceback" not in proc.stderr


# ---- the engine: committed failures and store-artifact inputs, with any builder ---------------------------
KEEPER = '''
from modelbuild.builders import Builder, Param
from modelbuild.errors import DataValidationError


class Keep(Builder):
    name = "keep"
    params = {"fail": Param("bool", default=True)}

    def build(self, ctx):
        (ctx.out / "report.txt").write_text("found 3 bad rows\\n")
        if ctx.params["fail"]:
            raise DataValidationError("3 bad rows", keep_artifact=True)
'''


def test_a_committed_failure_keeps_its_artifact_and_fails_again_from_the_cache(project, cli):
    project.write("my_builders.py", KEEPER)
    project.write("recipe.yaml", """
        name: keep
        steps:
          check: {builder: "my_builders:Keep"}
          after:
            builder: command
            inputs: {report: check}
            params: {cmd: 'cp "$MB_IN_REPORT/report.txt" "$MB_OUT/"'}
        """)
    first = cli.build(check=3)
    kept = Path(first["by_step"]["check"]["path"])
    assert (kept / "report.txt").read_text() == "found 3 bad rows\n"
    assert first["by_step"]["after"]["status"] == "skipped"
    assert "3 bad rows" in first["by_step"]["check"]["error"]
    assert f"kept in the store as objects/{kept.name}" in first["by_step"]["check"]["error"]
    again = cli.build(check=3)
    assert again["by_step"]["check"]["seconds"] == 0 and again["by_step"]["after"]["status"] == "skipped"
    assert cli("path", "keep:check").stdout.strip() == str(kept)
    passed = cli.build("recipe.yaml", "+steps.check.params.fail=false")
    assert cli.statuses(passed) == {"check": "built", "after": "built"}
    # the kept artifact, by digest prefix, as another recipe's input
    project.write("uses.yaml", f"""
        name: uses
        steps:
          copy:
            builder: command
            inputs: {{report: {{artifact: {kept.name[:10]}}}}}
            params: {{cmd: 'cp "$MB_IN_REPORT/report.txt" "$MB_OUT/"'}}
        """)
    used = cli.build("uses.yaml")
    assert (Path(used["by_step"]["copy"]["path"]) / "report.txt").is_file()
    info = json.loads(cli("show", "uses:copy", "--json").stdout)
    digest = kept.name.split("-")[0]
    report = info["inputs"]["report"]
    assert report["kind"] == "artifact" and report["prefix"] == digest[:10] and report["hash"] == digest
    assert report["artifact"].startswith(f"objects/{digest}-")  # one content, whichever step name holds it
    for prefix, says in (("'ffffff00'", "names no artifact"), ("00000000", "quote it")):
        project.write("bad.yaml", f"name: bad\nsteps:\n  copy:\n    builder: command\n"
                      f"    inputs: {{r: {{artifact: {prefix}}}}}\n    params: {{cmd: 'true'}}\n")
        assert says in cli("build", "bad.yaml", check=2).stderr


# ---- a rule scored as predictions, the baseline of the model; small groups; gates on interval bounds ------
RULE_STEPS = """
  rule:
    builder: evaluate
    description: the rule x1 >= 0.5 scored like a model
    inputs: {data: splits}
    params: {predictions: %(rule)s, target: label, protected: [sex, grp], min_group_size: 50, bootstrap: 200}
"""


def rule_recipe(rule: str = '"x1 >= 0.5"', gates: str = "") -> str:
    gates = gates or ('{accuracy: ">= baseline", "upper(grp.fpr_gap)": "<= 0.9", "lower(accuracy)": ">= 0.5", '
                      '"upper(fpr_gap)": "<= 0.9"}')
    text = recipe(gates, "rule").replace("      bootstrap: 200\n", "      bootstrap: 200\n      min_group_size: 50\n")
    return text.replace("\n  downstream:", RULE_STEPS % {"rule": rule} + "  downstream:")


def test_a_rule_is_scored_like_a_model_and_is_the_baseline(first):
    cli, _ = first
    cli.project.write("rule.yaml", rule_recipe())
    built = cli.build("rule.yaml")
    rule, ev = (Path(built["by_step"][s]["path"]) for s in ("rule", "evaluate"))
    info = json.loads((rule / "evaluation.json").read_text())
    assert info["predictions"] == {"column": "x1", "rule": "x1 >= 0.5", "probability": False}
    metrics = json.loads((rule / "metrics.json").read_text())
    pq = pytest.importorskip("pyarrow.parquet")  # the rule by hand, on the test split's rows
    test = pq.read_table(Path(built["by_step"]["splits"]["path"]) / "test" / "data.parquet").to_pylist()
    right = [(r["x1"] >= 0.5) == (r["label"] == "yes") for r in test]
    assert metrics["accuracy"] == pytest.approx(sum(right) / len(test))
    assert metrics["roc_auc"] is not None and metrics["log_loss"] is None and metrics["ece"] is None
    assert (rule / "confusion_matrix.png").is_file() and not (rule / "calibration.png").exists()
    # the model's evaluation compares with the rule's metrics, and says which groups were too small
    assert json.loads((ev / "baseline" / "metrics.json").read_text()) == metrics
    gates = {g["metric"]: g for g in json.loads((ev / "gates.json").read_text())["gates"]}
    values = json.loads((ev / "metrics.json").read_text())
    assert gates["upper(grp.fpr_gap)"]["value"] == values["grp.fpr_gap_ci_high"] and gates["accuracy"]["passed"]
    assert gates["lower(accuracy)"]["value"] == values["accuracy_ci_low"]
    assert values["fpr_gap_ci_high"] == max(values["grp.fpr_gap_ci_high"], values["sex.fpr_gap_ci_high"])
    assert values["grp.fpr_gap_ci_low"] <= values["grp.fpr_gap_ci_high"]


def test_small_groups_are_reported_but_left_out_of_the_gaps(first):
    cli, _ = first
    cli.project.write("rule.yaml", rule_recipe())
    ev = Path(cli.build("rule.yaml")["by_step"]["evaluate"]["path"])
    rows = (ev / "groups" / "grp.csv").read_text().splitlines()
    groups = {r.split(",")[0]: r.split(",") for r in rows[1:]}
    header = rows[0].split(",")
    small = {g: int(r[header.index("count")]) for g, r in groups.items() if r[header.index("in_gaps")] == "False"}
    assert small and all(n < 50 for n in small.values()) and len(groups) - len(small) >= 2
    info = json.loads((ev / "evaluation.json").read_text())
    assert info["min_group_size"] == 50 and info["excluded_groups"] == {"grp": small}
    fpr = {g: float(r[header.index("fpr")]) for g, r in groups.items() if g not in small}
    values = json.loads((ev / "metrics.json").read_text())
    assert values["grp.fpr_gap"] == pytest.approx(max(fpr.values()) - min(fpr.values()))
    summary = (ev / "summary.md").read_text()
    assert "below min_group_size 50: reported in groups/grp.csv, left out of the gaps" in summary
    assert (ev / "groups" / "grp.png").is_file()
    confusion = json.loads((ev / "confusion_matrix.json").read_text())
    assert [sum(row) for row in confusion["rates"]] == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize(("rule", "gates", "says"), [
    ('"x9 >= 0.5"', "", "key 'params.predictions': the predictions column 'x9' is not a column"),
    ("{column: x1, threshold: high}", "", "predictions.threshold is a number"),
    ('"colour >= 2"', "", "holds str values such as"),
    ('"x1 >= 0.5"', '{"mid(accuracy)": ">= 0.5"}', "unknown bound 'mid'"),
])
def test_bad_predictions_and_bounds_are_one_clear_paragraph_with_exit_2(first, rule, gates, says):
    cli, _ = first
    cli.project.write("bad_rule.yaml", rule_recipe(rule, gates))
    proc = cli("build", "bad_rule.yaml", "-t", "rule", check=2)
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error and says in error[0], proc.stderr
    assert "Traceback" not in proc.stderr
