"""The tune builder through the real CLI, on a `python` target that computes a known function of its params:
grids, caching of trials (a rerun builds nothing, a larger budget builds only the new trials, a killed search
resumes), the best trial downstream, diff, failures, and the recipe checks (exit 2 before any trial runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelbuild.tune import COMMON_NEVERGRAD, grid_points, random_points, same_point

STEPS = """
import json, math, os, time


def f(ctx):
    p = ctx.params
    if p.get("sleep"):
        time.sleep(p["sleep"])
    if p["kind"] == "boom":
        raise ValueError("boom")
    loss = (p["x"] - 0.3) ** 2 + (math.log10(p["opt"]["lr"]) + 2) ** 2 + (0.5 if p["kind"] == "b" else 0.0)
    (ctx.out / "metrics.json").write_text(json.dumps({"loss": loss, "n": p["n"]}))
    (ctx.out / "model.json").write_text(json.dumps(p, sort_keys=True))


def score(ctx):
    m = json.loads((ctx.inputs["model"] / "metrics.json").read_text())
    (ctx.out / "metrics.json").write_text(json.dumps({"accuracy": 1.0 - m["loss"]}))


def use(ctx):
    (ctx.out / "got.json").write_text((ctx.inputs["model"] / "model.json").read_text())
"""

RECIPE = """
name: t
steps:
  f:
    builder: python
    params: {{function: "steps:f", x: 0.0, opt: {{lr: 0.1}}, kind: a, n: 1, sleep: {sleep}}}
  tuned:
    builder: tune
    params:
      target: f
      space:
        x: {{uniform: [0, 1], points: 3}}
        opt.lr: {{log: [0.001, 0.1], points: 3}}
        kind: {{choice: [a, b]}}
      objective: {{metric: loss}}
      optimizer: {optimizer}
      budget: {budget}
      num_workers: {workers}
  use:
    builder: python
    inputs: {{model: tuned}}
    params: {{function: "steps:use"}}
"""


def make(project, optimizer="grid", budget="null", workers=2, sleep=0):
    project.write("steps.py", STEPS)
    project.write("recipe.yaml", RECIPE.format(optimizer=optimizer, budget=budget, workers=workers, sleep=sleep))


def facts(cli, target="t:tuned") -> dict:
    return json.loads(cli("show", target, "--json").stdout)["metrics"]


def trials(path) -> list[dict]:
    return json.loads((Path(path) / "trials.json").read_text())["trials"]


def objects(cli, suffix="-f") -> set[str]:
    folder = cli.store / "objects"
    return {p.name for p in folder.iterdir() if p.name.endswith(suffix)} if folder.exists() else set()


def test_grid_is_the_full_cartesian_product_and_downstream_gets_the_best(project, cli):
    make(project)
    result = cli.build("recipe.yaml", "-t", "use", "-j", "2")
    tuned = Path(result["by_step"]["tuned"]["path"])
    got = trials(tuned)
    assert len(got) == 18 and all(t["status"] == "ok" for t in got)
    points = {json.dumps(t["params"], sort_keys=True) for t in got}
    assert points == {json.dumps({"kind": k, "opt.lr": lr, "x": x}, sort_keys=True)
                      for k in "ab" for lr in (0.001, 0.01, 0.1) for x in (0.0, 0.5, 1.0)}
    best = json.loads((tuned / "best.json").read_text())
    assert best["params"] == {"kind": "a", "opt.lr": 0.01, "x": 0.5}
    assert not (tuned / "best").exists() and (cli.store / best["path"]).is_dir()  # best.json names it
    use = json.loads((Path(result["by_step"]["use"]["path"]) / "got.json").read_text())
    assert (use["x"], use["opt"]["lr"], use["kind"]) == (0.5, 0.01, "a")
    shown = json.loads(cli("show", "t:use", "--json").stdout)
    assert shown["inputs"]["model"]["path"] == best["path"] and shown["inputs"]["model"]["tune"] == f"objects/{tuned.name}"
    png = (tuned / "objective.png").read_bytes()
    assert png[:4] == b"\x89PNG" and int.from_bytes(png[16:20], "big") == 450 * 4  # by trial, then x, opt.lr, kind
    assert facts(cli)["trials_built"] == 18
    # the plot and tables are byte-reproducible: --check rebuilds the tune artifact from the cached trials
    check = cli.build("recipe.yaml", "-t", "tuned", "--check")
    assert check["by_step"]["tuned"]["reproducible"] is True


def test_rerun_builds_nothing_and_a_larger_budget_builds_only_new_trials(project, cli):
    make(project, optimizer="NGOpt", budget=6)
    first = cli.build("recipe.yaml", "-t", "tuned")
    assert facts(cli)["trials_built"] + facts(cli)["trials_cached"] == 6
    built_first = objects(cli)
    again = cli.build("recipe.yaml", "-t", "tuned")
    assert again["by_step"]["tuned"]["status"] == "cached" and objects(cli) == built_first
    plan = cli("plan", "recipe.yaml", "-t", "tuned", "steps.tuned.params.budget=12").stdout
    assert "6 earlier trials of this search" in plan
    doubled = cli.build("recipe.yaml", "-t", "tuned", "steps.tuned.params.budget=12")
    f = facts(cli)
    assert f["trials_built"] + f["trials_cached"] == 12
    assert f["trials_built"] == len(objects(cli) - built_first)  # only new points were built
    new = trials(doubled["by_step"]["tuned"]["path"])
    assert [t["params"] for t in new[:6]] == [t["params"] for t in trials(first["by_step"]["tuned"]["path"])]
    diff = cli("diff", first["by_step"]["tuned"]["path"], "t:tuned").stdout
    assert "params.budget: 6 -> 12" in diff and "trials 6 -> 12" in diff
    assert "added" in diff


def test_random_rerun_and_larger_budget_reuse_the_first_points(project, cli):
    make(project, optimizer="random", budget=4)
    first = cli.build("recipe.yaml", "-t", "tuned")
    assert facts(cli)["trials_built"] == 4
    cli.build("recipe.yaml", "-t", "tuned", "steps.tuned.params.budget=8")
    assert (facts(cli)["trials_built"], facts(cli)["trials_cached"]) == (4, 4)
    pts = [t["params"] for t in trials(first["by_step"]["tuned"]["path"])]
    assert pts == [{"kind": p["kind"], "opt.lr": p["opt.lr"], "x": p["x"]} for p in pts]


def test_a_killed_search_does_not_repeat_its_finished_trials(project, cli):
    make(project, optimizer="NGOpt", budget=8, workers=1, sleep=0.4)
    proc = cli.popen("build", "recipe.yaml", "-t", "tuned", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True, start_new_session=True)
    seen, deadline = [], time.time() + 120
    for line in proc.stderr:
        seen.append(line)
        if "trial 3/8" in line or time.time() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any("trial 3/8 built" in s for s in seen), "".join(seen)
    committed = objects(cli)
    assert len(committed) >= 3
    result = cli("build", "recipe.yaml", "-t", "tuned")
    assert "3 earlier trials" in result.stderr or f"{len(committed)} earlier trials" in result.stderr
    f = facts(cli)
    assert f["trials_built"] + f["trials_cached"] == 8
    assert f["trials_built"] == len(objects(cli) - committed)
    assert f["trials_built"] <= 8 - 3


def test_objective_of_a_step_downstream_of_the_target(project, cli):
    make(project)
    recipe = (project / "recipe.yaml").read_text() + """
  score:
    builder: python
    inputs: {model: f}
    params: {function: "steps:score"}
"""
    recipe = recipe.replace("objective: {metric: loss}", "objective: {step: score, metric: accuracy, mode: max}")
    project.write("recipe.yaml", recipe)
    result = cli.build("recipe.yaml", "-t", "use")
    best = json.loads((Path(result["by_step"]["tuned"]["path"]) / "best.json").read_text())
    assert best["params"] == {"kind": "a", "opt.lr": 0.01, "x": 0.5} and best["objective"] == pytest.approx(0.96)
    assert all("objective_path" in t for t in trials(result["by_step"]["tuned"]["path"]))


def test_failed_trials_score_worst_and_too_many_fail_the_step(project, cli):
    make(project)
    recipe = (project / "recipe.yaml").read_text().replace("kind: {choice: [a, b]}", "kind: {choice: [a, boom]}")
    project.write("recipe.yaml", recipe)
    result = cli.build("recipe.yaml", "-t", "tuned", "+steps.tuned.params.max_failure_rate=0.6")
    got = trials(result["by_step"]["tuned"]["path"])
    assert sum(t["status"] == "failed" for t in got) == 9 and facts(cli)["trials_failed"] == 9
    failed = cli.build("recipe.yaml", "-t", "tuned", "+steps.tuned.params.max_failure_rate=0.2", check=1)
    assert failed["by_step"]["tuned"]["status"] == "failed"
    assert "max_failure_rate 0.2" in failed["by_step"]["tuned"]["error"]


BAD = {
    "unknown target": ("target: f", "target: ff", "did you mean 'f'"),
    "empty space": ("""space:
        x: {uniform: [0, 1], points: 3}
        opt.lr: {log: [0.001, 0.1], points: 3}
        kind: {choice: [a, b]}""", "space: {}", "the space is empty"),
    "unknown optimizer": ("optimizer: grid", "optimizer: NGOpd\n      budget: 3", "did you mean 'NGOpt'"),
    "budget below 1": ("optimizer: grid", "optimizer: random\n      budget: 0", "at least 1"),
    "grid without points": ("x: {uniform: [0, 1], points: 3}", "x: {uniform: [0, 1]}", "points: 4"),
    "bad range": ("x: {uniform: [0, 1], points: 3}", "x: {log: [0, 1], points: 3}", "above 0"),
    "bad objective mode": ("objective: {metric: loss}", "objective: {metric: loss, mode: maximum}", "min or max"),
    "unknown objective step": ("objective: {metric: loss}", "objective: {metric: loss, step: scor}", "objective step"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_tune_steps_exit_2_before_any_trial(project, cli, case):
    make(project)
    old, new, expected = BAD[case]
    text = (project / "recipe.yaml").read_text().replace("      budget: null\n", "")
    assert old in text
    project.write("recipe.yaml", text.replace(old, new))
    proc = cli("build", "recipe.yaml", check=2)
    assert expected in proc.stderr and "step 'tuned'" in proc.stderr and "recipe.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert not cli.store.exists()


def test_unknown_optimizer_lists_the_available_ones(project, cli):
    make(project, optimizer="Bayes", budget=3)
    proc = cli("plan", "recipe.yaml", check=2)
    assert "nevergrad.optimizers.registry" in proc.stderr
    for name in ("NGOpt", "TwoPointsDE", "CMA", "BO", "PSO", "RandomSearch"):
        assert f" {name}," in proc.stderr


def test_common_nevergrad_names_are_registered():
    import nevergrad as ng
    assert set(COMMON_NEVERGRAD) <= set(ng.optimizers.registry)


def test_grid_and_random_points():
    space = {"b": {"log": [1e-4, 1e-1], "points": 4}, "a": {"int": [1, 3]}, "c": {"choice": [[1], [2, 3]]}}
    points = grid_points(space)
    assert len(points) == 4 * 3 * 2 and list(points[0]) == ["a", "b", "c"]
    assert sorted({p["b"] for p in points}) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert random_points(space, 0, 3) == random_points(space, 0, 8)[:3] != random_points(space, 1, 3)
    assert all(1e-4 <= p["b"] <= 1e-1 and p["a"] in (1, 2, 3) for p in random_points(space, 0, 50))


def test_diff_of_tune_artifacts_imports_no_heavy_library(project, cli):
    make(project)
    first = cli.build("recipe.yaml", "-t", "tuned")
    cli.build("recipe.yaml", "-t", "tuned", "+steps.tuned.params.budget=5")
    probe = ("import sys, contextlib, io; from modelbuild.cli import main\n"
             f"out = io.StringIO()\nwith contextlib.redirect_stdout(out): main(['--store', {str(cli.store)!r}, "
             f"'diff', {first['by_step']['tuned']['path']!r}, 't:tuned'])\n"
             "print(out.getvalue()); print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('nevergrad', 'matplotlib', 'torch', 'pandas', 'numpy')))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=project, capture_output=True, text=True, check=True)
    assert proc.stdout.strip().endswith("[]")
    assert "trials 18 -> 5: 0 added, 13 removed" in proc.stdout
    assert "params.budget: null -> 5" in proc.stdout


def test_a_whole_recipe_build_trains_the_target_only_where_another_step_consumes_it(project, cli):
    make(project)
    result = cli.build("recipe.yaml", "-j", "2", "steps.tuned.params.budget=2")
    assert set(cli.statuses(result)) == {"tuned", "use"}  # f runs only as the search's trials
    assert not (cli.store / "roots" / "t" / "f").exists()
    plan = cli("plan", "recipe.yaml", "steps.tuned.params.budget=2").stdout.splitlines()
    assert [line.split()[0] for line in plan] == ["tuned", "use"]
    graph = cli("graph", "recipe.yaml").stdout
    assert 'n_f -> n_tuned [style=dashed, label="trials"];' in graph and "n_tuned -> n_use;" in graph
    assert "-. trials .-> n_tuned" in cli("graph", "recipe.yaml", "--format", "mermaid").stdout
    recipe = (project / "recipe.yaml").read_text() + """
  direct:
    builder: python
    inputs: {model: f}
    params: {function: "steps:use"}
"""
    project.write("recipe.yaml", recipe)
    result = cli.build("recipe.yaml", "steps.tuned.params.budget=2")
    assert cli.statuses(result)["f"] in ("built", "cached") and (cli.store / "roots" / "t" / "f").exists()
    assert cli.build("recipe.yaml", "-t", "f")["by_step"]["f"]["status"] == "cached"  # --target still builds it


BO = """
name: bo
steps:
  f:
    builder: python
    params: {function: "bo_steps:f", lr: 0.001}
  tuned:
    builder: tune
    params:
      target: f
      space: {lr: {log: [3.0e-4, 3.0e-2]}}
      objective: {metric: loss}
      optimizer: BO
      budget: 4
"""


def test_bo_repeats_are_answered_from_the_trials_and_do_not_spend_the_budget(project, cli):
    """Issue 15's case: BO over one log range stalled on a point, and raising its budget asked for exact
    repeats of trials 1 and 2 (bayes_opt's initial points, still queued after the trials were replayed)."""
    project.write("bo_steps.py", "import json, math\n\n\ndef f(ctx):\n    loss = (math.log10(ctx.params['lr']) + 2.2) ** 2\n"
                                 "    (ctx.out / 'metrics.json').write_text(json.dumps({'loss': loss}))\n")
    project.write("recipe.yaml", BO)
    cli.build("recipe.yaml", "-t", "tuned")
    result = cli.build("recipe.yaml", "-t", "tuned", "steps.tuned.params.budget=8")
    tuned = result["by_step"]["tuned"]["path"]
    data = json.loads((Path(tuned) / "trials.json").read_text())
    points, space = [t["params"] for t in data["trials"]], {"lr": {"log": [3e-4, 3e-2]}}
    assert len(points) == 8 and all(t["status"] == "ok" for t in data["trials"])
    assert not any(same_point(space, a, b) for i, a in enumerate(points) for b in points[:i])
    assert (facts(cli, "bo:tuned")["trials_built"], facts(cli, "bo:tuned")["trials_cached"]) == (4, 4)
    repeats = data["repeats"]
    assert {r["trial"] for r in repeats} >= {1, 2} and facts(cli, "bo:tuned")["points_repeated"] == len(repeats)
    assert [t["asked"] for t in data["trials"]][4:] == sorted(t["asked"] for t in data["trials"][4:])


def test_runs_lists_builds_and_trials_with_params_metrics_and_status(project, cli):
    make(project, optimizer="random", budget=3)
    cli.build("recipe.yaml", "-t", "tuned")
    cli.build("recipe.yaml", "-t", "f", "steps.f.params.x=0.3")
    rows = json.loads(cli("runs", "recipe.yaml", "--sort", "loss", "--json").stdout)
    f_rows = [r for r in rows if r["step"] == "f"]
    assert [r["trial"] for r in f_rows].count(None) == 1 and len(f_rows) == 4  # its own build and 3 trials
    assert {r["trial"] for r in f_rows} - {None} == {"tuned#1", "tuned#2", "tuned#3"}
    losses = [r["metrics"]["loss"] for r in f_rows]
    assert losses == sorted(losses) and rows[-1]["step"] == "tuned"  # no loss: sorted last
    assert all(r["status"] == "ok" and r["seconds"] > 0 and r["started"] > 0 for r in rows)
    own = next(r for r in f_rows if r["trial"] is None)
    assert own["params"]["x"] == 0.3 and own["params"]["opt.lr"] == 0.1
    text = cli("runs", "t", "--step", "f", "--sort", "loss", "--reverse", "--metrics", "loss").stdout.splitlines()
    assert text[0].split() == ["step", "trial", "status", "started", "seconds", "kind", "opt.lr", "x", "loss"]
    assert [float(line.split()[-1]) for line in text[1:]] == pytest.approx(sorted(losses, reverse=True), rel=1e-5)
    missing = cli("runs", "nothing", check=2)
    assert "no builds of recipe 'nothing'" in missing.stderr and "Traceback" not in missing.stderr
