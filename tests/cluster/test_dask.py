"""`build --executor dask://...`: steps and trials on a Dask cluster give what a local build gives."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import psutil
import pytest

from tests.cluster.conftest import dask_url, on_cluster, workers
from tests.conftest import REPO, Cli

pytest.importorskip("distributed")

TWO = """
name: demo
steps:
  prepare:
    builder: command
    params: {{cmd: 'echo pear > "$MB_OUT/fruit.txt"'}}
  train:
    builder: command
    inputs: [prepare]
    {resources}
    params: {{cmd: 'sleep {sleep}; cat "$MB_IN_PREPARE/fruit.txt" > "$MB_OUT/model.txt"; echo done >> "$MB_OUT/model.txt"'}}
"""

SEARCH = """
name: search
steps:
  f:
    builder: python
    params: {function: "steps:f", x: 0.0, y: 0.0}
  tuned:
    builder: tune
    params:
      target: f
      space: {x: {choice: [0.0, 0.25, 0.5, 0.75]}, y: {choice: [0.1, 0.2]}}
      objective: {metric: loss}
      optimizer: grid
      num_workers: 4
"""

STEPS = """
import json
import time


def f(ctx):
    time.sleep(0.5)
    loss = (ctx.params["x"] - 0.3) ** 2 + ctx.params["y"]
    (ctx.out / "metrics.json").write_text(json.dumps({"loss": loss}))
"""


def two(resources: str = "", sleep: float = 0) -> str:
    return TWO.format(resources=resources, sleep=sleep)


def artifacts(store: Path) -> dict:
    """Every artifact file's bytes and mode (the lineage beside each, which says when and where, left out)."""
    from tests.cache.conftest import tree

    return {rel: v for rel, v in tree(store).items() if not rel.endswith("/.meta.json")}


def meta(store: Path, path: str) -> dict:
    """An artifact's lineage as the store's trace keeps it."""
    with sqlite3.connect(store / "trace.sqlite") as db:
        rows = db.execute("SELECT meta FROM trace WHERE path=?", (str(Path(path).relative_to(store)),)).fetchall()
    return json.loads(rows[0][0])


def test_resources_are_scheduling_not_key(cli):
    cli.project.write("recipe.yaml", two())
    plain = cli("plan", "recipe.yaml", "--json").stdout
    cli.project.write("recipe.yaml", two("resources: {cpus: 2, memory: 512MiB, gpus: 1}"))
    assert cli("plan", "recipe.yaml", "--json").stdout == plain
    cli.project.write("recipe.yaml", two("resources: {gpus: lots}"))
    bad = cli("plan", "recipe.yaml", check=2)
    assert "error:" in bad.stderr and "resources.gpus" in bad.stderr and "Traceback" not in bad.stderr


def test_steps_on_the_cluster_equal_a_local_build(cli, cluster, tmp_path):
    cli.project.write("recipe.yaml", two("resources: {memory: 1GB}"))
    local = Cli(cli.project, tmp_path / "local").build()
    missing = cli.build("recipe.yaml", "--executor", dask_url(cluster), check=1)
    assert "offered by no worker" in missing["by_step"]["train"]["error"]
    assert "dask worker" in missing["by_step"]["train"]["error"]
    cli.project.write("recipe.yaml", two())
    result = cli.build("recipe.yaml", "--executor", dask_url(cluster))
    assert [s["path"].split("/")[-1] for s in result["steps"]] == [s["path"].split("/")[-1] for s in local["steps"]]
    worker = meta(cli.store, result["by_step"]["train"]["path"])["worker"]
    assert worker in workers(cluster)
    assert f"({worker})" in cli("show", "demo:train").stdout  # and its name: 0 or 1 in a LocalCluster


def test_unreachable_scheduler_is_a_clear_usage_error(cli):
    cli.project.write("recipe.yaml", two())
    out = cli("build", "recipe.yaml", "--executor", "dask://127.0.0.1:9", check=2)
    assert "the Dask scheduler cannot be reached" in out.stderr and "Traceback" not in out.stderr
    out = cli("build", "recipe.yaml", "--executor", "dask:/nowhere", check=2)
    assert "dask://HOST:PORT" in out.stderr
    assert not cli.store.exists() or not list((cli.store / "objects").iterdir())


def test_a_search_spreads_over_the_workers(cli, cluster):
    cli.project.write("recipe.yaml", SEARCH)
    cli.project.write("steps.py", STEPS)
    result = cli.build("recipe.yaml", "--executor", dask_url(cluster))
    trials = json.loads((Path(result["by_step"]["tuned"]["path"]) / "trials.json").read_text())["trials"]
    assert len({t["key"] for t in trials}) == 8 and all(t["status"] == "ok" for t in trials)
    built_by = {meta(cli.store, str(cli.store / t["path"]))["worker"] for t in trials}
    assert built_by == workers(cluster)  # both workers built trials
    again = cli.build("recipe.yaml", "--executor", dask_url(cluster))
    assert set(cli.statuses(again).values()) == {"cached"}  # every trial built exactly once


def test_a_killed_worker_is_rescheduled_and_commits_once(cli, cluster, tmp_path):
    cli.project.write("recipe.yaml", two(sleep=4))
    build = cli.popen("build", "recipe.yaml", "--json", "--executor", dask_url(cluster), stdout=-1, stderr=-1, text=True)
    job, worker = running("sleep 4;")
    worker.kill()  # the Dask worker running the step, mid-step
    out, err = build.communicate(timeout=120)
    assert build.returncode == 0, err
    result = {s["step"]: s for s in json.loads(out)["steps"]}
    assert not job.is_running()  # the step's process died with its worker
    local = Cli(cli.project, tmp_path / "local").build()
    assert Path(result["train"]["path"]).name == Path(local["by_step"]["train"]["path"]).name  # byte-identical
    assert [p.name for p in (cli.store / "objects").iterdir() if p.name.endswith("-train")] == \
        [Path(result["train"]["path"]).name]
    with sqlite3.connect(cli.store / "trace.sqlite") as db:
        assert db.execute("SELECT count(*) FROM trace WHERE path LIKE '%-train'").fetchone()[0] == 1
    wait_for_workers(cluster, 2)


def test_ctrl_c_stops_the_cluster_jobs(cli, cluster):
    cli.project.write("recipe.yaml", two(sleep=60))
    build = cli.popen("build", "recipe.yaml", "--executor", dask_url(cluster), stdout=-1, stderr=-1, text=True)
    jobs = [running("sleep 60;")[0]]
    build.send_signal(signal.SIGINT)
    build.communicate(timeout=60)
    assert build.returncode == 130
    gone, alive = psutil.wait_procs(jobs, timeout=20)
    assert not alive, "the cluster still runs the interrupted job"
    assert not [p for p in (cli.store / "objects").iterdir() if p.name.endswith("-train")]


def test_a_build_waiting_on_the_cluster_leaves_the_cpu_to_it(cli, cluster):
    """While a step runs on the cluster the build only waits: its loop once spun on a core (distributed.wait
    needs a default client and failed at once), taking it from the workers beside it."""
    cli.project.write("recipe.yaml", two(sleep=8))
    build = cli.popen("build", "recipe.yaml", "--executor", dask_url(cluster), stdout=-1, stderr=-1, text=True)
    try:
        running("sleep 8;")
        client = psutil.Process(build.pid)
        before = client.cpu_times()
        time.sleep(3)
        after = client.cpu_times()
        busy = (after.user + after.system) - (before.user + before.system)
        assert busy < 0.6, f"the waiting build used {busy:.2f} s of CPU in 3 s"
    finally:
        out, err = build.communicate(timeout=120)
    assert build.returncode == 0, err


def test_shared_cache_mode(cli, cluster, keys, s3, tmp_path):
    """Workers with stores of their own: inputs substituted from S3, results pushed, the client substitutes."""
    secret, public = keys
    cli.project.write("recipe.yaml", two())
    local = Cli(cli.project, tmp_path / "local")
    local.build()
    stores = tmp_path / "workers"
    env = {"MODELBUILD_SUBSTITUTERS": s3, "MODELBUILD_TRUSTED_PUBLIC_KEYS": public, "MODELBUILD_PUSH_TO": s3,
           "MODELBUILD_SECRET_KEY_FILE": str(secret), "MODELBUILD_WORKER_STORE_TEMPLATE": f"{stores}/{{worker}}"}
    result = cli.build("recipe.yaml", "--executor", dask_url(cluster), "--cluster-store", "cache", env=env)
    assert cli.statuses(result) == {"prepare": "built", "train": "built"}
    assert artifacts(cli.store) == artifacts(local.store)  # the client's store holds what a local build makes
    built = {meta(cli.store, s["path"])["worker"] for s in result["steps"]}
    assert built <= workers(cluster)
    own = [p for p in stores.iterdir() if (p / "trace.sqlite").is_file()]
    assert own and all(p.name in {"0", "1"} for p in own)  # stores of their own, not the client's
    names = {o.name for w in own for o in (w / "objects").iterdir()}
    assert {Path(s["path"]).name for s in result["steps"]} <= names


@pytest.fixture(scope="module")
def income(cluster, tmp_path_factory):
    """The income recipe's data steps, built locally and on the cluster into two stores."""
    root = tmp_path_factory.mktemp("income")
    shutil.copytree(REPO / "recipes", root / "recipes")
    targets = ["-t", "profile_train", "-t", "profile_test"]
    local = Cli(root, root / "local")
    on_cluster = Cli(root, root / "cluster")
    return (local.build("recipes/income.yaml", *targets),
            on_cluster.build("recipes/income.yaml", *targets, "--executor", dask_url(cluster)), local, on_cluster)


@pytest.mark.slow(minutes=4)  # two builds of the income recipe's data steps
def test_income_on_the_cluster_equals_the_local_build(income):
    local, on_cluster, local_cli, cluster_cli = income
    assert set(on_cluster["by_step"]) == set(local["by_step"]) and len(local["steps"]) >= 8
    assert all(s["status"] == "built" for s in on_cluster["steps"])
    assert artifacts(cluster_cli.store) == artifacts(local_cli.store)


def running(marker: str) -> tuple[psutil.Process, psutil.Process]:
    """A process of a step (its command holds `marker`) once a cluster worker runs it, and that worker."""
    deadline = time.time() + 90
    while time.time() < deadline:
        found = on_cluster(marker)
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no cluster worker runs a process with {marker!r}")


def wait_for_workers(cluster, n: int) -> None:
    """The nanny restarts a killed worker: later tests start with both."""
    deadline = time.time() + 60
    while len(workers(cluster)) < n and time.time() < deadline:
        time.sleep(0.2)


@pytest.mark.slow  # a cluster of its own
def test_a_scheduler_that_goes_away_fails_clearly_and_the_next_build_resumes(cli):
    from distributed import LocalCluster

    cli.project.write("recipe.yaml", two(sleep=60))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as doomed:
        build = cli.popen("build", "recipe.yaml", "--json", "--executor", dask_url(doomed), stdout=-1, stderr=-1,
                          text=True)
        job, _ = running("sleep 60;")
    out, err = build.communicate(timeout=120)  # the cluster is gone
    assert build.returncode == 1, err
    failed = {s["step"]: s for s in json.loads(out)["steps"]}["train"]
    assert "went away" in failed["error"] and "build again" in failed["error"] and "Traceback" not in err
    psutil.wait_procs([job], timeout=20)
    assert not job.is_running()
    cli.project.write("recipe.yaml", two(sleep=0))  # the next build (local) keeps what was built
    again = cli.build("recipe.yaml")
    assert cli.statuses(again) == {"prepare": "cached", "train": "built"}
