"""The store survives what happens to real builds: kills, races, tampering, gc, nondeterminism."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time

import pytest

SLOW_PIPELINE = """
name: slow
steps:
  a:
    builder: command
    inputs: {data: {path: data.txt}}
    params: {cmd: 'echo a >> {counter}; for i in 1 2 3 4 5; do cat "$MB_IN_DATA" > "$MB_OUT/part$i"; sleep 0.05; done'}
  b:
    builder: command
    inputs: [a]
    params: {cmd: 'echo b >> {counter}; for i in 1 2 3; do cat "$MB_IN_A"/part* > "$MB_OUT/all$i"; sleep 0.05; done'}
  c:
    builder: python
    inputs: [a]
    params: {function: "steps:c", counter: "{counter}"}
  d:
    builder: command
    inputs: [b, c]
    params: {cmd: 'echo d >> {counter}; cat "$MB_IN_B/all1" "$MB_IN_C/c.txt" > "$MB_OUT/d.txt"'}
"""

STEPS = """
import time
def c(ctx):
    with open(ctx.params["counter"], "a") as f:
        f.write("c\\n")
    for i in range(4):
        (ctx.out / f"c{i}.bin").write_bytes(bytes(range(256)) * 4000)
        time.sleep(0.05)
    (ctx.out / "c.txt").write_text("c done")
"""


@pytest.fixture(autouse=True)
def _unsandboxed(monkeypatch):
    """These steps count their runs in a file outside their output, which a sandbox rightly hides."""
    monkeypatch.setenv("MODELBUILD_SANDBOX", "off")


def make(project, tmp_path):
    counter = tmp_path / "counter"
    project.write("recipe.yaml", SLOW_PIPELINE.replace("{counter}", str(counter)))
    project.write("steps.py", STEPS)
    project.write("data.txt", "payload\n" * 1000)
    return counter


def objects(cli):
    d = cli.store / "objects"
    return sorted(p.name for p in d.iterdir() if p.name != ".links") if d.exists() else []


def test_sigkill_at_random_points_never_leaves_a_partial_artifact(project, cli, tmp_path):
    make(project, tmp_path)
    reference = cli.build()
    expected = {s["step"]: os.path.basename(s["path"]) for s in reference["steps"]}
    rng = random.Random(1234)
    for trial in range(10):
        cli.store = tmp_path / f"store{trial}"
        proc = cli.popen("build", "recipe.yaml", "-j", "2", start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.15, 1.6))
        os.killpg(proc.pid, signal.SIGKILL)  # the build and its workers die mid-write
        proc.wait()
        if (cli.store / "trace.sqlite").exists():
            verify = cli("verify", check=None)
            assert verify.returncode == 0, f"trial {trial}: {verify.stderr}"
        result = cli.build()
        assert {s["step"]: os.path.basename(s["path"]) for s in result["steps"]} == expected, f"trial {trial}"
        assert not [p for p in (cli.store / "tmp").iterdir() if p.name not in ("jobs", "work")]
        cli("verify")


def test_concurrent_builds_build_each_key_once(project, cli, tmp_path):
    counter = make(project, tmp_path)
    procs = [cli.popen("build", "recipe.yaml", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outputs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(counter.read_text().split()) == ["a", "b", "c", "d"], "some step was built more than once"
    paths = {tuple(s["path"] for s in out["steps"]) for out in outputs}
    assert len(paths) == 1


def test_a_flipped_byte_is_reported_and_the_artifact_rebuilt(project, cli, tmp_path):
    counter = make(project, tmp_path)
    first = cli.build()
    victim = os.path.join(first["by_step"]["c"]["path"], "c2.bin")
    os.chmod(victim, 0o644)
    with open(victim, "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    verify = cli("verify", check=5)
    assert "c2.bin" in verify.stderr and "CORRUPT" in verify.stderr
    second = cli.build()
    assert second["by_step"]["c"]["status"] == "built"
    assert second["by_step"]["c"]["path"] == first["by_step"]["c"]["path"]
    assert counter.read_text().split().count("c") == 2
    cli("verify")
    assert open(victim, "rb").read()[100] == 100  # the rebuilt file is whole again


def test_gc_keeps_roots_and_tags_and_dry_run_removes_nothing(project, cli, tmp_path):
    make(project, tmp_path)
    first = cli.build()
    cli("tag", "keep-d", "slow:d")
    project.write("data.txt", "other\n")
    second = cli.build()
    old_a = os.path.basename(first["by_step"]["a"]["path"])
    before = objects(cli)
    dry = cli("gc", "--dry-run").stdout
    assert objects(cli) == before
    assert "would remove 0 artifacts" in dry  # the tag keeps d and, through it, a, b and c
    cli("tag", "keep-d", "--delete")
    dry = cli("gc", "--dry-run").stdout
    assert old_a in dry and objects(cli) == before
    cli("gc")
    after = objects(cli)
    assert old_a not in after
    assert {os.path.basename(s["path"]) for s in second["steps"]} <= set(after)
    assert set(cli.statuses(cli.build()).values()) == {"cached"}
    cli("verify")


def test_build_check_passes_on_deterministic_steps_and_names_files_that_differ(project, cli):
    project.write("recipe.yaml", """
        name: chk
        steps:
          same: {builder: command, params: {cmd: 'echo stable > $MB_OUT/x'}}
          noisy: {builder: command, params: {cmd: 'echo stable > $MB_OUT/x; date +%N > $MB_OUT/stamp'}}
    """)
    cli.build()
    result = cli.build("recipe.yaml", "--check", "--target", "same")
    assert result["by_step"]["same"]["reproducible"] is True
    result = cli.build("recipe.yaml", "--check", check=6)
    assert result["by_step"]["noisy"]["differences"] == ["stamp"]
    text = cli("build", "recipe.yaml", "--check", check=6).stderr
    assert "not reproducible" in text and "stamp" in text


def test_ctrl_c_interrupts_with_exit_130_and_keeps_nothing_partial(project, cli):
    project.write("recipe.yaml", """
        name: int
        steps:
          quick: {builder: command, params: {cmd: 'echo ok > $MB_OUT/ok'}}
          long: {builder: command, inputs: [quick], params: {cmd: 'echo start > $MB_OUT/part; sleep 30'}}
    """)
    # a CI runner may start us with SIGINT ignored (a background job): give the build the default handler
    proc = cli.popen("build", "recipe.yaml", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                     start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120  # generous: a loaded CI machine starts workers slowly
    while time.time() < deadline and not list((cli.store / "tmp").glob("*/out/part")):
        time.sleep(0.05)
    assert list((cli.store / "tmp").glob("*/out/part")), "the long step never started"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert [n.split("-", 1)[1] for n in objects(cli)] == ["quick"]
    assert not [p for p in (cli.store / "tmp").iterdir() if p.name not in ("jobs", "work")]
    conn = sqlite3.connect(cli.store / "trace.sqlite")
    assert conn.execute("SELECT count(*) FROM trace").fetchone()[0] == 1


def test_an_edited_lineage_record_is_damage_that_the_next_build_repairs(project, cli, tmp_path):
    make(project, tmp_path)
    first = cli.build()
    meta = os.path.join(first["by_step"]["a"]["path"], ".meta.json")
    os.chmod(meta, 0o644)
    with open(meta, "a") as f:
        f.write(" ")
    assert ".meta.json" in cli("verify", check=5).stderr
    plan = json.loads(cli("plan", "recipe.yaml", "--json").stdout)
    assert plan["steps"][0]["reasons"] == ["the stored artifact is damaged or missing: it will be moved aside and "
                                           "rebuilt"]
    assert cli.build()["by_step"]["a"]["status"] == "built"
    cli("verify")
