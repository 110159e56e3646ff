"""OCI image layouts written with the standard library, the same bytes on every build.

A layer is a tar of (path in the image -> file) with every owner 0, every mtime EPOCH, modes 0644/0755 and
entries sorted, gzipped with mtime 0 and no file name: so its digest depends on the files alone. Blobs are
named by sha256 (the OCI content address); the config, manifest and index are canonical JSON. The layout
(`oci-layout`, `index.json`, `blobs/sha256/`) is what `skopeo`, `umoci`, `crane` and `podman` read as
`oci:DIR:REF`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

EPOCH = 0  # every mtime in a layer, and the image's `created`
CREATED = "1970-01-01T00:00:00Z"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Layer:
    descriptor: dict  # mediaType, digest, size of the blob
    diff_id: str  # sha256 of the uncompressed tar: what the image config lists


@dataclass
class Image:
    layers: list[Layer]
    config: dict  # the `config` section: Entrypoint, Cmd, Env, Labels, ...
    ref: str  # the layout's tag for it: `oci:DIR:REF`
    annotations: dict = field(default_factory=dict)
    platform: dict = field(default_factory=lambda: {"architecture": "amd64", "os": "linux"})


class _Hashing:
    """A write-only file that hashes what passes through it (and counts it)."""

    def __init__(self, raw):
        self.raw, self.sha, self.size = raw, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data) if self.raw is not None else len(data)

    def flush(self) -> None:
        if self.raw is not None:
            self.raw.flush()


def tree_files(root: Path, prefix: str, exclude: tuple[str, ...] = ()) -> dict[str, Path]:
    """{path in the image: file} for every file and symlink under `root`, placed under `prefix`."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in exclude]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if rel not in exclude and name not in exclude:
                out[f"{prefix.strip('/')}/{rel}".lstrip("/")] = Path(dirpath, name)
    return out


def _parents(paths) -> set[str]:
    dirs = set()
    for path in paths:
        parts = path.split("/")[:-1]
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return dirs


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname, info.mtime = kind, mode, size, link, EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_layer(blobs: Path, files: dict[str, Path | bytes], dirs: tuple[str, ...] = ()) -> Layer:
    """A gzipped tar blob of `files` ({image path: file or bytes}) and the folders above them, in blobs/."""
    blobs.mkdir(parents=True, exist_ok=True)
    tmp = blobs / ".layer.tmp"
    with open(tmp, "wb") as raw:
        compressed = _Hashing(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6) as gz:
            plain = _Hashing(gz)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name in sorted((_parents(files) | set(dirs)) - set(files)):
                    tar.addfile(_info(name, tarfile.DIRTYPE, 0o755))
                for name in sorted(files):
                    _add(tar, name, files[name])
    digest = compressed.sha.hexdigest()
    os.replace(tmp, blobs / digest)
    return Layer({"mediaType": LAYER, "digest": f"sha256:{digest}", "size": compressed.size},
                 f"sha256:{plain.sha.hexdigest()}")


def _add(tar: tarfile.TarFile, name: str, source: Path | bytes) -> None:
    if isinstance(source, bytes):
        mode = 0o755 if source.startswith(b"#!") else 0o644  # a script given as text runs
        tar.addfile(_info(name, tarfile.REGTYPE, mode, len(source)), _BytesReader(source))
    elif source.is_symlink():
        tar.addfile(_info(name, tarfile.SYMTYPE, 0o777, link=os.readlink(source)))
    else:
        mode = 0o755 if os.stat(source).st_mode & 0o111 else 0o644
        with open(source, "rb") as f:
            tar.addfile(_info(name, tarfile.REGTYPE, mode, os.fstat(f.fileno()).st_size), f)


class _BytesReader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.at + n
        chunk, self.at = self.data[self.at:end], min(end, len(self.data))
        return chunk


def _json_blob(blobs: Path, value: dict, media_type: str) -> dict:
    data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def write_layout(out: Path, images: list[Image]) -> dict[str, dict]:
    """Write the images' configs and manifests beside their layer blobs in out/blobs/sha256, then index.json
    naming each by its ref. Returns {ref: manifest descriptor}."""
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    manifests = {}
    for image in images:
        config = {**image.platform, "created": CREATED, "config": image.config,
                  "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in image.layers]},
                  "history": [{"created": CREATED, "created_by": "modelbuild package"}] * len(image.layers)}
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": _json_blob(blobs, config, CONFIG),
                    "layers": [layer.descriptor for layer in image.layers]}
        if image.annotations:
            manifest["annotations"] = image.annotations
        manifests[image.ref] = {**_json_blob(blobs, manifest, MANIFEST), "platform": image.platform,
                                "annotations": {REF: image.ref}}
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": list(manifests.values())}
    (out / "index.json").write_text(json.dumps(index, sort_keys=True, indent=2))
    return manifests


class LayoutError(ValueError):
    """An OCI layout that cannot be used as a base: the message says what is wrong."""


def read_image(layout: Path, ref: str | None = None, platform: dict | None = None) -> tuple[dict, dict]:
    """(manifest, config) of the image `ref` (or the only one) in an OCI layout, following an image index
    to the manifest for `platform` (default linux/amd64)."""
    platform = platform or {"architecture": "amd64", "os": "linux"}
    try:
        index = _read_blob_json(layout / "index.json")
        entries = index.get("manifests") or []
        if ref is not None:
            entries = [m for m in entries if (m.get("annotations") or {}).get(REF) == ref]
        if len(entries) != 1:
            names = [(m.get("annotations") or {}).get(REF, "?") for m in index.get("manifests") or []]
            raise LayoutError(f"{layout}/index.json has {len(entries)} images"
                              f"{f' named {ref!r}' if ref else ''} (its refs: {', '.join(names) or 'none'})")
        manifest = blob_json(layout, entries[0]["digest"])
        while manifest.get("mediaType") == INDEX or "manifests" in manifest:
            fits = [m for m in manifest["manifests"]
                    if all((m.get("platform") or {}).get(k) == v for k, v in platform.items())]
            if not fits:
                raise LayoutError(f"{layout} has no image for {platform['os']}/{platform['architecture']}")
            manifest = blob_json(layout, fits[0]["digest"])
        return manifest, blob_json(layout, manifest["config"]["digest"])
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise LayoutError(f"{layout} is not a readable OCI image layout ({type(e).__name__}: {e})") from None


def blob_path(layout: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise LayoutError(f"{layout}: unsupported digest {digest!r} (want sha256:<64 hex>)")
    return layout / "blobs" / "sha256" / hexdigest


def blob_json(layout: Path, digest: str) -> dict:
    path = blob_path(layout, digest)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != digest.partition(":")[2]:
        raise LayoutError(f"{path} does not match its digest: the layout is damaged")
    return json.loads(data)


def _read_blob_json(path: Path) -> dict:
    return json.loads(path.read_bytes())


def base_layers(layout: Path, manifest: dict, config: dict, blobs: Path) -> list[Layer]:
    """Copy a base image's layer blobs into `blobs` and return them as Layers (their diff_ids from its config)."""
    diff_ids = config["rootfs"]["diff_ids"]
    if len(diff_ids) != len(manifest["layers"]):
        raise LayoutError(f"{layout}: the config lists {len(diff_ids)} layers, the manifest {len(manifest['layers'])}")
    layers = []
    blobs.mkdir(parents=True, exist_ok=True)
    for descriptor, diff_id in zip(manifest["layers"], diff_ids, strict=True):
        source = blob_path(layout, descriptor["digest"])
        if not source.is_file():
            raise LayoutError(f"{layout}: layer blob {descriptor['digest']} is missing")
        _copy_checked(source, blobs / source.name)
        layers.append(Layer({k: descriptor[k] for k in ("mediaType", "digest", "size")}, diff_id))
    return layers


def _copy_checked(source: Path, target: Path) -> None:
    """Copy a blob, refusing one whose content does not match its name (a damaged base)."""
    sha = hashlib.sha256()
    with open(source, "rb") as f, open(target, "wb") as out:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            out.write(chunk)
    if sha.hexdigest() != source.name:
        raise LayoutError(f"{source} does not match its digest: the layout is damaged")
