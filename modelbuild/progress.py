"""How a build shows itself: a live table on a terminal (rich), plain lines elsewhere, nothing for --json."""

from __future__ import annotations

import sys
import time

STYLE = {"pending": "dim", "running": "yellow", "cached": "cyan", "substituted": "blue", "built": "green", "failed": "bold red",
         "skipped": "dim"}


def _detail(st) -> str:
    if st.status == "running":
        p = st.progress or {}
        if p.get("total"):
            return f"{100 * p['done'] / p['total']:.0f}% {p.get('message', '')}".strip()
        return p.get("message") or "; ".join(st.reasons)
    if st.status == "failed":
        first = (st.error or {}).get("message", "").splitlines()[0] if (st.error or {}).get("message") else ""
        return first if len(first) <= 100 else first[:97] + "..."
    if st.status == "skipped":
        return (st.error or {}).get("message", "")
    if st.status == "built":
        return "; ".join(st.reasons)
    if st.differences is not None:
        how = "metrics within tolerance" if st.check == "metrics" else "bit-identical"
        return f"reproducible ({how})" if not st.differences else \
            f"NOT reproducible: {len(st.differences)} {'metrics' if st.check == 'metrics' else 'files'} differ"
    return ""


def _seconds(st) -> str:
    if st.status == "running" and st.started:
        return f"{time.time() - st.started:.1f}s"
    return f"{st.seconds:.1f}s" if st.status in ("built", "substituted", "failed") or st.differences is not None else ""


class LiveReporter:
    """A table of steps, redrawn a few times a second while building (stderr)."""

    def __init__(self):
        from rich.console import Console
        from rich.live import Live
        self.console = Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=8, transient=False)
        self.last = 0.0

    def _table(self, states):
        from rich.table import Table
        table = Table(box=None, show_header=True, header_style="bold")
        for col in ("step", "status", "time", ""):
            table.add_column(col)
        for st in states:
            table.add_row(st.name, f"[{STYLE.get(st.status, '')}]{st.status}[/]", _seconds(st), _detail(st)[:90])
        return table

    def start(self, states):
        self.live.start()
        self.live.update(self._table(states))

    def update(self, states):
        if time.time() - self.last > 0.1:
            self.last = time.time()
            self.live.update(self._table(states))

    def finish(self, states):
        self.live.update(self._table(states))
        self.live.stop()

    def note(self, text: str) -> None:
        """A line above the live table (a search's trials, say)."""
        self.console.print(text, markup=False, highlight=False)


class PlainReporter:
    """One line per change of a step's state (stderr), for logs and CI."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.seen: dict[str, str] = {}

    def start(self, states):
        pass

    def update(self, states):
        for st in states:
            if self.seen.get(st.name) != st.status and st.status != "pending":
                self.seen[st.name] = st.status
                extra = _detail(st)
                line = f"{st.status:8} {st.name}" + (f" ({_seconds(st)})" if _seconds(st) else "")
                print(line + (f": {extra}" if extra else ""), file=self.stream, flush=True)

    def finish(self, states):
        self.update(states)

    def note(self, text: str) -> None:
        """A line of its own between the steps' lines (a search's trials, say)."""
        print(text, file=self.stream, flush=True)


def reporter_for(json_output: bool):
    if json_output:
        return None
    return LiveReporter() if sys.stderr.isatty() else PlainReporter()
