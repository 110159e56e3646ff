"""The `schema:` of a `validate` step: checked cheaply at recipe time, translated into Pandera at build time.

The format (every key optional except `columns`)::

    schema:
      columns:
        age:   {dtype: int64, nullable: false, checks: {ge: 0, le: 120}}
        email: {dtype: str, unique: true, checks: {str_matches: '^[^@]+@[^@]+$'}}
        state: {dtype: category, checks: {isin: [CA, NY, TX]}}
        note:  {required: false}
      strict: false          # true: no other columns; filter: drop other columns from the output
      unique: [state, email] # the combination is unique
      rows: {min: 1, max: 1000000}
      coerce: false          # cast columns to their dtype before checking (the output has those dtypes)

`check_schema` imports nothing heavy (it runs when the recipe is loaded): besides the keys and values, it
refuses a check that cannot apply to its column's declared dtype (`str_matches` on an int64 column, `ge: a`
on a number), which Pandera would only find by raising in every batch. `to_pandera` builds the
`pandera.pandas.DataFrameSchema` a whole-table validation would use. Each check is named the way the
recipe writes it (`ge(0)`, `isin(['CA', 'NY'])`), and `canonical` renames Pandera's structural checks
(`not null`, `unique`, `dtype(int64)`, `required`, `strict`), so a failure report reads back against
the recipe. A DataFrameModel's own checks keep Pandera's names.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..errors import did_you_mean

DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64",
          "str", "bool", "category", "datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]")
SCHEMA_KEYS = ("columns", "strict", "unique", "rows", "coerce")
COLUMN_KEYS = ("dtype", "nullable", "unique", "required", "checks")
BOUNDS = ("ge", "le", "gt", "lt")  # a number, or a string for str and datetime columns
CHECKS = (*BOUNDS, "in_range", "isin", "notin", "str_matches", "str_length")
TABLE = "(table)"  # the "column" of a failure of the table as a whole
ALIASES = {  # a check's other names (Pandera's long ones, other libraries') -> how this schema writes it
    "greater_than": "gt", "greater_than_or_equal_to": "ge", "less_than": "lt", "less_than_or_equal_to": "le",
    "min": "ge", "max": "le", "min_value": "ge", "max_value": "le", "between": "in_range", "range": "in_range",
    "in": "isin", "is_in": "isin", "one_of": "isin", "in_set": "isin", "not_in": "notin", "not_isin": "notin",
    "eq": "isin: [value]", "equal_to": "isin: [value]", "ne": "notin: [value]", "not_equal_to": "notin: [value]",
    "matches": "str_matches", "regex": "str_matches", "pattern": "str_matches",
    "str_contains": "str_matches: '.*text'", "contains": "str_matches: '.*text'",
    "str_startswith": "str_matches: '^text'", "startswith": "str_matches: '^text'",
    "str_endswith": "str_matches: '.*text$'", "endswith": "str_matches: '.*text$'",
    "length": "str_length", "len": "str_length", "str_len": "str_length",
    "unique": "`unique: true` beside `checks:`, a column key", "nullable": "`nullable:` beside `checks:`, a column key",
    "not_null": "`nullable: false` beside `checks:`, a column key (the default)",
}
RENAMED = {"not_nullable": "not null", "field_uniqueness": "unique", "multiple_fields_uniqueness": "unique",
           "column_in_dataframe": "required", "column_in_schema": "strict"}  # Pandera's names -> the recipe's

Fail = Callable[[str, str], None]  # fail(key below params.schema, message) raises a RecipeError


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _keys(value, allowed, key: str, what: str, fail: Fail, aliases: dict | None = None) -> dict:
    if not isinstance(value, dict):
        fail(key, f"{what} must be a mapping, got {type(value).__name__} {value!r}")
    for k in value:
        if k not in allowed:
            hint = f" (write it as {aliases[k]})" if k in (aliases or {}) else did_you_mean(k, allowed)
            fail(f"{key}.{k}", f"unknown {what} key '{k}'{hint}; it takes: {', '.join(allowed)}")
    return value


def _min_max(value, key: str, fail: Fail, *, ok=_number, kind="a number", both=True) -> None:
    _keys(value, ("min", "max"), key, "bounds", fail)
    given = [k for k in ("min", "max") if value.get(k) is not None]
    if len(given) < (2 if both else 1):
        fail(key, f"give {'both min and max' if both else 'min, max or both'}, e.g. {{min: 0, max: 10}}")
    for k in given:
        if not ok(value[k]):
            fail(f"{key}.{k}", f"{k} must be {kind}, got {value[k]!r}")
    if len(given) == 2 and _number(value["min"]) and _number(value["max"]) and value["min"] > value["max"]:
        fail(key, f"min {value['min']} is above max {value['max']}")


def _check_checks(checks, key: str, fail: Fail) -> None:
    _keys(checks, CHECKS, key, "check", fail, ALIASES)
    for name, value in checks.items():
        where = f"{key}.{name}"
        if name in BOUNDS and not (_number(value) or isinstance(value, str)):
            fail(where, f"{name} takes a number (or a string, for str and datetime columns), got {value!r}")
        elif name == "in_range":
            _min_max(value, where, fail, ok=lambda v: _number(v) or isinstance(v, str), kind="a number or a string")
        elif name in ("isin", "notin") and not (isinstance(value, list) and value and all(map(_scalar, value))):
            fail(where, f"{name} takes a non-empty list of values, e.g. [a, b], got {value!r}")
        elif name == "str_matches":
            if not isinstance(value, str):
                fail(where, f"str_matches takes a regular expression string, got {value!r}")
            try:
                re.compile(value)
            except re.error as e:
                fail(where, f"invalid regular expression {value!r}: {e}; quote it in the YAML with single quotes")
        elif name == "str_length":
            _min_max(value, where, fail, ok=lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                     kind="a whole number, 0 or more", both=False)


def _check_fits(dtype: str, checks: dict, key: str, fail: Fail) -> None:
    """Refuse a check that cannot apply to a column of this dtype: Pandera would raise, not report rows."""
    kind = ("number" if dtype.startswith(("int", "uint", "float")) or dtype == "bool"
            else "datetime" if dtype.startswith("datetime") else dtype)  # number, str, category or datetime
    for name, value in checks.items():
        where = f"{key}.{name}"
        if name in ("str_matches", "str_length") and kind not in ("str", "category"):
            fail(where, f"{name} checks text, and the column's dtype is {dtype}: drop the check, or declare "
                        f"`dtype: str` if the column holds text")
        bounds = [value] if name in BOUNDS else [value.get("min"), value.get("max")] if name == "in_range" else []
        for bound in (b for b in bounds if b is not None):
            if kind == "category":
                fail(where, f"the column is category, whose values have no order, so {name} cannot compare them: "
                            f"use isin, or declare `dtype: str` to compare them as text")
            elif kind == "number" and not _number(bound):
                fail(where, f"the column is {dtype}, so {name} takes a number, got {bound!r}")
            elif kind == "str" and not isinstance(bound, str):
                fail(where, f"the column is str, so {name} compares text and takes a string (quote it: '{bound}'), "
                            f"got {bound!r}")
            elif kind == "datetime" and not isinstance(bound, str):
                fail(where, f"the column is {dtype}, so {name} takes a date or time as a string, e.g. "
                            f"'2024-01-31', got {bound!r}")


def check_schema(schema, fail: Fail) -> None:
    """Raise (through `fail`) on the first unknown key, unknown dtype or check, or wrongly typed value."""
    _keys(schema, SCHEMA_KEYS, "schema", "schema", fail)
    columns = schema.get("columns")
    if not isinstance(columns, dict) or not columns:
        fail("schema.columns", "the schema needs `columns:`, a mapping of column name to its rules, "
                               "e.g. {age: {dtype: int64, checks: {ge: 0}}}")
    for name, spec in columns.items():
        key = f"schema.columns.{name}"
        for k, v in _keys({} if spec is None else spec, COLUMN_KEYS, key, "column", fail).items():
            if k == "dtype" and v not in DTYPES:
                fail(f"{key}.dtype", f"unknown dtype {v!r}{did_you_mean(v, DTYPES)}; use one of {', '.join(DTYPES)}")
            elif k in ("nullable", "unique", "required") and not isinstance(v, bool):
                fail(f"{key}.{k}", f"{k} must be true or false, got {v!r}")
            elif k == "checks":
                _check_checks(v, f"{key}.checks", fail)
        if spec and spec.get("dtype") and spec.get("checks"):
            _check_fits(spec["dtype"], spec["checks"], f"{key}.checks", fail)
    strict = schema.get("strict", False)
    if not isinstance(strict, bool) and strict != "filter":
        fail("schema.strict", f"strict must be true, false or filter, got {strict!r}")
    unique = schema.get("unique")
    if unique is not None and not (isinstance(unique, list) and unique and all(isinstance(c, str) for c in unique)):
        fail("schema.unique", f"unique takes a list of column names whose combination is unique, got {unique!r}")
    if schema.get("rows") is not None:
        _min_max(schema["rows"], "schema.rows", fail, ok=lambda v: isinstance(v, int) and not isinstance(v, bool)
                 and v >= 0, kind="a whole number, 0 or more", both=False)
    if not isinstance(schema.get("coerce", False), bool):
        fail("schema.coerce", f"coerce must be true or false, got {schema['coerce']!r}")


def _pandera_check(name: str, value) -> dict:
    """One check in Pandera's serialised form: its arguments, and an error text naming it as the recipe does."""
    if name in ("in_range", "str_length"):
        low, high = value.get("min"), value.get("max")
        args, shown = {"min_value": low, "max_value": high}, f"{low!r}, {high!r}"
    else:
        args, shown = {"value": value}, repr(value)
    return {**args, "options": {"check_name": name, "error": f"{name}({shown})"}}


def to_pandera(schema: dict):
    """The DataFrameSchema for a whole table, through Pandera's own schema reader (`pandera.io`): this
    format is Pandera's serialised one but for the spelling of two checks' bounds, the `error` names and
    `rows` (no Pandera equivalent; validate.py counts rows itself). Uniqueness reports the second and later
    occurrences."""
    from pandera.io.pandas_io import deserialize_schema

    def column(spec: dict) -> dict:
        return {"dtype": spec.get("dtype"), "nullable": spec.get("nullable", False),
                "unique": spec.get("unique", False), "required": spec.get("required", True),
                "report_duplicates": "exclude_first",
                "checks": [_pandera_check(k, v) for k, v in (spec.get("checks") or {}).items()]}

    return deserialize_schema({
        "columns": {name: column(spec or {}) for name, spec in schema["columns"].items()},
        "strict": schema.get("strict", False), "unique": schema.get("unique"),
        "report_duplicates": "exclude_first", "coerce": schema.get("coerce", False)})


# ---- the names failures are reported under ---------------------------------------------------------
def label(check) -> str:
    """A Pandera check's name in failure cases: its error text (`ge(0)`, `greater_than_or_equal_to(0)`) or
    its function's name (a custom check)."""
    return check.error or check.name


def declared(schema, uniques, spec: dict | None) -> list[tuple[str, str]]:
    """Every (column, check) the table was checked against, named as failures are."""
    out = []
    for name, col in schema.columns.items():
        out += [(name, "required")] if col.required else []
        out += [(name, f"dtype({col.dtype})")] if col.dtype is not None else []
        out += [(name, "not null")] if not col.nullable else []
        out += [(name, label(c)) for c in col.checks]
    out += [(", ".join(u.columns), "unique") for u in uniques]
    out += [(TABLE, label(c)) for c in schema.checks]
    out += [(TABLE, "strict")] if schema.strict else []
    if (spec or {}).get("rows"):
        out.append((TABLE, rows_label(spec["rows"])))
    return out


def rows_label(bounds: dict) -> str:
    return "rows(" + ", ".join(f"{k}={bounds[k]}" for k in ("min", "max") if bounds.get(k) is not None) + ")"


def canonical(fc, dtypes=None):
    """Pandera's failure cases as records (column, check, failure_case, index), named as the recipe names
    them; index is the row's position, or null for a failure of the table as a whole. A wrong dtype is one:
    one record per column, whose case is the column's dtype (from `dtypes`, the frame's, when given: for a
    column of text Pandera lists the values that do not parse instead). A value that cannot be coerced fails
    its row. A dataframe-wide check's failures are one record per row (Pandera gives one per row and column)."""
    import pandas as pd

    fc = fc.reset_index(drop=True)
    raw = fc["check"].astype(str)
    check = raw.map({c: _rename(c) for c in raw.unique()})
    dtype = check.str.startswith("dtype(").to_numpy()
    once = ~(dtype & pd.DataFrame({"column": fc["column"], "check": check}).duplicated().to_numpy())
    fc, check, dtype = fc[once].reset_index(drop=True), check[once].reset_index(drop=True), dtype[once]
    index = pd.to_numeric(fc["index"], errors="coerce").astype("Int64")
    index = index.mask(dtype)  # a wrong dtype is the column's, not a set of rows'
    case = fc["failure_case"]
    if dtypes is not None and dtype.any():
        case = case.where(~dtype, fc["column"].map(lambda c: str(dtypes[c]) if c in dtypes else None))
    named = check.isin(["required", "strict"]).to_numpy()  # the failure case is the column's name
    column = fc["column"].astype(object).where(fc["column"].notna(), TABLE).where(~named, fc["failure_case"])
    out = pd.DataFrame({"column": column.astype(str), "check": check, "failure_case": case, "index": index})
    wide = ((fc["schema_context"] == "DataFrameSchema") & index.notna()).to_numpy() & ~named
    if wide.any():
        rows: dict = {}
        for column_, check_, case, at in out[wide].itertuples(index=False):
            rows.setdefault((check_, at), []).append((column_, case))
        merged = pd.DataFrame([(", ".join(c for c, _ in pairs), check_, tuple(v for _, v in pairs), at)
                               for (check_, at), pairs in rows.items()], columns=out.columns)
        out = pd.concat([out[~wide], merged], ignore_index=True)
    return out


def _rename(check: str) -> str:
    m = re.fullmatch(r"(dtype|coerce_dtype)\('(.*)'\)", check)
    return f"{'dtype' if m[1] == 'dtype' else 'coerce'}({m[2]})" if m else RENAMED.get(check, check)


def show(value, limit: int | None = 24) -> str:
    import pandas as pd

    if isinstance(value, tuple):  # one row's values in several columns
        text = "(" + ", ".join(show(v, None) for v in value) + ")"
    elif value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        text = "null"
    else:
        text = repr(value) if isinstance(value, str) else str(value)
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."
