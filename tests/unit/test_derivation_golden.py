"""Derivation keys are pinned: a change to how keys are computed must be a deliberate, reviewed act.

Every artifact in every store and remote cache is found by its key. If the hashing scheme drifts (a
different float spelling, a reordered field, another hash function), every cache silently misses; or
worse, two different derivations meet under one key. The keys below are stored in
tests/golden/derivation_keys.json. To accept a deliberate change (and bump derivation.FORMAT when the
layout changes), regenerate with:

    MODELBUILD_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_derivation_golden.py

and commit the file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from modelbuild.derivation import FORMAT, derivation_key, explain, make_derivation
from modelbuild.hashing import canonical_json
from modelbuild.recipe import check_recipe

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "derivation_keys.json"
UPDATE_VAR = "MODELBUILD_UPDATE_GOLDEN"

FIXED_CODE = "0123456789abcdef0123456789abcdef"
FIXED_ENV = {"python": "3.11", "packages": {"numpy": "2.0.0", "torch": "2.4.0"}}
DATA = "d" * 32
CLEAN = "c" * 32


def base_drv(**changes) -> dict:
    drv = {
        "format": 1,
        "builder": "train",
        "builder_code": FIXED_CODE,
        "params": {"lr": 3e-4, "epochs": 3, "layers": [64, 32],
                   "optim": {"name": "adam", "betas": [0.9, 0.999]}},
        "extras": {},
        "inputs": {"clean": {"kind": "step", "digest": CLEAN}, "data": {"kind": "source", "digest": DATA}},
        "env": FIXED_ENV,
        "seed": 0,
    }
    drv.update(changes)
    return drv


HAND_WRITTEN = {
    "minimal": {"format": 1, "builder": "command", "builder_code": FIXED_CODE,
                "params": {"cmd": "echo hi > $MB_OUT/x", "env": {}, "shell": "bash"}, "extras": {},
                "inputs": {}, "env": {"python": "3.11", "packages": {}}},
    "train": base_drv(),
    "train-lr-1e-3": base_drv(params={"lr": 1e-3, "epochs": 3, "layers": [64, 32],
                                      "optim": {"name": "adam", "betas": [0.9, 0.999]}}),
    "train-seed-1": base_drv(seed=1),
    "odd-values": base_drv(params={"zero": -0.0, "nan": float("nan"), "inf": float("-inf"), "tuple": (1, 2),
                                   "text": "héllo → wörld", "none": None, "flag": True, "big": 10**20,
                                   "tiny": 1e-300},
                           extras={"module": "e" * 32}),
}

RECIPE = {
    "name": "golden",
    "seed": 7,
    "steps": {
        "data": {"builder": "command", "params": {"cmd": "cp $MB_IN_RAW $MB_OUT/raw.csv"}},
        "train": {"builder": "command", "inputs": {"data": "data"},
                  "params": {"cmd": "python train.py $MB_IN_DATA $MB_OUT", "env": {"LR": 3e-4, "EPOCHS": 2},
                             "shell": "sh"}},
    },
}
RECIPE_INPUTS = {"data": {}, "train": {"data": {"kind": "step", "digest": DATA, "path": "objects/ignored"}}}


def recipe_derivations(tmp_dir: Path) -> dict[str, dict]:
    saved = list(sys.path)  # check_recipe puts the recipe's folder on sys.path for user builders
    try:
        recipe = check_recipe(json.loads(json.dumps(RECIPE)), tmp_dir / "golden.yaml")
    finally:
        sys.path[:] = saved
    out = {}
    for name in recipe.order:
        drv = make_derivation(recipe.steps[name], RECIPE_INPUTS[name], recipe.dir, recipe.seed)
        # fixed stand-ins: the golden must not move with the Python version, installed packages or an
        # edit of the command builder (those do change real keys, on purpose; see test_make_derivation_*)
        drv["builder_code"] = FIXED_CODE
        drv["env"] = FIXED_ENV
        out[f"recipe-{name}"] = drv
    return out


def golden_entries(drvs: dict[str, dict]) -> dict:
    return {name: {"key": derivation_key(drv), "canonical": canonical_json(drv)}
            for name, drv in sorted(drvs.items())}


def check_golden(path: Path, actual: dict, update: bool) -> None:
    """Compare with the stored goldens; write them when missing (and fail) or when asked to (and pass)."""
    text = json.dumps(actual, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        pytest.fail(f"{path} did not exist, so it was written now from the current code. Review it and "
                    "commit it: from then on it pins every derivation key", pytrace=False)
    stored = json.loads(path.read_text())
    problems = []
    for name in sorted(set(stored) | set(actual)):
        if name not in actual:
            problems.append(f"{name}: in the golden file but no longer computed")
        elif name not in stored:
            problems.append(f"{name}: new case, not in the golden file")
        elif stored[name] != actual[name]:
            problems.append(f"{name}: key {stored[name]['key']} -> {actual[name]['key']}\n"
                            f"    was {stored[name]['canonical']}\n    now {actual[name]['canonical']}")
    if problems:
        pytest.fail("derivation keys changed; every cached artifact would miss. If this is deliberate, bump "
                    f"derivation.FORMAT, rerun with {UPDATE_VAR}=1 and commit {path.name}.\n"
                    + "\n".join(problems), pytrace=False)


# ---- the golden keys ----------------------------------------------------------------------------------

def test_derivation_keys_match_the_golden_file(tmp_path):
    actual = golden_entries({**HAND_WRITTEN, **recipe_derivations(tmp_path)})
    check_golden(GOLDEN, actual, update=os.environ.get(UPDATE_VAR) == "1")


def test_format_is_the_one_the_golden_keys_were_made_with():
    assert FORMAT == 2, "FORMAT changed: regenerate the golden keys (see this module's docstring)"


def test_recipe_derivation_has_the_expected_fields(tmp_path):
    drvs = recipe_derivations(tmp_path)
    train = drvs["recipe-train"]
    assert train["builder"] == "command"
    assert train["params"] == {"cmd": "python train.py $MB_IN_DATA $MB_OUT", "env": {"LR": 3e-4, "EPOCHS": 2},
                               "shell": "sh", "packages": []}
    assert train["seed"] == 7  # a command step sees MB_SEED, so the seed is in its key
    assert train["inputs"] == {"data": {"kind": "step", "digest": DATA}}  # the path does not enter the key
    assert drvs["recipe-data"]["params"]["env"] == {} and drvs["recipe-data"]["params"]["shell"] == "bash"


def test_distinct_derivations_have_distinct_keys(tmp_path):
    keys = [derivation_key(d) for d in {**HAND_WRITTEN, **recipe_derivations(tmp_path)}.values()]
    assert len(set(keys)) == len(keys)


def test_key_is_32_hex_digits_and_independent_of_field_order():
    drv = base_drv()
    reordered = dict(reversed(list(drv.items())))
    assert derivation_key(drv) == derivation_key(reordered)
    assert len(derivation_key(drv)) == 32 and int(derivation_key(drv), 16) >= 0


def test_equal_values_written_differently_give_one_key():
    a = base_drv(params={"lr": 3e-4, "w": -0.0, "shape": (2, 3)})
    b = base_drv(params={"shape": [2, 3], "w": 0.0, "lr": 0.0003})
    assert derivation_key(a) == derivation_key(b)


def test_make_derivation_keys_follow_builder_code_and_environment(tmp_path):
    saved = list(sys.path)
    try:
        recipe = check_recipe(json.loads(json.dumps(RECIPE)), tmp_path / "golden.yaml")
    finally:
        sys.path[:] = saved
    drv = make_derivation(recipe.steps["data"], {}, recipe.dir, recipe.seed)
    assert len(drv["builder_code"]) == 32
    assert drv["env"]["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert derivation_key(drv) != derivation_key({**drv, "builder_code": FIXED_CODE})
    assert derivation_key(drv) != derivation_key({**drv, "env": {**drv["env"], "python": "2.7"}})


def test_check_golden_writes_a_missing_file_and_fails(tmp_path):
    path = tmp_path / "golden" / "keys.json"
    actual = golden_entries({"minimal": HAND_WRITTEN["minimal"]})
    with pytest.raises(pytest.fail.Exception, match="commit"):
        check_golden(path, actual, update=False)
    assert json.loads(path.read_text()) == actual
    check_golden(path, actual, update=False)  # now it exists and matches


def test_check_golden_fails_on_a_changed_key_and_names_the_case(tmp_path):
    path = tmp_path / "keys.json"
    check_golden(path, golden_entries({"train": base_drv()}), update=True)
    with pytest.raises(pytest.fail.Exception, match=r"train: key .* -> .*\n.*lr\":0.0003"):
        check_golden(path, golden_entries({"train": base_drv(params={"lr": 1e-3})}), update=False)


def test_check_golden_update_rewrites(tmp_path):
    path = tmp_path / "keys.json"
    check_golden(path, golden_entries({"a": base_drv()}), update=True)
    new = golden_entries({"a": base_drv(seed=5), "b": base_drv(seed=6)})
    check_golden(path, new, update=True)
    assert json.loads(path.read_text()) == new


# ---- explain: why a step must be rebuilt ----------------------------------------------------------------

def test_explain_no_previous_derivation_is_new():
    assert explain(None, base_drv()) == ["new"]


def test_explain_a_param_change_shows_old_and_new_values():
    old = base_drv(params={"lr": 1e-3})
    new = base_drv(params={"lr": 3e-4})
    assert explain(old, new) == ["params.lr 0.001 -> 0.0003"]


def test_explain_nested_params_are_named_by_their_path():
    old = base_drv(params={"optim": {"name": "adam", "betas": [0.9, 0.999]}})
    new = base_drv(params={"optim": {"name": "sgd", "betas": [0.9, 0.999]}})
    assert explain(old, new) == ["params.optim.name 'adam' -> 'sgd'"]


def test_explain_added_and_removed_params():
    assert explain(base_drv(params={}), base_drv(params={"lr": 0.1})) == ["params.lr added: 0.1"]
    assert explain(base_drv(params={"lr": 0.1}), base_drv(params={})) == ["params.lr removed (was 0.1)"]
    assert explain(base_drv(params={"lr": None}), base_drv(params={})) == ["params.lr removed (was null)"]


def test_explain_a_long_list_names_the_elements_that_differ():
    cols = [f"column_{i}" for i in range(12)]
    old, new = base_drv(params={"cols": cols}), base_drv(params={"cols": [*cols[:11], "other"]})
    assert explain(old, new) == ["params.cols[11] 'column_11' -> 'other'"]
    assert explain(old, base_drv(params={"cols": [c for c in cols if c != "column_3"]})) == \
        ["params.cols[3] removed: 'column_3'"]
    assert explain(old, base_drv(params={"cols": [*cols, "x"]})) == ["params.cols[12] added: 'x'"]
    rules = [{"column": "a", "values": list(range(20))}]
    assert explain(base_drv(params={"rules": rules}), base_drv(params={"rules": [{"column": "a", "values": [
        *range(19), 99]}]})) == ["params.rules[0].values[19] 19 -> 99"]


def test_explain_a_change_of_type_only_is_still_a_reason():
    # the key sees 1, 1.0 and true as different values; the reason must say so too
    assert explain(base_drv(params={"x": 1}), base_drv(params={"x": 1.0})) == ["params.x 1 -> 1.0"]
    assert explain(base_drv(params={"x": 1}), base_drv(params={"x": True})) == ["params.x 1 -> true"]


def test_explain_an_unchanged_nan_is_not_a_reason():
    old = base_drv(params={"x": float("nan"), "y": 1})
    new = base_drv(params={"x": float("nan"), "y": 2})
    assert explain(old, new) == ["params.y 1 -> 2"]


def test_explain_input_changed():
    new = base_drv(inputs={"clean": {"kind": "step", "digest": "1" * 32},
                           "data": {"kind": "source", "digest": DATA}})
    assert explain(base_drv(), new) == ["input clean changed"]


def test_explain_source_changed():
    new = base_drv(inputs={"clean": {"kind": "step", "digest": CLEAN},
                           "data": {"kind": "source", "digest": "2" * 32}})
    assert explain(base_drv(), new) == ["source data changed"]


def test_explain_inputs_added_and_removed():
    old = base_drv(inputs={"a": {"kind": "step", "digest": DATA}})
    new = base_drv(inputs={"b": {"kind": "step", "digest": DATA}})
    assert explain(old, new) == ["input a removed", "input b added"]


def test_explain_builder_code_changed():
    assert explain(base_drv(), base_drv(builder_code="f" * 32)) == ["builder code changed"]


def test_explain_another_builder():
    new = base_drv(builder="finetune", builder_code="f" * 32)
    assert explain(base_drv(), new) == ["builder train -> finetune"]


def test_explain_env_package_version_changed():
    new = base_drv(env={"python": "3.11", "packages": {"numpy": "2.0.0", "torch": "2.5.1"}})
    assert explain(base_drv(), new) == ["env.packages.torch 2.4.0 -> 2.5.1"]


def test_explain_python_version_changed():
    new = base_drv(env={**FIXED_ENV, "python": "3.12"})
    assert explain(base_drv(), new) == ["env.python 3.11 -> 3.12"]


def test_explain_extras_and_seed():
    assert explain(base_drv(extras={"module": "a" * 32}), base_drv(extras={"module": "b" * 32})) == \
        ["extras.module changed"]
    assert explain(base_drv(seed=0), base_drv(seed=1)) == ["seed 0 -> 1"]


def test_explain_several_reasons_are_all_listed():
    new = base_drv(builder_code="f" * 32, params={"lr": 0.1}, seed=3)
    old = base_drv(params={"lr": 0.2})
    assert explain(old, new) == ["builder code changed", "params.lr 0.2 -> 0.1", "seed 0 -> 3"]


def test_explain_identical_derivations():
    assert explain(base_drv(), base_drv()) == ["not in the store"]


def test_explain_reads_a_derivation_as_written_to_drv_json():
    # store.write_drv keeps derivations as JSON: tuples come back as lists, floats as floats
    old = json.loads(json.dumps(base_drv(params={"shape": (2, 3), "lr": 1e-3})))
    assert explain(old, base_drv(params={"shape": (2, 3), "lr": 3e-4})) == ["params.lr 0.001 -> 0.0003"]
