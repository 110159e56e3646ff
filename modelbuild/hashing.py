"""Content hashing: canonical JSON for derivations, xxh3-128 for files and trees.

Files are hashed through mmap (no copy into Python memory), which runs at memory speed on a file in the
page cache. A stat cache on (inode, size, mtime, ctime) lets an unchanged multi-GB file skip re-reading.
Sources follow links to their content and artifacts keep only links inside themselves (`hash_tree`'s
`follow_links`); what has no content to pin (FIFOs, devices, kernel pseudo files, links to nowhere) raises
Unhashable before it is ever opened. docs/hashing.md says why.
"""

from __future__ import annotations

import errno
import json
import math
import mmap
import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import xxhash

from .errors import BuildError

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
    """xxh3-128 of a file's bytes, through mmap so the hash runs at memory speed.

    A file whose size says 0 is read instead: mmap sees nothing of a file whose content is made on read."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            h = xxhash.xxh3_128()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return h.hexdigest()
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
    """hash_file through the stat cache; `st` is the stat of the content (a link's target, not the link)."""
    st = st or os.stat(path)
    if cache is None or st.st_size == 0:  # a size of 0 does not tell an empty file from a made-up one
        return hash_file(path)
    hit = cache.get(path, st)
    if hit is not None:
        return hit
    digest = hash_file(path)
    cache.put(path, st, digest)
    return digest


class Unhashable(BuildError):
    """A file that has no content a hash can pin: a special file, a pseudo file, a link that leads nowhere
    or out of its tree. `path` names it, `problem` says what it is, `fix` what to do instead."""

    def __init__(self, path: str, problem: str, fix: str):
        super().__init__(f"{path} {problem}. {fix}")
        self.path, self.problem, self.fix = path, problem, fix


SOURCE_FIX = ("Write the data to a regular file and name that in the recipe: only regular files, folders and "
              "links to them are hashed")
LINK_FIX = "Fix or remove the link, or put the data it should lead to there as a regular file"
OUTPUT_FIX = ("An artifact holds regular files, folders and links to its own files: write the data into the "
              "output as a regular file (copy a file rather than link to it; a link may point, by a relative "
              "path, only to a file of the same output)")

SPECIAL_FILES = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket", stat.S_IFBLK: "a block device",
                 stat.S_IFCHR: "a character device"}
# Kernel file systems whose files are made up on each read: their size says 0 or 4096, their stat never changes.
PSEUDO_FILE_SYSTEMS = frozenset({"proc", "sysfs", "debugfs", "tracefs", "securityfs", "cgroup", "cgroup2",
                                 "configfs", "pstore", "efivarfs", "bpf", "fusectl", "binfmt_misc", "mqueue",
                                 "nsfs", "rpc_pipefs", "nfsd"})


def pseudo_devices(mountinfo: str = "/proc/self/mountinfo") -> dict[int, str]:
    """st_dev -> file system type of each mounted pseudo file system (empty where there is no mountinfo)."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        fstype = fields[fields.index("-", 6) + 1]
        if fstype in PSEUDO_FILE_SYSTEMS:
            major, minor = fields[2].split(":")
            found[os.makedev(int(major), int(minor))] = fstype
    return found


def refuse_odd(path: str, st: os.stat_result, fix: str, pseudo: dict[int, str]) -> None:
    """Raise Unhashable unless `st` is a regular file or folder with content of its own."""
    kind = SPECIAL_FILES.get(stat.S_IFMT(st.st_mode))
    if kind:
        raise Unhashable(path, f"is {kind}: it has no content to hash (reading it may block or never end)", fix)
    if st.st_dev in pseudo:
        raise Unhashable(path, f"is on the {pseudo[st.st_dev]} pseudo file system: the kernel makes its content up "
                         f"on every read and its size and times do not change with it, so no hash can pin it",
                         f"Copy it to a regular file (`cat {path} > FILE`) and name that in the recipe")


@dataclass(frozen=True)
class Entry:
    """One file of a tree: its hash, and whether it is executable (part of its identity)."""

    digest: str
    executable: bool = False
    link: str | None = None  # for a symlink kept in an artifact: its resolved target, relative to its folder


@dataclass(frozen=True)
class TreeHash:
    digest: str
    entries: dict[str, Entry]  # relative posix path -> entry

    @property
    def size_hint(self) -> int:
        return len(self.entries)


def walk_tree(root: Path, exclude=(META_FILE,), follow_links: bool = False):
    """Yield (relative posix path, absolute path, stat) for every file, folder and symlink, sorted.

    Without `follow_links` a link is yielded as itself (lstat). With it, a link is yielded as what it leads
    to (stat), a folder reached by a link is walked too, and a dangling link or a loop raises Unhashable."""
    root = Path(root)
    top = os.stat(root)
    stack = [(root, frozenset({(top.st_dev, top.st_ino)}))]
    items = []
    while stack:
        d, above = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                rel = os.path.relpath(e.path, root).replace(os.sep, "/")
                if d == root and e.name in exclude:
                    continue
                st = _followed(e) if follow_links and e.is_symlink() else e.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    here = (st.st_dev, st.st_ino)
                    if here in above:
                        raise Unhashable(e.path, "is a link to a folder that contains it: following it is a loop",
                                         LINK_FIX)
                    stack.append((Path(e.path), above | {here}))
                    items.append((rel + "/", e.path, st))
                else:
                    items.append((rel, e.path, st))
    items.sort(key=lambda t: t[0])
    return items


def _followed(entry: os.DirEntry) -> os.stat_result:
    try:
        return os.stat(entry.path)
    except OSError as e:
        target = os.readlink(entry.path)
        if e.errno == errno.ELOOP:
            raise Unhashable(entry.path, f"is a symbolic link loop (through {target!r})",
                             LINK_FIX) from None
        raise Unhashable(entry.path, f"is a symbolic link to {target!r}, which does not exist",
                         LINK_FIX) from None


def hash_tree(root: str | os.PathLike, cache: StatCache | None = None, *, follow_links: bool = False) -> TreeHash:
    """Hash a file or directory by content: each file's bytes, executable bit, relative path.

    A single file hashes as a tree of one entry named '.', so a moved or renamed file keeps its digest.
    `follow_links` is for sources: a link hashes as the content it leads to, as a copy would. Without it (for
    artifacts) a link is kept by its target inside the tree, whose content is hashed there anyway. Anything
    a hash cannot pin raises Unhashable rather than be trusted by name.
    """
    root = Path(root)
    fix = SOURCE_FIX if follow_links else OUTPUT_FIX
    pseudo = pseudo_devices() if follow_links else {}
    st = os.stat(root)
    if not stat.S_ISDIR(st.st_mode):
        refuse_odd(str(root), st, fix, pseudo)
        entries = {".": Entry(hash_file_cached(str(root), cache, st), bool(st.st_mode & 0o111))}
    else:
        entries = {}
        for rel, abspath, st in walk_tree(root, follow_links=follow_links):
            if rel.endswith("/"):
                entries[rel] = Entry("dir")
            elif stat.S_ISLNK(st.st_mode):
                entries[rel] = Entry("link", link=_inner_target(root, rel, abspath))
            else:
                refuse_odd(abspath if follow_links else f"the output file '{rel}'", st, fix, pseudo)
                entries[rel] = Entry(hash_file_cached(abspath, cache, st), bool(st.st_mode & 0o111))
    manifest = "".join(
        f"{rel}\0{e.digest}\0{'x' if e.executable else '-'}\0{e.link or ''}\n" for rel, e in sorted(entries.items()))
    return TreeHash(hash_bytes(manifest), entries)


def _inner_target(root: Path, rel: str, abspath: str) -> str:
    """A link's target, normalised: what it finally resolves to, relative to the link's folder. It must stay
    inside the tree by its text and through other links: the tree moves into the store, leaving the rest."""
    target = os.readlink(abspath)
    name = f"the output file '{rel}'"
    if os.path.isabs(target):
        raise Unhashable(name, f"is a symbolic link to the absolute path {target!r}", OUTPUT_FIX)
    inside = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if inside == ".." or inside.startswith("../"):
        raise Unhashable(name, f"is a symbolic link to {target!r}, outside the output", OUTPUT_FIX)
    try:
        real = os.path.realpath(abspath, strict=True)
    except OSError:
        raise Unhashable(name, f"is a symbolic link to {target!r}, which does not exist (or is a loop)",
                         OUTPUT_FIX) from None
    top = os.path.realpath(root)
    if os.path.commonpath([top, real]) != top:
        raise Unhashable(name, f"is a symbolic link to {target!r}, which leads outside the output", OUTPUT_FIX)
    return posixpath.relpath(Path(os.path.relpath(real, top)).as_posix(), posixpath.dirname(rel) or ".")
