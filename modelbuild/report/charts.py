"""Charts as inline SVG drawn by matplotlib: static, no JavaScript, text kept as text (searchable, and
small), and the same bytes from the same numbers (a fixed hash salt for element ids, no date)."""

from __future__ import annotations

import io
import re

from .html import e

RC = {"svg.hashsalt": "modelbuild-report", "svg.fonttype": "none", "font.size": 9, "axes.grid": True,
      "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
      "font.family": ["DejaVu Sans", "sans-serif"], "legend.fontsize": 7, "legend.framealpha": 0.7}


def _svg(draw, label: str, size=(5.2, 3.0)) -> str:
    """Run draw(ax) on a new figure and return the figure as an <svg> element labelled for screen readers."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ModuleNotFoundError:
        from ..errors import UsageError
        raise UsageError("the report draws its charts with matplotlib, which is not installed: "
                         "pip install 'modelbuild[report]'") from None

    with matplotlib.rc_context(RC):
        fig = Figure(figsize=size)
        ax = fig.add_subplot()
        draw(ax)
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML declaration and DOCTYPE: the element goes inline
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    return text.replace("<svg ", f'<svg role="img" aria-label="{e(label)}" ', 1)


def lines(series: dict[str, tuple[list, list]], xlabel: str, ylabel: str, title: str) -> str:
    """One line per named series of (x, y)."""
    def draw(ax):
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o" if len(xs) <= 20 else None, markersize=3, label=name)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        if len(series) > 1:
            ax.legend()
    return _svg(draw, f"{title}: {', '.join(series)} against {xlabel}")


def trials_chart(numbers: list, objectives: list, best: int | None, metric: str, mode: str) -> str:
    """A search's objective per trial, the running best as a step line, the best trial marked."""
    def draw(ax):
        ax.plot(numbers, objectives, "o", label=metric)
        running, best_so_far = [], None
        for v in objectives:
            best_so_far = v if best_so_far is None else (min if mode == "min" else max)(best_so_far, v)
            running.append(best_so_far)
        ax.step(numbers, running, where="post", label=f"best so far ({mode})")
        if best is not None and best in numbers:
            i = numbers.index(best)
            ax.plot([best], [objectives[i]], "*", markersize=14, label=f"best: trial {best}")
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="trial", ylabel=metric, title=f"{metric} by trial")
        ax.legend()
    return _svg(draw, f"{metric} of each trial; the best is trial {best}")


def bars(groups: list[str], values: dict[str, list], title: str, ylabel: str, threshold: float | None = None) -> str:
    """Grouped bars: one bar per named value for each group (a horizontal line at `threshold`)."""
    def draw(ax):
        n = max(len(values), 1)
        width = 0.8 / n
        for i, (name, ys) in enumerate(values.items()):
            xs = [j + (i - (n - 1) / 2) * width for j in range(len(groups))]
            ax.bar(xs, [y if y is not None else 0 for y in ys], width, label=name)
        ax.set_xticks(range(len(groups)), [g[:14] for g in groups], rotation=30 if len(groups) > 4 else 0,
                      ha="right" if len(groups) > 4 else "center")
        if threshold is not None:
            ax.axhline(threshold, color="#c62828", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
        ax.set(ylabel=ylabel, title=title)
        if len(values) > 1 or threshold is not None:
            ax.legend()
    return _svg(draw, f"{title}: {', '.join(values)} for {', '.join(groups)}")


def reliability(bins: list[dict]) -> str:
    """Reliability diagram: observed accuracy against mean confidence per bin, the diagonal as reference."""
    points = [(b["confidence"], b["accuracy"]) for b in bins
              if isinstance(b.get("confidence"), (int, float)) and isinstance(b.get("accuracy"), (int, float))]

    def draw(ax):
        ax.plot([0, 1], [0, 1], "--", color="#90a4ae", label="perfectly calibrated")
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label="model")
        ax.set(xlabel="mean predicted probability", ylabel="observed frequency", title="Calibration",
               xlim=(0, 1), ylim=(0, 1))
        ax.legend()
    return _svg(draw, "Calibration: observed frequency against predicted probability per bin", size=(4.2, 3.4))
