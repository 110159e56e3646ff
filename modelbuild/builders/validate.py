"""validate: check a table against a Pandera schema, batch by batch, and fail with a table of what failed.

The schema is written in the recipe (`schema:`, see `_schema.py`) or is a `pandera.pandas.DataFrameModel`
in the user's project (`model: module:Class`; its module's source enters the key, as Pandera's YAML export
would drop its custom checks). Validation is lazy: every failure is collected before the step fails.

The table may be larger than memory, so it is read `batch_rows` rows at a time and each batch is validated
with Pandera, its index set to the rows' positions in the whole table. What one batch cannot see is done
here across batches, so the result is the one Pandera gives on the whole DataFrame:

- uniqueness (a column's, or a combination's, as Pandera's `report_duplicates="exclude_first"`): a
  sorted set of 64-bit hashes of the values seen so far; the second and later occurrences fail, nulls
  (all-null combinations) never do. Some two of n distinct values share a hash with odds about
  n^2 / 2^65: 1 in 370,000 at 10^7 rows, 1 in 3,700 at 10^8. A collision can only report a false
  duplicate, never miss a real one.
- the row count bounds (`rows: {min, max}`), on the total;
- the pandas dtype of an int or bool column with nulls, which depends on whether a batch holds one.

A recipe schema is first tried on the table in Arrow (`_prescreen.py`): when that shows every rule to hold,
the table passes through without pandas conversion or Pandera, with the report Pandera's pass would give;
anything it cannot show (a rule it does not know, a failing value) is validated with Pandera as below.

A check that aggregates a whole column (a custom check returning one bool, e.g. a mean) sees one batch
at a time; checks that return one bool per row are exact.

A column whose dtype is not the declared one fails the table as a whole, whatever it holds (a column of
text declared int64 fails even if most of its values would parse). With `coerce`, each batch is cast to
the declared dtypes first: a value that cannot be cast fails its row, and the other rows are checked, and
written, cast. A check that cannot apply to its column's type (`str_matches` on a number) is refused when
the recipe is checked, if the schema declares the dtype, and otherwise fails the step as an error in the
schema, not in the data; unless the column's dtype fails too, which says why.

`on_fail: quarantine` writes failing rows to `quarantine/data.parquet` with a `failure` column (which
checks each row failed) and a `row` column (its position in the input); the step still fails when more
than `max_bad_fraction` of the rows are bad, or when the table as a whole fails (a missing column, a
wrong dtype, the row count), which no set of rows can be blamed for.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from ..errors import BuildError, DataValidationError, RecipeError, did_you_mean
from ..table import (
    DATA,
    ROWS,
    STATS,
    SUMMARY,
    TableWriter,
    data_file,
    input_table,
    iter_batches,
    link_or_copy,
    table_json,
)
from . import _prescreen, _schema
from ._schema import TABLE, canonical, declared, label, rows_label, show
from .base import Builder, Param
from .python import _module_file

BATCH_ROWS = 100_000
SHOWN = 5  # failure cases and row numbers shown per line of the error
LOGGED = 10_000  # failures written one per line to the step log; the summary table there is always whole


class Validate(Builder):
    """Pass a table through unchanged when it fits its schema; fail with a table of failures when not.

    Example::

        check:
          builder: validate
          inputs: {table: clean}
          params:
            schema:
              columns:
                age: {dtype: int64, checks: {ge: 0, le: 120}}
                income: {dtype: str, checks: {isin: ["<=50K", ">50K"]}}
            on_fail: quarantine   # optional: set failing rows aside instead of failing
    """

    name = "validate"
    env = ("pandas", "pandera", "pyarrow")
    params = {
        "schema": Param("dict", help="the schema written in the recipe: {columns: {name: {dtype, checks}}}"),
        "model": Param("str", help="a pandera DataFrameModel in your project, as module:Class"),
        "on_fail": Param("str", default="error", choices=("error", "quarantine"),
                         help="error: fail the step; quarantine: set failing rows aside in quarantine/"),
        "max_bad_fraction": Param("float", default=0.01, help="quarantine: the largest share of rows that may fail"),
        "batch_rows": Param("int", default=BATCH_ROWS, help="rows validated at a time; bounds memory"),
    }

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        def fail(key, message):
            raise RecipeError(message, file=file, step=step, key=f"params.{key}")

        if (params["schema"] is None) == (params["model"] is None):
            fail("schema" if params["schema"] is not None else "model",
                 "give exactly one of `schema:` (written in the recipe) or `model:` (a pandera DataFrameModel "
                 "in your project, as module:Class)")
        if params["schema"] is not None:
            _schema.check_schema(params["schema"], fail)
        else:
            module, sep, cls = params["model"].partition(":")
            if not sep or not module or not cls:
                fail("model", f"expected 'module:Class', got {params['model']!r}: e.g. `model: schemas:Adult` "
                              "for class Adult(pandera.pandas.DataFrameModel) in schemas.py")
            recipe_dir = Path(file).parent.absolute() if file else Path.cwd()
            if _module_file(module, recipe_dir) is None:
                nearby = did_you_mean(module, [p.stem for p in recipe_dir.glob("*.py")])
                fail("model", f"cannot find module '{module}'{nearby} from {recipe_dir}: put "
                              f"{module.replace('.', '/')}.py next to the recipe or make it importable")
        if not 0 <= params["max_bad_fraction"] <= 1:
            fail("max_bad_fraction", f"max_bad_fraction is a share of rows, from 0 to 1, got {params['max_bad_fraction']}")
        if params["batch_rows"] < 1:
            fail("batch_rows", "batch_rows must be 1 or more")

    def key_extras(self, params: dict, recipe_dir: Path) -> dict:
        """A model's module (and the project modules it imports) is the schema's identity: Pandera's YAML
        export would drop its custom checks."""
        if not params.get("model"):
            return {}
        from ..codehash import project_code

        code = project_code(_module_file(params["model"].partition(":")[0], Path(recipe_dir)), Path(recipe_dir))
        return {"model": code["source"], "packages": code["packages"]}

    def key_code(self, params: dict, recipe_dir: Path) -> dict:
        path = _module_file(params["model"].partition(":")[0], Path(recipe_dir)) if params.get("model") else None
        return {"extras.model": path} if path is not None else {}

    def build(self, ctx) -> None:
        p = ctx.params
        source = data_file(input_table(ctx))
        schema = (_schema.to_pandera(p["schema"]) if p["schema"] is not None
                  else _load_model(p["model"], Path(ctx.recipe_dir), ctx.step))
        batch_schema, uniques = _split_uniques(schema)
        coerced = [c for c, col in schema.columns.items() if col.dtype is not None and (schema.coerce or col.coerce)]
        kept = set(schema.columns) if schema.strict == "filter" else None  # columns of the output; None: all
        failures, total = _Failures(ctx.log), _rows(source)
        # nothing cast, no column dropped, no row set aside: what passes is the input, byte for byte
        same = not coerced and kept is None and p["on_fail"] != "quarantine"
        if same and p["schema"] is not None and _prescreen.passes(p["schema"], source):
            passed, bad_rows = _pass_through(source, ctx.out), 0  # shown in Arrow: Pandera would find nothing
            ctx.progress(total, total, "0 failing rows")
        else:
            passed, bad_rows = _validate(ctx, source, (batch_schema, uniques, coerced, kept), same, failures, total)
        checks = [{"column": c, "check": k, "failures": failures.count(c, k)}
                  for c, k in declared(schema, uniques, p["schema"])]
        (ctx.out / "validation.json").write_text(json.dumps({
            "schema": p["schema"] if p["schema"] is not None else {"model": p["model"]}, "on_fail": p["on_fail"],
            "rows": total, "passed_rows": passed, "failed_rows": bad_rows, "checks": checks,
            "failures": failures.as_json()}, indent=2, default=str) + "\n")
        ctx.write_metrics({"rows": total, "failed_rows": bad_rows})
        ctx.log.info("validated %d rows against %d checks: %d passed, %d set aside", total, len(checks), passed,
                     bad_rows)


def _validate(ctx, source: Path, plan: tuple, same: bool, failures, total: int) -> tuple[int, int]:
    """Pandera on each batch, uniqueness and the row count across them; returns (rows passed, rows failed)."""
    (batch_schema, uniques, coerced, kept), p, bad_rows = plan, ctx.params, 0
    quarantine = p["on_fail"] == "quarantine"
    with TableWriter(ctx.out) as out, TableWriter(ctx.out, "quarantine/data.parquet",
                                                  "quarantine/table.json") as aside:
        for batch, df in _frames(source, p["batch_rows"]):
            frame, uncast = _coerce(batch_schema, df, coerced)
            validated, records = _validate_batch(batch_schema, frame)
            frame = validated if validated is not None else frame
            records = _concat([uncast, records, *(u.duplicates(frame) for u in uniques)])
            bad = failures.add(records)
            bad_rows += len(bad)
            if not same and (quarantine or not failures.entries):  # once bound to fail, stop writing
                keep = ~df.index.isin(bad)
                out.write(_passing(batch, keep, frame.loc[df.index[keep]], coerced, kept))
            if quarantine and len(bad):
                aside.write(_failing(batch, df, bad, records))
            ctx.progress(df.index.stop, total, f"{bad_rows} failing rows")
        failures.check_rows(total, (p["schema"] or {}).get("rows"))
        failures.log_summary(ctx.step, total)
        if (failures.table_failures() or (bad_rows and not quarantine)
                or bad_rows > p["max_bad_fraction"] * total):
            raise DataValidationError(failures.message(ctx.step, bad_rows, total, p))
        passed = _pass_through(source, ctx.out) if same else out.close(_read_schema(source, kept))["rows"]
        if quarantine:
            aside.close(_quarantine_schema(_read_schema(source)))
    return passed, bad_rows


def _load_model(spec: str, recipe_dir: Path, step: str):
    """The DataFrameSchema of `module:Class`, loaded from exactly the file whose source is in the key."""
    import pandera.pandas as pa

    module_name, _, cls_name = spec.partition(":")
    path = _module_file(module_name, recipe_dir)
    if path is None:
        raise BuildError(f"step '{step}': cannot find module '{module_name}' from {recipe_dir}")
    if str(recipe_dir) not in sys.path:
        sys.path.insert(0, str(recipe_dir))
    found = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(found)
    sys.modules[module_name] = module
    found.loader.exec_module(module)
    model = getattr(module, cls_name, None)
    if not (isinstance(model, type) and issubclass(model, pa.DataFrameModel)):
        raise BuildError(f"step '{step}': {spec} is not a pandera DataFrameModel; define "
                         f"`class {cls_name}(pandera.pandas.DataFrameModel)` in {path}")
    return model.to_schema()


def _split_uniques(schema):
    """The schema less its uniqueness rules (checked across batches here), and those rules."""
    columns = [name for name, col in schema.columns.items() if col.unique]
    combined = schema.unique or []
    combined = [combined] if all(isinstance(c, str) for c in combined) else combined
    batch = schema.update_columns({name: {"unique": False} for name in columns}) if columns else schema
    if combined:
        batch = batch.update_columns({})  # a copy, so the next line leaves `schema` whole
        batch.unique = None
    return batch, [_Unique([c]) for c in columns] + [_Unique(list(cols)) for cols in combined if cols]


def _pass_through(source: Path, out: Path) -> int:
    """The input table as the output: its Parquet file, statistics and fingerprints linked (copied across file
    systems) rather than decoded and encoded again; table.json as TableWriter writes it. Returns the rows."""
    rows = _rows(source)
    for name in (DATA, STATS, ROWS):
        link_or_copy(source.parent / name, out / name)
    (out / SUMMARY).write_text(json.dumps(table_json(_read_schema(source), rows), indent=2) + "\n")
    return rows


def _rows(source: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(source).metadata.num_rows


def _read_schema(source: Path, columns: set | None = None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.schema([f for f in pq.read_schema(source).remove_metadata() if columns is None or f.name in columns])


def _frames(source: Path, batch_rows: int):
    """(arrow batch, pandas frame indexed by position in the table), each batch with the dtypes the whole
    table reads as: an int or bool column with a null anywhere is float64 or object in every batch."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = pq.ParquetFile(source)
    widen, offset, batches = _widened(f), 0, iter_batches(source, batch_rows)
    if f.metadata.num_rows == 0:  # an empty table still has columns and dtypes to check
        schema = f.schema_arrow.remove_metadata()
        batches = [pa.RecordBatch.from_arrays([pa.array([], x.type) for x in schema], schema=schema)]
    for batch in batches:
        df = batch.to_pandas()
        for column, dtype in widen.items():
            df[column] = df[column].astype(dtype)
        df.index = pd.RangeIndex(offset, offset + len(df))
        offset += len(df)
        yield batch, df


def _widened(f) -> dict:
    import pyarrow as pa

    wanted = {field.name: "float64" if pa.types.is_integer(field.type) else "object" for field in f.schema_arrow
              if pa.types.is_integer(field.type) or pa.types.is_boolean(field.type)}
    out = {}
    for name, dtype in wanted.items():
        nulls = 0
        for r in range(f.metadata.num_row_groups):
            group = f.metadata.row_group(r)
            stats = next((group.column(j).statistics for j in range(group.num_columns)
                          if group.column(j).path_in_schema == name), None)
            if stats is None or not stats.has_null_count:  # no statistics: count them
                nulls = sum(b.column(0).null_count for b in f.iter_batches(columns=[name]))
                break
            nulls += stats.null_count
        if nulls:
            out[name] = dtype
    return out


def _validate_batch(schema, df):
    """(the validated frame, None) when the batch passes, else (None, its failure records).

    A check that raised (a comparison of text with a number) is no failure of the data: on a column whose
    dtype fails too it is dropped, as that failure says why; on any other it is an error in the schema."""
    from pandera.errors import SchemaErrorReason, SchemaErrors

    try:
        return schema.validate(df, lazy=True), None
    except SchemaErrors as e:
        fc = e.failure_cases
        raised = [err for err in e.schema_errors if err.reason_code == SchemaErrorReason.CHECK_ERROR]
        if raised:
            wrong = set(fc.loc[fc["check"].astype(str).str.startswith("dtype("), "column"])
            for err in raised:
                if err.column_name not in wrong:
                    on = (f"column {err.column_name!r}, which is {df[err.column_name].dtype}"
                          if err.column_name in df else "the table")
                    raise BuildError(f"check {label(err.check)} cannot apply to {on}: it raised "
                                     f"{err.failure_cases}. Fix the check, or the column's type upstream; "
                                     f"declaring the column's dtype in the schema has such checks refused "
                                     f"before anything runs") from None
            fc = fc[~(fc["index"].isna() & fc["failure_case"].isin([str(err.failure_cases) for err in raised]))]
        return None, canonical(fc, df.dtypes)


def _concat(frames):
    import pandas as pd

    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True) if frames else None


class _Unique:
    """One uniqueness rule across batches: the 64-bit hashes of the values seen so far (8 bytes a row),
    kept as sorted runs merged like a binary counter, so adding n values costs O(n log n) in all and a
    lookup is a binary search in each of the O(log n) runs."""

    def __init__(self, columns: list[str]):
        self.columns, self.runs = columns, []

    def duplicates(self, df):
        import numpy as np
        import pandas as pd

        present = [c for c in self.columns if c in df]  # as Pandera: a missing column is reported as such
        part = df[present]
        part = part[part.notna().any(axis=1)] if present else part.iloc[:0]
        hashes = pd.util.hash_pandas_object(part, index=False).to_numpy()
        order = np.argsort(hashes, kind="stable")  # stable: of equal values, the first row stays first
        ordered = hashes[order]
        found = np.zeros(len(ordered), bool)
        found[1:] = ordered[1:] == ordered[:-1]  # a repeat within the batch
        for run in self.runs:  # or of an earlier batch
            found |= run[np.searchsorted(run, ordered).clip(max=len(run) - 1)] == ordered
        dup = np.empty_like(found)
        dup[order] = found
        self._add(ordered[~found])
        if not dup.any():
            return None
        rows = part[dup]
        cases = rows.iloc[:, 0].tolist() if len(present) == 1 else list(rows.itertuples(index=False, name=None))
        return pd.DataFrame({"column": ", ".join(self.columns), "check": "unique",
                             "failure_case": pd.Series(cases, dtype=object), "index": rows.index.to_numpy()})

    def _add(self, run) -> None:
        import numpy as np

        if not len(run):
            return
        while self.runs and len(self.runs[-1]) <= 2 * len(run):
            run = np.concatenate([self.runs.pop(), run])
            run.sort(kind="stable")  # two sorted runs: a linear merge
        self.runs.append(run)


class _Failures:
    """Failures summed per (column, check) as the batches stream by; the first LOGGED also go to the log."""

    def __init__(self, log):
        self.log, self.entries, self.logged = log, {}, 0

    def add(self, records):
        """Take one batch's records; return the positions of the rows that failed, sorted."""
        import numpy as np

        if records is None:
            return np.empty(0, np.int64)
        at_row = records["index"].notna().to_numpy()
        for (column, check, table), group in records.assign(table=~at_row).groupby(
                ["column", "check", "table"], sort=False):
            e = self.entries.setdefault((column, check, table), {
                "column": column, "check": check, "table": bool(table), "failures": 0, "cases": [], "rows": []})
            if table:  # the same in every batch: keep the first few distinct cases
                new = [c for c in dict.fromkeys(map(show, group["failure_case"])) if c not in e["cases"]]
                e["cases"] += new[:SHOWN - len(e["cases"])]
                e["failures"] = len(e["cases"])
                continue
            e["failures"] += len(group)
            e["cases"] += [show(v) for v in group["failure_case"].iloc[:SHOWN - len(e["cases"])]]
            e["rows"] += group["index"].iloc[:SHOWN - len(e["rows"])].astype(int).tolist()
        rows = records[at_row]
        if self.logged < LOGGED and len(rows):
            lines = rows.iloc[:LOGGED - self.logged]
            self.log.info("failures:\n%s", "\n".join(
                f"  row {r.index}: {r.column}: {r.check}: {show(r.failure_case, None)}" for r in lines.itertuples()))
            self.logged += len(lines)
        return np.unique(rows["index"].to_numpy(dtype=np.int64))

    def check_rows(self, total: int, bounds: dict | None) -> None:
        """The row count bounds, a table-wide check on the total."""
        low, high = (bounds or {}).get("min"), (bounds or {}).get("max")
        if (low is not None and total < low) or (high is not None and total > high):
            check = rows_label(bounds)
            self.entries[(TABLE, check, True)] = {"column": TABLE, "check": check, "table": True, "failures": 1,
                                                  "cases": [f"{total} rows"], "rows": []}

    def table_failures(self) -> list:
        return [e for e in self.entries.values() if e["table"]]

    def count(self, column: str, check: str) -> int:
        return sum(e["failures"] for e in self.entries.values()
                   if e["check"] == check and column in (e["column"], TABLE))

    def table(self, limit: int | None = 40) -> str:
        """The failures as an aligned table, the table-wide ones first."""
        head = ("column", "check", "failures", "first failure cases", "first rows")
        body = [(e["column"], e["check"], "table" if e["table"] else str(e["failures"]),
                 ", ".join(e["cases"]), ", ".join(map(str, e["rows"])) or "-")
                for e in sorted(self.entries.values(), key=lambda e: not e["table"])]
        body = [tuple(c if limit is None or len(c) <= limit else c[:limit - 3] + "..." for c in row) for row in body]
        widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
        return "\n".join("  " + " | ".join(c.rjust(w) if i == 2 else c.ljust(w) for i, (c, w) in
                                           enumerate(zip(row, widths, strict=True))).rstrip() for row in (head, *body))

    def log_summary(self, step: str, total: int) -> None:
        if self.entries:
            more = f"\n  (the first {LOGGED} failures are listed above)" if self.logged >= LOGGED else ""
            self.log.warning("step '%s': %d rows checked; failures by column and check:\n%s%s", step, total,
                             self.table(None), more)

    def message(self, step: str, bad: int, total: int, p: dict) -> str:
        table = self.table_failures()
        if not bad:
            head = f"step '{step}': the table ({total} rows) fails the schema as a whole"
        else:
            head = f"step '{step}': {bad} rows of {total} fail the schema"
            if p["on_fail"] == "quarantine" and not table:
                head += f" ({bad / total:.1%}), more than max_bad_fraction {p['max_bad_fraction']} allows"
            elif table:
                head += f", and the table fails {len(table)} table-wide check{'s' * (len(table) != 1)}"
        if table:
            fix = ("A table-wide failure (a missing or extra column, a dtype, the row count) cannot be quarantined: "
                   "fix the data upstream (e.g. a rule in a `clean` step) or the schema")
        else:
            fix = "Fix the data upstream (e.g. a rule in a `clean` step) or relax the schema" + (
                ", or raise `max_bad_fraction` if that many bad rows are expected" if p["on_fail"] == "quarantine"
                else ", or set `on_fail: quarantine` to set the failing rows aside")
        if any(e["check"].startswith("dtype(int") and "'float64'" in e["cases"] for e in table):
            fix += ". An int column with nulls reads as float64: declare it float64, or fill its nulls upstream"
        if any(e["check"].startswith("dtype(") and e["check"] != "dtype(str)" and (  # a bool with nulls is object
                {"'str'", "'string'"} & set(e["cases"]) or ("'object'" in e["cases"] and e["check"] != "dtype(bool)"))
               for e in table):
            fix += (". A column of text has the wrong dtype however many of its values would parse: convert it "
                    "upstream (a `coerce` rule in a `clean` step), or set `coerce: true` in the schema to convert "
                    "it here, where a value that does not convert fails its row")
        return f"{head}:\n{self.table()}\n{fix}. Every failure is listed in the step's build log"

    def as_json(self) -> list:
        return [{k: e[k] for k in ("column", "check", "failures", "cases", "rows")} for e in self.entries.values()]


def _free(name: str, taken) -> str:
    while name in taken:
        name = "_" + name
    return name


def _coerce(schema, df, coerced: list):
    """(the batch's rows whose values cast to their declared dtypes, cast; the failure records of the others,
    or None): a value that cannot be cast fails its row, so the rest are checked as the declared dtypes."""
    from pandera.errors import SchemaErrors

    if not coerced:
        return df, None
    try:
        return schema.coerce_dtype(df), None
    except SchemaErrors as e:
        records = canonical(e.failure_cases)
        try:
            return schema.coerce_dtype(df.drop(index=records["index"].dropna().unique())), records
        except SchemaErrors:  # a failure no row is blamed for: the column's dtype fails the table
            return df, records


def _passing(batch, keep, frame, coerced: list, kept: set | None):
    """The batch's passing rows (`keep`) as Arrow: the input's own columns, and with `coerce` the cast ones
    from `frame`, which holds those rows."""
    import pyarrow as pa

    table = pa.Table.from_batches([batch])
    if kept is not None:
        table = table.select([c for c in table.column_names if c in kept])
    if not keep.all():
        table = table.filter(pa.array(keep))
    for c in coerced:
        if c in table.column_names:
            table = table.set_column(table.column_names.index(c), c, pa.array(frame[c], from_pandas=True))
    return table


def _failing(batch, df, bad, records):
    """The batch's failing rows as they came in, with `failure` (the checks each failed) and `row`."""
    import pyarrow as pa

    table = pa.Table.from_batches([batch]).take(pa.array(bad - df.index.start, pa.int64()))
    rows = records[records["index"].notna()]
    text = (rows["column"] + ": " + rows["check"]).groupby(rows["index"].to_numpy()).agg("; ".join).to_dict()
    failure, row = _free("failure", table.column_names), _free("row", table.column_names)
    return (table.append_column(failure, pa.array([text[int(i)] for i in bad], pa.string()))
            .append_column(row, pa.array(bad, pa.int64())))


def _quarantine_schema(schema):
    import pyarrow as pa

    failure, row = _free("failure", schema.names), _free("row", schema.names)
    return schema.append(pa.field(failure, pa.string())).append(pa.field(row, pa.int64()))
