"""package: a model artifact as OCI images, in an OCI image layout that is itself an artifact.

Output layout::

    <artifact>/
      oci/          an OCI image layout (oci-layout, index.json, blobs/sha256/) with the refs
                      modelcar: the model under /models (KServe's "modelcar" shape), on the base if there is one
                      server:   (server: true) the base, an app layer (modelbuild and the wheels under
                                /opt/modelbuild/lib, /usr/local/bin/modelbuild) and the model layer;
                                entrypoint `modelbuild serve /models`
      image.json    per ref: manifest digest, config digest, layer digests; the model digest and labels

Every byte follows from the inputs: tar entries sorted, owned by 0:0, dated 1970; gzip without a date; JSON
canonical. So two stores that build the same recipe get the same manifest digests (`build --check` holds).

With `server: true` and no `model`, the server image alone: a runtime with no model inside, built once and
shared by every modelcar (a deploy step's `server` input), so a new model is a new modelcar and nothing else.

Inputs: `model` (any artifact: its files become /models, and its lineage record /models/.meta.json with only
the fields that are the same in every store: digest, derivation, recipe, step, git revision; `modelbuild serve
/models` checks the files against that digest before serving); `base` (optional: an OCI layout, as a Source
or another step's output, whose image the images are built on: a Python for the server image, e.g.
`skopeo copy docker://python:3.11-slim oci:base:3.11`); `wheels` (optional: a folder of .whl files installed
into the server image, e.g. `pip download -d wheels modelbuild[serve]`), both hashed by content like any input.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ..errors import BuildError, RecipeError
from ..hashing import META_FILE
from .base import Builder, Param, check_input_names

INPUTS = ("model", "base", "wheels")
LIB = "opt/modelbuild/lib"
# LitServe starts its workers with multiprocessing's spawn, which imports the main script again: the guard
# keeps a worker from running the CLI a second time
LAUNCHER = (b"#!/usr/bin/env python3\nimport sys\n\nfrom modelbuild.cli import main\n\n"
            b"if __name__ == \"__main__\":\n    sys.exit(main())\n")
LINEAGE = ("builder", "derivation", "digest", "files", "git_rev", "key", "kind", "recipe", "step")


class Package(Builder):
    """Package a model as OCI images: a modelcar, and a server image on a Python base.

    Example::

        image:
          builder: package
          inputs: {model: model, base: {path: images/python-3.11}, wheels: {path: wheels}}
          params: {server: true, image: registry.example.com/income}
    """

    name = "package"
    params = {
        "image": Param("str", help="the image name (org.opencontainers.image.title), default the model's step"),
        "server": Param("bool", default=False, help="also build the server image (needs a `base` input)"),
        "base_ref": Param("str", help="which image of the base layout to use, when it holds several"),
        "port": Param("int", default=8000, help="the port the server listens on in the container"),
        "args": Param("list", help="arguments after `modelbuild serve /models`; default: --host 0.0.0.0 "
                                   "--port <port>"),
        "user": Param("str", default="65532:65532", help="uid:gid the server runs as (not root)"),
        "labels": Param("dict", default={}, help="extra image labels"),
        "max_batch_size": Param("int", omit=True, help="the server's --max-batch-size (text classifiers: requests "
                                                        "answered by one model call; 1: no batching)"),
        "batch_timeout": Param("float", omit=True, help="the server's --batch-timeout (seconds a batch waits to "
                                                        "fill)"),
    }

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        if not 0 < params["port"] < 65536:
            raise RecipeError(f"port must be 1 to 65535, got {params['port']}", file=file, step=step,
                              key="params.port")
        check_batching(params, file=file, step=step)

    def check_inputs(self, params: dict, inputs: dict, *, file: str | None, step: str) -> None:
        check_input_names("package", inputs, INPUTS, file=file, step=step)
        if "model" not in inputs and not params["server"]:
            raise RecipeError("package needs a `model` input: the artifact to put under /models (or `server: "
                              "true` alone, for a server image that serves a modelcar mounted at /models)",
                              file=file, step=step, key="inputs")
        if params["server"] and "base" not in inputs:
            raise RecipeError("server: true needs a `base` input: an OCI layout with Python 3.11 to run "
                              "modelbuild in (e.g. {path: base} after `skopeo copy docker://python:3.11-slim "
                              "oci:base:3.11`), or set server: false for the modelcar alone",
                              file=file, step=step, key="params.server")

    def key_extras(self, params: dict, recipe_dir: Path) -> dict:
        """The server image holds all of modelbuild's source, not only what this builder imports."""
        return {"modelbuild": _package_source_hash()} if params.get("server") else {}

    def build(self, ctx) -> None:
        from .. import oci

        p, model = ctx.params, ctx.inputs.get("model")
        blobs = ctx.out / "oci" / "blobs" / "sha256"
        lineage = _lineage(model) if model else {}
        labels = _labels(lineage, p["image"] or lineage.get("step") or (model.name if model else ctx.step),
                         p["labels"])
        base = []
        platform = {"architecture": "amd64", "os": "linux"}
        base_config = {}
        if "base" in ctx.inputs:
            try:
                manifest, config = oci.read_image(ctx.inputs["base"], p["base_ref"])
                base = oci.base_layers(ctx.inputs["base"], manifest, config, blobs)
            except oci.LayoutError as e:
                raise BuildError(f"step '{ctx.step}': the `base` input is not a usable image: {e}. Make one "
                                 f"with `skopeo copy docker://python:3.11-slim oci:DIR:3.11`") from None
            platform = {k: config[k] for k in ("architecture", "os") if k in config}
            base_config = config.get("config") or {}
        images, model_layers = [], []
        if model:
            models = oci.tree_files(model, "models", exclude=(META_FILE,))
            models[f"models/{META_FILE}"] = json.dumps(lineage, sort_keys=True, indent=2).encode()
            model_layers = [oci.write_layer(blobs, models, dirs=("models",))]
            images.append(oci.Image(base + model_layers, {**base_config, "Labels": {
                **base_config.get("Labels", {}), **labels}}, "modelcar", labels, platform))
        if p["server"]:  # without a model: the runtime that serves a modelcar mounted at /models
            app = oci.write_layer(blobs, _app_files(ctx.inputs.get("wheels")))
            images.append(oci.Image(base + [app, *model_layers], _server_config(base_config, labels, p),
                                    "server", labels, platform))
        manifests = oci.write_layout(ctx.out / "oci", images)
        info = {"model_digest": lineage.get("digest"), "labels": labels, "port": p["port"], **_batching(p),
                "images": {
            ref: {"manifest": d["digest"], "layers": [layer.descriptor["digest"] for layer in image.layers]}
            for (ref, d), image in zip(manifests.items(), images, strict=True)}}
        (ctx.out / "image.json").write_text(json.dumps(info, sort_keys=True, indent=2))
        for ref, d in manifests.items():
            ctx.log.info("image %s: %s", ref, d["digest"])


def check_batching(params: dict, *, file: str | None, step: str) -> None:
    """max_batch_size and batch_timeout, where a recipe sets them, as `modelbuild serve` accepts them."""
    if params.get("max_batch_size") is not None and params["max_batch_size"] < 1:
        raise RecipeError(f"max_batch_size must be 1 or more (1: no batching), got {params['max_batch_size']}",
                          file=file, step=step, key="params.max_batch_size")
    if params.get("batch_timeout") is not None and params["batch_timeout"] < 0:
        raise RecipeError(f"batch_timeout must be 0 or more seconds, got {params['batch_timeout']}",
                          file=file, step=step, key="params.batch_timeout")


def batching_args(batching: dict) -> list[str]:
    """`modelbuild serve` flags for {max_batch_size, batch_timeout}, the ones set."""
    flags = {"max_batch_size": "--max-batch-size", "batch_timeout": "--batch-timeout"}
    return [arg for key, flag in flags.items() if batching.get(key) is not None
            for arg in (flag, str(batching[key]))]


def _batching(p: dict) -> dict:
    """image.json's record of the batching the server image runs with (the deploy step's default)."""
    batching = {k: p[k] for k in ("max_batch_size", "batch_timeout") if p.get(k) is not None}
    return {"batching": batching} if batching else {}


def _lineage(model: Path) -> dict:
    """The model's lineage without what differs between stores or runs (host, times, absolute paths)."""
    path = model / ".meta.json"
    meta = json.loads(path.read_text()) if path.is_file() else {}
    return {k: meta[k] for k in LINEAGE if meta.get(k) is not None} or {"digest": model.name.split("-")[0]}


def _labels(lineage: dict, title: str, extra: dict) -> dict:
    labels = {"org.opencontainers.image.title": title,
              "dev.modelbuild.model.digest": lineage.get("digest", ""),
              "dev.modelbuild.recipe": lineage.get("recipe", ""),
              "dev.modelbuild.step": lineage.get("step", ""),
              "org.opencontainers.image.revision": lineage.get("git_rev") or ""}
    return {k: str(v) for k, v in {**labels, **extra}.items() if v != ""}


def _server_config(base: dict, labels: dict, p: dict) -> dict:
    """The server image's config. It listens on 0.0.0.0 inside its container's own network namespace (a
    port mapping or a pod reaches it there); `modelbuild serve` itself defaults to 127.0.0.1."""
    env = [e for e in base.get("Env", []) if not e.startswith(("PYTHONPATH=", "PYTHONDONTWRITEBYTECODE="))]
    return {**base, "Entrypoint": ["/usr/local/bin/modelbuild", "serve", "/models"],
            "Cmd": (p["args"] if p["args"] is not None else ["--host", "0.0.0.0", "--port", str(p["port"])])
            + batching_args(p),
            "Env": env + [f"PYTHONPATH=/{LIB}", "PYTHONDONTWRITEBYTECODE=1", "MODELBUILD_STORE=/tmp/store"],
            "ExposedPorts": {f"{p['port']}/tcp": {}}, "User": p["user"], "WorkingDir": "/tmp",
            "Labels": {**base.get("Labels", {}), **labels}}


def _app_files(wheels: Path | None) -> dict:
    """{image path: file or bytes}: modelbuild's source, the wheels unpacked as an installer would, a launcher."""
    from ..codehash import PACKAGE_ROOT
    from ..oci import tree_files

    files = tree_files(PACKAGE_ROOT / "modelbuild", f"{LIB}/modelbuild", exclude=("__pycache__",))
    files = {k: v for k, v in files.items() if k.endswith(".py")}
    for wheel in sorted(wheels.glob("*.whl")) if wheels else []:
        files.update(_wheel_files(wheel))
    files["usr/local/bin/modelbuild"] = LAUNCHER
    return files


def _wheel_files(wheel: Path) -> dict:
    """A wheel's files under LIB: purelib and platlib contents at the top, scripts and data left out."""
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for entry in z.infolist():
            name = entry.filename
            if entry.is_dir() or "__pycache__" in name:
                continue
            head, _, rest = name.partition("/")
            if head.endswith(".data"):
                kind, _, rest = rest.partition("/")
                if kind not in ("purelib", "platlib"):
                    continue
                name = rest
            if ".." in name.split("/") or name.startswith("/"):
                raise BuildError(f"{wheel.name}: entry {entry.filename!r} escapes the install folder")
            out[f"{LIB}/{name}"] = z.read(entry)
    return out


def _package_source_hash() -> str:
    from ..codehash import PACKAGE_ROOT
    from ..hashing import hash_bytes, hash_file

    root = PACKAGE_ROOT / "modelbuild"
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    return hash_bytes("".join(f"{p.relative_to(root)}\0{hash_file(p)}\n" for p in files))
