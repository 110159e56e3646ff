"""Training through the real CLI: ingest a CSV, split it, train a tabular model. Cached rebuilds, `build
--check`, a learning-rate change that rebuilds only the model, a SIGKILL mid-training that resumes to the same
bytes, clear failures, and (slow) DDP on two CPU processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import TABULAR_STEPS, Cli, Project, write_tabular_csv

pytest.importorskip("lightning")
pytest.importorskip("pyarrow")

RECIPE = TABULAR_STEPS + """
  model:
    builder: train
    inputs: {data: splits}
    params:
      task: tabular-classification
      data: {target: label}
      batch_size: 32
      optimizer: {lr: 0.003}
      checkpoint_every_n_steps: 10
      trainer: {max_epochs: 4, log_every_n_steps: 10, enable_model_summary: false}
"""


def write_project(project: Project, rows: int = 2500, trainer: str | None = None) -> None:
    write_tabular_csv(project, rows)
    recipe = RECIPE if trainer is None else RECIPE.replace(
        "trainer: {max_epochs: 4, log_every_n_steps: 10, enable_model_summary: false}", trainer)
    project.write("recipe.yaml", recipe)


def show(cli: Cli, target: str) -> dict:
    return json.loads(cli("show", target, "--json").stdout)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One project and store for the module, with the recipe built once."""
    root = tmp_path_factory.mktemp("train")
    project = Project(root / "project")
    project.mkdir()
    write_project(project)
    cli = Cli(project, root / "store")
    return cli, cli.build()


def test_build_then_cached_then_reproducible(first):
    cli, result = first
    assert cli.statuses(result) == {"raw": "built", "splits": "built", "model": "built"}
    artifact = Path(result["by_step"]["model"]["path"])
    metrics = json.loads((artifact / "metrics.json").read_text())
    assert metrics["val_accuracy"] > 0.85 and metrics["reproducibility"] == "bit-identical"
    assert {"model.safetensors", "config.json", "metrics.json"} <= {p.name for p in artifact.iterdir()}
    again = cli.build()
    assert set(cli.statuses(again).values()) == {"cached"}
    check = cli.build("recipe.yaml", "--check")
    model = check["by_step"]["model"]
    assert model["reproducible"] and model["check"] == "bytes", model


def test_lineage_shows_results_and_facts_of_the_run(first):
    cli, result = first
    info = show(cli, "demo:model")
    assert info["metrics"]["val_accuracy"] > 0.85
    assert info["metrics"]["samples_per_second"] > 0 and info["metrics"]["wall_seconds"] > 0
    assert "resumed_from_step" not in info["metrics"]
    stored = json.loads((Path(result["by_step"]["model"]["path"]) / "metrics.json").read_text())
    assert "wall_seconds" not in stored  # facts are in the lineage, not in the artifact's bytes
    log = cli("log", "demo:model").stdout
    assert "training on cpu" in log and "val_accuracy" in log


def test_changing_the_learning_rate_rebuilds_only_the_model(first):
    cli, result = first
    changed = cli.build("recipe.yaml", "steps.model.params.optimizer.lr=0.01")
    assert cli.statuses(changed) == {"raw": "cached", "splits": "cached", "model": "built"}
    assert changed["by_step"]["model"]["reasons"] == ["params.optimizer.lr 0.003 -> 0.01"]
    assert changed["by_step"]["model"]["path"] != result["by_step"]["model"]["path"]


def test_sigkill_mid_training_resumes_to_the_same_bytes(first, tmp_path):
    """Kill the whole build once a checkpoint exists; the next build resumes from it and produces exactly the
    artifact an uninterrupted build produced."""
    reference, result = first
    cli = Cli(reference.project, tmp_path / "store")
    cli.build("recipe.yaml", "-t", "splits")
    proc = cli.popen("build", "recipe.yaml", start_new_session=True, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    work = cli.store / "tmp" / "work"
    deadline = time.time() + 240
    while not list(work.glob("*/checkpoints/last.ckpt")):
        assert proc.poll() is None, "the build ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = cli.build()
    assert cli.statuses(resumed)["model"] == "built"
    info = show(cli, "demo:model")
    assert info["metrics"]["resumed_from_step"] > 0
    assert Path(resumed["by_step"]["model"]["path"]).name == Path(result["by_step"]["model"]["path"]).name
    assert not list(work.glob("*/checkpoints")), "the work area is removed after the commit"


def test_a_nan_loss_fails_with_exit_1_and_no_artifact(first):
    cli, _ = first
    before = sorted(p.name for p in (cli.store / "objects").iterdir())
    failed = cli.build("recipe.yaml", "steps.model.params.optimizer.lr=1e20", check=1)
    model = failed["by_step"]["model"]
    assert model["status"] == "failed"
    assert "the training loss became" in model["error"]
    assert "optimizer.lr" in model["error"]
    assert sorted(p.name for p in (cli.store / "objects").iterdir()) == before


def test_a_bad_trainer_key_is_a_recipe_error_with_did_you_mean(first):
    cli, _ = first
    proc = cli("plan", "recipe.yaml", "+steps.model.params.trainer.max_epoch=3", check=2)
    assert "params.trainer.max_epoch" in proc.stderr and "did you mean 'max_epochs'" in proc.stderr


def test_a_missing_target_column_fails_with_did_you_mean(first):
    cli, _ = first
    failed = cli.build("recipe.yaml", "steps.model.params.data.target=lable", check=1)
    message = failed["by_step"]["model"]["error"]
    assert "'lable' (did you mean 'label'?)" in message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow(minutes=2)
def test_ddp_on_two_cpu_processes(project, cli):
    """`strategy: ddp` from the recipe reaches the Trainer unchanged: Lightning re-runs the worker for rank 1."""
    write_project(project, rows=800, trainer="trainer: {max_epochs: 2, strategy: ddp, devices: 2, "
                                             "accelerator: cpu, enable_model_summary: false}")
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "GLOO_SOCKET_IFNAME": "lo"}
    result = cli.build(env=env)
    assert cli.statuses(result)["model"] == "built", result["stderr"]
    metrics = json.loads((Path(result["by_step"]["model"]["path"]) / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] > 0 and metrics["val_accuracy"] > 0.7
    log = cli("log", "demo:model").stdout
    assert "Starting with 2 processes" in log or "world_size" in log
    env["MASTER_PORT"] = str(free_port())
    check = cli.build("recipe.yaml", "--check", env=env)
    assert check["by_step"]["model"].get("reproducible"), (check["by_step"]["model"], check["stderr"])


@pytest.mark.slow(minutes=2)
def test_ddp_ranks_launched_by_torchrun_train_together_and_rank_0_commits(project, cli):
    """Ranks started outside modelbuild (torchrun here; srun and other nodes alike) each run `modelbuild
    build`: rank 1 trains beside rank 0 without committing, then answers with rank 0's artifact. The result
    is the artifact Lightning's own DDP launcher makes: `build --check` with that launcher passes on it."""
    write_project(project, rows=800, trainer="trainer: {max_epochs: 2, strategy: ddp, devices: 2, "
                                             "accelerator: cpu, enable_model_summary: false}")
    cli.build("recipe.yaml", "--target", "splits")
    import sys
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                "127.0.0.1", "--master-port", str(free_port()), "-m", "modelbuild", "--store", str(cli.store),
                "build", "recipe.yaml", "--target", "model"]
    proc = subprocess.run(torchrun, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((Path(cli("path", "demo:model").stdout.strip()) / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["val_accuracy"] > 0.7
    assert list(cli.store.glob("logs/*.rank1.log")), "rank 1 keeps its own log"
    torchrun[torchrun.index("--master-port") + 1] = str(free_port())
    proc = subprocess.run([*torchrun, "--check"], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # rank 0 compares; rank 1 retrains beside it
    check = cli.build("recipe.yaml", "--check", env={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                                                     "GLOO_SOCKET_IFNAME": "lo"})
    assert check["by_step"]["model"].get("reproducible"), (check["by_step"]["model"], check["stderr"])
