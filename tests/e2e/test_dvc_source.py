"""DVC sources through the real CLI: a local git+DVC repo, tagged v1 and v2, read at a revision.

The data is fetched once per content (a fixed-output derivation keyed by DVC's md5), so a rebuild never
reads DVC again; the lineage records the revision, its commit, DVC's md5 and modelbuild's hash.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dvc.api")

DVC = Path(sys.executable).parent / "dvc"
V1 = "id,name,score\n1,ann,0.5\n2,bob,0.7\n3,cid,0.9\n"
V2 = "id,name,score\n1,ann,0.5\n2,bob,0.75\n3,cid,0.9\n4,dan,0.1\n"  # one row changed, one added


def dvc_env(root: Path) -> dict:
    """Keep DVC and git away from the user's config, caches and analytics."""
    return {"DVC_NO_ANALYTICS": "1", "HOME": str(root / "home"), "DVC_SITE_CACHE_DIR": str(root / "dvc-site"),
            "DVC_GLOBAL_CONFIG_DIR": str(root / "dvc-global"), "DVC_SYSTEM_CONFIG_DIR": str(root / "dvc-system"),
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


def run(cmd: list, cwd: Path, env: dict) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.strip()


def make_registry(repo: Path, env: dict) -> None:
    """git+DVC repo: data/table.csv with 3 rows at tag v1, 4 rows (one changed) at tag v2."""
    repo.mkdir(parents=True)
    run(["git", "init", "-q"], repo, env)
    run(["git", "config", "user.email", "test@example.com"], repo, env)
    run(["git", "config", "user.name", "Test"], repo, env)
    run([DVC, "init", "-q"], repo, env)
    run([DVC, "config", "core.analytics", "false"], repo, env)
    (repo / "data").mkdir()
    for tag, text in (("v1", V1), ("v2", V2)):
        (repo / "data" / "table.csv").write_text(text)
        run([DVC, "add", "-q", "data/table.csv"], repo, env)
        run(["git", "add", "-A"], repo, env)
        run(["git", "commit", "-q", "-m", f"table {tag}"], repo, env)
        run(["git", "tag", tag], repo, env)


@pytest.fixture(scope="module")
def registry_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvc-template")
    make_registry(root / "registry", dvc_env(root))
    return root / "registry"


@pytest.fixture
def env(tmp_path):
    return dvc_env(tmp_path)


@pytest.fixture
def registry(registry_template, tmp_path):
    """A fresh copy of the repo next to the project, so a test may damage it."""
    target = tmp_path / "registry"
    shutil.copytree(registry_template, target, symlinks=True)
    return target


def recipe(source: str) -> str:
    return f"""
    name: dvcdemo
    steps:
      raw:
        builder: ingest
        inputs: {{data: {source}}}
    """


V1_RECIPE = recipe("{dvc: {repo: ../registry, path: data/table.csv, rev: v1}}")


def dvc_md5(registry: Path, rev: str, env: dict) -> str:
    text = run(["git", "show", f"{rev}:data/table.csv.dvc"], registry, env)
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if "md5:" in line)


def test_build_show_override_diff_and_cached_rebuild(project, cli, registry, env):
    project.write("recipe.yaml", V1_RECIPE)
    first = cli.build(env=env)
    assert cli.statuses(first) == {"raw": "built"}
    v1 = first["by_step"]["raw"]["path"]
    assert json.loads(Path(v1, "table.json").read_text())["rows"] == 3

    info = json.loads(cli("show", v1, "--json", env=env).stdout)
    src = info["inputs"]["data"]
    commit = run(["git", "rev-parse", "v1"], registry, env)
    assert src["kind"] == "dvc" and src["rev"] == "v1" and src["path"] == "data/table.csv"
    assert src["commit"] == commit
    assert src["dvc_md5"] == dvc_md5(registry, "v1", env)
    assert src["repo"] == str(registry.resolve())
    assert len(src["hash"]) == 32 and src["artifact"].startswith("objects/")
    text = cli("show", v1, env=env).stdout
    assert src["dvc_md5"] in text and commit in text

    second = cli.build("recipe.yaml", "steps.raw.inputs.data.dvc.rev=v2", env=env)
    assert cli.statuses(second) == {"raw": "built"}
    assert "source data changed" in second["by_step"]["raw"]["reasons"]
    v2 = second["by_step"]["raw"]["path"]
    assert v2 != v1
    assert json.loads(Path(v2, "table.json").read_text())["rows"] == 4
    src2 = json.loads(cli("show", v2, "--json", env=env).stdout)["inputs"]["data"]
    assert src2["dvc_md5"] == dvc_md5(registry, "v2", env) != src["dvc_md5"]
    assert src2["commit"] == run(["git", "rev-parse", "v2"], registry, env)

    diff = json.loads(cli("diff", v1, v2, "--json", env=env).stdout)
    assert not diff["identical"]
    assert diff["causes"] == [f"raw <- data: source data/table.csv: rev: v1 -> v2; content {src['hash']} -> "
                              f"{src2['hash']}"], diff
    effects = " ".join(diff["effects"])
    assert "raw: rows: 2 added, 1 removed (3 -> 4)" in effects, diff

    # The DVC data is gone from the repo: both revisions still build from the store, without reading DVC.
    shutil.rmtree(registry / ".dvc" / "cache")
    (registry / "data" / "table.csv").unlink()
    again = cli.build(env=env)
    assert cli.statuses(again) == {"raw": "cached"} and again["by_step"]["raw"]["path"] == v1
    again2 = cli.build("recipe.yaml", "steps.raw.inputs.data.dvc.rev=v2", env=env)
    assert cli.statuses(again2) == {"raw": "cached"} and again2["by_step"]["raw"]["path"] == v2


def test_rev_left_out_means_head_and_content_decides(project, cli, registry, env):
    project.write("recipe.yaml", recipe("{dvc: {repo: ../registry, path: data/table.csv, rev: v2}}"))
    v2 = cli.build(env=env)["by_step"]["raw"]["path"]
    project.write("recipe.yaml", recipe("{dvc: {repo: ../registry, path: data/table.csv}}"))
    head = cli.build(env=env)
    assert cli.statuses(head) == {"raw": "cached"} and head["by_step"]["raw"]["path"] == v2
    src = json.loads(cli("show", v2, "--json", env=env).stdout)["inputs"]["data"]
    assert src["rev"] == "v2"  # lineage of the first build of this artifact


def test_hash_pin_is_checked(project, cli, registry, env):
    project.write("recipe.yaml", V1_RECIPE)
    v1 = cli.build(env=env)["by_step"]["raw"]["path"]
    digest = json.loads(cli("show", v1, "--json", env=env).stdout)["inputs"]["data"]["hash"]
    pinned = recipe(f"{{dvc: {{repo: ../registry, path: data/table.csv, rev: REV}}, hash: {digest}}}")
    project.write("recipe.yaml", pinned.replace("REV", "v1"))
    assert cli.statuses(cli.build(env=env)) == {"raw": "cached"}
    project.write("recipe.yaml", pinned.replace("REV", "v2"))
    proc = cli("build", "recipe.yaml", check=5, env=env)
    assert digest in proc.stderr and "Traceback" not in proc.stderr


def test_data_missing_from_the_dvc_cache_says_dvc_pull(project, cli, registry, env):
    shutil.rmtree(registry / ".dvc" / "cache")
    project.write("recipe.yaml", V1_RECIPE)
    proc = cli("build", "recipe.yaml", check=2, env=env)
    assert "dvc pull" in proc.stderr and "remote" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("source, expected", [
    ("{dvc: {repo: ../registry, path: data/table.csv, rev: v9}}", ["unknown rev 'v9'", "v1", "v2"]),
    ("{dvc: {repo: ../registry, path: data/tabel.csv, rev: v1}}",
     ["'data/tabel.csv' is not tracked by DVC", "did you mean 'data/table.csv'"]),
    ("{dvc: {repo: ../registry, path: data/table.csv.dvc, rev: v1}}", ["not tracked by DVC", "in git"]),
    ("{dvc: {repo: ../registry, path: data, rev: v1}}", ["folder holding the DVC-tracked paths data/table.csv"]),
    ("{dvc: {repo: ../plain, path: data/table.csv}}", ["is not a git repository"]),
    ("{dvc: {repo: ../gitonly, path: data/table.csv}}", ["not a DVC project", "dvc init"]),
    ("{dvc: {repo: ../registyr, path: data/table.csv}}",
     ["key 'inputs.data.dvc.repo'", "does not exist", "did you mean '../registry'"]),
    ("{dvc: {repo: ../registry, path: data/table.csv, revision: v1}}",
     ["key 'inputs.data.dvc.revision'", "did you mean 'rev'"]),
    ("{dvc: {repo: ../registry, rev: v1}}", ["key 'inputs.data.dvc.path'", "needs `path:`"]),
    ("{dvc: {repo: ../registry, path: data/table.csv, rev: 2}}", ["key 'inputs.data.dvc.rev'", "quote it"]),
    ("{dvc: ../registry}", ["key 'inputs.data.dvc'", "a mapping"]),
])
def test_errors_exit_2_with_the_fix(project, cli, registry, env, tmp_path, source, expected):
    (tmp_path / "plain").mkdir()
    gitonly = tmp_path / "gitonly"
    gitonly.mkdir()
    run(["git", "init", "-q"], gitonly, env)
    run(["git", "-c", "user.email=t@example.com", "-c", "user.name=T", "commit", "-q", "--allow-empty", "-m", "x"],
        gitonly, env)
    project.write("recipe.yaml", recipe(source))
    proc = cli("build", "recipe.yaml", check=2, env=env)
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    for text in expected:
        assert text in proc.stderr, proc.stderr
    assert not (cli.store / "objects").exists() or not any((cli.store / "objects").glob("*-dvc-*"))
