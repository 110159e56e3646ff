"""The validate builder: a table and a Pandera schema in; the same rows out, or a table of what failed.

Each failing case names the column and the check in the error, as the recipe writes them. Small
`batch_rows` make every test stream, so the cross-batch checks (uniqueness, row counts, dtypes) are
exercised everywhere, and one mixed case is compared with Pandera run on the whole DataFrame.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pandera")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from modelbuild.builders import _schema  # noqa: E402
from modelbuild.builders.base import BuildContext  # noqa: E402
from modelbuild.builders.validate import Validate  # noqa: E402
from modelbuild.errors import DATA_INVALID, BuildError, DataValidationError, RecipeError  # noqa: E402
from modelbuild.table import write_table  # noqa: E402

PEOPLE = pd.DataFrame({
    "id": [1, 2, 3, 4, 5, 6],
    "age": [34, 51, 17, 90, 42, 28],
    "email": ["ann@x.org", "bo@y.com", "cy@x.org", "di@z.net", "ed@y.com", "flo@x.org"],
    "state": ["CA", "NY", "TX", "CA", "NY", "TX"],
    "score": [0.5, 0.9, 0.1, 0.7, 0.3, 0.8],
})
TEXT = repr(str(pd.Series(["a"]).dtype))  # the dtype of a column of text: 'str' (pandas 3) or 'object'
SCHEMA = {"columns": {
    "id": {"dtype": "int64", "unique": True},
    "age": {"dtype": "int64", "checks": {"ge": 0, "le": 120}},
    "email": {"dtype": "str", "checks": {"str_matches": r"^[^@]+@[^@]+\.[a-z]+$"}},
    "state": {"dtype": "str", "checks": {"isin": ["CA", "NY", "TX"]}},
    "score": {"dtype": "float64", "checks": {"in_range": {"min": 0, "max": 1}}},
}}


def run(tmp_path, df, out="out", recipe_dir=None, **params):
    """Validate `df` (written as a table artifact) with these params; return the output folder."""
    source = tmp_path / f"{out}-in"
    if not source.exists():
        write_table(df, source)
    (tmp_path / out).mkdir()
    ctx = BuildContext(step="check", inputs={"table": source}, out=tmp_path / out,
                       params=Validate().normalise(params, file=str(tmp_path / "recipe.yaml"), step="check"),
                       recipe_dir=recipe_dir or tmp_path)
    Validate().build(ctx)
    return tmp_path / out


def failure(tmp_path, df, **params) -> str:
    with pytest.raises(DataValidationError) as e:
        run(tmp_path, df, **params)
    assert e.value.exit_code == DATA_INVALID
    return str(e.value)


def line_of(message: str, column: str, check: str) -> list[str]:
    """The cells of the error table's line for (column, check)."""
    for line in message.splitlines():
        cells = [c.strip() for c in line.split(" | ")]
        if cells[:2] == [column, check]:
            return cells
    raise AssertionError(f"no line for {column} | {check} in:\n{message}")


def with_columns(**columns) -> dict:
    return {"columns": {**SCHEMA["columns"], **columns}}


# ---- passing ----------------------------------------------------------------------------------------
def test_a_table_that_fits_passes_through_with_its_report(tmp_path):
    out = run(tmp_path, PEOPLE, schema={**SCHEMA, "unique": ["state", "age"], "rows": {"min": 1, "max": 10}},
              batch_rows=4)
    assert pq.read_table(out / "data.parquet").equals(pq.read_table(tmp_path / "out-in" / "data.parquet"))
    assert json.loads((out / "table.json").read_text())["rows"] == 6
    assert json.loads((out / "metrics.json").read_text()) == {"rows": 6, "failed_rows": 0}
    report = json.loads((out / "validation.json").read_text())
    assert report["rows"] == report["passed_rows"] == 6 and report["failed_rows"] == 0
    assert report["schema"]["columns"]["age"]["checks"] == {"ge": 0, "le": 120}
    checks = {(c["column"], c["check"]) for c in report["checks"]}
    assert {("age", "ge(0)"), ("id", "unique"), ("state, age", "unique"), ("(table)", "rows(min=1, max=10)"),
            ("email", "not null"), ("score", "dtype(float64)")} <= checks
    assert all(c["failures"] == 0 for c in report["checks"]) and report["failures"] == []
    assert not (out / "quarantine").exists()


def test_a_passing_table_is_its_input_file_not_a_rewrite(tmp_path):
    """What validate passes on unchanged is linked, not decoded and encoded again (benchmarks/ingest.py); a cast
    (coerce) or a dropped column (strict: filter) is a new table, written as such."""
    import os

    out = run(tmp_path, PEOPLE, schema=SCHEMA, batch_rows=4)
    for name in ("data.parquet", "stats.json", "rows.xxh"):
        assert os.path.samefile(out / name, tmp_path / "out-in" / name), name
    assert json.loads((out / "table.json").read_text()) == {
        "rows": 6, "columns": [{"name": f.name, "type": str(f.type)} for f in pa.Table.from_pandas(PEOPLE).schema
                               if not f.name.startswith("__")]}
    filtered = run(tmp_path, PEOPLE, out="filtered", schema={**SCHEMA, "strict": "filter"})
    coerced = run(tmp_path, PEOPLE, out="coerced", schema={**SCHEMA, "coerce": True})
    for folder in (filtered, coerced):
        assert not os.path.samefile(folder / "data.parquet", tmp_path / f"{folder.name}-in" / "data.parquet")


def test_the_recipe_schema_is_read_as_pandera_reads_its_own_yaml():
    """docs/data.md: the schema maps onto Pandera's serialised format but for in_range's and str_length's bound
    names, the recipe's check names (errors) and `rows`, which Pandera's reader would drop without a word."""
    import pandera.pandas as pandera

    recipe = {"columns": {"age": {"dtype": "int64", "checks": {"ge": 0, "in_range": {"min": 0, "max": 120}}},
                          "state": {"dtype": "str", "nullable": True, "checks": {"isin": ["CA", "NY"]}},
                          "email": {"dtype": "str", "unique": True, "checks": {"str_length": {"min": 3}}}},
              "strict": "filter", "unique": ["state", "email"], "coerce": True}
    pandera_yaml = textwrap.dedent("""\
        schema_type: dataframe
        columns:
          age: {dtype: int64, checks: {ge: 0, in_range: {min_value: 0, max_value: 120}},
                report_duplicates: exclude_first}
          state: {dtype: str, nullable: true, checks: {isin: [CA, NY]}, report_duplicates: exclude_first}
          email: {dtype: str, unique: true, checks: {str_length: {min_value: 3, max_value: null}},
                  report_duplicates: exclude_first}
        strict: filter
        unique: [state, email]
        coerce: true
        report_duplicates: exclude_first
        rows: {min: 1}
        """)
    ours, theirs = _schema.to_pandera(recipe), pandera.DataFrameSchema.from_yaml(pandera_yaml)
    assert [c.error for c in ours.columns["age"].checks] == ["ge(0)", "in_range(0, 120)"]  # as the recipe says
    assert [c.error for c in theirs.columns["age"].checks] == ["greater_than_or_equal_to(0)", "in_range(0, 120)"]
    for name, column in theirs.columns.items():
        for mine, check in zip(ours.columns[name].checks, column.checks, strict=True):
            check.error = mine.error
    assert ours == theirs


def test_an_empty_table_passes_a_schema_it_fits(tmp_path):
    out = run(tmp_path, PEOPLE.iloc[:0], schema=SCHEMA)
    assert pq.read_table(out / "data.parquet").num_rows == 0
    assert json.loads((out / "metrics.json").read_text()) == {"rows": 0, "failed_rows": 0}


# ---- each check failing -----------------------------------------------------------------------------
BAD = {  # name: (column -> new values, schema change, column, check, first failure case, first row)
    "ge": ({"age": [34, -1, 17, 90, 42, 28]}, {}, "age", "ge(0)", "-1", "1"),
    "le": ({"age": [34, 51, 17, 190, 42, 28]}, {}, "age", "le(120)", "190", "3"),
    "gt": ({}, {"age": {"checks": {"gt": 17}}}, "age", "gt(17)", "17", "2"),
    "lt": ({}, {"age": {"checks": {"lt": 90}}}, "age", "lt(90)", "90", "3"),
    "in_range": ({"score": [0.5, 1.5, 0.1, 0.7, 0.3, 0.8]}, {}, "score", "in_range(0, 1)", "1.5", "1"),
    "isin": ({"state": ["CA", "NY", "TX", "CA", "ZZ", "TX"]}, {}, "state", "isin(['CA', 'NY', 'TX'])", "'ZZ'", "4"),
    "notin": ({}, {"state": {"checks": {"notin": ["TX"]}}}, "state", "notin(['TX'])", "'TX', 'TX'", "2, 5"),
    "str_matches": ({"email": ["ann@x.org", "bo@y.com", "cy@x.org", "nope", "ed@y.com", "flo@x.org"]}, {},
                    "email", r"str_matches('^[^@]+@[^@]+\\.[a-z]+$')", "'nope'", "3"),
    "str_length": ({"state": ["CA", "NY", "Texas", "CA", "NY", "TX"]},
                   {"state": {"checks": {"str_length": {"min": 2, "max": 2}}}}, "state", "str_length(2, 2)",
                   "'Texas'", "2"),
    "nullable": ({"email": ["ann@x.org", None, "cy@x.org", "di@z.net", "ed@y.com", "flo@x.org"]}, {},
                 "email", "not null", "null", "1"),
    "unique": ({"id": [1, 2, 3, 4, 2, 1]}, {}, "id", "unique", "2, 1", "4, 5"),
}


@pytest.mark.parametrize("case", BAD)
def test_each_failing_check_is_named_with_its_column_cases_and_rows(tmp_path, case):
    values, change, column, check, cases, rows = BAD[case]
    df = PEOPLE.assign(**values)
    message = failure(tmp_path, df, schema=with_columns(**{c: {**SCHEMA["columns"][c], **v}
                                                           for c, v in change.items()}), batch_rows=2)
    n = len(rows.split(", "))
    assert message.startswith(f"step 'check': {n} rows of 6 fail the schema:\n")
    assert line_of(message, column, check) == [column, check, str(n), cases, rows]
    assert "on_fail: quarantine" in message and "clean" in message


def test_uniqueness_holds_across_batches_and_blames_the_later_rows(tmp_path):
    df = pd.DataFrame({"id": [1, 2, 3, 4, 5, 1, 7, 3, 3], "a": [1, 1, 2, 2, 1, 9, 1, 2, 5],
                       "b": ["x", "y", "x", "x", "y", "z", "x", "x", None]})
    schema = {"columns": {"id": {"unique": True}, "a": {}, "b": {"nullable": True}}, "unique": ["a", "b"]}
    message = failure(tmp_path, df, schema=schema, batch_rows=2)  # every repeat is in a later batch
    assert message.startswith("step 'check': 6 rows of 9 fail the schema")
    assert line_of(message, "id", "unique") == ["id", "unique", "3", "1, 3, 3", "5, 7, 8"]
    assert line_of(message, "a, b", "unique") == ["a, b", "unique", "4", "(2, 'x'), (1, 'y'), (1, 'x'), (2, 'x')",
                                                  "3, 4, 6, 7"]


def test_nulls_are_never_duplicates(tmp_path):
    df = pd.DataFrame({"id": [1.0, None, None, 2.0], "a": [None, None, 1, 1], "b": [None, None, None, None]})
    schema = {"columns": {"id": {"unique": True, "nullable": True}, "a": {"nullable": True},
                          "b": {"nullable": True}}, "unique": ["a", "b"]}
    message = failure(tmp_path, df, schema=schema, batch_rows=1)
    assert message.startswith("step 'check': 1 rows of 4 fail")  # (1, null) repeats; (null, null) does not
    assert line_of(message, "a, b", "unique")[2:] == ["1", "(1.0, null)", "3"]


def test_a_wrong_dtype_fails_the_table_as_a_whole(tmp_path):
    df = PEOPLE.assign(age=PEOPLE["age"].astype(float))
    message = failure(tmp_path, df, schema=SCHEMA, on_fail="quarantine", max_bad_fraction=1.0, batch_rows=4)
    assert message.startswith("step 'check': the table (6 rows) fails the schema as a whole:\n")
    assert line_of(message, "age", "dtype(int64)")[2:4] == ["table", "'float64'"]  # once, not once a batch
    assert "cannot be quarantined" in message


def test_an_int_column_with_a_null_in_one_batch_reads_as_float_in_every_batch(tmp_path):
    df = pd.DataFrame({"n": pa.array([1, 2, 3, None, 5, 6], pa.int64())})
    run(tmp_path, df.astype("Int64"), schema={"columns": {"n": {"dtype": "float64", "nullable": True}}},
        batch_rows=2)
    message = failure(tmp_path, df.astype("Int64"), out="int", schema={"columns": {"n": {"dtype": "int64"}}},
                      batch_rows=2)
    assert "An int column with nulls reads as float64" in message


def test_a_missing_column_and_an_extra_one_under_strict(tmp_path):
    df = PEOPLE.drop(columns=["score"]).assign(extra=1)
    message = failure(tmp_path, df, schema={**SCHEMA, "strict": True}, batch_rows=4)
    assert line_of(message, "score", "required")[2:4] == ["table", "'score'"]
    assert line_of(message, "extra", "strict")[2:4] == ["table", "'extra'"]


def test_a_missing_column_fails_an_empty_table_too(tmp_path):
    message = failure(tmp_path, PEOPLE.iloc[:0].drop(columns=["email"]), schema=SCHEMA)
    assert line_of(message, "email", "required")[2] == "table"


@pytest.mark.parametrize("bounds, label", [({"min": 10}, "rows(min=10)"), ({"max": 5}, "rows(max=5)")])
def test_row_count_bounds_count_the_whole_table(tmp_path, bounds, label):
    message = failure(tmp_path, PEOPLE, schema={**SCHEMA, "rows": bounds}, batch_rows=4)
    assert line_of(message, "(table)", label)[2:5] == ["table", "6 rows", "-"]


def test_every_failure_goes_to_the_log_and_the_table_there_is_whole(tmp_path, caplog):
    caplog.set_level("INFO", logger="modelbuild")
    df = PEOPLE.assign(age=[-1, -2, -3, -4, -5, -6])
    failure(tmp_path, df, schema=SCHEMA, batch_rows=4)
    assert all(f"row {i}: age: ge(0): {-i - 1}" in caplog.text for i in range(6))
    assert line_of(caplog.text, "age", "ge(0)")[2:] == ["6", "-1, -2, -3, -4, -5", "0, 1, 2, 3, 4"]


def test_coerce_casts_before_checking_and_the_output_has_the_dtypes(tmp_path):
    df = PEOPLE.assign(age=PEOPLE["age"].astype(str))
    out = run(tmp_path, df, schema={**SCHEMA, "coerce": True}, batch_rows=4)
    table = pq.read_table(out / "data.parquet")
    assert table.schema.field("age").type == pa.int64()
    assert table.column("age").to_pylist() == PEOPLE["age"].tolist()


def test_a_value_that_cannot_be_coerced_fails_its_row(tmp_path):
    df = PEOPLE.assign(age=["34", "51", "x", "90", "-1", "28"])
    message = failure(tmp_path, df, schema={**SCHEMA, "coerce": True}, batch_rows=4)
    assert message.startswith("step 'check': 2 rows of 6 fail the schema:\n")
    assert line_of(message, "age", "coerce(int64)")[2:] == ["1", "'x'", "2"]
    assert line_of(message, "age", "ge(0)")[2:] == ["1", "-1", "4"]  # the other rows are checked as int64
    assert "TypeError" not in message


def test_quarantine_sets_values_that_cannot_be_coerced_aside_and_the_rest_have_the_dtype(tmp_path):
    df = PEOPLE.assign(age=["34", "51", "x", "90", "-1", "28"])
    out = run(tmp_path, df, schema={**SCHEMA, "coerce": True}, on_fail="quarantine", max_bad_fraction=0.5,
              batch_rows=4)
    kept = pq.read_table(out / "data.parquet")
    assert kept.schema.field("age").type == pa.int64()
    assert kept.column("age").to_pylist() == [34, 51, 90, 28] and kept.column("id").to_pylist() == [1, 2, 4, 6]
    aside = pq.read_table(out / "quarantine" / "data.parquet").to_pylist()
    assert [(r["age"], r["failure"], r["row"]) for r in aside] == [("x", "age: coerce(int64)", 2),
                                                                   ("-1", "age: ge(0)", 4)]


@pytest.mark.parametrize("dtype", ["int64", "float64", "bool", "category", "datetime64[ns]"])
def test_a_column_of_text_with_another_dtype_fails_the_table_however_many_values_parse(tmp_path, dtype):
    df = PEOPLE.assign(age=["34", "51", "forty", "90", "42", "28"])
    schema = with_columns(age={"dtype": dtype})
    message = failure(tmp_path, df, schema=schema, on_fail="quarantine", max_bad_fraction=1.0, batch_rows=4)
    assert message.startswith("step 'check': the table (6 rows) fails the schema as a whole:\n")
    assert line_of(message, "age", f"dtype({dtype})")[2:] == ["table", TEXT, "-"]  # once, and the dtype
    assert "cannot be quarantined" in message and "set `coerce: true` in the schema" in message
    assert not (tmp_path / "out" / "quarantine" / "data.parquet").exists()


def test_a_check_on_a_column_whose_dtype_fails_is_not_reported_apart(tmp_path):
    df = PEOPLE.assign(age=["34", "51", "forty", "90", "42", "28"])
    message = failure(tmp_path, df, schema=SCHEMA, batch_rows=4)  # age: int64 with ge(0), le(120)
    assert line_of(message, "age", "dtype(int64)")[2:4] == ["table", TEXT]
    assert "ge(0)" not in message and "TypeError" not in message


@pytest.mark.parametrize("column, checks, check, dtype", [
    ("age", {"str_matches": "^[0-9]+$"}, "str_matches('^[0-9]+$')", "int64"),
    ("score", {"str_length": {"max": 3}}, "str_length(None, 3)", "float64"),
    ("age", {"ge": "a"}, "ge('a')", "int64"),
    ("state", {"lt": 5}, "lt(5)", TEXT.strip("'")),
])
def test_a_check_that_cannot_apply_to_its_column_is_a_build_error(tmp_path, column, checks, check, dtype):
    """With no dtype declared, only the data says the check cannot apply: an error in the schema, not the data."""
    with pytest.raises(BuildError) as e:
        run(tmp_path, PEOPLE, schema={"columns": {column: {"checks": checks}}}, batch_rows=4)
    assert not isinstance(e.value, DataValidationError)
    message = str(e.value)
    assert message.startswith(f"check {check} cannot apply to column '{column}', which is {dtype}: it raised ")
    assert "declaring the column's dtype" in message


def test_strict_filter_drops_the_columns_the_schema_does_not_name(tmp_path):
    out = run(tmp_path, PEOPLE.assign(extra="x"), schema={**SCHEMA, "strict": "filter"})
    assert pq.read_table(out / "data.parquet").column_names == list(PEOPLE.columns)


# ---- streaming gives whole-table results ------------------------------------------------------------
def test_streaming_finds_exactly_what_pandera_finds_on_the_whole_frame(tmp_path):
    """A mixed case, 7 rows a batch: failures per (row, column, check) and the passing rows must match."""
    n = 60
    df = pd.DataFrame({
        "id": [i if i % 17 else i // 2 for i in range(n)],  # repeats of earlier ids, across batches
        "age": pd.array([None if i in (5, 33) else (i * 7) % 130 - 5 for i in range(n)], "Int64"),
        "kind": [["a", "b", "c", "zz"][i % 4] if i % 11 else None for i in range(n)],
        "code": [f"K{i % 9}" if i % 13 else f"bad{i}" for i in range(n)],
        "x": [float(i % 5) for i in range(n)],
        "y": [i % 3 for i in range(n)],
    })
    schema = {"columns": {
        "id": {"dtype": "int64", "unique": True},
        "age": {"dtype": "float64", "nullable": True, "checks": {"ge": 0, "lt": 120}},
        "kind": {"dtype": "str", "nullable": True, "checks": {"isin": ["a", "b", "c"], "str_length": {"max": 1}}},
        "code": {"dtype": "str", "checks": {"str_matches": "^K[0-9]$"}},
        "x": {"dtype": "float64", "checks": {"in_range": {"min": 0, "max": 3}}},
        "y": {"dtype": "int64", "checks": {"notin": [7]}}},
        "unique": ["x", "y"]}
    out = run(tmp_path, df, schema=schema, on_fail="quarantine", max_bad_fraction=1.0, batch_rows=7)

    whole = pq.read_table(tmp_path / "out-in" / "data.parquet").to_pandas()
    try:
        _schema.to_pandera(schema).validate(whole, lazy=True)
        raise AssertionError("the mixed case must fail")
    except Exception as e:  # noqa: BLE001 - pandera's SchemaErrors
        expected = _schema.canonical(e.failure_cases)
    expected = {(int(r.index), r.column, r.check) for r in expected.itertuples()}

    aside = pq.read_table(out / "quarantine" / "data.parquet").to_pandas()
    found = {(row, *item.split(": ", 1)) for row, text in zip(aside["row"], aside["failure"], strict=True)
             for item in text.split("; ")}
    assert found == expected
    assert len({r for r, _, _ in expected}) > 15
    bad = sorted({r for r, _, _ in expected})
    assert aside["row"].tolist() == bad
    passed = pq.read_table(out / "data.parquet").to_pandas()
    assert passed.equals(whole.drop(index=bad).reset_index(drop=True))
    report = json.loads((out / "validation.json").read_text())
    assert (report["rows"], report["passed_rows"], report["failed_rows"]) == (n, n - len(bad), len(bad))


# ---- quarantine ---------------------------------------------------------------------------------------
def test_quarantine_sets_exactly_the_failing_rows_aside(tmp_path):
    df = pd.DataFrame({"id": range(10), "age": [5, -1, 7, 200, 9, 10, -3, 12, 13, 14]})
    schema = {"columns": {"id": {"dtype": "int64"}, "age": {"dtype": "int64", "checks": {"ge": 0, "le": 120}}}}
    out = run(tmp_path, df, schema=schema, on_fail="quarantine", max_bad_fraction=0.5, batch_rows=3)
    kept = pq.read_table(out / "data.parquet").to_pandas()
    assert kept["id"].tolist() == [0, 2, 4, 5, 7, 8, 9]  # in order
    aside = pq.read_table(out / "quarantine" / "data.parquet").to_pylist()
    assert aside == [{"id": 1, "age": -1, "failure": "age: ge(0)", "row": 1},
                     {"id": 3, "age": 200, "failure": "age: le(120)", "row": 3},
                     {"id": 6, "age": -3, "failure": "age: ge(0)", "row": 6}]
    assert json.loads((out / "quarantine" / "table.json").read_text())["rows"] == 3
    assert json.loads((out / "metrics.json").read_text()) == {"rows": 10, "failed_rows": 3}
    report = json.loads((out / "validation.json").read_text())
    assert (report["rows"], report["passed_rows"], report["failed_rows"]) == (10, 7, 3)
    assert {"column": "age", "check": "ge(0)", "failures": 2} in report["checks"]


def test_quarantine_with_no_failures_writes_an_empty_quarantine(tmp_path):
    out = run(tmp_path, PEOPLE, schema=SCHEMA, on_fail="quarantine")
    aside = pq.read_table(out / "quarantine" / "data.parquet")
    assert aside.num_rows == 0 and aside.column_names == [*PEOPLE.columns, "failure", "row"]


def test_quarantine_fails_above_max_bad_fraction(tmp_path):
    df = PEOPLE.assign(age=[34, -1, 17, 90, -2, 28])
    message = failure(tmp_path, df, schema=SCHEMA, on_fail="quarantine", max_bad_fraction=0.2)
    assert message.startswith("step 'check': 2 rows of 6 fail the schema (33.3%), more than max_bad_fraction 0.2")
    assert line_of(message, "age", "ge(0)")[2:] == ["2", "-1, -2", "1, 4"]
    assert "raise `max_bad_fraction`" in message
    run(tmp_path, df, out="ok", schema=SCHEMA, on_fail="quarantine", max_bad_fraction=0.34)


def test_the_default_max_bad_fraction_is_one_percent(tmp_path):
    df = pd.DataFrame({"age": [-1] + [1] * 99})
    schema = {"columns": {"age": {"checks": {"ge": 0}}}}
    run(tmp_path, df, schema=schema, on_fail="quarantine")
    failure(tmp_path, pd.DataFrame({"age": [-1, -1] + [1] * 98}), out="two", schema=schema, on_fail="quarantine")


# ---- a DataFrameModel from the project ---------------------------------------------------------------
MODEL = """
import pandera.pandas as pa
from pandera.typing import Series


class People(pa.DataFrameModel):
    id: Series[int] = pa.Field(unique=True)
    age: Series[int] = pa.Field(ge=0)
    state: Series[str]

    @pa.check("state")
    def two_capitals(cls, state: Series[str]) -> Series[bool]:
        return state.str.fullmatch("[A-Z]{2}")

    @pa.dataframe_check
    def adults_have_ids_below_100(cls, df):
        return (df["age"] < 18) | (df["id"] < 100)
"""


def test_a_dataframe_model_with_a_custom_check(tmp_path):
    (tmp_path / "people_schema.py").write_text(textwrap.dedent(MODEL))
    out = run(tmp_path, PEOPLE, model="people_schema:People", batch_rows=4)
    assert json.loads((out / "validation.json").read_text())["schema"] == {"model": "people_schema:People"}
    df = PEOPLE.assign(state=["CA", "ny", "TX", "CA", "NY", "Texas"], id=[1, 2, 300, 1, 500, 6])
    message = failure(tmp_path, df, out="bad", model="people_schema:People", batch_rows=4)
    assert message.startswith("step 'check': 4 rows of 6 fail the schema")
    assert line_of(message, "state", "two_capitals")[2:] == ["2", "'ny', 'Texas'", "1, 5"]
    assert line_of(message, "id", "unique")[2:] == ["1", "1", "3"]
    # a dataframe-wide check fails once per row (row 2 is 17, so its id may be 300), with the row's values
    cells = line_of(message, "id, age, email, state, score", "adults_have_ids_below_100")
    assert cells[2] == "1" and cells[3].startswith("(500, 42, 'ed@y.com'") and cells[4] == "4"


def test_a_models_source_is_in_the_key(tmp_path):
    (tmp_path / "people_schema.py").write_text(textwrap.dedent(MODEL))
    params = Validate().normalise({"model": "people_schema:People"}, file=str(tmp_path / "r.yaml"), step="check")
    before = Validate().key_extras(params, tmp_path)
    (tmp_path / "people_schema.py").write_text(textwrap.dedent(MODEL).replace("ge=0", "ge=1"))
    assert Validate().key_extras(params, tmp_path) != before
    assert Validate().key_extras(Validate().normalise({"schema": SCHEMA}, file=None, step="s"), tmp_path) == {}


def test_a_class_that_is_not_a_model_is_named(tmp_path):
    (tmp_path / "people_schema.py").write_text("class People:\n    pass\n")
    with pytest.raises(Exception, match="is not a pandera DataFrameModel"):
        run(tmp_path, PEOPLE, model="people_schema:People")


# ---- the recipe's schema, checked before anything runs ------------------------------------------------
BAD_RECIPES = {  # params -> (key named, words in the message)
    "unknown top key": ({"schema": {**SCHEMA, "strikt": True}}, "params.schema.strikt", "did you mean 'strict'"),
    "unknown column key": ({"schema": with_columns(age={"dtype": "int64", "nulable": True})},
                           "params.schema.columns.age.nulable", "did you mean 'nullable'"),
    "unknown dtype": ({"schema": with_columns(state={"dtype": "string"})}, "params.schema.columns.state.dtype",
                      "did you mean 'str'"),
    "unknown check": ({"schema": with_columns(age={"checks": {"greater_equal": 0}})},
                      "params.schema.columns.age.checks.greater_equal", "it takes: ge, le"),
    "check alias": ({"schema": with_columns(age={"checks": {"greater_than": 0}})},
                    "params.schema.columns.age.checks.greater_than", "unknown check key 'greater_than' "
                    "(write it as gt); it takes: ge, le"),
    "check alias with a value": ({"schema": with_columns(state={"checks": {"equal_to": "CA"}})},
                                 "params.schema.columns.state.checks.equal_to", "(write it as isin: [value])"),
    "unique as a check": ({"schema": with_columns(id={"checks": {"unique": True}})},
                          "params.schema.columns.id.checks.unique", "`unique: true` beside `checks:`"),
    "str check on a number": ({"schema": with_columns(age={"dtype": "int64", "checks": {"str_matches": "^1"}})},
                              "params.schema.columns.age.checks.str_matches",
                              "str_matches checks text, and the column's dtype is int64"),
    "str_length on a date": ({"schema": {"columns": {"d": {"dtype": "datetime64[ns]",
                                                           "checks": {"str_length": {"max": 3}}}}}},
                             "params.schema.columns.d.checks.str_length", "the column's dtype is datetime64[ns]"),
    "text bound on a number": ({"schema": with_columns(age={"dtype": "float64", "checks": {"ge": "a"}})},
                               "params.schema.columns.age.checks.ge", "the column is float64, so ge takes a number, got 'a'"),
    "number bound on text": ({"schema": with_columns(state={"dtype": "str", "checks": {"in_range": {
        "min": "A", "max": 9}}})}, "params.schema.columns.state.checks.in_range",
                             "so in_range compares text and takes a string (quote it: '9'), got 9"),
    "bound on a category": ({"schema": with_columns(state={"dtype": "category", "checks": {"le": "TX"}})},
                            "params.schema.columns.state.checks.le", "the column is category, whose values have no order, so le cannot"),
    "number bound on a date": ({"schema": {"columns": {"d": {"dtype": "datetime64[ns]", "checks": {"gt": 0}}}}},
                               "params.schema.columns.d.checks.gt", "takes a date or time as a string"),
    "bound not a number": ({"schema": with_columns(age={"checks": {"ge": [0]}})},
                           "params.schema.columns.age.checks.ge", "takes a number"),
    "isin not a list": ({"schema": with_columns(state={"checks": {"isin": "CA"}}) },
                        "params.schema.columns.state.checks.isin", "non-empty list"),
    "bad regex": ({"schema": with_columns(email={"checks": {"str_matches": "(["}})},
                  "params.schema.columns.email.checks.str_matches", "invalid regular expression"),
    "in_range half": ({"schema": with_columns(score={"checks": {"in_range": {"min": 0}}})},
                      "params.schema.columns.score.checks.in_range", "both min and max"),
    "nullable not bool": ({"schema": with_columns(age={"nullable": "yes"})}, "params.schema.columns.age.nullable",
                          "true or false"),
    "column not a mapping": ({"schema": {"columns": {"age": "int64"}}}, "params.schema.columns.age",
                             "must be a mapping"),
    "no columns": ({"schema": {"strict": True}}, "params.schema.columns", "needs `columns:`"),
    "strict": ({"schema": {**SCHEMA, "strict": "yes"}}, "params.schema.strict", "true, false or filter"),
    "unique": ({"schema": {**SCHEMA, "unique": "id"}}, "params.schema.unique", "list of column names"),
    "rows": ({"schema": {**SCHEMA, "rows": {"min": 5, "max": 2}}}, "params.schema.rows", "min 5 is above max 2"),
    "both": ({"schema": SCHEMA, "model": "m:M"}, "params.schema", "exactly one of"),
    "neither": ({}, "params.model", "exactly one of"),
    "model spelling": ({"model": "people_schema.People"}, "params.model", "expected 'module:Class'"),
    "model missing": ({"model": "nowhere:People"}, "params.model", "cannot find module 'nowhere'"),
    "fraction": ({"schema": SCHEMA, "max_bad_fraction": 2}, "params.max_bad_fraction", "from 0 to 1"),
    "on_fail": ({"schema": SCHEMA, "on_fail": "drop"}, "params.on_fail", "'error', 'quarantine'"),
}


@pytest.mark.parametrize("case", BAD_RECIPES)
def test_a_bad_recipe_schema_names_the_key(tmp_path, case):
    params, key, words = BAD_RECIPES[case]
    with pytest.raises(RecipeError) as e:
        Validate().normalise(params, file=str(tmp_path / "recipe.yaml"), step="check")
    assert e.value.key == key and e.value.step == "check"
    assert words in str(e.value)


def test_checking_a_schema_imports_neither_pandas_nor_pandera():
    code = ("import sys; from modelbuild.builders.validate import Validate; "
            f"Validate().normalise({{'schema': {SCHEMA!r}}}, file=None, step='s'); "
            "print(sorted(m for m in ('pandas', 'pandera', 'pyarrow', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_a_models_per_file_code_record_hashes_to_its_key(tmp_path):
    """`diff` names the schema model's changed files from this record only where it hashes to the key's value."""
    from modelbuild.codehash import code_record, files_hash

    (tmp_path / "people_schema.py").write_text(textwrap.dedent(MODEL))
    params = Validate().normalise({"model": "people_schema:People"}, file=str(tmp_path / "r.yaml"), step="s")
    path = Validate().key_code(params, tmp_path)["extras.model"]
    record = code_record(path, tmp_path)
    assert list(record["files"]) == ["people_schema.py"] and "class People" in record["sources"]["people_schema.py"]
    assert files_hash(record["files"]) == Validate().key_extras(params, tmp_path)["model"]


# ---- the Arrow prescreen: a passing table skips pandas and Pandera ---------------------------------------
def _people(**changes):
    df = PEOPLE.copy()
    for column, values in changes.items():
        df[column] = values
    return df


LIGHT = {"columns": {k: v for k, v in SCHEMA["columns"].items() if k != "email"}}  # str_matches is Pandera's
NAN = float("nan")
PRESCREEN = {  # case: (table, schema, whether the prescreen proves it passes)
    "fits": (PEOPLE, LIGHT, True),
    "int with a null": (_people(id=[1, 2, None, 4, 5, 6]), LIGHT, False),
    "NaN, not nullable": (_people(score=[0.5, NAN, 0.1, 0.7, 0.3, 0.8]), LIGHT, False),
    "NaN, nullable, bounded": (_people(score=[0.5, NAN, 0.1, 0.7, 0.3, 0.8]),
                               {"columns": {"score": {"dtype": "float64", "nullable": True,
                                                      "checks": {"in_range": {"min": 0, "max": 1}}}}}, True),
    "out of range": (_people(age=[34, 51, 17, 150, 42, 28]), LIGHT, False),
    "isin, a null": (_people(state=["CA", None, "TX", "CA", "NY", "TX"]),
                     {"columns": {"state": {"dtype": "str", "nullable": True, "checks": {"isin": ["CA", "NY", "TX"]}}}},
                     True),
    "isin, a miss": (_people(state=["CA", "WA", "TX", "CA", "NY", "TX"]), LIGHT, False),
    "notin": (PEOPLE, {"columns": {"age": {"checks": {"notin": [18, 19]}}}}, True),
    "a duplicate": (_people(id=[1, 2, 3, 4, 5, 1]), LIGHT, False),
    "unique with NaN twice": (_people(score=[0.5, NAN, 0.1, NAN, 0.3, 0.8]),
                              {"columns": {"score": {"nullable": True, "unique": True}}}, True),
    "a repeated combination": (PEOPLE, {**LIGHT, "unique": ["state", "email"]}, True),
    "a repeated pair": (_people(age=[34, 51, 17, 34, 42, 28]), {**LIGHT, "unique": ["state", "age"]}, False),
    "strict, an extra column": (PEOPLE, {**LIGHT, "strict": True}, False),
    "strict, every column": (PEOPLE, {"columns": {**LIGHT["columns"], "email": None}, "strict": True}, True),
    "a missing column": (PEOPLE, {"columns": {**LIGHT["columns"], "zip": {"dtype": "str"}}}, False),
    "a missing optional column": (PEOPLE, {"columns": {**LIGHT["columns"], "zip": {"required": False}}}, True),
    "too many rows": (PEOPLE, {**LIGHT, "rows": {"max": 5}}, False),
    "a float bound on ints": (PEOPLE, {"columns": {"age": {"dtype": "int64", "checks": {"gt": 16.5}}}}, True),
    "text declared int": (PEOPLE, {"columns": {"state": {"dtype": "int64"}}}, False),
    "float declared int": (PEOPLE, {"columns": {"score": {"dtype": "int64"}}}, False),
    "str_matches": (PEOPLE, SCHEMA, False),
    "a float bound, a value under it": (PEOPLE, {"columns": {"score": {"checks": {"gt": 0.15}}}}, False),
    "past 2**53, against a float bound": (_people(id=[1, 2, 3, 4, 5, 2**53 + 1]),
                                          {"columns": {"id": {"checks": {"gt": float(2**53)}}}}, False),
    "past 2**53 with a null, notin": (_people(id=pd.array([None, 2, 3, 4, 5, 2**53 + 1], "Int64")),
                                      {"columns": {"id": {"nullable": True, "checks": {"notin": [2**53]}}}}, False),
    "a bound on float32": (_people(score=PEOPLE["score"].astype("float32")),
                           {"columns": {"score": {"checks": {"le": 1}}}}, False),
}


@pytest.mark.parametrize("case", PRESCREEN)
def test_the_prescreen_passes_a_table_only_where_pandera_does(tmp_path, case):
    """The prescreen says "passes" only where validating with Pandera (every failing row counted: quarantine
    with no bad rows allowed) passes too, and says it for the rules it knows; what it cannot show goes to
    Pandera, which passes or fails the table as before."""
    from modelbuild.builders import _prescreen

    df, schema, proved = PRESCREEN[case]
    write_table(df, tmp_path / "out-in")
    assert _prescreen.passes(schema, tmp_path / "out-in" / "data.parquet") is proved
    try:
        run(tmp_path, df, schema=schema, on_fail="quarantine", max_bad_fraction=0, batch_rows=4)
        pandera_passes = True
    except DataValidationError:
        pandera_passes = False
    assert pandera_passes if proved else pandera_passes is (case in ("str_matches", "a bound on float32"))
    if proved:  # and what validate writes is what the Pandera path writes
        out = run(tmp_path, df, out="fast", schema=schema, batch_rows=4)
        slow = json.loads((tmp_path / "out" / "validation.json").read_text())
        fast = json.loads((out / "validation.json").read_text())
        assert {**fast, "on_fail": "quarantine"} == slow
