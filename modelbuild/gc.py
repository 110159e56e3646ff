"""`gc` and `verify`: keep what roots reach, and prove the store's content is what its names say."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .hashing import DIGEST_CHARS
from .store import Store, remove_tree


@dataclass
class GcReport:
    kept: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    bytes_freed: int = 0
    work_areas: list[Path] = field(default_factory=list)  # checkpoints of builds that never finished


def live_set(store: Store) -> set[Path]:
    """Rooted artifacts and what their rooted builds were made from (an audit needs a model's data too).

    Inputs are followed through each root's own build record (key), not through every build that ever
    produced the same bytes: an artifact made identically from old and new data keeps only what it is
    rooted by alive.
    """
    live, stack = set(), [(p, k) for _, p, k in store.roots()]
    seen_keys = set()
    while stack:
        path, key = stack.pop()
        if (path, key) in seen_keys:
            continue
        seen_keys.add((path, key))
        live.add(path)
        hit = store.lookup(key) if key else None
        if hit is None:
            stack.extend((p, None) for p in store.refs_of(path) if p not in live)
            continue
        for info in (hit[1].get("inputs") or {}).values():
            if info.get("kind") == "step":
                stack.append((store.root / info["path"], info.get("key")))
            elif info.get("artifact"):
                stack.append((store.root / info["artifact"], None))
    return live


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            # a file linked only here and from .links goes with this artifact; one shared by others stays
            total += st.st_size if st.st_nlink <= 2 else 0
    return total


def collect(store: Store, dry_run: bool = False) -> GcReport:
    report = GcReport()
    if not store.objects.exists():
        return report
    live = live_set(store)
    _drop_idle_work_areas(store, report, dry_run)
    for entry in sorted(store.objects.iterdir()):
        if entry.name == ".links":
            continue
        if entry in live:
            report.kept.append(entry)
            continue
        report.removed.append(entry)
        if dry_run:
            report.bytes_freed += _size(entry)
            continue
        rel = store.rel(entry)
        keys = store.keys_of(entry)
        with store.db:  # forget first: a crash after this leaves an unreferenced tree, never a dangling trace
            store.db.execute("BEGIN IMMEDIATE")
            store.db.execute("DELETE FROM trace WHERE path=?", (rel,))
            store.db.execute("DELETE FROM artifacts WHERE path=?", (rel,))
            store.db.execute("DELETE FROM refs WHERE path=?", (rel,))
        report.bytes_freed += _size(entry)
        remove_tree(entry)
        for key in keys:
            (store.logs / f"{key}.log").unlink(missing_ok=True)
    if not dry_run:
        _drop_unshared_links(store, report)
        _drop_stale_jobs(store)
        _drop_orphan_records(store)
    return report


def _drop_orphan_records(store: Store) -> None:
    """Derivations no build record or root names, check logs, stat-cache rows of files that are gone."""
    keep = {r[0] for r in store.db.execute("SELECT key FROM trace UNION SELECT key FROM roots "
                                           "UNION SELECT key FROM attempts")}
    for e in os.scandir(store.drv_dir):
        if e.name.endswith(".json") and e.name[:-5] not in keep:
            os.unlink(e.path)
    for e in os.scandir(store.logs):
        if e.name.endswith(".check.log") or (e.name.endswith(".log") and e.name.split(".")[0] not in keep):
            os.unlink(e.path)
    gone = [(p,) for (p,) in store.db.execute("SELECT path FROM stat_cache") if not os.path.exists(p)]
    with store.db:
        store.db.executemany("DELETE FROM stat_cache WHERE path=?", gone)


def _drop_unshared_links(store: Store, report: GcReport) -> None:
    """A file in .links with one link left belongs to no artifact any more."""
    for e in os.scandir(store.links):
        st = e.stat(follow_symlinks=False)
        if st.st_nlink == 1:
            report.bytes_freed += st.st_size
            os.unlink(e.path)


def _drop_idle_work_areas(store: Store, report: GcReport, dry_run: bool) -> None:
    """Work areas (`tmp/work/<key>`: a training's checkpoints) of builds that were killed and never built
    again. A successful build removes its own; one whose key is locked is in use and stays. Removing one
    means that key's next build starts from the beginning instead of resuming."""
    work = store.tmp / "work"
    if not work.is_dir():
        return
    for entry in sorted(work.iterdir()):
        with store.lock(entry.name, blocking=False) as free:
            if not free:
                continue
            report.work_areas.append(entry)
            report.bytes_freed += _size(entry)
            if not dry_run:
                remove_tree(entry)


def _drop_stale_jobs(store: Store, older_than: float = 86400) -> None:
    jobs = store.tmp / "jobs"
    if jobs.exists():
        for e in os.scandir(jobs):
            if e.stat().st_mtime < time.time() - older_than:
                os.unlink(e.path)


def verify(store: Store, paths: list[Path] | None = None) -> list[tuple[Path, list[str]]]:
    """Re-hash artifacts; return the damaged ones with the files that changed."""
    damaged = []
    targets = paths if paths is not None else [
        store.objects / e for e in sorted(os.listdir(store.objects)) if len(e) > DIGEST_CHARS and e != ".links"]
    for path in targets:
        if not store.check_artifact(path, deep=True):
            damaged.append((path, store.changed_files(path) if path.exists() else ["(missing)"]))
    for _, path, _ in store.roots():
        if not path.exists():
            damaged.append((path, ["(missing: a root points to it)"]))
    return damaged
