"""`gc` and `verify`: keep what roots reach, prove the store's content and records are what they say, and
(`verify --repair`) rebuild the trace from the artifacts' own lineage records, as `nix-store --verify
--repair` does."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HashMismatch
from .hashing import DIGEST_CHARS, META_FILE, Unhashable, hash_file, hash_json, hash_tree
from .store import KEY_RE, NAME_RE, Store, remove_tree, tree_fingerprint


@dataclass
class GcReport:
    kept: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    bytes_freed: int = 0
    work_areas: list[Path] = field(default_factory=list)  # scratch (a training's checkpoints) of unfinished builds
    work_area_notes: dict[Path, str] = field(default_factory=dict)  # what each is (describe_work_area)


def live_set(store: Store, tag_history: bool = True) -> set[Path]:
    """Rooted artifacts and what their rooted builds were made from (an audit needs a model's data too);
    with `tag_history`, also every artifact a tag ever named (and its inputs): "which model served then"
    must stay answerable.

    Inputs are followed through each root's own build record (key), not through every build that ever
    produced the same bytes: an artifact made identically from old and new data keeps only what it is
    rooted by alive.
    """
    live, stack = set(), [(p, k) for _, p, k in store.roots()]
    if tag_history:
        stack += [(p, k) for p, k in store.tagged_ever() if p.exists()]
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
        for name, info in (hit[1].get("inputs") or {}).items():
            what = f"input {name} in the record of key {key}"  # a tampered path is refused, never followed
            if isinstance(info, dict) and info.get("kind") == "step":
                stack.append((store.object_path(info.get("path"), what), info.get("key")))
            elif isinstance(info, dict) and info.get("artifact"):
                stack.append((store.object_path(info["artifact"], what), None))
    return live


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            # a file linked only here and from .links goes with this artifact; one shared by others stays
            total += st.st_size if st.st_nlink <= 2 else 0
    return total


def collect(store: Store, dry_run: bool = False, forget_tag_history: bool = False) -> GcReport:
    """Remove what no root reaches. Artifacts a tag once named stay unless `forget_tag_history`, which also
    drops those past moves from the tags' histories (their present stays)."""
    report = GcReport()
    if not store.objects.exists():
        return report
    if forget_tag_history and not dry_run:
        store.forget_tag_history()
    live = live_set(store, tag_history=not forget_tag_history)
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
            if KEY_RE.fullmatch(key):  # a tampered key never names a file to delete
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
    """Work areas (`tmp/work/<key>`: a builder's scratch, a training's checkpoints) of builds that were killed and never built
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
            report.work_area_notes[entry] = describe_work_area(store, entry)
            report.bytes_freed += _size(entry)
            if not dry_run:
                remove_tree(entry)


def describe_work_area(store: Store, path: Path) -> str:
    """What a left-over work area is, for `gc` to name: whose it was (the step whose last attempt had its key,
    the builder from its derivation) and what it holds. Only a training keeps checkpoints there; another
    builder's area is scratch, often empty, and says so."""
    key = path.name
    steps = [n for (n,) in store.db.execute("SELECT name FROM attempts WHERE key=? ORDER BY name", (key,))]
    builder = (store.read_drv(key) or {}).get("builder") if KEY_RE.fullmatch(key) else None
    whose = " ".join(filter(None, [f"step {', '.join(steps)}" if steps else None, f"({builder})" if builder else None]))
    files = [p for p in path.rglob("*") if p.is_file()]
    if (path / "checkpoints").is_dir() and any(p.is_relative_to(path / "checkpoints") for p in files):
        held = "checkpoints its next build would resume from"
    elif files:
        held = f"scratch files ({len(files)}, {_size(path) / 1e6:.1f} MB)"
    else:
        held = "empty"
    return f"the work area of a build{' of ' + whose if whose else ''} that did not finish: {held}"


def _drop_stale_jobs(store: Store, older_than: float = 86400) -> None:
    jobs = store.tmp / "jobs"
    if jobs.exists():
        for e in os.scandir(jobs):
            if e.stat().st_mtime < time.time() - older_than:
                os.unlink(e.path)


def _objects(store: Store) -> list[Path]:
    return [store.objects / e for e in sorted(os.listdir(store.objects))
            if len(e) > DIGEST_CHARS and e != ".links"] if store.objects.exists() else []


def verify(store: Store, paths: list[Path] | None = None) -> list[tuple[str, str, list[str]]]:
    """Re-hash artifacts and check every record the store keeps; return (status, what, details) for each
    problem: CORRUPT (changed after it was written), MISSING (named, not there), UNKNOWN (a root link the
    trace has no record of: an emptied or replaced trace), and, harmless alone, UNRECORDED (an artifact the
    trace does not know: a build killed between its commit's two steps leaves one, and so does a lost trace)."""
    if not (store.root / "trace.sqlite").exists():
        return [("MISSING", "trace.sqlite", ["the store's trace is gone"])]
    trace = _trace_damage(store)
    if trace:
        return [("CORRUPT", "trace.sqlite", [trace])]  # nothing else can be checked against it
    problems = [("CORRUPT", "trace.sqlite", [why]) for *_, why in _tampered_rows(store)]
    if problems:
        return problems  # the checks below read these rows
    known = set(store.artifacts())
    for path in paths if paths is not None else _objects(store):
        if paths is None and path not in known:
            problems.append(("UNRECORDED", store.rel(path), ["the trace has no record of this artifact"]))
        elif not store.check_artifact(path, deep=True):
            problems.append(("CORRUPT", store.rel(path), store.changed_files(path) if path.exists() else ["(missing)"]))
        else:
            problems += [("CORRUPT", store.rel(path), [why]) for why in _trace_records_damage(store, path)]
    if paths is not None:
        return problems
    problems += [("CORRUPT", f"drv/{name}", [why]) for name, why in _drv_damage(store)]
    for name, path, _ in store.roots():
        if not path.exists():
            problems.append(("MISSING", store.rel(path), [f"the root {name} points to it"]))
    rooted = {name for name, _, _ in store.roots()}
    problems += [("UNKNOWN", store.rel(link), ["a root the trace does not have"])
                 for name, link in _root_links(store) if name not in rooted]
    return problems


def _trace_damage(store: Store) -> str | None:
    """Why trace.sqlite cannot be trusted (not a database, truncated, garbled), or None."""
    try:
        row = store.db.execute("PRAGMA quick_check").fetchone()
        store.db.execute("SELECT count(*) FROM trace").fetchone()
    except HashMismatch as e:  # raised on opening it
        return f"SQLite cannot read it: {e.__context__ or e}"
    except sqlite3.DatabaseError as e:
        return f"SQLite cannot read it: {e}"
    return None if row and row[0] == "ok" else f"SQLite's check found damage: {row[0] if row else 'no answer'}"


# Rows whose path or key becomes a file name: (table, column holding a path, column holding a key).
_NAMING_ROWS = (("trace", "path", "key"), ("artifacts", "path", None), ("refs", "path", None),
                ("refs", "ref", None), ("roots", "path", "key"), ("attempts", None, "key"))


def _tampered_rows(store: Store) -> list[tuple[str, str, object, str]]:
    """Trace rows naming a path outside objects/ or a key that is not one: (table, column, value, why)."""
    bad = []
    for table, path_column, key_column in _NAMING_ROWS:
        for column, check in ((path_column, _path_ok), (key_column, _key_ok)):
            if column:
                bad += [(table, column, value, f"its {table} table names {value!r} as a {column}: {why}")
                        for (value,) in store.db.execute(f"SELECT DISTINCT {column} FROM {table}")
                        if (why := check(store, value))]
    return bad


def _path_ok(store: Store, value) -> str | None:
    try:
        store.object_path(value, "")
    except HashMismatch:
        return "not an artifact in objects/"
    return None


def _key_ok(store: Store, value) -> str | None:
    return None if value is None or (isinstance(value, str) and KEY_RE.fullmatch(value)) else "not a key"


def _trace_records_damage(store: Store, path: Path) -> list[str]:
    """The trace's copies of an artifact's lineage record must equal its .meta.json (which matched its
    recorded hash): a record edited in the trace is tampering too."""
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError):
        return []
    damage = []
    for key, text in store.db.execute("SELECT key, meta FROM trace WHERE path=?", (store.rel(path),)):
        try:
            record = json.loads(text)
        except ValueError:
            damage.append(f"the trace's record of key {key} is not JSON")
            continue
        if key == meta.get("key") and record != meta:
            damage.append(f"the trace's record of key {key} differs from {META_FILE}")
    return damage


def _drv_damage(store: Store) -> list[tuple[str, str]]:
    """drv/<key>.json files that do not parse, or whose content does not hash to their key."""
    damage = []
    for entry in sorted(os.scandir(store.drv_dir), key=lambda e: e.name) if store.drv_dir.exists() else []:
        if not entry.name.endswith(".json") or entry.name.startswith("."):
            continue
        key = entry.name[:-5]
        try:
            drv = json.loads(Path(entry.path).read_text())
        except (OSError, ValueError):
            damage.append((entry.name, "not valid JSON"))
            continue
        if not KEY_RE.fullmatch(key) or hash_json(drv) != key:
            damage.append((entry.name, "its content does not hash to its key: it was edited"))
    return damage


def _root_links(store: Store) -> list[tuple[str, Path]]:
    """roots/<recipe>/<step> and roots/tag/<name> symlinks, as root names."""
    links = []
    if store.roots_dir.is_dir():
        for kind in sorted(os.scandir(store.roots_dir), key=lambda e: e.name):
            if kind.is_dir(follow_symlinks=False):
                links += [(f"{kind.name}:{e.name}", Path(e.path))
                          for e in sorted(os.scandir(kind.path), key=lambda e: e.name)
                          if e.is_symlink() and NAME_RE.fullmatch(kind.name) and NAME_RE.fullmatch(e.name)]
    return links


# ---- verify --repair ------------------------------------------------------------------------------

def repair(store: Store) -> list[str]:
    """Make the store sound again; return what was done, one line each. A damaged trace.sqlite is moved
    aside and rebuilt from the artifacts' .meta.json files and roots/; damaged artifacts, artifacts whose
    lineage record does not hold up, and damaged derivations are moved aside."""
    done = _replace_damaged_trace(store)
    for table, column, value, why in _tampered_rows(store):
        with store.db:
            store.db.execute(f"DELETE FROM {table} WHERE {column}=?", (value,))
        done.append(f"removed from the trace: {why}")
    known = set(store.artifacts())
    for path in _objects(store):
        if path in known:
            if not store.check_artifact(path, deep=True):
                done.append(f"quarantined {store.rel(path)}: {', '.join(store.changed_files(path)[:5])} changed "
                            f"(kept as {store.rel(store.quarantine(path))})")
            else:
                done += _restore_trace_record(store, path)
            continue
        meta, why = _trusted_meta(store, path)
        if why:
            done.append(f"quarantined {store.rel(path)}: {why} (kept as {store.rel(store.quarantine(path))})")
        else:
            _record(store, path, meta)
            done.append(f"recorded {store.rel(path)} (key {meta['key']}) from its lineage record")
    for name, why in _drv_damage(store):
        (store.drv_dir / name).unlink(missing_ok=True)
        done.append(f"removed drv/{name}: {why} (the next build writes it again)")
    done += _restore_roots(store)
    return done


def _replace_damaged_trace(store: Store) -> list[str]:
    if _trace_damage(store) is None:
        return []
    store.close()
    aside = store.root / f"trace.sqlite.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
    os.replace(store.root / "trace.sqlite", aside)
    for side in ("-wal", "-shm"):
        (store.root / f"trace.sqlite{side}").unlink(missing_ok=True)
    return [f"moved the damaged trace aside to {aside.name}; rebuilding it from the artifacts"]


def _trusted_meta(store: Store, path: Path) -> tuple[dict | None, str | None]:
    """An unrecorded artifact's lineage record, if it holds up against the artifact itself: its digest, path
    and file list match the content, its key is the hash of its derivation, its inputs stay in the store."""
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError):
        return None, f"its {META_FILE} is missing or not JSON"
    if not isinstance(meta, dict):
        return None, f"its {META_FILE} is not a lineage record"
    try:
        tree = hash_tree(path)
    except Unhashable as e:
        return None, f"{e.path} {e.problem}"
    files = {rel: e.digest for rel, e in tree.entries.items() if not rel.endswith("/")}
    digest = path.name[:DIGEST_CHARS]
    checks = [(tree.digest == digest, "its content does not match its digest"),
              (meta.get("digest") == digest and meta.get("path") == store.rel(path), f"its {META_FILE} names "
               "another artifact"),
              (meta.get("files") == files, f"its {META_FILE} lists other files than it holds"),
              (isinstance(meta.get("key"), str) and KEY_RE.fullmatch(meta["key"]), f"its {META_FILE} has no key"),
              ("derivation" not in meta or hash_json(meta["derivation"]) == meta.get("key"),
               f"its {META_FILE} was edited: its derivation does not hash to its key")]
    for ok, why in checks:
        if not ok:
            return None, why
    try:
        _refs(store, meta)
    except HashMismatch:
        return None, f"its {META_FILE} names inputs outside the store"
    return meta, None


def _refs(store: Store, meta: dict) -> list[Path]:
    refs = []
    for name, info in (meta.get("inputs") or {}).items():
        if not isinstance(info, dict):
            continue
        for field_ in (("path", "tune") if info.get("kind") == "step" else ("artifact",)):
            if info.get(field_):
                refs.append(store.object_path(info[field_], f"input {name}'s {field_}"))
    return refs


def _record(store: Store, path: Path, meta: dict) -> None:
    """Write an artifact's rows (artifacts, trace, refs) from its lineage record, as its commit did."""
    started = meta.get("started")
    created = started if isinstance(started, (int, float)) else os.stat(path / META_FILE).st_mtime
    rel = store.rel(path)
    with store.db:
        store.db.execute("BEGIN IMMEDIATE")
        store.db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?,?)",
                         (rel, meta["digest"], tree_fingerprint(path), created, hash_file(path / META_FILE)))
        store.db.executemany("INSERT OR IGNORE INTO refs VALUES (?,?)",
                             [(rel, store.rel(r)) for r in _refs(store, meta)])
        store.db.execute("INSERT OR REPLACE INTO trace VALUES (?,?,?,?)",
                         (meta["key"], rel, json.dumps(meta, sort_keys=True), created))


def _restore_trace_record(store: Store, path: Path) -> list[str]:
    """A trace record that differs from a sound .meta.json is written again from it."""
    if not _trace_records_damage(store, path):
        return []
    meta = json.loads((path / META_FILE).read_text())
    with store.db:
        store.db.execute("UPDATE trace SET meta=? WHERE key=?", (json.dumps(meta, sort_keys=True), meta["key"]))
        store.db.execute("DELETE FROM trace WHERE path=? AND key!=? AND json_valid(meta)=0",
                         (store.rel(path), meta["key"]))
    return [f"restored the trace's record of key {meta['key']} from {store.rel(path)}/{META_FILE}"]


def _restore_roots(store: Store) -> list[str]:
    """roots/ links the trace lacks become roots again, with the key of the artifact they name."""
    done, rooted = [], {name for name, _, _ in store.roots()}
    for name, link in _root_links(store):
        if name in rooted:
            continue
        target = Path(os.path.realpath(link))
        if target.parent != Path(os.path.realpath(store.objects)):
            done.append(f"left {store.rel(link)} alone: it leads outside objects/")
            continue
        target = store.objects / target.name  # a quarantined target stays a root: a rebuild brings it back
        row = store.db.execute("SELECT meta FROM trace WHERE path=?", (store.rel(target),)).fetchone()
        key = json.loads(row[0]).get("key") if row else None
        with store.db:
            store.db.execute("INSERT OR REPLACE INTO roots VALUES (?,?,?,?)",
                             (name, store.rel(target), key, os.lstat(link).st_mtime))
        done.append(f"restored root {name} -> {store.rel(target)}")
    return done
