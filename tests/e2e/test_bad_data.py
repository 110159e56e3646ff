"""Bad data through the real CLI: the data builders (ingest, clean, validate, split, profile) fed broken files.

Every case is one way data goes wrong, as a small recipe and its files. Each is a specification of what the
user gets: the exit code (1 a step failed, 2 a recipe error found before anything runs, 3 data that fails its
schema); one error that names the file and line, or the column and the rule, and the param that fixes it; no
traceback, neither on stderr nor in the build log; and a store that gained nothing from the failure. To prove
the last, the steps upstream of the failure are built first (`--target`), the store is snapshotted, and after
the bad build the snapshot is the same but for the failed build's log, derivation, lock and empty scratch
folders: the failing step has no artifact, no trace row and no root (`modelbuild roots`), and every step
after it is reported skipped. A recipe error (exit 2) runs nothing, so it does not even create the store.

The cases run concurrently, each in its own project and store, when the module's first case asks for them
(`runs`); the tests then check what each did.
"""

from __future__ import annotations

import json
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import Cli

pytest.importorskip("pandera")
pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

NAME = "people"  # every recipe's name: its roots are people:STEP
TABLES = ("artifacts", "trace", "refs", "roots")  # not attempts (a failed build records one), not stat_cache
SKELETON = {"objects", "objects/.links", "roots", "trace.sqlite", "logs", "drv", "locks", "tmp"}
FAILED_BUILD_KEEPS = ("logs/", "drv/", "locks/", "tmp/", "cache")  # tmp/ only as empty folders, checked apart;
# cache/ holds code hashes, which hashing alone may fill (like the stat cache)

REPORT = """
  report:
    builder: command
    inputs: {{table: {src}}}
    params: {{cmd: 'echo ok > "$MB_OUT/ok"'}}
"""


# ---- the recipes: one per builder under test, each with the steps that a failure must skip ------------------
def ingest(data: str = "people.csv", params: str = "{}") -> str:
    """raw (ingest) -> tidy (clean) -> report: a failing ingest skips both, the second one transitively."""
    return f"""
name: {NAME}
steps:
  raw:
    builder: ingest
    inputs: {{data: {{path: {data}}}}}
    params: {params}
  tidy:
    builder: clean
    inputs: {{table: raw}}
""" + REPORT.format(src="tidy")


def clean(params: str) -> str:
    """raw (ingest) -> tidy (clean with these params) -> report."""
    return f"""
name: {NAME}
steps:
  raw:
    builder: ingest
    inputs: {{data: {{path: people.csv}}}}
  tidy:
    builder: clean
    inputs: {{table: raw}}
    params: {params}
""" + REPORT.format(src="tidy")


def validate(schema: str, **params) -> str:
    """raw (ingest) -> check (validate against this flow-style schema, with these params) -> report."""
    extra = "".join(f", {k}: {v}" for k, v in params.items())
    return f"""
name: {NAME}
steps:
  raw:
    builder: ingest
    inputs: {{data: {{path: people.csv}}}}
  check:
    builder: validate
    inputs: {{table: raw}}
    params: {{schema: {schema}{extra}}}
""" + REPORT.format(src="check")


def split(params: str, profile: str = "{table: train}") -> str:
    """raw (ingest) -> parts (split) -> stats (profile of one split) -> report."""
    return f"""
name: {NAME}
steps:
  raw:
    builder: ingest
    inputs: {{data: {{path: people.csv}}}}
  parts:
    builder: split
    inputs: {{data: raw}}
    params: {params}
  stats:
    builder: profile
    inputs: {{data: parts}}
    params: {profile}
""" + REPORT.format(src="stats")


# ---- the data --------------------------------------------------------------------------------------------
PEOPLE = """\
id,age,state,email
0,34,CA,ann@example.org
1,51,NY,bob@example.org
2,28,TX,cy@example.org
3,45,CA,di@example.org
"""


def people(n: int, bad=()) -> str:
    """n rows, id = row number; the rows in `bad` have age -5."""
    rows = "".join(f"{i},{-5 if i in bad else 18 + i % 60},{'CA' if i % 2 else 'NY'}\n" for i in range(n))
    return "id,age,state\n" + rows


QUARANTINE_OVER = (7, 21, 42, 63, 84, 99)  # 6 bad rows of 100: over max_bad_fraction 0.05
AGE = "{columns: {id: {dtype: int64, unique: true}, age: {dtype: int64, checks: {ge: 0}}}}"
TEXT = repr(str(pd.Series(["a"]).dtype))  # the dtype of a column of text: 'str' (pandas 3) or 'object'


@dataclass
class Case:
    recipe: str  # written as recipe.yaml
    files: dict  # name -> text (written as utf-8) or bytes
    code: int
    words: tuple  # each must appear in the error
    failed: str | None = None  # the step that fails; None for a recipe error (exit 2), which runs nothing
    built: tuple = ()  # the steps upstream of it, in order: built first, then only these are in the store
    skipped: tuple = ()  # the steps after it, reported skipped
    table: tuple = ()  # validate: (column, check, failures, first failure cases, first rows) rows of its table


ING = {"failed": "raw", "skipped": ("tidy", "report")}
CLEAN = {"failed": "tidy", "built": ("raw",), "skipped": ("report",)}
VALID = {"failed": "check", "built": ("raw",), "skipped": ("report",)}
ALL_TABLE = "A table-wide failure (a missing or extra column, a dtype, the row count) cannot be quarantined"

CASES = {
    # ---- ingest: the file itself is broken ------------------------------------------------------------
    "latin1-read-as-utf8": Case(
        ingest(), {"people.csv": "id,name\n0,Ann\n1,Ren\xe9\n".encode("latin-1")}, 1,
        ("step 'raw'", "people.csv, line 3, column 6", "byte 0xe9 is not valid utf-8", "`encoding:` param",
         "encoding: latin-1"), **ING),
    "latin1-in-the-second-file-of-a-folder": Case(
        ingest("people"), {"people/a.csv": "id,name\n0,Ann\n", "people/more/b.csv": b"id,name\n1,Ren\xe9\n"}, 1,
        ("more/b.csv, line 2, column 6", "byte 0xe9 is not valid utf-8", "`encoding:` param"), **ING),
    "ragged-row-with-an-extra-field": Case(
        ingest(), {"people.csv": "id,name\n0,Ann\n1,Bob,NY\n2,Cy\n"}, 1,
        ("people.csv, line 3", "expected 2 fields but found 3 in '1,Bob,NY'", "unquoted ','", "`delimiter:`"),
        **ING),
    "ragged-row-missing-a-field": Case(
        ingest(), {"people.csv": "id,name\n0,Ann\n1\n2,Cy\n"}, 1,
        ("people.csv, line 3", "expected 2 fields but found 1 in '1'", "missing field"), **ING),
    "ragged-row-after-skipped-lines": Case(
        ingest(params="{skip_rows: 1, comment: '#'}"),
        {"people.csv": "exported 2024-01-01\nid,name\n# a comment\n0,Ann\n1,Bob,NY\n"}, 1,
        ("people.csv, line 5", "expected 2 fields but found 3"), **ING),
    "empty-csv": Case(
        ingest(), {"people.csv": ""}, 1, ("people.csv is empty", "add rows to it"), **ING),
    "jsonl-line-that-is-not-json": Case(
        ingest("people.jsonl"),
        {"people.jsonl": '{"id": 0, "name": "Ann"}\n{"id": 1, "name": "Bob"\n{"id": 2, "name": "Cy"}\n'}, 1,
        ("people.jsonl, line 2", "invalid JSON", "one JSON object per line"), **ING),
    "jsonl-field-that-changes-type": Case(
        ingest("people.jsonl"), {"people.jsonl": '{"id": 0, "age": 34}\n{"id": 1, "age": "old"}\n'}, 1,
        ("people.jsonl, line 2", "field 'age' is a string here but a number on line 1"), **ING),
    "folder-files-with-other-columns": Case(
        ingest("people"), {"people/a.csv": "id,name\n0,Ann\n", "people/b.csv": "id,nam\n1,Bob\n"}, 1,
        ("b.csv has columns (id, nam) but a.csv has (id, name)", "`columns:`"), **ING),
    "duplicate-column-names": Case(
        ingest(), {"people.csv": "id,name,id\n0,Ann,7\n"}, 1,
        ("people.csv has more than one column named 'id'", "`names:`"), **ING),
    "unterminated-quote": Case(
        ingest(), {"people.csv": 'id,name\n0,"Ann\n1,Bob\n2,Cy\n'}, 1,
        ("people.csv, line 2: a quoted value opens here and no quote closes it", "Close the quote",
         "`quoting: false`"), **ING),
    "unterminated-quote-after-a-quoted-line-break": Case(
        ingest(), {"people.csv": 'id,name\n0,"Ann\nLee"\n1,"Bob\n2,Cy\n'}, 1,
        ("people.csv, line 4: a quoted value opens here and no quote closes it",), **ING),
    "utf16-read-as-utf8": Case(
        ingest(), {"people.csv": "id,name\n0,Ann\n1,Bob\n".encode("utf-16")}, 1,
        ("people.csv looks like UTF-16 (a UTF-16 byte-order mark), not utf-8", "`encoding: utf-16`"), **ING),
    # ---- clean: rules that do not fit the table -------------------------------------------------------
    "clean-names-a-missing-column": Case(
        clean("{coerce: {agee: int}}"), {"people.csv": PEOPLE}, 1,
        ("`coerce` names column 'agee'", "did you mean 'age'?", "its columns then are: id, age, state, email"),
        **CLEAN),
    "clean-leaves-no-rows": Case(
        clean("{na_values: ['?'], filter: ['age >= 18'], missing: {state: drop}}"),
        {"people.csv": "id,age,state\n0,12,CA\n1,40,?\n2,15,NY\n3,50,?\n"}, 1,
        ("the table is empty after cleaning: of 4 rows", "filter dropped 2 ('age >= 18': 2)",
         "missing dropped 2 ('state': 2)", "Loosen those rules", "allow_empty: true"), **CLEAN),
    "clean-filter-that-is-not-an-expression": Case(
        clean("{filter: ['age >>= 17']}"), {"people.csv": PEOPLE}, 1,
        ("`filter` expression 'age >>= 17' failed", "pandas expressions, such as 'age >= 17'"), **CLEAN),
    "clean-filter-on-a-missing-column": Case(
        clean("{filter: ['agee >= 17']}"), {"people.csv": PEOPLE}, 1,
        ("`filter` expression 'agee >= 17' failed", "name 'agee' is not defined", "did you mean 'age'?",
         "the columns are: id, age, state, email"), **CLEAN),
    "clean-coerce-raises-on-a-bad-value": Case(
        clean("{coerce: {age: int}, errors: raise}"), {"people.csv": PEOPLE.replace("2,28,", "2,forty,")}, 1,
        ("`coerce` cannot make 'forty' in column 'age' (row 2, counting from 0)", "`errors: null`"), **CLEAN),
    # ---- validate: data that fails its schema ---------------------------------------------------------
    "schema-column-missing": Case(
        validate("{columns: {id: {dtype: int64}, zip: {dtype: str}}}"), {"people.csv": PEOPLE}, 3,
        ("step 'check': the table (4 rows) fails the schema as a whole", ALL_TABLE),
        table=(("zip", "required", "table", "'zip'", "-"),), **VALID),
    "text-in-an-int-column": Case(
        validate("{columns: {age: {dtype: int64}}}"), {"people.csv": PEOPLE.replace("2,28,", "2,forty,")}, 3,
        ("step 'check': the table (4 rows) fails the schema as a whole", ALL_TABLE, "set `coerce: true`"),
        table=(("age", "dtype(int64)", "table", TEXT, "-"),), **VALID),
    "text-in-a-category-column": Case(
        validate("{columns: {state: {dtype: category}}}"), {"people.csv": PEOPLE}, 3,
        ("step 'check': the table (4 rows) fails the schema as a whole", ALL_TABLE),
        table=(("state", "dtype(category)", "table", TEXT, "-"),), **VALID),
    "text-that-does-not-coerce": Case(
        validate("{columns: {age: {dtype: int64, checks: {ge: 0}}}, coerce: true}"),
        {"people.csv": PEOPLE.replace("2,28,", "2,forty,").replace("3,45,", "3,-45,")}, 3,
        ("step 'check': 2 rows of 4 fail the schema", "on_fail: quarantine"),
        table=(("age", "coerce(int64)", "1", "'forty'", "2"), ("age", "ge(0)", "1", "-45", "3")), **VALID),
    "check-that-cannot-apply-to-the-column": Case(
        validate("{columns: {age: {checks: {str_matches: '^[0-9]+$'}}}}"), {"people.csv": PEOPLE}, 1,
        ("step 'check': check str_matches('^[0-9]+$') cannot apply to column 'age', which is int64: it raised",
         "declaring the column's dtype"), **VALID),
    "text-in-an-int-column-quarantined": Case(
        validate("{columns: {age: {dtype: int64}}}", on_fail="quarantine", max_bad_fraction=0.5),
        {"people.csv": PEOPLE.replace("2,28,", "2,forty,")}, 3, ("dtype(int64)", ALL_TABLE), **VALID),
    "values-out-of-range": Case(
        validate("{columns: {age: {dtype: int64, checks: {ge: 0, le: 120}}}}"),
        {"people.csv": "id,age\n0,34\n1,-1\n2,5\n3,200\n4,130\n"}, 3,
        ("step 'check': 3 rows of 5 fail the schema", "on_fail: quarantine"),
        table=(("age", "ge(0)", "1", "-1", "1"), ("age", "le(120)", "2", "200, 130", "3, 4")), **VALID),
    "duplicate-keys-across-batches": Case(
        validate("{columns: {id: {dtype: int64, unique: true}}}", batch_rows=2),
        {"people.csv": "id,age\n1,34\n2,51\n3,28\n1,45\n2,19\n5,60\n"}, 3,
        ("step 'check': 2 rows of 6 fail the schema",), table=(("id", "unique", "2", "1, 2", "3, 4"),), **VALID),
    "value-not-in-isin": Case(
        validate("{columns: {state: {dtype: str, checks: {isin: [CA, NY, TX]}}}}"),
        {"people.csv": PEOPLE.replace("3,45,CA", "3,45,ZZ")}, 3, ("1 rows of 4 fail the schema",),
        table=(("state", "isin(['CA', 'NY', 'TX'])", "1", "'ZZ'", "3"),), **VALID),
    "regex-mismatch": Case(
        validate("{columns: {email: {dtype: str, checks: {str_matches: '^[^@]+@[^@]+$'}}}}"),
        {"people.csv": PEOPLE.replace("bob@example.org", "bob-at-example.org")}, 3, ("1 rows of 4 fail the schema",),
        table=(("email", "str_matches('^[^@]+@[^@]+$')", "1", "'bob-at-example.org'", "1"),), **VALID),
    "null-in-a-non-nullable-column": Case(
        validate("{columns: {email: {dtype: str}}}"), {"people.csv": PEOPLE.replace("cy@example.org", "")}, 3,
        ("1 rows of 4 fail the schema",), table=(("email", "not null", "1", "null", "2"),), **VALID),
    "too-few-rows": Case(
        validate("{columns: {id: {dtype: int64}}, rows: {min: 10}}"), {"people.csv": PEOPLE}, 3,
        ("the table (4 rows) fails the schema as a whole", ALL_TABLE),
        table=(("(table)", "rows(min=10)", "table", "4 rows", "-"),), **VALID),
    "quarantine-over-max-bad-fraction": Case(
        validate(AGE, on_fail="quarantine", max_bad_fraction=0.05), {"people.csv": people(100, QUARANTINE_OVER)}, 3,
        ("step 'check': 6 rows of 100 fail the schema (6.0%), more than max_bad_fraction 0.05 allows",
         "raise `max_bad_fraction`"),
        table=(("age", "ge(0)", "6", "-5, -5, -5, -5, -5", "7, 21, 42, 63, 84"),), **VALID),
    # ---- the recipe is wrong: refused before anything runs --------------------------------------------
    "schema-key-typo": Case(
        validate("{columns: {email: {dtype: str, nulable: true}}}"), {"people.csv": PEOPLE}, 2,
        ("file recipe.yaml, step 'check', key 'params.schema.columns.email.nulable'", "unknown column key 'nulable'",
         "did you mean 'nullable'?")),
    "unknown-check-name": Case(
        validate("{columns: {email: {checks: {str_match: '@'}}}}"), {"people.csv": PEOPLE}, 2,
        ("file recipe.yaml, step 'check', key 'params.schema.columns.email.checks.str_match'",
         "unknown check key 'str_match'", "did you mean 'str_matches'?", "it takes: ge, le, gt, lt")),
    "check-alias": Case(
        validate("{columns: {age: {checks: {greater_than: 17}}}}"), {"people.csv": PEOPLE}, 2,
        ("key 'params.schema.columns.age.checks.greater_than'", "unknown check key 'greater_than' (write it as gt)")),
    "check-that-cannot-apply-to-the-dtype": Case(
        validate("{columns: {age: {dtype: int64, checks: {str_length: {max: 3}}}}}"), {"people.csv": PEOPLE}, 2,
        ("key 'params.schema.columns.age.checks.str_length'", "str_length checks text, and the column's dtype is "
         "int64")),
    "bound-that-cannot-apply-to-the-dtype": Case(
        validate("{columns: {age: {dtype: int64, checks: {ge: a}}}}"), {"people.csv": PEOPLE}, 2,
        ("key 'params.schema.columns.age.checks.ge'", "the column is int64, so ge takes a number, got 'a'")),
    "unknown-dtype": Case(
        validate("{columns: {age: {dtype: int46}}}"), {"people.csv": PEOPLE}, 2,
        ("key 'params.schema.columns.age.dtype'", "unknown dtype 'int46'", "did you mean 'int64'?")),
    "split-fractions-do-not-sum-to-1": Case(
        split("{fractions: {train: 0.8, validation: 0.1, test: 0.2}}"), {"people.csv": PEOPLE}, 2,
        ("file recipe.yaml, step 'parts', key 'params.fractions'", "fractions must sum to 1",
         "train: 0.8, validation: 0.1, test: 0.2 sum to 1.1")),
    # ---- split and profile: a column the params name is not there -------------------------------------
    "stratify-column-missing": Case(
        split("{method: stratified, stratify: stat, fractions: {train: 0.5, test: 0.5}}"), {"people.csv": PEOPLE}, 1,
        ("step 'parts': params.stratify names column 'stat'", "did you mean 'state'?",
         "its columns are: id, age, state, email"), failed="parts", built=("raw",), skipped=("stats", "report")),
    "profile-text-column-missing": Case(
        split("{fractions: {train: 0.5, test: 0.5}}", "{table: train, text_columns: [bio]}"), {"people.csv": PEOPLE},
        1, ("step 'stats': params.text_columns[0] names column 'bio'", "its columns are: id, age, state, email"),
        failed="stats", built=("raw", "parts"), skipped=("report",)),
}

DEFECTS: dict[str, str] = {}  # case -> the known defect that fails it: run as a strict xfail until fixed



def snapshot(store: Path) -> tuple[set[str], dict]:
    """The store's files (but SQLite's WAL side files) and the row counts of its tables; empty if no store."""
    if not store.exists():
        return set(), dict.fromkeys(TABLES, 0)
    files = {p.relative_to(store).as_posix() for p in store.rglob("*") if not p.name.startswith("trace.sqlite-")}
    db = sqlite3.connect(store / "trace.sqlite")
    try:
        rows = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        db.close()
    return files, rows


def traced_keys(store: Path) -> set[str]:
    db = sqlite3.connect(store / "trace.sqlite")
    try:
        return {key for (key,) in db.execute("SELECT key FROM trace")}
    finally:
        db.close()


def failure_table(message: str) -> set[tuple[str, ...]]:
    """The rows of validate's failure table, cells stripped."""
    return {tuple(c.strip() for c in line.split(" | ")) for line in message.splitlines() if " | " in line}


@dataclass
class Run:
    """What one case did: the bad build (JSON, or the plain run for a recipe error) and the store around it."""

    cli: Cli
    result: dict | None = None  # `build --json`, with by_step and stderr
    proc: object = None  # the plain `build` of a recipe error
    before: tuple = ()  # snapshot after the upstream build
    after: tuple = ()  # snapshot after the bad build
    traced: set = field(default_factory=set)
    roots: list = field(default_factory=list)


def run_case(case: Case, root: Path) -> Run:
    """Write the case into `root`, build its upstream steps, snapshot, build it, snapshot again."""
    project = root / "project"
    project.mkdir(parents=True)
    (project / "recipe.yaml").write_text(case.recipe)
    for name, content in case.files.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content, encoding="utf-8")
    run = Run(Cli(project, root / "store"))
    if case.code == 2:
        run.proc = run.cli("build", "recipe.yaml", check=None)
        return run
    if case.built:
        run.cli("build", "recipe.yaml", "--target", case.built[-1])
    run.before = snapshot(run.cli.store)
    run.result = run.cli.build(check=None)
    run.after = snapshot(run.cli.store)
    run.traced = traced_keys(run.cli.store)
    run.roots = json.loads(run.cli("roots", "--json").stdout)
    return run


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """The selected cases, run concurrently (each in its own project and store); name -> Future of its Run."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if item.module is request.module and "name" in getattr(getattr(item, "callspec", None), "params", {})]
    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        yield {name: pool.submit(run_case, CASES[name], tmp_path_factory.mktemp(name)) for name in selected}


@pytest.mark.parametrize("name", [
    pytest.param(name, id=name, marks=[
        pytest.mark.xfail(strict=True, raises=AssertionError, reason=DEFECTS[name])] if name in DEFECTS else [])
    for name in CASES])
def test_bad_data(name, runs):
    case, run = CASES[name], runs[name].result()
    store = run.cli.store

    if case.code == 2:  # refused while the recipe is checked: no step runs, no store is made
        proc = run.proc
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
        assert proc.returncode == 2, f"exit {proc.returncode}, expected 2\n{proc.stdout}\n{proc.stderr}"
        assert proc.stdout == "", proc.stdout
        message = proc.stderr.strip()
        assert message.startswith("error: file recipe.yaml, ") and "\n" not in message, proc.stderr
        for word in case.words:
            assert word in message, f"{word!r} not in:\n{message}"
        assert not store.exists(), "a recipe error ran a step"
        return

    result = run.result
    assert "Traceback" not in result["stderr"], result["stderr"]
    statuses = {s["step"]: s["status"] for s in result["steps"]}
    assert result["exit_code"] == case.code, f"exit {result['exit_code']}, expected {case.code}: {statuses}"
    assert statuses == {
        **dict.fromkeys(case.built, "cached"), case.failed: "failed", **dict.fromkeys(case.skipped, "skipped")}
    for step in case.skipped:
        assert result["by_step"][step]["error"] == "an input failed"

    failed = result["by_step"][case.failed]
    message, key = failed["error"], failed["key"]
    assert message.startswith(f"step '{case.failed}'"), message
    assert "full traceback" not in message, message  # a builder crash, not a failure it reported
    for word in case.words:
        assert word in message, f"{word!r} not in:\n{message}"
    rows = failure_table(message)
    for row in case.table:
        assert row in rows, f"{row} not in the failure table:\n{message}"
    log = store / "logs" / f"{key}.log"
    assert f"Its build log is {log}" in message
    assert "Traceback" not in log.read_text(), log.read_text()

    # the store: what the upstream build left, plus the failed build's log, derivation, lock and empty scratch
    (before_files, before_rows), (files, rows) = run.before, run.after
    assert rows == before_rows
    new = files - before_files
    assert not [f for f in new if not f.startswith(FAILED_BUILD_KEEPS) and f not in SKELETON], sorted(new)
    assert not [f for f in new if f.startswith("tmp/") and (store / f).is_file()], sorted(new)
    built = [result["by_step"][step] for step in case.built]
    assert {f.split("/")[1] for f in files if f.count("/") == 1 and f.startswith("objects/")} - {".links"} == {
        Path(s["path"]).name for s in built}
    assert run.traced == {s["key"] for s in built} and key not in run.traced
    assert {r["name"] for r in run.roots} == {f"{NAME}:{step}" for step in case.built}


def test_quarantine_sets_3_bad_rows_of_100_aside(project, cli):
    """3 bad rows of 100 under max_bad_fraction 0.05: the step builds, with exactly those rows in quarantine/."""
    bad = (7, 42, 99)
    project.write("people.csv", people(100, bad))
    (project / "recipe.yaml").write_text(validate(AGE, on_fail="quarantine", max_bad_fraction=0.05))
    result = cli.build()
    assert cli.statuses(result) == {"raw": "built", "check": "built", "report": "built"}
    assert "Traceback" not in result["stderr"]
    out = Path(result["by_step"]["check"]["path"])

    aside = pq.read_table(out / "quarantine" / "data.parquet")
    assert aside.num_rows == 3
    assert [(r["id"], r["age"], r["failure"], r["row"]) for r in aside.to_pylist()] == [
        (i, -5, "age: ge(0)", i) for i in bad]
    kept = pq.read_table(out / "data.parquet")
    assert kept.num_rows == 97 and not set(bad) & set(kept.column("id").to_pylist())
    assert kept.column_names == ["id", "age", "state"]

    report = json.loads((out / "validation.json").read_text())
    assert (report["rows"], report["passed_rows"], report["failed_rows"]) == (100, 97, 3)
    checks = {(c["column"], c["check"]): c["failures"] for c in report["checks"]}
    assert checks[("age", "ge(0)")] == 3 and checks[("id", "unique")] == 0
    assert [(f["column"], f["check"], f["failures"], f["rows"]) for f in report["failures"]] == [
        ("age", "ge(0)", 3, list(bad))]
    assert {r["name"] for r in json.loads(cli("roots", "--json").stdout)} == {
        f"{NAME}:raw", f"{NAME}:check", f"{NAME}:report"}


def test_coerce_sets_text_that_does_not_convert_aside_and_the_rest_are_int64(project, cli):
    """`coerce: true`: 'forty' cannot be cast, so it fails its row; quarantine sets it aside, and the rows kept
    have the declared dtype."""
    project.write("people.csv", PEOPLE.replace("2,28,", "2,forty,"))
    (project / "recipe.yaml").write_text(validate("{columns: {age: {dtype: int64}}, coerce: true}",
                                                  on_fail="quarantine", max_bad_fraction=0.5))
    result = cli.build()
    assert cli.statuses(result) == {"raw": "built", "check": "built", "report": "built"}
    out = Path(result["by_step"]["check"]["path"])
    kept = pq.read_table(out / "data.parquet")
    assert kept.schema.field("age").type == pa.int64() and kept.column("age").to_pylist() == [34, 51, 45]
    aside = pq.read_table(out / "quarantine" / "data.parquet").to_pylist()
    assert [(r["id"], r["age"], r["failure"], r["row"]) for r in aside] == [(2, "forty", "age: coerce(int64)", 2)]
