"""Sources and outputs that are not plain files, through the real CLI.

A source is hashed by its content wherever a symbolic link leads, or refused (exit 2) when it has no
content a hash can pin: a FIFO, a socket, a device, a kernel pseudo file, a dangling link or a link loop.
An artifact keeps a link only when it points inside the artifact; a link out of it, a dangling link or a
special file in a step's output fails the step (exit 1) and nothing is committed.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

LIST_SOURCE = """
name: odd
steps:
  use:
    builder: command
    inputs: {data: {path: DATA}}
    params: {cmd: 'ls "$MB_IN_DATA" > "$MB_OUT/listing" 2>/dev/null || echo one > "$MB_OUT/listing"'}
"""


def source_recipe(project, data: str) -> None:
    project.write("recipe.yaml", LIST_SOURCE.replace("DATA", data))


def artifacts(cli) -> int:
    db = cli.store / "trace.sqlite"
    return sqlite3.connect(db).execute("SELECT count(*) FROM trace").fetchone()[0] if db.exists() else 0


def refused(cli, *words: str) -> str:
    """Build, expect a recipe error (exit 2) naming the recipe, step and input and saying how to fix it."""
    proc = cli("build", "recipe.yaml", check=2, timeout=60)
    err = proc.stderr
    assert "Traceback" not in err and err.startswith("error: "), err
    assert "recipe.yaml" in err and "step 'use'" in err and "inputs.data" in err, err
    for word in words:
        assert word in err, err
    assert artifacts(cli) == 0
    return err


# ---- sources: links are followed ----------------------------------------------------------------

def test_editing_the_target_of_a_link_in_a_source_folder_rebuilds(project, cli):
    (project / "data").mkdir()
    project.write("elsewhere/real.txt", "one\n")
    (project / "data" / "link.txt").symlink_to("../elsewhere/real.txt")
    source_recipe(project, "data")
    cli.build()
    project.write("elsewhere/real.txt", "two\n")
    second = cli.build()
    assert second["by_step"]["use"]["status"] == "built"
    assert second["by_step"]["use"]["reasons"] == ["source data changed"]
    assert cli.build()["by_step"]["use"]["status"] == "cached"


def test_a_link_to_a_folder_in_a_source_folder_is_hashed_by_its_files(project, cli):
    project.write("shared/part.csv", "a\n")
    (project / "data").mkdir()
    (project / "data" / "parts").symlink_to("../shared", target_is_directory=True)
    source_recipe(project, "data")
    cli.build()
    project.write("shared/part.csv", "b\n")
    assert cli.build()["by_step"]["use"]["reasons"] == ["source data changed"]


def test_a_source_that_is_a_link_to_a_folder_sees_edits_through_its_links(project, cli):
    project.write("other/inner.txt", "1\n")
    (project / "real").mkdir()
    (project / "real" / "alias.txt").symlink_to("../other/inner.txt")
    (project / "data").symlink_to("real", target_is_directory=True)
    source_recipe(project, "data")
    cli.build()
    project.write("other/inner.txt", "2\n")
    assert cli.build()["by_step"]["use"]["status"] == "built"


def test_a_link_and_a_copy_of_its_target_hash_alike(project, cli):
    project.write("real.txt", "same\n")
    (project / "data").mkdir()
    (project / "data" / "f").symlink_to("../real.txt")
    source_recipe(project, "data")
    first = cli("plan", "recipe.yaml", "--json").stdout
    (project / "data" / "f").unlink()
    project.write("data/f", "same\n")
    assert cli("plan", "recipe.yaml", "--json").stdout == first


def test_editing_a_links_target_during_the_build_fails_the_step(project, cli):
    project.write("elsewhere/real.txt", "one\n")
    (project / "data").mkdir()
    (project / "data" / "link.txt").symlink_to("../elsewhere/real.txt")
    project.write("recipe.yaml", """
        name: odd
        steps:
          use:
            builder: command
            inputs: {data: {path: data}}
            params: {cmd: 'sleep 4; ls "$MB_IN_DATA" > "$MB_OUT/listing"'}
    """)
    proc = cli.popen("build", "recipe.yaml", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jobs = cli.store / "tmp" / "jobs"
    deadline = time.time() + 60
    while not (jobs.is_dir() and any(jobs.iterdir())) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    project.write("elsewhere/real.txt", "two, longer\n")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "source input 'data'" in err and "changed while the step was building" in err, err
    assert artifacts(cli) == 0


# ---- sources: what cannot be hashed is refused ------------------------------------------------------

def test_a_dangling_link_in_a_source_folder_is_refused(project, cli):
    (project / "data").mkdir()
    (project / "data" / "gone.txt").symlink_to("../nowhere.txt")
    source_recipe(project, "data")
    refused(cli, "gone.txt", "does not exist")


def test_a_link_loop_in_a_source_folder_is_refused(project, cli):
    (project / "data").mkdir()
    (project / "data" / "a").symlink_to("b")
    (project / "data" / "b").symlink_to("a")
    source_recipe(project, "data")
    refused(cli, "loop")


def test_a_link_to_a_folder_that_holds_it_is_refused(project, cli):
    project.write("data/x.txt", "x\n")
    (project / "data" / "again").symlink_to("..", target_is_directory=True)
    source_recipe(project, "data")
    refused(cli, "again", "loop")


def test_a_fifo_source_is_refused_without_hanging(project, cli):
    os.mkfifo(project / "pipe")
    source_recipe(project, "pipe")
    refused(cli, "named pipe", "regular file")


def test_a_fifo_inside_a_source_folder_is_refused_without_hanging(project, cli):
    project.write("data/x.txt", "x\n")
    os.mkfifo(project / "data" / "pipe")
    source_recipe(project, "data")
    refused(cli, "pipe", "named pipe")


def test_a_socket_source_is_refused(project, cli):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(project / "sock"))
        source_recipe(project, "sock")
        refused(cli, "socket", "regular file")


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_a_device_source_is_refused(project, cli, device):
    source_recipe(project, device)
    refused(cli, device, "character device", "regular file")


def test_a_link_to_a_device_in_a_source_folder_is_refused(project, cli):
    project.write("data/x.txt", "x\n")
    (project / "data" / "zeros").symlink_to("/dev/zero")
    source_recipe(project, "data")
    refused(cli, "zeros", "character device")


@pytest.mark.skipif(not Path("/proc/version").is_file(), reason="no /proc")
def test_a_proc_file_source_is_refused(project, cli):
    source_recipe(project, "/proc/version")
    refused(cli, "/proc/version", "pseudo file system", "cat /proc/version >")


# ---- DVC sources: a symlinked DVC cache is copied, not linked into the store --------------------------

@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_dvc_source_from_a_linked_cache_is_stored_as_its_own_copy(project, cli, tmp_path, link):
    pytest.importorskip("dvc.api")
    dvc = Path(sys.executable).parent / "dvc"
    repo = tmp_path / "registry"
    env = {"DVC_NO_ANALYTICS": "1", "HOME": str(tmp_path / "home"), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "a.txt").write_text("alpha\n")
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "config", "cache.type", link],
                [dvc, "add", "-q", "data"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "data"]):
        subprocess.run([str(c) for c in cmd], cwd=repo, env={**os.environ, **env}, check=True, capture_output=True)
    assert (repo / "data" / "a.txt").is_symlink() == (link == "symlink")
    project.write("recipe.yaml", LIST_SOURCE.replace("{path: DATA}", "{dvc: {repo: ../registry, path: data}}"))
    cli.build(env=env)
    stored = [p for p in (cli.store / "objects").iterdir() if p.name.endswith("-dvc-data")]
    assert len(stored) == 1
    copy = stored[0] / "data" / "a.txt"
    assert not copy.is_symlink() and copy.stat().st_nlink <= 2  # its own file and the store's shared link
    shutil.rmtree(repo / ".dvc" / "cache")
    assert copy.read_text() == "alpha\n"
    cli("verify", env=env)


# ---- outputs -------------------------------------------------------------------------------------

STEPS = """
import os
from pathlib import Path

def write(ctx):
    (ctx.out / "model.bin").write_text("weights")
    (ctx.out / "sub").mkdir()
    kind = ctx.params["kind"]
    if kind == "inside":
        os.symlink("../model.bin", ctx.out / "sub" / "latest")
    elif kind == "absolute":
        os.symlink(ctx.params["target"], ctx.out / "sub" / "latest")
    elif kind == "escaping":
        os.symlink("../../../outside.txt", ctx.out / "sub" / "latest")
    elif kind == "dangling":
        os.symlink("../missing.bin", ctx.out / "sub" / "latest")
    elif kind == "fifo":
        os.mkfifo(ctx.out / "sub" / "latest")
"""


def output_recipe(project, kind: str, target: str = "") -> None:
    project.write("steps.py", STEPS)
    project.write("recipe.yaml", f"""
        name: odd
        steps:
          make:
            builder: python
            params: {{function: "steps:write", kind: {kind}, target: "{target}"}}
    """)


def test_a_link_inside_an_artifact_is_kept_and_verified(project, cli):
    output_recipe(project, "inside")
    path = Path(cli.build()["by_step"]["make"]["path"])
    assert (path / "sub" / "latest").is_symlink()
    assert (path / "sub" / "latest").read_text() == "weights"
    cli("verify")


@pytest.mark.parametrize("kind", ["absolute", "escaping", "dangling", "fifo"])
def test_an_output_link_out_of_the_artifact_or_a_special_file_fails_the_step(project, cli, kind):
    project.write("outside.txt", "mine\n")
    output_recipe(project, kind, str(project / "outside.txt"))
    result = cli("build", "recipe.yaml", check=1, timeout=120)
    err = result.stderr
    assert "Traceback" not in err and "step 'make'" in err and "sub/latest" in err, err
    assert "copy" in err.lower(), err
    assert artifacts(cli) == 0
    assert not [p for p in (cli.store / "objects").iterdir() if p.name.endswith("-make")]
    assert (project / "outside.txt").read_text() == "mine\n"
