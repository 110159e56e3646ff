"""Reading what drift and decay compare: a table artifact, a split's part, a profile, or a folder of drops.

A folder of drops is what a `{log: DIR}` source imports or any directory of files: Parquet, CSV and JSON
Lines (optionally gzipped) files, read in name order and stacked. A request-log record (`modelbuild serve`'s
segments) is flattened into one row per record it carried, so its features are columns.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataValidationError

DATA = "data.parquet"
PROFILE = "profile.json"
DROP_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".ndjson")
LOG_COLUMNS = ("request_id", "record", "time", "digest", "prediction")  # what flatten adds to a request's features


def is_profile(path: Path) -> bool:
    return (Path(path) / PROFILE).is_file()


def read_profile(path: Path) -> dict:
    return json.loads((Path(path) / PROFILE).read_text())


def drop_files(folder: Path) -> list[Path]:
    """The data files under `folder` (recursively, in name order); hidden files and partial ones are not."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.name.endswith(DROP_SUFFIXES))


def read_frame(path: Path, table: str | None, what: str):
    """A pandas DataFrame of a table artifact (or its part `table`), a folder of drops, or one data file."""
    import pandas as pd

    path = Path(path)
    if path.is_file():  # a source that names one file
        return flatten(_read_file(path))
    for candidate in ([path / table] if table else []) + [path]:
        if (candidate / DATA).is_file():
            return pd.read_parquet(candidate / DATA)
    files = drop_files(path)
    if not files:
        inner = sorted(p.name for p in path.iterdir() if (p / DATA).is_file()) if path.is_dir() else []
        hint = f" It holds the tables {', '.join(inner)}: pick one with `table:`." if inner else ""
        raise DataValidationError(f"{what} ({path}) holds no table: no {DATA} and no Parquet, CSV or JSON Lines "
                                  f"files.{hint} An empty log window imports no segment: widen `since`/`until` "
                                  "or wait for the server to close a segment")
    frames = [_read_file(f) for f in files]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return flatten(frame)


def _read_file(path: Path):
    import pandas as pd

    name = path.name
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if name.endswith((".csv", ".csv.gz")):
        return pd.read_csv(path)
    return pd.read_json(path, lines=True)


def flatten(frame):
    """A request log's records (`modelbuild serve`: {id, time, digest, inputs: {records: [...]}, outputs:
    {predictions: [...]}}) become one row per record: its features, with request_id, record (its index in
    the request), time, digest and the model's prediction. Other frames pass through."""
    import pandas as pd

    if "inputs" not in frame.columns or not frame["inputs"].map(lambda v: isinstance(v, dict)).all():
        return frame
    rows = []
    for r in frame.to_dict("records"):
        inputs, outputs = r["inputs"], r.get("outputs") if isinstance(r.get("outputs"), dict) else {}
        records = inputs.get("records", inputs)
        records = [records] if isinstance(records, dict) else records or []
        predictions = outputs.get("predictions") or []
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                continue
            meta = {"request_id": r.get("id"), "record": i, "time": r.get("time"), "digest": r.get("digest"),
                    "prediction": predictions[i] if i < len(predictions) else None}
            rows.append({**record, **meta})
    return pd.DataFrame(rows)


def select(frame, where: dict, what: str):
    """The rows whose columns hold the given values (`{year: 2016}` or `{year: [2016, 2017]}`)."""
    for column, wanted in (where or {}).items():
        if column not in frame.columns:
            from ..errors import did_you_mean
            raise DataValidationError(f"`where:` names the column {column!r}, which {what} lacks"
                                      f"{did_you_mean(column, list(frame.columns))}")
        values = wanted if isinstance(wanted, list) else [wanted]
        frame = frame[frame[column].isin(values) | frame[column].astype(str).isin([str(v) for v in values])]
    return frame.reset_index(drop=True)
