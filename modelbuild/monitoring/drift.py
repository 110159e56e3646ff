"""Comparing a current table with a reference (a table or a `profile` artifact), column by column.

A column drifts when any statistic crosses its threshold (`THRESHOLDS`; a threshold set to null is
reported, never decides). The dataset drifts when the share of drifted columns reaches `drift_share`.
Defaults are effect sizes, not p-values: with tens of thousands of rows a test finds "significant"
differences between any two years of the same census (chi-square p < 1e-30 on the employment data's
2016 vs 2015 no-drift control), so p-values are reported and may be enabled, but do not alert by default.
"""

from __future__ import annotations

from . import stats as S

# statistic -> (default threshold, direction): "above" drifts when value >= threshold, "below" when <=
THRESHOLDS = {
    "psi": (0.1, "above"),
    "wasserstein_norm": (0.1, "above"),
    "ks": (None, "above"),
    "ks_pvalue": (None, "below"),
    "chi2_pvalue": (None, "below"),
    "missing_rate_change": (0.05, "above"),
    "new_category_rate": (0.01, "above"),
    "oov_rate_change": (0.05, "above"),
    "length_psi": (0.1, "above"),
    "prediction_psi": (0.1, "above"),
}
NUMERIC_KINDS = ("numeric",)
CATEGORICAL_KINDS = ("categorical", "boolean")


def thresholds(given: dict | None) -> dict:
    out = {name: default for name, (default, _) in THRESHOLDS.items()}
    out.update(given or {})
    return out


def crossed(name: str, value, limit) -> bool:
    if limit is None or value is None:
        return False
    return value <= limit if THRESHOLDS[name][1] == "below" else value >= limit


def reasons(values: dict, limits: dict) -> list[str]:
    """What made a column drift, e.g. ['psi 0.21 >= 0.1']."""
    return [f"{name} {values[name]:.4g} {'<=' if THRESHOLDS[name][1] == 'below' else '>='} {limits[name]:g}"
            for name in THRESHOLDS if name in values and crossed(name, values.get(name), limits.get(name))]


def kind_of(series, max_categories: int, text_columns) -> str:
    """How to compare a reference table's column: numeric, categorical, boolean, text or other."""
    import pandas as pd

    if series.name in text_columns:
        return "text"
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    if isinstance(series.dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series):
        return "categorical" if series.nunique(dropna=True) <= max_categories else "text"
    return "other"


def _missing(series) -> float | None:
    return float(series.isna().mean()) if len(series) else None


def _counts(series) -> dict:
    return {str(k): int(v) for k, v in series.dropna().astype(str).value_counts().items()}


def compare_to_table(ref, cur, columns: list[str], p: dict, vocabulary=None) -> dict:
    """Per-column statistics of the current frame against a reference frame."""
    import numpy as np

    out = {}
    for name in columns:
        r, c = ref[name], cur[name]
        kind = kind_of(r, p["max_categories"], p["text_columns"])
        values = {"kind": kind, "missing_rate": _missing(c), "reference_missing_rate": _missing(r)}
        if kind in NUMERIC_KINDS:
            rv = r.to_numpy(dtype=float, na_value=np.nan)
            cv = np.asarray(c.to_numpy(), dtype=float)
            values.update(S.numeric(rv[np.isfinite(rv)], cv[np.isfinite(cv)]))
        elif kind in CATEGORICAL_KINDS:
            values.update(S.categorical(_counts(r), _counts(c)))
        elif kind == "text":
            values.update(_text(r, c, vocabulary))
        out[name] = values
    return out


def compare_to_profile(profile: dict, cur, columns: list[str], vocabulary=None) -> dict:
    """Per-column statistics of the current frame against a `profile` artifact's summary."""
    import numpy as np

    out = {}
    for name in columns:
        ref, c = profile["columns"][name], cur[name]
        kind = ref.get("kind", "other")
        values = {"kind": kind, "missing_rate": _missing(c), "reference_missing_rate": ref.get("missing_rate")}
        if kind in NUMERIC_KINDS and ref.get("histogram"):
            cv = np.asarray(c.to_numpy(), dtype=float)
            values.update(S.numeric_from_histogram(ref["histogram"]["edges"], ref["histogram"]["counts"],
                                                   cv[np.isfinite(cv)], ref.get("count") or 0))
        elif kind in CATEGORICAL_KINDS:
            counts = {str(f["value"]).lower() if kind == "boolean" else str(f["value"]): f["count"]
                      for f in ref.get("frequencies") or []}
            current = _counts(c.astype(str).str.lower() if kind == "boolean" else c)
            values.update(S.categorical(counts, current, ref_other=ref.get("other") or 0))
        elif kind == "text":
            values.update(_text_vs_profile(ref, c, vocabulary))
        out[name] = values
    return out


def _tokens(series):
    return series.dropna().astype(str).str.split()


def _text(ref, cur, vocabulary) -> dict:
    """Token-length drift, and the out-of-vocabulary rate of the current text (under the tokenizer's
    vocabulary when there is one, else the reference's words) against the reference's own."""
    rt, ct = _tokens(ref), _tokens(cur)
    values = S.text_lengths(rt.map(len).to_numpy(), ct.map(len).to_numpy())
    vocab = vocabulary if vocabulary is not None else {w for words in rt for w in words}
    values["oov_rate"] = _oov(ct, vocab)
    values["reference_oov_rate"] = _oov(rt, vocab) if vocabulary is not None else 0.0
    values["oov_rate_change"] = _change(values["oov_rate"], values["reference_oov_rate"])
    return values


def _text_vs_profile(ref: dict, cur, vocabulary) -> dict:
    import numpy as np

    ct = _tokens(cur)
    lengths = ct.map(len).to_numpy()
    q = ref.get("tokens", {}).get("quantiles") or {}
    edges = sorted({float(v) for v in q.values() if v is not None})
    values = {}
    if len(edges) > 2 and len(lengths):
        inner = np.asarray(edges[1:-1])
        probs = sorted(float(k) for k in q)
        ref_share = np.diff([0.0, *[probs[i] for i in range(1, len(probs) - 1)], 1.0])[: len(inner) + 1]
        values["length_psi"] = S.psi(ref_share[: len(inner) + 1], S.binned(lengths, inner))
    if vocabulary is not None:
        values["oov_rate"] = _oov(ct, vocabulary)
    return values


def _oov(token_lists, vocab) -> float | None:
    total = int(token_lists.map(len).sum())
    if not total:
        return None
    unknown = sum(1 for words in token_lists for w in words if w not in vocab and w.lower() not in vocab)
    return unknown / total


def _change(a, b):
    return None if a is None or b is None else abs(a - b)


def decide(columns: dict, limits: dict, drift_share: float) -> dict:
    """Mark drifted columns (with their reasons) and apply the dataset rule."""
    for values in columns.values():
        ref_rate, rate = values.get("reference_missing_rate"), values.get("missing_rate")
        values["missing_rate_change"] = _change(rate, ref_rate)
        values["reasons"] = reasons(values, limits)
        values["drifted"] = bool(values["reasons"])
    drifted = sorted(n for n, v in columns.items() if v["drifted"])
    share = len(drifted) / len(columns) if columns else 0.0
    return {"drifted_columns": drifted, "drifted_share": share, "dataset_drift": bool(drifted) and share >= drift_share}
