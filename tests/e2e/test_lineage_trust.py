"""What the store says about an artifact is true, through the real CLI: a damaged input (a search's best trial
too) is never built from, `show` says when an artifact no longer matches its recorded hashes, `plan` says
when the record of the last build is gone, and `diff` follows the build each consumer recorded and finds
the same derivation changes as `plan`."""

from __future__ import annotations

import json
import os
from pathlib import Path

STEPS = """
import json


def a(ctx):
    (ctx.out / "a.txt").write_text(repr(ctx.params["r"]))


def b(ctx):
    (ctx.out / "b.txt").write_text((ctx.inputs["a"] / "a.txt").read_text() + repr(ctx.params["q"]))


def f(ctx):
    x = ctx.params["x"]
    (ctx.out / "metrics.json").write_text(json.dumps({"loss": (x - 0.5) ** 2}))
    (ctx.out / "model.json").write_text(json.dumps({"x": x}))


def use(ctx):
    (ctx.out / "got.json").write_text((ctx.inputs["model"] / "model.json").read_text())
"""

AB = """
name: demo
steps:
  A:
    builder: python
    params: {{function: "steps:a", p: {p}, r: {r}, n: .nan}}
  B:
    builder: python
    inputs: {{a: A}}
    params: {{function: "steps:b", q: {q}}}
"""

TUNE = """
name: t
steps:
  f:
    builder: python
    params: {function: "steps:f", x: 0.0}
  tuned:
    builder: tune
    params:
      target: f
      space: {x: {uniform: [0, 1], points: 3}}
      objective: {metric: loss}
      optimizer: grid
  use:
    builder: python
    inputs: {model: tuned}
    params: {function: "steps:use"}
"""


def build_ab(project, cli, p=1, r=1, q=1) -> dict:
    project.write("steps.py", STEPS)
    project.write("recipe.yaml", AB.format(p=p, r=r, q=q))
    return cli.build()["by_step"]


def flip_a_byte(path: Path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def edit_json(path: Path, change) -> None:
    os.chmod(path, 0o644)
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value, indent=2, sort_keys=True))


# ---- a damaged input is never built from -------------------------------------------------------------------
def test_a_damaged_best_trial_is_rebuilt_before_a_consumer_reads_it(project, cli):
    project.write("steps.py", STEPS)
    project.write("recipe.yaml", TUNE)
    tuned = Path(cli.build("recipe.yaml", "-t", "tuned")["by_step"]["tuned"]["path"])
    best = json.loads((tuned / "best.json").read_text())
    trial = cli.store / best["path"]
    intact = (trial / "model.json").read_text()
    flip_a_byte(trial / "model.json")
    plan = cli("plan", "recipe.yaml").stdout
    assert f"the best trial of its search, {best['path']}, is damaged or missing" in plan, plan
    result = cli.build()
    got = Path(result["by_step"]["use"]["path"]) / "got.json"
    assert got.read_text() == intact  # built from the rebuilt trial, not the damaged one
    assert (trial / "model.json").read_text() == intact
    assert sorted(p.name.split(".")[0] for p in (cli.store / "corrupt").iterdir()) == sorted([trial.name, tuned.name])
    assert json.loads(cli("show", "t:tuned", "--json").stdout)["metrics"]["trials_built"] == 1  # the others: hits
    assert cli("verify").returncode == 0


# ---- show ------------------------------------------------------------------------------------------------
def test_show_warns_when_the_lineage_record_was_edited(project, cli):
    a = Path(build_ab(project, cli)["A"]["path"])
    edit_json(a / ".meta.json", lambda m: m["derivation"]["params"].update(r=5))
    proc = cli("show", "demo:A", check=5)
    assert "WARNING" in proc.stdout and ".meta.json" in proc.stdout.split("\n")[0]
    assert "r = 5" in proc.stdout  # what it prints is marked, not hidden
    info = json.loads(cli("show", "demo:A", "--json", check=5).stdout)
    assert info["damaged"] == [".meta.json"]


def test_show_names_a_damaged_file(project, cli):
    b = Path(build_ab(project, cli)["B"]["path"])
    flip_a_byte(b / "b.txt")
    proc = cli("show", "demo:B", check=5)
    assert proc.stdout.startswith("WARNING") and "b.txt" in proc.stdout.split("\n")[0]
    assert json.loads(cli("show", "demo:B", "--json", check=5).stdout)["damaged"] == ["b.txt"]
    assert json.loads(cli("show", "demo:A", "--json").stdout)["damaged"] == []


# ---- plan ------------------------------------------------------------------------------------------------
def test_plan_says_when_the_last_build_record_is_missing_or_edited(project, cli):
    key = build_ab(project, cli)["A"]["key"]
    drv = cli.store / "drv" / f"{key}.json"
    edit_json(drv, lambda d: d["params"].update(p=7))  # valid JSON, but no longer the derivation of its key
    project.write("recipe.yaml", AB.format(p=2, r=1, q=1))
    for _ in ("edited", "missing"):
        line = next(x for x in cli("plan", "recipe.yaml").stdout.splitlines() if x.startswith("A "))
        assert "is missing or damaged" in line and f"drv/{key}.json" in line, line
        assert "new" not in line.split() and "params.p" not in line, line
        drv.unlink(missing_ok=True)


# ---- diff ------------------------------------------------------------------------------------------------
def test_diff_follows_the_build_each_consumer_recorded(project, cli):
    first = build_ab(project, cli, p=1, r=1, q=1)
    second = build_ab(project, cli, p=2, r=1, q=2)  # A: the same bytes (early cutoff) under a new key
    assert second["A"]["path"] == first["A"]["path"] and second["A"]["key"] != first["A"]["key"]
    third = build_ab(project, cli, p=2, r=2, q=2)
    d = json.loads(cli("diff", "--json", second["B"]["path"], third["B"]["path"]).stdout)
    assert d["causes"] == ["B <- A: params.r: 1 -> 2"]  # p was 2 in both builds B read
    flip_a_byte(Path(third["B"]["path"]) / "b.txt")
    d = json.loads(cli("diff", "--json", second["B"]["path"], third["B"]["path"]).stdout)
    assert [n for n in d["notes"] if "changed since it was built (b.txt)" in n], d["notes"]


def test_plan_and_diff_find_the_same_changes(project, cli):
    first = build_ab(project, cli, r=1)
    project.write("recipe.yaml", AB.format(p=1, r=1.0, q=1))
    plan = next(x for x in cli("plan", "recipe.yaml").stdout.splitlines() if x.startswith("A "))
    assert plan.split(None, 2)[2] == "params.r 1 -> 1.0"
    second = cli.build()["by_step"]
    d = json.loads(cli("diff", "--json", first["A"]["path"], second["A"]["path"]).stdout)
    assert d["causes"] == ["A: params.r: 1 -> 1.0"]  # and no NaN -> NaN for the unchanged n: .nan
