"""The package builder: OCI images that the standard tools read, the same digest from any empty store."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import Cli, Project

from .conftest import free_port, images, model_recipe, need, skopeo_inspect, stop, wait_for_port


def _image(cli, recipe: str = model_recipe(1), step: str = "image") -> Path:
    cli.project.write("recipe.yaml", recipe)
    return Path(cli.build()["by_step"][step]["path"])


def test_two_empty_stores_give_the_same_manifest_digest(tmp_path):
    """Different folders, different stores, one recipe: byte-identical layouts, and skopeo agrees."""
    need("skopeo")
    outs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        outs.append(_image(Cli(Project(tmp_path / name / "project"), tmp_path / name / "store")))
    first, second = (json.loads((out / "image.json").read_text()) for out in outs)
    assert first == second
    manifest = first["images"]["modelcar"]["manifest"]
    inspected = skopeo_inspect(f"oci:{outs[0]}/oci:modelcar")
    assert inspected["Digest"] == manifest == skopeo_inspect(f"oci:{outs[1]}/oci:modelcar")["Digest"]
    labels = inspected["Labels"]
    assert labels["dev.modelbuild.model.digest"] == first["model_digest"]
    assert (labels["dev.modelbuild.recipe"], labels["dev.modelbuild.step"]) == ("demo", "model")


def test_model_layer_is_models_folder_with_fixed_owners_and_times(cli, tmp_path):
    need("umoci")
    out = _image(cli)
    layer = json.loads((out / "image.json").read_text())["images"]["modelcar"]["layers"][-1]
    with tarfile.open(out / "oci" / "blobs" / "sha256" / layer.partition(":")[2]) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == ["models", "models/weights", "models/.meta.json", "models/weights/model.json"]
    assert {(m.uid, m.gid, m.mtime, m.uname) for m in members} == {(0, 0, 0, "")}
    subprocess.run(["umoci", "unpack", "--image", f"{out}/oci:modelcar", tmp_path / "bundle"], check=True,
                   capture_output=True, timeout=120)
    rootfs = tmp_path / "bundle" / "rootfs"
    assert json.loads((rootfs / "models/weights/model.json").read_text()) == {"w": 1}
    lineage = json.loads((rootfs / "models/.meta.json").read_text())
    assert lineage["step"] == "model"
    assert lineage["digest"] == json.loads((out / "image.json").read_text())["model_digest"]
    from modelbuild.hashing import hash_tree
    assert hash_tree(rootfs / "models").digest == lineage["digest"]  # what `modelbuild serve /models` checks


def test_a_changed_model_changes_the_image(cli):
    before = _image(cli)
    after = _image(cli, model_recipe(2))
    digests = [json.loads((p / "image.json").read_text())["images"]["modelcar"]["manifest"] for p in (before, after)]
    assert digests[0] != digests[1]


SERVER = """
  server:
    builder: package
    inputs: {model: model, base: {path: base}, wheels: {path: wheels}}
    params: {server: true, image: demo-server}
"""


def test_server_image_runs_under_runc(cli, python_base, tmp_path):
    """The server image on a Python base: modelbuild and the wheels importable, the model at /models, the
    entrypoint `modelbuild serve /models`, not root. runc runs the unpacked bundle."""
    need("umoci", "runc", "skopeo")
    shutil.copytree(python_base, cli.project / "base")
    images.wheel(cli.project / "wheels", "hello", "1.0", {"hello.py": "GREETING = 'hi'\n"})
    out = _image(cli, model_recipe(3, SERVER), step="server")
    config = skopeo_inspect(f"oci:{out}/oci:server", "--config")["config"]
    assert config["Entrypoint"] == ["/usr/local/bin/modelbuild", "serve", "/models"]
    assert config["User"] == "65532:65532" and "8000/tcp" in config["ExposedPorts"]
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{out}/oci:server", bundle], check=True, capture_output=True,
                   timeout=120)
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["user"]["uid"] == 65532
    script = ("import hello, json, modelbuild.cli; "
              "print(hello.GREETING, json.load(open('/models/weights/model.json'))['w'])")
    spec["process"].update(args=["python3", "-c", script], terminal=False)
    (bundle / "config.json").write_text(json.dumps(spec))
    name = f"mb-test-{free_port()}"
    proc = subprocess.run(["runc", "--root", tmp_path / "runc", "run", "--bundle", bundle, name],
                          capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout.strip()) == (0, "hi 3"), proc.stderr


def test_push_to_a_local_registry(cli, tmp_path):
    """skopeo copies the modelcar to Debian's docker-registry on loopback; the registry keeps its digest."""
    need("skopeo", "docker-registry")
    out = _image(cli)
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    registry = subprocess.Popen(["docker-registry", "serve", config], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, registry)
        target = f"docker://127.0.0.1:{port}/demo/model:v1"
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{out}/oci:modelcar", target],
                       check=True, capture_output=True, timeout=120)
        pushed = skopeo_inspect(target, "--tls-verify=false")
    finally:
        stop(registry)
    assert pushed["Digest"] == json.loads((out / "image.json").read_text())["images"]["modelcar"]["manifest"]
    assert pushed["Labels"]["dev.modelbuild.step"] == "model"


def test_server_without_base_is_a_recipe_error(cli):
    cli.project.write("recipe.yaml", model_recipe(1, "    params: {server: true}\n"))
    proc = cli("build", "recipe.yaml", check=2)
    assert "image" in proc.stderr and "params.server" in proc.stderr
    assert "server: true needs a `base` input" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_batching_is_a_recipe_error(cli):
    cli.project.write("recipe.yaml", model_recipe(1, "    params: {max_batch_size: 0}\n"))
    proc = cli("plan", "recipe.yaml", check=2)
    assert "step 'image'" in proc.stderr and "params.max_batch_size" in proc.stderr and "1 or more" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_base_that_is_not_an_image_fails_the_step(cli):
    cli.project.write("base/readme.txt", "not an image\n")
    cli.project.write("recipe.yaml", model_recipe(1).replace(
        "inputs: {model: model}", "inputs: {model: model, base: {path: base}}"))
    proc = cli("build", "recipe.yaml", check=1)
    assert "the `base` input is not a usable image" in proc.stderr and "skopeo copy" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((cli.store / "objects").glob("*-image"))


def test_a_damaged_base_layer_is_refused(cli, tiny_base):
    """A base blob whose bytes do not match its digest would make an image no registry accepts."""
    shutil.copytree(tiny_base, cli.project / "base")
    layer = next(p for p in (cli.project / "base/blobs/sha256").iterdir() if p.stat().st_size > 100
                 and not p.read_bytes().startswith(b"{"))
    layer.chmod(0o644)
    layer.write_bytes(layer.read_bytes() + b"tampered")
    cli.project.write("recipe.yaml", model_recipe(1).replace(
        "inputs: {model: model}", "inputs: {model: model, base: {path: base}}"))
    proc = cli("build", "recipe.yaml", check=1)
    assert "does not match its digest" in proc.stderr and "Traceback" not in proc.stderr


MODEL_SCRIPT = "\n\nif __name__ == '__main__':\n    import sys\n    save_text_classifier(Path(sys.argv[1]))\n"
SERVED = """
name: demo
steps:
  model:
    builder: command
    description: a tiny text classifier, saved as a transformers folder
    inputs: {script: {path: make_model.py}}
    params: {cmd: '"$PYTHON" "$MB_IN_SCRIPT" "$MB_OUT"', packages: [transformers, torch]}
  server:
    builder: package
    inputs: {model: model, base: {path: base}}
    params: {server: true, image: demo-server, max_batch_size: 4}
"""


def _run_as_a_pod(spec: dict, port: int, site_packages: str) -> dict:
    """The unpacked bundle's spec changed as docs/deploy.md runs the image: read-only root, a tmpfs for scratch,
    the host's network (so the server is reached on loopback, bound to 127.0.0.1), and the serving libraries
    from this interpreter's site-packages, read-only (the image's own wheels are test_server_image_runs_...'s)."""
    process = spec["process"]
    process["args"] += ["--host", "127.0.0.1", "--port", str(port)]
    process["env"] = [e for e in process["env"] if not e.startswith("PYTHONPATH=")] + [
        "PYTHONPATH=/opt/modelbuild/lib:/opt/site-packages", "TMPDIR=/scratch", "HOME=/scratch",
        "MODELBUILD_STORE=/scratch/store", "MODELBUILD_SERVE_LOG_DIR=/scratch/logs", "MODELBUILD_FULL_ERROR=1"]
    process.update(cwd="/scratch", terminal=False)
    spec["root"]["readonly"] = True
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
    spec["mounts"] += [
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777", "uid=65532", "gid=65532"]},
        {"destination": "/opt/site-packages", "type": "bind", "source": site_packages,
         "options": ["rbind", "ro"]}]
    return spec


@pytest.mark.slow(minutes=3)
def test_server_image_answers_health_and_predict_under_runc(cli, python_base, tmp_path):
    """The server image's own entrypoint, unchanged (`modelbuild serve /models` and the package step's batching),
    run by runc as a pod would run it: /health names the model digest, /predict answers, SIGTERM stops it and
    nothing is left behind."""
    need("umoci", "runc")
    import sysconfig
    import urllib.request

    import psutil

    shutil.copytree(python_base, cli.project / "base")
    tiny = Path(__file__).parents[1] / "serving" / "tiny.py"
    cli.project.write("make_model.py", tiny.read_text() + MODEL_SCRIPT)
    cli.project.write("recipe.yaml", SERVED)
    out = Path(cli.build()["by_step"]["server"]["path"])
    digest = json.loads((out / "image.json").read_text())["model_digest"]
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{out}/oci:server", bundle], check=True, capture_output=True,
                   timeout=120)
    port = free_port()
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["args"] == ["/usr/local/bin/modelbuild", "serve", "/models", "--host", "0.0.0.0",
                                       "--port", "8000", "--max-batch-size", "4"]
    site_packages = str(Path(sysconfig.get_paths()["purelib"]).resolve())
    (bundle / "config.json").write_text(json.dumps(_run_as_a_pod(spec, port, site_packages)))
    name, root = f"mb-serve-{port}", tmp_path / "runc"
    container = subprocess.Popen(["runc", "--root", root, "run", "--bundle", bundle, name],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        try:
            wait_for_port(port, container, seconds=120)
        except AssertionError as e:
            subprocess.run(["runc", "--root", root, "kill", name, "KILL"], capture_output=True, timeout=30)
            raise AssertionError(f"{e}:\n{container.communicate(timeout=30)[0]}") from None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as r:
            health, header = json.load(r), r.headers["X-Model-Digest"]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=b'{"text": "a good movie"}',
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            answer = json.load(r)
        processes = psutil.Process(container.pid).children(recursive=True)
        subprocess.run(["runc", "--root", root, "kill", name, "TERM"], check=True, timeout=30)
        code = container.wait(timeout=20)
    finally:
        if container.poll() is None:
            subprocess.run(["runc", "--root", root, "kill", name, "KILL"], timeout=30)
            print(container.communicate(timeout=30)[0])
        subprocess.run(["runc", "--root", root, "delete", "--force", name], capture_output=True, timeout=30)
    assert (health["status"], health["digest"], health["path"], header) == ("ok", digest, "/models", digest)
    assert answer["label"] in ("negative", "positive") and set(answer["probabilities"]) == {"negative", "positive"}
    assert code == 0, container.stdout.read()
    _, alive = psutil.wait_procs(processes, timeout=5)
    assert not alive, f"left behind: {alive}"
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
