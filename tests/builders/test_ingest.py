"""The ingest builder: every supported format in, one normalised Parquet table and its table.json out."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from modelbuild.builders import ingest  # noqa: E402
from modelbuild.builders.base import BuildContext  # noqa: E402
from modelbuild.builders.ingest import Ingest  # noqa: E402
from modelbuild.errors import BuildError, RecipeError  # noqa: E402

ADULT_NAMES = ["age", "workclass", "fnlwgt", "education", "income"]
ADULT_DATA = ("39, State-gov, 77516, Bachelors, <=50K\n"
              "50, ?, 83311, Bachelors, >50K\n"
              "38, Private, 215646, HS-grad, <=50K\n"
              "\n")
ADULT_TEST = ("|1x3 Cross validator\n"
              "25, Private, 226802, 11th, <=50K.\n"
              "38, Private, 89814, HS-grad, >50K.\n")


def ingest_path(tmp_path, path, out="out", **params):
    """Run the builder on one input; return (table, table.json)."""
    out = tmp_path / out
    out.mkdir()
    ctx = BuildContext(step="raw", inputs={"data": path}, out=out,
                       params=Ingest().normalise(params, file="r.yaml", step="raw"), recipe_dir=tmp_path)
    Ingest().build(ctx)
    return pq.read_table(out / "data.parquet"), json.loads((out / "table.json").read_text())


def write(tmp_path, name, content, mode="w"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


def types(table):
    return {f.name: str(f.type) for f in table.schema}


def test_csv_with_header_infers_types(tmp_path):
    path = write(tmp_path, "iris.csv", "sepal,petal,species\n5.1,1.4,setosa\n7.0,4.7,versicolor\n")
    table, meta = ingest_path(tmp_path, path)
    assert types(table) == {"sepal": "double", "petal": "double", "species": "string"}
    assert table.column("species").to_pylist() == ["setosa", "versicolor"]
    assert meta["format"] == "csv" and meta["source_files"] == ["iris.csv"]


def test_tsv_by_extension(tmp_path):
    path = write(tmp_path, "x.tsv", "id\tcomment\n1\thello, world\n2\tbye\n")
    table, meta = ingest_path(tmp_path, path)
    assert meta["format"] == "tsv"
    assert table.to_pylist() == [{"id": 1, "comment": "hello, world"}, {"id": 2, "comment": "bye"}]


def test_adult_like_file_without_header(tmp_path):
    """', ' separators, a trailing blank line, '?' for unknown: names given, cells stripped, '?' is null."""
    path = write(tmp_path, "adult.data", ADULT_DATA)
    table, meta = ingest_path(tmp_path, path, header=False, names=ADULT_NAMES, na_values=["?"])
    assert table.num_rows == 3
    assert types(table)["age"] == "int64" and types(table)["fnlwgt"] == "int64"
    assert table.column("workclass").to_pylist() == ["State-gov", None, "Private"]
    assert table.column("income").to_pylist() == ["<=50K", ">50K", "<=50K"]
    assert meta["format"] == "csv"  # .data is read as csv


@pytest.mark.parametrize("skip", [{"skip_rows": 1}, {"comment": "|"}])
def test_adult_like_test_file_skips_its_first_line(tmp_path, skip):
    path = write(tmp_path, "adult.test", ADULT_TEST)
    table, _ = ingest_path(tmp_path, path, header=False, names=ADULT_NAMES, **skip)
    assert table.column("age").to_pylist() == [25, 38]
    assert table.column("income").to_pylist() == ["<=50K.", ">50K."]  # labels are kept as written


def test_names_replace_the_header(tmp_path):
    path = write(tmp_path, "x.csv", "A,B\n1,2\n")
    table, _ = ingest_path(tmp_path, path, names=["a", "b"])
    assert table.to_pylist() == [{"a": 1, "b": 2}]


def test_header_false_without_names_generates_names(tmp_path):
    path = write(tmp_path, "x.csv", "1,x\n2,y\n")
    table, _ = ingest_path(tmp_path, path, header=False)
    assert table.column_names == ["f0", "f1"] and table.num_rows == 2


def test_jsonl_missing_keys_become_null(tmp_path):
    path = write(tmp_path, "x.jsonl", '{"text": "good", "label": 1}\n{"text": "bad"}\n\n')
    table, meta = ingest_path(tmp_path, path)
    assert meta["format"] == "jsonl"
    assert table.to_pylist() == [{"text": "good", "label": 1}, {"text": "bad", "label": None}]


def test_jsonl_bad_line_names_line_and_column(tmp_path):
    path = write(tmp_path, "x.jsonl", '{"a": 1}\n{"a": 2,}\n')
    with pytest.raises(BuildError, match=r"x\.jsonl, line 2, column 9: invalid JSON"):
        ingest_path(tmp_path, path)


def test_jsonl_field_changing_json_type_is_named(tmp_path):
    path = write(tmp_path, "x.jsonl", '{"a": 1}\n{"a": "one"}\n')
    with pytest.raises(BuildError, match=r"line 2.*field 'a' is a string here but a number on line 1"):
        ingest_path(tmp_path, path)


def test_parquet_in_drops_input_metadata(tmp_path):
    source = pa.table({"x": [1, 2, 3], "y": ["a", "b", None]}).replace_schema_metadata({"pandas": "{...}"})
    pq.write_table(source, tmp_path / "in.parquet")
    table, meta = ingest_path(tmp_path, tmp_path / "in.parquet")
    assert table.to_pylist() == source.to_pylist()
    assert meta["format"] == "parquet"
    assert b"pandas" not in (table.schema.metadata or {})


def test_text_one_row_per_line(tmp_path):
    path = write(tmp_path, "corpus.txt", "first line\n\n  second line  \nthird\n")
    table, meta = ingest_path(tmp_path, path)
    assert meta["format"] == "text" and meta["columns"] == [{"name": "text", "type": "string"}]
    assert table.column("text").to_pylist() == ["first line", "second line", "third"]


def test_text_folder_one_row_per_file_sorted_by_name(tmp_path):
    write(tmp_path, "docs/b.txt", "bravo\n")
    write(tmp_path, "docs/a.txt", "alpha\nmore\n")
    write(tmp_path, "docs/sub/c.txt", "charlie")
    write(tmp_path, "docs/.meta.json", "{}")  # hidden files are not data
    table, meta = ingest_path(tmp_path, tmp_path / "docs", unit="file")
    assert table.to_pylist() == [{"path": "a.txt", "text": "alpha\nmore"}, {"path": "b.txt", "text": "bravo"},
                                 {"path": "sub/c.txt", "text": "charlie"}]
    assert meta["source_files"] == ["a.txt", "b.txt", "sub/c.txt"]


def test_folder_of_csv_files_is_one_table(tmp_path):
    write(tmp_path, "parts/2.csv", "id,score\n3,0.5\n")
    write(tmp_path, "parts/1.csv", "id,score\n1,2\n2,3\n")  # ints here, a double in 2.csv
    table, meta = ingest_path(tmp_path, tmp_path / "parts")
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert types(table)["score"] == "double" and table.column("score").to_pylist() == [2.0, 3.0, 0.5]
    assert meta["rows"] == 3 and meta["source_files"] == ["1.csv", "2.csv"]


def test_folder_with_mixed_formats_is_an_error(tmp_path):
    write(tmp_path, "mixed/a.csv", "x\n1\n")
    write(tmp_path, "mixed/b.jsonl", '{"x": 1}\n')
    with pytest.raises(BuildError, match=r"different formats: csv \(a\.csv\), jsonl \(b\.jsonl\)"):
        ingest_path(tmp_path, tmp_path / "mixed")


def test_type_change_after_the_first_block_widens_the_column(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "BLOCK_SIZE", 64)
    path = write(tmp_path, "x.csv", "n,m\n" + "1,\n" * 100 + "2.5,7\n")
    table, meta = ingest_path(tmp_path, path)
    assert types(table) == {"n": "double", "m": "int64"}
    assert table.column("n").to_pylist()[-2:] == [1.0, 2.5] and table.column("m").to_pylist()[-1] == 7
    assert meta["rows"] == 101


def test_jsonl_field_appearing_after_the_first_block(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "BLOCK_SIZE", 64)
    path = write(tmp_path, "x.jsonl", '{"a": 1}\n' * 50 + '{"a": 2.5, "b": "new"}\n')
    table, _ = ingest_path(tmp_path, path)
    assert types(table) == {"a": "double", "b": "string"}
    assert table.to_pylist()[-2:] == [{"a": 1.0, "b": None}, {"a": 2.5, "b": "new"}]


def test_header_only_csv_gives_an_empty_table(tmp_path):
    table, meta = ingest_path(tmp_path, write(tmp_path, "x.csv", "a,b\n"))
    assert table.num_rows == 0 and table.column_names == ["a", "b"] and meta["rows"] == 0


def test_progress_reaches_the_total(tmp_path):
    path = write(tmp_path, "x.csv", "a\n1\n2\n")
    (tmp_path / "out").mkdir()
    ctx = BuildContext(step="raw", inputs={"data": path}, out=tmp_path / "out", recipe_dir=tmp_path,
                       params=Ingest().normalise({}, file="r.yaml", step="raw"),
                       progress_file=tmp_path / "progress.json")
    Ingest().build(ctx)
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["done"] == progress["total"] == path.stat().st_size and "2 rows" in progress["message"]


def test_whitespace_is_stripped_from_names_and_cells(tmp_path):
    path = write(tmp_path, "x.csv", " name , city \n  Ada ,  London\n")
    table, _ = ingest_path(tmp_path, path)
    assert table.to_pylist() == [{"name": "Ada", "city": "London"}]
    kept, _ = ingest_path(tmp_path, path, out="kept", strip_whitespace=False)
    assert kept.to_pylist() == [{" name ": "  Ada ", " city ": "  London"}]


def test_na_values_default_and_custom(tmp_path):
    path = write(tmp_path, "x.csv", "a,b\nNA,-\n1,\n2,x\n")
    table, _ = ingest_path(tmp_path, path)
    assert table.column("a").to_pylist() == [None, 1, 2]
    assert table.column("b").to_pylist() == ["-", None, "x"]
    custom, _ = ingest_path(tmp_path, path, out="custom", na_values=["-"])
    assert custom.column("b").to_pylist() == [None, "", "x"]
    assert types(custom)["a"] == "string"  # "NA" is no longer null, so the column is text


def test_columns_are_selected_in_order(tmp_path):
    path = write(tmp_path, "x.csv", "a,b,c\n1,2,3\n")
    table, meta = ingest_path(tmp_path, path, columns=["c", "a"])
    assert table.to_pylist() == [{"c": 3, "a": 1}]
    assert [c["name"] for c in meta["columns"]] == ["c", "a"]


def test_unknown_column_suggests_the_close_one(tmp_path):
    path = write(tmp_path, "x.csv", "label,text\n1,hi\n")
    with pytest.raises(BuildError, match=r"'lable' \(did you mean 'label'\?\).*x\.csv.*label, text"):
        ingest_path(tmp_path, path, columns=["lable"])


def test_output_is_byte_identical_across_runs_and_locations(tmp_path):
    content = "id,name,score\n" + "".join(f"{i},name {i},{i / 7}\n" for i in range(2000))
    first = write(tmp_path, "a/data.csv", content)
    second = write(tmp_path, "b/data.csv", content)
    ingest_path(tmp_path, first, out="one")
    ingest_path(tmp_path, second, out="two")
    for name in ("data.parquet", "table.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_ragged_row_names_file_and_line(tmp_path):
    path = write(tmp_path, "people.csv", "# exported\nname,age\nAda,36\n\nBob\nCy,41\n")
    with pytest.raises(BuildError) as e:
        ingest_path(tmp_path, path, comment="#")
    message = str(e.value)
    assert "people.csv, line 5" in message and "expected 2 fields but found 1" in message
    assert "Traceback" not in message


def test_ragged_row_without_comment_filter(tmp_path):
    path = write(tmp_path, "x.csv", "a,b\n1,2\n3,4,5\n")
    with pytest.raises(BuildError, match=r"x\.csv, line 3: expected 2 fields but found 3"):
        ingest_path(tmp_path, path)


UNCLOSED = "a quoted value opens here and no quote closes it"


@pytest.mark.parametrize("content, line", [
    ('id,name\n0,"Ann\n1,Bob\n2,Cy\n', 2),  # would be one row, name 'Ann\n1,Bob\n2,Cy\n'
    ('id,name\n0,"Ann\r1,Bob\r', 2),  # bare CRs
    ('id,name\n0,"Ann', 2),  # nothing swallowed, but still never closed
    ('id,name\n0,"Ann\nLee"\n1,"Bob\n', 4),  # after a closed value with a line break
    ('id,name\n0,"Ann\nB""ob"\n1,"a""b\n2,Cy\n', 4),  # "" inside a value is a quote, not a close
    ('id,name\n"0,Ann\n1,Bob\n', 2),  # swallows the row's second field: a ragged row, to the end
    ('id,"name\n0,Ann\n', 1),  # in the header: no rows at all
])
def test_an_unclosed_quote_names_its_line_and_the_fix(tmp_path, content, line):
    path = write(tmp_path, "people.csv", content)
    with pytest.raises(BuildError) as e:
        ingest_path(tmp_path, path)
    message = str(e.value)
    assert message.startswith(f"people.csv, line {line}: {UNCLOSED}")
    assert "Close the quote" in message and "`quoting: false`" in message


def test_an_unclosed_quote_after_comment_lines_counts_every_line(tmp_path):
    path = write(tmp_path, "people.csv", '# exported\nid,name\n# more\n0,"Ann\n# inside\n1,Bob\n')
    with pytest.raises(BuildError, match=f"people.csv, line 4: {UNCLOSED}"):
        ingest_path(tmp_path, path, comment="#")


def test_an_unclosed_quote_past_two_blocks_is_named_too(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "BLOCK_SIZE", 64)  # pyarrow gives up on a value over two blocks
    path = write(tmp_path, "people.csv", 'id,name\n0,Ann\n1,"Bob\n' + "".join(f"{i},x\n" for i in range(2, 100)))
    with pytest.raises(BuildError, match=f"people.csv, line 3: {UNCLOSED}"):
        ingest_path(tmp_path, path)


def test_quoted_values_keep_their_line_breaks_and_quotes(tmp_path):
    path = write(tmp_path, "notes.csv", 'id,note\n0,"two\nlines"\n1,"a ""quote"""\n2,5\'10"\n3,"last\rone"\n')
    table, _ = ingest_path(tmp_path, path)
    assert table.column("note").to_pylist() == ["two\nlines", 'a "quote"', "5'10\"", "last\rone"]


def test_quoting_false_reads_quotes_as_characters(tmp_path):
    path = write(tmp_path, "x.tsv", 'id\ttext\n0\t"so it begins\n1\tand ends\n')
    table, _ = ingest_path(tmp_path, path, quoting=False)
    assert table.column("text").to_pylist() == ['"so it begins', 'and ends']
    with pytest.raises(BuildError, match=f"x.tsv, line 2: {UNCLOSED}"):
        ingest_path(tmp_path, path, out="quoted")


@pytest.mark.parametrize("encoding, why, param", [
    ("utf-16", "a UTF-16 byte-order mark", "utf-16"),
    ("utf-16-le", "NUL bytes between its characters", "utf-16-le"),
    ("utf-16-be", "NUL bytes between its characters", "utf-16-be"),
    ("utf-32", "a UTF-32 byte-order mark", "utf-32"),
])
def test_utf16_read_as_utf8_is_named_with_the_param(tmp_path, encoding, why, param):
    path = write(tmp_path, "people.csv", "id,name\n0,Ann\n1,Bob\n".encode(encoding))
    with pytest.raises(BuildError) as e:
        ingest_path(tmp_path, path)
    assert str(e.value).startswith(f"people.csv looks like {param[:6].upper()} ({why}), not utf-8: "
                                   f"set `encoding: {param}`")
    table, _ = ingest_path(tmp_path, path, out="right", encoding=param)
    assert table.to_pylist() == [{"id": 0, "name": "Ann"}, {"id": 1, "name": "Bob"}]


@pytest.mark.parametrize("name", ["x.jsonl", "x.txt"])
def test_utf16_is_named_in_every_text_format(tmp_path, name):
    path = write(tmp_path, name, '{"a": 1}\n'.encode("utf-16"))
    with pytest.raises(BuildError, match=f"{name} looks like UTF-16"):
        ingest_path(tmp_path, path)


def test_a_stray_nul_in_utf8_is_not_taken_for_utf16(tmp_path):
    table, _ = ingest_path(tmp_path, write(tmp_path, "x.csv", "id,name\n0,A\x00nn\n1,Bob\n"))
    assert table.column("name").to_pylist() == ["A\x00nn", "Bob"]


def test_bad_encoding_names_line_and_suggests_the_param(tmp_path):
    path = write(tmp_path, "cafes.csv", "name,city\nLe Caf\xe9,Paris\n".encode("latin-1"))
    with pytest.raises(BuildError, match=r"cafes\.csv, line 2, column 7: byte 0xe9 is not valid utf-8.*encoding:"):
        ingest_path(tmp_path, path)
    table, _ = ingest_path(tmp_path, path, out="latin", encoding="latin-1")
    assert table.column("name").to_pylist() == ["Le Café"]


def test_bad_encoding_in_text(tmp_path):
    path = write(tmp_path, "x.txt", b"ok\n\xff\n")
    with pytest.raises(BuildError, match=r"x\.txt, line 2, column 1: byte 0xff is not valid utf-8"):
        ingest_path(tmp_path, path)


def test_table_json_describes_the_parquet_exactly(tmp_path):
    path = write(tmp_path, "x.csv", "id,flag,when,note\n1,true,2024-01-02,\n2,false,2024-03-04,\n")
    table, meta = ingest_path(tmp_path, path)
    assert meta == {"rows": 2, "format": "csv", "source_files": ["x.csv"],
                    "columns": [{"name": "id", "type": "int64"}, {"name": "flag", "type": "bool"},
                                {"name": "when", "type": "date32[day]"}, {"name": "note", "type": "null"}]}
    schema = pq.read_schema(tmp_path / "out" / "data.parquet")
    assert [{"name": f.name, "type": str(f.type)} for f in schema] == meta["columns"]
    assert pq.ParquetFile(tmp_path / "out" / "data.parquet").metadata.num_rows == meta["rows"]


def test_several_inputs_need_the_input_param(tmp_path):
    a, b = write(tmp_path, "a.csv", "x\n1\n"), write(tmp_path, "b.csv", "x\n2\n")
    (tmp_path / "out").mkdir()
    params = Ingest().normalise({}, file="r.yaml", step="raw")
    ctx = BuildContext(step="raw", inputs={"train": a, "test": b}, out=tmp_path / "out", params=params,
                       recipe_dir=tmp_path)
    with pytest.raises(BuildError, match=r"several inputs \(test, train\).*input:"):
        Ingest().build(ctx)
    ctx.params = Ingest().normalise({"input": "test"}, file="r.yaml", step="raw")
    Ingest().build(ctx)
    assert pq.read_table(tmp_path / "out" / "data.parquet").column("x").to_pylist() == [2]


@pytest.mark.parametrize("params, match", [
    ({"delimiter": ", "}, r"one character.*use ','"),
    ({"encoding": "utf-9"}, r"unknown encoding 'utf-9'"),
    ({"format": "xlsx"}, r"'xlsx' is not one of"),
    ({"columns": "a"}, r"expected a list"),
])
def test_bad_params_fail_before_building(params, match):
    with pytest.raises(RecipeError, match=match):
        Ingest().normalise(params, file="r.yaml", step="raw")


def test_import_is_cheap():
    code = "import sys, modelbuild.builders.ingest; assert 'pyarrow' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rename_duplicates_gives_repeated_column_names_a_suffix(tmp_path):
    path = write(tmp_path, "dup.csv", "a,b,a,a_1,a\n1,2,3,4,5\n")
    with pytest.raises(BuildError, match="rename_duplicates: true"):
        ingest_path(tmp_path, path)
    table, meta = ingest_path(tmp_path, path, out="renamed", rename_duplicates=True)
    assert table.column_names == ["a", "b", "a_2", "a_1", "a_3"]  # a_1 is taken, so the first repeat gets a_2
    assert table.to_pylist() == [{"a": 1, "b": 2, "a_2": 3, "a_1": 4, "a_3": 5}]
    table, _ = ingest_path(tmp_path, path, out="picked", rename_duplicates=True, columns=["a_3", "a"])
    assert table.to_pylist() == [{"a_3": 5, "a": 1}]
