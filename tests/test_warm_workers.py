"""Warm workers (modelbuild/zygote.py): a job forked from a zygote behaves like a plain process of its own.

Each test drives a real zygote from a client process started here, and checks with psutil that nothing it
started is left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import Cli

from modelbuild import zygote

REPO = Path(__file__).resolve().parents[1]

JOB = """
import json, os, subprocess, sys, time
print(json.dumps({"pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0), "cwd": os.getcwd(),
                  "argv": sys.argv[1:], "env": os.environ.get("JOB_VAR"), "version": VERSION}), flush=True)
if sys.argv[1:] == ["sleep"]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print(json.dumps({"grandchild": child.pid}), flush=True)
    time.sleep(60)
raise SystemExit(int(sys.argv[1]) if sys.argv[1:] and sys.argv[1].isdigit() else 0)
"""


@pytest.fixture
def jobdir(tmp_path, monkeypatch):
    (tmp_path / "jobmod.py").write_text("VERSION = 1\n" + JOB)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO)]))
    monkeypatch.delenv(zygote.WARM_ENV, raising=False)
    yield tmp_path
    zygote.shutdown()


def records(path: Path) -> list[dict]:
    for _ in range(200):
        if path.exists() and path.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    return [json.loads(line) for line in path.read_text().splitlines()]


def descendants() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]


def start(jobdir: Path, *args: str, name: str = "out", **env) -> zygote.WarmProcess:
    return zygote.start("jobmod", list(args), env={**os.environ, **env}, cwd=str(jobdir),
                        output=str(jobdir / f"{name}.log"))


def test_each_job_is_its_own_process_with_its_env_cwd_log_and_exit_code(jobdir):
    first = start(jobdir, "0", name="a", JOB_VAR="first")
    assert first.wait(60) == 0
    second = start(jobdir, "3", name="b", JOB_VAR="second")
    assert second.wait(30) == 3
    a, b = records(jobdir / "a.log")[0], records(jobdir / "b.log")[0]
    assert a["pid"] != b["pid"] and a["pid"] == a["pgid"] == a["sid"]  # own session and process group
    assert (a["env"], b["env"], a["cwd"], b["argv"]) == ("first", "second", str(jobdir), ["3"])
    assert first.pid == a["pid"] and isinstance(second, zygote.WarmProcess) and second._plain is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_signal_reaches_the_jobs_whole_process_group(jobdir, sig):
    job = start(jobdir, "sleep")
    for _ in range(200):
        lines = records(jobdir / "out.log")
        if len(lines) == 2:
            break
        time.sleep(0.05)
    grandchild = psutil.Process(lines[1]["grandchild"])
    job.send_signal(sig)
    assert job.wait(10) == -sig
    gone, alive = psutil.wait_procs([grandchild], timeout=10)
    assert not alive


def test_an_edited_module_replaces_the_zygote(jobdir):
    assert start(jobdir, name="a").wait(60) == 0
    # the zygote imported jobmod's dependencies, not jobmod: make it import something we then edit
    (jobdir / "helper.py").write_text("X = 1\n")
    zygote.shutdown()
    assert zygote.start("jobmod", [], preload=("helper",), env=dict(os.environ), cwd=str(jobdir)).wait(60) == 0
    first = next(iter(zygote._ZYGOTES.values())).proc.pid
    time.sleep(0.01)
    (jobdir / "helper.py").write_text("X = 22\n")  # a new size and mtime
    job = zygote.start("jobmod", [], preload=("helper",), env=dict(os.environ), cwd=str(jobdir))
    assert job.wait(60) == 0
    assert job._plain is not None  # the stale zygote refused; this job ran as a plain process
    job = zygote.start("jobmod", [], preload=("helper",), env=dict(os.environ), cwd=str(jobdir))
    assert job.wait(60) == 0 and job._plain is None
    assert next(iter(zygote._ZYGOTES.values())).proc.pid != first


def test_a_killed_zygote_kills_its_jobs_and_is_restarted(jobdir):
    job = start(jobdir, "sleep")
    records(jobdir / "out.log")
    old = next(iter(zygote._ZYGOTES.values())).proc
    os.kill(old.pid, signal.SIGKILL)
    assert job.wait(10) == -signal.SIGKILL
    assert start(jobdir, "0", name="b").wait(60) == 0
    assert next(iter(zygote._ZYGOTES.values())).proc.pid != old.pid
    zygote.shutdown()
    assert not descendants()


def test_warm_off_runs_plain_processes(jobdir, monkeypatch):
    monkeypatch.setenv(zygote.WARM_ENV, "0")
    job = start(jobdir, "5")
    assert job.wait(60) == 5 and job._plain is not None and not zygote._ZYGOTES


CLIENT = """
import os, sys, time
from modelbuild import zygote
job = zygote.start("jobmod", ["sleep"], cwd=sys.argv[1], output=os.path.join(sys.argv[1], "out.log"))
while job.pid is None:
    job.poll(); time.sleep(0.05)
print(next(iter(zygote._ZYGOTES.values())).proc.pid, flush=True)
time.sleep(60)
"""


def test_the_zygote_and_its_jobs_exit_with_a_killed_client(jobdir):
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(jobdir)], stdout=subprocess.PIPE, text=True)
    zygote_pid = int(client.stdout.readline())
    lines = records(jobdir / "out.log")
    while len(lines) < 2:
        time.sleep(0.05)
        lines = records(jobdir / "out.log")
    started = [psutil.Process(zygote_pid), psutil.Process(lines[0]["pid"]), psutil.Process(lines[1]["grandchild"])]
    client.kill()
    client.wait()
    gone, alive = psutil.wait_procs(started, timeout=15)
    assert not alive


# ---- through the CLI: a build's jobs fork from zygotes ---------------------------------------------------
RECIPE = """
name: warm
steps:
  numbers:
    builder: python
    params: {function: "steps:numbers", n: 50}
  total:
    builder: python
    inputs: {numbers: numbers}
    params: {function: "steps:total"}
  slow:
    builder: python
    params: {function: "steps:slow"}
"""

STEPS = """
import os, subprocess, sys, time
from pathlib import Path


def parent():
    print("parent:", Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\\0", b" ").decode(), flush=True)


def numbers(ctx):
    parent()
    (ctx.out / "numbers.txt").write_text("\\n".join(str(i * i) for i in range(ctx.params["n"])))


def total(ctx):
    parent()
    text = (ctx.inputs["numbers"] / "numbers.txt").read_text()
    (ctx.out / "total.txt").write_text(str(sum(map(int, text.split()))))


def slow(ctx):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    Path(os.environ["MARK_DIR"], "started").write_text(f"{os.getpid()} {child.pid}")
    time.sleep(120)
"""


def marked(marker: str) -> list[psutil.Process]:
    """Processes started by the build under test (they carry its marker in their environment)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("WARM_TEST_MARK") == marker:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


@pytest.fixture
def warm_project(project, tmp_path):
    project.write("recipe.yaml", RECIPE)
    project.write("steps.py", STEPS)
    return project


def test_warm_and_cold_builds_give_the_same_artifacts_and_leave_nothing_running(warm_project, tmp_path):
    marker = os.urandom(8).hex()
    results, parents = {}, {}
    for mode in ("0", "1"):
        cli = Cli(warm_project, tmp_path / f"store-{mode}")
        env = {"MODELBUILD_WARM": mode, "MODELBUILD_SANDBOX": "off", "WARM_TEST_MARK": marker}
        results[mode] = cli.build("recipe.yaml", "-t", "total", "-j", "2", env=env)
        parents[mode] = cli("log", "warm:total").stdout
        assert not marked(marker)
    cold, warm = ({s: results[m]["by_step"][s]["path"].rsplit("/", 1)[1] for s in ("numbers", "total")}
                  for m in ("0", "1"))
    assert cold == warm  # the same content digests: byte-identical artifacts
    assert "modelbuild.zygote" not in parents["0"] and "modelbuild.zygote" in parents["1"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_signal_to_the_build_stops_its_jobs_and_zygotes(warm_project, tmp_path, sig):
    marker, marks = os.urandom(8).hex(), tmp_path / "marks"
    marks.mkdir()
    cli = Cli(warm_project, tmp_path / "store")
    env = {"MODELBUILD_SANDBOX": "off", "WARM_TEST_MARK": marker, "MARK_DIR": str(marks)}
    build = cli.popen("build", "recipe.yaml", "-t", "slow", env=env, start_new_session=True,
                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (marks / "started").exists() and time.time() < deadline:
        time.sleep(0.1)
    job, grandchild = map(int, (marks / "started").read_text().split())
    started = [psutil.Process(job), psutil.Process(grandchild)]
    assert "modelbuild.zygote" in " ".join(psutil.Process(job).parent().cmdline())
    os.kill(build.pid, sig)  # as Ctrl-C would, or the OOM killer
    assert build.wait(60) == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    gone, alive = psutil.wait_procs(started, timeout=30)
    assert not alive
    deadline = time.time() + 15
    while marked(marker) and time.time() < deadline:
        time.sleep(0.2)
    assert not marked(marker)
    assert not list((tmp_path / "store" / "objects").glob("*-slow"))
