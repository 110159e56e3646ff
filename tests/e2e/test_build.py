"""Building recipes through the real CLI: caching, rebuild reasons, early cutoff, failures, parallelism."""

from __future__ import annotations

import json
import sqlite3

PIPELINE = """
name: demo
steps:
  raw:
    builder: command
    inputs: {data: {path: data.txt}}
    params: {cmd: 'sort "$MB_IN_DATA" > "$MB_OUT/sorted.txt"'}
  upper:
    builder: python
    inputs: {text: raw}
    params: {function: "steps:upper", suffix: "!"}
  count:
    builder: command
    inputs: [raw]
    params: {cmd: 'wc -l < "$MB_IN_RAW/sorted.txt" > "$MB_OUT/lines"'}
  report:
    builder: command
    inputs: {up: upper, n: count}
    params: {cmd: 'cat "$MB_IN_UP/upper.txt" "$MB_IN_N/lines" > "$MB_OUT/report.txt"'}
"""

STEPS = """
def upper(ctx):
    text = (ctx.inputs["text"] / "sorted.txt").read_text()
    (ctx.out / "upper.txt").write_text(text.upper() + ctx.params["suffix"])
"""


def make(project):
    project.write("recipe.yaml", PIPELINE)
    project.write("steps.py", STEPS)
    project.write("data.txt", "pear\napple\nfig\n")


def test_second_build_is_fully_cached(project, cli):
    make(project)
    first = cli.build()
    assert set(cli.statuses(first).values()) == {"built"}
    second = cli.build()
    assert set(cli.statuses(second).values()) == {"cached"}
    assert [s["path"] for s in first["steps"]] == [s["path"] for s in second["steps"]]
    report = first["by_step"]["report"]["path"]
    assert open(f"{report}/report.txt").read() == "APPLE\nFIG\nPEAR\n!3\n"


def test_param_change_rebuilds_the_step_and_its_dependents_only(project, cli):
    make(project)
    cli.build()
    result = cli.build("recipe.yaml", "steps.upper.params.suffix=?")
    assert cli.statuses(result) == {"raw": "cached", "upper": "built", "count": "cached", "report": "built"}
    assert result["by_step"]["upper"]["reasons"] == ["params.suffix '!' -> '?'"]
    assert result["by_step"]["report"]["reasons"] == ["input up changed"]


def test_identical_output_stops_the_rebuild_early_cutoff(project, cli):
    make(project)
    cli.build()
    project.write("data.txt", "fig\npear\napple\n")  # other order, same sorted output
    result = cli.build()
    assert cli.statuses(result) == {"raw": "built", "upper": "cached", "count": "cached", "report": "cached"}
    assert result["by_step"]["raw"]["reasons"] == ["source data changed"]


def test_touched_source_with_same_content_is_cached(project, cli):
    make(project)
    cli.build()
    (project / "data.txt").touch()
    assert set(cli.statuses(cli.build()).values()) == {"cached"}


def test_editing_a_python_step_rebuilds_it(project, cli):
    make(project)
    cli.build()
    project.write("steps.py", STEPS.replace("text.upper()", "text.title()"))
    result = cli.build()
    assert cli.statuses(result) == {"raw": "cached", "upper": "built", "count": "cached", "report": "built"}
    assert result["by_step"]["upper"]["reasons"] == ["extras.module changed"]


def test_plan_says_what_and_why_without_building(project, cli):
    make(project)
    plan = json.loads(cli("plan", "recipe.yaml", "--json").stdout)
    assert [s["action"] for s in plan["steps"]] == ["build"] * 4
    assert not (cli.store / "objects").exists() or not [
        p for p in (cli.store / "objects").iterdir() if p.name != ".links"]
    cli.build()
    plan = json.loads(cli("plan", "recipe.yaml", "steps.upper.params.suffix=?", "--json").stdout)
    actions = {s["step"]: (s["action"], s["reasons"]) for s in plan["steps"]}
    assert actions["raw"] == ("cached", [])
    assert actions["upper"] == ("build", ["params.suffix '!' -> '?'"])
    assert actions["report"][0] == "build"


def test_a_failed_step_skips_its_dependents_and_keep_going_builds_the_rest(project, cli):
    project.write("recipe.yaml", """
        name: fails
        steps:
          bad: {builder: command, params: {cmd: 'echo oops >&2; exit 3'}}
          after_bad: {builder: command, inputs: [bad], params: {cmd: 'true'}}
          fine: {builder: command, params: {cmd: 'echo ok > $MB_OUT/ok'}}
    """)
    result = cli.build(check=1)
    assert cli.statuses(result) == {"bad": "failed", "after_bad": "skipped", "fine": "skipped"}
    assert "exited with code 3" in result["by_step"]["bad"]["error"]
    result = cli.build("recipe.yaml", "--keep-going", check=1)
    assert cli.statuses(result) == {"bad": "failed", "after_bad": "skipped", "fine": "built"}
    log = cli("log", result["by_step"]["fine"]["path"]).stdout
    assert "echo ok" in log
    conn = sqlite3.connect(cli.store / "trace.sqlite")
    assert conn.execute("SELECT count(*) FROM trace").fetchone()[0] == 1


def test_independent_steps_build_in_parallel(project, cli, tmp_path):
    stamp = tmp_path / "stamps"
    project.write("recipe.yaml", f"""
        name: par
        steps:
          a: {{builder: command, params: {{cmd: 'echo a start $(date +%s.%N) >> {stamp}; sleep 1; echo a end $(date +%s.%N) >> {stamp}; echo a > $MB_OUT/a'}}}}
          b: {{builder: command, params: {{cmd: 'echo b start $(date +%s.%N) >> {stamp}; sleep 1; echo b end $(date +%s.%N) >> {stamp}; echo b > $MB_OUT/b'}}}}
    """)
    cli.build("recipe.yaml", "-j", "2", env={"MODELBUILD_SANDBOX": "off"})  # the stamps live outside the store
    times = {f"{w[0]} {w[1]}": float(w[2]) for w in (line.split() for line in stamp.read_text().splitlines())}
    assert times["a start"] < times["b end"] and times["b start"] < times["a end"], "the two steps did not overlap"


def test_target_builds_only_what_the_step_needs(project, cli):
    make(project)
    result = cli.build("recipe.yaml", "--target", "count")
    assert cli.statuses(result) == {"raw": "built", "count": "built"}


def test_lineage_verbs_name_artifacts_by_recipe_step_and_tag(project, cli):
    make(project)
    cli.build()
    path = cli("path", "demo:report").stdout.strip()
    assert path.endswith("-report")
    cli("tag", "release", "demo:report")
    assert cli("path", "release").stdout.strip() == path
    shown = json.loads(cli("show", "release", "--json").stdout)
    assert shown["step"] == "report" and set(shown["inputs"]) == {"up", "n"}
    chain = cli("why-depends", "demo:report", "demo:raw").stdout
    lines = chain.strip().splitlines()
    assert lines[0].endswith("-report") and lines[-1].strip().endswith("-raw)") and len(lines) == 3
    assert cli("why-depends", "demo:raw", "demo:report", check=1).returncode == 1
    dot = cli("graph", "recipe.yaml").stdout
    assert "digraph" in dot and "n_raw -> n_upper" in dot
    mermaid = cli("graph", "demo:report", "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart LR") and "-->" in mermaid


def test_diff_names_exactly_the_param_and_the_source_that_changed(project, cli):
    make(project)
    cli.build()
    before = cli("path", "demo:report").stdout.strip()
    project.write("data.txt", "pear\napple\nfig\nkiwi\n")
    cli.build("recipe.yaml", "steps.upper.params.suffix=?")
    after = cli("path", "demo:report").stdout.strip()
    d = json.loads(cli("diff", before, after, "--json").stdout)
    assert len(d["causes"]) == 2, d["causes"]
    param = [c for c in d["causes"] if "params.suffix" in c]
    source = [c for c in d["causes"] if "source" in c]
    assert param == ['report <- upper: params.suffix: "!" -> "?"']
    assert len(source) == 1 and "data.txt" in source[0] and source[0].startswith("report <- ")
    text = cli("diff", before, after).stdout
    assert "causes:" in text and "params.suffix" in text
    assert cli("diff", after, after).stdout.strip().endswith("identical lineage")


def test_log_of_a_failed_step_shows_why_it_failed(project, cli):
    project.write("recipe.yaml", """
        name: flaky
        steps:
          s: {builder: command, params: {cmd: 'echo "the reason: $REASON" >&2; test -z "$REASON"'}}
    """)
    off = {"MODELBUILD_SANDBOX": "off"}  # the step reads an undeclared variable, which the sandbox hides
    cli.build(env={"REASON": "disk full", **off}, check=1)
    assert "the reason: disk full" in cli("log", "flaky:s").stdout
    cli.build(env=off)
    assert "the reason: disk full" not in cli("log", "flaky:s").stdout
