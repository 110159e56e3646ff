"""The content-addressed store: read-only artifact trees, the build trace, roots, locks.

Commit protocol (crash-safe at every point): a build writes into tmp/, the tree is hashed, made
read-only, renamed into objects/<digest>-<name>/, and the trace row key -> artifact is written last.
A crash before the trace write leaves at most an unreferenced object that gc removes; never a half tree
under a name that the trace points to.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import stat
import time
import uuid
from pathlib import Path

from .errors import HashMismatch, UsageError
from .hashing import DIGEST_CHARS, META_FILE, hash_file, hash_tree, stat_identity, walk_tree

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


def default_store_root() -> Path:
    return Path(os.environ.get("MODELBUILD_STORE") or "store")


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


def tree_fingerprint(path: Path) -> str:
    """A cheap identity of an artifact's files (inode, size, mtime): a change means 're-hash before use'."""
    parts = []
    for rel, _, st in walk_tree(path, ()):  # .meta.json included: an edited lineage record is damage too
        ino, size, mtime, ctime = stat_identity(st)
        parts.append(f"{rel}:{ino}:{size}:{mtime}:{ctime}:{st.st_mode & 0o777:o}")
    return "\n".join(parts)


class SqliteStatCache:
    """Stat cache for sources, kept in trace.sqlite; writes are batched until `flush()`."""

    def __init__(self, db: sqlite3.Connection):
        self.db, self.pending = db, []

    def get(self, path, st):
        row = self.db.execute("SELECT ino, size, mtime_ns, ctime_ns, digest FROM stat_cache WHERE path=?",
                              (path,)).fetchone()
        if row and tuple(row[:4]) == stat_identity(st):
            return row[4]
        return None

    def put(self, path, st, digest):
        self.pending.append((path, *stat_identity(st), digest))

    def flush(self):
        if self.pending:
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

    # ---- setup -------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.root / "trace.sqlite").exists()

    def init(self) -> Store:
        for d in (self.objects, self.links, self.drv_dir, self.logs, self.roots_dir, self.tmp, self.locks):
            d.mkdir(parents=True, exist_ok=True)
        self.db  # noqa: B018 - creates the schema
        return self

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.root.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.root / "trace.sqlite", timeout=60, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=60000")
            db.executescript(SCHEMA)
            _add_missing_columns(db)
            self._db = db
        return self._db

    def close(self):
        if self._db is not None:
            self._db.close()
            self._db = None

    def stat_cache(self) -> SqliteStatCache:
        return SqliteStatCache(self.db)

    # ---- locks and tmp -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, key: str, blocking: bool = True):
        """One lock per derivation key across processes (flock: released by the kernel on any exit)."""
        self.locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.locks / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def gc_lock(self, exclusive: bool):
        """Builds hold it shared, gc exclusive: gc never sees a committed artifact before it is rooted."""
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
        d = self.tmp / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        d.mkdir(parents=True)
        return d

    def clean_tmp(self) -> int:
        """Remove leftovers of killed builds: tmp dirs whose key lock nobody holds."""
        removed = 0
        if not self.tmp.exists():
            return 0
        for entry in self.tmp.iterdir():
            key = entry.name.split(".", 1)[0]
            if len(key) != DIGEST_CHARS:
                continue  # kept areas (e.g. checkpoints/) are owned by their builders
            with self.lock(key, blocking=False) as got:
                if got:
                    remove_tree(entry)
                    removed += 1
        return removed

    # ---- trace -------------------------------------------------------------------------------------
    def lookup(self, key: str) -> tuple[Path, dict] | None:
        row = self.db.execute("SELECT path, meta FROM trace WHERE key=?", (key,)).fetchone()
        if not row:
            return None
        return self.root / row[0], json.loads(row[1])

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
        """Lineage of an artifact: the .meta.json of its first build."""
        try:
            return json.loads((Path(path) / META_FILE).read_text())
        except (OSError, ValueError):
            row = self.db.execute("SELECT meta FROM trace WHERE path=? ORDER BY created DESC LIMIT 1",
                                  (self.rel(path),)).fetchone()
            return json.loads(row[0]) if row else None

    def rel(self, path: Path) -> str:
        return os.path.relpath(Path(path).absolute(), self.root)

    def write_drv(self, key: str, drv: dict) -> None:
        target = self.drv_dir / f"{key}.json"
        if not target.exists():
            self._atomic_write(target, json.dumps(drv, indent=2, sort_keys=True))

    def read_drv(self, key: str) -> dict | None:
        try:
            return json.loads((self.drv_dir / f"{key}.json").read_text())
        except OSError:
            return None

    def _atomic_write(self, target: Path, text: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(text)
        os.replace(tmp, target)

    # ---- commit ------------------------------------------------------------------------------------
    def commit(self, key: str, name: str, out: Path, meta: dict, refs: list[Path]) -> Path:
        """Move a finished build from tmp into the store and record it. Returns the artifact path."""
        tree = hash_tree(out)
        path = self.objects / f"{tree.digest}-{name}"
        files = {rel: e.digest for rel, e in tree.entries.items() if not rel.endswith("/")}
        meta = {**meta, "digest": tree.digest, "path": self.rel(path), "files": files}
        if not self._usable_existing(path, tree.digest):
            (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
            self._freeze(out, tree)
            try:
                os.rename(out, path)  # the top dir is still writable: moving a dir needs it, as non-root
            except OSError:
                if not self._usable_existing(path, tree.digest):
                    raise
            else:
                os.chmod(path, 0o555)
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

    def _usable_existing(self, path: Path, digest: str) -> bool:
        """An identical artifact is already there (early cutoff); a damaged one is moved aside."""
        if not path.exists():
            return False
        if self.check_artifact(path, deep=True):
            return True
        self.quarantine(path)
        return False

    def _freeze(self, out: Path, tree) -> None:
        """Make the tree read-only and store each distinct file once, as a hard link into objects/.links."""
        for rel, entry in tree.entries.items():
            p = out / rel if rel != "." else out
            if rel.endswith("/") or entry.link is not None:
                continue
            os.chmod(p, 0o555 if entry.executable else 0o444)
            link = self.links / f"{entry.digest}{'x' if entry.executable else ''}"
            try:
                os.link(p, link)
            except FileExistsError:
                if self._link_is_sound(link, entry.digest):
                    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:6]}")
                    os.link(link, tmp)
                    os.replace(tmp, p)
                else:  # the shared copy was damaged: ours becomes the shared copy
                    link.unlink(missing_ok=True)
                    os.link(p, link)
            except OSError:
                pass  # a filesystem without hard links: keep the copy
        if (out / META_FILE).exists():
            os.chmod(out / META_FILE, 0o444)
        for dirpath, _, _ in os.walk(out, topdown=False):
            if dirpath != str(out):
                os.chmod(dirpath, 0o555)

    def _link_is_sound(self, link: Path, digest: str) -> bool:
        return hash_file(link) == digest.rstrip("x")

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
        ok = hash_tree(path).digest == digest
        if ok:  # the lineage record is checked too: an edited .meta.json is tampering
            row = self.db.execute("SELECT meta_digest FROM artifacts WHERE path=?", (self.rel(path),)).fetchone()
            meta_file = path / META_FILE
            if row and row[0] and (not meta_file.exists() or hash_file(meta_file) != row[0]):
                return False
        if ok and not deep:
            with self.db:
                self.db.execute("UPDATE artifacts SET fingerprint=? WHERE path=?",
                                (tree_fingerprint(path), self.rel(path)))
        return ok

    def changed_files(self, path: Path) -> list[str]:
        """Files of an artifact whose content no longer matches the deduplicated original."""
        meta = self.meta_of(path) or {}
        files = meta.get("files") or {}
        now = {rel: e.digest for rel, e in hash_tree(path).entries.items() if not rel.endswith("/")}
        changed = sorted(rel for rel in set(files) | set(now) if files.get(rel) != now.get(rel)) if files else sorted(now)
        row = self.db.execute("SELECT meta_digest FROM artifacts WHERE path=?", (self.rel(path),)).fetchone()
        meta_file = Path(path) / META_FILE
        if row and row[0] and (not meta_file.exists() or hash_file(meta_file) != row[0]):
            changed.append(META_FILE)
        return changed

    def quarantine(self, path: Path) -> Path:
        """Move a damaged artifact out of objects/ and forget it, so it is rebuilt, never used."""
        rel = self.rel(path)
        bad = self.root / "corrupt" / f"{path.name}.{int(time.time())}.{uuid.uuid4().hex[:6]}"
        bad.parent.mkdir(parents=True, exist_ok=True)
        for _, _abspath, st in walk_tree(path):  # shared hard links may carry the damage: drop them
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                for link in self._links_for(st):
                    link.unlink(missing_ok=True)
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
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO roots VALUES (?,?,?,?)",
                            (name, self.rel(path), key, time.time()))
        link = self.roots_dir / name.replace(":", "/")
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:6]}")
        os.symlink(os.path.relpath(path, link.parent), tmp)
        os.replace(tmp, link)

    def record_attempts(self, rows: list[tuple[str, str, str]]) -> None:
        """The last build of each RECIPE:STEP, failed ones too, so `log` can show why it failed."""
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO attempts VALUES (?,?,?,?)",
                                [(n, k, st, time.time()) for n, k, st in rows])

    def last_attempt(self, name: str) -> tuple[str, str] | None:
        row = self.db.execute("SELECT key, status FROM attempts WHERE name=?", (name,)).fetchone()
        return (row[0], row[1]) if row else None

    def get_root(self, name: str) -> tuple[Path, str | None] | None:
        row = self.db.execute("SELECT path, key FROM roots WHERE name=?", (name,)).fetchone()
        return (self.root / row[0], row[1]) if row else None

    def roots(self) -> list[tuple[str, Path, str | None]]:
        return [(n, self.root / p, k) for n, p, k in
                self.db.execute("SELECT name, path, key FROM roots ORDER BY name")]

    def artifacts(self) -> list[Path]:
        return [self.root / r[0] for r in self.db.execute("SELECT path FROM artifacts ORDER BY path")]

    def refs_of(self, path: Path) -> list[Path]:
        return [self.root / r[0] for r in self.db.execute("SELECT ref FROM refs WHERE path=?", (self.rel(path),))]

    def keys_of(self, path: Path) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT key FROM trace WHERE path=? ORDER BY created",
                                              (self.rel(path),))]

    # ---- naming artifacts on the command line ------------------------------------------------------
    def resolve_with_key(self, name: str) -> tuple[Path, str | None]:
        """Like `resolve`, plus the key of the build that a root names (None for a bare path)."""
        for root_name in (f"tag:{name}", name):
            hit = self.get_root(root_name) if self.exists() else None
            if hit:
                return hit
        path = self.resolve(name)
        keys = self.keys_of(path)
        return path, (keys[-1] if keys else None)

    def resolve(self, name: str) -> Path:
        """An artifact named by store path, digest prefix, RECIPE:STEP (its last build) or tag."""
        if not self.exists():
            raise UsageError(f"there is no store at {self.root}: build something first, or point --store / "
                             "MODELBUILD_STORE at an existing store")
        for root_name in (f"tag:{name}", name):
            hit = self.get_root(root_name)
            if hit:
                return hit[0]
        p = Path(name)
        if p.is_dir() and (p.absolute().parent == self.objects):
            return p.absolute()
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

    def verify_or_raise(self, path: Path) -> None:
        if not self.check_artifact(path, deep=True):
            raise HashMismatch(f"artifact {path} does not match its digest: its content was changed after it "
                               "was built. Run `modelbuild verify` to list the damage; the next build "
                               "moves it aside and rebuilds it")
