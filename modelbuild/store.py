"""The content-addressed store: read-only artifact trees, the build trace, roots, locks.

Commit protocol (crash-safe at every point): a build writes into tmp/, the tree is hashed, made
read-only, renamed into objects/<digest>-<name>/, and the trace row key -> artifact is written last.
A crash before the trace write leaves at most an unreferenced object that gc removes; never a half tree
under a name that the trace points to.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import sqlite3
import stat
import time
import uuid
from pathlib import Path

from .errors import HashMismatch, StoreUnavailable, UsageError
from .hashing import (
    DIGEST_CHARS,
    META_FILE,
    Unhashable,
    hash_file,
    hash_json,
    hash_tree,
    stat_identity,
    walk_tree,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (path TEXT PRIMARY KEY, digest TEXT NOT NULL, fingerprint TEXT NOT NULL,
    created REAL NOT NULL, meta_digest TEXT);
CREATE TABLE IF NOT EXISTS trace (key TEXT PRIMARY KEY, path TEXT NOT NULL, meta TEXT NOT NULL,
    created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS trace_path ON trace(path);
CREATE TABLE IF NOT EXISTS refs (path TEXT NOT NULL, ref TEXT NOT NULL, PRIMARY KEY (path, ref));
CREATE TABLE IF NOT EXISTS roots (name TEXT PRIMARY KEY, path TEXT NOT NULL, key TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (name TEXT PRIMARY KEY, key TEXT NOT NULL, status TEXT NOT NULL,
    time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tag_history (seq INTEGER PRIMARY KEY AUTOINCREMENT, tag TEXT NOT NULL,
    old TEXT, new TEXT, key TEXT, time REAL NOT NULL, user TEXT NOT NULL, reason TEXT, action TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tag_history_tag ON tag_history(tag, seq);
CREATE TABLE IF NOT EXISTS stat_cache (path TEXT PRIMARY KEY, ino INTEGER, size INTEGER, mtime_ns INTEGER,
    ctime_ns INTEGER, digest TEXT NOT NULL);
"""
# Columns added to a table after a store was first made; `db` adds them to an older store's trace.sqlite.
ADDED_COLUMNS = {"artifacts": {"meta_digest": "TEXT"}}


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a store made by an earlier modelbuild up to the current schema (columns are only ever added)."""
    for table, columns in ADDED_COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns.items():
            if name not in have:
                with contextlib.suppress(sqlite3.OperationalError):  # another process added it just now
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # one path component: no '/', never '.' or '..'
KEY_RE = re.compile(f"[0-9a-f]{{{DIGEST_CHARS}}}")


def safe_name(name, what: str = "name") -> str:
    """A name that becomes one path component (a tag, a recipe, a step): checked before any use, so that
    `tag --delete ../../trace.sqlite` can never name a file outside roots/."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > 255:
        raise UsageError(f"{what} {name!r} must be letters, digits, '-', '_' or '.', starting with a letter or "
                         "digit (it becomes a file name in the store)")
    return name


TAG_PAST_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]*)(@.+|~[0-9]*)")


def _user() -> str:
    import getpass
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return str(os.getuid())


def parse_when(text: str, where: str) -> float:
    """A time given on the command line: an ISO date (its start, 00:00 UTC, as git's `@{date}`) or date and
    time (UTC unless it names its offset), or a Unix time."""
    from datetime import UTC, datetime
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{where}: '{text}' is not a time; write a date or date and time in ISO form, e.g. "
                         "2026-12-01 or 2026-12-01T14:30 (UTC unless an offset is given)") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def format_time(t: float) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def safe_key(key, where: str = "the trace") -> str:
    """A derivation key read from a record (it names drv/ and logs/ files): 32 hex digits, or tampering."""
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise HashMismatch(f"{where} names the key {key!r}, which is not a key (32 hex digits): the record was "
                           "changed after it was written. Run `modelbuild verify` to list the damage and "
                           "`modelbuild verify --repair` to rebuild the trace from the artifacts")
    return key


def inside(base: Path, rel, what: str, parent: Path | None = None) -> Path:
    """`base / rel`, refused when it leads outside `base` (`..`, an absolute path, a symlink out) or, given
    `parent`, is not an entry of that folder: a path read from a lineage record or the trace is used only
    after this check."""
    if not isinstance(rel, str) or not rel:
        raise HashMismatch(f"{what} is {rel!r}, not a path in the store: the record was changed after it was "
                           "written. Run `modelbuild verify --repair` to rebuild the trace from the artifacts")
    base = Path(base).absolute()
    path = base / rel
    real, real_base = os.path.realpath(path), os.path.realpath(base)
    if (os.path.isabs(rel) or ".." in Path(rel).parts or os.path.commonpath([real, real_base]) != real_base
            or (parent is not None and path.parent != Path(parent).absolute())):
        raise HashMismatch(f"{what} is {rel!r}, which leads outside {parent or base}: the record was tampered with, so "
                           "modelbuild does not follow it. Run `modelbuild verify` to list the damage and "
                           "`modelbuild verify --repair` to rebuild the trace from the artifacts")
    return path


# Why an OSError on the store means the store cannot be used as asked, and what to do about it.
_USE_ANOTHER = "use a store you may write (--store or MODELBUILD_STORE)"
_FAULTS = {
    errno.ENOSPC: ("there is no space left on its device", "Free some space (`modelbuild gc` removes artifacts no "
                   "root reaches) or point --store / MODELBUILD_STORE at a larger disk, and build again; nothing "
                   "half-written was kept"),
    errno.EDQUOT: ("your disk quota is used up", "Free some space (`modelbuild gc`) and build again; nothing "
                   "half-written was kept"),
    errno.EROFS: ("it is on a read-only file system", "Reading verbs (show, path, verify, roots, log, diff, "
                  "graph) work on it; to build, tag or gc, " + _USE_ANOTHER),
    errno.EACCES: ("you may not write it (permission denied)", "Reading verbs (show, path, verify, roots, log, "
                   "diff, graph) work on it; to build, tag or gc, " + _USE_ANOTHER + " or ask its owner"),
    errno.ENOTDIR: ("its path is a file, not a directory", "Point --store / MODELBUILD_STORE at a store "
                    "directory (a new one is created on the first build)"),
}
_FAULTS[errno.EPERM] = _FAULTS[errno.EACCES]


def store_fault(error: OSError, root: Path) -> StoreUnavailable | None:
    """The StoreUnavailable an OSError means (a full disk, a read-only or forbidden store), or None."""
    why = _FAULTS.get(error.errno)
    if why is None or (error.filename and not _under(str(error.filename), root)):
        return None  # not the store's fault: a recipe's file, say
    where = f" ({error.filename})" if error.filename else ""
    return StoreUnavailable(f"the store {root} cannot be used: {why[0]}{where}. {why[1]}")


def _under(path: str, root: Path) -> bool:
    path, root = os.path.abspath(path), os.path.abspath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def trace_fault(error: sqlite3.Error, root: Path) -> StoreUnavailable | HashMismatch | None:
    """What an SQLite error on trace.sqlite means: the store cannot be written (7), the trace is damaged (5),
    or neither (None: a bug, reported as one)."""
    text = str(error)
    for words in ("disk is full", "readonly", "unable to open", "disk I/O"):
        if words in text:
            code = errno.ENOSPC if words == "disk is full" else _why_unwritable(root)
            return store_fault(OSError(code, text, str(Path(root) / "trace.sqlite")), root)
    if not any(words in text for words in ("malformed", "not a database", "no such table", "no such column")):
        return None
    return HashMismatch(f"the store's trace {Path(root) / 'trace.sqlite'} is damaged ({text}): modelbuild cannot "
                        "tell which build made which artifact. Run `modelbuild verify --repair`: it moves the "
                        "damaged file aside and rebuilds the trace from the artifacts' lineage records")


@contextlib.contextmanager
def store_faults(root: Path):
    """Report a full disk, a read-only or forbidden store, or a damaged trace as what it is, not as a bug."""
    try:
        yield
    except OSError as e:
        fault = store_fault(e, root)
        if fault is None:
            raise
        raise fault from None
    except sqlite3.Error as e:
        fault = trace_fault(e, root)
        if fault is None:
            raise
        raise fault from None


def default_store_root() -> Path:
    return Path(os.environ.get("MODELBUILD_STORE") or "store")


def _why_unwritable(path: Path) -> int:
    """The errno that says why `path` (or its nearest existing parent) takes no writes: a read-only mount,
    a full disk, or else no permission."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        fs = os.statvfs(path)
    except OSError:
        return errno.EACCES
    if fs.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if fs.f_bavail * fs.f_frsize < 1 << 16 and os.access(path, os.W_OK):
        return errno.ENOSPC
    return errno.EACCES


def _same_file(path: Path, st: os.stat_result) -> bool:
    try:
        other = os.lstat(path)
    except OSError:
        return False
    return (other.st_ino, other.st_dev) == (st.st_ino, st.st_dev)


def _make_writable(path: Path) -> None:
    for dirpath, _dirnames, _ in os.walk(path):
        os.chmod(dirpath, 0o755)


def remove_tree(path: Path) -> None:
    """Delete a (possibly read-only) tree."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        _make_writable(path)
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _unused(entry: Path):
    """True while this process holds the flock of a tmp folder no live process flocks (see Store.new_tmp)."""
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # a stray file, or gone meanwhile
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free = True
        except BlockingIOError:
            free = False
        except OSError:  # no flock on folders here: the key lock decides
            free = True
        yield free
    finally:
        os.close(fd)


def tree_fingerprint(path: Path) -> str:
    """A cheap identity of an artifact's files (inode, size, mtime): a change means 're-hash before use'."""
    parts = []
    for rel, _, st in walk_tree(path, ()):  # .meta.json included: an edited lineage record is damage too
        ino, size, mtime, ctime = stat_identity(st)
        parts.append(f"{rel}:{ino}:{size}:{mtime}:{ctime}:{st.st_mode & 0o777:o}")
    return "\n".join(parts)


class SqliteStatCache:
    """Stat cache for sources, kept in trace.sqlite; writes are batched until `flush()` (and dropped on a
    read-only store, where `plan` still works)."""

    def __init__(self, db: sqlite3.Connection, read_only: bool = False):
        self.db, self.pending, self.read_only = db, [], read_only

    def get(self, path, st):
        row = self.db.execute("SELECT ino, size, mtime_ns, ctime_ns, digest FROM stat_cache WHERE path=?",
                              (path,)).fetchone()
        if row and tuple(row[:4]) == stat_identity(st):
            return row[4]
        return None

    def put(self, path, st, digest):
        self.pending.append((path, *stat_identity(st), digest))

    def flush(self):
        if self.pending and not self.read_only:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO stat_cache VALUES (?,?,?,?,?,?)", self.pending)
            self.pending = []


class Store:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_store_root()
        self.root = self.root.absolute()
        self.objects = self.root / "objects"
        self.links = self.objects / ".links"
        self.drv_dir = self.root / "drv"
        self.logs = self.root / "logs"
        self.roots_dir = self.root / "roots"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"
        self._db: sqlite3.Connection | None = None
        self.read_only = False  # set when the trace was opened read-only: nothing is written then
        self._tmp_fds: dict[str, int] = {}  # new_tmp's folders, flocked while in use

    # ---- setup -------------------------------------------------------------------------------------
    def exists(self) -> bool:
        self._not_a_file()
        return (self.root / "trace.sqlite").exists()

    def init(self) -> Store:
        """Make the store's layout (a build's first act); a store that cannot be written says why, here."""
        self._not_a_file()
        with store_faults(self.root):
            for d in (self.objects, self.links, self.drv_dir, self.logs, self.roots_dir, self.tmp, self.locks):
                d.mkdir(parents=True, exist_ok=True)
        self.require_writable()
        self.db  # noqa: B018 - creates the schema
        return self

    def writable(self) -> bool:
        """Whether this process may change the store: false on a read-only mount or for a user without
        write permission, where only the reading verbs work."""
        probe = self.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        trace = self.root / "trace.sqlite"
        return os.access(probe, os.W_OK) and (not trace.exists() or os.access(trace, os.W_OK))

    def require_writable(self) -> None:
        """Refuse a change to a store that cannot take one, before anything is half-done."""
        self._not_a_file()
        if not self.writable():
            code = _why_unwritable(self.root)
            raise store_fault(OSError(code, os.strerror(code), str(self.root)), self.root)

    def _not_a_file(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise store_fault(OSError(errno.ENOTDIR, "not a directory", str(self.root)), self.root)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._not_a_file()
            with store_faults(self.root):
                self._db = self._open_db() if self.writable() else self._open_read_only()
        return self._db

    def _open_db(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.root / "trace.sqlite", timeout=60, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=60000")
        db.executescript(SCHEMA)
        _add_missing_columns(db)
        return db

    def _open_read_only(self) -> sqlite3.Connection:
        """The trace of a store this process may not write: read-only, or, where SQLite cannot even make its
        shared-memory file beside it (a read-only mount), as an immutable file."""
        self.read_only = True
        uri = (self.root / "trace.sqlite").absolute().as_uri()
        error = None
        for mode in ("mode=ro", "immutable=1"):
            try:
                db = sqlite3.connect(f"{uri}?{mode}", uri=True, isolation_level=None, check_same_thread=False)
                db.execute("SELECT count(*) FROM artifacts").fetchone()
                return db
            except sqlite3.OperationalError as e:
                error = e
        raise error

    def close(self):
        if self._db is not None:
            self._db.close()
            self._db = None

    def stat_cache(self) -> SqliteStatCache:
        return SqliteStatCache(self.db, read_only=self.read_only)

    # ---- locks and tmp -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, key: str, blocking: bool = True):
        """One lock per derivation key across processes: filelock's flock, which the kernel releases on any
        exit (a killed build leaves no stale lock). A fresh instance each time, so a second hold in this
        process is refused too, as in another process: nothing here is re-entrant."""
        from filelock import FileLock, Timeout

        self.locks.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.locks / f"{key}.lock", mode=0o644, blocking=blocking)
        try:
            lock.acquire()
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    @contextlib.contextmanager
    def gc_lock(self, exclusive: bool):
        """Builds hold it shared, gc exclusive: gc never sees a committed artifact before it is rooted. flock by
        hand: filelock has no shared mode on flock, and its ReadWriteLock is an SQLite transaction that holds
        one mode per thread and instance per path, where a build's threads and workers each take this one."""
        self.locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.locks / "gc.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX | fcntl.LOCK_NB) if exclusive else fcntl.LOCK_SH)
            except BlockingIOError:
                raise UsageError("a build is running on this store; run gc when it has finished") from None
            yield
        finally:
            os.close(fd)

    def new_tmp(self, key: str) -> Path:
        """A folder of this process's own under tmp/, flocked while the process lives or until `drop_tmp`.

        Not every tmp folder is made under its key's lock: `build --check` rebuilds beside the artifact and
        the extra ranks of a distributed build train beside rank 0, which holds it. The flock keeps another
        build's `clean_tmp` from removing such a folder mid-build; the kernel drops it when the process dies."""
        d = self.tmp / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        d.mkdir(parents=True)
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a file system without flock on folders: the key lock alone guards it, as before
            os.close(fd)
        else:
            self._tmp_fds[str(d)] = fd
        return d

    def drop_tmp(self, d: Path) -> None:
        """Remove a folder from `new_tmp` and release it."""
        try:
            remove_tree(d)
        finally:
            fd = self._tmp_fds.pop(str(d), None)
            if fd is not None:
                os.close(fd)

    def clean_tmp(self) -> int:
        """Remove leftovers of killed builds: tmp dirs whose key lock nobody holds and no live process flocks."""
        removed = 0
        if not self.tmp.exists():
            return 0
        for entry in self.tmp.iterdir():
            key = entry.name.split(".", 1)[0]
            if len(key) != DIGEST_CHARS:
                continue  # kept areas (e.g. checkpoints/) are owned by their builders
            with self.lock(key, blocking=False) as got, _unused(entry) as unused:
                if got and unused:
                    remove_tree(entry)
                    removed += 1
        return removed

    # ---- trace -------------------------------------------------------------------------------------
    def lookup(self, key: str) -> tuple[Path, dict] | None:
        row = self.db.execute("SELECT path, meta FROM trace WHERE key=?", (key,)).fetchone()
        if not row:
            return None
        try:
            meta = json.loads(row[1])
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise HashMismatch(f"the trace's record of key {key} is not valid JSON: the trace was changed after it "
                               "was written. Run `modelbuild verify --repair` to rebuild it from the artifacts")
        return self.object_path(row[0], f"the trace's path of key {key}"), meta

    def object_path(self, rel, what: str) -> Path:
        """An artifact path read from a record: refused unless it names an entry directly under objects/."""
        return inside(self.root, rel, what, parent=self.objects)

    def failure_of(self, key: str) -> dict | None:
        """The failure recorded with the artifact of `key` ({type, message}), or None. A builder that raises
        a committed failure (`keep_artifact=True`: an evaluation gate that did not pass) keeps its artifact
        and fails its step; the trace remembers the failure, so the key fails again on every cache hit."""
        hit = self.lookup(key)
        failure = (hit[1] if hit else {}).get("failure")
        if not failure:
            return None
        return {"type": failure.get("type", "BuildError"), "kept": self.rel(hit[0]),
                "message": f"{failure.get('message', '').rstrip()}\nThe result is kept in the store as "
                           f"{self.rel(hit[0])} (`modelbuild show {self.rel(hit[0])}`)"}

    def meta_of(self, path: Path) -> dict | None:
        """Lineage of an artifact: the .meta.json of its first build (else the trace's record of it)."""
        try:
            meta = json.loads((Path(path) / META_FILE).read_text())
        except (OSError, ValueError):
            row = self.db.execute("SELECT meta FROM trace WHERE path=? ORDER BY created DESC LIMIT 1",
                                  (self.rel(path),)).fetchone()
            try:
                meta = json.loads(row[0]) if row else None
            except ValueError:
                meta = None
        return meta if isinstance(meta, dict) else None

    def log_of(self, path: Path) -> Path | None:
        """The build log a lineage record names, refused when the record points outside logs/."""
        log = (self.meta_of(path) or {}).get("log")
        if not log:
            return None
        return inside(self.root, log, f"the build log named by the lineage record of {self.rel(path)}",
                      parent=self.logs)

    def log_path(self, key: str, where: str = "the trace") -> Path:
        return self.logs / f"{safe_key(key, where)}.log"

    def rel(self, path: Path) -> str:
        return os.path.relpath(Path(path).absolute(), self.root)

    def write_drv(self, key: str, drv: dict) -> None:
        """Keep a derivation under its key; a damaged one already there is replaced, a sound one kept."""
        if self.read_drv(key) is None:
            self._atomic_write(self.drv_dir / f"{safe_key(key)}.json", json.dumps(drv, indent=2, sort_keys=True))

    def read_drv(self, key: str) -> dict | None:
        """The derivation of `key`, or None when it is missing or damaged (not JSON, or not hashing to its key)."""
        if not isinstance(key, str) or not KEY_RE.fullmatch(key):
            return None
        try:
            drv = json.loads((self.drv_dir / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        return drv if isinstance(drv, dict) and hash_json(drv) == key else None

    def _atomic_write(self, target: Path, text: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(text)
        os.replace(tmp, target)

    # ---- commit ------------------------------------------------------------------------------------
    def fetch_source(self, key: str, fill) -> Path:
        """A fixed-output source, fetched at most once: under the key's lock a sound artifact already there is
        the answer; otherwise `fill(work)` writes `work/out` and returns the artifact's name, the path inside it
        that the source hash covers, and the record's own fields (what was fetched from where)."""
        self.init()
        with self.lock(key):
            hit = self.lookup(key)
            if hit and self.check_artifact(hit[0]):
                return hit[0]
            work = self.new_tmp(key)
            try:
                started = time.time()
                name, hashed, fields = fill(work)
                meta = {"key": key, "kind": "source", **fields, "source_hash": hash_tree(hashed).digest,
                        "started": started, "seconds": round(time.time() - started, 3)}
                return self.commit(key, name, work / "out", meta, refs=[])
            finally:
                self.drop_tmp(work)

    def commit(self, key: str, name: str, out: Path, meta: dict, refs: list[Path]) -> Path:
        """Move a finished build from tmp into the store and record it. Returns the artifact path.

        A full disk or a read-only store is reported as such (StoreUnavailable); the trace row is written
        last, so a failure before it leaves at most an unreferenced object that gc removes."""
        with store_faults(self.root):
            return self._commit(key, name, out, meta, refs)

    def _commit(self, key: str, name: str, out: Path, meta: dict, refs: list[Path]) -> Path:
        tree = hash_tree(out)
        path = self.objects / f"{tree.digest}-{name}"
        files = {rel: e.digest for rel, e in tree.entries.items() if not rel.endswith("/")}
        meta = {**meta, "digest": tree.digest, "path": self.rel(path), "files": files}
        existed = self._usable_existing(path, tree.digest)
        if not existed:
            (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
            self._freeze(out, tree)
            try:
                os.rename(out, path)  # the top dir is still writable: moving a dir needs it, as non-root
            except OSError:
                if not self._usable_existing(path, tree.digest):
                    raise
            else:
                os.chmod(path, 0o555)
        if existed:  # its record may be from an earlier build of this key, killed before its trace row
            meta = self._own_record(path, key, meta)
        rel = self.rel(path)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            meta_file = path / META_FILE
            self.db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?,?)",
                            (rel, tree.digest, tree_fingerprint(path), time.time(),
                             hash_file(meta_file) if meta_file.exists() else None))
            self.db.executemany("INSERT OR IGNORE INTO refs VALUES (?,?)", [(rel, self.rel(r)) for r in refs])
            self.db.execute("INSERT OR REPLACE INTO trace VALUES (?,?,?,?)",
                            (key, rel, json.dumps(meta, sort_keys=True), time.time()))  # the commit point
        return path

    @staticmethod
    def _own_record(path: Path, key: str, meta: dict) -> dict:
        """The record to keep in the trace: the artifact's own .meta.json where it was written for this same key
        (a build killed between moving it in and writing its trace row left it), so that the two agree."""
        try:
            existing = json.loads((path / META_FILE).read_text())
        except (OSError, ValueError):
            return meta
        return existing if isinstance(existing, dict) and existing.get("key") == key else meta

    def _usable_existing(self, path: Path, digest: str) -> bool:
        """An identical artifact is already there (early cutoff); a damaged one is moved aside."""
        if not path.exists():
            return False
        if self.check_artifact(path, deep=True):
            return True
        self.quarantine(path)
        return False

    def _freeze(self, out: Path, tree) -> None:
        """Make the tree read-only and store each distinct file once, as a hard link into objects/.links.

        A file that is already linked elsewhere (a step ran `ln data.csv $MB_OUT/`) is copied first: making
        it read-only and part of the store must never change a user's own file."""
        for rel, entry in tree.entries.items():
            p = out / rel if rel != "." else out
            if rel.endswith("/") or entry.link is not None:
                continue
            link = self.links / f"{entry.digest}{'x' if entry.executable else ''}"
            st = os.lstat(p)
            if st.st_nlink > 1 and not _same_file(link, st):  # (the store's own copy needs no copying)
                tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:6]}")
                shutil.copyfile(p, tmp)
                os.chmod(tmp, st.st_mode & 0o777)
                os.replace(tmp, p)
            os.chmod(p, 0o555 if entry.executable else 0o444)
            if _same_file(link, st):  # already the shared copy (a builder linked an input's file): renaming
                continue  # one link over another of the same inode would do nothing and leave the temporary
            try:
                os.link(p, link)
            except FileExistsError:
                if self._link_is_sound(link, entry.digest):
                    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:6]}")
                    os.link(link, tmp)
                    os.replace(tmp, p)
                    continue
                self._set_aside(link)  # the shared copy was damaged: ours becomes the shared copy
                os.link(p, link)
            except OSError:
                continue  # a filesystem without hard links: keep the copy
            self._heal(link)
        if (out / META_FILE).exists():
            os.chmod(out / META_FILE, 0o444)
        for dirpath, _, _ in os.walk(out, topdown=False):
            if dirpath != str(out):
                os.chmod(dirpath, 0o555)

    def _link_is_sound(self, link: Path, digest: str) -> bool:
        return hash_file(link) == digest.rstrip("x")

    def _set_aside(self, link: Path) -> None:
        """A damaged shared file leaves .links as `<digest>.damaged`: kept, so that the next sound copy of
        that digest can replace it in every artifact that still holds it."""
        os.replace(link, link.with_name(f"{link.name}.damaged"))

    def _heal(self, link: Path) -> None:
        """A sound copy of a digest has arrived: every artifact holding the damaged copy set aside for that
        digest gets the sound one instead, so one rebuild repairs them all."""
        damaged = link.with_name(f"{link.name}.damaged")
        try:
            bad = os.lstat(damaged)
        except FileNotFoundError:
            return
        for path in self._holders(bad):
            parent = path.parent
            mode = stat.S_IMODE(os.lstat(parent).st_mode)
            os.chmod(parent, mode | stat.S_IWUSR)
            try:
                tmp = parent / f".{path.name}.{uuid.uuid4().hex[:6]}"
                os.link(link, tmp)
                os.replace(tmp, path)
            finally:
                os.chmod(parent, mode)
        damaged.unlink(missing_ok=True)

    def _holders(self, st: os.stat_result) -> list[Path]:
        """Every file in objects/ (but .links) that is the inode `st`."""
        found = []
        for entry in os.scandir(self.objects):
            if entry.name == ".links" or not entry.is_dir(follow_symlinks=False):
                continue
            for _, abspath, est in walk_tree(entry.path, ()):
                if est.st_ino == st.st_ino and est.st_dev == st.st_dev:
                    found.append(Path(abspath))
        return found

    # ---- checking ----------------------------------------------------------------------------------
    def check_artifact(self, path: Path, deep: bool = False) -> bool:
        """True if the artifact's content still matches the digest in its name.

        The quick check compares a stat fingerprint recorded at commit and re-hashes only on a change.
        """
        path = Path(path)
        if not path.is_dir():
            return False
        digest = path.name[:DIGEST_CHARS]
        if not deep:
            row = self.db.execute("SELECT fingerprint FROM artifacts WHERE path=?", (self.rel(path),)).fetchone()
            if row and row[0] == tree_fingerprint(path):
                return True
        try:
            ok = hash_tree(path).digest == digest
        except Unhashable:  # a link out of the artifact or a special file put into it: damage
            return False
        if ok:  # the lineage record is checked too: an edited .meta.json is tampering
            row = self.db.execute("SELECT meta_digest FROM artifacts WHERE path=?", (self.rel(path),)).fetchone()
            meta_file = path / META_FILE
            if row and row[0] and (not meta_file.exists() or hash_file(meta_file) != row[0]):
                return False
        if ok and not deep and not self.read_only:
            with self.db:
                self.db.execute("UPDATE artifacts SET fingerprint=? WHERE path=?",
                                (tree_fingerprint(path), self.rel(path)))
        return ok

    def changed_files(self, path: Path) -> list[str]:
        """Files of an artifact whose content no longer matches the deduplicated original."""
        meta = self.meta_of(path) or {}
        files = meta.get("files") or {}
        try:
            now = {rel: e.digest for rel, e in hash_tree(path).entries.items() if not rel.endswith("/")}
        except Unhashable as e:
            return [f"{e.path} {e.problem}"]
        changed = sorted(rel for rel in set(files) | set(now) if files.get(rel) != now.get(rel)) if files else sorted(now)
        row = self.db.execute("SELECT meta_digest FROM artifacts WHERE path=?", (self.rel(path),)).fetchone()
        meta_file = Path(path) / META_FILE
        if row and row[0] and (not meta_file.exists() or hash_file(meta_file) != row[0]):
            changed.append(META_FILE)
        return changed

    def quarantine(self, path: Path) -> Path:
        """Move a damaged artifact out of objects/ and forget it, so it is rebuilt, never used.

        A damaged file shared through .links is set aside there (`_set_aside`): the rebuild's sound copy then
        replaces it in the other artifacts that share it (`_heal`), and `verify --repair` quarantines those
        that no rebuild repaired."""
        rel = self.rel(path)
        bad = self.root / "corrupt" / f"{path.name}.{int(time.time())}.{uuid.uuid4().hex[:6]}"
        bad.parent.mkdir(parents=True, exist_ok=True)
        recorded = (self.meta_of(path) or {}).get("files") or {}
        for name, abspath, st in walk_tree(path):
            if not (stat.S_ISREG(st.st_mode) and st.st_nlink > 1):
                continue
            if recorded.get(name) == hash_file(abspath):
                continue  # a sound shared file stays shared
            for link in self._links_for(st):
                if not link.name.endswith(".damaged"):
                    self._set_aside(link)
        os.chmod(path, 0o755)  # moving a dir to another parent needs write access to it
        os.rename(path, bad)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM trace WHERE path=?", (rel,))
            self.db.execute("DELETE FROM artifacts WHERE path=?", (rel,))
        return bad  # roots stay: a rebuild brings the same path back, and verify reports it missing till then

    def _links_for(self, st: os.stat_result):
        if not self.links.exists():
            return []
        return [Path(e.path) for e in os.scandir(self.links) if e.inode() == st.st_ino]

    # ---- roots -------------------------------------------------------------------------------------
    def set_root(self, name: str, path: Path, key: str | None) -> None:
        """Name an artifact `KIND:NAME` (a recipe's step, or `tag:NAME`): a row, and roots/KIND/NAME -> it."""
        kind, _, leaf = name.partition(":")
        safe_name(kind, "a root's recipe name")
        safe_name(leaf, "a tag name" if kind == "tag" else "a root's step name")
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO roots VALUES (?,?,?,?)",
                            (name, self.rel(path), key, time.time()))
        link = self.roots_dir / name.replace(":", "/")
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:6]}")
        os.symlink(os.path.relpath(path, link.parent), tmp)
        os.replace(tmp, link)

    def set_tag(self, tag: str, path: Path, key: str | None, *, reason: str | None = None,
                action: str = "tag") -> str | None:
        """Point a tag at an artifact and keep the move in its history (old, new, time, user, reason), so that
        `TAG@DATE` and `TAG~N` can say which model it named then. Returns the old path (None if new)."""
        name = f"tag:{safe_name(tag, 'tag name')}"
        old = self.get_root(name)
        self.set_root(name, path, key)
        if old is None or old[0] != Path(path).absolute() or reason:
            self._record_tag_move(tag, old[0] if old else None, path, key, reason, action)
        return self.rel(old[0]) if old else None

    def delete_tag(self, tag: str, reason: str | None = None) -> bool:
        """Forget a tag (its row and its roots/tag/ link); False if there was none. The history keeps it."""
        safe_name(tag, "tag name")
        old = self.get_root(f"tag:{tag}")
        with self.db:
            gone = self.db.execute("DELETE FROM roots WHERE name=?", (f"tag:{tag}",)).rowcount
        (self.roots_dir / "tag" / tag).unlink(missing_ok=True)
        if old:
            self._record_tag_move(tag, old[0], None, None, reason, "delete")
        return bool(gone)

    def _record_tag_move(self, tag, old, new, key, reason, action) -> None:
        user = os.environ.get("MODELBUILD_USER") or _user()
        with self.db:
            self.db.execute("INSERT INTO tag_history (tag, old, new, key, time, user, reason, action) "
                            "VALUES (?,?,?,?,?,?,?,?)", (tag, self.rel(old) if old else None,
                                                         self.rel(new) if new else None, key, time.time(), user,
                                                         reason, action))

    def tag_history(self, tag: str | None = None) -> list[dict]:
        """Every move of a tag (or of all tags), oldest first: {tag, old, new, key, time, user, reason, action}."""
        columns = ("seq", "tag", "old", "new", "key", "time", "user", "reason", "action")
        where, args = ("WHERE tag=?", (tag,)) if tag else ("", ())
        try:
            rows = self.db.execute(f"SELECT {', '.join(columns)} FROM tag_history {where} ORDER BY seq", args)
        except sqlite3.OperationalError as e:  # a read-only store made before tag history: none kept
            if "no such table" in str(e):
                return []
            raise
        return [dict(zip(columns, r, strict=True)) for r in rows]

    def tag_at(self, tag: str, spec: str) -> tuple[Path, str | None]:
        """What `TAG@WHEN` (the tag as it stood at that time) or `TAG~N` (N moves ago) names."""
        history = self.tag_history(tag)
        current = self.get_root(f"tag:{tag}")
        if not history and current is None:
            raise UsageError(f"there is no tag '{tag}' and it has no history; `modelbuild roots` lists the tags")
        if not history:  # a tag set before history was kept: it has only its present
            history = [{"new": self.rel(current[0]), "key": current[1], "time": 0.0, "action": "tag"}]
        if spec.startswith("~"):
            back = int(spec[1:] or 1)
            if back >= len(history):
                raise UsageError(f"{tag}{spec}: the tag '{tag}' has moved only {len(history)} times (`modelbuild "
                                 f"tag --history {tag}` lists them); {tag}~{len(history) - 1} is the first")
            move = history[-1 - back]
        else:
            when = parse_when(spec[1:], f"{tag}{spec}")
            before = [m for m in history if m["time"] <= when]
            if not before:
                raise UsageError(f"{tag}{spec}: the tag '{tag}' did not exist yet then (it was first set "
                                 f"{format_time(history[0]['time'])}); `modelbuild tag --history {tag}` lists its moves")
            move = before[-1]
        if move["new"] is None:
            raise UsageError(f"{tag}{spec}: the tag '{tag}' was deleted then ({format_time(move['time'])})")
        path = self.object_path(move["new"], f"the history of tag {tag}")
        if not path.exists():
            raise UsageError(f"{tag}{spec} named {move['new']}, which is no longer in the store (`gc "
                             "--forget-tag-history`, or gc after the tag was deleted, removed it)")
        return path, move["key"]

    def tagged_ever(self) -> list[tuple[Path, str | None]]:
        """Every artifact a tag that exists has pointed to (gc keeps them: each answers "which model served
        then"). A deleted tag's moves stay in its history but keep nothing alive: deleting it lets them go."""
        tags = {n.removeprefix("tag:") for n, _, _ in self.roots() if n.startswith("tag:")}
        return [(self.object_path(m["new"], f"the history of tag {m['tag']}"), m["key"])
                for m in self.tag_history() if m["new"] and m["tag"] in tags]

    def forget_tag_history(self) -> int:
        """Drop every tag move but the present ones (`gc --forget-tag-history`); returns the rows dropped."""
        with self.db:
            return self.db.execute("DELETE FROM tag_history WHERE seq NOT IN (SELECT max(seq) FROM tag_history "
                                   "WHERE new IS NOT NULL GROUP BY tag) OR tag NOT IN (SELECT substr(name, 5) "
                                   "FROM roots WHERE name LIKE 'tag:%')").rowcount

    def record_attempts(self, rows: list[tuple[str, str, str]]) -> None:
        """The last build of each RECIPE:STEP, failed ones too, so `log` can show why it failed."""
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO attempts VALUES (?,?,?,?)",
                                [(n, k, st, time.time()) for n, k, st in rows])

    def last_attempt(self, name: str) -> tuple[str, str] | None:
        row = self.db.execute("SELECT key, status FROM attempts WHERE name=?", (name,)).fetchone()
        return (row[0], row[1]) if row else None

    # ---- the trial index of tune searches (modelbuild/tune.py) -----------------------------------------------
    TRIALS_SCHEMA = """CREATE TABLE IF NOT EXISTS tune_trials (search TEXT NOT NULL, seq INTEGER NOT NULL,
        point TEXT NOT NULL, key TEXT, status TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (search, seq))"""

    def trial_points(self, search: str) -> list[tuple[int, dict]]:
        """(seq, point) of a search's indexed trials, in order; [] for a store without the index."""
        if not self.exists():
            return []
        try:
            rows = self.db.execute("SELECT seq, point FROM tune_trials WHERE search=? ORDER BY seq",
                                   (search,)).fetchall()
        except sqlite3.OperationalError:  # no such table: no search ever ran on this store
            return []
        return [(seq, json.loads(point)) for seq, point in rows]

    def record_trial(self, search: str, seq: int, point: dict, key: str | None, status: str) -> None:
        """Index a finished trial, so a later run of the search tells it to the optimizer before asking more."""
        with self.db:
            self.db.execute(self.TRIALS_SCHEMA)
            self.db.execute("INSERT OR REPLACE INTO tune_trials VALUES (?,?,?,?,?,?)",
                            (search, seq, json.dumps(point, sort_keys=True), key, status, time.time()))

    def get_root(self, name: str) -> tuple[Path, str | None] | None:
        row = self.db.execute("SELECT path, key FROM roots WHERE name=?", (name,)).fetchone()
        return (self.object_path(row[0], f"the root {name}"), row[1]) if row else None

    def roots(self) -> list[tuple[str, Path, str | None]]:
        return [(n, self.object_path(p, f"the root {n}"), k) for n, p, k in
                self.db.execute("SELECT name, path, key FROM roots ORDER BY name")]

    def builds(self) -> list[tuple[str, Path, dict]]:
        """Every trace entry: key, artifact and lineage record, oldest first (`modelbuild runs`)."""
        out = []
        for key, rel, meta in self.db.execute("SELECT key, path, meta FROM trace ORDER BY created"):
            try:
                record = json.loads(meta)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append((key, self.object_path(rel, f"the trace's path of key {key}"), record))
        return out

    def artifacts(self) -> list[Path]:
        return [self.object_path(r[0], "an artifact's path in the trace")
                for r in self.db.execute("SELECT path FROM artifacts ORDER BY path")]

    def refs_of(self, path: Path) -> list[Path]:
        return [self.object_path(r[0], f"a reference of {self.rel(path)}")
                for r in self.db.execute("SELECT ref FROM refs WHERE path=?", (self.rel(path),))]

    def keys_of(self, path: Path) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT key FROM trace WHERE path=? ORDER BY created",
                                              (self.rel(path),))]

    # ---- naming artifacts on the command line ------------------------------------------------------
    def resolve_with_key(self, name: str) -> tuple[Path, str | None]:
        """Like `resolve`, plus the key of the build that a root names (None for a bare path)."""
        past = TAG_PAST_RE.fullmatch(name)
        if past and self.exists():
            return self.tag_at(past.group(1), past.group(2))
        for root_name in (f"tag:{name}", name):
            hit = self.get_root(root_name) if self.exists() else None
            if hit:
                return hit
        path = self.resolve(name)
        keys = self.keys_of(path)
        return path, (keys[-1] if keys else None)

    def resolve(self, name: str) -> Path:
        """An artifact named by store path, digest prefix, RECIPE:STEP (its last build), tag, or a tag's past:
        TAG@2026-12-01 (as it stood then) or TAG~1 (one move ago)."""
        if not self.exists():
            raise UsageError(f"there is no store at {self.root}: build something first, or point --store / "
                             "MODELBUILD_STORE at an existing store")
        past = TAG_PAST_RE.fullmatch(name)
        if past:
            return self.tag_at(past.group(1), past.group(2))[0]
        for root_name in (f"tag:{name}", name):
            hit = self.get_root(root_name)
            if hit:
                return hit[0]
        p = Path(name)
        if len(p.parts) > 1 or name.startswith("."):  # a path (a roots/ link too) must lead into objects/
            found = self._in_objects(p)
            if found is None:
                raise UsageError(f"'{name}' is not an artifact of the store {self.root}: a path must lead to an "
                                 f"artifact under {self.objects}. Name an artifact by its store path, a digest "
                                 "prefix, RECIPE:STEP (its last build) or a tag; `modelbuild roots` lists the "
                                 "named ones")
            if found.is_dir():
                return found
            p = Path(found.name)  # objects/<digest prefix>
        base = p.name
        if len(base) >= 6 and self.objects.exists():
            matches = [e for e in os.listdir(self.objects) if e.startswith(base) and e != ".links"]
            if len(matches) == 1:
                return self.objects / matches[0]
            if len(matches) > 1:
                raise UsageError(f"'{name}' names {len(matches)} artifacts ({', '.join(matches[:3])}, ...): "
                                 "give more of the digest")
        known = [n for n, _, _ in self.roots()]
        from .errors import did_you_mean
        hint = did_you_mean(name, known + [n.removeprefix("tag:") for n in known])
        raise UsageError(f"no artifact named '{name}' in the store {self.root}{hint}. Name an artifact by its "
                         "store path, a digest prefix, RECIPE:STEP (its last build) or a tag; "
                         "`modelbuild roots` lists the named ones")

    def _in_objects(self, path: Path) -> Path | None:
        """`path` (from the working directory, or from the store's root) as an entry of objects/, or None."""
        objects = Path(os.path.realpath(self.objects))
        for candidate in (path, self.root / path):
            real = Path(os.path.realpath(candidate))
            if real.parent == objects and real.name != ".links":
                return self.objects / real.name
        return None

    def verify_or_raise(self, path: Path) -> None:
        if not self.check_artifact(path, deep=True):
            raise HashMismatch(f"artifact {path} does not match its digest: its content was changed after it "
                               "was built. Run `modelbuild verify` to list the damage; the next build "
                               "moves it aside and rebuilds it")
