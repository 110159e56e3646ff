"""`modelbuild diff` of table artifacts through the real CLI: rows added and removed, schema, statistics."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pyarrow")

RECIPE = """
name: people
steps:
  raw:
    builder: ingest
    inputs: {data: {path: people.csv}}
  parts:
    builder: split
    inputs: {data: raw}
    params: {method: group, group: id, fractions: {train: 0.6, validation: 0.2, test: 0.2}}
  reference:
    builder: profile
    inputs: {data: parts}
    params: {table: train}
"""

ROWS = {i: (20 + (i * 7) % 50, ["Paris", "Oslo", "Lima"][i % 3]) for i in range(60)}


def csv(rows: dict) -> str:
    return "id,age,city\n" + "".join(f"{i},{age},{city}\n" for i, (age, city) in sorted(rows.items()))


def diff(cli, a, b) -> dict:
    return json.loads(cli("diff", "--json", a, b).stdout)


def counts(effect: str) -> tuple[int, int]:
    """(added, removed) from '...: rows: 3 added, 2 removed (60 -> 61)'."""
    words = effect.split("rows: ")[1].split()
    return int(words[0]), int(words[2])


@pytest.fixture
def edited(project, cli):
    """Build, then change one row, add two and remove one, and build again: (old, new) step results."""
    project.write("recipe.yaml", RECIPE)
    project.write("people.csv", csv(ROWS))
    before = cli.build()["by_step"]
    rows = dict(ROWS)
    rows[5] = (99, rows[5][1])  # changed: one removed, one added
    rows[100], rows[101] = (70, "Lima"), (80, "Rome")  # added
    del rows[10]  # removed
    project.write("people.csv", csv(rows))
    after = cli.build()["by_step"]
    return before, after


def test_diff_of_two_ingested_tables_counts_rows_and_shows_the_mean_shift(cli, edited):
    before, after = edited
    d = diff(cli, before["raw"]["path"], after["raw"]["path"])
    assert any("people.csv" in c for c in d["causes"])
    assert "raw: rows: 3 added, 2 removed (60 -> 61)" in d["effects"]
    old_mean = sum(age for age, _ in ROWS.values()) / 60
    mean = [e for e in d["effects"] if e.startswith("raw: age: mean ")]
    assert len(mean) == 1 and mean[0].startswith(f"raw: age: mean {old_mean:.2f} -> "), d["effects"]
    assert mean[0].endswith("%)")
    assert "raw: age: max 69 -> 99" in d["effects"]
    assert "raw: city: distinct 3 -> 4" in d["effects"]
    text = cli("diff", before["raw"]["path"], after["raw"]["path"]).stdout
    assert "effects:" in text and "raw: rows: 3 added, 2 removed (60 -> 61)" in text


def test_diff_of_split_artifacts_goes_table_by_table(cli, edited):
    before, after = edited
    d = diff(cli, before["parts"]["path"], after["parts"]["path"])
    per_split = {e.split(":")[0]: counts(e) for e in d["effects"] if e.startswith("parts/") and ": rows: " in e}
    assert set(per_split) <= {"parts/train", "parts/validation", "parts/test"} and per_split
    assert sum(a for a, _ in per_split.values()) == 3 and sum(r for _, r in per_split.values()) == 2
    assert "parts <- raw: rows: 3 added, 2 removed (60 -> 61)" in d["effects"]  # and through its input
    unchanged = {"parts/train", "parts/validation", "parts/test"} - set(per_split)
    assert not [e for e in d["effects"] if e.split(":")[0] in unchanged and "rows" in e]
    profile = json.loads(open(f"{after['reference']['path']}/profile.json").read())
    assert profile["rows"] == json.loads(open(f"{after['parts']['path']}/split.json").read())["rows"]["train"]


def test_widening_a_column_changes_its_type_but_not_its_other_rows(project, cli):
    project.write("recipe.yaml", RECIPE)
    project.write("people.csv", csv(ROWS))
    before = cli.build()["by_step"]["raw"]["path"]
    rows = dict(ROWS)
    rows[7] = (30.5, rows[7][1])  # ints become doubles; the 59 other rows hash as before
    project.write("people.csv", csv(rows).replace(",Paris\n", ",Paris,x\n").replace("id,age,city\n",
                                                                                     "id,age,city,note\n")
                  .replace(",Oslo\n", ",Oslo,\n").replace(",Lima\n", ",Lima,\n"))
    after = cli.build()["by_step"]["raw"]["path"]
    effects = diff(cli, before, after)["effects"]
    assert "raw: column age type int64 -> double" in effects
    assert "raw: column note added (string)" in effects
    # every row gained a column, so every row differs; without the new column only one would
    assert "raw: rows: 60 added, 60 removed (60 -> 60)" in effects


def test_a_changed_type_alone_keeps_the_rows(project, cli):
    project.write("recipe.yaml", RECIPE)
    project.write("people.csv", csv(ROWS))
    before = cli.build()["by_step"]["raw"]["path"]
    project.write("people.csv", csv(ROWS).replace("\n0,20,", "\n0,20.0,"))  # 20.0: the column reads as double
    after = cli.build()["by_step"]["raw"]["path"]
    effects = diff(cli, before, after)["effects"]
    assert "raw: column age type int64 -> double" in effects
    assert not [e for e in effects if "rows" in e]


def test_same_rows_in_another_order_show_no_row_change(project, cli):
    project.write("recipe.yaml", RECIPE)
    project.write("people.csv", csv(ROWS))
    before = cli.build()["by_step"]["raw"]["path"]
    lines = csv(ROWS).splitlines()
    project.write("people.csv", "\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    after = cli.build()["by_step"]["raw"]["path"]
    assert before != after  # the Parquet file differs ...
    effects = diff(cli, before, after)["effects"]
    assert not [e for e in effects if e.startswith("raw: ")]  # ... but no row, column or statistic does
