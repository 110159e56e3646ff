"""`{log: DIR}` sources: a server's request or feedback log, or any folder of Parquet/CSV drops, imported
into the store as a fixed-output artifact keyed by its content.

Only closed files are read: a segment still being written (`*.open`, see serving/requestlog.py) and hidden
files are not. JSON Lines records are kept when their `time` falls in the window (`since`, `until`, or the
`last` 7d, 12h, 30m); Parquet and CSV drops are imported whole. The key is the hash of what was selected,
so a new segment in the window changes it, and nothing else does: an unchanged log is a cache hit.

    inputs:
      traffic: {log: ../serve-logs, glob: "requests-*", last: 7d}
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
from pathlib import Path

from .errors import DataValidationError, RecipeError, did_you_mean
from .hashing import hash_bytes, hash_json
from .recipe import Source
from .resolved import ResolvedSource
from .store import Store, parse_when

LINES = (".jsonl", ".ndjson", ".jsonl.gz")
DROPS = (".parquet", ".pq", ".csv", ".csv.gz")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def window(spec: dict, where: dict) -> tuple[float | None, float | None]:
    """(since, until) as Unix times; `last` counts back from now."""
    since = parse_when(str(spec["since"]), f"{where['key']}.since") if spec.get("since") is not None else None
    until = parse_when(str(spec["until"]), f"{where['key']}.until") if spec.get("until") is not None else None
    if spec.get("last") is not None:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(spec["last"]))
        if not m:
            raise RecipeError(f"`last:` is a duration such as 7d, 12h or 30m, got {spec['last']!r}", **where)
        since = time.time() - float(m.group(1)) * UNITS[m.group(2)]
    return since, until


def _closed_files(folder: Path, glob: str | None) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
             p.relative_to(folder).parts) and p.name.endswith(LINES + DROPS)]
    if glob:
        files = [p for p in files if fnmatch.fnmatch(p.name, glob) or fnmatch.fnmatch(str(p.relative_to(folder)), glob)]
    return sorted(files)


def _in_window(line: bytes, since, until) -> bool:
    if since is None and until is None:
        return True
    try:
        stamp = json.loads(line).get("time")
        t = parse_when(str(stamp), "a log record's time")
    except (ValueError, AttributeError, TypeError, Exception):  # noqa: BLE001 - a record without a time is outside
        return False
    return (since is None or t >= since) and (until is None or t < until)


def select(folder: Path, spec: dict, where: dict) -> dict[str, bytes]:
    """The content to import, by relative path: window-filtered JSON Lines, whole drops."""
    import gzip

    since, until = window(spec, where)
    chosen = {}
    for path in _closed_files(folder, spec.get("glob")):
        rel = str(path.relative_to(folder))
        data = path.read_bytes()
        if path.name.endswith(LINES):
            text = gzip.decompress(data) if path.name.endswith(".gz") else data
            kept = b"".join(line for line in text.splitlines(keepends=True) if line.strip()
                            and _in_window(line, since, until))
            if kept:
                chosen[rel.removesuffix(".gz")] = kept
        else:
            chosen[rel] = data
    return chosen


def resolve_log(source: Source, store: Store, recipe_dir: Path, *, step: str, input_name: str, recipe_file: str,
                fetch: bool = True) -> ResolvedSource | None:
    spec = source.spec
    where = {"file": recipe_file, "step": step, "key": f"inputs.{input_name}"}
    folder = (recipe_dir / spec["log"]).absolute()
    if not folder.is_dir():
        written = Path(spec["log"])
        near = [str(written.parent / p.name) for p in folder.parent.iterdir() if p.is_dir()] \
            if folder.parent.is_dir() else []
        raise RecipeError(f"the log folder {folder} does not exist or is not a folder{did_you_mean(written, near)}; "
                          "`log:` is relative to the recipe's folder", **{**where, "key": f"{where['key']}.log"})
    chosen = select(folder, spec, where)
    if not chosen:
        window_words = ", ".join(f"{k} {spec[k]}" for k in ("since", "until", "last") if spec.get(k) is not None)
        raise DataValidationError(f"file {recipe_file}, step '{step}', key '{where['key']}': the log {folder} has no "
                                  f"closed segment or data file{' matching ' + spec['glob'] if spec.get('glob') else ''}"
                                  f"{' with records in the window ' + window_words if window_words else ''}: an "
                                  "empty log window. Widen `since`/`until`/`last`, or wait for the server to close "
                                  "a segment (it does at its size or age limit, and when it stops)")
    files = {rel: hash_bytes(data) for rel, data in sorted(chosen.items())}
    key = hash_json({"fixed-output": "log", "files": files})
    hit = store.lookup(key) if store.exists() else None
    if not (hit and store.check_artifact(hit[0])):
        if not fetch:
            return None
        _import(store, key, folder, chosen)
        hit = store.lookup(key)
    path, meta = hit
    return ResolvedSource(path, meta["source_hash"], {"kind": "log", "log": str(folder), "files": len(files),
                                                      **{k: spec[k] for k in ("glob", "since", "until", "last")
                                                         if spec.get(k) is not None},
                                                      "hash": meta["source_hash"], "artifact": store.rel(path)})


def _import(store: Store, key: str, folder: Path, chosen: dict[str, bytes]) -> Path:
    def fill(work: Path):
        out = work / "out"
        for rel, data in chosen.items():
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        out.mkdir(exist_ok=True)
        return f"log-{folder.name}", out, {"source": {"log": str(folder)}, "files": sorted(chosen)}
    return store.fetch_source(key, fill)
