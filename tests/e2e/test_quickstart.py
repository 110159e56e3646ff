"""The README's main job: recipes/quickstart.yaml on the real Adult census data (a pinned PyPI file)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Cli


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """A copy of recipes/ and one store shared by this module's tests (the data is fetched once)."""
    root = tmp_path_factory.mktemp("qs")
    shutil.copytree(REPO / "recipes", root / "recipes")
    cli = Cli(root, root / "store")
    first = cli.build("recipes/quickstart.yaml")
    return cli, first


def test_quickstart_builds_then_is_fully_cached(quickstart):
    cli, first = quickstart
    assert cli.statuses(first) == {"adult": "built", "clean": "built", "summary": "built", "splits": "built",
                                   "tuned": "built", "evaluate": "built", "image": "built",
                                   "deploy": "built"}
    adult = json.loads((cli.store.parent / first["by_step"]["adult"]["path"] / "table.json").read_text())
    assert adult["rows"] == 32561 and len(adult["columns"]) == 15
    metrics = json.loads(open(first["by_step"]["summary"]["path"] + "/metrics.json").read())
    assert metrics["rows"] == 30162 and 0.24 < metrics["high_income_rate"] < 0.25
    again = cli.build("recipes/quickstart.yaml")
    assert set(cli.statuses(again).values()) == {"cached"}


def test_quickstart_tunes_and_evaluates_the_best_model(quickstart):
    cli, first = quickstart
    path = lambda step: cli.project / first["by_step"][step]["path"]  # noqa: E731
    trials = json.loads((path("tuned") / "trials.json").read_text())["trials"]
    assert [t["params"]["optimizer.lr"] for t in trials] == [0.001, 0.003, 0.01]
    # the model step trains only as the search's trials; lr 0.003 is its own params, so building it is a hit
    model = cli.build("recipes/quickstart.yaml", "-t", "model")["by_step"]["model"]
    assert model["status"] == "cached" and any(t["digest"] in model["path"] for t in trials)
    best = json.loads((path("tuned") / "best.json").read_text())
    assert best["objective"] == min(t["objective"] for t in trials)
    evaluation = json.loads((path("evaluate") / "metrics.json").read_text())
    assert evaluation["accuracy"] >= 0.80 and evaluation["sex.demographic_parity_difference"] <= 0.25
    assert evaluation["rows"] == json.loads((path("splits") / "split.json").read_text())["rows"]["test"]
    gates = json.loads((path("evaluate") / "gates.json").read_text())
    assert gates and all(g["passed"] for g in (gates if isinstance(gates, list) else gates["gates"]))


def test_quickstart_is_reproducible(quickstart):
    cli, _ = quickstart
    result = cli.build("recipes/quickstart.yaml", "--check")
    assert all(s["reproducible"] for s in result["steps"])


def test_diff_of_quickstart_names_the_changed_param_and_source_file(quickstart):
    cli, first = quickstart
    before = first["by_step"]["summary"]["path"]
    script = cli.project / "recipes/scripts/income_by_group.py"
    original = script.read_text()
    script.write_text(original.replace("round(6)", "round(4)"))
    try:
        result = cli.build("recipes/quickstart.yaml", "steps.clean.params.min_age=21", "-t", "summary")
        assert cli.statuses(result) == {"adult": "cached", "clean": "built", "summary": "built"}
        d = json.loads(cli("diff", before, "quickstart:summary", "--json").stdout)
        assert len(d["causes"]) == 2, d["causes"]
        assert any("params.min_age: 17 -> 21" in c for c in d["causes"])
        assert any("income_by_group.py" in c and "content" in c for c in d["causes"])
        assert any(e.startswith("summary <- clean: rows: 0 added, ") and "removed (30162 -> " in e
                   for e in d["effects"]), d["effects"]
    finally:
        script.write_text(original)


def test_quickstart_ends_in_manifests_that_kubernetes_accepts(quickstart):
    """The Done-when of the deployment work: the quickstart's modelcar and manifests that pass
    `kubernetes-validate --strict`, the modelcar pinned by the digest the image step recorded."""
    cli, first = quickstart
    deployed, image = (cli.project / first["by_step"][s]["path"] for s in ("deploy", "image"))
    modelcar = json.loads((image / "image.json").read_text())["images"]["modelcar"]["manifest"]
    info = json.loads((deployed / "deploy.json").read_text())
    assert info["model_image"].endswith("@" + modelcar)
    files = sorted(map(str, (deployed / "kubernetes").glob("*.yaml")))
    assert len(files) == 4
    for version in ("1.30.0", "1.37.0"):
        proc = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "--quiet",
                               "-k", version, *files], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"Kubernetes {version}:\n{proc.stdout}{proc.stderr}"
