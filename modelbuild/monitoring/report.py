"""The drift and decay artifacts' files, byte-identical for identical results.

    drift.json / decay.json   every statistic, the reasons, the verdict (sorted keys, 10 significant digits)
    gates.json                the alert rules as gates, in evaluate's format ({passed, gates: [...]})
    metrics.json              the headline figures (copied into the lineage; `modelbuild show` prints them)
    monitor.prom              the same figures in Prometheus' text format, for node_exporter's textfile
                              collector (copy or link it into its directory)
    summary.md                a page for people
    plots/*.png               drift: PSI per column, and the distributions of the most drifted columns
"""

from __future__ import annotations

from pathlib import Path

from ..evaluation import gates as G
from ..evaluation.report import _figure, _safe, _save, write_json

PLOTTED = 6  # the most drifted columns whose distributions are drawn


def prom_lines(prefix: str, step: str, figures: dict, labelled: dict | None = None) -> str:
    """Prometheus text exposition: `modelbuild_<prefix>_<name>{step="..."} value`, one HELP/TYPE per name."""
    out = []
    for name, value in sorted(figures.items()):
        if value is None:
            continue
        metric = f"modelbuild_{prefix}_{name}"
        out += [f"# HELP {metric} {prefix} {name.replace('_', ' ')} of the last build", f"# TYPE {metric} gauge",
                f'{metric}{{step="{step}"}} {float(value):.10g}']
    for name, rows in sorted((labelled or {}).items()):
        metric = f"modelbuild_{prefix}_{name}"
        out += [f"# HELP {metric} {prefix} {name.replace('_', ' ')} per column", f"# TYPE {metric} gauge"]
        out += [f'{metric}{{step="{step}",column="{c}"}} {float(v):.10g}' for c, v in sorted(rows.items())
                if v is not None]
    return "\n".join(out) + "\n"


def write_drift(out: Path, result: dict, rows: list[dict], reference, current, profile) -> None:
    columns = result["columns"]
    figures = {"alert": int(result["alert"]), "drifted_share": result["drifted_share"],
               "drifted_columns": len(result["drifted_columns"]), "columns": len(columns),
               "max_psi": max((v.get("psi") or 0 for v in columns.values()), default=0.0),
               "current_rows": result["current"]["rows"]}
    if result.get("prediction"):
        figures["prediction_psi"] = result["prediction"].get("psi")
    write_json(out / "drift.json", result)
    write_json(out / "gates.json", {"passed": all(r["passed"] for r in rows), "gates": rows})
    write_json(out / "metrics.json", figures)
    psi = {c: v.get("psi") for c, v in columns.items()}
    (out / "monitor.prom").write_text(prom_lines("drift", result["step"], figures, {"column_psi": psi}))
    (out / "summary.md").write_text(_drift_summary(result, G.table(rows)))
    plots = out / "plots"
    plots.mkdir()
    _plot_psi(plots / "psi.png", psi, result["thresholds"]["psi"])
    worst = sorted(columns, key=lambda c: -(columns[c].get("psi") or 0))[:PLOTTED]
    for name in worst:
        _plot_column(plots / f"{_safe(name)}.png", name, columns[name]["kind"], reference, current, profile)


def _drift_summary(result: dict, gate_table: str) -> str:
    head = "| column | kind | psi | ks | wasserstein/std | chi2 p | missing | drifted |\n|---|---|---|---|---|---|---|---|"
    body = []
    for name, v in sorted(result["columns"].items(), key=lambda kv: -(kv[1].get("psi") or 0)):
        body.append(f"| {name} | {v['kind']} | {_f(v.get('psi'))} | {_f(v.get('ks'))} | {_f(v.get('wasserstein_norm'))} "
                    f"| {_f(v.get('chi2_pvalue'))} | {_f(v.get('missing_rate'))} | "
                    f"{'; '.join(v['reasons']) if v['drifted'] else 'no'} |")
    verdict = "ALERT: the data drifted" if result["alert"] else "no drift alert"
    pred = result.get("prediction")
    lines = [f"# Drift: {verdict}", "",
             f"{result['current']['rows']} current rows against a reference {result['reference']['kind']} of "
             f"{result['reference']['rows']} rows; {len(result['drifted_columns'])} of {len(result['columns'])} "
             f"columns drifted (share {result['drifted_share']:.3f}, alert at {result['drift_share']:g}).", "",
             "```", gate_table, "```", "", head, *body, ""]
    if pred:
        lines += [f"Predictions: psi {_f(pred.get('psi'))}, mean {_f(pred.get('reference_mean'))} -> "
                  f"{_f(pred.get('current_mean'))}", ""]
    return "\n".join(lines)


def _f(value) -> str:
    return "" if value is None else f"{value:.4g}"


def _plot_psi(path: Path, psi: dict, threshold) -> None:
    fig = _figure((6.0, max(2.5, 0.28 * len(psi) + 1)))
    ax = fig.add_subplot()
    names = sorted(psi, key=lambda c: psi[c] or 0)
    ax.barh(names, [psi[c] or 0 for c in names], color="tab:blue")
    if threshold is not None:
        ax.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:g}")
        ax.legend(loc="lower right")
    ax.set_xlabel("PSI (current vs reference)")
    fig.tight_layout()
    _save(fig, path)


def _plot_column(path: Path, name: str, kind: str, reference, current, profile) -> None:
    """The reference and current distributions of one column, as shares."""
    import numpy as np

    fig = _figure((5.0, 3.4))
    ax = fig.add_subplot()
    cur = current[name].dropna()
    if kind == "numeric":
        if profile is not None:
            edges = np.asarray(profile["columns"][name]["histogram"]["edges"], dtype=float)
            counts = np.asarray(profile["columns"][name]["histogram"]["counts"], dtype=float)
            ax.stairs(counts / max(1, counts.sum()), edges, label="reference")
        else:
            edges = np.histogram_bin_edges(reference[name].dropna().astype(float), bins=20)
            ref_counts, _ = np.histogram(reference[name].dropna().astype(float), bins=edges)
            ax.stairs(ref_counts / max(1, ref_counts.sum()), edges, label="reference")
        cur_counts, _ = np.histogram(cur.astype(float).clip(edges[0], edges[-1]), bins=edges)
        ax.stairs(cur_counts / max(1, cur_counts.sum()), edges, label="current")
    else:
        ref_share = (_profile_shares(profile["columns"][name]) if profile is not None
                     else reference[name].dropna().astype(str).value_counts(normalize=True).to_dict())
        cur_share = cur.astype(str).value_counts(normalize=True).to_dict()
        keys = sorted(set(ref_share) | set(cur_share), key=lambda k: -ref_share.get(k, 0))[:20]
        x = np.arange(len(keys))
        ax.bar(x - 0.2, [ref_share.get(k, 0) for k in keys], 0.4, label="reference")
        ax.bar(x + 0.2, [cur_share.get(k, 0) for k in keys], 0.4, label="current")
        ax.set_xticks(x, [str(k)[:10] for k in keys], rotation=90, fontsize=7)
    ax.set_title(name)
    ax.set_ylabel("share of rows")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def _profile_shares(column: dict) -> dict:
    return {str(f["value"]): f["rate"] for f in column.get("frequencies") or []}


def write_decay(out: Path, result: dict, rows: list[dict]) -> None:
    overall = result["overall"]
    figures = {"labelled": result["labelled"], "unknown_feedback": result["unknown_feedback"],
               "passed": int(result["passed"]), **{k: overall.get(k) for k in ("accuracy", "f1", "error_rate")}}
    base = result.get("baseline") or {}
    if base.get("accuracy") is not None and overall.get("accuracy") is not None:
        figures["accuracy_drop"] = base["accuracy"] - overall["accuracy"]
    write_json(out / "decay.json", result)
    write_json(out / "gates.json", {"passed": result["passed"], "gates": rows})
    write_json(out / "metrics.json", figures)
    (out / "monitor.prom").write_text(prom_lines("decay", result["step"], figures))
    table = G.table(rows) if rows else "(no gates)"
    lines = [f"# Decay: {'gates passed' if result['passed'] else 'GATES FAILED'}", "",
             f"{result['labelled']} labelled predictions of {result['requests']} logged requests; "
             f"{result['unknown_feedback']} labels for unknown requests.", "", "```", table, "```", "",
             "| window start | labelled | accuracy | f1 | judged |", "|---|---|---|---|---|"]
    lines += [f"| {w['start']} | {w['labelled']} | {_f(w.get('accuracy'))} | {_f(w.get('f1'))} | "
              f"{'yes' if w['judged'] else 'too few labels'} |" for w in result["windows"]]
    if base:
        lines += ["", f"The model's own evaluation: accuracy {_f(base.get('accuracy'))}, f1 {_f(base.get('f1'))}."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
