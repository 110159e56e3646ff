"""The profile builder: every statistic checked against numpy and pandas computed here, independently."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")

from modelbuild import table as table_module  # noqa: E402
from modelbuild.builders import profile as profile_module  # noqa: E402
from modelbuild.builders.base import BuildContext  # noqa: E402
from modelbuild.builders.profile import QUANTILES, Profile  # noqa: E402
from modelbuild.errors import BuildError, RecipeError  # noqa: E402
from modelbuild.table import write_table  # noqa: E402

WORDS = ["the", "cat", "sat", "on", "a", "mat", "The", "dog", "ran"]


def frame(n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(10, 3, n)
    x[rng.random(n) < 0.1] = np.nan
    texts = ["  ".join(rng.choice(WORDS, rng.integers(0, 12))) + (" " if i % 5 == 0 else "") for i in range(n)]
    return pd.DataFrame({
        "age": rng.integers(17, 90, n),
        "x": x,
        "city": pd.Series(rng.choice(["Paris", "Oslo", "Lima"], n, p=[0.5, 0.3, 0.2]), dtype=object)
        .where(rng.random(n) > 0.05, None),
        "member": rng.random(n) < 0.3,
        "review": pd.Series(texts, dtype=object).where(rng.random(n) > 0.1, None),
        "day": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
    })


def run(tmp_path, df, out="out", **params):
    source = tmp_path / f"{out}-in"
    write_table(df, source)
    (tmp_path / out).mkdir()
    ctx = BuildContext(step="profile", inputs={"data": source}, out=tmp_path / out, recipe_dir=tmp_path,
                       params=Profile().normalise(params, file="r.yaml", step="profile"))
    Profile().build(ctx)
    return json.loads((tmp_path / out / "profile.json").read_text())


def close(a, b, rel=1e-9):
    return a == pytest.approx(b, rel=rel, abs=1e-12)


@pytest.fixture
def profiled(tmp_path):
    df = frame()
    return df, run(tmp_path, df)


def test_numeric_columns_match_numpy(profiled):
    df, prof = profiled
    for name in ("age", "x"):
        col = prof["columns"][name]
        values = df[name].dropna().to_numpy(dtype=float)
        assert col["kind"] == "numeric"
        assert col["count"] == len(values) and col["missing"] == df[name].isna().sum()
        assert close(col["missing_rate"], df[name].isna().mean())
        assert close(col["mean"], values.mean()) and close(col["std"], df[name].std())
        assert close(col["min"], values.min()) and close(col["max"], values.max())
        expected = np.quantile(values, QUANTILES)
        assert [col["quantiles"][f"{q:g}"] for q in QUANTILES] == pytest.approx(expected, rel=1e-9)
        assert list(col["quantiles"]) == sorted(f"{q:g}" for q in QUANTILES)
        hist = col["histogram"]
        counts, edges = np.histogram(values, bins=20, range=(values.min(), values.max()))
        assert hist["counts"] == counts.tolist() and hist["edges"] == pytest.approx(edges.tolist(), rel=1e-9)
        assert sum(hist["counts"]) == col["count"]
    assert isinstance(prof["columns"]["age"]["min"], int)


def test_categorical_and_boolean_frequencies_match_pandas(profiled):
    df, prof = profiled
    city = prof["columns"]["city"]
    counts = df.city.value_counts()
    assert city["kind"] == "categorical" and city["distinct"] == df.city.nunique() and city["other"] == 0
    assert [(f["value"], f["count"]) for f in city["frequencies"]] == list(counts.items())
    assert all(close(f["rate"], f["count"] / df.city.count()) for f in city["frequencies"])
    assert city["missing"] == df.city.isna().sum()
    member = prof["columns"]["member"]
    assert member["kind"] == "boolean"
    assert {f["value"]: f["count"] for f in member["frequencies"]} == df.member.value_counts().to_dict()


def test_text_columns_match_python(tmp_path):
    df = frame()
    prof = run(tmp_path, df, text_columns=["review"], top_tokens=5)
    review = prof["columns"]["review"]
    texts = df.review.dropna().tolist()
    chars = np.array([len(t) for t in texts])
    tokens = np.array([len(t.split()) for t in texts])
    assert review["kind"] == "text" and review["count"] == len(texts)
    for got, want in ((review["chars"], chars), (review["tokens"], tokens)):
        assert close(got["mean"], want.mean()) and close(got["std"], want.std(ddof=1))
        assert got["min"] == want.min() and got["max"] == want.max()
        assert [got["quantiles"][f"{q:g}"] for q in QUANTILES] == pytest.approx(np.quantile(want, QUANTILES))
    vocabulary = Counter(w for t in texts for w in t.split())
    assert review["vocabulary"]["size"] == len(vocabulary) and review["vocabulary"]["tokens"] == tokens.sum()
    top = sorted(vocabulary.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [(t["token"], t["count"]) for t in review["vocabulary"]["top"]] == top


def test_a_string_column_with_many_values_is_text_and_max_categories_decides(tmp_path):
    df = pd.DataFrame({"s": [f"v{i % 30}" for i in range(300)]})
    assert run(tmp_path, df, out="few")["columns"]["s"]["kind"] == "categorical"
    many = run(tmp_path, df, out="many", max_categories=29)["columns"]["s"]
    assert many["kind"] == "text" and many["vocabulary"]["size"] == 30 and "frequencies" not in many
    top = run(tmp_path, df, out="top", max_categories=30)["columns"]["s"]
    assert top["kind"] == "categorical" and len(top["frequencies"]) == 30


def test_frequencies_list_the_top_values_and_other_for_dictionary_columns(tmp_path):
    df = pd.DataFrame({"c": pd.Categorical([f"k{i % 8}" for i in range(80)] + ["k0"] * 5)})
    c = run(tmp_path, df, max_categories=3)["columns"]["c"]
    assert c["kind"] == "categorical" and c["distinct"] == 8
    assert [f["value"] for f in c["frequencies"]] == ["k0", "k1", "k2"] and c["frequencies"][0]["count"] == 15
    assert c["other"] == 85 - 15 - 10 - 10


def test_datetimes_missing_and_metrics(tmp_path, profiled):
    df, prof = profiled
    day = prof["columns"]["day"]
    assert day["kind"] == "datetime" and day["min"] == df.day.min().isoformat()
    assert prof["rows"] == len(df) and prof["column_order"] == list(df.columns)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics == {"rows": len(df), "columns": len(df.columns)}


def test_profile_json_is_stable_and_the_same_whatever_the_batch_size(tmp_path, monkeypatch):
    df = frame(1000)
    first = (tmp_path / "out" / "profile.json")
    run(tmp_path, df)
    text = first.read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    monkeypatch.setattr(profile_module, "iter_batches",
                        lambda src, columns=None: table_module.iter_batches(src, batch_rows=7, columns=columns))
    run(tmp_path, df, out="small")
    assert (tmp_path / "small" / "profile.json").read_text() == text


def test_floats_are_rounded_to_12_significant_digits(profiled):
    _, prof = profiled
    mean = prof["columns"]["x"]["mean"]
    assert mean == float(f"{mean:.12g}") and len(f"{mean!r}".replace(".", "").lstrip("0")) <= 12


def test_non_finite_values(tmp_path):
    df = pd.DataFrame({"v": [1.0, np.inf, 3.0, np.nan, -np.inf, 5.0]})
    v = run(tmp_path, df, bins=2)["columns"]["v"]
    assert (v["count"], v["missing"], v["infinite"]) == (5, 1, 2)
    assert v["mean"] == 3.0 and v["histogram"] == {"edges": [1.0, 3.0, 5.0], "counts": [1, 2]}


def test_constant_and_empty_columns(tmp_path):
    df = pd.DataFrame({"k": [4, 4, 4], "e": pd.Series([None, None, None], dtype="float64")})
    prof = run(tmp_path, df, bins=2)
    assert prof["columns"]["k"]["histogram"] == {"edges": [3.5, 4.0, 4.5], "counts": [0, 3]}
    e = prof["columns"]["e"]
    assert e["count"] == 0 and e["mean"] is None and e["histogram"] == {"edges": [], "counts": []}
    empty = run(tmp_path, df.iloc[:0], out="empty")
    assert empty["rows"] == 0 and empty["columns"]["k"]["missing_rate"] is None


def test_an_unknown_text_column_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(BuildError, match=r"params\.text_columns\[0\] names column 'reveiw' \(did you mean 'review'\?\)"):
        run(tmp_path, frame(20), text_columns=["reveiw"])


@pytest.mark.parametrize("params, match", [({"bins": 0}, "bins must be 1 or more"),
                                           ({"text_columns": "review"}, "expected a list"),
                                           ({"text_columns": [1]}, "list of column names")])
def test_bad_params(params, match):
    with pytest.raises(RecipeError, match=match):
        Profile().normalise(params, file="r.yaml", step="profile")


def test_import_is_cheap():
    code = "import sys, modelbuild.builders.profile; assert 'pyarrow' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_table_picks_one_table_of_an_input_that_holds_several(tmp_path):
    df = frame(40)
    for name, part in (("train", df.iloc[:30]), ("test", df.iloc[30:])):
        write_table(part, tmp_path / "parts" / name)

    def build(out, **params):
        (tmp_path / out).mkdir()
        ctx = BuildContext(step="profile", inputs={"data": tmp_path / "parts"}, out=tmp_path / out,
                           recipe_dir=tmp_path, params=Profile().normalise(params, file="r.yaml", step="profile"))
        Profile().build(ctx)
        return json.loads((tmp_path / out / "profile.json").read_text())

    assert build("train", table="train")["rows"] == 30
    with pytest.raises(BuildError, match=r"holds several tables \(test, train\); pick one with `params: \{table: test\}`"):
        build("none")
    with pytest.raises(BuildError, match=r"'trian' \(did you mean 'train'\?\).*its tables are: test, train"):
        build("typo", table="trian")
