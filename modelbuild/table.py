"""Table artifacts: `data.parquet` plus `table.json` (rows, columns, types).

Every builder that writes a table uses `write_table`, so tables are byte-identical for identical data
(fixed compression, no timestamps) and the lineage CLI can describe them from table.json alone,
without importing pandas or pyarrow.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA, SUMMARY = "data.parquet", "table.json"


def table_json(table, **extra) -> dict:
    return {"rows": table.num_rows,
            "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema], **extra}


def write_table(data, out: str | Path, **extra) -> dict:
    """Write a pyarrow Table or pandas DataFrame as a table artifact; returns the summary."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    table = table.replace_schema_metadata(None)  # pandas metadata carries no data and varies by version
    out = Path(out)
    pq.write_table(table, out / DATA, compression="zstd", write_statistics=True)
    summary = table_json(table, **extra)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def read_table(artifact: str | Path):
    """The pyarrow Table of a table artifact (a directory with data.parquet, or the file itself)."""
    import pyarrow.parquet as pq

    path = Path(artifact)
    return pq.read_table(path / DATA if path.is_dir() else path)
