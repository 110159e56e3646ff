"""`modelbuild serve` of a tabular classifier built by the real CLI: predictions, schema errors that name the
field, the headers, /health, /metrics, the request and feedback logs, the API key, bad bodies, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import TABULAR_STEPS, Cli, Project, write_tabular_csv
from served import Served

pytest.importorskip("litserve")
pytest.importorskip("lightning")

RECIPE = TABULAR_STEPS + """
  model:
    builder: train
    inputs: {data: splits}
    params:
      task: tabular-classification
      data: {target: label}
      batch_size: 32
      trainer: {max_epochs: 2, enable_model_summary: false}
"""
GOOD = {"x1": 1.0, "x2": 0.5, "colour": "red"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    project = Project(root / "project")
    project.mkdir()
    write_tabular_csv(project, 600)
    project.write("recipe.yaml", RECIPE)
    cli = Cli(project, root / "store")
    result = cli.build()
    return cli, Path(result["by_step"]["model"]["path"]), result["by_step"]["raw"]["path"]


@pytest.fixture(scope="module")
def server(built):
    cli, _, _ = built
    with Served(cli, "demo:model", "--api-key", "s3cret", "--log-dir", cli.project / "logs") as s:
        yield s


def post(server, route, body=None, key="s3cret", **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server.url + route, json=body, headers={**headers, **kw.pop("headers", {})}, timeout=30, **kw)


def test_predictions_probabilities_and_headers(server, built):
    _, model, _ = built
    digest = model.name.split("-")[0]
    r = post(server, "/predict", {"records": [GOOD, {"x1": -2.0, "x2": -1.0, "colour": "blue"}]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["predictions"] == ["yes", "no"]
    assert set(out["probabilities"][0]) == {"no", "yes"} and abs(sum(out["probabilities"][0].values()) - 1) < 1e-9
    assert r.headers["x-model-digest"] == digest and len(r.headers["x-request-id"]) >= 16
    health = httpx.get(server.url + "/health", timeout=10)  # no key needed: probes carry none
    assert health.status_code == 200 and health.json()["digest"] == digest
    assert health.headers["x-model-digest"] == digest


@pytest.mark.parametrize("record, field, words", [
    ({"x1": 1.0, "colour": "red"}, "records[0].x2", "missing"),
    ({"x1": "high", "x2": 0.5, "colour": "red"}, "records[0].x1", "expected number"),
    ({"x1": 1.0, "x2": 0.5, "colour": "purple"}, "records[0].colour", "unknown category"),
    ({**GOOD, "height": 3}, "records[0].height", "unknown field"),
    ({"x1": 1.0, "x2": 0.5, "colour": 7}, "records[0].colour", "expected string"),
])
def test_a_record_that_does_not_fit_the_training_schema_is_422_naming_the_field(server, record, field, words):
    r = post(server, "/predict", {"records": [record]})
    assert r.status_code == 422, r.text
    fields = {f["field"]: f["problem"] for f in r.json()["detail"]["fields"]}
    assert field in fields and words in fields[field], fields


def test_bad_bodies_and_keys(server):
    assert post(server, "/predict", {"records": [GOOD]}, key=None).status_code == 401
    assert post(server, "/predict", {"records": [GOOD]}, key="wrong").status_code == 401
    r = httpx.post(server.url + "/predict", content=b'{"records": [', timeout=10,
                   headers={"X-API-Key": "s3cret", "Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]["error"]
    big = {"records": [GOOD] * 40000}  # about 1.6 MB, over the 1 MiB default
    r = post(server, "/predict", big)
    assert r.status_code == 413 and "limit" in r.json()["detail"]["error"]
    assert post(server, "/predict", [1, 2]).status_code == 422
    assert post(server, "/predict", {"records": []}).status_code == 422


def test_metrics_request_log_and_feedback(server, built):
    cli, model, _ = built
    r = post(server, "/predict", {"records": [GOOD]}, headers={"X-Request-Id": "req-42"})
    assert r.headers["x-request-id"] == "req-42"
    assert post(server, "/feedback", {"request_id": "req-42", "label": "yes"}).json() == {"ok": True}
    assert post(server, "/feedback", {"label": "yes"}).status_code == 422
    text = httpx.get(server.url + "/metrics", timeout=10).text
    from modelbuild.serving import metrics

    assert f'{metrics.REQUESTS}{{route="/predict",status="200"}}' in text
    assert f'{metrics.REQUESTS}{{route="/predict",status="422"}}' in text
    assert f'{metrics.LATENCY}_bucket{{le="0.5",route="/predict"}}' in text
    assert f'{metrics.MODEL_INFO}{{digest="{model.name.split("-")[0]}"' in text
    assert f"{metrics.BATCH_SIZE}_count" in text and metrics.IN_FLIGHT in text
    logs = cli.project / "logs"
    assert list(logs.glob("requests-*.jsonl.open"))  # the open segment; closed at rotation and at exit
    records = [json.loads(line) for p in sorted(logs.glob("requests-*")) for line in p.read_text().splitlines()]
    mine = [r for r in records if r["id"] == "req-42"]
    assert mine and mine[0]["inputs"] == {"records": [GOOD]} and mine[0]["outputs"]["predictions"] == ["yes"]
    assert mine[0]["digest"] == model.name.split("-")[0] and mine[0]["latency_ms"] > 0 and mine[0]["status"] == 200


def test_sigterm_under_load_finishes_what_it_started_and_leaves_nothing(server, built):
    """Last of the module's server: stopped here, under load, and checked to leave nothing behind."""
    cli, _, _ = built
    statuses, stop = [], threading.Event()

    def client():
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post(server.url + "/predict", json={"records": [GOOD] * 50},
                               headers={"X-API-Key": "s3cret", "X-Request-Id": "load"})
                    statuses.append(r.status_code)
                except httpx.TransportError:  # refused once the server stops listening: not an answer
                    pass
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    server.stop(signal.SIGTERM)
    stop.set()
    for t in threads:
        t.join()
    assert statuses and all(code == 200 for code in statuses), sorted(set(statuses))
    logs = cli.project / "logs"
    assert not list(logs.glob("*.open")) and list(logs.glob("requests-*.jsonl"))  # the segment was closed
    logged = [json.loads(line) for p in logs.glob("requests-*.jsonl") for line in p.read_text().splitlines()]
    assert sum(r["id"] == "load" for r in logged) == len(statuses)


@pytest.mark.slow
def test_ctrl_c_stops_it_too(built):
    cli, _, _ = built
    Served(cli, "demo:model", "--log-dir", cli.project / "logs-int").stop(signal.SIGINT)


@pytest.mark.slow
def test_a_killed_server_takes_its_worker_and_queue_manager_with_it(built):
    """SIGKILL leaves the server no time to stop anything: the kernel stops its children (PDEATHSIG)."""
    import psutil

    cli, _, _ = built
    s = Served(cli, "demo:model", "--log-dir", cli.project / "logs-kill")
    children = psutil.Process(s.pid).children(recursive=True)
    assert len(children) >= 2  # the inference worker and LitServe's queue manager at least
    s.proc.kill()
    s.proc.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, alive


def test_refusals_before_serving(built, tmp_path):
    cli, model, table = built
    r = cli("serve", "demo:raw", check=2)
    assert "step 'demo:raw' (builder ingest) is not a model that can be served" in r.stderr
    assert "tabular classifier" in r.stderr and "Traceback" not in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli("serve", "demo:model", "--port", port, check=2)
        assert f"port {port} on 127.0.0.1 is already in use" in r.stderr and "--port" in r.stderr
    r = cli("serve", "no-such:model", check=2)
    assert "no artifact named 'no-such:model'" in r.stderr


def test_a_damaged_model_is_refused_with_exit_5(built, tmp_path):
    cli, model, _ = built
    import shutil

    copy = tmp_path / "models"
    shutil.copytree(model, copy)  # a plain folder, as in an image's /models
    os.chmod(copy / "config.json", 0o644)
    config = json.loads((copy / "config.json").read_text())
    config["numeric"][0]["mean"] += 1
    (copy / "config.json").write_text(json.dumps(config))
    r = cli("serve", copy, check=5)
    assert "does not match the digest" in r.stderr and "Traceback" not in r.stderr
    stored = cli.store / "objects" / model.name  # the store's own copy: re-hashed before serving too
    original = (stored / "config.json").read_bytes()
    os.chmod(stored, 0o755)
    os.chmod(stored / "config.json", 0o644)
    try:
        (stored / "config.json").write_text(json.dumps(config))
        r = cli("serve", "demo:model", check=5)
        assert "does not match its digest" in r.stderr and "Traceback" not in r.stderr
    finally:  # the module's other tests (the slow ones run last) serve this same artifact
        (stored / "config.json").write_bytes(original)
        os.chmod(stored / "config.json", 0o444)
        os.chmod(stored, 0o555)
