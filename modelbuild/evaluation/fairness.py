"""Bias: metrics per group of each protected column, and the gaps between groups, with fairlearn.

Classification, for each protected column C (group values as strings; a missing value is the group
"(missing)"):

- `C.demographic_parity_difference`, `C.demographic_parity_ratio`: the max-min difference and the min/max
  ratio of the selection rate (share predicted positive) between groups (fairlearn's functions);
- `C.equalized_odds_difference`: the larger of the true-positive-rate and false-positive-rate differences;
- `C.accuracy_gap`, `C.fpr_gap`, `C.fnr_gap`: max-min between groups of accuracy, false positive rate and
  false negative rate (MetricFrame.difference()).

"Positive" is the positive class: the second of two classes (the greater, as `train` orders them), or
`positive_label`. With more classes and no `positive_label`, the binary-style metrics are computed one
class against the rest for every class and the worst is reported (largest difference, smallest ratio);
accuracy is always the multiclass accuracy.

Regression: `C.mae_gap` and `C.rmse_gap`.

Each metric is also written bare (`demographic_parity_difference`): the worst over the protected columns, so
one gate covers them all. A rate with nothing to count (the FPR of a group with no negatives) follows
fairlearn: 0; a ratio with a zero denominator is None. fairlearn, numpy and scikit-learn are imported by
the functions.
"""

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


def classification(y_true, y_pred, groups: dict[str, list[str]], *, positive: int | None,
                   classes: int) -> tuple[dict, dict[str, list[dict]]]:
    """(flat metrics, one table per column: a row per group) for class indices y_true and y_pred."""
    import numpy as np
    from fairlearn.metrics import (
        MetricFrame,
        count,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        false_negative_rate,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    rates = {"selection_rate": selection_rate, "tpr": true_positive_rate, "fpr": false_positive_rate,
             "fnr": false_negative_rate}
    one_vs_rest = [positive] if positive is not None else list(range(classes))
    flat, tables = {}, {}
    for column, labels in groups.items():
        g = np.asarray(labels, dtype=object)
        overall = MetricFrame(metrics={"count": count, "accuracy": accuracy_score}, y_true=y_true, y_pred=y_pred,
                              sensitive_features=g)
        per_class = []
        for c in one_vs_rest:
            yt, yp = (y_true == c).astype(int), (y_pred == c).astype(int)
            frame = MetricFrame(metrics=rates, y_true=yt, y_pred=yp, sensitive_features=g)
            gaps = frame.difference(method="between_groups")
            per_class.append({
                "demographic_parity_difference": demographic_parity_difference(yt, yp, sensitive_features=g),
                "demographic_parity_ratio": demographic_parity_ratio(yt, yp, sensitive_features=g),
                "equalized_odds_difference": equalized_odds_difference(yt, yp, sensitive_features=g),
                "fpr_gap": gaps["fpr"], "fnr_gap": gaps["fnr"], "frame": frame})
        values = {name: _worst(name, [p[name] for p in per_class]) for name in per_class[0] if name != "frame"}
        values["accuracy_gap"] = overall.difference(method="between_groups")["accuracy"]
        flat.update({f"{column}.{k}": v for k, v in values.items()})
        tables[column] = _table(overall, per_class[0]["frame"] if len(per_class) == 1 else None)
    _add_worst(flat, groups)
    return _clean(flat), tables


def regression(y_true, y_pred, groups: dict[str, list[str]]) -> tuple[dict, dict[str, list[dict]]]:
    import numpy as np
    from fairlearn.metrics import MetricFrame, count
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    flat, tables = {}, {}
    for column, labels in groups.items():
        frame = MetricFrame(metrics={"count": count, "mae": mean_absolute_error, "rmse": root_mean_squared_error},
                            y_true=np.asarray(y_true, dtype=np.float64), y_pred=np.asarray(y_pred, dtype=np.float64),
                            sensitive_features=np.asarray(labels, dtype=object))
        gaps = frame.difference(method="between_groups")
        flat.update({f"{column}.mae_gap": gaps["mae"], f"{column}.rmse_gap": gaps["rmse"]})
        tables[column] = _table(frame, None)
    _add_worst(flat, groups)
    return _clean(flat), tables


def _table(frame, rates) -> list[dict]:
    """Rows {group, count, metric...} sorted by group, from MetricFrame.by_group."""
    by_group = frame.by_group
    if rates is not None:
        by_group = by_group.join(rates.by_group)
    rows = []
    for group, row in by_group.iterrows():
        rows.append({"group": str(group), **{k: (int(v) if k == "count" else float(v)) for k, v in row.items()}})
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
