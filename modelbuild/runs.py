"""`modelbuild runs RECIPE`: every build of a recipe's steps in this store, trials of its searches included, as
one table of params, metrics, status and time (what `dvc exp show` and MLflow's compare view give).

Read from the trace alone (each entry's lineage record holds its recipe, step, derivation params, metrics and
timings), plus each tune artifact's trials.json to name the trials; no ML library is imported. A trial of a
search is a build of its target step, so it is listed under that step, with the search and its number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .errors import UsageError
from .store import Store, format_time

FIXED = ("step", "trial", "status", "started", "seconds", "key")


def flat(params: dict, prefix: str = "") -> dict:
    out = {}
    for name, value in params.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def runs(store: Store, recipe: str, step: str | None = None) -> list[dict]:
    """One row per build of the recipe's steps: fixed columns, `params` (flattened) and numeric `metrics`."""
    rows, trials = [], {}
    for key, path, meta in store.builds():
        if meta.get("recipe") != recipe or (step and meta.get("step") != step):
            continue
        if meta.get("builder") == "tune":
            trials.update(_trials_of(store, path, meta.get("step")))
        metrics = {k: v for k, v in (meta.get("metrics") or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        rows.append({"step": meta.get("step"), "trial": None,
                     "status": "failed" if meta.get("failure") else "ok",
                     "started": meta.get("started"), "seconds": meta.get("seconds"), "key": key,
                     "path": store.rel(path), "params": flat((meta.get("derivation") or {}).get("params") or {}),
                     "metrics": metrics})
    for row in rows:
        row["trial"] = trials.get(row["key"])
    return rows


def _trials_of(store: Store, path: Path, step: str) -> dict:
    """Trial key -> 'SEARCH#N' from a tune artifact."""
    try:
        data = json.loads((Path(path) / "trials.json").read_text())
    except (OSError, ValueError):
        return {}
    return {t["key"]: f"{step}#{t['number']}" for t in data.get("trials", []) if t.get("key")}


def sort_rows(rows: list[dict], by: str | None, reverse: bool) -> list[dict]:
    """By a column, param or metric name (rows without it last), else by start time."""
    by = by or "started"

    def value(row):
        v = row.get(by) if by in FIXED else row["metrics"].get(by, row["params"].get(by))
        return (v is None, v if isinstance(v, (int, float)) else str(v))

    present = sorted([r for r in rows if value(r)[0] is False], key=value, reverse=reverse)
    return present + [r for r in rows if value(r)[0]]


def columns(rows: list[dict], params: list[str] | None, metrics: list[str] | None) -> tuple[list, list]:
    """The params to show (by default those that differ between rows of one step) and the metrics."""
    if params is None:
        by_step = {}
        for r in rows:
            by_step.setdefault(r["step"], []).append(r["params"])
        names = {k for ps in by_step.values() for p in ps for k in p}
        params = sorted(k for k in names if any(len({json.dumps(p.get(k), sort_keys=True) for p in ps}) > 1
                                                for ps in by_step.values()))
    if metrics is None:
        metrics = sorted({k for r in rows for k in r["metrics"]})
    return params, metrics


def table(rows: list[dict], params: list[str], metrics: list[str]) -> str:
    head = ["step", "trial", "status", "started", "seconds", *params, *metrics]
    body = [[r["step"], r["trial"] or "", r["status"], format_time(r["started"]) if r["started"] else "",
             _cell(r["seconds"]), *(_cell(r["params"].get(p)) for p in params),
             *(_cell(r["metrics"].get(m)) for m in metrics)] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [head, *body]]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value)


def recipe_name(what: str) -> str:
    """A recipe's name from its YAML file (as `build` composes it), or the name itself."""
    if what.endswith((".yaml", ".yml")) or Path(what).is_file():
        from .recipe import load_recipe
        return load_recipe(what).name
    return what


def show(store: Store, what: str, *, step=None, sort=None, reverse=False, params=None, metrics=None,
         as_json=False) -> str:
    name = recipe_name(what)
    rows = runs(store, name, step) if store.exists() else []
    if not rows:
        raise UsageError(f"the store {store.root} has no builds of recipe '{name}'"
                         + (f" step '{step}'" if step else "") + f"; build it first: `modelbuild build {what}`")
    rows = sort_rows(rows, sort, reverse)
    if as_json:
        return json.dumps(rows, indent=2, sort_keys=True)
    return table(rows, *columns(rows, params, metrics))
