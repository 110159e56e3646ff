"""A small cache that outlives the process: facts that are slow to compute and cheap to re-validate.

Code hashes (files read and parsed for their imports) and the installed distributions' map cost most of a
no-op rebuild when recomputed on every run. Each entry is stored with the stat identity (or stamp) it was
computed from, and is used only while that identity still holds, so a stale entry is a miss, never a wrong
answer. The cache lives in the store (`store/cache/<name>.json`, set by `configure`); without one it lives in
memory only. Writes are atomic (a temporary file, then rename), and a damaged file is an empty cache.
"""

from __future__ import annotations

import atexit
import json
import os
import uuid
from pathlib import Path

_DIR: Path | None = None
_CACHES: dict[str, dict] = {}
_DIRTY: set[str] = set()


def configure(directory: str | os.PathLike | None) -> None:
    """Keep caches under `directory` from now on (the store's cache/ folder); None: in memory only."""
    global _DIR
    flush()
    _DIR = Path(directory) if directory is not None else None
    _CACHES.clear()


def table(name: str) -> dict:
    """The cache called `name`: a dict to read and update; `touch(name)` after changing it."""
    if name not in _CACHES:
        _CACHES[name] = _load(name)
    return _CACHES[name]


def touch(name: str) -> None:
    """Mark the cache `name` changed: it is written at `flush()`, at the latest when the process exits."""
    _DIRTY.add(name)


def flush() -> None:
    """Write the changed caches (best effort: a cache that cannot be written is simply not kept)."""
    if _DIR is None:
        _DIRTY.clear()
        return
    for name in sorted(_DIRTY):
        try:
            _DIR.mkdir(parents=True, exist_ok=True)
            target = _DIR / f"{name}.json"
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
            tmp.write_text(json.dumps(_CACHES[name], separators=(",", ":")))
            os.replace(tmp, target)
        except OSError:
            pass
    _DIRTY.clear()


def _load(name: str) -> dict:
    if _DIR is None:
        return {}
    try:
        data = json.loads((_DIR / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


atexit.register(flush)


def stat_stamp(st: os.stat_result) -> list[int]:
    """What must match for a cached fact about a file to stand (as for the sources' stat cache)."""
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
