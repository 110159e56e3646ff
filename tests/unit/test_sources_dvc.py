"""DVC sources in-process: the fixed-output key is decided by DVC's md5, not by the revision that named it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelbuild.errors import RecipeError, UsageError
from modelbuild.recipe import Source, check_recipe
from modelbuild.sources_dvc import dvc_key, is_url, normalise_repo, resolve_dvc
from modelbuild.store import Store

DVC = Path(sys.executable).parent / "dvc"


def _env(root: Path) -> dict:
    """DVC and git confined to `root`: no user config, no shared caches, no analytics."""
    return {"DVC_NO_ANALYTICS": "1", "HOME": str(root / "home"), "DVC_SITE_CACHE_DIR": str(root / "site"),
            "DVC_GLOBAL_CONFIG_DIR": str(root / "dvc-global"), "DVC_SYSTEM_CONFIG_DIR": str(root / "dvc-system"),
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


def _run(cmd: list, cwd: Path) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def registry_template(tmp_path_factory):
    """Tags: v1 (3 rows), v1-docs (only a README changed: the same data), v2 (a row changed, one added)."""
    pytest.importorskip("dvc.api")
    root = tmp_path_factory.mktemp("dvc-template")
    repo = root / "registry"
    repo.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in _env(root).items():
            mp.setenv(name, value)
        _run(["git", "init", "-q"], repo)
        _run(["git", "config", "user.email", "test@example.com"], repo)
        _run(["git", "config", "user.name", "Test"], repo)
        _run([DVC, "init", "-q"], repo)
        _run([DVC, "config", "core.analytics", "false"], repo)
        (repo / "data").mkdir()

        def commit(tag):
            _run(["git", "add", "-A"], repo)
            _run(["git", "commit", "-q", "-m", tag], repo)
            _run(["git", "tag", tag], repo)

        (repo / "data" / "table.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
        _run([DVC, "add", "-q", "data/table.csv"], repo)
        commit("v1")
        (repo / "README").write_text("docs only\n")
        commit("v1-docs")
        (repo / "data" / "table.csv").write_text("a,b\n1,2\n3,40\n5,6\n7,8\n")
        _run([DVC, "add", "-q", "data/table.csv"], repo)
        commit("v2")
    return repo


@pytest.fixture
def dvc_env(tmp_path, monkeypatch):
    for name, value in _env(tmp_path).items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def registry(registry_template, tmp_path, dvc_env):
    """A fresh copy of the repo for each test, so a test may change or damage it."""
    repo = tmp_path / "registry"
    shutil.copytree(registry_template, repo, symlinks=True)
    return repo


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store")
    yield s
    s.close()


def source(rev=None, path="data/table.csv", repo="registry") -> Source:
    spec = {"repo": repo, "path": path}
    if rev:
        spec["rev"] = rev
    return Source("dvc", {"dvc": spec})


def test_key_depends_on_repo_path_and_md5_only():
    k = dvc_key("/r", "data/t.csv", "0" * 32)
    assert k == dvc_key("/r", "data/t.csv", "0" * 32) and len(k) == 32
    assert k != dvc_key("/r", "data/t.csv", "1" * 32)
    assert k != dvc_key("/r", "data/u.csv", "0" * 32)
    assert k != dvc_key("/other", "data/t.csv", "0" * 32)


def test_repo_normalisation(tmp_path):
    (tmp_path / "recipes").mkdir()
    assert normalise_repo("../registry", tmp_path / "recipes") == str((tmp_path / "registry").resolve())
    assert normalise_repo(str(tmp_path / "registry"), tmp_path) == normalise_repo("registry", tmp_path)
    assert normalise_repo("https://github.com/org/data.git/", tmp_path) == "https://github.com/org/data.git"
    assert is_url("git@github.com:org/data.git") and is_url("ssh://host/x") and is_url("file:///srv/x")
    assert not is_url("../registry") and not is_url("/abs/path") and not is_url("C_drive/x")


def test_same_data_at_two_revs_is_one_artifact_fetched_once(registry, store, tmp_path):
    v1 = resolve_dvc(source("v1"), store, tmp_path)
    docs = resolve_dvc(source("v1-docs"), store, tmp_path)
    assert v1.path == docs.path and v1.digest == docs.digest
    assert v1.path.read_text() == "a,b\n1,2\n3,4\n5,6\n"
    assert v1.lineage["commit"] != docs.lineage["commit"]
    assert v1.lineage["dvc_md5"] == docs.lineage["dvc_md5"]
    assert len(store.artifacts()) == 1
    v2 = resolve_dvc(source("v2"), store, tmp_path)
    assert v2.digest != v1.digest and v2.lineage["dvc_md5"] != v1.lineage["dvc_md5"]
    assert len(store.artifacts()) == 2


def test_lineage_records_rev_commit_dvc_md5_and_hash(registry, store, tmp_path):
    got = resolve_dvc(source("v1"), store, tmp_path)
    commit = _run(["git", "rev-parse", "v1"], registry)
    dvc_file = _run(["git", "show", "v1:data/table.csv.dvc"], registry)
    md5 = next(line.split(":", 1)[1].strip() for line in dvc_file.splitlines() if "md5:" in line)
    assert got.lineage == {"kind": "dvc", "repo": str(registry.resolve()), "path": "data/table.csv", "rev": "v1",
                           "commit": commit, "dvc_md5": md5, "hash": got.digest,
                           "artifact": store.rel(got.path.parent)}
    meta = store.lookup(dvc_key(str(registry.resolve()), "data/table.csv", md5))[1]
    assert meta["source_hash"] == got.digest and meta["dvc_md5"] == md5


def test_rev_left_out_is_head(registry, store, tmp_path):
    head = resolve_dvc(source(), store, tmp_path)
    assert head.lineage["rev"] is None
    assert head.lineage["commit"] == _run(["git", "rev-parse", "v2"], registry)
    assert head.digest == resolve_dvc(source("v2"), store, tmp_path).digest


def test_stored_data_is_not_read_from_dvc_again(registry, store, tmp_path):
    first = resolve_dvc(source("v1"), store, tmp_path)
    shutil.rmtree(registry / ".dvc" / "cache")  # and the workspace copy: DVC has nothing left to give
    (registry / "data" / "table.csv").unlink()
    again = resolve_dvc(source("v1"), store, tmp_path)
    assert again.path == first.path and again.digest == first.digest
    with pytest.raises(UsageError, match="dvc pull"):
        resolve_dvc(source("v2"), Store(tmp_path / "other-store"), tmp_path)


def test_not_fetched_when_fetch_is_off(registry, store, tmp_path):
    assert resolve_dvc(source("v1"), store, tmp_path, fetch=False) is None
    assert not store.exists()  # a dry run creates no store
    resolve_dvc(source("v1"), store, tmp_path)
    assert resolve_dvc(source("v1"), store, tmp_path, fetch=False) is not None


def test_a_dvc_tracked_folder(registry, store, tmp_path):
    (registry / "images").mkdir()
    (registry / "images" / "a.txt").write_text("A")
    (registry / "images" / "sub").mkdir()
    (registry / "images" / "sub" / "b.txt").write_text("B")
    _run([DVC, "add", "-q", "images"], registry)
    _run(["git", "add", "-A"], registry)
    _run(["git", "commit", "-q", "-m", "images"], registry)
    got = resolve_dvc(source(path="images"), store, tmp_path)
    assert got.lineage["dvc_md5"].endswith(".dir")
    assert got.path.is_dir() and (got.path / "sub" / "b.txt").read_text() == "B"
    assert sorted(p.name for p in got.path.iterdir()) == ["a.txt", "sub"]
    one = resolve_dvc(source(path="images/sub/b.txt"), store, tmp_path)  # a file inside a tracked folder
    assert one.path.read_text() == "B" and one.lineage["dvc_md5"] == "9d5ed678fe57bcca610140957afab571"
    with pytest.raises(UsageError, match="inside the DVC-tracked folder images.*`path: images`"):
        resolve_dvc(source(path="images/sub"), store, tmp_path)


def test_damaged_dvc_cache_is_refused(registry, store, tmp_path):
    from modelbuild.errors import HashMismatch
    dvc_file = _run(["git", "show", "v1:data/table.csv.dvc"], registry)
    md5 = next(line.split(":", 1)[1].strip() for line in dvc_file.splitlines() if "md5:" in line)
    cached = registry / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    cached.chmod(0o644)
    cached.write_text("a,b\n9,9\n")
    with pytest.raises(HashMismatch, match="does not match the md5 DVC recorded"):
        resolve_dvc(source("v1"), store, tmp_path)
    assert not store.artifacts()


def test_errors(registry, store, tmp_path):
    with pytest.raises(UsageError, match=r"unknown rev 'v1-doc' \(did you mean 'v1-docs'\?\).*the repo has tags "):
        resolve_dvc(source("v1-doc"), store, tmp_path)
    with pytest.raises(UsageError, match="not tracked by DVC.*did you mean 'data/table.csv'"):
        resolve_dvc(source("v1", path="data/table.cvs"), store, tmp_path)
    (tmp_path / "plain").mkdir()
    with pytest.raises(UsageError, match="not a git repository"):
        resolve_dvc(source(repo="plain"), store, tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        resolve_dvc(source(repo="nowhere"), store, tmp_path)


def test_a_git_url_is_cloned_and_the_data_comes_from_its_dvc_remote(registry, store, tmp_path):
    _run([DVC, "remote", "add", "-d", "-q", "storage", tmp_path / "dvc-remote"], registry)
    _run([DVC, "push", "-q", "--all-tags"], registry)
    _run(["git", "commit", "-q", "-am", "remote"], registry)
    _run(["git", "tag", "v2-remote"], registry)
    shutil.rmtree(registry / ".dvc" / "cache")  # the data can only come from the remote
    url = f"file://{registry}"
    got = resolve_dvc(source("v2-remote", repo=url), store, tmp_path)
    assert got.path.read_text() == "a,b\n1,2\n3,40\n5,6\n7,8\n"
    assert got.lineage["repo"] == url and got.lineage["commit"] == _run(["git", "rev-parse", "v2-remote"], registry)
    with pytest.raises(UsageError, match=r"unknown rev 'v2-remot' \(did you mean 'v2-remote'\?\)"):
        resolve_dvc(source("v2-remot", repo=url), store, tmp_path)
    with pytest.raises(UsageError, match="cannot clone"):
        resolve_dvc(source("v1", repo=f"file://{tmp_path}/nowhere"), store, tmp_path)


def test_dvc_not_installed(monkeypatch, store, tmp_path):
    monkeypatch.setitem(sys.modules, "dvc", None)
    monkeypatch.setitem(sys.modules, "dvc.api", None)
    with pytest.raises(UsageError, match=r"pip install 'modelbuild\[dvc\]'"):
        resolve_dvc(source("v1"), store, tmp_path)


def check(tmp_path, src):
    (tmp_path / "registry").mkdir(exist_ok=True)
    data = {"steps": {"raw": {"builder": "ingest", "inputs": {"data": src}}}}
    return check_recipe(data, tmp_path / "recipe.yaml").steps["raw"].inputs["data"]


def test_recipe_check_normalises_the_spec(tmp_path):
    got = check(tmp_path, {"dvc": {"repo": "registry", "path": "/data/t.csv/", "rev": "v1"}, "hash": "a" * 32})
    assert got == Source("dvc", {"dvc": {"repo": "registry", "path": "data/t.csv", "rev": "v1"}}, "a" * 32)
    assert check(tmp_path, {"dvc": {"repo": "https://example.com/r.git", "path": "x"}}).spec == \
        {"dvc": {"repo": "https://example.com/r.git", "path": "x"}}


@pytest.mark.parametrize("src, key, text", [
    ({"dvc": "registry"}, "inputs.data.dvc", "a mapping"),
    ({"dvc": {"repo": "registry", "path": "x", "rve": "v1"}}, "inputs.data.dvc.rve", "did you mean 'rev'"),
    ({"dvc": {"path": "x"}}, "inputs.data.dvc.repo", "needs `repo:`"),
    ({"dvc": {"repo": "registry", "path": 3}}, "inputs.data.dvc.path", "needs `path:`"),
    ({"dvc": {"repo": "registry", "path": "../x"}}, "inputs.data.dvc.path", "without '..'"),
    ({"dvc": {"repo": "registry", "path": "x", "rev": 1.5}}, "inputs.data.dvc.rev", "quote it"),
    ({"dvc": {"repo": "regsitry", "path": "x"}}, "inputs.data.dvc.repo", "does not exist"),
    ({"dvc": {"repo": "registry"}, "path": "x"}, "inputs.data.path", "inside `dvc:`"),
])
def test_recipe_check_errors(tmp_path, src, key, text):
    with pytest.raises(RecipeError) as info:
        check(tmp_path, src)
    assert info.value.key == key and text in str(info.value), str(info.value)
