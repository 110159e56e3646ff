"""Table artifacts: `data.parquet` plus `table.json` (rows, columns, types).

Every builder that writes a table goes through this module, so tables are byte-identical for identical
data (fixed compression, no timestamps, no pandas metadata) and the lineage CLI can describe them from
table.json alone, without importing pandas or pyarrow. Large tables stream: `TableWriter` takes
batches, `iter_batches` yields them, so a step holds one batch in memory, not the table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

DATA, SUMMARY = "data.parquet", "table.json"
ROW_GROUP_BYTES = 64 << 20
COMPRESSION = {"compression": "zstd", "compression_level": 3}


def table_json(schema, rows: int, **extra) -> dict:
    return {"rows": rows, "columns": [{"name": f.name, "type": str(f.type)} for f in schema], **extra}


def _arrow(data):
    import pyarrow as pa

    if isinstance(data, (pa.Table, pa.RecordBatch)):
        table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    else:
        table = pa.Table.from_pandas(data, preserve_index=False)
    return table.replace_schema_metadata(None)  # pandas metadata carries no data and varies by version


class TableWriter:
    """Write a table artifact batch by batch; `close()` writes table.json and returns it.

    Batches are buffered up to ~64 MB per row group, so the file layout (and its bytes) depends on the
    data only, not on how a builder happened to batch it.
    """

    def __init__(self, out: str | Path, path: str = DATA, summary: str | None = SUMMARY):
        self.out, self.path, self.summary = Path(out), path, summary
        self.writer, self.schema, self.rows = None, None, 0
        self.pending, self.pending_bytes = [], 0

    def write(self, data) -> None:
        table = _arrow(data)
        if self.schema is None:
            self.schema = table.schema
        elif table.schema != self.schema:
            table = table.cast(self.schema)
        self.pending.append(table)
        self.pending_bytes += table.nbytes
        self.rows += table.num_rows
        if self.pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending:
            return
        if self.writer is None:
            (self.out / self.path).parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.out / self.path, self.schema, **COMPRESSION)
        self.writer.write_table(pa.concat_tables(self.pending), row_group_size=1 << 30)
        self.pending, self.pending_bytes = [], 0

    def close(self, schema=None, **extra) -> dict:
        """Finish the file; `schema` gives the columns of a table that received no rows."""
        import pyarrow as pa

        if self.schema is None:
            self.schema = schema if schema is not None else pa.schema([])
            self.pending.append(self.schema.empty_table())
        self._flush()
        self.writer.close()
        summary = table_json(self.schema, self.rows, **extra)
        if self.summary:
            (self.out / self.summary).write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None and self.writer is None and self.schema is None:
            return
        if exc_type is not None and self.writer is not None:
            self.writer.close()


def write_table(data, out: str | Path, **extra) -> dict:
    """Write a whole pyarrow Table or pandas DataFrame as a table artifact; returns the summary."""
    writer = TableWriter(out)
    writer.write(data)
    return writer.close(**extra)


def data_file(artifact: str | Path) -> Path:
    path = Path(artifact)
    return path / DATA if path.is_dir() else path


def read_table(artifact: str | Path, columns: list[str] | None = None):
    """The pyarrow Table of a table artifact (a directory with data.parquet, or the file itself)."""
    import pyarrow.parquet as pq

    return pq.read_table(data_file(artifact), columns=columns)


def read_schema(artifact: str | Path):
    import pyarrow.parquet as pq

    return pq.read_schema(data_file(artifact)).remove_metadata()


def iter_batches(artifact: str | Path, batch_rows: int = 1 << 16, columns: list[str] | None = None) -> Iterator:
    """Record batches of a table artifact, one at a time (bounded memory)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(data_file(artifact)) as f:
        yield from f.iter_batches(batch_size=batch_rows, columns=columns)


def summary(artifact: str | Path) -> dict | None:
    try:
        return json.loads((Path(artifact) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
