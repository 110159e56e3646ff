"""Append-only JSON Lines logs in rotated segments: the request log and the feedback log.

A segment is written as `<kind>-<started>-<n>.jsonl.open`; when it reaches `max_bytes`, grows older than
`max_seconds`, or the server stops, it is flushed, fsynced and renamed to `<kind>-<started>-<n>.jsonl`.
A reader (the monitoring work's `{log: DIR}` source) reads closed segments only: they never change again,
so they can be hashed like any other source. Names sort in the order they were written.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

OPEN = ".open"


class SegmentLog:
    def __init__(self, folder: Path, kind: str, *, max_bytes: int = 64 << 20, max_seconds: float = 3600):
        self.folder, self.kind = Path(folder), kind
        self.max_bytes, self.max_seconds = max_bytes, max_seconds
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file, self._path, self._opened, self._n = None, None, 0.0, 0
        self._stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")

    def write(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            if self._file is None:
                self._open()
            self._file.write(line)
            self._file.flush()
            if self._file.tell() >= self.max_bytes or time.monotonic() - self._opened >= self.max_seconds:
                self._close()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._close()

    def _open(self) -> None:
        self._n += 1
        self._path = self.folder / f"{self.kind}-{self._stamp}-{self._n:06d}.jsonl{OPEN}"
        self._file, self._opened = open(self._path, "ab"), time.monotonic()

    def _close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._path, self._path.with_name(self._path.name.removesuffix(OPEN)))
        self._file = self._path = None


def closed_segments(folder: Path, kind: str = "requests") -> list[Path]:
    """The closed segments of a log, oldest first: what a reader may read."""
    return sorted(Path(folder).glob(f"{kind}-*.jsonl"))


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
