"""The split builder: shares to the row, classes kept per split, groups never shared, time never mixed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

pa = pytest.importorskip("pyarrow")
np = pytest.importorskip("numpy")

from modelbuild.builders.base import BuildContext  # noqa: E402
from modelbuild.builders.split import Split  # noqa: E402
from modelbuild.errors import BuildError, RecipeError  # noqa: E402
from modelbuild.table import read_table, write_table  # noqa: E402

THREE = {"train": 0.8, "validation": 0.1, "test": 0.1}


def table(n, seed=0, classes=("a", "b", "c", None), p=(0.6, 0.25, 0.1, 0.05), users=None, times=None):
    rng = np.random.default_rng(seed)
    return pa.table({
        "id": np.arange(n),
        "label": pa.array(rng.choice(np.array(classes, dtype=object), n, p=p).tolist(), pa.string()),
        "user": rng.integers(0, users or max(n // 3, 1), n),
        "when": rng.integers(0, times or 10 * n + 1, n),
        "x": rng.normal(size=n),
    })


def run(tmp_path, data, out="out", **params):
    """Split `data` (a pyarrow Table); return ({split: Table}, split.json)."""
    source = tmp_path / f"{out}-in"
    if not source.exists():
        write_table(data, source)
    (tmp_path / out).mkdir()
    params = Split().normalise(params, file="r.yaml", step="split")
    Split().build(BuildContext(step="split", inputs={"data": source}, out=tmp_path / out, params=params,
                               recipe_dir=tmp_path))
    info = json.loads((tmp_path / out / "split.json").read_text())
    return {name: read_table(tmp_path / out / name) for name in info["order"]}, info


def ids(t):
    return t.column("id").to_pylist()


def within_one_row(parts, n, fractions):
    for name, f in fractions.items():
        assert abs(parts[name].num_rows - n * f) < 1, (name, parts[name].num_rows, n * f)
    assert sum(t.num_rows for t in parts.values()) == n


@pytest.mark.parametrize("n", [0, 1, 2, 7, 10, 101, 1003])
@pytest.mark.parametrize("fractions", [THREE, {"train": 0.7, "test": 0.3}, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3},
                                       {"a": 0.5, "b": 0.0, "c": 0.25, "d": 0.25}])
@pytest.mark.parametrize("method", ["random", "stratified", "time"])
def test_fractions_are_honoured_to_the_row(tmp_path, n, fractions, method):
    column = {"random": {}, "stratified": {"stratify": "label"}, "time": {"time": "id"}}[method]
    parts, info = run(tmp_path, table(n), fractions=fractions, method=method, **column)
    within_one_row(parts, n, fractions)
    assert info["rows"] == {name: t.num_rows for name, t in parts.items()}
    assert sorted(i for t in parts.values() for i in ids(t)) == list(range(n))  # every row once


def test_rows_keep_their_input_order_within_each_split(tmp_path):
    for method, column in (("random", {}), ("stratified", {"stratify": "label"}), ("group", {"group": "user"})):
        parts, _ = run(tmp_path, table(500), out=method, method=method, **column)
        for t in parts.values():
            assert ids(t) == sorted(ids(t))


def test_each_file_is_a_table_artifact(tmp_path):
    run(tmp_path, table(50))
    for name in THREE:
        assert sorted(p.name for p in (tmp_path / "out" / name).iterdir()) == [
            "data.parquet", "rows.xxh", "stats.json", "table.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["split.json", "test", "train", "validation"]


@pytest.mark.parametrize("n, classes, p", [
    (1000, ("a", "b", "c", None), (0.6, 0.25, 0.1, 0.05)),
    (37, ("a", "b", "c", "d", "e"), (0.4, 0.3, 0.2, 0.07, 0.03)),
    (2000, tuple(f"k{i}" for i in range(40)), tuple([1 / 40] * 40)),
])
def test_stratified_keeps_each_class_within_one_row(tmp_path, n, classes, p):
    data = table(n, classes=classes, p=p)
    parts, info = run(tmp_path, data, method="stratified", stratify="label", fractions=THREE)
    within_one_row(parts, n, THREE)
    total = Counter(data.column("label").to_pylist())
    for name, t in parts.items():
        counts = Counter(t.column("label").to_pylist())
        for cls, size in total.items():
            assert abs(counts[cls] - size * THREE[name]) < 1, (name, cls, counts[cls], size * THREE[name])
        recorded = {json.loads(k) if k == "null" else k: v for k, v in info["classes"][name].items()}
        assert recorded == {cls: counts[cls] for cls in total}


def test_group_values_never_appear_in_two_splits(tmp_path):
    data = table(6000, users=1500)
    parts, info = run(tmp_path, data, method="group", group="user", fractions=THREE)
    seen = [set(t.column("user").to_pylist()) for t in parts.values()]
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1:])
    assert sum(map(len, seen)) == len(set(data.column("user").to_pylist()))
    assert info["groups"] == {name: len(s) for name, s in zip(parts, seen, strict=True)}
    for name, t in parts.items():  # by hash, so the shares hold in expectation, here within 3 points
        assert abs(t.num_rows / 6000 - THREE[name]) < 0.03, (name, t.num_rows)


def test_group_assignment_is_stable_when_rows_are_added(tmp_path):
    old = table(1000, users=300)
    more = table(400, seed=9, users=500)  # new rows: some of old users, some new
    new = pa.concat_tables([old, more.set_column(0, "id", pa.array(np.arange(1000, 1400)))])
    before, _ = run(tmp_path, old, out="before", method="group", group="user")
    after, _ = run(tmp_path, new, out="after", method="group", group="user")
    placed = {u: name for name, t in before.items() for u in t.column("user").to_pylist()}
    for name, t in after.items():
        for u in t.column("user").to_pylist():
            assert placed.get(u, name) == name
        assert set(ids(before[name])) <= set(ids(t))


def test_group_split_follows_the_seed(tmp_path):
    data = table(3000, users=1000)
    a, _ = run(tmp_path, data, out="a", method="group", group="user", seed=0)
    b, _ = run(tmp_path, data, out="b", method="group", group="user", seed=1)
    assert ids(a["test"]) != ids(b["test"])


def test_time_split_puts_earliest_first_and_never_cuts_a_tie(tmp_path):
    data = table(1000, times=37)  # about 27 rows share each time
    parts, info = run(tmp_path, data, method="time", time="when", fractions=THREE)
    times = {name: t.column("when").to_pylist() for name, t in parts.items()}
    for values in times.values():
        assert values == sorted(values)  # sorted by time within the split
    ordered = [times[name] for name in THREE if times[name]]
    for earlier, later in zip(ordered, ordered[1:], strict=False):
        assert max(earlier) < min(later)  # strictly: no time in two splits
    assert sum(map(len, ordered)) == 1000
    assert info["ranges"]["train"]["min"] == min(times["train"]) and info["ranges"]["test"]["max"] == 36
    for name, f in THREE.items():  # a boundary moves at most half a tie
        assert abs(len(times[name]) - 1000 * f) <= 2 * max(Counter(data.column("when").to_pylist()).values())


def test_time_ties_keep_input_order_and_nulls_go_last(tmp_path):
    data = pa.table({"id": list(range(6)), "when": [3, None, 1, 3, 1, 2]})
    parts, _ = run(tmp_path, data, method="time", time="when", fractions={"early": 0.5, "late": 0.5})
    assert ids(parts["early"]) == [2, 4, 5] and ids(parts["late"]) == [0, 3, 1]


def test_the_order_of_fractions_is_the_order_of_time_and_enters_the_key(tmp_path):
    data = pa.table({"id": list(range(10)), "when": list(range(10))})
    parts, info = run(tmp_path, data, method="time", time="when", fractions={"recent": 0.3, "old": 0.7})
    assert ids(parts["recent"]) == [0, 1, 2] and info["order"] == ["recent", "old"]
    a = Split().normalise({"fractions": {"x": 0.5, "y": 0.5}}, file=None, step="s")
    b = Split().normalise({"fractions": {"y": 0.5, "x": 0.5}}, file=None, step="s")
    assert a["order"] == ["x", "y"] and b["order"] == ["y", "x"]
    parts, _ = run(tmp_path, data, out="explicit", method="time", time="when", fractions={"recent": 0.3, "old": 0.7},
                   order=["old", "recent"])
    assert ids(parts["old"]) == list(range(7))


@pytest.mark.parametrize("method, column", [("random", {}), ("stratified", {"stratify": "label"}),
                                            ("group", {"group": "user"}), ("time", {"time": "when"})])
def test_same_input_and_params_give_identical_bytes(tmp_path, method, column):
    data = table(700)
    run(tmp_path, data, out="one", method=method, **column)
    run(tmp_path, data, out="two", method=method, **column)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) == 13
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


@pytest.mark.parametrize("method, column", [("random", {}), ("stratified", {"stratify": "label"})])
def test_another_seed_gives_another_split_of_the_same_sizes(tmp_path, method, column):
    data = table(700)
    a, _ = run(tmp_path, data, out="a", method=method, seed=0, **column)
    b, _ = run(tmp_path, data, out="b", method=method, seed=1, **column)
    assert {k: t.num_rows for k, t in a.items()} == {k: t.num_rows for k, t in b.items()}
    assert ids(a["train"]) != ids(b["train"])


def test_a_missing_column_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(BuildError, match=r"params\.stratify names column 'lable' \(did you mean 'label'\?\).*"
                                         r"its columns are: id, label, user, when, x"):
        run(tmp_path, table(10), method="stratified", stratify="lable")


@pytest.mark.parametrize("params, key, match", [
    ({"fractions": {"train": 0.8, "test": 0.1}}, "fractions", r"sum to 1, but train: 0\.8, test: 0\.1 sum to 0\.9"),
    ({"fractions": {"train": 0.8, "test": 0.2000001}}, "fractions", r"sum to 1"),
    ({"fractions": {"train": 1.2, "test": -0.2}}, "fractions.train", r"from 0 to 1"),
    ({"fractions": {"train": 0.5, "test": -0.5, "x": 1.0}}, "fractions.test", r"from 0 to 1"),
    ({"fractions": {"train": "most"}}, "fractions.train", r"must be a number"),
    ({"fractions": {}}, "fractions", r"empty"),
    ({"fractions": {"../x": 1.0}}, "fractions", r"folder name"),
    ({"fractions": 0.8}, "fractions", r"expected a dict"),
    ({"method": "stratified"}, "stratify", r"needs the column.*stratify: <column>"),
    ({"method": "random", "group": "user"}, "group", r"used only by method 'group'"),
    ({"method": "kfold"}, "method", r"'kfold' is not one of"),
    ({"order": ["train", "test"]}, "order", r"each split of fractions once"),
    ({"seed": -1}, "seed", r"0 or more"),
])
def test_bad_params_are_recipe_errors(params, key, match):
    with pytest.raises(RecipeError, match=match) as e:
        Split().normalise(params, file="r.yaml", step="split")
    assert e.value.key == f"params.{key}"


def test_fractions_within_rounding_of_one_are_accepted():
    params = Split().normalise({"fractions": {"a": 0.1, "b": 0.2, "c": 0.7000000000001}}, file=None, step="s")
    assert params["order"] == ["a", "b", "c"]


def test_import_is_cheap():
    code = "import sys, modelbuild.builders.split; assert 'pyarrow' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
