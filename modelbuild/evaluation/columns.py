"""Predictions read from a column of the data instead of a model, so that a score, a rule or last year's
system is evaluated like a model and can be the `baseline` a model must beat.

The `predictions:` param of evaluate takes one of::

    predictions: "education_num >= 13"                    # a rule: true -> the positive class
    predictions: {column: decile_score, threshold: 5}      # a score: >= 5 -> the positive class
    predictions: {column: p_high, threshold: 0.5, probability: true}   # a probability (log_loss, ece)
    predictions: {column: last_year}                       # the predicted labels (or values) themselves

A rule is COLUMN OP VALUE, OP one of >=, >, <=, <, ==, !=; VALUE a number, or for == and != a word or a
quoted string (`sex == Female`). It is parsed by a regular expression, never evaluated as Python. A score
(and a rule with >=, >, <=, <) also ranks the rows, which gives `roc_auc`; only a score marked
`probability: true` gives `log_loss`, `ece` and the calibration plot. Parsing is cheap (used when the
recipe is read); numpy is imported by the scoring functions.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq,
       "!=": operator.ne}
ORDERED = (">=", ">", "<=", "<")
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_RULE = re.compile(r"^\s*(.+?)\s*(>=|<=|==|!=|>|<|=>|=<|=)\s*(.*?)\s*$")
KEYS = ("column", "threshold", "probability")
FORMS = ('"education_num >= 13", {column: decile_score, threshold: 5}, or {column: last_year} (the labels '
         'themselves)')


@dataclass(frozen=True)
class Predictions:
    """Where the predictions come from. `op` None: the column holds the predicted labels (or values)."""

    column: str
    op: str | None = None
    value: object = None
    probability: bool = False

    def describe(self) -> str:
        if self.op is None:
            return f"the labels in column {self.column!r}"
        if self.probability:
            return f"the probability in column {self.column!r}, positive when {self.rule()}"
        return f"the rule {self.rule()}"

    def rule(self) -> str:
        value = f"{self.value:g}" if isinstance(self.value, float) else repr(self.value)
        return f"{self.column} {self.op} {value}"

    def as_json(self) -> dict:
        return {"column": self.column, "rule": self.rule() if self.op else None, "probability": self.probability}


def parse(spec) -> Predictions:
    """A Predictions, or a ValueError that says what is wrong and shows the forms."""
    if isinstance(spec, str):
        return _rule(spec)
    if not isinstance(spec, dict):
        raise ValueError(f"predictions is a rule or a mapping, e.g. {FORMS}; got {spec!r}")
    unknown = [k for k in spec if k not in KEYS]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} under predictions; it takes: {', '.join(KEYS)}")
    column, threshold, probability = spec.get("column"), spec.get("threshold"), spec.get("probability", False)
    if not isinstance(column, str) or not column:
        raise ValueError(f"predictions needs `column:`, the name of the column to score, e.g. {FORMS}")
    if not isinstance(probability, bool):
        raise ValueError(f"predictions.probability is true or false, got {probability!r}")
    if threshold is None:
        if probability:
            raise ValueError("predictions.probability needs a `threshold:` (e.g. 0.5): the probability at and above "
                             "which a row is predicted positive")
        return Predictions(column)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"predictions.threshold is a number: a row whose {column!r} is at or above it is predicted "
                         f"positive; got {threshold!r}")
    if probability and not 0 <= threshold <= 1:
        raise ValueError(f"predictions.threshold of a probability lies between 0 and 1, got {threshold!r}")
    return Predictions(column, ">=", float(threshold), probability)


def _rule(text: str) -> Predictions:
    m = _RULE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a rule COLUMN OP VALUE (OP one of {', '.join(OPS)}), e.g. {FORMS}")
    column, op, raw = m.groups()
    if op not in OPS:
        raise ValueError(f"unknown operator {op!r} in the rule {text!r}; use one of {', '.join(OPS)}")
    if not raw:
        raise ValueError(f"the rule {text!r} has nothing after {op!r}: write a number, e.g. {column} {op} 13")
    if _NUMBER.match(raw):
        return Predictions(column, op, float(raw))
    if op in ORDERED:
        raise ValueError(f"{raw!r} in the rule {text!r} is not a number; {op} compares numbers (== and != also "
                         "compare words)")
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        raw = raw[1:-1]
    elif not re.match(r"^[\w.\-]+$", raw):
        raise ValueError(f"{raw!r} in the rule {text!r} is neither a number nor a word; quote it: "
                         f"{column} {op} '{raw}'")
    return Predictions(column, op, raw)


# ---- scoring ------------------------------------------------------------------------------------------
def classes(table, target: str, spec: Predictions) -> list:
    """The classes, in train's order (sorted): the target's values, and a label column's predicted values."""
    from ..training.tabular import _key

    values = set(v for v in table.column(target).unique().to_pylist() if v is not None)
    if spec.op is None:
        values |= set(v for v in table.column(spec.column).unique().to_pylist() if v is not None)
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=_key)


def score(kind: str, table, spec: Predictions, *, target: str, classes: list, positive: int | None):
    """A predict.Scored of the column, as a model's would be. Rows without a label or a prediction are not
    scored. ValueError when the column does not fit the task (strings compared with a number)."""
    import numpy as np

    from ..training.tabular import _key
    from .predict import Scored

    truth, said = table.column(target).to_pylist(), table.column(spec.column).to_pylist()
    if kind == "regression":
        y_true, y_pred = _numbers(truth, target), _numbers(said, spec.column)
        keep = np.isfinite(y_true) & np.isfinite(y_pred)
        return Scored("tabular-regression", y_true=y_true[keep], y_pred=y_pred[keep], keep=keep, rows=len(truth),
                      skipped=int((~keep).sum()))
    index = {_key(c): i for i, c in enumerate(classes)}
    y_true = np.array([index.get(_key(v), -1) if v is not None else -1 for v in truth], dtype=np.int64)
    scored = Scored("tabular-classification", classes=list(classes), rows=len(truth))
    if spec.op is None:
        y_pred = np.array([index.get(_key(v), -1) if v is not None else -1 for v in said], dtype=np.int64)
        keep = (y_true >= 0) & (y_pred >= 0)
    else:
        if positive is None or len(classes) != 2:
            raise ValueError(f"a rule or a threshold predicts positive or not, so the target {target!r} needs two "
                             f"classes; it has {len(classes)} ({', '.join(map(repr, classes))}). Set "
                             "`positive_label:` to one of them, or give the predicted labels: {column: COLUMN}")
        raw = _numbers(said, spec.column) if spec.op in ORDERED or isinstance(spec.value, float) else None
        if raw is None:
            hit = np.array([v is not None and str(v) == spec.value for v in said])
            hit = hit if spec.op == "==" else ~hit
            known, ranks = np.array([v is not None for v in said]), hit.astype(np.float64)
        else:
            known = np.isfinite(raw)
            with np.errstate(invalid="ignore"):
                hit = OPS[spec.op](raw, spec.value) & known
            ranks = {">=": raw, ">": raw, "<=": -raw, "<": -raw}.get(spec.op, hit.astype(np.float64))
        keep = (y_true >= 0) & known
        y_pred = np.where(hit, positive, 1 - positive)
        scored.score = ranks[keep]
        if spec.probability:
            p = raw[keep]
            if ((p < 0) | (p > 1)).any():
                raise ValueError(f"the column {spec.column!r} is marked `probability: true` but holds values outside "
                                 f"0..1 (from {p.min():g} to {p.max():g}); leave `probability` out to score it as "
                                 "a plain score")
            scored.proba = np.stack([1 - p, p], axis=1) if positive == 1 else np.stack([p, 1 - p], axis=1)
    scored.keep, scored.skipped = keep, int((~keep).sum())
    scored.y_true, scored.y_pred = y_true[keep], y_pred[keep]
    return scored


def _numbers(values: list, column: str):
    import numpy as np

    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if v is None:
            out[i] = np.nan
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"the column {column!r} holds {type(v).__name__} values such as {v!r}, not numbers; "
                             "a threshold or an ordered comparison needs a numeric column (== and != compare words)")
        else:
            out[i] = float(v)
    return out
