"""Gates: conditions on an evaluation's metrics that a model must meet for its step to pass.

A gate is written in the recipe as `metric: "OP THRESHOLD"`::

    gates:
      accuracy: ">= 0.82"
      demographic_parity_difference: "<= 0.10"
      f1_macro: ">= baseline - 0.01"      # relative to the `baseline` input's value of the same metric
      log_loss: "<= baseline"

OP is one of >=, >, <=, <; THRESHOLD is a number, or `baseline`, `baseline + N` or `baseline - N`.
A gate may name a bound of a metric's bootstrap interval instead of the metric, so that a small sample
cannot pass by luck::

      "upper(race.fpr_gap)": "<= 0.25"     # race.fpr_gap_ci_high in metrics.json
      "lower(accuracy)": ">= 0.80"         # accuracy_ci_low

Intervals exist for the headline metric (accuracy, rmse, perplexity) and every bias gap.
Parsing and naming checks are cheap (no heavy imports): the builder's `check()` runs them before anything
builds. Evaluating gates needs the metric values only.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from ..errors import RecipeError, did_you_mean

OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_GATE = re.compile(rf"^\s*(>=|<=|>|<)\s*(?:(baseline)\s*(?:([+-])\s*({_NUMBER}))?|({_NUMBER}))\s*$")
EXAMPLES = '">= 0.82", "<= 0.10", ">= baseline - 0.01"'
BOUNDS = {"lower": "_ci_low", "upper": "_ci_high"}
_BOUND = re.compile(r"^\s*(\w+)\s*\(\s*([^()]*?)\s*\)\s*$")


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    number: float  # the threshold, or the offset added to the baseline's value
    baseline: bool = False
    expression: str = ""
    bound: str | None = None  # "lower" or "upper": the gate reads that bound of the metric's interval

    @property
    def key(self) -> str:
        """The name in metrics.json that the gate reads."""
        return self.metric if self.bound is None else _inner(self.metric) + BOUNDS[self.bound]

    def threshold(self, baseline_metrics: dict | None) -> float | None:
        if not self.baseline:
            return self.number
        value = (baseline_metrics or {}).get(self.key)
        return None if not _finite(value) else value + self.number


def split_bound(metric: str) -> tuple[str | None, str]:
    """("lower" | "upper" | None, the metric) of a gate's name; ValueError for another function."""
    m = _BOUND.match(metric)
    if not m:
        if "(" in metric or ")" in metric:
            raise ValueError(f"{metric!r} is not a metric or lower(METRIC) / upper(METRIC)")
        return None, metric
    bound, inner = m.groups()
    if bound not in BOUNDS:
        raise ValueError(f"unknown bound {bound!r} in {metric!r}; use lower(METRIC) or upper(METRIC), the bounds of "
                         "the metric's bootstrap interval")
    return bound, inner


def _inner(metric: str) -> str:
    return split_bound(metric)[1]


def parse(metric: str, expression) -> Gate:
    """A Gate, or a ValueError that says what is wrong with the expression."""
    if isinstance(expression, bool) or not isinstance(expression, str):
        raise ValueError(f"a gate is a quoted string such as {EXAMPLES}, got {expression!r}"
                         + (" (write the operator too, e.g. \">= " + str(expression) + "\")"
                            if isinstance(expression, (int, float)) and not isinstance(expression, bool) else ""))
    m = _GATE.match(expression)
    if not m:
        op = re.match(r"^\s*([=!<>]+)", expression)
        if op and op.group(1) not in OPERATORS:
            raise ValueError(f"unknown operator {op.group(1)!r} in {expression!r}; use one of "
                             f"{', '.join(OPERATORS)}")
        if not op:
            raise ValueError(f"{expression!r} does not start with an operator ({', '.join(OPERATORS)}); write "
                             f"e.g. {EXAMPLES}")
        raise ValueError(f"{expression!r} is not OP NUMBER or OP baseline [+|- NUMBER]; after the operator "
                         f"write a number (e.g. 0.82) or `baseline`, `baseline - 0.01`")
    op, baseline, sign, offset, number = m.groups()
    bound = split_bound(metric)[0]
    if baseline:
        value = float(offset or 0.0) * (-1.0 if sign == "-" else 1.0)
        return Gate(metric, op, value, True, expression.strip(), bound)
    return Gate(metric, op, float(number), False, expression.strip(), bound)


def check_gates(gates, *, metrics: tuple[str, ...], fairness: tuple[str, ...], protected: list,
                has_baseline: bool | None, file: str | None, step: str, intervals: tuple[str, ...] = (),
                resamples: int = 1) -> list[Gate]:
    """Parse every gate and check that it names a metric evaluate writes (`metrics`, or with `protected`
    columns the `fairness` ones, bare or as `<column>.<name>`), and a bound only of a metric with an
    interval (`intervals`, and the fairness ones) when there are `resamples`; `has_baseline` None: not
    known yet."""
    if not isinstance(gates, dict):
        raise RecipeError(f"gates is a mapping of metric -> condition, e.g. {{accuracy: \">= 0.82\"}}; got "
                          f"{gates!r}", file=file, step=step, key="params.gates")
    parsed = []
    for written, expression in gates.items():
        where = {"file": file, "step": step, "key": f"params.gates.{written}"}
        try:
            bound, metric = split_bound(str(written))
        except ValueError as e:
            raise RecipeError(f"{e}", **where) from None
        column, _, name = metric.rpartition(".")
        known = metrics + (fairness if protected else ())
        prefixed = [f"{c}.{f}" for c in protected for f in fairness]
        if column:
            if column not in protected:
                if name in fairness:
                    raise RecipeError(f"gate on {metric!r}: {column!r} is not a protected column; list it in "
                                      f"`protected:` (now: {', '.join(map(str, protected)) or 'none'})", **where)
                raise RecipeError(f"evaluate writes no metric {metric!r}{did_you_mean(metric, known + tuple(prefixed))}"
                                  f"; it writes: {', '.join(known)}", **where)
            if name not in fairness:
                raise RecipeError(f"evaluate writes no per-column metric {metric!r}{did_you_mean(metric, prefixed)}; "
                                  f"per protected column it writes: {', '.join(fairness)}", **where)
        elif metric in fairness and not protected:
            raise RecipeError(f"gate on {metric!r} is a bias metric, which needs the protected columns: add "
                              f"`protected: [COLUMN, ...]` to the step's params", **where)
        elif metric not in known:
            raise RecipeError(f"evaluate writes no metric {metric!r}{did_you_mean(metric, known + tuple(prefixed))}; "
                              f"it writes: {', '.join(known)}", **where)
        if bound and name not in intervals + fairness:
            raise RecipeError(f"{written!r}: {metric!r} has no confidence interval; intervals are computed for "
                              f"the headline metric ({', '.join(intervals)}) and the bias gaps. Gate on {metric!r} "
                              "itself", **where)
        if bound and resamples <= 0:
            raise RecipeError(f"{written!r} reads the bootstrap interval, but `bootstrap: {resamples}` computes "
                              "none; set `bootstrap:` to a number of resamples (e.g. 1000)", **where)
        try:
            gate = parse(str(written), expression)
        except ValueError as e:
            raise RecipeError(f"malformed gate: {e}", **where) from None
        if gate.baseline and has_baseline is False:
            raise RecipeError(f"gate {written}: {gate.expression!r} compares with a baseline, but the step has no "
                              f"`baseline` input; add one, e.g. `inputs: {{baseline: {{tag: prod-model}}}}`",
                              **where)
        parsed.append(gate)
    return parsed


def evaluate(gates: list[Gate], metrics: dict, baseline_metrics: dict | None) -> list[dict]:
    """One row per gate: metric, value, operator, threshold, the expression, the baseline's value, passed."""
    rows = []
    for gate in gates:
        value, threshold = metrics.get(gate.key), gate.threshold(baseline_metrics)
        passed = _finite(value) and threshold is not None and OPERATORS[gate.op](value, threshold)
        row = {"metric": gate.metric, "value": value if _finite(value) else None, "operator": gate.op,
               "threshold": _round(threshold), "expression": gate.expression, "passed": bool(passed)}
        if gate.baseline:
            row["baseline"] = (baseline_metrics or {}).get(gate.key)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """The gate results as a fixed-width text table (for the error message and summary.md)."""
    head = ("metric", "value", "gate", "threshold", "result")
    body = [(r["metric"], _fmt(r["value"]), r["expression"], _fmt(r["threshold"]), "pass" if r["passed"] else "FAIL")
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    return "\n".join("  " + "  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
                     for line in (head, *body))


def failure_message(rows: list[dict], step: str) -> str:
    failed = [r["metric"] for r in rows if not r["passed"]]
    missing = [r["metric"] for r in rows if r["value"] is None or r["threshold"] is None]
    hint = (f" A gate without a value ({', '.join(missing)}) fails: the metric is undefined on this data, or "
            "the baseline lacks it." if missing else "")
    return (f"step '{step}': {len(failed)} of {len(rows)} evaluation gates failed ({', '.join(failed)}):\n"
            f"{table(rows)}\n{hint.strip()}{' ' if hint else ''}Improve the model or its data, or change the "
            f"condition under `gates:` of step '{step}' in the recipe if it is wrong.")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _round(value):
    return None if value is None else float(f"{value:.10g}")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
