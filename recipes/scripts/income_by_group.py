"""Share of high incomes by group: `income_by_group.py TABLE_DIR OUT_DIR --by COL [COL ...]`."""

import argparse
import json
from pathlib import Path

import pyarrow.parquet as pq

parser = argparse.ArgumentParser()
parser.add_argument("table")
parser.add_argument("out")
parser.add_argument("--by", nargs="+", required=True)
args = parser.parse_args()

df = pq.read_table(Path(args.table) / "data.parquet").to_pandas()
out = Path(args.out)
for column in args.by:
    rates = df.groupby(column)["high_income"].agg(rows="size", high_income_rate="mean").sort_index()
    rates.round(6).to_csv(out / f"by_{column}.csv")
metrics = {"rows": len(df), "high_income_rate": round(float(df["high_income"].mean()), 6)}
(out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
print(json.dumps(metrics))
