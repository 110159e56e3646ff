"""Drift detection rate and false-alarm rate on the ACS employment data, with the drift builder's defaults.

Reference: the 2015 year (68785 people). Two sets of 20 seeded current samples of --rows rows each:
  shifted    2015 rows resampled with weight exp(--strength * (age - mean age)): older people more often
  bootstrap  2015 rows resampled uniformly with replacement (no drift: any alert is a false alarm)
and the real later years 2016, 2017, 2018 (no-drift controls). Each sample goes through the same code as
the `drift` builder (monitoring.drift.compare_to_table and decide); an alert is the dataset rule firing.
Prints a Markdown table: detection rate, false-alarm rate, and the median count of drifted columns.

Run (about a minute; the data comes from the nannyml wheel, fetched with pip into --cache once):
    python benchmarks/drift_rates.py
    python benchmarks/drift_rates.py --strength 0.01 --rows 5000
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelbuild.monitoring import drift as D  # noqa: E402

PIN = "nannyml==0.13.1"
INNER = "nannyml/datasets/data/employment_MA_{}.pq"
IGNORE = {"id", "year", "employed", "prediction", "predicted_probability"}
PARAMS = {"max_categories": 50, "text_columns": []}


def data(cache: Path, name: str):
    import pandas as pd

    target = cache / f"employment_MA_{name}.pq"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        if not list(cache.glob("nannyml-*.whl")):
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), PIN], check=True)
        with zipfile.ZipFile(next(cache.glob("nannyml-*.whl"))) as z:
            target.write_bytes(z.read(INNER.format(name)))
    return pd.read_parquet(target)


def alert(reference, current, columns) -> tuple[bool, list[str]]:
    stats = D.compare_to_table(reference, current, columns, PARAMS)
    verdict = D.decide(stats, D.thresholds({}), 0.1)
    return verdict["dataset_drift"], verdict["drifted_columns"]


def main() -> int:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--strength", type=float, default=0.02, help="the age weighting's slope per year of age")
    ap.add_argument("--cache", type=Path, default=Path(".cache/drift_rates"))
    args = ap.parse_args()
    reference, analysis = data(args.cache, "reference"), data(args.cache, "analysis")
    columns = [c for c in reference.columns if c not in IGNORE]
    weight = np.exp(args.strength * (reference["AGEP"] - reference["AGEP"].mean())).to_numpy()
    rows = []
    for label, pick in (("shifted", lambda rng: rng.choice(len(reference), args.rows, p=weight / weight.sum())),
                        ("bootstrap", lambda rng: rng.choice(len(reference), args.rows))):
        results = [alert(reference, reference.iloc[pick(np.random.default_rng(seed))], columns)
                   for seed in range(args.seeds)]
        named = statistics.median(len(c) for _, c in results)
        always = sorted(set.intersection(*(set(c) for _, c in results))) if results else []
        rows.append((label, sum(a for a, _ in results), len(results), named, ", ".join(always) or "-"))
    for year in (2016, 2017, 2018):
        fired, drifted = alert(reference, analysis[analysis["year"] == year], columns)
        rows.append((f"year {year}", int(fired), 1, len(drifted), ", ".join(drifted) or "-"))
    print(f"reference 2015 ({len(reference)} rows), samples of {args.rows} rows, age weighting "
          f"exp({args.strength} * (age - mean)), default thresholds (psi 0.1, wasserstein/std 0.1, "
          "drift_share 0.1)\n")
    print("| sample | alerts | of | median drifted columns | drifted in every sample |\n|---|---|---|---|---|")
    for label, fired, total, named, always in rows:
        print(f"| {label} | {fired} | {total} | {named} | {always} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
