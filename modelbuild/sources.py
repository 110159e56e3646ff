"""Sources: data from outside the store, identified by content.

A local path is hashed where it lies (with the stat cache, so an unchanged large file is not re-read), its
links followed to their content, and given to builders in place; it is re-checked after the build so a file
edited mid-build cannot slip into an artifact under the old hash. What has no content a hash can pin (a FIFO,
a device, a kernel pseudo file, a dangling link) is refused as a recipe error. A PyPI file is a fixed-output
derivation taken out of the package's archive (sources_pypi.py); DVC data and logs have their own modules too.
"""

from __future__ import annotations

import os
from pathlib import Path

from .codehash import SOURCE_LIMIT
from .errors import HashMismatch, RecipeError, UsageError, did_you_mean
from .hashing import Unhashable, hash_tree
from .recipe import Source
from .resolved import ResolvedSource
from .sources_pypi import resolve_pypi, source_key
from .store import Store


def resolve(source: Source, store: Store, recipe_dir: Path, *, step: str, input_name: str,
            fetch: bool = True, recipe_file: str | None = None) -> ResolvedSource | None:
    """Hash (and fetch, for PyPI) a source. Returns None if it is not fetched and `fetch` is False."""
    if source.kind == "path":
        path = (recipe_dir / source.spec["path"]).absolute()
        cache = store.stat_cache() if store.exists() else None  # a dry run creates no store
        text = _script_text(path)
        try:
            digest = hash_tree(path, cache, follow_links=True).digest
        except Unhashable as e:
            raise RecipeError(f"the source {e.path} {e.problem}. {e.fix}", file=recipe_file or str(recipe_dir),
                              step=step, key=f"inputs.{input_name}.path") from None
        if cache is not None:
            cache.flush()
        kept = {"text": text} if text is not None and text == _script_text(path) else {}
        resolved = ResolvedSource(path, digest, {"kind": "path", "path": str(path), "hash": digest, **kept})
    elif source.kind == "pypi":
        where = {"file": recipe_file or str(recipe_dir), "step": step, "key": f"inputs.{input_name}.path"}
        resolved = resolve_pypi(source.spec, store, where, fetch=fetch)
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
        from .sources_dvc import resolve_dvc  # imports dvc: only for a recipe that has a DVC source
        try:
            resolved = resolve_dvc(source, store, recipe_dir, fetch=fetch)
        except UsageError as e:  # a repo, rev or path that is not there: placed in the recipe like the others
            raise RecipeError(str(e), file=recipe_file or str(recipe_dir), step=step,
                              key=f"inputs.{input_name}.dvc") from None
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


SCRIPTS = (".py", ".sh", ".bash", ".r", ".sql", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".jinja", ".j2", ".txt")


def _script_text(path: Path) -> str | None:
    """A small script or config file given as a source (a `command` step's script), kept whole in the
    lineage record as a python step's own files are (codehash.SOURCE_LIMIT), so `diff` can show its changed
    lines; None for anything else."""
    try:
        if path.suffix.lower() not in SCRIPTS or not path.is_file() or path.stat().st_size > SOURCE_LIMIT:
            return None
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


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
    return source_key(source.spec["pypi"], source.spec["path"])
