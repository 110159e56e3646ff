"""How a build shows itself: on a terminal, rich.progress with a row per step (a bar, its rate and ETA while it
runs) and a search's running trials nested under it; elsewhere plain lines, with a progress line now and then
for a long step; nothing for --json.

Everything shown is a rich `Text`, never markup, so a step name, a message or a console that does not parse
markup never shows `[dim]...[/]`; every cell is cropped to its column, so a long line cannot wrap into stray
lines that the live view then fails to redraw.
"""

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


def rate(speed: float | None, unit: str) -> str:
    """'12.5 steps/s', '3.2 MB/s' (unit 'B'): how fast a running step goes; '' until it is known."""
    if not speed or not unit:
        return ""
    if unit == "B":
        from rich.filesize import decimal
        return f"{decimal(int(speed))}/s"
    return f"{speed:.3g} {unit}/s"


def eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, s = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"eta {hours}:{minutes:02d}:{s:02d}" if hours else f"eta {minutes}:{s:02d}"


# ---- on a terminal -----------------------------------------------------------------------------------------
def _columns(name_width: int):
    """The row of one step (or trial): name, status, bar, count, rate, time and ETA, detail."""
    from rich.progress import BarColumn, ProgressColumn
    from rich.table import Column
    from rich.text import Text

    class Cell(ProgressColumn):
        def __init__(self, render, **column):
            super().__init__(table_column=Column(no_wrap=True, overflow="ellipsis", **column))
            self._render = render

        def render(self, task):
            return self._render(task)

    class Bar(BarColumn):
        def render(self, task):
            return super().render(task) if task.fields["status"] == "running" else Text("")

    def name(task):
        indent = "  " * task.fields["depth"] + ("└ " if task.fields["depth"] else "")
        return Text(indent + task.description, style="dim" if task.fields["depth"] else "")

    def numbers(task):  # a finished step's time; a running one's count, rate and ETA (elapsed until known)
        f = task.fields
        if f["status"] != "running":
            return Text(f["seconds"])
        unit, done, total = f["unit"], task.completed, task.total
        count = ""
        if unit == "B":
            from rich.filesize import decimal
            count = f"{decimal(int(done))}/{decimal(int(total))}" if total else decimal(int(done))
        elif unit:
            count = f"{done:.0f}/{total:.0f} {unit}" if total else f"{done:.0f} {unit}"
        speed = rate(task.speed, unit).replace(f" {unit}/s", "/s")
        left = eta(task.time_remaining) if total else ""
        return Text(" ".join(filter(None, [count, speed, left])) or f["seconds"])

    return [Cell(name, width=name_width),
            Cell(lambda t: Text(t.fields["status"], style=STYLE.get(t.fields["status"], "")), width=11),
            Bar(bar_width=12), Cell(numbers), Cell(lambda t: Text(t.fields["detail"]), ratio=1)]


class LiveReporter:
    """A row per step, redrawn a few times a second while building (stderr): a running step gets a bar with its
    rate and ETA from what its builder reports (`ctx.progress`), a search the rows of its running trials."""

    def __init__(self, console=None, get_time=None, live: bool = True):
        from rich.console import Console
        self.console = console or Console(stderr=True)
        self.get_time, self.clock, self.live = get_time, get_time or time.monotonic, live
        self.progress = None  # a renderable: print it to see the rows as they are now
        self.tasks: dict[tuple, int] = {}  # (step,) or (step, trial) -> task id
        self.last = 0.0

    def _make(self, states) -> None:
        from rich.progress import Progress

        tasks = self.tasks

        class Nested(Progress):
            def get_renderables(self):  # a trial's row right under its search's, whatever order they came in
                by_id = {t.id: t for t in self.tasks}
                rows = [(key, by_id[i]) for key, i in list(tasks.items()) if i in by_id]  # a copy: refreshes run
                yield self.make_tasks_table([t for key, parent in rows if len(key) == 1 for t in [  # in a thread
                    parent, *(trial for k, trial in rows if len(k) == 2 and k[0] == key[0])]])

        width = max([len(st.name) for st in states] + [len("  └ trial 100")])  # a trial's row fits
        self.progress = Nested(*_columns(min(width + 2, 22)), console=self.console, refresh_per_second=8,
                               transient=False, expand=True,
                               **({"get_time": self.get_time} if self.get_time else {}))

    def start(self, states):
        self._make(states)
        self._update(states)
        if self.live:
            self.progress.start()

    def update(self, states):
        now = self.clock()
        if now - self.last > 0.1:
            self.last = now
            self._update(states)

    def finish(self, states):
        self._update(states)
        if self.live:
            self.progress.refresh()
            self.progress.stop()

    def close(self) -> None:
        """Stop drawing (again, after finish, does nothing): an interrupted build leaves no hidden cursor."""
        if self.live and self.progress is not None:
            self.progress.stop()

    def note(self, text: str) -> None:
        """A line above the live rows (a search's finished trial), cropped to the terminal's width."""
        from rich.text import Text
        self.console.print(Text(text), no_wrap=True, overflow="ellipsis", crop=True, soft_wrap=False)

    def _update(self, states) -> None:
        for st in states:
            p = st.progress or {}
            detail = (p.get("message") or "; ".join(st.reasons)) if st.status == "running" else _detail(st)
            self._row((st.name,), st.name, st.status, p, detail, _seconds(st))
            trials = {(st.name, str(t.get("name"))): t for t in p.get("trials") or ()} if st.status == "running" else {}
            for key, t in trials.items():
                self._row(key, key[1], t.get("status", "running"), t, t.get("message", ""), t.get("seconds", ""))
            for key in [k for k in self.tasks if len(k) == 2 and k[0] == st.name and k not in trials]:
                self.progress.remove_task(self.tasks.pop(key))

    def _row(self, key: tuple, name: str, status: str, p: dict, detail: str, seconds: str) -> None:
        fields = {"status": status, "detail": detail, "seconds": seconds, "unit": p.get("unit") or ""}
        total = p.get("total") if status == "running" else 1
        done = p.get("done") or 0 if status == "running" else 1
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(name, total=total, completed=done, depth=len(key) - 1, **fields)
        else:
            self.progress.update(self.tasks[key], total=total, completed=done, **fields)


# ---- elsewhere (logs, CI) ------------------------------------------------------------------------------------
class PlainReporter:
    """One line per change of a step's state (stderr), for logs and CI; a running step that reports progress
    also gets a line every `every` seconds: done/total, rate and ETA."""

    def __init__(self, stream=None, every: float = 30.0, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.every, self.clock = every, clock
        self.seen: dict[str, str] = {}
        self.first: dict[str, tuple[float, float]] = {}  # step -> (time, done) when its progress was first seen
        self.said: dict[str, float] = {}

    def start(self, states):
        pass

    def update(self, states):
        for st in states:
            if self.seen.get(st.name) != st.status and st.status != "pending":
                self.seen[st.name] = st.status
                self.said[st.name] = self.clock()
                extra = _detail(st)
                line = f"{st.status:8} {st.name}" + (f" ({_seconds(st)})" if _seconds(st) else "")
                print(line + (f": {extra}" if extra else ""), file=self.stream, flush=True)
            elif st.status == "running" and st.progress:
                self._progress(st)

    def _progress(self, st) -> None:
        p, now = st.progress, self.clock()
        done, total, unit = p.get("done") or 0, p.get("total"), p.get("unit") or ""
        t0, d0 = self.first.setdefault(st.name, (now, done))
        if now - self.said.get(st.name, t0) < self.every:
            return
        self.said[st.name] = now
        speed = (done - d0) / (now - t0) if now > t0 and done > d0 else None
        left = (total - done) / speed if speed and total else None
        parts = [f"{100 * done / total:.0f}%" if total else "",
                 f"{done:.0f}/{total:.0f} {unit}" if total and unit and unit != "B" else "",
                 rate(speed, unit), eta(left), p.get("message", "")]
        print(f"{'running':8} {st.name}: {', '.join(x for x in parts if x)}", file=self.stream, flush=True)

    def finish(self, states):
        self.update(states)

    def close(self) -> None:
        pass

    def note(self, text: str) -> None:
        """A line of its own between the steps' lines (a search's trials, say)."""
        print(text, file=self.stream, flush=True)


def reporter_for(json_output: bool):
    if json_output:
        return None
    return LiveReporter() if sys.stderr.isatty() else PlainReporter()
