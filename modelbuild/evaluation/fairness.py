"""Bias: metrics per group of each protected column (fairlearn's MetricFrame), and the gaps between groups.

Classification, for each protected column C (group values as strings; a missing value is the group
"(missing)"):

- `C.demographic_parity_difference`, `C.demographic_parity_ratio`: the max-min difference and the min/max
  ratio of the selection rate (share predicted positive) between groups;
- `C.equalized_odds_difference`: the larger of the true-positive-rate and false-positive-rate differences;
- `C.accuracy_gap`, `C.fpr_gap`, `C.fnr_gap`: max-min between groups of accuracy, false positive rate and
  false negative rate.

"Positive" is the positive class: the second of two classes (the greater, as `train` orders them), or
`positive_label`. With more classes and no `positive_label`, the binary-style metrics are computed one
class against the rest for every class and the worst is reported (largest difference, smallest ratio);
accuracy is always the multiclass accuracy. Regression: `C.mae_gap` and `C.rmse_gap`.

Groups with fewer than `min_group_size` scored rows are listed in the per-group tables (`in_gaps` false)
but left out of the gaps: one defendant of a race would otherwise decide a gate. A gap needs two groups;
with fewer it is None. Every gap has a percentile bootstrap interval (`C.<name>_ci_low`, `_ci_high`) from
scipy.stats.bootstrap. Both the gaps and their resamples come from one vectorised statistic over per-group
confusion counts: fairlearn's `demographic_parity_difference` & co. build a MetricFrame per call, 12 s for
one column of 15,000 rows here, and 1000 resamples would take hours. The statistic follows fairlearn's
conventions (a rate with nothing to count, the FPR of a group with no negatives, is 0; a ratio with a zero
denominator is None) and gives fairlearn's numbers (tests/builders/test_evaluate.py checks it).

Each metric is also written bare (`demographic_parity_difference`): the worst over the protected columns, so
one gate covers them all; so are its interval's bounds (the worst bound over the columns, so that
`upper(fpr_gap) <= 0.2` holds when it holds for every column). fairlearn, numpy and scikit-learn are
imported by the functions."""

from __future__ import annotations

import math

MISSING = "(missing)"
_WORST_IS_MIN = ("demographic_parity_ratio",)


def group_labels(values) -> list[str]:
    """Group names of a protected column: every value as a string, missing values as "(missing)"."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(MISSING)
        else:
            out.append(str(v))
    return out


def classification(y_true, y_pred, groups: dict[str, list[str]], *, positive: int | None, classes: int,
                   min_group_size: int = 1, confidence: float = 0.95) -> tuple[dict, dict[str, list[dict]]]:
    """(flat gaps, one table per column: a row per group) for class indices y_true and y_pred. With a
    positive class, each group's FPR and FNR have a Wilson interval (scipy's binomtest) at `confidence`."""
    import numpy as np
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_negative_rate,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    rates = {"selection_rate": selection_rate, "tpr": true_positive_rate, "fpr": false_positive_rate,
             "fnr": false_negative_rate}
    tables = {}
    for column, labels in groups.items():
        g = np.asarray(labels, dtype=object)
        overall = MetricFrame(metrics={"count": count, "accuracy": accuracy_score}, y_true=y_true, y_pred=y_pred,
                              sensitive_features=g)
        frame = None if positive is None else MetricFrame(
            metrics=rates, y_true=(y_true == positive).astype(int), y_pred=(y_pred == positive).astype(int),
            sensitive_features=g)
        tables[column] = _table(overall, frame, min_group_size)
        if positive is not None:
            _rate_intervals(tables[column], y_true == positive, y_pred == positive, g, confidence)
    return gaps("classification", y_true, y_pred, groups, positive=positive, classes=classes,
                min_group_size=min_group_size), tables


def _rate_intervals(rows: list[dict], actual, predicted, g, confidence: float) -> None:
    """Add fpr_ci_low/high and fnr_ci_low/high to each group's row: Wilson score intervals of FP / negatives
    and FN / positives, so that a small group's rate shows how little it says (None without rows to count)."""
    from scipy.stats import binomtest

    def wilson(k: int, n: int):
        if n == 0:
            return None, None
        ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
        return float(ci.low), float(ci.high)

    for row in rows:
        inside = g == row["group"]
        a, p = actual[inside], predicted[inside]
        row["fpr_ci_low"], row["fpr_ci_high"] = wilson(int((p & ~a).sum()), int((~a).sum()))
        row["fnr_ci_low"], row["fnr_ci_high"] = wilson(int((~p & a).sum()), int(a.sum()))


def regression(y_true, y_pred, groups: dict[str, list[str]], *, min_group_size: int = 1):
    import numpy as np
    from fairlearn.metrics import MetricFrame, count
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    metrics = {"count": count, "mae": mean_absolute_error, "rmse": root_mean_squared_error}
    tables = {column: _table(MetricFrame(metrics=metrics, y_true=y_true, y_pred=y_pred,
                                         sensitive_features=np.asarray(labels, dtype=object)), None, min_group_size)
              for column, labels in groups.items()}
    return gaps("regression", y_true, y_pred, groups, min_group_size=min_group_size), tables


def gaps(kind: str, y_true, y_pred, groups: dict[str, list[str]], *, positive: int | None = None, classes: int = 0,
         min_group_size: int = 1) -> dict:
    """`C.<gap>` of every protected column, and bare: the worst over the columns."""
    import numpy as np

    codes, sizes = zip(*(_codes(labels, min_group_size) for labels in groups.values()), strict=True)
    dtype = np.int64 if kind == "classification" else np.float64
    values = gap_statistic(kind, sizes, positive, classes)(np.asarray(y_true, dtype=dtype),
                                                           np.asarray(y_pred, dtype=dtype), *codes)
    names = CLASSIFICATION_GAPS if kind == "classification" else REGRESSION_GAPS
    flat = {f"{c}.{n}": float(v) for (c, n), v in zip(((c, n) for c in groups for n in names), values, strict=True)}
    _add_worst(flat, groups)
    return _clean(flat)


CLASSIFICATION_GAPS = ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
                       "accuracy_gap", "fpr_gap", "fnr_gap")
REGRESSION_GAPS = ("mae_gap", "rmse_gap")


def one_vs_rest(positive: int | None, classes: int) -> list[int]:
    """The classes taken as positive in turn: the positive class, or every class when there is none."""
    return [positive] if positive is not None else list(range(classes))


def excluded(tables: dict[str, list[dict]]) -> dict[str, dict[str, int]]:
    """{column: {group: count}} of the groups left out of the gaps."""
    return {c: {r["group"]: r["count"] for r in rows if not r["in_gaps"]} for c, rows in tables.items()
            if any(not r["in_gaps"] for r in rows)}


# ---- bootstrap intervals of the gaps ----------------------------------------------------------------------
def intervals(kind: str, y_true, y_pred, groups: dict[str, list[str]], *, positive: int | None = None,
              classes: int = 0, min_group_size: int = 1, resamples: int, confidence: float, seed: int) -> dict:
    """`C.<gap>_ci_low` and `_ci_high` of every gap of every protected column (and bare: the worst bound
    over the columns), from one scipy.stats.bootstrap over the rows."""
    import numpy as np

    from .metrics import interval

    names = CLASSIFICATION_GAPS if kind == "classification" else REGRESSION_GAPS
    codes, sizes = zip(*(_codes(labels, min_group_size) for labels in groups.values()), strict=True)
    statistic = gap_statistic(kind, sizes, positive, classes)
    dtype = np.int64 if kind == "classification" else np.float64
    data = (np.asarray(y_true, dtype=dtype), np.asarray(y_pred, dtype=dtype), *codes)
    low, high = interval(statistic, data, resamples=resamples, confidence=confidence, seed=seed)
    flat = {}
    for i, (column, name) in enumerate((c, n) for c in groups for n in names):
        flat[f"{column}.{name}_ci_low"] = None if low is None else low[i]
        flat[f"{column}.{name}_ci_high"] = None if high is None else high[i]
    for name in names:
        for bound in ("_ci_low", "_ci_high"):
            flat[name + bound] = _worst(name, [flat[f"{c}.{name}{bound}"] for c in groups])
    return _clean(flat)


def gap_statistic(kind: str, sizes, positive: int | None, classes: int):
    """statistic(y_true, y_pred, *group_codes) -> every gap of every column, [gap] or [gap, resample]."""
    import numpy as np

    def statistic(yt, yp, *gs, axis=-1):
        if kind == "classification":
            parts = [_classification_gaps(yt, yp, g, k, positive, classes) for g, k in zip(gs, sizes, strict=True)]
        else:
            parts = [_regression_gaps(yt - yp, g, k) for g, k in zip(gs, sizes, strict=True)]
        out = np.concatenate(parts)
        return out[:, 0] if np.ndim(yt) == 1 else out

    return statistic


def _codes(labels: list[str], min_group_size: int):
    """(row -> group index 0..k-1 of the groups in the gaps, and k for the rows of groups left out; k)."""
    import numpy as np

    _, inverse, counts = np.unique(np.asarray(labels, dtype=str), return_inverse=True, return_counts=True)
    large = counts >= min_group_size
    k = int(large.sum())
    return np.where(large, np.cumsum(large) - 1, k)[inverse].astype(np.int64), k


def _counts(cells, g, k: int, size: int):
    """Counts of `cells` (values 0..size-1) per resample and group: [..., k, size]; the rows of left-out
    groups (code k) are dropped."""
    import numpy as np

    cells, g = np.atleast_2d(cells), np.atleast_2d(g)
    b = cells.shape[0]
    flat = (np.arange(b)[:, None] * (k + 1) + g) * size + cells
    return np.bincount(flat.ravel(), minlength=b * (k + 1) * size).reshape(b, k + 1, size)[:, :k]


def _spread(values, present, *, ratio: bool = False):
    """max - min (or min / max) over the groups present in each resample; nan with fewer than two."""
    import numpy as np

    with np.errstate(invalid="ignore", divide="ignore"):
        hi = np.where(present, values, -np.inf).max(axis=-1)
        lo = np.where(present, values, np.inf).min(axis=-1)
        out = lo / hi if ratio else hi - lo
    return np.where(present.sum(axis=-1) >= 2, out, np.nan)


def _classification_gaps(yt, yp, g, k: int, positive: int | None, classes: int):
    """[gap, resample] in CLASSIFICATION_GAPS order, as fairlearn computes them: a rate with nothing to count
    is 0; the worst over the one-vs-rest classes."""
    import numpy as np

    m = _counts(yt * classes + yp, g, k, classes * classes).reshape(-1, k, classes, classes).astype(np.float64)
    n = m.sum(axis=(-1, -2))
    present = n > 0
    per_class = []
    for c in one_vs_rest(positive, classes):
        tp, predicted, actual = m[..., c, c], m[..., :, c].sum(axis=-1), m[..., c, :].sum(axis=-1)
        fp, fn, negatives = predicted - tp, actual - tp, n - actual
        selection = predicted / np.maximum(n, 1)
        tpr, fnr = tp / np.maximum(actual, 1), fn / np.maximum(actual, 1)
        fpr = fp / np.maximum(negatives, 1)
        per_class.append([_spread(selection, present), _spread(selection, present, ratio=True),
                          np.maximum(_spread(tpr, present), _spread(fpr, present)),
                          _spread(fpr, present), _spread(fnr, present)])
    per_class = np.asarray(per_class)  # [class, gap, resample]
    worst = np.concatenate([per_class[:, :1].max(axis=0), per_class[:, 1:2].min(axis=0),
                            per_class[:, 2:].max(axis=0)])
    accuracy = np.trace(m, axis1=-2, axis2=-1) / np.maximum(n, 1)
    return np.insert(worst, 3, _spread(accuracy, present), axis=0)


def _regression_gaps(errors, g, k: int):
    import numpy as np

    errors, g = np.atleast_2d(errors), np.atleast_2d(g)
    b = errors.shape[0]
    flat = (np.arange(b)[:, None] * (k + 1) + g).ravel()

    def total(weights):
        return np.bincount(flat, weights=weights.ravel(), minlength=b * (k + 1)).reshape(b, k + 1)[:, :k]

    n = total(np.ones_like(errors))
    present = n > 0
    mae, rmse = total(np.abs(errors)) / np.maximum(n, 1), np.sqrt(total(errors ** 2) / np.maximum(n, 1))
    return np.stack([_spread(mae, present), _spread(rmse, present)])


def _table(frame, rates, min_group_size: int) -> list[dict]:
    """Rows {group, count, in_gaps, metric...} sorted by group, from MetricFrame.by_group."""
    by_group = frame.by_group
    if rates is not None:
        by_group = by_group.join(rates.by_group)
    rows = []
    for group, row in by_group.iterrows():
        values = {k: (int(v) if k == "count" else float(v)) for k, v in row.items()}
        rows.append({"group": str(group), "count": values.pop("count"),
                     "in_gaps": int(row["count"]) >= min_group_size, **values})
    return sorted(rows, key=lambda r: r["group"])


def _worst(name: str, values: list):
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    return min(finite) if name in _WORST_IS_MIN else max(finite)


def _add_worst(flat: dict, groups: dict) -> None:
    """The bare name of each metric: the worst over the protected columns."""
    names = {k.rsplit(".", 1)[1] for k in flat}
    for name in sorted(names):
        flat[name] = _worst(name, [flat[f"{c}.{name}"] for c in groups])


def _clean(flat: dict) -> dict:
    out = {}
    for k, v in flat.items():
        v = None if v is None else float(v)
        out[k] = v if v is not None and math.isfinite(v) else None
    return out
