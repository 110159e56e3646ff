"""Table artifacts: `data.parquet` plus `table.json` (rows, columns, types), `stats.json` and `rows.xxh`.

Every builder that writes a table goes through this module, so tables are byte-identical for identical
data (fixed compression, no timestamps, no pandas metadata) and the lineage CLI can describe and compare
them from small files alone, without importing pandas or pyarrow. Large tables stream: `TableWriter`
takes batches, `iter_batches` yields them, so a step holds one batch in memory, not the table.

Beside `table.json`, `TableWriter.close()` writes two files computed while the batches went by:

`stats.json`: per-column summary statistics, in table order::

    {"rows": 3, "columns": [
      {"name": "age", "count": 2, "nulls": 1, "min": 17, "max": 90, "mean": 53.5, "std": 51.6187950771},
      {"name": "city", "count": 3, "nulls": 0, "distinct": 2},
      {"name": "member", "count": 3, "nulls": 0, "mean": 0.333333333333},
      {"name": "joined", "count": 3, "nulls": 0, "min": "2024-01-02", "max": "2024-03-04"}]}

    count: values present; nulls: nulls, and NaN in float columns (as pandas counts them).
    integer and float columns: min, max, mean, std (sample, ddof=1; null below two values or when not finite).
    boolean: mean (the share of true). string and binary: distinct (null above DISTINCT_CAP values).
    dates and times: min, max as ISO strings. Other types: count and nulls only.
    Keys are sorted and floats rounded to 12 significant digits, so batching does not show in the bytes.

`rows.xxh`: one 64-bit fingerprint per row, sorted, as raw little-endian uint64. A row's fingerprint
depends on its values in column order, never on its position or on how the table was batched, so two
versions of a table compare by a sorted merge (`modelbuild diff`: rows added and removed). Numbers hash by
value (an int64 5 and a double 5.0 are the same), so widening a column's type does not change its rows;
a null differs from every value. The hash is this module's own, fixed by its code rather than by a
library version: splitmix64 over a canonical 64-bit form of each value (xxh3-64 of a string's bytes),
chained across the columns.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import BuildError, did_you_mean

DATA, SUMMARY, STATS, ROWS = "data.parquet", "table.json", "stats.json", "rows.xxh"
ROW_GROUP_BYTES = 64 << 20
# Snappy, as pandas and Spark write by default: measured on benchmarks/ingest.py's table, it encodes in 0.59x the
# CPU time of zstd level 3 (level 1: 0.88x) for files 1.37x the size, and decodes faster; the tables between
# steps are written and read on every build, so their speed counts more than their size.
COMPRESSION = {"compression": "snappy"}
# Encode each row group in a background thread while the caller builds the next. Same bytes; it saves wall
# time where a core is idle, and holds one more row group (~64 MB and the encoder's buffers). benchmarks/ingest.py,
# 1 GiB on 2 idle cores: ingest -> clean -> validate 42.4 -> 33.8 s wall (+3% CPU, peak 1046 -> 1265 MiB). On a
# host with no idle core (load 5-10) it saved nothing and cost 5% CPU.
BACKGROUND_ENCODING = True
DISTINCT_CAP = 10_000  # string columns count distinct values up to this many
SIGNIFICANT = 12  # digits kept of every float in stats.json (and profile.json)


def table_json(schema, rows: int, **extra) -> dict:
    return {"rows": rows, "columns": [{"name": f.name, "type": str(f.type)} for f in schema], **extra}


def rounded(value, digits: int = SIGNIFICANT):
    """`value` with every float rounded to `digits` significant digits and non-finite floats as None."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def stable_json(value) -> str:
    """The one spelling of a statistics file: rounded floats, sorted keys, two-space indent, final newline."""
    return json.dumps(rounded(value), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _arrow(data):
    import pyarrow as pa

    if isinstance(data, (pa.Table, pa.RecordBatch)):
        table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    else:
        table = pa.Table.from_pandas(data, preserve_index=False)
    return table.replace_schema_metadata(None)  # pandas metadata carries no data and varies by version


class TableWriter:
    """Write a table artifact batch by batch; `close()` writes table.json, stats.json, rows.xxh.

    Batches are buffered up to ~64 MB per row group, so the file layout (and its bytes) depends on the
    data only, not on how a builder happened to batch it. Statistics and row fingerprints are computed
    from each batch as it is written, so the table is never held whole: the fingerprints go to
    `rows.xxh.part` unsorted (8 bytes a row on disk), and `close()` reads them back, sorts them in place and
    writes them out. With BACKGROUND_ENCODING, a row group is encoded (Parquet, snappy) in a background
    thread while the builder makes the next one; one is in flight at most, and the row groups reach the file
    in order, so the bytes are those of a plain sequential write. An encoding error is raised by the next
    `write()` or by `close()`.
    With `summary=None` only the Parquet file is written.
    """

    def __init__(self, out: str | Path, path: str = DATA, summary: str | None = SUMMARY):
        self.out, self.path, self.summary = Path(out), path, summary
        self.writer, self.schema, self.rows = None, None, 0
        self.pending, self.pending_bytes = [], 0
        self.stats: list[_ColumnStats] = []
        self._fingerprints = None  # the open rows.xxh.part, once a row is seen
        self._encoder, self._encoding = None, None  # the encoding thread, the Future of its row group
        self._closed = False

    @property
    def _folder(self) -> Path:
        return (self.out / self.summary).parent

    def write(self, data) -> None:
        table = _arrow(data)
        if self.schema is None:
            self.schema = table.schema
            self.stats = [_ColumnStats(f.type) for f in self.schema]
        elif table.schema != self.schema:
            table = table.cast(self.schema)
        self._observe(table)
        self.pending.append(table)
        self.pending_bytes += table.nbytes
        self.rows += table.num_rows
        if self.pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _observe(self, table) -> None:
        if self.summary is None or table.num_rows == 0:
            return
        import numpy as np

        rows = np.full(table.num_rows, _ROW_SEED, dtype=np.uint64)
        for column, stats in zip(table.columns, self.stats, strict=True):
            column = _contiguous(column)
            hashes = column_hashes(column)
            stats.add(column, hashes)
            rows ^= hashes
            _mix_in_place(rows)
        if self._fingerprints is None:
            self._folder.mkdir(parents=True, exist_ok=True)
            self._fingerprints = open(self._folder / (ROWS + ".part"), "wb")  # noqa: SIM115 - closed by close()
        self._fingerprints.write(rows.astype("<u8", copy=False).data)

    def _flush(self) -> None:
        """Hand the pending batches, as one row group, to the encoding thread (after the one before it)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending:
            return
        group = pa.concat_tables(self.pending)
        self.pending, self.pending_bytes = [], 0
        self._wait()
        if self.writer is None:
            (self.out / self.path).parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.out / self.path, self.schema, **COMPRESSION)
        if not BACKGROUND_ENCODING:
            self.writer.write_table(group, row_group_size=1 << 30)
            return
        if self._encoder is None:
            from concurrent.futures import ThreadPoolExecutor

            self._encoder = ThreadPoolExecutor(1, thread_name_prefix="modelbuild-parquet")
        self._encoding = self._encoder.submit(self.writer.write_table, group, row_group_size=1 << 30)

    def _wait(self) -> None:
        """Wait for the row group in flight; its encoding error, if any, is raised here."""
        encoding, self._encoding = self._encoding, None
        if encoding is not None:
            encoding.result()

    def _stop(self) -> None:
        if self._encoder is not None:
            self._encoder.shutdown(wait=True)
            self._encoder = None

    def close(self, schema=None, **extra) -> dict:
        """Finish the file; `schema` gives the columns of a table that received no rows."""
        import pyarrow as pa

        if self.schema is None:
            self.schema = schema if schema is not None else pa.schema([])
            self.stats = [_ColumnStats(f.type) for f in self.schema]
            self.pending.append(self.schema.empty_table())
        try:
            self._flush()
            self._wait()
        finally:
            self._stop()
        self.writer.close()
        summary = table_json(self.schema, self.rows, **extra)
        if self.summary:
            folder = self._folder
            (self.out / self.summary).write_text(json.dumps(summary, indent=2) + "\n")
            columns = [{"name": f.name, **s.result()} for f, s in zip(self.schema, self.stats, strict=True)]
            (folder / STATS).write_text(stable_json({"rows": self.rows, "columns": columns}))
            self._sort_fingerprints(folder)
        self._closed = True
        return summary

    def _sort_fingerprints(self, folder: Path) -> None:
        """rows.xxh from rows.xxh.part: read into one array (8 bytes a row), sorted in place, written as is."""
        import numpy as np

        part = folder / (ROWS + ".part")
        if self._fingerprints is None:
            part.write_bytes(b"")
        else:
            self._fingerprints.close()
            self._fingerprints = None
        rows = np.fromfile(part, dtype="<u8")
        rows.sort()
        with open(part, "wb") as f:
            f.write(rows.data)
        del rows
        os.replace(part, folder / ROWS)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        """Left without close(): wait for the row group in flight (its error is raised unless another one
        is on its way), stop the thread, drop rows.xxh.part and, on an error, close the Parquet file."""
        if self._closed:
            return
        try:
            try:
                self._wait()
            except Exception:
                if exc_type is None:
                    raise
        finally:
            self._stop()
            if self._fingerprints is not None:
                self._fingerprints.close()
                self._fingerprints = None
                (self._folder / (ROWS + ".part")).unlink(missing_ok=True)
            if exc_type is not None and self.writer is not None:
                self.writer.close()


def write_table(data, out: str | Path, **extra) -> dict:
    """Write a whole pyarrow Table or pandas DataFrame as a table artifact; returns the summary."""
    with TableWriter(out) as writer:
        writer.write(data)
        return writer.close(**extra)


def data_file(artifact: str | Path) -> Path:
    path = Path(artifact)
    return path / DATA if path.is_dir() else path


def link_or_copy(source: Path, target: Path) -> None:
    """Put a file an input artifact holds into the output unchanged: a hard link (no bytes written; the store
    recognises its own copy), or a copy where links cannot reach (another file system, a sandbox's mount)."""
    import shutil

    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def read_table(artifact: str | Path, columns: list[str] | None = None):
    """The pyarrow Table of a table artifact (a directory with data.parquet, or the file itself)."""
    import pyarrow.parquet as pq

    return pq.read_table(data_file(artifact), columns=columns)


def read_schema(artifact: str | Path):
    import pyarrow.parquet as pq

    return pq.read_schema(data_file(artifact)).remove_metadata()


def iter_batches(artifact: str | Path, batch_rows: int = 1 << 16, columns: list[str] | None = None) -> Iterator:
    """Record batches of a table artifact, one at a time (bounded memory), decoded ahead in a thread."""
    return read_ahead(_batches(artifact, batch_rows, columns))


def _batches(artifact: str | Path, batch_rows: int, columns: list[str] | None) -> Iterator:
    import pyarrow.parquet as pq

    with pq.ParquetFile(data_file(artifact)) as f:
        yield from f.iter_batches(batch_size=batch_rows, columns=columns)


def read_ahead(items: Iterator, depth: int = 2) -> Iterator:
    """The items of an iterator, produced `depth` ahead in a thread of their own.

    A reader (pyarrow's streaming CSV reader, a Parquet file's batches) spends most of its time in C++ without
    the GIL, so the caller hashes, checks and encodes one batch while the next is parsed: on two cores a step
    takes about the time of the slower half rather than of both. The order is kept; an error raised by the
    reader is raised here, at the item where it occurred; leaving the loop early stops the reader and closes
    it (a generator's `finally` runs in its thread)."""
    import queue
    import threading

    done, slots, stop = object(), queue.Queue(depth), threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put((done, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="modelbuild-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def summary(artifact: str | Path) -> dict | None:
    try:
        return json.loads((Path(artifact) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


# ---- helpers for builders that read a table ------------------------------------------------------------
def input_table(ctx, table: str | None = None) -> Path:
    """The folder of a step's one input, checked to be a table artifact; `table` picks a table inside it
    (one of a split's train/, validation/, test/)."""
    if len(ctx.inputs) != 1:
        have = ", ".join(sorted(ctx.inputs)) or "none"
        raise BuildError(f"step '{ctx.step}' reads one table; it has {len(ctx.inputs)} inputs ({have}). "
                         f"Give it exactly one, e.g. `inputs: {{data: raw}}` where raw is an ingest step")
    name, root = next(iter(ctx.inputs.items()))
    root = Path(root)
    inner = sorted(p.name for p in root.iterdir() if (p / DATA).is_file()) if root.is_dir() else []
    path = root / table if table else root
    if (path / DATA).is_file():
        return path
    if table:
        raise BuildError(f"params.table of step '{ctx.step}' names {table!r}{did_you_mean(table, inner)}, which "
                         f"input {name} ({root}) does not hold; its tables are: {', '.join(inner) or 'none'}")
    if inner:
        raise BuildError(f"input {name} of step '{ctx.step}' holds several tables ({', '.join(inner)}); "
                         f"pick one with `params: {{table: {inner[0]}}}`")
    raise BuildError(f"input {name} of step '{ctx.step}' ({root}) is not a table artifact: it has no {DATA}. "
                     f"Read files into a table first with an `ingest` step")


def require_columns(wanted: dict[str, str | None], schema, step: str) -> None:
    """Raise a BuildError naming the first column, given by a param, that the table lacks."""
    names = list(schema.names)
    for param, column in wanted.items():
        if column is not None and column not in names:
            raise BuildError(f"step '{step}': params.{param} names column {column!r}{did_you_mean(column, names)}, "
                             f"which the input table does not have; its columns are: {', '.join(names)}")


# ---- row fingerprints --------------------------------------------------------------------------------
_ROW_SEED = 0x9E3779B97F4A7C15
_NULL = 0x6A09E667F3BCC908  # the hash input of a null, whatever the column type
_BIG_INT = 0xBB67AE8584CAA73B  # marks integers too large to equal a double
_VALUE_SEED = 0x3C6EF372FE94F82B
_STRING_SLICE = 2048  # values turned into Python bytes at a time: a few hundred KiB, still in cache when hashed
_REPEAT_MIN, _REPEAT_SAMPLE = 64, 4096  # string arrays this long are sampled: half repeats -> dictionary-encoded


def mix64(x):
    """splitmix64's finaliser over a uint64 array: a bijection that spreads every input bit."""
    import numpy as np

    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _mix_int(x: int) -> int:
    """mix64 of one Python int (no numpy at import)."""
    mask = (1 << 64) - 1
    x ^= x >> 30
    x = x * 0xBF58476D1CE4E5B9 & mask
    x ^= x >> 27
    x = x * 0x94D049BB133111EB & mask
    return x ^ x >> 31


_NULL_HASH = _mix_int(_NULL ^ _VALUE_SEED)  # what column_hashes gives a null


def _mix_in_place(x) -> None:
    """mix64 over a uint64 array that the caller owns, overwriting it (no temporaries but one)."""
    import numpy as np

    t = np.right_shift(x, np.uint64(30))
    x ^= t
    x *= np.uint64(0xBF58476D1CE4E5B9)
    np.right_shift(x, np.uint64(27), out=t)
    x ^= t
    x *= np.uint64(0x94D049BB133111EB)
    np.right_shift(x, np.uint64(31), out=t)
    x ^= t


def _contiguous(column):
    """One contiguous array (a dictionary array stays one)."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def _plain(column):
    """One contiguous array, dictionaries decoded: the values a reader sees."""
    import pyarrow as pa

    column = _contiguous(column)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column


def _is_bytes_like(t) -> bool:
    import pyarrow as pa

    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or str(t) in ("string_view", "binary_view"))


def _is_plain_time(t) -> bool:
    """Dates, times, timestamps and durations: one 32- or 64-bit integer per value."""
    import pyarrow as pa

    return pa.types.is_temporal(t) and not pa.types.is_interval(t) and t.bit_width in (32, 64)


def _type_tag(type_) -> int:
    import xxhash

    return xxhash.xxh3_64_intdigest(str(type_).encode())


def column_hashes(column):
    """A uint64 per value of an Arrow array: equal values (5 and 5.0 included) hash alike, nulls to one value."""
    import numpy as np
    import pyarrow as pa

    arr = _contiguous(column)
    if pa.types.is_dictionary(arr.type) and len(arr.dictionary) <= len(arr):
        return _dictionary_hashes(arr)
    arr = _plain(arr)
    t, n = arr.type, len(arr)
    if pa.types.is_null(t) or n == 0:
        return mix64(np.full(n, _NULL, dtype=np.uint64))
    if pa.types.is_integer(t):
        v = arr.cast(pa.int64(), safe=False).fill_null(0).to_numpy()
        if -(1 << 53) <= v.min() and v.max() <= 1 << 53:  # as most are: every value equals a double
            bits = v.astype(np.float64).view(np.uint64)
        else:
            exact = (v >= -(1 << 53)) & (v <= 1 << 53)
            bits = np.where(exact, v.astype(np.float64).view(np.uint64), v.view(np.uint64) ^ np.uint64(_BIG_INT))
    elif pa.types.is_floating(t):
        f = arr.cast(pa.float64()).fill_null(0).to_numpy(zero_copy_only=False).copy()
        f[f == 0] = 0.0  # -0.0 is 0.0
        f[np.isnan(f)] = np.nan  # one NaN
        bits = f.view(np.uint64)
    elif pa.types.is_boolean(t):
        bits = arr.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint64) ^ np.uint64(_type_tag(t))
    elif _is_plain_time(t):
        width = pa.int32() if t.bit_width == 32 else pa.int64()
        v = arr.view(width).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        bits = v.view(np.uint64) ^ np.uint64(_type_tag(t))
    elif _is_bytes_like(t):
        bits = _bytes_hashes(arr)
    elif pa.types.is_decimal(t):
        bits = _bytes_hashes(arr.cast(pa.string())) ^ np.uint64(_type_tag(t))
    else:  # lists, structs, maps: rare enough to go through Python
        text = [None if v is None else json.dumps(v, sort_keys=True, default=str) for v in arr.to_pylist()]
        bits = _bytes_hashes(pa.array(text, pa.large_binary())) ^ np.uint64(_type_tag(t))
    bits = np.asarray(bits, dtype=np.uint64) ^ np.uint64(_VALUE_SEED)  # a new array, ours to overwrite
    if arr.null_count:
        bits[arr.is_null().to_numpy(zero_copy_only=False)] = _NULL ^ _VALUE_SEED
    _mix_in_place(bits)
    return bits


def _dictionary_hashes(arr):
    """column_hashes of a dictionary array: each dictionary entry hashed once, then taken by the indices."""
    import numpy as np

    indices = arr.indices
    if len(arr.dictionary) == 0:  # then every index is null
        return np.full(len(arr), _NULL_HASH, dtype=np.uint64)
    hashes = column_hashes(arr.dictionary).take(indices.fill_null(0).to_numpy(zero_copy_only=False))
    if indices.null_count:
        hashes[indices.is_null().to_numpy(zero_copy_only=False)] = _NULL_HASH
    return hashes


def _bytes_hashes(arr):
    """xxh3-64 of each value of a string or binary array; a null's entry is arbitrary (the caller replaces it).

    Hashing is a Python call per value (~0.1 us), so a column whose values repeat (categories, labels) is
    dictionary-encoded first (Arrow's hash table, ~20 ns a short value) and each distinct value hashed once.
    Free text, where nearly every value is new, is hashed directly: encoding would cost more than it saves.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t)):
        arr = arr.cast(pa.large_binary())  # string_view, binary_view
    n = len(arr)
    if n >= _REPEAT_MIN:
        sample = arr if n <= _REPEAT_SAMPLE else arr.take(pa.array(np.arange(_REPEAT_SAMPLE) * (n // _REPEAT_SAMPLE)))
        if 2 * pc.count_distinct(sample, mode="all").as_py() <= len(sample):
            encoded = arr.dictionary_encode()
            if len(encoded.dictionary) == 0:
                return np.zeros(n, dtype=np.uint64)
            return _xxh3_each(encoded.dictionary).take(encoded.indices.fill_null(0).to_numpy(zero_copy_only=False))
    return _xxh3_each(arr)


def _xxh3_each(arr):
    """xxh3-64 of each value's bytes (a null's: of whatever its slot spans), a slice of values at a time."""
    import numpy as np
    import pyarrow as pa
    import xxhash

    n = len(arr)
    out = np.empty(n, dtype=np.uint64)
    _, offsets, data = arr.buffers()
    if data is None or n == 0:
        out.fill(xxhash.xxh3_64_intdigest(b""))
        return out
    # the same buffers as binary without a validity bitmap: to_pylist gives bytes, not str, and no None
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    arr = pa.Array.from_buffers(pa.large_binary() if large else pa.binary(), n, [None, offsets, data],
                                offset=arr.offset)
    for start in range(0, n, _STRING_SLICE):
        values = arr.slice(start, _STRING_SLICE).to_pylist()
        out[start:start + len(values)] = np.fromiter(map(xxhash.xxh3_64_intdigest, values), np.uint64, len(values))
    return out


def row_hashes(table):
    """The uint64 fingerprint of each row of a pyarrow Table (unsorted), as TableWriter computes them."""
    import numpy as np

    rows = np.full(table.num_rows, _ROW_SEED, dtype=np.uint64)
    for column in table.columns:
        rows ^= column_hashes(column)
        _mix_in_place(rows)
    return rows


# ---- column statistics -------------------------------------------------------------------------------
class _ColumnStats:
    """Count, nulls and the moments or distinct values of one column, merged batch by batch."""

    def __init__(self, type_):
        import pyarrow as pa

        if pa.types.is_dictionary(type_):
            type_ = type_.value_type
        self.kind = ("number" if pa.types.is_integer(type_) or pa.types.is_floating(type_) else
                     "bool" if pa.types.is_boolean(type_) else
                     "string" if _is_bytes_like(type_) else
                     "time" if _is_plain_time(type_) else "other")
        self.floating = pa.types.is_floating(type_)
        self.count = self.nulls = 0
        self.n, self.mean, self.m2, self.min, self.max = 0, 0.0, 0.0, None, None
        self.true = 0
        self.distinct: set | None = set()

    def add(self, arr, hashes) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if pa.types.is_dictionary(arr.type):  # a string column needs only which values are null: the indices'
            arr = arr.indices if self.kind == "string" and not arr.dictionary.null_count else arr.dictionary_decode()
        nulls = arr.null_count
        if self.kind in ("number", "time"):
            valid = arr.drop_null()
            if self.floating:
                nan = pc.is_nan(valid)
                nulls += pc.sum(nan).as_py() or 0
                valid = valid.filter(pc.invert(nan))
            if len(valid):
                both = pc.min_max(valid)
                low, high = both["min"].as_py(), both["max"].as_py()
                self.min = low if self.min is None else min(self.min, low)
                self.max = high if self.max is None else max(self.max, high)
            if self.kind == "number" and len(valid):
                self._merge(len(valid), pc.mean(valid).as_py(), pc.variance(valid, ddof=0).as_py())
        elif self.kind == "bool":
            self.true += pc.sum(arr).as_py() or 0
        elif self.kind == "string" and self.distinct is not None:
            present = hashes if not arr.null_count else hashes[arr.is_valid().to_numpy(zero_copy_only=False)]
            present = np.unique(present)
            if len(present) > DISTINCT_CAP:  # over the cap whatever was seen before: no set of them
                self.distinct = None
            else:
                self.distinct.update(present.tolist())
                if len(self.distinct) > DISTINCT_CAP:
                    self.distinct = None
        self.nulls += nulls
        self.count += len(arr) - nulls

    def _merge(self, n: int, mean: float, var: float) -> None:
        """Chan et al.'s pairwise update of count, mean and the sum of squared deviations."""
        total = self.n + n
        delta = mean - self.mean
        self.m2 += var * n + delta * delta * self.n * n / total
        self.mean += delta * n / total
        self.n = total

    def result(self) -> dict:
        out = {"count": self.count, "nulls": self.nulls}
        if self.kind == "number":
            std = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 and self.m2 >= 0 else None
            out.update(min=self.min, max=self.max, mean=self.mean if self.n else None, std=std)
        elif self.kind == "time":
            out.update(min=_iso(self.min), max=_iso(self.max))
        elif self.kind == "bool":
            out["mean"] = self.true / self.count if self.count else None
        elif self.kind == "string":
            out["distinct"] = len(self.distinct) if self.distinct is not None else None
        return out


def _iso(value):
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
