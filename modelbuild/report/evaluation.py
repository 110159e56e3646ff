"""Sections for what judges a model: evaluations (headline metrics with intervals, gates, bias by group,
confusion matrix, calibration), and drift and decay from served traffic. Read from the files the evaluate,
drift and decay builders write; a key they do not (yet) write leaves its part out."""

from __future__ import annotations

from pathlib import Path

from .charts import bars, lines, reliability
from .html import badge, e, figure, fmt, table
from .sections import number, read_csv, read_json

CI_LOW, CI_HIGH = "_ci_low", "_ci_high"
HEADLINE = ("accuracy", "f1", "f1_macro", "precision", "recall", "roc_auc", "log_loss", "ece", "perplexity", "loss",
            "mae", "rmse", "r2")


def gates(path: Path) -> str:
    """The gate table: every gate, its value, its threshold and whether it passed."""
    data = read_json(path / "gates.json")
    rows = data.get("gates") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not rows:
        return ""
    body = []
    for g in rows:
        if not isinstance(g, dict):
            continue
        passed = g.get("passed")
        body.append([e(g.get("metric") or g.get("name") or ""), e(fmt(g.get("value"))),
                     e(g.get("expression") or f"{g.get('operator', '')} {fmt(g.get('threshold'))}"),
                     badge("passed" if passed else "failed")])
    verdict = data.get("passed") if isinstance(data, dict) else all(g.get("passed") for g in rows if isinstance(g, dict))
    return (f"<h3>Gates {badge('passed' if verdict else 'failed')}</h3>"
            + table(["gate", "value", "threshold", "result"], body, caption="Gate table", raw=True))


def headline(metrics: dict) -> str:
    """Overall metrics, with their confidence intervals where the evaluation computed them."""
    names = [m for m in HEADLINE if isinstance(metrics.get(m), (int, float))]
    names += sorted(m[: -len(CI_LOW)] for m in metrics if m.endswith(CI_LOW) and m[: -len(CI_LOW)] not in names
                    and m[: -len(CI_LOW)] in metrics and "." not in m)  # ATTR.gap: under bias by group
    if not names:
        return ""
    rows = [[m, metrics[m], metrics.get(m + CI_LOW, ""), metrics.get(m + CI_HIGH, "")] for m in names]
    return table(["metric", "value", "CI low", "CI high"], rows, caption="Headline metrics (overall)")


def groups(path: Path, metrics: dict) -> str:
    """Per protected attribute: the fairness summary, the per-group table and a bar chart."""
    out = []
    for csv_path in sorted((path / "groups").glob("*.csv")) if (path / "groups").is_dir() else []:
        attr, rows = csv_path.stem, read_csv(csv_path)
        if not rows:
            continue
        columns = list(rows[0])
        summary = gap_rows(metrics, attr)
        out.append(f"<h4>By {e(attr)}</h4>")
        if summary:
            out.append(table(["measure", "value", "CI low", "CI high"], summary,
                             caption=f"Bias measures across {attr} groups"))
        out.append(table(columns, [[cell_value(r.get(c)) for c in columns] for r in rows], caption=f"Metrics by {attr}"))
        rates = [c for c in ("selection_rate", "accuracy", "tpr", "fpr") if c in columns]
        if rates:
            names = [r.get(columns[0]) or "" for r in rows]
            out.append(figure(bars(names, {c: [number(r.get(c)) for r in rows] for c in rates},
                                          f"By {attr}", "rate"), f"Selection rate and error rates by {attr}"))
    return "<h3>Bias by group</h3>" + "".join(out) if out else ""


def gap_rows(metrics: dict, attr: str) -> list[list]:
    """[measure, value, CI low, CI high] of every gap the evaluation computed across `attr`'s groups."""
    prefix = f"{attr}."
    names = sorted(k for k, v in metrics.items() if k.startswith(prefix) and isinstance(v, (int, float))
                   and not k.endswith((CI_LOW, CI_HIGH)))
    return [[k[len(prefix):], metrics[k], metrics.get(k + CI_LOW, ""), metrics.get(k + CI_HIGH, "")] for k in names]


def cell_value(text):
    """A CSV cell as a number where it is one (ints stay ints), else the text."""
    v = number(text)
    return text if v is None else (int(v) if v.is_integer() and "." not in str(text) else v)


def confusion(path: Path) -> str:
    data = read_json(path / "confusion_matrix.json")
    if not isinstance(data, dict) or not isinstance(data.get("matrix"), list):
        return ""
    labels = [str(x) for x in data.get("labels") or range(len(data["matrix"]))]
    rates = data.get("rates") if isinstance(data.get("rates"), list) else _row_shares(data["matrix"])
    head = "".join(f'<th scope="col">predicted {e(x)}</th>' for x in labels)
    body = ""
    for label, row, shares in zip(labels, data["matrix"], rates, strict=False):
        cells = "".join(_confusion_cell(v, r) for v, r in zip(row, shares, strict=False))
        body += f'<tr><th scope="row">actual {e(label)}</th>{cells}</tr>'
    return (f"<h3>Confusion matrix</h3><table><caption>Rows: actual class; columns: predicted class; each cell "
            f"its count and its share of the actual class</caption><thead><tr><td></td>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _row_shares(matrix: list) -> list[list]:
    return [[v / sum(row) if sum(row) else 0.0 for v in row] for row in matrix
            if all(isinstance(v, (int, float)) for v in row)]


def _confusion_cell(count, share) -> str:
    """Shaded by the share of the actual class, so a rare class reads as clearly as a common one."""
    if not isinstance(share, (int, float)):
        return f'<td class="num">{e(fmt(count))}</td>'
    return (f'<td class="num" style="background:rgba(11,87,208,{0.06 + 0.6 * share:.3f})">{e(fmt(count))} '
            f"({100 * share:.1f}%)</td>")


def calibration(path: Path) -> str:
    data = read_json(path / "calibration.json")
    if not isinstance(data, dict) or not isinstance(data.get("bins"), list):
        return ""
    bins = [b for b in data["bins"] if isinstance(b, dict)]
    chart = figure(reliability(bins), f"Calibration (ECE {fmt(data.get('ece'))})")
    return "<h3>Calibration</h3>" + chart


def evaluation(path: Path) -> str:
    info = read_json(path / "evaluation.json")
    metrics = read_json(path / "metrics.json")
    if not (isinstance(info, dict) and isinstance(metrics, dict)):
        return ""
    what = ", ".join(f"{k} {fmt(info[k])}" for k in ("task", "table", "rows", "skipped", "label_column",
                                                     "min_group_size") if info.get(k) is not None)
    return ("<h3>Evaluation</h3>" + f"<p>{e(what)}</p>" + headline(metrics) + baseline(path, metrics) + gates(path)
            + groups(path, metrics) + excluded(info) + confusion(path) + calibration(path))


def baseline(path: Path, metrics: dict) -> str:
    """The headline metrics beside the baseline's the evaluation compared with (baseline/metrics.json)."""
    base = read_json(path / "baseline" / "metrics.json")
    if not isinstance(base, dict):
        return ""
    rows = [[m, metrics[m], base[m], metrics[m] - base[m]] for m in HEADLINE
            if isinstance(metrics.get(m), (int, float)) and isinstance(base.get(m), (int, float))]
    return table(["metric", "this model", "baseline", "change"], rows, caption="Against the baseline") if rows else ""


def excluded(info: dict) -> str:
    """Groups too small to judge (below min_group_size): in the tables, left out of the gaps."""
    small = info.get("excluded_groups")
    if not isinstance(small, dict) or not small:
        return ""
    items = "".join(f"<li>{e(col)}: " + ", ".join(f"{e(g)} ({e(n)} rows)" for g, n in sorted(groups.items()))
                    + "</li>" for col, groups in sorted(small.items()) if isinstance(groups, dict))
    return (f"<p>Left out of the gaps, below min_group_size {e(info.get('min_group_size'))} rows (their rows are "
            f"in the tables above):</p><ul>{items}</ul>")


def drift(path: Path) -> str:
    data = read_json(path / "drift.json")
    if not isinstance(data, dict) or not isinstance(data.get("columns"), dict):
        return ""
    cols = data["columns"]
    rows = [[name, v.get("kind", ""), v.get("psi", ""), *_test(v), v.get("missing_rate", ""),
             v.get("reference_missing_rate", ""), v.get("drifted", ""), "; ".join(map(str, v.get("reasons") or []))]
            for name, v in sorted(cols.items()) if isinstance(v, dict)]
    header = ["column", "kind", "PSI", "test", "statistic", "p-value", "missing rate", "reference missing rate",
              "drifted", "reasons"]
    psi = {n: v.get("psi") for n, v in sorted(cols.items()) if isinstance(v, dict) and isinstance(v.get("psi"), (int, float))}
    threshold = ((data.get("thresholds") or {}).get("psi"))
    chart = figure(bars(list(psi), {"PSI": list(psi.values())}, "Population stability index", "PSI",
                               threshold if isinstance(threshold, (int, float)) else None),
                   "PSI per column") if psi else ""
    drifted = data.get("drifted_columns") or []
    return ("<h3>Drift</h3>" + f"<p>{e(len(drifted))} of {e(len(cols))} columns drifted"
            + (f": {e(', '.join(map(str, drifted)))}" if drifted else "") + ".</p>" + gates(path) + chart
            + _prediction(data.get("prediction")) + table(header, rows, caption="Per-column drift"))


def _test(values: dict) -> list:
    """[test, statistic, p-value] of the column's two-sample test (KS for numbers, chi-squared for categories)."""
    for test in ("ks", "chi2"):
        if test in values:
            return [test, values[test], values.get(f"{test}_pvalue", "")]
    return ["", "", ""]


def _prediction(pred) -> str:
    if not isinstance(pred, dict):
        return ""
    return table(["model output", "PSI", "test", "statistic", "p-value", "reference mean", "current mean", "drifted"],
                 [["prediction", pred.get("psi", ""), *_test(pred), pred.get("reference_mean", ""),
                   pred.get("current_mean", ""), pred.get("drifted", "")]], caption="Drift of the model's predictions")


def decay(path: Path) -> str:
    data = read_json(path / "decay.json")
    if not isinstance(data, dict):
        return ""
    windows = [w for w in data.get("windows") or [] if isinstance(w, dict)]
    overall = data.get("overall") or {}
    out = ["<h3>Decay</h3>", f"<p>{e(data.get('labelled'))} labelled predictions of {e(data.get('requests'))} "
           f"logged requests; overall accuracy {e(fmt(overall.get('accuracy')))}.</p>", gates(path)]
    judged = [(i, w.get("accuracy")) for i, w in enumerate(windows) if isinstance(w.get("accuracy"), (int, float))]
    if judged:
        out.append(figure(lines({"accuracy": ([i for i, _ in judged], [a for _, a in judged])}, "window",
                                       "accuracy", "Accuracy by window"), "Accuracy of labelled predictions by window"))
    if windows:
        out.append(table(["window start", "labelled", "accuracy", "f1", "judged"],
                         [[w.get("start"), w.get("labelled"), w.get("accuracy"), w.get("f1"), w.get("judged")]
                          for w in windows[:50]]))
    return "".join(out)
