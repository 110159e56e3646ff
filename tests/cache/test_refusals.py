"""A cache can never put a tampered, unsigned or escaping artifact into a store: each is refused with exit 5,
the reason named, and the store is left exactly as it was (here: empty)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3

import pytest

from modelbuild.cache.manifest import encode, sign


@pytest.fixture
def pushed(built, keys, tmp_path):
    """A cache with the recipe pushed by store A; returns (cache dir, the `prepare` step's key)."""
    secret, _ = keys
    cache = tmp_path / "cache"
    cache.mkdir()
    report = json.loads(built("push", "recipe.yaml", "--to", cache, "--secret-key-file", secret, "--json").stdout)
    key = next(p["key"] for p in report["pushed"] if p["path"].endswith("-prepare"))
    return cache, key


def _nothing_written(store) -> None:
    objects = store / "objects"
    assert not objects.exists() or sorted(os.listdir(objects)) in ([], [".links"])
    assert not (objects / ".links").exists() or os.listdir(objects / ".links") == []
    assert not (store / "tmp").exists() or [n for n in os.listdir(store / "tmp") if n not in ("jobs", "work")] == []
    if (store / "trace.sqlite").exists():
        with sqlite3.connect(store / "trace.sqlite") as db:
            assert db.execute("SELECT count(*) FROM trace").fetchone()[0] == 0
            assert db.execute("SELECT count(*) FROM artifacts").fetchone()[0] == 0
    assert not (store / "logs").exists() or os.listdir(store / "logs") == []


def _resigned(change):
    def tamper(manifest, secret):
        change(manifest)
        return sign({k: v for k, v in manifest.items() if k != "signatures"}, secret, "test key")
    return tamper


def _unsigned(manifest, secret):
    manifest.pop("signatures")
    return manifest


def _edited_after_signing(manifest, secret):
    manifest["meta"]["params"] = {"cmd": "echo something else"}
    return manifest


def _files(change):
    return _resigned(lambda m: m["files"].update(change(m["files"])))


def _first(files):
    return next(iter(files.values()))


CASES = {
    "unsigned": (_unsigned, "its manifest is unsigned"),
    "edited after signing": (_edited_after_signing, "does not match its content"),
    "a path with ..": (_files(lambda f: {"../../escape.txt": _first(f)}), "leads outside the artifact"),
    "an absolute path": (_files(lambda f: {"/tmp/escape.txt": _first(f)}), "leads outside the artifact"),
    "a link out of the artifact": (_resigned(lambda m: m["links"].update({"d/link": "../../../etc/passwd"})),
                                   "leads outside the artifact"),
    "an absolute link": (_resigned(lambda m: m["links"].update({"d/link": "/etc/passwd"})),
                         "leads outside the artifact"),
    "a wrong artifact digest": (_resigned(lambda m: m.update(digest="0" * 32)), "do not add up to the signed"),
    "another key's manifest": (_resigned(lambda m: m.update(key="f" * 32)), "is for key"),
}


def test_every_refusal_exits_5_names_the_reason_and_writes_nothing(pushed, keys, store_b, tmp_path):
    cache, key = pushed
    secret, public = keys
    manifest_file = cache / "manifests" / f"{key}.json"
    pristine = manifest_file.read_bytes()
    for case, (tamper, reason) in CASES.items():
        manifest_file.write_bytes(encode(tamper(json.loads(pristine), secret.read_text())))
        result = store_b.build("recipe.yaml", "--substituter", cache, "--trusted-public-key", public, check=5)
        error = result["by_step"]["prepare"]["error"]
        assert reason in error and key in error, (case, error)
        assert result["by_step"]["train"]["status"] == "skipped", case
        _nothing_written(store_b.store)


def test_a_changed_file_and_an_untrusted_key_are_refused(pushed, keys, store_b, cli):
    cache, key = pushed
    _, public = keys
    manifest = json.loads((cache / "manifests" / f"{key}.json").read_text())
    digest = manifest["files"]["fruit.txt"]["digest"]
    original = (cache / "files" / digest).read_bytes()
    (cache / "files" / digest).write_text("plum\n")
    result = store_b.build("recipe.yaml", "--substituter", cache, "--trusted-public-key", public, check=5)
    assert f"instead of the signed {digest}" in result["by_step"]["prepare"]["error"]
    _nothing_written(store_b.store)
    plain = store_b("build", "recipe.yaml", "--substituter", cache, "--trusted-public-key", public, check=5)
    assert plain.stderr.count("error:") == 1 and "Traceback" not in plain.stderr
    _nothing_written(store_b.store)
    (cache / "files" / digest).write_bytes(original)

    stranger = cli("key", "generate", "stranger-1", "-o", cli.project.parent / "stranger.secret").stdout.strip()
    result = store_b.build("recipe.yaml", "--substituter", cache, "--trusted-public-key", stranger, check=5)
    assert "'team-1', which is not a trusted public key (trusted: stranger-1)" in result["by_step"]["prepare"]["error"]
    _nothing_written(store_b.store)
    nobody = store_b.build("recipe.yaml", "--substituter", cache, check=5)
    assert "trusted: none" in nobody["by_step"]["prepare"]["error"]
    _nothing_written(store_b.store)


def test_a_cache_missing_a_file_leaves_nothing_and_the_step_is_built(pushed, keys, store_b):
    cache, key = pushed
    _, public = keys
    manifest = json.loads((cache / "manifests" / f"{key}.json").read_text())
    os.unlink(cache / "files" / manifest["files"]["run.sh"]["digest"])
    result = store_b.build("recipe.yaml", "--substituter", cache, "--trusted-public-key", public)
    assert store_b.statuses(result) == {"prepare": "built", "train": "substituted"}
    assert "not all its files" in result["stderr"]
    assert [n for n in os.listdir(store_b.store / "tmp") if n not in ("jobs", "work")] == []


def test_push_refuses_a_damaged_artifact(built, keys, tmp_path):
    secret, _ = keys
    path = built.store / built("path", "shared:prepare").stdout.strip()
    target = path / "fruit.txt"
    os.chmod(path, 0o755)
    os.chmod(target, 0o644)
    target.write_text("plum\n")
    proc = built("push", "shared:prepare", "--to", tmp_path / "cache", "--secret-key-file", secret, check=5)
    assert "does not match its digest" in proc.stderr and not (tmp_path / "cache" / "manifests").exists()
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
