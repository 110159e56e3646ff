"""The README's main job: recipes/quickstart.yaml on the real Adult census data (a pinned PyPI file)."""

from __future__ import annotations

import json
import shutil

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
    assert cli.statuses(first) == {"adult": "built", "clean": "built", "summary": "built"}
    adult = json.loads((cli.store.parent / first["by_step"]["adult"]["path"] / "table.json").read_text())
    assert adult["rows"] == 32561 and len(adult["columns"]) == 15
    metrics = json.loads(open(first["by_step"]["summary"]["path"] + "/metrics.json").read())
    assert metrics["rows"] == 30162 and 0.24 < metrics["high_income_rate"] < 0.25
    again = cli.build("recipes/quickstart.yaml")
    assert set(cli.statuses(again).values()) == {"cached"}


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
        result = cli.build("recipes/quickstart.yaml", "steps.clean.params.min_age=21")
        assert cli.statuses(result) == {"adult": "cached", "clean": "built", "summary": "built"}
        d = json.loads(cli("diff", before, "quickstart:summary", "--json").stdout)
        assert len(d["causes"]) == 2, d["causes"]
        assert any("params.min_age: 17 -> 21" in c for c in d["causes"])
        assert any("income_by_group.py" in c and "content" in c for c in d["causes"])
        assert any(e.startswith("summary <- clean: rows: 0 added, ") and "removed (30162 -> " in e
                   for e in d["effects"]), d["effects"]
    finally:
        script.write_text(original)
