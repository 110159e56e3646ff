"""The evaluation artifact's files, byte-identical for identical results.

    metrics.json            the headline metrics, flat: numbers (or null when undefined on the data)
    evaluation.json         what was evaluated: task, classes, positive label, protected columns, table, rows
    gates.json              every gate: metric, value, operator, threshold, expression, passed; and `passed`
    groups/<column>.csv     per protected column: a row per group (count, in_gaps and the group's metrics)
    groups/<column>.png     classification with a positive class: FPR and FNR per group
    confusion_matrix.json   classification: labels, counts [true][predicted] and rates (each row / its total)
    confusion_matrix.png    classification
    calibration.json        classification with probabilities: the reliability bins behind `ece`
    calibration.png         the reliability diagram over the count of rows per bin
    baseline/metrics.json   the baseline's metrics, when the step has a `baseline` input
    summary.md              the above in a page

JSON has sorted keys and floats rounded to 10 significant digits; PNGs are drawn by matplotlib's Agg
backend with no metadata (no Software or date chunk), so the same numbers give the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..table import rounded

DIGITS = 10


def stable(value):
    return rounded(value, DIGITS)


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stable(value), indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_groups(out: Path, tables: dict[str, list[dict]]) -> None:
    for column, rows in tables.items():
        if not rows:
            continue
        buffer = io.StringIO()
        fields = list(rows[0])
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if stable(v) is None else stable(v)) for k, v in row.items()})
        path = out / "groups" / f"{_safe(column)}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(buffer.getvalue())


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


# ---- plots ----------------------------------------------------------------------------------------------
def _figure(size=(5.0, 4.2)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    fig.savefig(str(path), format="png", metadata={"Software": None})  # no version, no date: stable bytes


def plot_confusion(path: Path, labels: list[str], matrix: list[list[int]], rates: list[list[float]],
                   target: str | None = None) -> None:
    """Each cell: its count and its share of the true class (the row), shaded by the share, so a rare class
    reads as clearly as a common one."""
    fig = _figure((max(4.4, 1.4 + 0.9 * len(labels)), max(3.8, 1.0 + 0.75 * len(labels))))
    ax = fig.add_subplot()
    ax.imshow(rates, cmap="Blues", interpolation="nearest", vmin=0.0, vmax=1.0)
    ticks = list(range(len(labels)))
    ax.set_xticks(ticks, [str(x) for x in labels], rotation=45 if len(labels) > 4 else 0)
    ax.set_yticks(ticks, [str(x) for x in labels])
    ax.set_xlabel(f"predicted {target}" if target else "predicted")
    ax.set_ylabel(f"true {target}" if target else "true")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            share = rates[i][j]
            ax.text(j, i, f"{v}\n{share:.1%}", ha="center", va="center", color="white" if share > 0.5 else "black")
    ax.set_title("confusion matrix (count, share of the true class)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_calibration(path: Path, bins: list[dict], ece: float | None) -> None:
    """The reliability diagram above the number of rows in each bin: a bar far off the diagonal matters
    only as much as the rows behind it."""
    fig = _figure((5.0, 5.4))
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    used = [b for b in bins if b["count"]]
    width = (bins[0]["upper"] - bins[0]["lower"]) if bins else 0.1
    ax.bar([b["lower"] for b in used], [b["accuracy"] for b in used], width=width, align="edge",
           edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], marker="o", color="black",
            linewidth=1, label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("calibration" + (f" (ECE {ece:.4f})" if ece is not None else ""))
    ax.legend(loc="upper left")
    hist.bar([b["lower"] for b in bins], [b["count"] for b in bins], width=width, align="edge", edgecolor="black",
             color="grey")
    for b in used:
        hist.text(b["lower"] + width / 2, b["count"], str(b["count"]), ha="center", va="bottom", fontsize=7)
    hist.set_ylim(0, max((b["count"] for b in bins), default=1) * 1.3 or 1)
    hist.set_xlabel("confidence (top class)")
    hist.set_ylabel("rows")
    fig.tight_layout()
    _save(fig, path)


def plot_group_rates(out: Path, tables: dict[str, list[dict]], min_group_size: int) -> None:
    """groups/<column>.png: the false positive and false negative rate of each group with its Wilson
    interval, the plot a bias audit reads first. A group left out of the gaps (fewer than min_group_size
    rows) is hatched."""
    from matplotlib.patches import Patch

    colours = {"fpr": "tab:orange", "fnr": "tab:blue"}
    for column, rows in tables.items():
        if not rows or "fpr" not in rows[0]:
            continue
        tilt = len(rows) > 5 or max(len(r["group"]) for r in rows) > 10
        fig = _figure((max(5.0, 1.5 + 1.0 * len(rows)), 4.6 if tilt else 4.2))
        ax = fig.add_subplot()
        x = range(len(rows))
        for offset, key in ((-0.2, "fpr"), (0.2, "fnr")):
            low = [r[key] - r[f"{key}_ci_low"] if r.get(f"{key}_ci_low") is not None else 0.0 for r in rows]
            high = [r[f"{key}_ci_high"] - r[key] if r.get(f"{key}_ci_high") is not None else 0.0 for r in rows]
            bars = ax.bar([i + offset for i in x], [r[key] for r in rows], width=0.4, color=colours[key],
                          edgecolor="black", yerr=[low, high], capsize=3, error_kw={"linewidth": 1})
            for bar, r in zip(bars, rows, strict=True):
                if not r["in_gaps"]:
                    bar.set_hatch("//")
                    bar.set_alpha(0.4)
        ax.set_xticks(list(x), [f"{r['group']}\nn={r['count']}" + ("" if r["in_gaps"] else "*") for r in rows],
                      fontsize=8, rotation=25 if tilt else 0, ha="right" if tilt else "center")
        ax.set_ylim(0, 1)
        ax.set_ylabel("rate")
        small = any(not r["in_gaps"] for r in rows)
        ax.set_title(f"false positive and false negative rate by {column}"
                     + (f"\n* fewer than {min_group_size} rows: not in the gaps" if small else ""), fontsize=10)
        ax.legend(handles=[Patch(facecolor=c, edgecolor="black", label=k.upper()) for k, c in colours.items()],
                  loc="upper right")
        fig.tight_layout()
        path = out / "groups" / f"{_safe(column)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(fig, path)


# ---- summary.md -------------------------------------------------------------------------------------------
def summary(info: dict, metrics: dict, gate_rows: list[dict], gate_table: str, baseline: dict | None) -> str:
    lines = [f"# Evaluation of step '{info['step']}'", "",
             f"- task: {info['task']}", f"- data: {info['table'] or 'the input table'}, {info['rows']} rows "
             f"({info['scored']} scored)"]
    if info.get("classes"):
        lines.append(f"- classes: {', '.join(map(str, info['classes']))}"
                     + (f"; positive: {info['positive_label']}" if info.get("positive_label") is not None else ""))
    if info.get("predictions"):
        spec = info["predictions"]
        lines.append(f"- predictions: {'the rule ' + spec['rule'] if spec['rule'] else 'column ' + spec['column']}"
                     + (" (a probability)" if spec["probability"] else ""))
    if info.get("protected"):
        lines.append(f"- protected: {', '.join(info['protected'])} (per-group tables and FPR/FNR plots in groups/)")
    for column, small in (info.get("excluded_groups") or {}).items():
        lines.append(f"- {column}: {', '.join(f'{g} ({n} rows)' for g, n in small.items())} below min_group_size "
                     f"{info['min_group_size']}: reported in groups/{column}.csv, left out of the gaps")
    if info.get("framing"):
        lines.append(f"- framing: {info['framing']}")
    if info.get("baseline_framing") not in (None, info.get("framing")):
        lines.append(f"- the baseline's framing: {info['baseline_framing']}")
    boot = info.get("bootstrap") or {}
    if boot.get("resamples"):
        over = f" over {boot['units']} {boot['unit']}{'s' * (boot['units'] != 1)}" if boot.get("unit") else ""
        lines.append(f"- intervals: {boot['confidence']:.0%} percentile bootstrap{over}, {boot['resamples']} "
                     f"resamples, seed {boot['seed']} (`*_ci_low`, `*_ci_high`)")
    lines += [f"- warning: {w}" for w in info.get("warnings") or []]
    lines += ["", "## Metrics", "", "| metric | value | interval |" + (" baseline |" if baseline else ""),
              "| --- | --- | --- |" + (" --- |" if baseline else "")]
    for name in sorted(n for n in metrics if not n.endswith(("_ci_low", "_ci_high"))):
        low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
        span = f"{_fmt(low)} .. {_fmt(high)}" if f"{name}_ci_low" in metrics else ""
        row = f"| {name} | {_fmt(metrics[name])} | {span} |"
        if baseline:
            row += f" {_fmt(baseline.get(name))} |"
        lines.append(row)
    if gate_rows:
        passed = all(r["passed"] for r in gate_rows)
        lines += ["", "## Gates", "", f"{'All gates passed' if passed else 'Some gates FAILED'}:", "", "```",
                  gate_table, "```"]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "n/a" if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value))
