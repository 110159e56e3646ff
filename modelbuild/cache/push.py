"""Publishing artifacts to a cache: files first, manifests last, inputs before what uses them.

A manifest already in the cache means its files are there too (it was published after them), so a push of
what the cache has costs one existence check per artifact and reads no file. As Nix remembers what a binary
cache has (its positive narinfo cache), a store remembers for a day which keys it saw published at a cache
URL, so pushing again asks the cache nothing; a wrong memory costs only a cache miss, never a wrong artifact.
Concurrent pushes of one key are safe: files are content-addressed and each upload appears whole; the
manifest is replaced whole.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HashMismatch, UsageError
from ..hashing import hash_bytes, hash_file, hash_tree
from ..store import Store
from .manifest import VERSION, check_secret, encode, sign
from .remote import Remote


@dataclass
class PushReport:
    pushed: list[tuple[str, Path]] = field(default_factory=list)
    present: list[tuple[str, Path]] = field(default_factory=list)
    files: int = 0
    bytes: int = 0


def closure(store: Store, roots: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """The artifacts `roots` need, each with its key, inputs before the artifacts that use them."""
    order, seen = [], set()

    def visit(path: Path, key: str) -> None:
        if (path, key) in seen:
            return
        seen.add((path, key))
        for ref in store.refs_of(path):
            keys = store.keys_of(ref)
            if keys:  # a source fetched into the store has no key: the consumer's build fetches it again
                visit(ref, keys[-1])
        order.append((path, key))

    for path, key in roots:
        visit(path, key)
    return order


def push(store: Store, remote: Remote, secret: str, secret_where: str, items: list[tuple[Path, str]]) -> PushReport:
    report = PushReport()
    check_secret(secret, secret_where)
    memo = store.root / "cache" / "pushed" / hash_bytes(remote.url)
    known = [_remembered(memo, key) for _, key in items]
    ask = [key for (_, key), seen in zip(items, known, strict=True) if not seen]
    if ask:
        remote.create()
    answers = iter(remote.has_manifests(ask) if ask else [])
    present = [seen or next(answers) for seen in known]
    todo = [(p, k) for (p, k), there in zip(items, present, strict=True) if not there]
    report.present = [(k, p) for (p, k), there in zip(items, present, strict=True) if there]
    manifests, uploads = [], {}
    for path, key in todo:
        manifest, files = _manifest(store, path, key)
        manifests.append(manifest)
        uploads.update(files)
    missing = remote.missing_files(sorted(uploads))
    remote.put_files([str(uploads[d]) for d in missing], missing)
    report.files, report.bytes = len(missing), sum(uploads[d].stat().st_size for d in missing)
    for manifest, (path, key) in zip(manifests, todo, strict=True):  # last: a manifest vouches for its files
        signed = sign(manifest, secret, secret_where)
        remote.put_bytes(remote.manifest_path(key), encode(signed))
        report.pushed.append((key, path))
    _remember(memo, [key for _, key in items])
    return report


MEMORY_SECONDS = 24 * 3600


def _remembered(memo: Path, key: str) -> bool:
    try:
        return time.time() - os.stat(memo / key).st_mtime < MEMORY_SECONDS
    except OSError:
        return False


def _remember(memo: Path, keys: list[str]) -> None:
    """Note that the cache has these keys (best effort: a store that cannot take the note just asks again)."""
    try:
        memo.mkdir(parents=True, exist_ok=True)
        for key in keys:
            (memo / key).touch()
    except OSError:
        pass


def _manifest(store: Store, path: Path, key: str) -> tuple[dict, dict[str, Path]]:
    """An artifact's manifest (unsigned) and its files by digest; a damaged artifact is never published."""
    digest, _, name = path.name.partition("-")
    tree = hash_tree(path)
    hit = store.lookup(key)
    if tree.digest != digest or not hit or hit[0] != path:
        raise HashMismatch(f"{store.rel(path)} does not match its digest or its trace record (changed after it was "
                           "built), so it is not pushed. Run `modelbuild verify`; the next build rebuilds it")
    files, links, dirs, by_digest = {}, {}, [], {}
    for rel, entry in tree.entries.items():
        if rel.endswith("/"):
            dirs.append(rel)
        elif entry.link is not None:
            links[rel] = entry.link
        else:
            files[rel] = {"digest": entry.digest, "executable": entry.executable, "size": (path / rel).stat().st_size}
            by_digest.setdefault(entry.digest, path / rel)
    manifest = {"version": VERSION, "key": key, "name": name, "digest": digest, "files": files, "links": links,
                "dirs": dirs, "meta": hit[1],
                "refs": [{"key": (store.keys_of(r) or [None])[-1], "path": store.rel(r)} for r in store.refs_of(path)]}
    log = store.logs / f"{key}.log"
    if log.is_file():
        manifest["log"] = hash_file(log)
        by_digest[manifest["log"]] = log
    return manifest, by_digest


def targets(store: Store, what: str, recipe_targets) -> list[tuple[Path, str]]:
    """What `push WHAT` publishes: a recipe's built steps, or one artifact (a path, RECIPE:STEP or tag)."""
    if what.endswith((".yaml", ".yml")) and Path(what).is_file():
        return recipe_targets(what)
    path, key = store.resolve_with_key(what)
    if key is None:
        raise UsageError(f"{what} has no derivation key in the store's trace (a source fetched into the store, "
                         "or an artifact whose record is lost), so no other store could ask for it: push the "
                         "recipe step that uses it instead")
    return [(path, key)]
