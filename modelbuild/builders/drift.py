"""drift: does the current data (a table, a split's part, a `{log: DIR}` import) still look like the
reference (a table or a `profile` artifact)? An alert is a committed failure (exit 4), like a failed gate.

Example::

    drift:
      builder: drift
      inputs:
        reference: reference_profile      # a profile artifact, or a table / split (params.reference_table)
        current: traffic                  # a table, or a folder of Parquet/CSV/JSON Lines drops
        model: model                      # optional: prediction drift of this tabular model
      params:
        ignore: [id, year]
        thresholds: {psi: 0.1, wasserstein_norm: 0.1, ks_pvalue: null}
        drift_share: 0.1                  # alert when this share of the columns drifted

Output: drift.json (every statistic of every column, the reasons a column drifted, the dataset rule),
gates.json (the dataset rule as a gate, in evaluate's format), summary.md, metrics.json (the headline
figures, in the lineage), drift.prom (the same figures for Prometheus' textfile collector) and plots/.
The statistics are in modelbuild/monitoring/stats.py; thresholds and their defaults in docs/monitoring.md.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataValidationError, GateFailed, RecipeError, did_you_mean
from ..monitoring.drift import THRESHOLDS
from .base import Builder, Param, check_input_names

INPUTS = ("reference", "current", "model", "tokenizer")


class Drift(Builder):
    """Compare current data with a reference, column by column; alert (exit 4) past the dataset rule."""

    name = "drift"
    env = ("numpy", "scipy", "pandas", "pyarrow", "matplotlib", "torch")
    params = {
        "columns": Param("list", help="the columns to compare (default: every column both sides have, "
                                      "less `ignore`)"),
        "ignore": Param("list", default=[], help="columns never compared, e.g. [id, year]"),
        "thresholds": Param("dict", default={}, help="statistic -> number (null: report only); unset ones keep "
                                                     "their defaults: " + ", ".join(f"{k}: {v[0]}" for k, v in
                                                                                   THRESHOLDS.items())),
        "drift_share": Param("float", default=0.1, help="the dataset drifts (alert, exit 4) when at least this "
                                                        "share of the compared columns drifted"),
        "reference_table": Param("str", default="train", help="the part of a split reference to compare with"),
        "current_table": Param("str", default="test", help="the part of a split current input to read"),
        "where": Param("dict", default={}, help="compare only the current rows with these values, e.g. "
                                               "{year: 2016} or {year: [2016, 2017]}"),
        "max_categories": Param("int", default=50, help="a string column with at most this many values is "
                                                        "categorical, else text"),
        "text_columns": Param("list", default=[], help="string columns compared as text (length, OOV rate)"),
        "alert": Param("bool", default=True, help="false: report drift without failing the step"),
        "batch_size": Param("int", default=4096, help="rows scored at a time for prediction drift"),
    }

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        def fail(key, message):
            raise RecipeError(message, file=file, step=step, key=f"params.{key}")

        for name, value in (params["thresholds"] or {}).items():
            if name not in THRESHOLDS:
                fail(f"thresholds.{name}", f"drift has no statistic {name!r}{did_you_mean(str(name), THRESHOLDS)}; "
                                           f"its statistics are: {', '.join(THRESHOLDS)}")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                fail(f"thresholds.{name}", f"a threshold is a number (or null to report only), got {value!r}; "
                                           f"e.g. `{name}: {THRESHOLDS[name][0] or 0.05}`")
        if not 0 <= params["drift_share"] <= 1:
            fail("drift_share", f"drift_share is a share of columns between 0 and 1, got {params['drift_share']}")
        for key in ("columns", "ignore", "text_columns"):
            if params.get(key) is not None and not all(isinstance(c, str) and c for c in params[key]):
                fail(key, f"{key} is a list of column names, got {params[key]!r}")
        if params["max_categories"] < 1 or params["batch_size"] < 1:
            fail("max_categories", "max_categories and batch_size must be at least 1")

    def check_inputs(self, params: dict, inputs: dict, *, file: str | None, step: str) -> None:
        check_input_names("drift", inputs, INPUTS, file=file, step=step)
        for name in ("reference", "current"):
            if name not in inputs:
                raise RecipeError(f"drift needs a `{name}` input: the {'baseline data (a profile or table step)' if name == 'reference' else 'data to check (a table step or a log source)'}",
                                  file=file, step=step, key="inputs")

    def build(self, ctx) -> None:
        from ..evaluation import gates as G
        from ..monitoring import drift as D
        from ..monitoring import frames, report

        p = ctx.params
        ref_path, cur_path = Path(ctx.input("reference")), Path(ctx.input("current"))
        current = frames.select(frames.read_frame(cur_path, p["current_table"], "the current input"), p["where"],
                                "the current input")
        if not len(current):
            raise DataValidationError(f"step '{ctx.step}': the current input ({cur_path.name}) has no rows (an "
                                      "empty log window?): there is nothing to compare. Widen the log source's "
                                      "`since`/`until` or wait for traffic")
        profile = frames.read_profile(ref_path) if frames.is_profile(ref_path) else None
        reference = None if profile else frames.read_frame(ref_path, p["reference_table"], "the reference input")
        ref_columns = list(profile["column_order"]) if profile else list(reference.columns)
        columns = _columns(ctx.step, p, ref_columns, list(current.columns))
        vocabulary = _vocabulary(ctx.inputs.get("tokenizer"))
        ctx.log.info("comparing %d columns: %d current rows against the %s", len(columns), len(current),
                     "profile" if profile else f"reference table ({len(reference)} rows)")
        stats = (D.compare_to_profile(profile, current, columns, vocabulary) if profile
                 else D.compare_to_table(reference, current, columns, p, vocabulary))
        limits = D.thresholds(p["thresholds"])
        verdict = D.decide(stats, limits, p["drift_share"])
        prediction = None
        if "model" in ctx.inputs:
            if profile is not None:
                raise RecipeError("prediction drift scores the model on both sides, so its reference must be a "
                                  "table, not a profile: give `reference:` the data step the profile was made of",
                                  step=ctx.step, key="inputs.reference")
            prediction = _prediction_drift(ctx, reference, current, limits)
        rule = {"metric": "drifted_share", "value": verdict["drifted_share"], "operator": "<",
                "threshold": p["drift_share"], "expression": f"< {p['drift_share']:g}",
                "passed": not verdict["dataset_drift"]}
        rows = [rule]
        if prediction is not None:
            rows.append({"metric": "prediction_psi", "value": prediction.get("psi"), "operator": "<",
                         "threshold": limits["prediction_psi"], "expression": f"< {limits['prediction_psi']}",
                         "passed": not prediction["drifted"]})
        alert = not all(r["passed"] for r in rows)
        result = {"format": 1, "step": ctx.step, "reference": {"kind": "profile" if profile else "table",
                  "rows": profile["rows"] if profile else len(reference)}, "current": {"rows": len(current)},
                  "thresholds": limits, "drift_share": p["drift_share"], **verdict, "columns": stats,
                  "prediction": prediction, "alert": alert}
        report.write_drift(ctx.out, result, rows, reference, current, profile)
        ctx.log.info("drifted columns: %s (share %.3f)", ", ".join(verdict["drifted_columns"]) or "none",
                     verdict["drifted_share"])
        if alert and p["alert"]:
            raise GateFailed(_message(ctx.step, result, G.table(rows)), keep_artifact=True)


def _columns(step: str, p: dict, ref_columns: list, cur_columns: list) -> list[str]:
    """The columns to compare; a reference and current data that disagree are refused (exit 3)."""
    ignore = set(p["ignore"] or [])
    if p["columns"]:
        wanted = [c for c in p["columns"] if c not in ignore]
        for side, have in (("reference", ref_columns), ("current data", cur_columns)):
            missing = [c for c in wanted if c not in have]
            if missing:
                raise DataValidationError(f"step '{step}', params.columns: the {side} has no column "
                                          f"{', '.join(map(repr, missing))}{did_you_mean(missing[0], have)}; it has "
                                          f"{', '.join(have)}")
        return wanted
    only_ref = [c for c in ref_columns if c not in cur_columns and c not in ignore]
    if only_ref:
        raise DataValidationError(f"step '{step}': the reference has columns the current data lacks: "
                                  f"{', '.join(only_ref)} (the current data has {', '.join(cur_columns)}). Compare "
                                  "like with like: list the columns to compare under `columns:`, or add the extra "
                                  "ones to `ignore:`")
    return [c for c in ref_columns if c not in ignore]


def _vocabulary(tokenizer) -> set | None:
    """The whole-word vocabulary of a tokenizer artifact (tokenizer.json or vocab.txt), or None."""
    import json

    if tokenizer is None:
        return None
    root = Path(tokenizer)
    found = sorted(root.rglob("tokenizer.json")) or sorted(root.rglob("vocab.txt"))
    if not found:
        raise RecipeError(f"the tokenizer input ({root.name}) has no tokenizer.json or vocab.txt",
                          key="inputs.tokenizer")
    if found[0].name == "vocab.txt":
        words = found[0].read_text().split()
    else:
        words = list((json.loads(found[0].read_text()).get("model") or {}).get("vocab") or {})
    return {w.lstrip("Ġ▁").removeprefix("##") for w in words}


def _prediction_drift(ctx, reference, current, limits: dict) -> dict:
    """PSI of the model's scores (the positive class's probability, or the prediction) on both sides."""
    from ..monitoring import predictions, stats

    model = Path(ctx.input("model"))
    ref_scores = predictions.scores(model, reference, ctx.params["batch_size"], ctx.step)
    cur_scores = predictions.scores(model, current, ctx.params["batch_size"], ctx.step)
    values = stats.numeric(ref_scores, cur_scores)
    values["reference_mean"], values["current_mean"] = float(ref_scores.mean()), float(cur_scores.mean())
    values["drifted"] = values["psi"] is not None and values["psi"] >= (limits["prediction_psi"] or float("inf"))
    return values


def _message(step: str, result: dict, table: str) -> str:
    shown = sorted(result["drifted_columns"], key=lambda c: -(result["columns"][c].get("psi") or 0))[:8]
    lines = [f"  {c}: {'; '.join(result['columns'][c]['reasons'])}" for c in shown]
    more = len(result["drifted_columns"]) - len(shown)
    pred = result.get("prediction") or {}
    return (f"step '{step}': drift alert: {len(result['drifted_columns'])} of {len(result['columns'])} columns "
            f"drifted ({', '.join(result['drifted_columns']) or 'none'})"
            + (f", and the model's predictions (psi {pred['psi']:.3g})" if pred.get("drifted") else "") + ":\n"
            + "\n".join(lines) + (f"\n  ... and {more} more (drift.json)" if more > 0 else "")
            + f"\n{table}\nThe current data no longer looks like the reference: retrain on it (the monitor recipe's "
            "retrain steps), or, if the change is expected, raise `drift_share:` or a statistic under "
            f"`thresholds:` of step '{step}'.")
