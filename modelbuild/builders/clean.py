"""clean: one table in, the same table cleaned out, plus clean_report.json saying what each rule changed.

Rules run in this fixed order, whatever order the params are written in. Each sees the table the rules
before it left: names are the renamed ones, `filter` compares coerced values, a median skips filtered rows.

 1. rename           `rename: {old: new}`
 2. columns          `columns: [keep, only, these]` (in this order), then `drop_columns: [...]`
 3. text             string columns: `strip_whitespace` (default all), `fix_mojibake` (ftfy; default off),
                     `normalize_unicode` (default NFC), `lowercase: [columns]`
 4. na_values        `na_values: ["?", "N/A", ""]`: these strings become null
 5. value_map        `value_map: {income: {">50K.": ">50K"}}`: values not in a map stay
 6. coerce           `coerce: {age: int}`: int, float, str, bool (true/false/1/0), datetime (ISO 8601, or
                     `datetime:%d/%m/%Y`), category; a value that does not convert fails the build
                     (`errors: raise`) or becomes null (`errors: null`)
 7. filter           `filter: ["age >= 17"]`: keep the rows where every expression (pandas `eval`) is true
 8. missing          `drop_empty: true` drops rows with no value at all; then `missing: {col: keep|drop|mean|
                     median|mode|{fill: value}}`, and `missing_default` for every other column it suits
 9. drop_duplicates  `true`, or `{subset: [columns], keep: first|last}`
10. near_duplicates  `{column: text}`: drop rows whose text equals an earlier row's once NFKC-normalised,
                     casefolded, stripped of punctuation and with whitespace collapsed (rows without text stay)

Streaming: the table is read BATCH_ROWS rows at a time, so memory holds one batch plus small global state,
whatever the table's size. What needs the whole table is gathered by earlier passes that read only the
columns they need (every column, once a filter or drop_empty comes first): the sorted categories of
`coerce: category`; mean, median and mode (a median keeps 8 bytes a row of its column); for `keep: last`,
and for `keep: first` when that pass reads a small part of the table (`subset: [id]`), each row's 64-bit
fingerprint, sorted once to find which rows to keep (then one byte a row). Otherwise `keep: first` and near
duplicates keep the fingerprints seen so far as a few sorted runs, 8 bytes a distinct row, and look each batch
up in them (O(n log n) over the table, not a second pass of the rules). Rows are compared by fingerprint
(modelbuild.table's row hash), so two different rows pass for duplicates with odds of about n²/2^65 (3 in a
million for 10 million rows). The output schema is fixed before the first row is read, so a column that is all
null in one batch keeps its type, and the output's bytes are the same whatever the batch size.
"""

from __future__ import annotations

import functools
import json
import sys
import unicodedata
from pathlib import Path

from ..errors import BuildError, RecipeError, did_you_mean
from ..table import TableWriter, column_hashes, data_file, iter_batches, read_schema, row_hashes, summary
from ._strings import is_ascii as _ascii
from ._strings import trim_whitespace
from .base import Builder, Param

BATCH_ROWS = 1 << 17  # rows held at a time; bounds memory, never changes the output
# keep: first hashes the table in a pass of its own when that pass reads at most this share of the input's
# (compressed) bytes; beyond it, looking batches up in the fingerprints seen so far costs less than the pass
FIRST_PASS_SHARE = 1 / 3
FEW_REPEATS = 1 << 16  # repeating fingerprints looked up row by row (512 KiB: in cache); more: np.unique
TYPES = {"int": "int64", "float": "double", "str": "string", "bool": "bool", "datetime": "timestamp[us]",
         "category": "string"}  # category: strings, dictionary-encoded
STRATEGIES = ("keep", "drop", "mean", "median", "mode")
TEXT_RULES = ("strip_whitespace", "fix_mojibake", "normalize_unicode", "lowercase")
ORDER = ("text", "na_values", "value_map", "coerce", "filter", "drop_empty", "missing", "fill", "drop_duplicates",
         "near_duplicates")  # the rules that touch rows, as run; `fill` is the second half of `missing`
# ftfy's encoding repairs only: its other fixes (straight quotes, half-width letters, HTML) change correct text
ENCODING_ONLY = {"unescape_html": False, "remove_terminal_escapes": False, "fix_latin_ligatures": False,
                 "fix_character_width": False, "uncurl_quotes": False, "fix_line_breaks": False,
                 "remove_control_chars": False, "normalization": None, "explain": False}


class Clean(Builder):
    """Clean a table artifact with declared rules, run in the order the module docstring gives.

    Example::

        clean:
          builder: clean
          inputs: {table: adult}
          params:
            na_values: ["?"]
            value_map: {income: {">50K.": ">50K", "<=50K.": "<=50K"}}
            filter: ["age >= 17"]
            missing: {workclass: drop, hours_per_week: median}
            drop_duplicates: true
    """

    name = "clean"
    env = ("pyarrow", "pandas", "numpy", "ftfy")
    params = {
        "input": Param("str", help="which input to clean; needed only when the step has several"),
        "rename": Param("dict", help="{old: new}"),
        "columns": Param("list", help="keep only these columns, in this order (names after rename)"),
        "drop_columns": Param("list", help="columns to drop (names after rename)"),
        "strip_whitespace": Param("any", default=True, help="true, false, or a list of string columns"),
        "fix_mojibake": Param("any", default=False, help="true, false, or a list of string columns"),
        "normalize_unicode": Param("str", default="NFC", choices=("NFC", "NFKC", "NFD", "NFKD")),
        "lowercase": Param("list", help="string columns to lowercase"),
        "na_values": Param("list", help="strings that mean 'missing', e.g. ['?', 'N/A', '']"),
        "value_map": Param("dict", help="{column: {old: new}}"),
        "coerce": Param("dict", help="{column: int|float|str|bool|datetime|category}"),
        "errors": Param("str", default="raise", choices=("raise", "null"), help="coerce's answer to a bad value"),
        "filter": Param("list", help="pandas expressions; rows where all are true are kept"),
        "drop_empty": Param("bool", default=False, help="drop rows in which every value is missing"),
        "missing": Param("dict", help="{column: keep|drop|mean|median|mode|{fill: value}}"),
        "missing_default": Param("any", default="keep", help="the `missing` strategy of every other column"),
        "drop_duplicates": Param("any", default=False, help="true, or {subset: [columns], keep: first|last}"),
        "near_duplicates": Param("dict", help="{column: text_column}"),
        "allow_empty": Param("bool", default=False, help="let cleaning leave no rows"),
    }

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        def fail(key, message):
            raise RecipeError(message, file=file, step=step, key=f"params.{key}")

        def names(value):
            return isinstance(value, list) and all(isinstance(v, str) for v in value)

        for key in ("columns", "drop_columns", "lowercase", "na_values", "filter"):
            if params[key] is not None and not names(params[key]):
                fail(key, f"{key} must be a list of strings, got {params[key]!r}")
        for key in ("strip_whitespace", "fix_mojibake"):
            if not (isinstance(params[key], bool) or names(params[key])):
                fail(key, f"{key} must be true, false or a list of column names, got {params[key]!r}")
        rename = params["rename"] or {}
        if not all(isinstance(v, str) for v in rename.values()) or len(set(rename.values())) < len(rename):
            fail("rename", f"rename must map each old name to its own new name, got {rename!r}")
        for column, mapping in (params["value_map"] or {}).items():
            if not isinstance(mapping, dict) or None in mapping:
                fail(f"value_map.{column}", f"expected a mapping {{old: new}} without a null key (fill nulls with "
                                            f"`missing: {{{column}: {{fill: value}}}}`), got {mapping!r}")
        for column, spec in (params["coerce"] or {}).items():
            kind = str(spec).partition(":")[0]
            if kind not in TYPES or (":" in str(spec) and kind != "datetime"):
                fail(f"coerce.{column}", f"{spec!r} is not a type{did_you_mean(spec, TYPES)}; use one of "
                                         f"{', '.join(TYPES)}, or datetime:<format> such as datetime:%d/%m/%Y")
        for key, how in [*((f"missing.{c}", h) for c, h in (params["missing"] or {}).items()),
                         ("missing_default", params["missing_default"])]:
            if not (how in STRATEGIES or (isinstance(how, dict) and list(how) == ["fill"])):
                fail(key, f"{how!r} is not keep, drop, mean, median, mode or {{fill: value}}"
                          f"{did_you_mean(how, STRATEGIES)}")
        dups = params["drop_duplicates"]
        if not isinstance(dups, bool | dict):
            fail("drop_duplicates", f"expected true, false or {{subset: [...], keep: first|last}}, got {dups!r}")
        for key in dups if isinstance(dups, dict) else ():
            if key not in ("subset", "keep"):
                fail(f"drop_duplicates.{key}", f"unknown key{did_you_mean(key, ('subset', 'keep'))}; "
                                               f"drop_duplicates takes subset and keep")
        if isinstance(dups, dict) and dups.get("subset") is not None and not names(dups["subset"]):
            fail("drop_duplicates.subset", f"subset must be a list of column names, got {dups['subset']!r}")
        if isinstance(dups, dict) and dups.get("keep", "first") not in ("first", "last"):
            fail("drop_duplicates.keep", f"keep must be first or last, got {dups['keep']!r}")
        near = params["near_duplicates"]
        if near is not None and (list(near) != ["column"] or not isinstance(near["column"], str)):
            fail("near_duplicates", f"near_duplicates takes {{column: <text column>}}, got {near!r}")

    def build(self, ctx) -> None:
        p = ctx.params
        src = _pick_input(ctx, p["input"])
        cleaner = _Cleaner(p, read_schema(src))
        cleaner.prepare(src)
        total, rows_in = (summary(src) or {}).get("rows"), 0
        with TableWriter(ctx.out) as writer:
            for batch, rows_in in cleaner.batches(src):
                writer.write(batch)
                ctx.progress(rows_in, total, f"{rows_in} rows read, {writer.rows} kept")
            if writer.rows == 0 and not p["allow_empty"]:
                raise BuildError(_empty_message(cleaner.report, rows_in))
            writer.close(schema=cleaner.schema)
        report = {"rows_in": rows_in, "rows_out": writer.rows, "rules": list(cleaner.report.values())}
        (ctx.out / "clean_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        ctx.write_metrics({"rows_in": rows_in, "rows_out": writer.rows, "rows_dropped": rows_in - writer.rows})
        ctx.log.info("cleaned %d rows into %d", rows_in, writer.rows)


def _pick_input(ctx, name: str | None) -> Path:
    if name is None and len(ctx.inputs) != 1:
        raise BuildError(f"step '{ctx.step}' (clean) needs one input table, and has "
                         f"{', '.join(sorted(ctx.inputs)) or 'none'}; say which with `params: {{input: <name>}}`")
    path = Path(ctx.input(name) if name is not None else next(iter(ctx.inputs.values())))
    if not data_file(path).is_file():
        raise BuildError(f"input {path} is not a table artifact (no data.parquet); make it the output of a "
                         f"step that writes a table, such as ingest")
    return path


def _empty_message(report: dict, rows_in: int) -> str:
    if rows_in == 0:
        return "the input table has no rows; set `allow_empty: true` if an empty table is what you want"
    culprits = []
    for rule, entry in report.items():
        if entry.get("rows_dropped"):
            detail = ", ".join(f"{k!r}: {n}" for k, n in entry.get("rows_dropped_by", {}).items() if n)
            culprits.append(f"{rule} dropped {entry['rows_dropped']}" + (f" ({detail})" if detail else ""))
    return (f"the table is empty after cleaning: of {rows_in} rows, {'; '.join(culprits)}. Loosen those rules, "
            f"or set `allow_empty: true` if an empty table is what you want")


def _arrow():
    """pyarrow, pyarrow.compute and numpy, imported when a build runs, never when a recipe is checked."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    return pa, pc, np


class _Cleaner:
    """The rules resolved against the input's schema, and applied to one batch at a time.

    Every column a rule names is checked here, before any row is read, so a typo fails at once rather than
    after an hour of streaming; and the output schema is fixed here, so batches cannot drift in type.
    """

    def __init__(self, p: dict, schema):
        pa, _, _ = _arrow()
        self.p, rename = p, p["rename"] or {}
        self._known("rename", rename, schema.names)
        renamed = [rename.get(n, n) for n in schema.names]
        if len(set(renamed)) < len(renamed):
            raise BuildError(f"`rename` gives two columns the same name; the columns are: {', '.join(renamed)}")
        self.back = dict(zip(renamed, schema.names, strict=True))  # name after rename -> input name
        names = self._known("columns", p["columns"], renamed) if p["columns"] else renamed
        drop = self._known("drop_columns", p["drop_columns"] or [], names)
        self.names = [n for n in names if n not in drop]
        self.types = {n: schema.field(self.back[n]).type for n in self.names}
        self.strings = self._strings()
        choose = {key: self.strings if p[key] is True else p[key] or [] for key in ("strip_whitespace", "fix_mojibake")}
        self.text = {**choose, "normalize_unicode": self.strings if p["normalize_unicode"] else [],
                     "lowercase": p["lowercase"] or []}
        for rule, columns in self.text.items():
            self._text_columns(rule, columns)
        self.maps = {c: self._map_plan(c, m) for c, m in self._known("value_map", p["value_map"] or {}).items()}
        self.coerce = self._known("coerce", p["coerce"] or {})
        for column, spec in self.coerce.items():
            self.types[column] = pa.dictionary(pa.int32(), pa.string()) if spec == "category" else \
                pa.type_for_alias(TYPES[spec.partition(":")[0]])
        self.missing, self.fills = self._missing_plan()
        dups = p["drop_duplicates"]
        self.subset = None if dups is False else self._known(
            "drop_duplicates", (dups if isinstance(dups, dict) else {}).get("subset") or list(self.names))
        self.keep = dups.get("keep", "first") if isinstance(dups, dict) else "first"
        near = p["near_duplicates"]
        self.near = self._text_columns("near_duplicates", [near["column"]])[0] if near else None
        self.schema = pa.schema([(n, self.types[n]) for n in self.names])
        self.categories, self.kept, self.rows_in = {}, None, 0  # from prepare(): see there

    def _known(self, rule: str, wanted, names=None):
        """`wanted`, after checking that every column it names is in `names` (default: the output's)."""
        names = self.names if names is None else names
        for column in wanted:
            if column not in names:
                raise BuildError(f"`{rule}` names column {column!r}{did_you_mean(column, names)}, which the table "
                                 f"does not have when {rule} runs; its columns then are: {', '.join(names)}")
        return wanted

    def _strings(self) -> list:
        pa, _, _ = _arrow()
        return [n for n, t in self.types.items() if pa.types.is_string(t) or pa.types.is_large_string(t)]

    def _text_columns(self, rule: str, columns: list) -> list:
        text = self._strings()  # the types as they stand when the rule runs: near_duplicates is after coerce
        for column in self._known(rule, columns):
            if column not in text:
                raise BuildError(f"`{rule}` applies to text columns, and {column!r} is {self.types[column]}; "
                                 f"the text columns are: {', '.join(text) or 'none'}")
        return columns

    def _map_plan(self, column: str, mapping: dict):
        """(keys, values, keys whose value differs) as arrays; the column takes the values' type."""
        pa, _, _ = _arrow()
        old = self.types[column]
        try:  # YAML keys, and the canonical JSON of the step's key, are text: read them in the column's type
            keys = pa.array([str(k) for k in mapping], pa.string()).cast(old)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise BuildError(f"`value_map` for column {column!r} has keys ({', '.join(map(repr, mapping))}) that "
                             f"are not all {old} like the column's values") from None
        new = list(mapping.values())
        try:
            values = pa.array(new, old) if all(_fits(v, old) for v in new) else pa.array(new)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raise BuildError(f"`value_map` for column {column!r} maps to values of different types ({new!r}); "
                             f"map every value to the same type") from None
        self.types[column] = old if pa.types.is_null(values.type) else values.type
        values = values.cast(self.types[column])
        changed = keys.filter(pa.array([values.type != old or k != v for k, v in zip(keys, values, strict=True)]))
        return keys, values, changed

    def _missing_plan(self):
        """{column: strategy} and the fill values known before reading ({fill: v}); statistics come later."""
        pa, _, _ = _arrow()
        explicit, plan, fills = self._known("missing", self.p["missing"] or {}), {}, {}
        for column in self.names:
            how, named, type = explicit.get(column, self.p["missing_default"]), column in explicit, self.types[column]
            if how in ("mean", "median") and not (pa.types.is_integer(type) or pa.types.is_floating(type)):
                if named:
                    raise BuildError(f"`missing` asks for the {how} of column {column!r}, which is {type}; "
                                     f"use mode or {{fill: value}}, or `coerce` it to float")
                continue
            if isinstance(how, dict):
                if not named and not _fits(how["fill"], type):
                    continue  # missing_default: {fill: 0} fills the number columns, {fill: "?"} the text ones
                fills[column] = _scalar(how["fill"], type, column)
            if how != "keep":
                plan[column] = how
        return plan, fills

    def prepare(self, src) -> None:
        """The passes that see the whole table first: categories, statistics for missing, hashes for keep: last."""
        import pyarrow.parquet as pq

        pa, _, np = _arrow()
        self.rows_in = pq.ParquetFile(data_file(src)).metadata.num_rows
        categories = [c for c, spec in self.coerce.items() if spec == "category"]
        if categories:  # one sorted dictionary for the whole column, so batching never shows in the output
            found = {c: {self.fills[c].as_py()} if c in self.fills else set() for c in categories}
            for batch, _ in self.batches(src, stop="filter", columns=categories):
                for c in categories:
                    found[c].update(batch.column(c).dictionary.to_pylist())
            self.categories = {c: pa.array(sorted(found[c]), pa.string()) for c in categories}
        need = [c for c, how in self.missing.items() if how in ("mean", "median", "mode")]
        if need:
            acc = {c: {} for c in need}
            for batch, _ in self.batches(src, stop="fill", columns=need):
                for c in need:
                    _accumulate(self.missing[c], acc[c], batch.column(c))
            self.fills.update({c: _statistic(self.missing[c], acc[c], self.types[c], c) for c in need})
        if self.subset is not None and (self.keep == "last" or self._cheap_pass(src)):
            hashes = [row_hashes(b.select(self.subset)) for b, _ in self.batches(src, "drop_duplicates", self.subset)]
            self.kept = _kept(hashes, last=self.keep == "last")

    def _read(self, stop: str | None, columns: list | None) -> list:
        """The columns a pass up to `stop` reads: `columns`, unless an earlier rule may drop rows on others."""
        before = ORDER[:ORDER.index(stop)] if stop else ORDER
        if columns is None or any(self.p[r] and r in before for r in ("filter", "drop_empty")):
            columns = self.names
        drops = {c for c, how in self.missing.items() if how == "drop"} if "missing" in before else set()
        return [n for n in self.names if n in set(columns) | drops]

    def _cheap_pass(self, src) -> bool:
        """Whether drop_duplicates' own pass would read at most FIRST_PASS_SHARE of the input's bytes."""
        import pyarrow.parquet as pq

        read = {self.back[n] for n in self._read("drop_duplicates", self.subset)}
        meta = pq.ParquetFile(data_file(src)).metadata
        part = whole = 0
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            for j in range(group.num_columns):
                chunk = group.column(j)
                whole += chunk.total_compressed_size
                part += chunk.total_compressed_size if chunk.path_in_schema.split(".")[0] in read else 0
        return part <= FIRST_PASS_SHARE * whole

    def batches(self, src, stop: str | None = None, columns: list | None = None):
        """Yield (batch with the rules before `stop` applied, input rows read so far), counting into self.report.

        Given `columns`, only those are read, unless an earlier rule may drop rows on other columns' values.
        """
        read = self._read(stop, columns)
        self._start()
        rows = 0
        for batch in iter_batches(src, BATCH_ROWS, columns=[self.back[n] for n in read]):
            batch, offset = batch.select([self.back[n] for n in read]).rename_columns(read), rows
            rows += batch.num_rows
            for name, rule in self.rules:
                if stop and ORDER.index(name) >= ORDER.index(stop):
                    break
                batch = rule(batch, offset)
            yield (batch.cast(self.schema) if stop is None else batch), rows

    def _start(self) -> None:
        """Fresh counters and hash sets for a pass; the report lists every rule in use, in order."""
        p, report = self.p, {}

        def entry(rule, on, **fields):
            if on:
                report[rule] = {"rule": rule, **fields}

        entry("rename", p["rename"], renamed=p["rename"])
        entry("columns", p["columns"], kept=p["columns"])
        entry("drop_columns", p["drop_columns"], dropped=p["drop_columns"])
        for rule in TEXT_RULES:
            form = {"form": p["normalize_unicode"]} if rule == "normalize_unicode" else {}
            entry(rule, self.text[rule], **form, values_changed=dict.fromkeys(self.text[rule], 0))
        entry("na_values", p["na_values"], values_nulled=dict.fromkeys(self.strings, 0))
        entry("value_map", self.maps, values_changed=dict.fromkeys(self.maps, 0))
        entry("coerce", self.coerce, types=self.coerce, values_nulled=dict.fromkeys(self.coerce, 0))
        entry("filter", p["filter"], rows_dropped=0, rows_dropped_by=dict.fromkeys(p["filter"] or [], 0))
        entry("drop_empty", p["drop_empty"], rows_dropped=0)
        drops = [c for c, how in self.missing.items() if how == "drop"]
        entry("missing", self.missing, rows_dropped=0, rows_dropped_by=dict.fromkeys(drops, 0),
              values_filled=dict.fromkeys(self.fills, 0), fill_values={c: s.as_py() for c, s in self.fills.items()})
        entry("drop_duplicates", self.subset is not None, subset=self.subset, keep=self.keep, rows_dropped=0)
        entry("near_duplicates", self.near, column=self.near, rows_dropped=0)
        on = {"text": any(self.text.values()), "na_values": p["na_values"], "value_map": self.maps,
              "coerce": self.coerce, "filter": p["filter"], "drop_empty": p["drop_empty"], "missing": drops,
              "fill": self.fills, "drop_duplicates": self.subset is not None, "near_duplicates": self.near}
        self.report, self.rules = report, [(name, getattr(self, f"_{name}")) for name in ORDER if on[name]]
        self.seen, self.seen_text, self.position = _Seen(self.rows_in), _Seen(self.rows_in), 0

    def _columns(self, batch, columns):
        """(column, values) for each of `columns` in this batch (a pass may read only some)."""
        return [(c, batch.column(c)) for c in columns if c in batch.schema.names]

    def _encode(self, column: str, values):
        """A category column's strings as a dictionary array: the column's sorted categories, once known."""
        pa, pc, _ = _arrow()
        categories = self.categories.get(column)
        if categories is None:  # the pass that finds them
            return values.dictionary_encode()
        return pa.DictionaryArray.from_arrays(pc.index_in(values, value_set=categories), categories)

    def _dropped(self, rule: str, mask, key: str | None = None) -> None:
        self.report[rule]["rows_dropped"] += int(mask.sum())
        if key is not None:
            self.report[rule]["rows_dropped_by"][key] += int(mask.sum())

    # The rules, in order: each takes a batch and the input row number of its first row, and returns a batch.

    def _text(self, batch, offset):
        _, pc, _ = _arrow()
        apply = {"strip_whitespace": trim_whitespace, "fix_mojibake": _fix_mojibake,
                 "normalize_unicode": lambda c: pc.utf8_normalize(c, form=self.p["normalize_unicode"]),
                 "lowercase": pc.utf8_lower}
        for rule in TEXT_RULES:
            for column, old in self._columns(batch, self.text[rule]):
                if rule == "normalize_unicode" and _ascii(old):
                    continue  # every normal form of ASCII text is itself
                if (new := apply[rule](old)) is not old:  # trim_whitespace: old itself, when it has nothing to strip
                    batch = _set(batch, column, new)
                    self.report[rule]["values_changed"][column] += _count(pc.not_equal(old, new))
        return batch

    def _na_values(self, batch, offset):
        pa, pc, _ = _arrow()
        for column, old in self._columns(batch, self.strings):
            hit = pc.is_in(old, value_set=pa.array(self.p["na_values"], old.type))
            if nulled := _count(hit):
                batch = _set(batch, column, pc.if_else(hit, pa.scalar(None, old.type), old))
                self.report["na_values"]["values_nulled"][column] += nulled
        return batch

    def _value_map(self, batch, offset):
        pa, pc, _ = _arrow()
        for column, old in self._columns(batch, self.maps):
            keys, values, changed = self.maps[column]
            index = pc.index_in(old, value_set=keys)
            rest, bad = _cast(pc.if_else(pc.is_null(index), old, pa.scalar(None, old.type)), values.type)
            if bad is not None:
                i = pc.index(bad, True).as_py()
                raise BuildError(f"column {column!r} holds {old[i].as_py()!r} (row {offset + i}, counting from 0), "
                                 f"which is not in its `value_map` and cannot be a {values.type} like the "
                                 f"mapped values; add it to the map")
            batch = _set(batch, column, pc.coalesce(pc.take(values, index), rest))
            self.report["value_map"]["values_changed"][column] += _count(pc.is_in(old, value_set=changed))
        return batch

    def _coerce(self, batch, offset):
        _, pc, _ = _arrow()
        for column, old in self._columns(batch, self.coerce):
            new, bad = _convert(old, self.coerce[column])
            new = self._encode(column, new) if self.coerce[column] == "category" else new
            if bad is not None and self.p["errors"] == "raise":
                i = pc.index(bad, True).as_py()
                raise BuildError(f"`coerce` cannot make {old[i].as_py()!r} in column {column!r} (row {offset + i}, "
                                 f"counting from 0) a {self.coerce[column]}; fix the value, make it null with "
                                 f"`na_values` or `value_map`, or set `errors: null` to null every such value")
            batch = _set(batch, column, new)
            self.report["coerce"]["values_nulled"][column] += _count(bad) if bad is not None else 0
        return batch

    def _filter(self, batch, offset):
        import pandas as pd

        _, _, np = _arrow()
        frame = batch.to_pandas(types_mapper=pd.ArrowDtype)  # nullable types: an int column stays int
        keep = np.ones(batch.num_rows, bool)
        for expression in self.p["filter"]:
            passed = _evaluate(frame, expression)
            self._dropped("filter", keep & ~passed, expression)  # counted against the rows still kept
            keep &= passed
        return batch.filter(keep)

    def _drop_empty(self, batch, offset):
        _, pc, np = _arrow()
        empty = np.ones(batch.num_rows, bool)
        for column in batch.columns:
            empty &= pc.is_null(column, nan_is_null=True).to_numpy(zero_copy_only=False)
        self._dropped("drop_empty", empty)
        return batch.filter(~empty)

    def _missing(self, batch, offset):
        _, pc, np = _arrow()
        keep = np.ones(batch.num_rows, bool)
        for column, old in self._columns(batch, [c for c, how in self.missing.items() if how == "drop"]):
            gone = pc.is_null(old, nan_is_null=True).to_numpy(zero_copy_only=False)
            self._dropped("missing", keep & gone, column)
            keep &= ~gone
        return batch.filter(keep)

    def _fill(self, batch, offset):
        pa, pc, _ = _arrow()
        for column, old in self._columns(batch, [c for c, value in self.fills.items() if value.is_valid]):
            gap = pc.is_null(old, nan_is_null=True)
            if pa.types.is_dictionary(old.type):
                batch = _set(batch, column, self._encode(column, pc.if_else(gap, self.fills[column],
                                                                            old.dictionary_decode())))
            else:
                batch = _set(batch, column, pc.if_else(gap, self.fills[column], old))
            self.report["missing"]["values_filled"][column] += _count(gap)
        return batch

    def _drop_duplicates(self, batch, offset):
        if self.kept is not None:  # decided in prepare()
            keep = self.kept[self.position:self.position + batch.num_rows]
            self.position += batch.num_rows
        else:
            keep = self.seen.first(row_hashes(batch.select(self.subset)))
        self._dropped("drop_duplicates", ~keep)
        return batch.filter(keep)

    def _near_duplicates(self, batch, offset):
        pa, pc, np = _arrow()
        column = batch.column(self.near)
        keys = pa.array([_near_key(text) for text in column.drop_null().to_pylist()], pa.string())
        keep = np.ones(batch.num_rows, bool)  # a row without text is never a near duplicate
        keep[pc.is_valid(column).to_numpy(zero_copy_only=False)] = self.seen_text.first(column_hashes(keys))
        self._dropped("near_duplicates", ~keep)
        return batch.filter(keep)


class _Seen:
    """The 64-bit hashes seen so far: sorted runs, each over twice as long as the next (8 bytes a distinct
    row, where a Python set of ints takes ~70; a hash is merged O(log n) times, not copied with every batch),
    and a bitmap of their leading bits (one to two bytes a row of the table), so that a hash whose bit is
    clear, as most new ones' are, is known to be new without searching the runs."""

    def __init__(self, rows: int = 0):
        _, _, np = _arrow()
        bits = max(16, (8 * rows - 1).bit_length())  # 2**bits >= 8 bits a row: 1 in 8 new hashes searched
        self.shift = np.uint64(64 - bits)
        self.bitmap = np.zeros(1 << (bits - 3), np.uint8)
        self.runs: list = []

    def first(self, hashes):
        """Mask of the rows whose hash is new (not seen before, and the first of its kind in this batch)."""
        _, _, np = _arrow()
        unique, index = np.unique(hashes, return_index=True)
        slot = unique >> self.shift
        byte = (slot >> np.uint64(3)).astype(np.intp)
        bit = np.left_shift(np.uint8(1), (slot & np.uint64(7)).astype(np.uint8))
        new = (self.bitmap[byte] & bit) == 0
        maybe = np.flatnonzero(~new)
        if len(maybe):
            keys, found = unique[maybe], np.zeros(len(maybe), bool)
            for run in self.runs:
                at = run.searchsorted(keys)
                np.minimum(at, len(run) - 1, out=at)
                found |= run[at] == keys
            new[maybe[~found]] = True
        keep = np.zeros(len(hashes), bool)
        keep[index[new]] = True
        if new.any():
            byte, bit = byte[new], bit[new]  # sorted, as the hashes are: OR each byte's bits together
            starts = np.flatnonzero(np.concatenate(([True], byte[1:] != byte[:-1])))
            self.bitmap[byte[starts]] |= np.bitwise_or.reduceat(bit, starts)
            self.runs.append(unique[new])
            while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
                merged = np.concatenate(self.runs[-2:])
                merged.sort(kind="stable")  # two sorted runs: merged in linear time
                self.runs[-2:] = [merged]
        return keep


def _kept(hashes: list, last: bool):
    """The rows drop_duplicates keeps (the first, or the last, of each fingerprint), from every row's
    fingerprint, one array per batch. One sort finds the fingerprints that repeat; usually they are few, and
    a pass over the batches (backwards for `last`) keeps each one's first occurrence in a small table. Many
    repeats: np.unique over the whole table."""
    _, _, np = _arrow()
    rows = sum(len(h) for h in hashes)
    keep = np.ones(rows, bool)
    ordered = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
    ordered.sort()
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    del ordered
    if not len(repeated):
        return keep
    repeated = repeated[np.concatenate(([True], repeated[1:] != repeated[:-1]))]
    if len(repeated) > FEW_REPEATS:
        whole = np.concatenate(hashes)
        hashes.clear()
        _, index = np.unique(whole[::-1] if last else whole, return_index=True)
        del whole
        keep[:] = False
        keep[rows - 1 - index if last else index] = True
        return keep
    seen = np.zeros(len(repeated), bool)
    starts = np.cumsum([0] + [len(h) for h in hashes])
    for i in reversed(range(len(hashes))) if last else range(len(hashes)):
        batch = hashes[i][::-1] if last else hashes[i]
        mask = _firsts(batch, repeated, seen)
        keep[starts[i]:starts[i + 1]] = mask[::-1] if last else mask
    return keep


def _firsts(hashes, repeated, seen):
    """Mask of a batch's rows that are not a repeat of an earlier row, given the sorted fingerprints that
    repeat somewhere in the table and which of them were seen already (updated)."""
    _, _, np = _arrow()
    keep = np.ones(len(hashes), bool)
    at = repeated.searchsorted(hashes)
    np.minimum(at, len(repeated) - 1, out=at)
    hit = np.flatnonzero(repeated[at] == hashes)
    if len(hit):
        slots, first = np.unique(at[hit], return_index=True)
        keep[hit] = False
        keep[hit[first[~seen[slots]]]] = True
        seen[slots] = True
    return keep


def _set(batch, column: str, values):
    return batch.set_column(batch.schema.get_field_index(column), column, values)


def _count(mask) -> int:
    _, pc, _ = _arrow()
    return pc.sum(mask).as_py() or 0


def _fits(value, type) -> bool:
    """Whether a YAML value is already of the column's kind, so a map or a fill keeps the column's type."""
    pa, _, _ = _arrow()
    type = type.value_type if pa.types.is_dictionary(type) else type
    if value is None or isinstance(value, bool):
        return value is None or pa.types.is_boolean(type)
    if isinstance(value, int | float):
        return pa.types.is_floating(type) or (isinstance(value, int) and pa.types.is_integer(type))
    return isinstance(value, str) and (pa.types.is_string(type) or pa.types.is_large_string(type))


def _scalar(value, type, column: str):
    pa, _, _ = _arrow()
    type = type.value_type if pa.types.is_dictionary(type) else type
    try:
        return pa.scalar(value).cast(type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise BuildError(f"`missing` fills column {column!r} with {value!r}, which is not a {type}; "
                         f"give a fill value of the column's type") from None


def _cast(column, type):
    """(column as `type` with the values that do not convert made null, mask of those values or None)."""
    pa, pc, _ = _arrow()
    try:
        return column.cast(type), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass  # find the culprits value by value, once per distinct value

    def casts(scalar):
        try:
            return scalar.cast(type) is not None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return False

    bad = pa.array([v for v in pc.unique(column.drop_null()) if not casts(v)], column.type)
    bad = pc.is_in(column, value_set=bad)
    return pc.if_else(bad, pa.scalar(None, column.type), column).cast(type), bad


def _convert(column, spec: str):
    """coerce: (converted column, mask of values that did not convert, or None)."""
    pa, pc, _ = _arrow()
    if pa.types.is_floating(column.type):  # NaN is how pandas writes missing: null, not a bad value
        column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
    kind, _, form = spec.partition(":")
    if form:
        text, _ = _cast(column, pa.string())
        new = pc.strptime(text, format=form, unit="us", error_is_null=True)
        bad = pc.and_(pc.is_valid(text), pc.is_null(new))
        return new, bad if _count(bad) else None
    return _cast(column, pa.type_for_alias(TYPES[kind]))


def _accumulate(how: str, acc: dict, column) -> None:
    """Fold one batch of a column into what its statistic needs: values (median), sum (mean), counts (mode)."""
    pa, pc, _ = _arrow()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    values = column.filter(pc.invert(pc.is_null(column, nan_is_null=True)))
    acc["n"] = acc.get("n", 0) + len(values)
    if how == "median":
        acc.setdefault("values", []).append(values.to_numpy(zero_copy_only=False))
    elif how == "mean":
        acc["sum"] = acc.get("sum", 0) + (pc.sum(values).as_py() or 0)
    else:
        counts, found = acc.setdefault("counts", {}), pc.value_counts(values)
        for value, n in zip(found.field("values").to_pylist(), found.field("counts").to_pylist(), strict=True):
            counts[value] = counts.get(value, 0) + n


def _statistic(how: str, acc: dict, type, column: str):
    """The fill value; an int column's mean or median is rounded (half to even), so the column stays int."""
    pa, _, np = _arrow()
    value = None
    if acc.get("n") and how == "median":
        value = float(np.median(np.concatenate(acc["values"])))
    elif acc.get("n") and how == "mean":
        value = acc["sum"] / acc["n"]
    elif acc.get("n"):  # the most frequent value; a tie goes to the smallest, so the answer is deterministic
        value = min(acc["counts"], key=lambda v: (-acc["counts"][v], v))
    if value is not None and how != "mode" and pa.types.is_integer(type):
        value = round(value)
    return _scalar(value, type, column)


def _fix_mojibake(column):
    """ftfy on each distinct non-ASCII value (ASCII text cannot be mojibake), then one vectorised replace."""
    import ftfy

    pa, pc, _ = _arrow()
    config = ftfy.TextFixerConfig(**ENCODING_ONLY)
    suspects = pc.unique(column.filter(pc.invert(pc.string_is_ascii(column)))).to_pylist()
    fixed = {s: f for s in suspects if (f := ftfy.fix_text(s, config)) != s}
    if not fixed:
        return column
    index = pc.index_in(column, value_set=pa.array(list(fixed), column.type))
    return pc.coalesce(pc.take(pa.array(list(fixed.values()), column.type), index), column)


def _evaluate(frame, expression: str):
    """The rows where a filter expression is true (null counts as false), as a numpy mask."""
    import re

    import pandas as pd

    _, _, np = _arrow()
    try:
        result = frame.eval(expression)
    except Exception as e:  # pandas raises SyntaxError, NameError, TypeError, ValueError... for bad expressions
        name = re.search(r"name '(.+?)' is not defined", str(e))
        hint = f"{did_you_mean(name.group(1), frame.columns)}; the columns are: {', '.join(frame.columns)}" \
            if name else ""
        raise BuildError(f"`filter` expression {expression!r} failed: {type(e).__name__}: {e}{hint}. Filters are "
                         f"pandas expressions, such as 'age >= 17'; quote odd column names with backticks") from None
    if isinstance(result, bool | np.bool_):
        return np.full(len(frame), bool(result))
    if not isinstance(result, pd.Series) or not pd.api.types.is_bool_dtype(result):
        raise BuildError(f"`filter` expression {expression!r} gives {getattr(result, 'dtype', type(result).__name__)} "
                         f"values, not true or false for each row; write a condition, such as 'age >= 17'")
    return result.fillna(False).to_numpy(dtype=bool)


@functools.cache
def _punctuation() -> dict:
    """A str.translate table that deletes every Unicode punctuation character (categories P*)."""
    return {i: None for i in range(sys.maxunicode + 1) if unicodedata.category(chr(i)).startswith("P")}


def _near_key(text: str) -> str:
    """What near duplicates are compared by: casefolded, NFKC, without punctuation, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_punctuation())
    return " ".join(text.split())
