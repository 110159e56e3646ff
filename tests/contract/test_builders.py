"""The builder contract, checked over every registered builder (builders.BUILTIN).

Every builder promises: its module imports no heavy library (recipes are checked and lineage is read
without torch or pandas); its params are declared, and a misspelt, mistyped or missing one is exit 2 with
one clear error naming the step and the key (and a did-you-mean); its key is the same in every process;
its artifact reads back (verify re-hashes it, show names its derivation, a rebuild is a cache hit).

A builder added to BUILTIN without a case in CASES fails here: write it a tiny case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import Cli, write_tabular_csv

from modelbuild.builders import BUILTIN, load_builder
from modelbuild.cli import main

HEAVY = {"torch", "lightning", "pytorch_lightning", "transformers", "pandas", "pyarrow", "sklearn", "nevergrad",
         "tokenizers", "peft", "dvc", "litserve", "pandera", "matplotlib", "fairlearn"}

# builder -> (params, inputs) of a tiny valid step; inputs name files of the project below or other steps.
# The steps whose inputs are sources only are planned (key stability) without building anything.
CASES = {
    "command": ({"cmd": 'echo pear > "$MB_OUT/fruit.txt"'}, {}),
    "python": ({"function": "steps:score", "x": 0.5}, {}),
    "ingest": ({}, {"data": {"path": "data.csv"}}),
    "clean": ({}, {"table": {"path": "table"}}),
    "validate": ({"schema": {"columns": {"x1": {"dtype": "float64"}}}}, {"table": {"path": "table"}}),
    "split": ({"fractions": {"train": 0.8, "validation": 0.2}}, {"data": {"path": "table"}}),
    "profile": ({}, {"data": {"path": "table"}}),
    "tokenizer": ({"kind": "bpe", "vocab_size": 300, "column": "x1"}, {"data": {"path": "table"}}),
    "train": ({"task": "tabular-classification", "data": {"target": "label"}, "trainer": {"max_epochs": 1}},
              {"data": {"path": "table"}}),
    "finetune": ({"task": "sft", "method": "lora"}, {"model": {"path": "table"}, "data": {"path": "table"}}),
    "evaluate": ({"target": "label"}, {"model": {"path": "table"}, "data": {"path": "table"}}),
    "benchmark": ({"tasks": ["mb_mc"]}, {"model": {"path": "table"}}),
    "benchmark-task": ({"task": "mb_mc"}, {"model": {"path": "table"}}),
    "drift": ({}, {"reference": {"path": "table"}, "current": {"path": "table"}}),
    "decay": ({}, {"requests": {"path": "table"}, "feedback": {"path": "table"}}),
    "tune": ({"target": "python", "space": {"x": {"choice": [0.1, 0.9]}}, "objective": {"metric": "loss"},
              "optimizer": "grid"}, {}),
    "package": ({"image": "contract"}, {"model": {"path": "table"}}),
    # built from a package with a server image, which needs a base layout: tests/deploy builds it
    "deploy": ({"repository": "registry.example.com/contract"}, {"image": {"path": "table"}}),
    "report": ({}, {"table": {"path": "table"}}),
}

# Built and read back here (seconds each); the rest (torch and transformers builders) have their own tests.
LIGHT = ["command", "python", "ingest", "clean", "validate", "split", "profile", "tune", "package", "report"]

STEPS = """
import json


def score(ctx):
    (ctx.out / "metrics.json").write_text(json.dumps({"loss": (ctx.params["x"] - 0.3) ** 2}))
"""


def recipe(names, **override) -> str:
    steps = {}
    for name in names:
        params, inputs = override.get(name, CASES[name])
        steps[name] = {"builder": name, "params": params, "inputs": inputs}
    return json.dumps({"name": "contract", "steps": steps})


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from conftest import Project
    root = Project(tmp_path_factory.mktemp("contract"))
    write_tabular_csv(root, rows=200)
    root.write("steps.py", STEPS)
    cli = Cli(root, root / "store")
    root.write("ingest.yaml", recipe(["ingest"]))
    table = cli.build("ingest.yaml")["by_step"]["ingest"]["path"]
    os.symlink(table, root / "table")  # an ingested table as a source, for the steps planned without building
    return root, cli


def test_every_builder_has_a_case():
    assert sorted(CASES) == sorted(BUILTIN)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_module_imports_no_heavy_library(name):
    module = BUILTIN[name].split(":")[0]
    code = f"import importlib, json, sys; importlib.import_module({module!r}); print(json.dumps(list(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert sorted({m.split(".")[0] for m in loaded} & HEAVY) == []


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_params_are_declared_with_valid_types_and_defaults(name):
    builder = load_builder(name)
    assert builder.name == name
    for key, param in builder.params.items():
        assert param.type in ("str", "int", "float", "bool", "list", "dict", "any"), key
        if param.choices and not param.required and param.default is not None:
            assert param.default in param.choices, key


def plan(cli, file, seed="0"):
    return cli("plan", file, "--json", env={"PYTHONHASHSEED": seed})


def refused(project, file, capsys, monkeypatch) -> str:
    """`modelbuild plan FILE` run in this process (the CLI's own main, a subprocess each would cost seconds
    here): it must exit 2; its stderr is returned."""
    root, cli = project
    monkeypatch.chdir(root)
    capsys.readouterr()
    assert main(["--store", str(cli.store), "plan", file]) == 2
    return capsys.readouterr().err


def assert_one_error(err, step, key):
    assert err.startswith("error:") and "Traceback" not in err and err.count("error:") == 1, err
    assert f"'{step}'" in err and key in err, err


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_an_unknown_param_is_exit_2_with_did_you_mean(project, name, capsys, monkeypatch):
    root, _ = project
    params, inputs = CASES[name]
    declared = sorted(load_builder(name).params)
    if load_builder(name).open_params:
        pytest.skip(f"{name} takes any param (open_params)")
    typo = declared[0][:-1] + "x" + declared[0][-1]
    root.write(f"typo-{name}.yaml", recipe([name], **{name: ({**params, typo: 1}, inputs)}))
    err = refused(project, f"typo-{name}.yaml", capsys, monkeypatch)
    assert_one_error(err, name, f"params.{typo}")
    assert "did you mean" in err and declared[0] in err


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_a_mistyped_or_missing_param_is_exit_2(project, name, capsys, monkeypatch):
    root, _ = project
    params, inputs = CASES[name]
    spec = load_builder(name).params
    typed = [k for k, p in sorted(spec.items()) if p.type in ("str", "int", "float", "bool", "list", "dict")]
    key = typed[0]
    wrong = {"str": 12, "int": "many", "float": "high", "bool": "maybe", "list": 3, "dict": 3}[spec[key].type]
    root.write(f"type-{name}.yaml", recipe([name], **{name: ({**params, key: wrong}, inputs)}))
    assert_one_error(refused(project, f"type-{name}.yaml", capsys, monkeypatch), name, f"params.{key}")
    required = [k for k, p in sorted(spec.items()) if p.required]
    if required:
        missing = {k: v for k, v in params.items() if k != required[0]}
        root.write(f"missing-{name}.yaml", recipe([name], **{name: (missing, inputs)}))
        assert_one_error(refused(project, f"missing-{name}.yaml", capsys, monkeypatch), name, f"params.{required[0]}")


@pytest.fixture(scope="module")
def planned(project):
    """Every case that has only sources as inputs, planned in two processes with different hash seeds."""
    root, cli = project
    names = [n for n in sorted(CASES) if n != "tune"]
    root.write("plan.yaml", recipe(names))
    first, second = (json.loads(plan(cli, "plan.yaml", seed=seed).stdout) for seed in ("1", "2"))
    return first, second


# benchmark's own key waits on its task steps' artifacts (benchmark-task, checked here)
@pytest.mark.parametrize("name", sorted(n for n in BUILTIN if n not in ("tune", "benchmark")))
def test_key_is_the_same_in_every_process(planned, name):
    keys = [{s["step"]: s["key"] for s in p["steps"]}[name] for p in planned]
    assert keys[0] and keys[0] == keys[1]


@pytest.fixture(scope="module")
def built(project):
    root, cli = project
    cases = {**CASES, "clean": ({}, {"table": "ingest"}), "split": (CASES["split"][0], {"data": "ingest"}),
             "validate": (CASES["validate"][0], {"table": "ingest"}), "profile": ({"table": "train"}, {"data": "split"}),
             "package": (CASES["package"][0], {"model": "command"}), "report": ({}, {"table": "split"})}
    root.write("build.yaml", recipe(LIGHT, **cases))
    off = {"MODELBUILD_SANDBOX": "off"}  # the sandbox has its own tests (tests/e2e/test_sandbox.py)
    # every step a target: a whole-recipe build leaves out tune's target, which the search trains as trials
    targets = [arg for name in LIGHT for arg in ("-t", name)]
    first = cli.build("build.yaml", "-j", "2", *targets, env=off)
    again = cli.build("build.yaml", *targets, env={**off, "PYTHONHASHSEED": "7"})
    return cli, first, again


@pytest.mark.parametrize("name", LIGHT)
def test_artifact_reads_back(built, name):
    cli, first, again = built
    step = first["by_step"][name]
    assert step["status"] in ("built", "cached") and again["by_step"][name]["status"] == "cached"
    assert again["by_step"][name]["path"] == step["path"] and again["by_step"][name]["key"] == step["key"]
    shown = json.loads(cli("show", "--json", f"contract:{name}").stdout)
    assert shown["key"] == step["key"] and shown["derivation"]["builder"] == name
    assert cli("verify", step["path"]).returncode == 0
