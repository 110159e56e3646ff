"""Drift statistics of one column: reference vs current, from raw values or from a profile's summary.

Every function takes numpy arrays or count tables and returns plain floats, so drift.json is the same for
the same data. scipy.stats does the tests (Kolmogorov-Smirnov, chi-square, Wasserstein); PSI is the only
statistic written here (scipy has none): sum((c - r) * ln(c / r)) over bins, with empty bins smoothed by
EPS so that a category seen on one side only counts without dividing by zero.
"""

from __future__ import annotations

import math

EPS = 1e-4  # the share an empty bin is given in PSI (as Evidently and NannyML do)
PSI_BINS = 10  # reference-quantile bins of a numeric column when the reference is a table


def psi(ref_counts, cur_counts) -> float:
    """Population stability index of two count vectors over the same bins."""
    import numpy as np

    r = np.asarray(ref_counts, dtype=float)
    c = np.asarray(cur_counts, dtype=float)
    if r.sum() == 0 or c.sum() == 0:
        return float("nan")
    r = np.clip(r / r.sum(), EPS, None)
    c = np.clip(c / c.sum(), EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


def quantile_edges(ref, bins: int = PSI_BINS):
    """Inner bin edges at the reference's quantiles (ties merged), so each bin holds about 1/bins of it."""
    import numpy as np

    return np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))


def binned(values, inner_edges):
    """Counts of `values` in the bins that `inner_edges` cut the real line into (open at both ends)."""
    import numpy as np

    return np.bincount(np.searchsorted(inner_edges, values, side="right"), minlength=len(inner_edges) + 1)


def numeric(ref, cur) -> dict:
    """PSI, KS (statistic, p-value) and Wasserstein distance (also divided by the reference's std) of two
    samples of finite numbers."""
    import numpy as np
    from scipy import stats

    ref, cur = np.asarray(ref, dtype=float), np.asarray(cur, dtype=float)
    if len(ref) == 0 or len(cur) == 0:
        return {"psi": None, "ks": None, "ks_pvalue": None, "wasserstein": None, "wasserstein_norm": None}
    edges = quantile_edges(ref)
    ks = stats.ks_2samp(ref, cur)
    w = stats.wasserstein_distance(ref, cur)
    std = float(np.std(ref, ddof=1)) if len(ref) > 1 else 0.0
    return {"psi": psi(binned(ref, edges), binned(cur, edges)), "ks": float(ks.statistic),
            "ks_pvalue": float(ks.pvalue), "wasserstein": float(w), "wasserstein_norm": float(w / std) if std else None}


def numeric_from_histogram(edges, ref_counts, cur, ref_n: int) -> dict:
    """The same statistics against a profile's histogram (equal-width bins, [left, right)): PSI over its
    bins, KS as the largest gap between the two distributions at the bin edges, its p-value from the
    asymptotic Kolmogorov distribution, Wasserstein as the area between the binned CDFs."""
    import numpy as np
    from scipy import stats

    cur = np.asarray(cur, dtype=float)
    edges, ref_counts = np.asarray(edges, dtype=float), np.asarray(ref_counts, dtype=float)
    if len(cur) == 0 or ref_counts.sum() == 0:
        return {"psi": None, "ks": None, "ks_pvalue": None, "wasserstein": None, "wasserstein_norm": None}
    inner = edges[1:-1]
    cur_counts = binned(cur, inner)
    below, above = int((cur < edges[0]).sum()), int((cur > edges[-1]).sum())
    ref_cdf = np.concatenate([[0.0], np.cumsum(ref_counts) / ref_counts.sum()])
    cur_cdf = np.concatenate([[below / len(cur)], (below + np.cumsum(cur_counts)) / len(cur)])
    cur_cdf[-1] = 1 - above / len(cur)
    gap = np.abs(ref_cdf - cur_cdf)
    ks = float(gap.max())
    n_eff = max(1, round(ref_n * len(cur) / (ref_n + len(cur))))
    widths = np.diff(edges)
    w = float(np.sum(gap[:-1] * widths))  # CDFs taken constant over a bin: off by at most one bin width
    mids = (edges[:-1] + edges[1:]) / 2
    mean = np.sum(mids * ref_counts) / ref_counts.sum()
    std = math.sqrt(np.sum(ref_counts * (mids - mean) ** 2) / max(1, ref_counts.sum() - 1))
    return {"psi": psi(ref_counts, cur_counts), "ks": ks, "ks_pvalue": float(stats.kstwo.sf(ks, n_eff)),
            "wasserstein": w, "wasserstein_norm": w / std if std else None}


def categorical(ref_counts: dict, cur_counts: dict, ref_other: int = 0) -> dict:
    """PSI and chi-square (statistic, p-value) over the union of categories, the categories new in the
    current data (with the share of its rows they hold) and those vanished from it. `ref_other`: reference
    values in categories a profile did not list, so unlisted current ones are not called new."""
    import numpy as np
    from scipy import stats

    listed = sorted(set(ref_counts) | set(cur_counts), key=str)
    new = [k for k in listed if k not in ref_counts] if not ref_other else []
    vanished = [k for k in listed if k not in cur_counts or not cur_counts[k]]
    r = [ref_counts.get(k, 0) for k in listed]
    c = [cur_counts.get(k, 0) for k in listed]
    if ref_other:
        r.append(ref_other)
        c.append(0)  # unlisted current values are counted under their own names above
    cur_n = sum(c)
    result = {"psi": psi(r, c), "chi2": None, "chi2_pvalue": None,
              "new_categories": [str(k) for k in new][:20], "vanished_categories": [str(k) for k in vanished][:20],
              "new_category_rate": (sum(cur_counts.get(k, 0) for k in new) / cur_n) if cur_n else None}
    table = np.array([r, c], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] > 1 and table[0].sum() and table[1].sum():
        chi = stats.chi2_contingency(table, correction=False)
        result["chi2"], result["chi2_pvalue"] = float(chi.statistic), float(chi.pvalue)
    return result


def text_lengths(ref_lengths, cur_lengths) -> dict:
    """Drift of text length (tokens per row): the numeric statistics, named for text."""
    return {f"length_{k}": v for k, v in numeric(ref_lengths, cur_lengths).items()}


def rounded(value):
    """A float for drift.json: 12 significant digits, None when not finite (so the file is stable)."""
    if isinstance(value, float):
        return float(f"{value:.12g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value
