"""Fixtures for the image and deployment tests: a Python base image, a wheel, loopback servers on free ports."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from . import images


def model_recipe(weight: int = 1, extra: str = "") -> str:
    return MODEL_RECIPE.replace("WEIGHT", str(weight)) + extra


# A model stand-in: the package builder takes any artifact, so a command step keeps these tests fast.
MODEL_RECIPE = """
name: demo
steps:
  model:
    builder: command
    params: {cmd: 'mkdir "$MB_OUT/weights"; echo "{\\"w\\": WEIGHT}" > "$MB_OUT/weights/model.json"'}
  image:
    builder: package
    inputs: {model: model}
"""


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (Debian packages; see docs/deploy.md)")


@pytest.fixture(scope="session")
def python_base(tmp_path_factory) -> Path:
    """An OCI layout with this machine's Python 3.11 and its standard library (ref 3.11)."""
    return images.python_base(tmp_path_factory.mktemp("base") / "python")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """An OCI layout of one small layer: enough for the manifests, which never run the image."""
    from modelbuild import oci

    layout = tmp_path_factory.mktemp("tiny") / "base"
    layer = oci.write_layer(layout / "blobs" / "sha256", {"etc/os-release": b"ID=tiny\n"})
    oci.write_layout(layout, [oci.Image([layer], {"Env": ["PATH=/usr/bin"]}, "latest")])
    return layout


# The model packaged as a server image and deployed; `base` is copied into the project by the test.
DEPLOY = """
  server:
    builder: package
    inputs: {model: model, base: {path: base}}
    params: {server: true, image: demo-server}
  deploy:
    builder: deploy
    inputs: {image: server}
    params: {repository: registry.example.com/demo, replicas: {min: 1, max: 4}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listened on 127.0.0.1:{port} within {seconds} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server this test started, and check it left no process behind."""
    import psutil

    children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left behind: {alive}"


def skopeo_inspect(ref: str, *extra: str) -> dict:
    proc = subprocess.run(["skopeo", "inspect", *extra, ref], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
