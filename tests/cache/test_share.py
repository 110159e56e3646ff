"""Two stores share work through a cache: a directory and S3 (moto on 127.0.0.1), the CI scenario."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

import modelbuild.cache.manifest as manifest_mod

from .conftest import tree  # tests/cache/conftest.py


def _require(store_b, cache, public, *extra, check=0):
    return store_b.build("recipe.yaml", "--require-cached", "--substituter", cache, "--trusted-public-key", public,
                         *extra, check=check)


def test_key_generate_writes_a_private_secret_and_prints_the_public_key(cli, tmp_path):
    proc = cli("key", "generate", "ci-7")
    secret = cli.project / "ci-7.secret"
    name, _, b64 = proc.stdout.strip().partition(":")
    assert name == "ci-7" and len(b64) == 44
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert cli("key", "public", secret).stdout.strip() == proc.stdout.strip()
    again = cli("key", "generate", "ci-7", check=2)
    assert "exists" in again.stderr and "Traceback" not in again.stderr


def test_push_refuses_a_file_that_is_not_a_secret_key_before_writing_anything(built, tmp_path):
    bad = tmp_path / "bad.secret"
    bad.write_text("-----BEGIN PRIVATE KEY----- secret material\n")
    proc = built("push", "recipe.yaml", "--to", tmp_path / "cache", "--secret-key-file", bad, check=2)
    assert "is not a secret key" in proc.stderr and "secret material" not in proc.stderr
    assert not (tmp_path / "cache").exists()
    missing = built("push", "recipe.yaml", "--to", tmp_path / "cache", check=2)
    assert "--secret-key-file" in missing.stderr


def test_ci_clone_with_an_empty_store_substitutes_everything_from_a_directory(built, keys, store_b, tmp_path):
    secret, public = keys
    cache = tmp_path / "cache"
    cache.mkdir()
    pushed = json.loads(built("push", "recipe.yaml", "--to", cache, "--secret-key-file", secret, "--json").stdout)
    assert len(pushed["pushed"]) == 2 and pushed["present"] == []
    assert sorted(os.listdir(cache)) == ["files", "manifests"]
    assert len(os.listdir(cache / "files")) == 5  # fruit.txt = d/same.txt, run.sh, model.txt, two build logs

    result = _require(store_b, cache, public)
    assert store_b.statuses(result) == {"prepare": "substituted", "train": "substituted"}
    assert tree(built.store) == tree(store_b.store)  # byte-identical artifacts, modes, links, lineage records
    assert "building step train" in store_b("log", "shared:train").stdout  # the build log came along
    store_b("verify")
    assert store_b.statuses(store_b.build()) == {"prepare": "cached", "train": "cached"}

    again = json.loads(built("push", "recipe.yaml", "--to", cache, "--secret-key-file", secret, "--json").stdout)
    assert again["pushed"] == [] and len(again["present"]) == 2 and again["files"] == 0
    # store B never pushed there: it asks the cache, which has everything
    from_b = json.loads(store_b("push", "recipe.yaml", "--to", cache, "--secret-key-file", secret, "--json").stdout)
    assert from_b["pushed"] == [] and len(from_b["present"]) == 2


def test_require_cached_fails_with_exit_8_naming_the_step_no_cache_has(built, keys, store_b, tmp_path):
    secret, public = keys
    cache = tmp_path / "cache"
    cache.mkdir()
    built("push", "shared:prepare", "--to", cache, "--secret-key-file", secret)  # one artifact, not the recipe
    result = _require(store_b, cache, public, check=8)
    assert store_b.statuses(result)["prepare"] == "substituted"
    assert store_b.statuses(result)["train"] == "failed"
    assert "step 'train' is in no cache" in result["by_step"]["train"]["error"]
    plain = store_b("pull", "recipe.yaml", "--substituter", cache, "--trusted-public-key", public, check=8)
    assert "error: step 'train' is in no cache" in plain.stderr and "Traceback" not in plain.stderr
    # without --require-cached, the step no cache has is built
    assert store_b.statuses(store_b.build("recipe.yaml", "--substituter", cache, "--trusted-public-key",
                                          public))["train"] == "built"


def test_settings_from_environment_and_pyproject_and_a_dvc_remote_by_name(built, keys, store_b, tmp_path):
    secret, public = keys
    cache = tmp_path / "dvc-remote"
    cache.mkdir()
    env = {"MODELBUILD_SECRET_KEY_FILE": str(secret)}
    for cli in (built, store_b):
        (cli.project / ".dvc").mkdir()
        (cli.project / ".dvc" / "config").write_text(f"['remote \"shared\"']\n    url = {cache}\n")
    built("push", "recipe.yaml", "--to", "remote://shared", env=env)
    store_b.project.write("pyproject.toml", f"""
        [tool.modelbuild]
        substituters = ["remote://shared"]
        trusted-public-keys = ["{public}"]
        """)
    assert set(store_b.statuses(store_b.build("recipe.yaml", "--require-cached")).values()) == {"substituted"}
    assert set(store_b.statuses(store_b.build("recipe.yaml", "--no-substitute")).values()) == {"cached"}
    # an environment variable replaces the project's list: a manifest signed by a key not listed there is refused
    _, other = manifest_mod.generate_key("other-1")
    fresh = type(store_b)(store_b.project, tmp_path / "storeC")
    result = fresh.build("recipe.yaml", env={"MODELBUILD_TRUSTED_PUBLIC_KEYS": other}, check=5)
    assert "which is not a trusted public key (trusted: other-1)" in result["by_step"]["prepare"]["error"]
    assert [p for p in os.listdir(tmp_path / "storeC" / "objects") if p != ".links"] == []


def test_an_unreachable_cache_is_one_warning_and_the_build_goes_on(built, keys, store_b, tmp_path):
    _, public = keys
    result = store_b.build("recipe.yaml", "--substituter", tmp_path / "no-such-cache", "--trusted-public-key",
                           public)
    assert store_b.statuses(result) == {"prepare": "built", "train": "built"}
    assert result["stderr"].count("warning: the cache") == 1


@pytest.mark.slow  # four pushes at once: the heaviest test here
def test_concurrent_pushes_of_one_key_leave_one_whole_manifest(built, keys, store_b, tmp_path):
    secret, public = keys
    cache = tmp_path / "cache"
    cache.mkdir()
    procs = [built.popen("push", "recipe.yaml", "--to", cache, "--secret-key-file", secret,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(os.listdir(cache / "manifests")) == sorted(f"{k}.json" for k in _keys(built))
    assert not [n for n in os.listdir(cache / "files") + os.listdir(cache / "manifests") if n.startswith(".")]
    assert set(store_b.statuses(_require(store_b, cache, public)).values()) == {"substituted"}


def _keys(cli) -> list[str]:
    return [s["key"] for s in cli.build()["steps"]]


def test_two_stores_share_work_through_moto_s3(built, keys, store_b, s3):
    secret, public = keys
    pushed = json.loads(built("push", "recipe.yaml", "--to", s3, "--secret-key-file", secret, "--json").stdout)
    assert len(pushed["pushed"]) == 2
    result = _require(store_b, s3, public)
    assert store_b.statuses(result) == {"prepare": "substituted", "train": "substituted"}
    assert tree(built.store) == tree(store_b.store)
    again = json.loads(built("push", "recipe.yaml", "--to", s3, "--secret-key-file", secret, "--json").stdout)
    assert again["pushed"] == [] and again["files"] == 0


@pytest.mark.slow  # botocore and s3fs retry a dead endpoint for ~10 s; the directory case above runs always
def test_an_s3_cache_that_does_not_answer_degrades_to_building(built, keys, store_b):
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, public = keys
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_MAX_ATTEMPTS": "1"}  # fail fast: what is tested is the fallback, not the retries
    result = store_b.build("recipe.yaml", "--substituter", f"s3://b/c?endpointurl=http://127.0.0.1:{port}",
                           "--trusted-public-key", public, env=env)
    assert store_b.statuses(result) == {"prepare": "built", "train": "built"}
    assert result["stderr"].count("warning: the cache") == 1


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
