"""The headline metrics of an evaluation, from predictions: scikit-learn's, plus calibration and bootstrap
confidence intervals. Names here are the names in metrics.json (and the names gates may use).

Importing this module is cheap (the names only); numpy and scikit-learn are imported by the functions.
"""

from __future__ import annotations

import math
import numbers

KINDS = {"tabular-classification": "classification", "sequence-classification": "classification",
         "tabular-regression": "regression", "causal-lm": "language"}
TASKS = tuple(KINDS)
CLASSIFICATION = ("rows", "accuracy", "precision_macro", "recall_macro", "f1_macro", "precision", "recall", "f1",
                  "roc_auc", "log_loss", "ece")
REGRESSION = ("rows", "mae", "rmse", "r2")
LANGUAGE = ("rows", "blocks", "tokens", "loss", "perplexity")
HEADLINE = {"classification": "accuracy", "regression": "rmse", "language": "perplexity"}
BY_KIND = {"classification": CLASSIFICATION, "regression": REGRESSION, "language": LANGUAGE}
# bias metrics: per protected column as `<column>.<name>`, and bare as the worst over the columns
FAIRNESS = {"classification": ("demographic_parity_difference", "demographic_parity_ratio",
                               "equalized_odds_difference", "accuracy_gap", "fpr_gap", "fnr_gap"),
            "regression": ("mae_gap", "rmse_gap"), "language": ()}
BINARY_ONLY = ("precision", "recall", "f1")  # need a positive class: two classes, or `positive_label`


def names(kind: str) -> tuple[str, ...]:
    """Every headline metric of a kind of task, with the headline's confidence interval."""
    h = HEADLINE[kind]
    return BY_KIND[kind] + (f"{h}_ci_low", f"{h}_ci_high")


ALL = tuple(dict.fromkeys(n for kind in BY_KIND for n in names(kind)))
ALL_FAIRNESS = tuple(dict.fromkeys(n for kind in FAIRNESS for n in FAIRNESS[kind]))


def classification(y_true, proba, *, positive: int | None, bins: int, classes: int | None = None, y_pred=None,
                   score=None) -> tuple[dict, dict]:
    """(metrics, details) for class indices `y_true` [n] and class probabilities `proba` [n, k].

    `positive` is the index of the positive class (binary tasks, or `positive_label`): precision, recall
    and f1 are of that class, and binary roc_auc scores its probability; with more classes roc_auc is the
    one-vs-rest macro average. A metric undefined on the data (roc_auc with one class present) is None.
    Predictions read from a column (columns.py) give `y_pred`, and `score` (what ranks the rows, for a binary
    roc_auc) with `proba` None when they are not probabilities: log_loss and ece are then None.
    details: the confusion matrix [true][predicted] (counts, and rates: each row over its true class) and the
    calibration bins."""
    import numpy as np
    from sklearn import metrics as m

    y_true = np.asarray(y_true, dtype=np.int64)
    proba = None if proba is None else np.asarray(proba, dtype=np.float64)
    k = proba.shape[1] if proba is not None else classes
    labels = list(range(k))
    y_pred = proba.argmax(axis=1) if y_pred is None else np.asarray(y_pred, dtype=np.int64)
    p, r, f, _ = m.precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    out = {"rows": len(y_true), "accuracy": m.accuracy_score(y_true, y_pred), "precision_macro": p,
           "recall_macro": r, "f1_macro": f, "log_loss": None, "roc_auc": None, "ece": None}
    if positive is not None:
        yt, yp = (y_true == positive).astype(int), (y_pred == positive).astype(int)
        out.update(precision=m.precision_score(yt, yp, zero_division=0), recall=m.recall_score(yt, yp, zero_division=0),
                   f1=m.f1_score(yt, yp, zero_division=0))
    present = set(np.unique(y_true).tolist())
    pos = positive if positive is not None else 1
    if k == 2 and len(present) == 2 and (proba is not None or score is not None):
        out["roc_auc"] = m.roc_auc_score((y_true == pos).astype(int), proba[:, pos] if proba is not None else score)
    elif k > 2 and present == set(labels) and proba is not None:
        out["roc_auc"] = m.roc_auc_score(y_true, proba / proba.sum(axis=1, keepdims=True), multi_class="ovr",
                                         average="macro", labels=labels)
    calibration = None
    if proba is not None:
        out["log_loss"] = m.log_loss(y_true, proba, labels=labels)
        out["ece"], calibration = expected_calibration_error(proba.max(axis=1), y_pred == y_true, bins)
    confusion = m.confusion_matrix(y_true, y_pred, labels=labels)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    return _floats(out), {"confusion": confusion.tolist(), "rates": rates.tolist(), "calibration": calibration}


def expected_calibration_error(confidence, correct, bins: int) -> tuple[float, list[dict]]:
    """ECE over `bins` equal-width confidence bins (top-label confidence, as Guo et al. 2017):
    sum over bins of |accuracy - mean confidence| * rows in bin / rows. A confidence of exactly 1 is in the
    last bin. Returns the ECE and the bins (lower, upper, count, confidence, accuracy) for the plot."""
    import numpy as np

    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    table, ece, n = [], 0.0, max(len(confidence), 1)
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        conf = float(confidence[inside].mean()) if count else None
        acc = float(correct[inside].mean()) if count else None
        if count:
            ece += abs(acc - conf) * count / n
        table.append({"lower": b / bins, "upper": (b + 1) / bins, "count": count, "confidence": conf,
                      "accuracy": acc})
    return ece, table


def regression(y_true, y_pred) -> dict:
    import numpy as np
    from sklearn import metrics as m

    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    r2 = m.r2_score(y_true, y_pred) if len(y_true) >= 2 else None
    return _floats({"rows": len(y_true), "mae": m.mean_absolute_error(y_true, y_pred),
                    "rmse": m.root_mean_squared_error(y_true, y_pred), "r2": r2})


def language(losses, tokens, rows: int) -> dict:
    """Mean token loss (cross entropy, nats) and its exp, perplexity, from per-block loss sums and counts."""
    total, count = float(sum(losses)), int(sum(tokens))
    loss = total / count if count else None
    return _floats({"rows": rows, "blocks": len(tokens), "tokens": count, "loss": loss,
                    "perplexity": math.exp(min(loss, 700.0)) if loss is not None else None})


def bootstrap(numerator, denominator=None, *, transform=None, resamples: int, confidence: float, seed: int):
    """Percentile bootstrap interval (low, high) of sum(numerator[i]) / sum(denominator[i]) over rows drawn
    with replacement (`transform` applied after: sqrt for RMSE, exp for perplexity), seeded; (None, None)
    without resamples or rows."""
    import numpy as np

    data = (np.asarray(numerator, dtype=np.float64),)
    if denominator is not None:
        data += (np.asarray(denominator, dtype=np.float64),)

    def ratio(num, den=None, axis=-1):
        value = num.mean(axis=axis) if den is None else num.sum(axis=axis) / np.maximum(den.sum(axis=axis), 1e-300)
        return transform(value) if transform is not None else value

    low, high = interval(ratio, data, resamples=resamples, confidence=confidence, seed=seed)
    return (None, None) if low is None else (float(low), float(high))


def interval(statistic, data: tuple, *, resamples: int, confidence: float, seed: int):
    """scipy.stats.bootstrap's percentile interval of a vectorised `statistic` (which may return a vector)
    over the rows of the paired arrays `data`; (None, None) without resamples or rows, the value twice with
one row. Percentile, not
    scipy's default BCa: BCa's jackknife computes the statistic n times on n - 1 rows, O(n^2) for a test set
    of 16,000 rows. Resamples are drawn in batches of about 4M cells, so memory stays flat."""
    import warnings

    import numpy as np
    from scipy import stats

    n = len(data[0])
    if resamples <= 0 or n == 0:
        return None, None
    if n == 1:  # every resample is the one row: the interval is the value (scipy refuses it); evaluate warns
        value = statistic(*data, axis=-1)
        return value, value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a group absent from a resample: nan, then skipped
        result = stats.bootstrap(data, statistic, n_resamples=resamples, confidence_level=confidence,
                                 method="percentile", paired=True, vectorized=True,
                                 batch=max(1, 4_000_000 // n), rng=np.random.default_rng(seed))
    return result.confidence_interval.low, result.confidence_interval.high


def _floats(values: dict) -> dict:
    """Plain Python numbers (numpy scalars would not serialise); NaN and inf become None."""
    out = {}
    for k, v in values.items():
        if v is None:
            out[k] = None
        elif isinstance(v, numbers.Integral) and not isinstance(v, bool):
            out[k] = int(v)
        else:
            v = float(v)
            out[k] = v if math.isfinite(v) else None
    return out
