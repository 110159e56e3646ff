"""Content hashing: canonical JSON for derivations, xxh3-128 for files and trees.

Files are hashed through mmap (no copy into Python memory), which runs at memory speed on a file in the
page cache. A stat cache on (inode, size, mtime, ctime) lets an unchanged multi-GB file skip re-reading.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import xxhash

DIGEST_CHARS = 32  # full xxh3-128 in hex
META_FILE = ".meta.json"  # lineage beside the content; never part of an artifact's digest


def _normalise(value):
    """Make a value JSON-canonical: sorted mapping keys, tuples as lists, floats without aliases."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if str(k) in out:  # {1: a, "1": b} must not hash like {"1": b}
                raise TypeError(f"cannot hash a mapping whose keys {k!r} and {str(k)!r} are spelled alike")
            out[str(k)] = _normalise(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return {"__float__": repr(value)}
        return 0.0 if value == 0 else value  # -0.0 and 0.0 are one number
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy scalars, not arrays
        return _normalise(value.item())
    raise TypeError(f"cannot hash a value of type {type(value).__name__}: {value!r}")


def canonical_json(value) -> str:
    """One spelling per value: sorted keys, no spaces, floats in shortest round-trip form."""
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def hash_bytes(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return xxhash.xxh3_128_hexdigest(data)


def hash_json(value) -> str:
    return hash_bytes(canonical_json(value))


def hash_file(path: str | os.PathLike) -> str:
    """xxh3-128 of a file's bytes, through mmap so the hash runs at memory speed."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return xxhash.xxh3_128_hexdigest(b"")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return xxhash.xxh3_128_hexdigest(m)


class StatCache(Protocol):
    """Remembers file hashes by stat identity, so unchanged files are not read again."""

    def get(self, path: str, st: os.stat_result) -> str | None: ...
    def put(self, path: str, st: os.stat_result, digest: str) -> None: ...


def stat_identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What must match for a cached hash to stand: ctime catches a restored mtime, ino a replaced file."""
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def hash_file_cached(path: str, cache: StatCache | None, st: os.stat_result | None = None) -> str:
    st = st or os.stat(path)
    if cache is not None:
        hit = cache.get(path, st)
        if hit is not None:
            return hit
    digest = hash_file(path)
    if cache is not None:
        cache.put(path, st, digest)
    return digest


@dataclass(frozen=True)
class Entry:
    """One file of a tree: its hash, and whether it is executable (part of its identity)."""

    digest: str
    executable: bool = False
    link: str | None = None  # symlink target, for symlinks


@dataclass(frozen=True)
class TreeHash:
    digest: str
    entries: dict[str, Entry]  # relative posix path -> entry

    @property
    def size_hint(self) -> int:
        return len(self.entries)


def walk_tree(root: Path, exclude=(META_FILE,)):
    """Yield (relative posix path, absolute path, lstat) for every file and symlink, sorted, deterministic."""
    root = Path(root)
    stack = [root]
    items = []
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                rel = os.path.relpath(e.path, root).replace(os.sep, "/")
                if d == root and e.name in exclude:
                    continue
                st = e.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(e.path))
                    items.append((rel + "/", e.path, st))
                else:
                    items.append((rel, e.path, st))
    items.sort(key=lambda t: t[0])
    return items


def hash_tree(root: str | os.PathLike, cache: StatCache | None = None) -> TreeHash:
    """Hash a file or directory by content: each file's bytes, executable bit, relative path.

    A single file hashes as a tree of one entry named '.', so a moved or renamed file keeps its digest.
    """
    root = Path(root)
    st = os.stat(root)
    if not stat.S_ISDIR(st.st_mode):
        entries = {".": Entry(hash_file_cached(str(root), cache, st), bool(st.st_mode & 0o111))}
    else:
        entries = {}
        for rel, abspath, st in walk_tree(root):
            if rel.endswith("/"):
                entries[rel] = Entry("dir")
            elif stat.S_ISLNK(st.st_mode):
                entries[rel] = Entry("link", link=os.readlink(abspath))
            else:
                entries[rel] = Entry(hash_file_cached(abspath, cache, st), bool(st.st_mode & 0o111))
    manifest = "".join(
        f"{rel}\0{e.digest}\0{'x' if e.executable else '-'}\0{e.link or ''}\n" for rel, e in sorted(entries.items()))
    return TreeHash(hash_bytes(manifest), entries)
