"""ingest: read CSV, TSV, JSON Lines, Parquet or plain text into one normalised Parquet file.

Every later step reads `data.parquet`; `table.json` beside it records the row count, the column names
with their Arrow types, the format and the source files, so the lineage CLI can describe a table
without importing pyarrow. The table is written through `modelbuild.table.TableWriter`, which adds
per-column statistics (`stats.json`) and row fingerprints (`rows.xxh`) for `modelbuild diff`. Files
are streamed block by block, so a file larger than memory can be ingested, and the output is
byte-identical for the same input and params: fixed compression, no timestamps, no metadata carried
over from the input.

Types are inferred from each file's first block. When a later block or file does not fit (a column of
ints that turns out to hold '2.5', a column that is empty in one file), reading starts again with that
column widened, so the result never depends on where block boundaries fall.

A quoted csv value may hold line breaks, so a quote that is never closed would silently swallow the rest
of the file into one value: the last value read is checked for that, and such a file fails with the line
where the quote opens. A file that looks like UTF-16 or UTF-32 (a byte-order mark, or NUL bytes between its
characters) fails unless `encoding:` says so, rather than being read as something else.
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path

from ..errors import BuildError, RecipeError, did_you_mean
from ..table import TableWriter, read_ahead
from ._strings import trim_whitespace
from .base import Builder, Param

FORMATS = ("auto", "csv", "tsv", "jsonl", "parquet", "text")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
              ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".txt": "text"}
NA_VALUES = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
             "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]  # pandas' defaults
BLOCK_SIZE = 16 << 20  # bytes parsed at a time: the extent of type inference; pyarrow reads ahead one per core
TEXT_BATCH = 65536  # lines per table for format: text
SNIFF = 65536  # bytes read from the top of each file to tell UTF-16 and UTF-32 from the encoding it is read as
_WIDER = ("null", "int64", "double", "string")  # the order in which an inferred column type is widened


class _Retry(Exception):
    """Reading must start again with a hint learnt on the way: a wider column type, a file to read whole."""

    def __init__(self, reason: str, types: dict | None = None, whole: str | None = None):
        super().__init__(reason)
        self.types, self.whole = types or {}, whole


class Ingest(Builder):
    """Read tabular or text files into `data.parquet` and `table.json`.

    Example::

        raw:
          builder: ingest
          inputs: {data: data/adult.data}
          params: {header: false, names: [age, workclass, ...], na_values: ["?"]}
    """

    name = "ingest"
    env = ("pyarrow",)
    params = {
        "input": Param("str", help="which input to read; needed only when the step has several"),
        "format": Param("str", default="auto", choices=FORMATS,
                        help="auto: by extension (.csv .tsv .jsonl .parquet .txt; anything else is csv)"),
        "delimiter": Param("str", help="one character; default ',' for csv and tab for tsv"),
        "header": Param("bool", default=True, help="the first row (after skip_rows) names the columns"),
        "names": Param("list", help="column names: name headerless columns, or replace the header's"),
        "encoding": Param("str", default="utf-8"),
        "skip_rows": Param("int", default=0, help="lines to skip at the top of each file"),
        "quoting": Param("bool", default=True,
                         help='csv/tsv: a value may be quoted ("a, b"); false: a \'"\' is an ordinary character'),
        "comment": Param("str", help="skip lines starting with this string (csv, tsv, text)"),
        "strip_whitespace": Param("bool", default=True,
                                  help="strip column names, and string cells of csv, tsv and text"),
        "na_values": Param("list", default=NA_VALUES, help="csv/tsv cells read as null (after stripping)"),
        "columns": Param("list", help="keep only these columns, in this order"),
        "rename_duplicates": Param("bool", omit=True,
                                   help="a name seen before gets _1, _2, ... (a, a, a -> a, a_1, a_2), "
                                        "skipping names already taken; default: such a file fails"),
        "unit": Param("str", default="line", choices=("line", "file"),
                      help="text: one row per line (column text) or per file (columns path, text)"),
    }

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        def fail(key, message):
            raise RecipeError(message, file=file, step=step, key=f"params.{key}")

        delimiter = params["delimiter"]
        if delimiter is not None and len(delimiter) != 1:
            hint = f"; use {delimiter.strip()!r}: strip_whitespace removes the spaces" if len(
                delimiter.strip()) == 1 else ""
            fail("delimiter", f"the delimiter must be one character, got {delimiter!r}{hint}")
        try:
            codecs.lookup(params["encoding"])
        except LookupError:
            fail("encoding", f"unknown encoding {params['encoding']!r}; try utf-8, latin-1 or cp1252")
        if params["skip_rows"] < 0:
            fail("skip_rows", "skip_rows must be 0 or more")
        if params["comment"] == "":
            fail("comment", "comment must be a non-empty string, or null for none")
        for key in ("names", "na_values", "columns"):
            if params[key] is not None and not all(isinstance(v, str) for v in params[key]):
                fail(key, f"{key} must be a list of strings, got {params[key]!r}")

    def build(self, ctx) -> None:
        p = ctx.params
        root = _pick_input(ctx, p["input"])
        files = _list_files(root)
        fmt = _format(files, p["format"])
        hints = {"types": {}, "whole": set()}
        while True:
            try:
                table = _write(ctx, files, fmt, hints)
                break
            except _Retry as retry:
                before = (dict(hints["types"]), set(hints["whole"]))
                hints["types"].update(retry.types)
                hints["whole"].update([retry.whole] if retry.whole else [])
                if (hints["types"], hints["whole"]) == before:
                    raise BuildError(f"ingest could not settle the column types: {retry}") from None
                ctx.log.info("reading again: %s", retry)
        ctx.log.info("ingested %d rows x %d columns from %d %s file(s)", table["rows"], len(table["columns"]),
                     len(files), fmt)


def _pick_input(ctx, name: str | None) -> Path:
    if name is not None:
        return Path(ctx.input(name))
    if len(ctx.inputs) == 1:
        return Path(next(iter(ctx.inputs.values())))
    if not ctx.inputs:
        raise BuildError(f"step '{ctx.step}' (ingest) has no input; add one, e.g. `inputs: {{data: data/x.csv}}`")
    raise BuildError(f"step '{ctx.step}' has several inputs ({', '.join(sorted(ctx.inputs))}); "
                     f"say which to read with `params: {{input: <name>}}`")


def _list_files(root: Path) -> list[tuple[Path, str]]:
    """(path, name) for a file, or every file under a folder sorted by relative path.

    Names are relative, so the output does not depend on where the input lives. Like pyarrow's datasets,
    names starting with '.' or '_' are skipped (.meta.json, _SUCCESS).
    """
    if root.is_file():
        return [(root, root.name)]
    if not root.is_dir():
        raise BuildError(f"input {root} does not exist; check the path under `inputs:` in the recipe")
    found = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*")
                   if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts))
    if not found:
        raise BuildError(f"folder {root} has no files to ingest (names starting with '.' or '_' are skipped)")
    return [(p, name) for name, p in found]


def _format(files, requested: str) -> str:
    if requested != "auto":
        return requested
    kinds: dict[str, str] = {}
    for _, name in files:
        kinds.setdefault(EXTENSIONS.get(Path(name).suffix.lower(), "csv"), name)
    if len(kinds) > 1:
        seen = ", ".join(f"{kind} ({name})" for kind, name in sorted(kinds.items()))
        raise BuildError(f"the files to ingest have different formats: {seen}; a folder is read as one table, "
                         f"so keep one kind of file in it, or set `format:` to read them all one way")
    return next(iter(kinds))


def _write(ctx, files, fmt: str, hints: dict) -> dict:
    """Stream every file's tables through a TableWriter into data.parquet; return table.json's content."""
    total = sum(path.stat().st_size for path, _ in files) or 1
    read = {"csv": _read_csv, "tsv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet,
            "text": _read_text}[fmt]
    first, done = None, 0
    with TableWriter(ctx.out) as writer:  # row groups of about 64 MB, whatever the size of the files or blocks
        for path, name in files:
            if fmt != "parquet":
                _check_not_utf16(path, name, ctx.params["encoding"])
            try:
                for table, offset in read_ahead(read(path, name, fmt, ctx.params, hints)):
                    table = _normalise(table, ctx.params, fmt, name)
                    first = first or name
                    if writer.schema is not None:
                        table = _conform(table, writer.schema, name, first, fmt)
                    if table.num_rows or writer.schema is None:
                        writer.write(table)
                    ctx.progress(done + offset, total, f"{name}: {writer.rows} rows")
            except UnicodeDecodeError:
                raise _encoding_error(path, name, ctx.params["encoding"]) from None
            done += path.stat().st_size
        return writer.close(format=fmt, source_files=[name for _, name in files])


def _clean_names(names, p) -> list[str]:
    names = [n.strip() for n in names] if p["strip_whitespace"] else list(names)
    return _renamed_duplicates(names) if p.get("rename_duplicates") else names


def _renamed_duplicates(names: list[str]) -> list[str]:
    """a, b, a, a -> a, b, a_1, a_2: the first keeps its name, a repeat takes the next free suffix."""
    taken, out = set(names), []
    seen: set[str] = set()
    for name in names:
        new, n = name, 0
        while new in seen or (new != name and new in taken):
            n += 1
            new = f"{name}_{n}"
        seen.add(new)
        out.append(new)
    return out


def _normalise(table, p, fmt: str, name: str):
    """Names stripped or replaced, csv cells stripped and nulled, columns selected, metadata dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = _clean_names(table.column_names, p)
    if p["names"] and fmt not in ("csv", "tsv"):
        if len(p["names"]) != len(names):
            raise BuildError(f"{name} has {len(names)} columns ({', '.join(names)}) but `names:` lists "
                             f"{len(p['names'])}; give one name per column")
        names = _clean_names(p["names"], p)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BuildError(f"{name} has more than one column named {', '.join(map(repr, twice))}; set "
                         f"`rename_duplicates: true` to read them as {twice[0]}, {twice[0]}_1, ..., or give every "
                         f"column its own name with `names:`")
    table = table.rename_columns(names)
    if fmt in ("csv", "tsv") and p["strip_whitespace"]:  # the reader nulled na_values as written; stripped, again
        na = pa.array(p["na_values"] or [], pa.string())
        for i, field in enumerate(table.schema):
            old = table.column(i)
            if pa.types.is_string(field.type) and (column := trim_whitespace(old)) is not old:
                column = pc.if_else(pc.is_in(column, value_set=na), pa.scalar(None, pa.string()), column)
                table = table.set_column(i, field.name, column)
    if p["columns"]:
        missing = [c for c in p["columns"] if c not in names]
        if missing:
            raise BuildError(f"`columns:` names {missing[0]!r}{did_you_mean(missing[0], names)}, which {name} "
                             f"does not have; its columns are: {', '.join(names)}")
        table = table.select(p["columns"])
    return pa.Table.from_arrays(table.columns, schema=pa.schema([(f.name, f.type) for f in table.schema]))


def _conform(table, schema, name: str, first: str, fmt: str):
    """Make a later table match the first one's schema, or say which column must be read wider."""
    import pyarrow as pa

    if sorted(table.schema.names) == sorted(schema.names):
        table = table.select(schema.names)
    else:
        raise BuildError(f"{name} has columns ({', '.join(table.schema.names)}) but {first} has "
                         f"({', '.join(schema.names)}); files read as one table need the same columns: "
                         f"use `columns:` to keep the common ones, or ingest them in separate steps")
    if table.schema == schema:
        return table
    for want, got in zip(schema, table.schema, strict=True):
        if want.type == got.type:
            continue
        names = (str(want.type), str(got.type))
        wider = _wider(want.type, got.type)
        if fmt in ("csv", "tsv") or (fmt == "jsonl" and (str(wider) != "string" or "null" in names)):
            raise _Retry(f"column {want.name!r} is {want.type} in {first} but {got.type} in {name}",
                         types={want.name: wider})
        try:
            table = table.set_column(table.schema.get_field_index(got.name), want.name,
                                     table.column(got.name).cast(want.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise BuildError(f"column {want.name!r} is {want.type} in {first} but {got.type} in {name}; "
                             f"files read as one table need the same column types") from None
    return table


def _wider(a, b):
    """The type a column must be read as to hold both a and b: null < int64 < double < string."""
    import pyarrow as pa

    names = (str(a), str(b))
    if all(n in _WIDER for n in names):
        return pa.type_for_alias(max(names, key=_WIDER.index))
    if "null" in names:
        return b if names[0] == "null" else a
    return pa.string()


def _read_csv(path: Path, name: str, fmt: str, p: dict, hints: dict):
    """Yield (table, bytes read) from a delimited file through pyarrow's streaming reader."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    delimiter = p["delimiter"] or ("\t" if fmt == "tsv" else ",")
    bad, opened = [], []  # bad: the first ragged row, seen by pyarrow before it raises

    def open_reader(types):
        f = open(path, "rb")
        opened.append(f)
        read = pcsv.ReadOptions(encoding=_arrow_encoding(p["encoding"]), block_size=BLOCK_SIZE,
                                skip_rows=(0 if p["comment"] else p["skip_rows"]) + bool(p["header"] and p["names"]),
                                column_names=p["names"] or None,
                                autogenerate_column_names=not p["header"] and not p["names"])
        parse = pcsv.ParseOptions(delimiter=delimiter, quote_char='"' if p["quoting"] else False,
                                  newlines_in_values=True, invalid_row_handler=lambda row: bad.append(row) or "error")
        convert = pcsv.ConvertOptions(null_values=p["na_values"] or [], strings_can_be_null=True,
                                      column_types=types)
        reader = pcsv.open_csv(_without_comments(f, p) if p["comment"] else f, read_options=read,
                               parse_options=parse, convert_options=convert)
        opened.append(reader)
        return f, reader

    raw = []
    try:
        f, reader = open_reader({})
        raw = reader.schema.names  # types learnt on an earlier pass are keyed by cleaned names
        types = {r: hints["types"][c] for r, c in zip(raw, _clean_names(raw, p), strict=True) if c in hints["types"]}
        if types:
            f, reader = open_reader(types)
        if any(pa.types.is_binary(field.type) for field in reader.schema):
            raise _encoding_error(path, name, p["encoding"])
        yield reader.schema.empty_table(), 0  # fixes the schema even when there are no rows
        last = raw[-1] if p["header"] and not p["names"] else None  # the last value read: a header's, or a row's
        for batch in reader:
            if batch.num_rows:
                last = batch.column(batch.num_columns - 1)[-1].as_py()
            yield pa.Table.from_batches([batch]), f.tell()
        if p["quoting"] and isinstance(last, str) and _may_end_quoted(path, p, last):
            line = _open_quote(path, p, delimiter)
            if line:
                raise _unclosed_quote(name, line)
    except pa.ArrowInvalid as e:
        raise _csv_error(e, bad, path, name, p, delimiter, _clean_names(raw, p)) from None
    finally:
        for thing in reversed(opened):
            thing.close()


def _arrow_encoding(encoding: str) -> str:
    """pyarrow decodes UTF-8 natively only when it is spelled 'utf8'; anything else goes through Python."""
    return "utf8" if codecs.lookup(encoding).name == "utf-8" else encoding


def _csv_error(e, bad, path, name, p, delimiter, names):
    message = str(e)
    if p["quoting"] and (("\n" in bad[0].text or "\r" in bad[0].text) if bad else
                         "straddl" in message or "Empty CSV" in message):
        line = _open_quote(path, p, delimiter)  # a ragged row, a value over two blocks or a header, to the end
        if line:
            return _unclosed_quote(name, line)
    if bad:
        row = bad[0]
        where = _find_line(path, p, row.text)
        where = f"line {where}" if where else f"row {row.number or '?'}"
        return BuildError(f"{name}, {where}: expected {row.expected_columns} fields but found {row.actual_columns} "
                          f"in {row.text[:80]!r}. Every row needs as many fields as the header (or `names:`) has; "
                          f"look for a missing field or an unquoted {delimiter!r} inside a value, or set "
                          f"`delimiter:` if the file is not {delimiter!r}-separated")
    m = re.search(r"In CSV column #(\d+): CSV conversion error to ([^:]+): invalid value '(.*)'$", message)
    if m and m.group(2) != "string" and int(m.group(1)) < len(names):
        column, failed, value = names[int(m.group(1))], m.group(2), m.group(3)
        return _Retry(f"column {column!r} of {name} holds {value!r}, which is not {failed}",
                      types={column: _type_of(value, failed)})
    if "UTF8" in message or "UTF-8" in message:
        return _encoding_error(path, name, p["encoding"])
    if "Empty CSV file" in message:
        return BuildError(f"{name} is empty; remove it from the input or add rows to it")
    return BuildError(f"cannot read {name} as {'TSV' if delimiter == chr(9) else 'CSV'}: {message}. "
                      f"Check `format:`, `delimiter:` and `header:` in the step's params")


def _may_end_quoted(path: Path, p: dict, value: str) -> bool:
    """Whether the last value read may be a quoted one that is never closed, from the end of the file alone:
    it ends with the value's last line as a quoted value would write it. A quoted value that is closed ends
    the file with its closing quote instead, so this is rarely true but for an unclosed one."""
    last = re.split(r"\r\n|\r|\n", '"' + value.replace('"', '""'))[-1]
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, 2) - len(last.encode(p["encoding"], errors="replace")) - 4))
        return f.read().decode(p["encoding"], errors="replace").endswith(last)


def _open_quote(path: Path, p: dict, delimiter: str) -> int | None:
    """The line on which a quoted value opens that no quote closes before the end of the file, or None.

    The file is read the way pyarrow reads it: a quote opens a value only at the start of a field, "" inside
    it is a quote, and after the closing quote the value runs on to the next delimiter.
    """
    quoted, opened = False, None
    with open(path, encoding=p["encoding"], errors="replace", newline="") as f:
        for n, line in enumerate(f, 1):
            if (n <= p["skip_rows"] or (p["comment"] and line.lstrip().startswith(p["comment"]))  # as the stream
                    or (not quoted and '"' not in line)):
                continue
            i = 0
            while i < len(line):
                if quoted:
                    j = line.find('"', i)
                    if j < 0:
                        break
                    if line.startswith('""', j):
                        i = j + 2
                        continue
                    quoted, i = False, j + 1
                elif line[i] == '"':
                    quoted, opened, i = True, n, i + 1
                    continue
                j = line.find(delimiter, i)  # to the start of the next field
                i = len(line) if j < 0 else j + 1
    return opened if quoted else None


def _unclosed_quote(name: str, line: int) -> BuildError:
    return BuildError(f"{name}, line {line}: a quoted value opens here and no quote closes it, so it would run to "
                      f"the end of the file and swallow every line after it. Close the quote (a quote inside a "
                      f"quoted value is written twice, \"\"), or set `quoting: false` if a '\"' in this file is "
                      f"an ordinary character")


def _type_of(value: str, failed: str):
    """The narrowest type wider than `failed` that can hold `value`: int64, double or string."""
    import pyarrow as pa

    start = _WIDER.index(failed) + 1 if failed in _WIDER else len(_WIDER) - 1
    for name in _WIDER[max(start, 1):-1]:
        try:
            (int if name == "int64" else float)(value)
            return pa.type_for_alias(name)
        except ValueError:
            pass
    return pa.string()


def _read_jsonl(path: Path, name: str, fmt: str, p: dict, hints: dict):
    """Yield (table, bytes read) from JSON Lines; a file whose types drift past the first block is read whole."""
    import pyarrow as pa
    import pyarrow.json as pjson

    def utf8(table):  # pyarrow.json does not check that strings are valid UTF-8; Parquet needs them to be
        try:
            table.validate(full=True)
        except pa.ArrowInvalid:
            raise _encoding_error(path, name, p["encoding"]) from None
        return table

    explicit = pa.schema([(c, t) for c, t in hints["types"].items()])
    parse = pjson.ParseOptions(explicit_schema=explicit or None, unexpected_field_behavior="infer")
    read = pjson.ReadOptions(block_size=BLOCK_SIZE)
    raw = pa.OSFile(str(path))
    stream = raw if _arrow_encoding(p["encoding"]) == "utf8" else pa.transcoding_input_stream(
        raw, p["encoding"], "utf-8")
    try:
        if name in hints["whole"]:
            yield utf8(pjson.read_json(stream, read_options=read, parse_options=parse)), raw.tell()
            return
        with pjson.open_json(stream, read_options=read, parse_options=parse) as reader:
            yield reader.schema.empty_table(), 0
            for batch in reader:
                yield utf8(pa.Table.from_batches([batch])), raw.tell()
    except pa.ArrowInvalid as e:
        problem = _json_problem(path, p["encoding"])
        if problem:
            line, column, what = problem
            raise BuildError(f"{name}, line {line}, column {column}: {what}. JSON Lines needs one JSON object "
                             f"per line, with each field keeping one JSON type") from None
        if name in hints["whole"]:
            raise BuildError(f"cannot read {name} as JSON Lines: {e}") from None
        raise _Retry(f"the types in {name} change after its first block", whole=name) from None
    finally:
        raw.close()


def _json_problem(path: Path, encoding: str):
    """(line, column, message) for the first line that is not a JSON object or changes a field's JSON type."""
    kinds = {}
    with open(path, encoding=encoding, errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                return n, e.colno, f"invalid JSON ({e.msg})"
            if not isinstance(value, dict):
                return n, 1, f"expected a JSON object, found {type(value).__name__}"
            for key, v in value.items():
                kind = {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
                        dict: "object"}.get(type(v))
                if kind and kinds.setdefault(key, (kind, n))[0] != kind:
                    return n, 1, f"field {key!r} is a {kind} here but a {kinds[key][0]} on line {kinds[key][1]}"
    return None


def _read_parquet(path: Path, name: str, fmt: str, p: dict, hints: dict):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise BuildError(f"{name} is not a readable Parquet file ({e}); check `format:` or the file") from None
    yield f.schema_arrow.empty_table(), 0
    for i in range(f.num_row_groups):
        yield f.read_row_group(i), path.stat().st_size * (i + 1) // f.num_row_groups


def _read_text(path: Path, name: str, fmt: str, p: dict, hints: dict):
    """Yield tables of lines (column text), or one row (path, text) per file. Blank lines are dropped."""
    import pyarrow as pa

    strip = str.strip if p["strip_whitespace"] else (lambda s: s.rstrip("\r\n"))
    with open(path, encoding=p["encoding"]) as f:
        if p["unit"] == "file":
            yield pa.table({"path": [name], "text": [strip(f.read())]}), path.stat().st_size
            return
        lines = []
        for n, line in enumerate(f):
            if n < p["skip_rows"] or (p["comment"] and line.lstrip().startswith(p["comment"])):
                continue
            if line := strip(line):
                lines.append(line)
            if len(lines) == TEXT_BATCH:
                yield pa.table({"text": pa.array(lines, pa.string())}), f.buffer.tell()
                lines = []
        yield pa.table({"text": pa.array(lines, pa.string())}), path.stat().st_size


def _without_comments(f, p: dict):
    """The file less its first skip_rows lines and its comment lines: pyarrow's CSV reader has no comment option."""
    import io

    prefix = p["comment"].encode(p["encoding"])
    lines = (line for n, line in enumerate(f) if n >= p["skip_rows"] and not line.lstrip().startswith(prefix))

    class Lines(io.RawIOBase):
        rest = b""

        def readable(self):
            return True

        def readinto(self, b):
            chunk = self.rest or next(lines, b"")
            n = min(len(b), len(chunk))
            b[:n], self.rest = chunk[:n], chunk[n:]
            return n

    return io.BufferedReader(Lines(), buffer_size=1 << 20)


def _find_line(path: Path, p: dict, text: str) -> int | None:
    """The number of the first line (past skip_rows and comments) that reads `text`.

    pyarrow reports a ragged row's text but not its line; the first ragged row is the first line with that
    text, as an identical earlier line would have been ragged too.
    """
    with open(path, encoding=p["encoding"], errors="replace", newline="") as f:
        for n, line in enumerate(f, 1):
            if n <= p["skip_rows"] or (p["comment"] and line.lstrip().startswith(p["comment"])):
                continue
            if line.rstrip("\r\n") == text:
                return n
    return None


def _check_not_utf16(path: Path, name: str, encoding: str) -> None:
    """Fail on a file that looks like UTF-16 or UTF-32 (a byte-order mark, or NUL bytes between the characters
    of ASCII text) when it is to be read as another encoding: it would be read as ragged rows or NULs."""
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        return
    with open(path, "rb") as f:
        head = f.read(SNIFF)
    boms = {codecs.BOM_UTF32_LE: "utf-32", codecs.BOM_UTF32_BE: "utf-32", codecs.BOM_UTF16_LE: "utf-16",
            codecs.BOM_UTF16_BE: "utf-16"}  # UTF-32 first: its little-endian BOM starts like UTF-16's
    found = next(((f"a {enc.upper()} byte-order mark", enc) for bom, enc in boms.items() if head.startswith(bom)), None)
    if found is None and b"\0" in head:  # which of each 4 bytes are mostly NUL: the zero bytes of ASCII text
        nul = tuple(head[i::4].count(0) > len(head[i::4]) / 2 for i in range(4))
        enc = {(False, True, False, True): "utf-16-le", (True, False, True, False): "utf-16-be",
               (False, True, True, True): "utf-32-le", (True, True, True, False): "utf-32-be"}.get(nul)
        found = ("NUL bytes between its characters", enc) if enc else None
    if found:
        why, enc = found
        raise BuildError(f"{name} looks like {enc[:6].upper()} ({why}), not {encoding}: set `encoding: {enc}` in "
                         f"the step's params, or re-save the file as {encoding}")


def _encoding_error(path: Path, name: str, encoding: str) -> BuildError:
    """Name the first byte that does not decode: its line, its column and the param that fixes it."""
    decoder = codecs.getincrementaldecoder(encoding)()
    what = f"{name} is not valid {encoding}"
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as e:
                what = f"{name}, line {n}, column {e.start + 1}: byte 0x{line[e.start]:02x} is not valid {encoding}"
                break
        else:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                what = f"{name} ends in an incomplete {encoding} character"
    return BuildError(f"{what}. Set the file's encoding with the `encoding:` param (for example "
                      f"`encoding: latin-1` or `encoding: cp1252`), or re-save it as {encoding}")
