"""The clean builder: each rule with the values a user would check, streaming over several batches, the report."""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys
from datetime import datetime

import pytest

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")
pytest.importorskip("ftfy")

from modelbuild.builders import clean  # noqa: E402
from modelbuild.builders.base import BuildContext  # noqa: E402
from modelbuild.builders.clean import Clean  # noqa: E402
from modelbuild.errors import BuildError, RecipeError  # noqa: E402
from modelbuild.table import read_table, write_table  # noqa: E402

ADULT = pd.DataFrame({
    "age": [39, 50, 38, 53, 16, 38],
    "workclass": [" State-gov", "?", "Private ", "Private", "Private", "Private "],
    "hours_per_week": [40, 13, 99, 40, 20, 99],
    "income": ["<=50K", ">50K.", "<=50K.", ">50K", "<=50K", "<=50K."],
})


def run(tmp_path, data, out="out", **params):
    """Clean `data` as ingest would have written it; return (output DataFrame, clean_report.json, ctx)."""
    source = tmp_path / f"{out}-in"
    source.mkdir()
    table = pa.Table.from_pandas(data, preserve_index=False)
    write_table(table.cast(pa.schema([(f.name, pa.string() if f.type == pa.large_string() else f.type)
                                      for f in table.schema])), source)
    (tmp_path / out).mkdir()
    ctx = BuildContext(step="clean", inputs={"table": source}, out=tmp_path / out, recipe_dir=tmp_path,
                       params=Clean().normalise(params, file="r.yaml", step="clean"))
    Clean().build(ctx)
    report = json.loads((tmp_path / out / "clean_report.json").read_text())
    return Rows(read_table(tmp_path / out)), report, ctx


class Rows:
    """The output table, read the way a test wants it: `rows["column"]` is a list (None for null)."""

    def __init__(self, table):
        self.table, self.columns = table, table.column_names

    def __getitem__(self, column):
        return self.table.column(column).to_pylist()

    def __len__(self):
        return self.table.num_rows

    def records(self):
        return self.table.to_pylist()


def rule(report, name):
    return next(r for r in report["rules"] if r["rule"] == name)


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of 4 rows, so a dozen-row table spans several and whole-table rules are really tested."""
    monkeypatch.setattr(clean, "BATCH_ROWS", 4)


def test_adult_markers_spaces_and_labels(tmp_path):
    """The classic Adult clean-up: stray spaces, '?' for missing, '>50K.' labels from the test file."""
    df, report, _ = run(tmp_path, ADULT, na_values=["?"], value_map={"income": {">50K.": ">50K", "<=50K.": "<=50K"}},
                        missing={"workclass": "drop"})
    assert df["workclass"] == ["State-gov", "Private", "Private", "Private", "Private"]
    assert df["income"] == ["<=50K", "<=50K", ">50K", "<=50K", "<=50K"]
    assert rule(report, "strip_whitespace")["values_changed"] == {"workclass": 3, "income": 0}
    assert rule(report, "na_values")["values_nulled"] == {"workclass": 1, "income": 0}
    assert rule(report, "value_map")["values_changed"] == {"income": 3}
    assert rule(report, "missing")["rows_dropped_by"] == {"workclass": 1}


def test_strip_whitespace_can_be_limited_or_turned_off(tmp_path):
    data = pd.DataFrame({"a": [" x "], "b": [" y "]})
    df, _, _ = run(tmp_path, data, strip_whitespace=["a"])
    assert df.records() == [{"a": "x", "b": " y "}]
    df, report, _ = run(tmp_path, data, out="off", strip_whitespace=False)
    assert df.records() == [{"a": " x ", "b": " y "}]
    assert "strip_whitespace" not in [r["rule"] for r in report["rules"]]


def test_mojibake_is_repaired_and_nothing_else(tmp_path):
    data = pd.DataFrame({"name": ["cafÃ©", "donâ€™t", "schÃ¶n", "“quoted”", "ＡＢＣ", "plain", None]})
    df, report, _ = run(tmp_path, data, fix_mojibake=True)
    assert df["name"] == ["café", "don’t", "schön", "“quoted”", "ＡＢＣ", "plain", None]
    assert rule(report, "fix_mojibake")["values_changed"] == {"name": 3}


def test_unicode_forms_and_lowercase(tmp_path):
    data = pd.DataFrame({"word": ["cafe\u0301", "ﬁne"], "tag": ["ABC", "Dé"]})
    df, report, _ = run(tmp_path, data, lowercase=["tag"])
    assert df["word"] == ["caf\u00e9", "ﬁne"]  # NFC composes, and leaves the ligature
    assert df["tag"] == ["abc", "dé"]
    assert rule(report, "normalize_unicode") == {"rule": "normalize_unicode", "form": "NFC",
                                                 "values_changed": {"word": 1, "tag": 0}}
    df, _, _ = run(tmp_path, data, out="nfkc", normalize_unicode="NFKC")
    assert df["word"] == ["caf\u00e9", "fine"]
    df, _, _ = run(tmp_path, data, out="none", normalize_unicode=None)
    assert df["word"] == ["cafe\u0301", "ﬁne"]


def test_unicode_normalisation_skips_ascii_batches_only(tmp_path, small_batches):
    """A batch of ASCII text is left as is (every normal form of ASCII is itself); the others are normalised."""
    words = ["plain", "text ", None, "ascii", "cafe\u0301", "ok", "ﬁne", "x", "y", "z", None, "Ａ"]
    df, report, _ = run(tmp_path, pd.DataFrame({"w": words}), normalize_unicode="NFKC")
    assert df["w"] == ["plain", "text", None, "ascii", "caf\u00e9", "ok", "fine", "x", "y", "z", None, "A"]
    assert rule(report, "normalize_unicode")["values_changed"] == {"w": 3}
    assert clean._ascii(pa.array(["a", None, "b"])) and not clean._ascii(pa.array(["a", "é"]))
    assert clean._ascii(pa.array(["é", "a"]).slice(1)) and not clean._ascii(pa.array(["é", "a"], pa.large_string()))


def test_stripping_skips_only_ascii_text_with_nothing_to_strip():
    """trim_whitespace copies nothing where no ASCII value starts or ends with whitespace, and otherwise strips
    exactly as pc.utf8_trim_whitespace does (sliced arrays, nulls, large strings, Unicode spaces included)."""
    from modelbuild.builders._strings import trim_whitespace

    pc = pytest.importorskip("pyarrow.compute")
    cases = [["a b", None, "c", ""], ["a", " b"], ["a", "b\t"], ["a\x1c", "b"], ["\u00a0a", "b"], ["é", "b "],
             ["é", "b"], [None, None], []]
    for values in cases:
        for array in (pa.array(values, pa.string()), pa.array(values, pa.large_string()),
                      pa.chunked_array([pa.array(["x "] + values, pa.string()).slice(1)], pa.string())):
            trimmed = trim_whitespace(array)
            assert trimmed.to_pylist() == pc.utf8_trim_whitespace(array).to_pylist(), values
            spaced = any(v != v.strip() or v != v.strip("\x1c\x1d\x1e\x1f") for v in values if v)
            assert (trimmed is array) is (not spaced and all(v.isascii() for v in values if v)), values


def test_rename_columns_and_drop_columns(tmp_path):
    data = pd.DataFrame({"Age": [1], "Name": ["a"], "junk": [0], "x": [2]})
    df, report, _ = run(tmp_path, data, rename={"Age": "age", "Name": "name"}, columns=["name", "age", "x"],
                        drop_columns=["x"], coerce={"age": "float"})
    assert list(df.columns) == ["name", "age"] and df["age"] == [1.0]
    assert [r["rule"] for r in report["rules"]][:3] == ["rename", "columns", "drop_columns"]


def test_value_map_to_numbers_changes_the_column_type(tmp_path):
    data = pd.DataFrame({"income": ["<=50K", ">50K", None]})
    df, _, _ = run(tmp_path, data, value_map={"income": {">50K": 1, "<=50K": 0}})
    assert df["income"] == [0, 1, None]
    assert str(read_table(tmp_path / "out").schema.field("income").type) == "int64"
    with pytest.raises(BuildError, match=r"'unknown' \(row 1, counting from 0\).*not in its `value_map`"):
        run(tmp_path, pd.DataFrame({"income": ["<=50K", "unknown"]}), out="bad",
            value_map={"income": {">50K": 1, "<=50K": 0}})


def test_value_map_keys_are_read_in_the_column_type(tmp_path):
    df, _, _ = run(tmp_path, pd.DataFrame({"code": [1, 2, 3]}), value_map={"code": {"1": 10, 2: 20}})
    assert df["code"] == [10, 20, 3]


def test_coerce_types(tmp_path):
    data = pd.DataFrame({"i": ["1", "2"], "f": ["1.5", "1e3"], "b": ["true", "False"], "d": ["2024-01-02", None],
                         "e": ["02/01/2024", "31/12/2023"], "c": ["x", "y"], "s": [1, 2]})
    df, report, _ = run(tmp_path, data, coerce={"i": "int", "f": "float", "b": "bool", "d": "datetime",
                                                "e": "datetime:%d/%m/%Y", "c": "category", "s": "str"})
    types = {f.name: str(f.type) for f in read_table(tmp_path / "out").schema}
    assert types == {"i": "int64", "f": "double", "b": "bool", "d": "timestamp[us]", "e": "timestamp[us]",
                     "c": "dictionary<values=string, indices=int32, ordered=0>", "s": "string"}
    assert df["i"] == [1, 2] and df["f"] == [1.5, 1000.0] and df["b"] == [True, False]
    assert df["e"] == [datetime(2024, 1, 2), datetime(2023, 12, 31)]
    assert df["s"] == ["1", "2"]
    assert rule(report, "coerce")["values_nulled"] == dict.fromkeys("ifbdecs", 0)


def test_coerce_error_names_column_value_and_row(tmp_path, small_batches):
    data = pd.DataFrame({"age": [str(n) for n in range(9)] + ["forty"]})
    with pytest.raises(BuildError, match=r"cannot make 'forty' in column 'age' \(row 9, counting from 0\) a int"):
        run(tmp_path, data, coerce={"age": "int"})


def test_coerce_errors_null_counts_the_bad_values(tmp_path):
    data = pd.DataFrame({"age": ["39", "forty", "2.5", None], "when": ["2024-01-02", "yesterday", None, None]})
    df, report, _ = run(tmp_path, data, coerce={"age": "int", "when": "datetime"}, errors="null")
    assert df["age"] == [39, None, None, None]
    assert rule(report, "coerce")["values_nulled"] == {"age": 2, "when": 1}


def test_coerce_nan_is_missing_not_a_bad_value(tmp_path):
    df, report, _ = run(tmp_path, pd.DataFrame({"n": [1.0, float("nan"), None, 3.0]}), coerce={"n": "int"})
    assert df["n"] == [1, None, None, 3] and rule(report, "coerce")["values_nulled"] == {"n": 0}


def test_filter_expressions(tmp_path):
    df, report, _ = run(tmp_path, ADULT, filter=["age >= 17", "hours_per_week < 99"])
    assert df["age"] == [39, 50, 53]
    assert rule(report, "filter") == {"rule": "filter", "rows_dropped": 3,
                                      "rows_dropped_by": {"age >= 17": 1, "hours_per_week < 99": 2}}


def test_filter_on_missing_values_drops_the_row(tmp_path):
    df, _, _ = run(tmp_path, pd.DataFrame({"x": [1.0, None, 3.0], "s": ["a", None, "b"]}), filter=["x > 0"])
    assert df["x"] == [1.0, 3.0]


@pytest.mark.parametrize("expression, match", [
    ("age >=", r"`filter` expression 'age >=' failed: SyntaxError"),
    ("agee > 3", r"'agee'.*did you mean 'age'.*the columns are: age, workclass"),
    ("age + 1", r"gives int64\[pyarrow\] values, not true or false"),
])
def test_bad_filter_expression_is_named(tmp_path, expression, match):
    with pytest.raises(BuildError, match=match):
        run(tmp_path, ADULT, filter=[expression])


def test_median_is_over_the_whole_column(tmp_path, small_batches):
    """Batches of 4: per-batch medians would be 2.5, 6.5 and 100; the column's median is 6."""
    values = [1, 2, 3, 4, 5, 6, 7, 8, 100, 100, 100, None]
    data = pd.DataFrame({"x": pd.array(values, "Int64"), "y": [float(v or 0) for v in values]})
    df, report, _ = run(tmp_path, data, missing={"x": "median"})
    assert df["x"][-1] == 6 and str(read_table(tmp_path / "out").schema.field("x").type) == "int64"
    assert rule(report, "missing")["fill_values"] == {"x": 6} and rule(report, "missing")["values_filled"] == {"x": 1}
    df, report, _ = run(tmp_path, data, out="mean", missing={"x": "mean"})
    assert rule(report, "missing")["fill_values"] == {"x": round(336 / 11)}


def test_mean_mode_fill_and_default(tmp_path, small_batches):
    data = pd.DataFrame({"f": [1.0, None, 2.0, float("nan"), 4.5], "c": ["a", "b", None, "b", "a"],
                         "k": ["x", None, None, None, "y"], "n": pd.array([None, 1, 2, 3, 4], "Int64")})
    df, report, _ = run(tmp_path, data, missing={"f": "mean", "c": "mode", "k": {"fill": "unknown"}},
                        missing_default="median")
    assert df["f"] == [1.0, 2.5, 2.0, 2.5, 4.5]
    assert df["c"] == ["a", "b", "a", "b", "a"]  # a tie between 'a' and 'b' goes to the smallest
    assert df["k"] == ["x", "unknown", "unknown", "unknown", "y"]
    assert df["n"][0] == 2  # median of 1..4 is 2.5, rounded half to even
    assert rule(report, "missing")["values_filled"] == {"f": 2, "c": 1, "k": 3, "n": 1}


def test_median_skips_rows_an_earlier_rule_dropped(tmp_path, small_batches):
    data = pd.DataFrame({"age": [10, 20, 30, 40, 1000, 1000, 50], "h": [1.0, None, 3.0, 4.0, 99.0, 99.0, 5.0]})
    _, report, _ = run(tmp_path, data, filter=["age < 100"], missing={"h": "median"})
    assert rule(report, "missing")["fill_values"] == {"h": 3.5}


def test_missing_default_with_an_explicit_keep(tmp_path):
    data = pd.DataFrame({"a": [1.0, None, 3.0], "b": ["x", "y", None], "note": [None, "n", None]})
    df, report, _ = run(tmp_path, data, missing={"note": "keep"}, missing_default="drop")
    assert df.records() == [{"a": 1.0, "b": "x", "note": None}]
    assert rule(report, "missing")["rows_dropped_by"] == {"a": 1, "b": 1}


def test_statistics_pass_reads_only_the_columns_it_needs(tmp_path, monkeypatch, small_batches):
    read = []
    real = clean.iter_batches

    def spy(src, rows, columns=None):
        read.append(columns)
        return real(src, rows, columns=columns)

    monkeypatch.setattr(clean, "iter_batches", spy)
    data = pd.DataFrame({"x": [1.0, None, 5.0] * 3, "big_text": ["t"] * 9, "y": [None, "a", "b"] * 3})
    df, _, _ = run(tmp_path, data, missing={"x": "median", "y": "drop"})
    assert read == [["x", "y"], ["x", "big_text", "y"]]  # the first pass skips big_text
    assert df["x"] == [5.0] * 6  # the rows with x = 1 went with y's nulls, so the median is 5, not 3


def test_missing_mean_of_text_is_an_error(tmp_path):
    with pytest.raises(BuildError, match=r"mean of column 'workclass', which is string; use mode"):
        run(tmp_path, ADULT, missing={"workclass": "mean"})


def test_drop_empty_rows(tmp_path):
    data = pd.DataFrame({"a": ["x", "?", None], "b": [1.0, float("nan"), 2.0]})
    df, report, _ = run(tmp_path, data, na_values=["?"], drop_empty=True)
    assert len(df) == 2 and rule(report, "drop_empty")["rows_dropped"] == 1


def test_duplicates_across_batches(tmp_path, small_batches):
    data = pd.DataFrame({"id": [1, 2, 3, 4, 5, 1, 2, 6, 1, None, None],
                         "v": ["a", "b", "c", "d", "e", "a", "x", "f", "a", None, None]})
    df, report, _ = run(tmp_path, data, drop_duplicates=True)
    assert len(df) == 8 and rule(report, "drop_duplicates")["rows_dropped"] == 3  # (1, a) twice, (null, null) once
    df, _, _ = run(tmp_path, data, out="subset", drop_duplicates={"subset": ["id"]})
    assert df["v"] == ["a", "b", "c", "d", "e", "f", None]
    df, _, _ = run(tmp_path, data, out="last", drop_duplicates={"subset": ["id"], "keep": "last"})
    assert df["v"] == ["c", "d", "e", "x", "f", "a", None]


@pytest.mark.parametrize("keep", ["first", "last"])
def test_duplicates_found_every_way_agree(tmp_path, monkeypatch, small_batches, keep):
    """keep: first looks batches up in the fingerprints seen so far, or sorts them all in a pass of its own
    (when that pass is cheap); many repeats go through np.unique. The rows kept are the same every way."""
    rows = 200
    data = pd.DataFrame({"id": [i * 7 % 23 for i in range(rows)], "v": [f" t{i % 5}" for i in range(rows)],
                         "n": range(rows), "skip": [i % 11 == 3 for i in range(rows)]})
    params = {"drop_duplicates": {"subset": ["id", "v"], "keep": keep}, "filter": ["~skip"]}
    outputs = []
    for share, few in ((0.0, 1 << 16), (1.0, 1 << 16), (1.0, 0)):
        monkeypatch.setattr(clean, "FIRST_PASS_SHARE", share)
        monkeypatch.setattr(clean, "FEW_REPEATS", few)
        df, report, _ = run(tmp_path, data, out=f"out-{share}-{few}", **params)
        outputs.append((df["n"], rule(report, "drop_duplicates")["rows_dropped"]))
    frame = data[~data.skip].assign(v=lambda d: d.v.str.strip())
    expected = frame.drop_duplicates(subset=["id", "v"], keep=keep)["n"].tolist()
    assert outputs == [(expected, len(frame) - len(expected))] * 3


def test_keep_first_sorts_fingerprints_in_a_pass_only_when_it_reads_little(tmp_path, monkeypatch):
    read = []
    real = clean.iter_batches

    def spy(src, rows, columns=None):
        read.append(columns)
        return real(src, rows, columns=columns)

    monkeypatch.setattr(clean, "iter_batches", spy)
    rng = random.Random(0)  # text that does not compress: the pass over id alone reads little of the file
    text = {i: "".join(rng.choices(string.ascii_letters, k=2000)) for i in (1, 2, 3)}
    data = pd.DataFrame({"id": [1, 2, 1, 3], "text": [text[i] for i in (1, 2, 1, 3)]})
    df, _, _ = run(tmp_path, data, drop_duplicates={"subset": ["id"]})
    assert len(df) == 3 and read == [["id"], ["id", "text"]]  # a pass over id alone, then the output's
    read.clear()
    df, _, _ = run(tmp_path, data, out="all", drop_duplicates=True)
    assert len(df) == 3 and read == [["id", "text"]]  # one pass: the seen fingerprints, looked up as it goes


@pytest.mark.parametrize("rows", [0, 20_000])  # the bitmap: saturated, or sized for the table
def test_seen_runs_stay_few_and_sorted(rows):
    np = pytest.importorskip("numpy")
    seen, rng = clean._Seen(rows), np.random.default_rng(0)
    values = rng.integers(0, 5000, 20_000).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    kept = np.concatenate([seen.first(values[i:i + 300]) for i in range(0, len(values), 300)])
    _, first = np.unique(values, return_index=True)
    assert np.array_equal(np.flatnonzero(kept), np.sort(first))
    assert len(seen.runs) <= 12 and all(np.all(r[:-1] < r[1:]) for r in seen.runs)
    assert all(len(a) > 2 * len(b) for a, b in zip(seen.runs, seen.runs[1:], strict=False))
    assert sum(map(len, seen.runs)) == len(first)


def test_duplicates_after_cleaning_rules(tmp_path):
    """' a' and 'a?' become equal only after stripping and mapping: duplicates are found on the cleaned rows."""
    data = pd.DataFrame({"v": [" a", "a", "b"]})
    df, _, _ = run(tmp_path, data, drop_duplicates=True)
    assert df["v"] == ["a", "b"]


def test_keep_last_counts_rows_after_a_filter(tmp_path, small_batches):
    data = pd.DataFrame({"id": [1, 2, 1, 3, 2, 1, 4, 1], "age": [20, 20, 5, 20, 20, 20, 20, 5]})
    data["n"] = range(8)
    df, report, _ = run(tmp_path, data, filter=["age >= 17"], drop_duplicates={"subset": ["id"], "keep": "last"})
    assert df["n"] == [3, 4, 5, 6]
    assert rule(report, "drop_duplicates")["rows_dropped"] == 2 and report["rows_out"] == 4


def test_near_duplicate_tweets(tmp_path, small_batches):
    tweets = ["Just landed in Paris!", "just landed in   PARIS", "JUST LANDED IN PARIS!!!", "Ｊｕｓｔ landed in Paris.",
              "Landed in Paris", None, None, "Straße closed", "STRASSE closed"]
    df, report, _ = run(tmp_path, pd.DataFrame({"id": range(len(tweets)), "text": tweets}),
                        near_duplicates={"column": "text"})
    assert df["id"] == [0, 4, 5, 6, 7]
    assert rule(report, "near_duplicates") == {"rule": "near_duplicates", "column": "text", "rows_dropped": 4}


def test_empty_after_cleaning_names_the_rules(tmp_path):
    with pytest.raises(BuildError, match=r"empty after cleaning: of 6 rows, filter dropped 6 \('age > 100': 6\)"
                                         r".*allow_empty: true"):
        run(tmp_path, ADULT, filter=["age > 100"])
    df, report, _ = run(tmp_path, ADULT, out="allowed", filter=["age > 100"], allow_empty=True)
    assert len(df) == 0 and list(df.columns) == list(ADULT.columns) and report["rows_out"] == 0
    assert str(read_table(tmp_path / "allowed").schema.field("age").type) == "int64"


def test_report_and_metrics(tmp_path):
    _, report, ctx = run(tmp_path, ADULT, na_values=["?"], filter=["age >= 17"], missing={"workclass": "drop"},
                         drop_duplicates=True)
    assert report["rows_in"] == 6 and report["rows_out"] == 3
    assert [r["rule"] for r in report["rules"]] == ["strip_whitespace", "normalize_unicode", "na_values", "filter",
                                                    "missing", "drop_duplicates"]
    assert [r.get("rows_dropped", 0) for r in report["rules"]] == [0, 0, 0, 1, 1, 1]
    metrics = json.loads((ctx.out / "metrics.json").read_text())
    assert metrics == {"rows_in": 6, "rows_out": 3, "rows_dropped": 3}
    assert json.loads((ctx.out / "table.json").read_text())["rows"] == 3


def test_types_are_stable_when_a_batch_is_all_null(tmp_path, small_batches):
    data = pd.DataFrame({"x": [None] * 4 + ["1", "2"], "s": [None] * 4 + ["a", "b"]})
    df, _, _ = run(tmp_path, data, coerce={"x": "int"})
    assert {f.name: str(f.type) for f in read_table(tmp_path / "out").schema} == {"x": "int64", "s": "string"}
    assert df["x"][-2:] == [1, 2]


def test_output_is_byte_identical_on_two_runs(tmp_path, small_batches):
    data = pd.DataFrame({"id": [i % 7 for i in range(30)], "t": [f" text {i % 5} " for i in range(30)]})
    params = {"coerce": {"t": "category"}, "drop_duplicates": True, "missing_default": "mode"}
    run(tmp_path, data, out="one", **params)
    run(tmp_path, data, out="two", **params)
    for name in ("data.parquet", "table.json", "clean_report.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_output_does_not_depend_on_the_batch_size(tmp_path, monkeypatch):
    """Category columns get one sorted dictionary for the whole table, so even their bytes ignore batching."""
    data = pd.DataFrame({"c": [f" v{i * 7 % 13} " for i in range(300)], "f": [None if i % 5 else i / 3 for i in range(300)],
                         "k": [None if i % 7 == 0 else f"k{i % 3}" for i in range(300)]})
    params = {"coerce": {"c": "category", "k": "category"}, "missing": {"f": "median", "k": {"fill": "none"}},
              "drop_duplicates": {"subset": ["c", "f"], "keep": "last"}}
    outputs = []
    for rows in (7, 64, 1 << 17):
        monkeypatch.setattr(clean, "BATCH_ROWS", rows)
        run(tmp_path, data, out=f"rows{rows}", **params)
        outputs.append([(tmp_path / f"rows{rows}" / name).read_bytes() for name in ("data.parquet", "clean_report.json")])
    assert outputs[0] == outputs[1] == outputs[2]
    dictionary = read_table(tmp_path / "rows7").column("k").chunk(0).dictionary.to_pylist()
    assert dictionary == ["k0", "k1", "k2", "none"]


@pytest.mark.parametrize("params, rule_name", [
    ({"lowercase": ["workclas"]}, "lowercase"),
    ({"coerce": {"agee": "int"}}, "coerce"),
    ({"missing": {"incme": "drop"}}, "missing"),
    ({"drop_duplicates": {"subset": ["hours"]}}, "drop_duplicates"),
    ({"rename": {"age": "years"}, "filter": ["years > 1"], "value_map": {"age": {1: 2}}}, "value_map"),
])
def test_unknown_column_names_the_rule_and_the_columns(tmp_path, params, rule_name):
    with pytest.raises(BuildError, match=rf"`{rule_name}` names column .*did you mean|`{rule_name}` names column "
                                         r".*its columns then are: .*workclass"):
        run(tmp_path, ADULT, **params)


def test_text_rule_on_a_number_column_is_an_error(tmp_path):
    with pytest.raises(BuildError, match=r"`lowercase` applies to text columns, and 'age' is int64"):
        run(tmp_path, ADULT, lowercase=["age"])


@pytest.mark.parametrize("params, key, match", [
    ({"coerce": {"age": "integer"}}, "params.coerce.age", r"did you mean 'int'"),
    ({"missing": {"age": "medain"}}, "params.missing.age", r"did you mean 'median'"),
    ({"missing_default": "zero"}, "params.missing_default", r"not keep, drop"),
    ({"drop_duplicates": {"kep": "last"}}, "params.drop_duplicates.kep", r"did you mean 'keep'"),
    ({"drop_duplicates": {"keep": "middle"}}, "params.drop_duplicates.keep", r"first or last"),
    ({"drop_duplicates": "yes"}, "params.drop_duplicates", r"true, false"),
    ({"near_duplicates": {"col": "text"}}, "params.near_duplicates", r"\{column: <text column>\}"),
    ({"strip_whitespace": "yes"}, "params.strip_whitespace", r"true, false or a list"),
    ({"normalize_unicode": "NFX"}, "params.normalize_unicode", r"did you mean 'NFC'|not one of"),
    ({"errors": "ignore"}, "params.errors", r"not one of"),
    ({"filter": "age > 1"}, "params.filter", r"expected a list"),
    ({"na_values": ["?", 1]}, "params.na_values", r"list of strings"),
    ({"rename": {"a": "x", "b": "x"}}, "params.rename", r"its own new name"),
    ({"value_map": {"income": ">50K"}}, "params.value_map.income", r"mapping"),
    ({"value_map": {"income": {None: "?"}}}, "params.value_map.income", r"without a null key.*fill"),
    ({"fliter": ["a > 1"]}, "params.fliter", r"did you mean 'filter'"),
])
def test_bad_params_fail_before_building(params, key, match):
    with pytest.raises(RecipeError, match=match) as e:
        Clean().normalise(params, file="r.yaml", step="clean")
    assert e.value.key == key and f"key '{key}'" in str(e.value)


def test_several_inputs_need_the_input_param(tmp_path):
    for name, value in (("a", 1), ("b", 2)):
        (tmp_path / name).mkdir()
        write_table(pd.DataFrame({"x": [value]}), tmp_path / name)
    (tmp_path / "out").mkdir()
    ctx = BuildContext(step="clean", inputs={"a": tmp_path / "a", "b": tmp_path / "b"}, out=tmp_path / "out",
                       recipe_dir=tmp_path, params=Clean().normalise({}, file="r.yaml", step="clean"))
    with pytest.raises(BuildError, match=r"has a, b; say which with `params: \{input: <name>\}`"):
        Clean().build(ctx)
    ctx.params = Clean().normalise({"input": "b"}, file="r.yaml", step="clean")
    Clean().build(ctx)
    assert read_table(tmp_path / "out").column("x").to_pylist() == [2]


def test_input_that_is_not_a_table(tmp_path):
    (tmp_path / "out").mkdir()
    ctx = BuildContext(step="clean", inputs={"table": tmp_path}, out=tmp_path / "out", recipe_dir=tmp_path,
                       params=Clean().normalise({}, file="r.yaml", step="clean"))
    with pytest.raises(BuildError, match=r"not a table artifact \(no data.parquet\)"):
        Clean().build(ctx)


def test_import_is_cheap():
    code = ("import sys, modelbuild.builders.clean; "
            "assert not {'pyarrow', 'pandas', 'numpy', 'ftfy'} & set(sys.modules), sys.modules.keys()")
    subprocess.run([sys.executable, "-c", code], check=True)
