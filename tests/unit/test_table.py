"""Table artifacts: TableWriter's stats.json agrees with pandas, rows.xxh depends on the rows only."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")

from modelbuild.table import DISTINCT_CAP, TableWriter, row_hashes, write_table  # noqa: E402


def frame(n=500, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(40, 12, n)
    x[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({
        "age": pd.Series(rng.integers(17, 90, n), dtype="Int64").where(rng.random(n) > 0.05),
        "x": x,
        "city": pd.array(rng.choice(["Paris", "Oslo", "Lima", "Pune"], n), dtype=object),
        "member": rng.random(n) < 0.3,
        "day": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
    }).assign(city=lambda d: d.city.where(rng.random(n) > 0.1, None))


def write_batches(df, out, sizes):
    writer = TableWriter(out)
    start = 0
    for size in sizes:
        writer.write(df.iloc[start:start + size])
        start += size
    assert start == len(df)
    return writer.close()


def stats(out) -> dict:
    return {c["name"]: c for c in json.loads((out / "stats.json").read_text())["columns"]}


def fingerprints(out):
    return np.frombuffer((out / "rows.xxh").read_bytes(), dtype="<u8")


def close(a, b):
    return a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9))


def test_stats_of_a_multi_batch_table_equal_pandas(tmp_path):
    df = frame()
    write_batches(df, tmp_path, [1, 99, 250, 150])
    got = stats(tmp_path)
    assert list(got) == list(df.columns)
    for name in ("age", "x"):
        col = df[name].astype("float64")
        s = got[name]
        assert s["count"] == col.count() and s["nulls"] == col.isna().sum()
        assert close(s["min"], col.min()) and close(s["max"], col.max())
        assert close(s["mean"], col.mean()) and close(s["std"], col.std()), (name, s)
    assert isinstance(got["age"]["min"], int)  # integer columns keep integer extremes
    city = got["city"]
    assert (city["count"], city["nulls"], city["distinct"]) == (df.city.count(), df.city.isna().sum(), df.city.nunique())
    assert close(got["member"]["mean"], df.member.mean()) and got["member"]["count"] == len(df)
    assert got["day"]["min"] == df.day.min().isoformat() and got["day"]["max"] == df.day.max().isoformat()


def test_stats_json_is_rounded_sorted_and_the_same_for_any_batching(tmp_path):
    df = frame()
    write_batches(df, tmp_path / "one", [len(df)])
    write_batches(df, tmp_path / "many", [7] * 71 + [3])
    text = (tmp_path / "one" / "stats.json").read_text()
    assert text == (tmp_path / "many" / "stats.json").read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    for column in data["columns"]:
        for v in column.values():
            if isinstance(v, float):
                assert len(repr(v).lstrip("-").replace(".", "").lstrip("0").split("e")[0]) <= 12, v


def test_rows_xxh_is_the_same_for_any_batching_and_sorted(tmp_path):
    df = frame(1000)
    write_batches(df, tmp_path / "one", [1000])
    write_batches(df, tmp_path / "odd", [1, 2, 3, 500, 494])
    shuffled = df.sample(frac=1, random_state=3)
    write_batches(shuffled, tmp_path / "shuffled", [333, 667])
    one = (tmp_path / "one" / "rows.xxh").read_bytes()
    assert len(one) == 8 * 1000
    assert one == (tmp_path / "odd" / "rows.xxh").read_bytes() == (tmp_path / "shuffled" / "rows.xxh").read_bytes()
    values = fingerprints(tmp_path / "one")
    assert (np.diff(values.astype(np.float64)) >= 0).all() and np.all(values[:-1] <= values[1:])
    table = pa.Table.from_pandas(df, preserve_index=False)
    assert np.array_equal(np.sort(row_hashes(table)), values)
    chunked = pa.concat_tables([table.slice(0, 10), table.slice(10)])  # chunked columns hash alike
    assert np.array_equal(np.sort(row_hashes(chunked)), values)


def test_rows_xxh_is_the_same_in_another_process(tmp_path):
    """No per-process state: not Python's salted hash(), not a library's random seed."""
    df = frame(50)
    write_table(df, tmp_path / "here")
    df.to_pickle(tmp_path / "df.pkl")
    code = ("import pandas as pd, sys; from modelbuild.table import write_table; "
            "write_table(pd.read_pickle(sys.argv[1]), sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "df.pkl"), str(tmp_path / "there")], check=True,
                   env={**os.environ, "PYTHONHASHSEED": "12345"})
    for name in ("rows.xxh", "stats.json", "data.parquet", "table.json"):
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "there" / name).read_bytes(), name


# A golden value: the fingerprints of this table are part of the artifact format. If this fails, the hash
# changed, and every stored rows.xxh stops matching tables written from now on: do it on purpose or not at all.
GOLDEN = pa.table({"i": pa.array([1, None, -7], pa.int64()), "f": [0.5, float("nan"), -0.0],
                   "s": ["a", "", None], "b": [True, False, None]})
GOLDEN_ROWS = [14037913900528137697, 17341794132393345734, 17883903435157899575]


def test_row_fingerprints_golden():
    assert row_hashes(GOLDEN).tolist() == GOLDEN_ROWS


def test_row_fingerprints_depend_on_values_not_types_positions_or_names():
    def rows(**columns):
        return row_hashes(pa.table(columns)).tolist()

    assert rows(a=pa.array([5, 6], pa.int64())) == rows(b=pa.array([5.0, 6.0]))  # widening keeps rows
    assert rows(a=pa.array([5], pa.int8())) == rows(a=pa.array([5], pa.uint64()))
    assert rows(a=["x"]) == rows(a=pa.array(["x"], pa.large_string())) == rows(
        a=pa.array(["x"]).dictionary_encode())
    assert rows(a=[0.0]) == rows(a=[-0.0])
    assert len({rows(a=pa.array([None], pa.int64()))[0], rows(a=[0])[0], rows(a=[""])[0],
                rows(a=pa.array([None], pa.string()))[0]}) == 3  # a null is a null whatever its type
    assert rows(a=pa.array([None], pa.int64())) != rows(a=[0])
    assert rows(a=[""]) != rows(a=pa.array([None], pa.string()))
    assert rows(a=[1], b=[2]) != rows(a=[2], b=[1])  # column order is part of the row
    assert rows(a=["ab"], b=["c"]) != rows(a=["a"], b=["bc"])
    assert rows(a=[1, 1]) == [rows(a=[1])[0]] * 2  # duplicates stay duplicates
    assert rows(a=[2**60]) != rows(a=[float(2**60)])  # beyond 2**53 an int is not a double
    assert len(set(rows(a=list(range(10_000))))) == 10_000


def test_empty_table(tmp_path):
    writer = TableWriter(tmp_path)
    summary = writer.close(schema=pa.schema([("a", pa.int64()), ("s", pa.string())]))
    assert summary["rows"] == 0
    assert (tmp_path / "rows.xxh").read_bytes() == b""
    assert json.loads((tmp_path / "stats.json").read_text()) == {"rows": 0, "columns": [
        {"name": "a", "count": 0, "nulls": 0, "min": None, "max": None, "mean": None, "std": None},
        {"name": "s", "count": 0, "nulls": 0, "distinct": 0}]}
    empty_batch = pd.DataFrame({"a": pd.Series([], dtype="int64")})
    write_table(empty_batch, tmp_path / "written")
    assert (tmp_path / "written" / "rows.xxh").read_bytes() == b""


def test_all_null_and_one_value_columns(tmp_path):
    write_table(pa.table({"n": pa.array([None, None], pa.float64()), "one": [3, None],
                          "nothing": pa.array([None, None], pa.null())}), tmp_path)
    got = stats(tmp_path)
    assert got["n"] == {"name": "n", "count": 0, "nulls": 2, "min": None, "max": None, "mean": None, "std": None}
    assert got["one"] == {"name": "one", "count": 1, "nulls": 1, "min": 3, "max": 3, "mean": 3.0, "std": None}
    assert got["nothing"] == {"name": "nothing", "count": 0, "nulls": 2}
    assert len(fingerprints(tmp_path)) == 2


def test_distinct_count_is_capped(tmp_path):
    write_table(pa.table({"s": [f"v{i}" for i in range(DISTINCT_CAP + 1)], "t": ["x"] * (DISTINCT_CAP + 1)}), tmp_path)
    got = stats(tmp_path)
    assert got["s"]["distinct"] is None and got["t"]["distinct"] == 1


def test_summary_none_writes_only_the_parquet_file(tmp_path):
    writer = TableWriter(tmp_path, path="part.parquet", summary=None)
    writer.write(pa.table({"a": [1]}))
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.parquet"]


def test_strings_hash_alike_whatever_their_array(tmp_path):
    """Each distinct value is hashed once where values repeat (dictionary-encoded first), free text value by
    value; a dictionary column hashes its dictionary once. The fingerprints are the same every way."""
    from modelbuild.table import column_hashes

    words = ["", "a", "é", "naïve", "x" * 300, None, " gold"]
    repetitive = pa.array([words[i % len(words)] for i in range(5000)])
    distinct = pa.array([w if w is None else f"{w}" for w in words] + [f"v{i}" for i in range(5000)])
    single = {w: column_hashes(pa.array([w], pa.string()))[0] for w in words}
    assert [single[w] for w in words] == column_hashes(repetitive)[:len(words)].tolist()
    assert [single[w] for w in words] == column_hashes(distinct)[:len(words)].tolist()
    for arr in (repetitive.cast(pa.large_string()), repetitive.cast(pa.binary()), repetitive.cast(pa.string_view()),
                repetitive.dictionary_encode(), pa.chunked_array([repetitive.slice(0, 3), repetitive.slice(3)])):
        assert np.array_equal(column_hashes(arr), column_hashes(repetitive)), arr.type
    sliced = repetitive.slice(3, 700)
    assert np.array_equal(column_hashes(sliced), column_hashes(repetitive)[3:703])
    assert np.array_equal(column_hashes(sliced.dictionary_encode()), column_hashes(repetitive)[3:703])

    table = pa.table({"w": repetitive, "n": range(5000)})
    write_table(table, tmp_path / "plain")
    write_table(table.set_column(0, "w", repetitive.dictionary_encode()), tmp_path / "dict")
    for name in ("rows.xxh", "stats.json"):
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "dict" / name).read_bytes(), name


@pytest.mark.parametrize("background", [True, False])
def test_row_groups_are_encoded_in_order_while_the_next_is_built(tmp_path, monkeypatch, background):
    """Row groups encoded in a background thread, one at a time, or in the caller's: the file is byte for byte
    the one a plain ParquetWriter writes, and the fingerprints sorted in place are those of the rows."""
    import pyarrow.parquet as pq

    import modelbuild.table as table_module

    monkeypatch.setattr(table_module, "ROW_GROUP_BYTES", 20_000)
    monkeypatch.setattr(table_module, "BACKGROUND_ENCODING", background)
    df = frame(3000)
    batches = [pa.Table.from_pandas(df.iloc[i:i + 250], preserve_index=False).replace_schema_metadata(None)
               for i in range(0, len(df), 250)]
    writer = TableWriter(tmp_path / "threaded")
    for batch in batches:
        writer.write(batch)
    writer.close()
    assert pq.ParquetFile(tmp_path / "threaded" / "data.parquet").metadata.num_row_groups > 3
    groups, pending, size = [], [], 0
    for batch in batches:  # the same grouping, written in the foreground
        pending.append(batch)
        size += batch.nbytes
        if size >= 20_000:
            groups.append(pa.concat_tables(pending))
            pending, size = [], 0
    groups += [pa.concat_tables(pending)] if pending else []
    with pq.ParquetWriter(tmp_path / "plain.parquet", batches[0].schema, compression="snappy") as plain:
        for group in groups:
            plain.write_table(group, row_group_size=1 << 30)
    assert (tmp_path / "threaded" / "data.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()
    assert sorted(p.name for p in (tmp_path / "threaded").iterdir()) == ["data.parquet", "rows.xxh", "stats.json",
                                                                        "table.json"]
    expected = np.sort(row_hashes(pa.Table.from_pandas(df, preserve_index=False)))
    assert np.array_equal(fingerprints(tmp_path / "threaded"), expected)


@pytest.mark.parametrize("background", [True, False])
def test_an_encoding_error_reaches_the_builder_and_leaves_no_part_file(tmp_path, monkeypatch, background):
    import pyarrow.parquet as pq

    import modelbuild.table as table_module

    monkeypatch.setattr(table_module, "ROW_GROUP_BYTES", 1)  # every batch is a row group
    monkeypatch.setattr(table_module, "BACKGROUND_ENCODING", background)

    def full_disk(self, table, row_group_size=None):
        raise OSError("No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_disk)
    df = frame(100)
    with pytest.raises(OSError, match="No space left"):
        with TableWriter(tmp_path) as writer:
            writer.write(df.iloc[:50])  # encoding fails (in the background: raised by the next write)
            writer.write(df.iloc[50:])
            writer.close()
    assert not (tmp_path / "rows.xxh.part").exists() and not (tmp_path / "rows.xxh").exists()
    with pytest.raises(OSError, match="No space left"):  # one row group (in the background: raised by close())
        write_table(df, tmp_path / "one")
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["data.parquet"]
    if not background:
        return

    class Stop(Exception):
        pass

    with pytest.raises(Stop):  # the builder's own error wins over the encoder's
        with TableWriter(tmp_path / "two") as writer:
            writer.write(df)
            raise Stop
    assert not (tmp_path / "two" / "rows.xxh.part").exists()


# ---- read_ahead: a reader's batches produced in a thread while the caller works on the last one -------------
def test_read_ahead_keeps_the_order_and_raises_the_readers_error_where_it_occurred():
    from modelbuild.table import read_ahead

    def reader():
        yield from range(5)
        raise ValueError("row 6 is ragged")

    seen = []
    with pytest.raises(ValueError, match="row 6 is ragged"):
        for item in read_ahead(reader()):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_leaving_read_ahead_early_stops_and_closes_the_reader():
    import threading

    from modelbuild.table import read_ahead

    closed, produced = threading.Event(), []

    def reader():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    for item in read_ahead(reader(), depth=2):
        if item == 3:
            break
    assert closed.is_set() and len(produced) < 10  # at most `depth` read past what was taken, then closed
    assert not [t for t in threading.enumerate() if t.name == "modelbuild-read-ahead"]
