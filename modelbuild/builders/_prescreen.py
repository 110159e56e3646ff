"""validate's first pass, in Arrow: proves that a table passes a recipe schema without pandas or Pandera.

Pandera checks a pandas DataFrame, so every batch is converted (a Python object per text cell) and every
check runs in pandas: most of validate's time on a large table. Most tables pass, and the rules a recipe's
schema usually holds (dtypes, nulls, bounds, sets of values, uniqueness, row counts) are answered for a
whole column by a few Arrow compute scans. `passes` returns True only when it has shown every rule to hold
as Pandera would judge it on the batches validate gives it (an int column with a null reads as float64,
NaN counts as null, a check skips nulls); for anything else (a rule or dtype it does not know, a value
that fails, two values that may be equal) it returns False, and validate runs Pandera, which finds and
names the failures. So it can only make a passing table cheaper: it never decides that a table fails.
"""

from __future__ import annotations

import math
from pathlib import Path

BATCH_ROWS = 1 << 17
INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
BOUNDS = {"ge": "greater_equal", "gt": "greater", "le": "less_equal", "lt": "less"}


class _Unproven(Exception):
    """A rule the prescreen cannot show to hold: Pandera decides."""


def passes(spec: dict, source: Path) -> bool:
    """Whether the table at `source` (a data.parquet) passes the recipe schema `spec`, shown in Arrow."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(source) as f:
            columns, uniques = _plan(spec, f.schema_arrow)
            rows = f.metadata.num_rows
            bounds = spec.get("rows") or {}
            if rows < (bounds.get("min") or 0) or (bounds.get("max") is not None and rows > bounds["max"]):
                return False
            read = [n for n in f.schema_arrow.names if n in columns or any(n in u for u in uniques)]
            keys, filled = [np.empty(rows, np.uint64) for _ in uniques], [0] * len(uniques)  # 8 bytes a row
            for batch in f.iter_batches(batch_size=BATCH_ROWS, columns=read):
                for name, rules in columns.items():
                    for rule in rules:
                        rule(batch.column(name))
                for i, unique in enumerate(uniques):
                    hashes = _present_hashes(batch, unique)
                    keys[i][filled[i]:filled[i] + len(hashes)] = hashes
                    filled[i] += len(hashes)
            return all(_distinct(k[:n]) for k, n in zip(keys, filled, strict=True))
    except (_Unproven, pa.ArrowException, TypeError, ValueError, OverflowError):
        return False  # a comparison Arrow refuses (a bound out of the column's range) is Pandera's to judge


def _plan(spec: dict, schema) -> tuple[dict, list]:
    """{column: [rule(array) raising _Unproven]} and the column lists that must be unique."""
    if set(spec) - {"columns", "strict", "unique", "rows"} or spec.get("strict", False) not in (False, True):
        raise _Unproven  # coerce (the output is cast) and strict: filter (columns dropped) are Pandera's
    names = schema.names
    if len(set(names)) < len(names) or (spec.get("strict") and set(names) - set(spec["columns"])):
        raise _Unproven
    columns, uniques = {}, []
    for name, col in spec["columns"].items():
        col = col or {}
        if name not in names:
            if col.get("required", True):
                raise _Unproven
            continue
        type_ = schema.field(name).type
        rules = [_dtype_rule(col.get("dtype"), type_, nullable=col.get("nullable", False))]
        rules += [_check_rule(check, value, type_) for check, value in (col.get("checks") or {}).items()]
        if any(rules):  # a column with nothing to check in its values is not read
            columns[name] = [r for r in rules if r is not None]
        uniques += [[name]] if col.get("unique") else []
    combined = spec.get("unique")
    if combined:
        if set(combined) - set(names):
            raise _Unproven
        uniques.append(list(combined))
    return columns, uniques


def _dtype_rule(dtype: str | None, type_, nullable: bool):
    """The column's dtype as pandas reads it, and its nulls (None: nothing to read): an int or bool column
    with a null is float64 or object in pandas, whatever its declared dtype; a float NaN is a null to Pandera."""
    import pyarrow as pa
    import pyarrow.compute as pc

    exact = {**{t: pa.type_for_alias(t) for t in INTS}, "float32": pa.float32(), "float64": pa.float64(),
             "bool": pa.bool_(), "str": pa.string()}
    text = pa.types.is_string(type_) or pa.types.is_large_string(type_)  # both read as pandas' str
    if dtype is not None and exact.get(dtype) != type_ and not (dtype == "str" and text):
        raise _Unproven
    if nullable and dtype not in INTS and dtype != "bool":
        return None

    def rule(arr):
        if arr.null_count or (pa.types.is_floating(arr.type) and pc.any(pc.is_nan(arr)).as_py()):
            raise _Unproven

    return rule


def _check_rule(check: str, value, type_):
    """One of the schema's checks, on the values present (Pandera skips nulls and NaN), where Arrow and
    pandas compare alike: int64 and float64 columns (numpy compares a float32 or int32 column in its own
    type), bounds within int64's range."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if check in ("isin", "notin"):
        wanted = _value_set(value, type_)

        def rule(arr):
            _exact_as_float(arr)
            hit = pc.is_in(_present(arr), value_set=wanted)
            if pc.all(hit if check == "isin" else pc.invert(hit)).as_py() is False:
                raise _Unproven

        return rule
    bounds = {check: value} if check in BOUNDS else {"ge": value["min"], "le": value["max"]} \
        if check == "in_range" else None
    if bounds is None or type_ not in (pa.int64(), pa.float64()) or not all(map(_is_number, bounds.values())) \
            or any(abs(b) >= 2**63 for b in bounds.values()):
        raise _Unproven
    if pa.types.is_floating(type_) or any(isinstance(b, float) for b in bounds.values()):
        bounds = {k: float(b) for k, b in bounds.items()}  # numpy compares them, and the column, as float64

    def rule(arr):
        both = pc.min_max(arr)  # skips nulls and NaN (all NaN: NaN, which passes every bound here)
        low, high = both["min"].as_py(), both["max"].as_py()
        if low is None:
            return
        _exact_as_float(arr, low, high)
        if isinstance(next(iter(bounds.values())), float):
            low, high = float(low), float(high)
        ok = {"ge": low >= bounds.get("ge", low), "gt": "gt" not in bounds or low > bounds["gt"],
              "le": high <= bounds.get("le", high), "lt": "lt" not in bounds or high < bounds["lt"]}
        if not all(ok.values()) and not math.isnan(low):
            raise _Unproven

    return rule


def _exact_as_float(arr, low=None, high=None) -> None:
    """An int64 column with a null anywhere in the table is float64 in pandas: its values must convert exactly
    (within 2**53) for Arrow's int64 comparisons to be pandas' float64 ones."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_integer(arr.type):
        return
    if low is None:
        both = pc.min_max(arr)
        low, high = both["min"].as_py(), both["max"].as_py()
    if low is not None and max(abs(low), abs(high)) > 2**53:
        raise _Unproven


def _value_set(values: list, type_):
    """isin's values as an Arrow array of the column's type, where pandas and Arrow compare them alike."""
    import pyarrow as pa

    if (pa.types.is_string(type_) or pa.types.is_large_string(type_)) and all(isinstance(v, str) for v in values):
        return pa.array(values, type_)
    if type_ == pa.int64() and all(type(v) is int and abs(v) < 2**63 for v in values):
        return pa.array(values, pa.int64())
    if type_ == pa.float64() and all(_is_number(v) and abs(v) < 2**53 for v in values):
        return pa.array([float(v) for v in values], pa.float64())
    raise _Unproven


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _present(arr):
    """The values Pandera checks: nulls and NaN dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = arr.drop_null()
    return arr.filter(pc.invert(pc.is_nan(arr))) if pa.types.is_floating(arr.type) else arr


def _present_hashes(batch, columns: list):
    """64-bit hashes of the rows with a value in any of `columns` (as validate's uniqueness skips the rest)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..table import row_hashes

    part = pa.Table.from_batches([batch.select(columns)])
    any_value = None
    for column in part.columns:
        valid = pc.invert(pc.is_null(column, nan_is_null=True))
        any_value = valid if any_value is None else pc.or_(any_value, valid)
    return row_hashes(part.filter(any_value))


def _distinct(hashes) -> bool:
    """No hash repeats (sorted in place): then no two values are equal, as equal values hash alike; a repeat
    may be a collision, which Pandera settles."""
    hashes.sort()
    return not (hashes[1:] == hashes[:-1]).any()
