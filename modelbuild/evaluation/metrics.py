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


def classification(y_true, proba, *, positive: int | None, bins: int) -> tuple[dict, dict]:
    """(metrics, details) for class indices `y_true` [n] and class probabilities `proba` [n, k].

    `positive` is the index of the positive class (binary tasks, or `positive_label`): precision, recall
    and f1 are of that class, and binary roc_auc scores its probability; with more classes roc_auc is the
    one-vs-rest macro average. A metric undefined on the data (roc_auc with one class present) is None.
    details: the confusion matrix [true][predicted] and the calibration bins."""
    import numpy as np
    from sklearn import metrics as m

    y_true, proba = np.asarray(y_true, dtype=np.int64), np.asarray(proba, dtype=np.float64)
    k = proba.shape[1]
    labels = list(range(k))
    y_pred = proba.argmax(axis=1)
    p, r, f, _ = m.precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    out = {"rows": len(y_true), "accuracy": m.accuracy_score(y_true, y_pred), "precision_macro": p,
           "recall_macro": r, "f1_macro": f, "log_loss": m.log_loss(y_true, proba, labels=labels),
           "roc_auc": None}
    if positive is not None:
        yt, yp = (y_true == positive).astype(int), (y_pred == positive).astype(int)
        out.update(precision=m.precision_score(yt, yp, zero_division=0), recall=m.recall_score(yt, yp, zero_division=0),
                   f1=m.f1_score(yt, yp, zero_division=0))
    present = set(np.unique(y_true).tolist())
    if k == 2 and len(present) == 2:
        out["roc_auc"] = m.roc_auc_score((y_true == (positive if positive is not None else 1)).astype(int),
                                         proba[:, positive if positive is not None else 1])
    elif k > 2 and present == set(labels):
        out["roc_auc"] = m.roc_auc_score(y_true, proba / proba.sum(axis=1, keepdims=True), multi_class="ovr",
                                         average="macro", labels=labels)
    ece, calibration = expected_calibration_error(proba.max(axis=1), y_pred == y_true, bins)
    out["ece"] = ece
    confusion = m.confusion_matrix(y_true, y_pred, labels=labels)
    return _floats(out), {"confusion": confusion.tolist(), "calibration": calibration}


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
    with replacement (`transform` applied after: sqrt for RMSE, exp for perplexity). Seeded, and drawn in
    chunks whose size depends on the row count only, so the same data gives the same interval."""
    import numpy as np

    num = np.asarray(numerator, dtype=np.float64)
    den = np.ones_like(num) if denominator is None else np.asarray(denominator, dtype=np.float64)
    n = len(num)
    if resamples <= 0 or n == 0:
        return None, None
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 4_000_000 // n))
    stats = []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        stats.append(num[idx].sum(axis=1) / np.maximum(den[idx].sum(axis=1), 1e-300))
    values = np.concatenate(stats)
    if transform is not None:
        values = transform(values)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


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
