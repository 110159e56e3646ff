"""The evaluation artifact's files, byte-identical for identical results.

    metrics.json            the headline metrics, flat: numbers (or null when undefined on the data)
    evaluation.json         what was evaluated: task, classes, positive label, protected columns, table, rows
    gates.json              every gate: metric, value, operator, threshold, expression, passed; and `passed`
    groups/<column>.csv     per protected column: a row per group (count and the group's metrics)
    confusion_matrix.json   classification: labels and counts [true][predicted]
    confusion_matrix.png    classification
    calibration.json        classification: the reliability bins behind `ece`
    calibration.png         classification
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


def plot_confusion(path: Path, labels: list[str], matrix: list[list[int]]) -> None:
    fig = _figure((max(4.0, 1.0 + 0.6 * len(labels)), max(3.6, 0.8 + 0.55 * len(labels))))
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues", interpolation="nearest")
    ticks = list(range(len(labels)))
    ax.set_xticks(ticks, [str(x) for x in labels], rotation=45 if len(labels) > 4 else 0)
    ax.set_yticks(ticks, [str(x) for x in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max((v for row in matrix for v in row), default=0)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    ax.set_title("confusion matrix")
    fig.tight_layout()
    _save(fig, path)


def plot_calibration(path: Path, bins: list[dict], ece: float | None) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    used = [b for b in bins if b["count"]]
    width = (bins[0]["upper"] - bins[0]["lower"]) if bins else 0.1
    ax.bar([b["lower"] for b in used], [b["accuracy"] for b in used], width=width, align="edge",
           edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], marker="o", color="black",
            linewidth=1, label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title("calibration" + (f" (ECE {ece:.4f})" if ece is not None else ""))
    ax.legend(loc="upper left")
    fig.tight_layout()
    _save(fig, path)


# ---- summary.md -------------------------------------------------------------------------------------------
def summary(info: dict, metrics: dict, gate_rows: list[dict], gate_table: str, baseline: dict | None) -> str:
    lines = [f"# Evaluation of step '{info['step']}'", "",
             f"- task: {info['task']}", f"- data: {info['table'] or 'the input table'}, {info['rows']} rows "
             f"({info['scored']} scored)"]
    if info.get("classes"):
        lines.append(f"- classes: {', '.join(map(str, info['classes']))}"
                     + (f"; positive: {info['positive_label']}" if info.get("positive_label") is not None else ""))
    if info.get("protected"):
        lines.append(f"- protected: {', '.join(info['protected'])} (per-group tables in groups/)")
    lines += ["", "## Metrics", "", "| metric | value |" + (" baseline |" if baseline else ""),
              "| --- | --- |" + (" --- |" if baseline else "")]
    for name in sorted(metrics):
        row = f"| {name} | {_fmt(metrics[name])} |"
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
