"""One section per step: what every build records (builder, params, inputs, key, digest, timings,
environment, log tail), then what its artifact holds, recognised by its files: tables, validations,
trainings, searches, evaluations, drift and decay. Files are read defensively: a missing or unexpected file
or key leaves its part out, so artifacts of older and newer builders both render."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

from ..errors import ModelbuildError
from .charts import lines, trials_chart
from .facts import StepFacts
from .html import details, dl, e, figure, fmt, table

LOG_TAIL = 20  # lines of a build log shown
MAX_ROWS = 50  # rows of a long table shown (trials, windows)


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def number(text):
    """A CSV cell as a float, or None when empty or not a number."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def flatten(value, prefix: str = "") -> list[tuple[str, object]]:
    """Nested params as dotted keys (`optimizer.lr`), in key order; lists stay whole."""
    if isinstance(value, dict) and value:
        return [kv for k in sorted(value) for kv in flatten(value[k], f"{prefix}.{k}" if prefix else str(k))]
    return [(prefix, value)]


def utc(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "unknown"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---- what every step has ------------------------------------------------------------------------------
def header(s: StepFacts, store) -> str:
    rec, drv = s.record, s.record.get("derivation") or {}
    pairs = [("builder", f"<code>{e(s.builder)}</code>")]
    if rec.get("kind") == "source":
        pairs.append(("source", f"<code>{e(json.dumps(rec.get('source'), sort_keys=True))}</code>"))
    if s.path is not None:
        pairs += [("artifact", f"<code>{e(store.rel(s.path))}</code>"), ("digest", f"<code>{e(rec.get('digest'))}</code>")]
    if s.key:
        pairs.append(("key", f"<code>{e(s.key)}</code>"))
    if drv.get("builder_code"):
        pairs.append(("builder code", f"<code>{e(drv['builder_code'])}</code>"))
    if rec.get("started") is not None and rec.get("host"):
        pairs.append(("built", e(f"{utc(rec.get('started'))} in {fmt(rec.get('seconds'))} s on {rec.get('host')}"
                                 f" ({rec.get('platform')}), python {rec.get('python')}")))
    if rec.get("git_rev"):
        pairs.append(("git", f"<code>{e(rec['git_rev'])}</code>"))
    if rec.get("failure"):
        first = (rec["failure"].get("message") or "").strip().splitlines()
        pairs.append(("failure", e(first[0] if first else rec["failure"].get("type"))))
    return dl(pairs)


def params(s: StepFacts) -> str:
    values = (s.record.get("derivation") or {}).get("params")
    if not values:
        return ""
    return "<h3>Params</h3>" + table(["param", "value"], [[k, v] for k, v in flatten(values)])


def inputs(s: StepFacts, store) -> str:
    if not s.inputs:
        return ""
    rows = []
    for name, up, info in s.inputs:
        if up is not None:
            what = f'step <a href="#step-{e(up)}">{e(up)}</a>'
            where = f"<code>{e(info.get('path', ''))}</code>"
        else:
            what = e(f"{info.get('kind', 'source')} source")
            spec = {k: v for k, v in info.items() if k not in ("kind", "hash", "key")}
            where = f"<code>{e(json.dumps(spec, sort_keys=True))}</code>"
        content = f"<code>{e(info['hash'])}</code>" if info.get("hash") else ""
        rows.append([e(name), what, where, content])
    return "<h3>Inputs</h3>" + table(["input", "from", "artifact or source", "content hash"], rows, raw=True)


def environment(s: StepFacts) -> str:
    env = (s.record.get("derivation") or {}).get("env") or {}
    packages = env.get("packages") or {}
    if not (packages or env.get("python")):
        return ""
    rows = [["python", env.get("python")]] + [[p, v] for p, v in sorted(packages.items())]
    return details(f"Environment ({len(rows)} entries in the key)", table(["package", "version"], rows))


def log_tail(s: StepFacts, store) -> str:
    try:
        log = store.log_path(s.key) if s.key else store.log_of(s.path) if s.path else None
        lines = log.read_text(errors="replace").splitlines() if log and log.is_file() else []
    except (OSError, ModelbuildError):  # an unreadable log, or a record naming one outside logs/: left out
        lines = []
    if not lines:
        return ""
    return (f"<h3>Log (last {min(LOG_TAIL, len(lines))} of {len(lines)} lines)</h3>"
            f"<pre>{e(chr(10).join(lines[-LOG_TAIL:]))}</pre>")


def metrics(s: StepFacts, skip=()) -> str:
    values = {k: v for k, v in (s.record.get("metrics") or {}).items() if k not in skip and not isinstance(v, dict)}
    if not values:
        return ""
    return details(f"Metrics and facts recorded ({len(values)})", table(["name", "value"], sorted(values.items())))


# ---- tables and validations ---------------------------------------------------------------------------
def tables(path: Path) -> str:
    """The artifact's table, and those in its subfolders (a split's train/, test/, a quarantine/)."""
    found = [("", path)] if (path / "table.json").is_file() else []
    found += [(p.name, p) for p in sorted(path.iterdir()) if p.is_dir() and (p / "table.json").is_file()]
    if not found:
        return ""
    out = []
    if len(found) > 1:
        infos = [(name or "(artifact)", read_json(p / "table.json") or {}) for name, p in found]
        out.append(table(["table", "rows", "columns"], [[n, i.get("rows"), len(i.get("columns") or [])]
                                                        for n, i in infos]))
    for name, p in found:
        out.append(_one_table(name, p, open_=len(found) == 1))
    return "<h3>Tables</h3>" + "".join(out)


def _one_table(name: str, path: Path, open_: bool) -> str:
    info = read_json(path / "table.json") or {}
    stats = {c.get("name"): c for c in ((read_json(path / "stats.json") or {}).get("columns") or [])
             if isinstance(c, dict)}
    keys = ("count", "nulls", "distinct", "mean", "std", "min", "max")
    rows = [[c.get("name"), c.get("type")] + [stats.get(c.get("name"), {}).get(k, "") for k in keys]
            for c in info.get("columns") or [] if isinstance(c, dict)]
    body = table(["column", "type", *keys], rows, caption=f"{name or 'table'}: {info.get('rows')} rows")
    if open_:
        return body
    return details(f"{name}: {info.get('rows')} rows, {len(rows)} columns", body)


def profile(path: Path) -> str:
    """A profile's reference statistics: per column its kind, missing rate, moments and most common values."""
    data = read_json(path / "profile.json")
    if not isinstance(data, dict) or not isinstance(data.get("columns"), dict):
        return ""
    cols = data["columns"]
    order = [c for c in data.get("column_order") or sorted(cols) if isinstance(cols.get(c), dict)]
    keys = ("kind", "type", "count", "missing_rate", "distinct", "mean", "std", "min", "max")
    rows = [[c, *(cols[c].get(k, "") for k in keys), ", ".join(
        f"{f.get('value')} ({100 * f['rate']:.0f}%)" for f in (cols[c].get("frequencies") or [])[:3]
        if isinstance(f, dict) and isinstance(f.get("rate"), (int, float)))] for c in order]
    return ("<h3>Profile</h3>" + table(["column", *keys, "most common"], rows,
                                       caption=f"Reference statistics of {data.get('rows')} rows"))


def validation(path: Path) -> str:
    v = read_json(path / "validation.json")
    if not isinstance(v, dict):
        return ""
    out = ["<h3>Validation</h3>", dl([(k, e(fmt(v.get(k)))) for k in ("rows", "passed_rows", "failed_rows", "on_fail")
                                     if k in v])]
    checks = [c for c in v.get("checks") or [] if isinstance(c, dict)]
    if checks:
        out.append(table(["column", "check", "failures"], [[c.get("column"), c.get("check"), c.get("failures")]
                                                           for c in checks], caption="Schema checks"))
    if (path / "quarantine" / "table.json").is_file():
        rows = (read_json(path / "quarantine" / "table.json") or {}).get("rows")
        out.append(f"<p>{e(rows)} quarantined rows are kept in <code>quarantine/data.parquet</code>, each with the "
                   "check it failed.</p>")
    failures = v.get("failures")
    if failures:
        out.append(details("Failures", f"<pre>{e(json.dumps(failures, indent=2, sort_keys=True, default=str))}</pre>"))
    return "".join(out)


def clean_report(path: Path) -> str:
    rep = read_json(path / "clean_report.json")
    if rep is None:
        return ""
    return "<h3>Cleaning</h3>" + details("What each rule did",
                                         f"<pre>{e(json.dumps(rep, indent=2, sort_keys=True, default=str))}</pre>")


# ---- trainings and searches -----------------------------------------------------------------------------
def training(s: StepFacts) -> str:
    history = read_csv(s.path / "logs" / "metrics.csv")
    if not history:
        return ""
    columns = [c for c in history[0] if c not in ("step", "epoch")]
    losses = {c: _series(history, c) for c in columns if "loss" in c}
    others = {c: _series(history, c) for c in columns if "loss" not in c}
    figs = [figure(lines({k: v for k, v in group.items() if v[0]}, "step", ylabel, title), title)
            for group, ylabel, title in ((losses, "loss", "Loss"), (others, "value", "Metrics"))
            if any(v[0] for v in group.values())]
    rec = s.record.get("metrics") or {}
    facts = [(k, e(fmt(rec[k]))) for k in ("epochs", "steps", "samples", "device", "precision", "world_size",
                                           "wall_seconds", "fit_seconds", "samples_per_second", "tokens_per_second",
                                           "peak_memory_mb", "gpu_peak_memory_mb", "resumed_from_step",
                                           "reproducibility") if k in rec]
    final = [(k, rec[k]) for k in sorted(rec) if k.startswith(("train_", "val_", "test_")) and
             isinstance(rec[k], (int, float))]
    return ("<h3>Training</h3>" + f'<div class="charts">{"".join(figs)}</div>'
            + (table(["final metric", "value"], final) if final else "")
            + ("<h4>Resources used</h4>" + dl(facts) if facts else ""))


def _series(history: list[dict], column: str) -> tuple[list, list]:
    pairs = [(number(r.get("step")), number(r.get(column))) for r in history]
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


def search(path: Path) -> str:
    data, best = read_json(path / "trials.json"), read_json(path / "best.json")
    if not (isinstance(data, dict) and isinstance(best, dict)):
        return ""
    trials = [t for t in data.get("trials") or [] if isinstance(t, dict)]
    metric, mode = data.get("metric", "objective"), data.get("mode", "min")
    ok = [t for t in trials if t.get("status") == "ok" and isinstance(t.get("objective"), (int, float))]
    names = list(data.get("paths") or sorted({k for t in trials for k in (t.get("params") or {})}))
    out = ["<h3>Search</h3>", dl([("optimizer", e(data.get("optimizer"))), ("budget", e(data.get("budget"))),
                                  ("objective", e(f"{metric} ({mode})")),
                                  ("best", e(f"trial {best.get('trial')}: {metric} {fmt(best.get('objective'))}, "
                                             + ", ".join(f"{k}={fmt(v)}" for k, v in sorted(
                                                 (best.get("params") or {}).items()))))])]
    if ok:
        out.append(figure(trials_chart([t.get("number") for t in ok], [t["objective"] for t in ok],
                                        best.get("trial"), metric, mode), f"{metric} of each trial"))
    rows = [[t.get("number"), t.get("status"), t.get("objective")] + [(t.get("params") or {}).get(n) for n in names]
            for t in trials[:MAX_ROWS]]
    out.append(table(["trial", "status", metric, *names], rows, caption=f"{len(trials)} trials"))
    out.append("<p>Parameter importance: the optimizers modelbuild uses (Nevergrad, grid) do not report it, so "
               "none is shown; the table above is the evidence.</p>")
    return "".join(out)
