"""A source that names something that is not there is a recipe error (exit 2) through `plan` and `build`, for
every kind of source, naming the step, the key, what is missing and what is there; `diff` names a source that
moved by its old and new path. A PyPI package comes from a wheel written here and a local find-links folder:
nothing leaves the machine."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest

RECIPE = """
name: src
steps:
  copy:
    builder: command
    inputs: {{data: {source}}}
    params: {{cmd: 'cp -r "$MB_IN_DATA" "$MB_OUT/data"'}}
"""
PYPI = '{{pypi: "mbdata==1.0", path: {}}}'


@pytest.fixture
def wheels(tmp_path):
    """A find-links folder with mbdata 1.0, a wheel holding mbdata/data/{train,test}.csv; pip reads nothing
    else (PIP_NO_INDEX)."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    with zipfile.ZipFile(folder / "mbdata-1.0-py3-none-any.whl", "w") as z:
        z.writestr("mbdata/__init__.py", "")
        z.writestr("mbdata/data/train.csv", "a,b\n1,2\n")
        z.writestr("mbdata/data/test.csv", "a,b\n3,4\n")
        z.writestr("mbdata-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: mbdata\nVersion: 1.0\n")
        z.writestr("mbdata-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                 "Tag: py3-none-any\n")
        z.writestr("mbdata-1.0.dist-info/RECORD", "")
    return folder


def offline(wheels) -> dict:
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_CONSTRAINT": ""}


def refused(cli, verb: str, *expected: str, env=None) -> str:
    proc = cli(verb, "recipe.yaml", check=2, env=env)
    assert proc.stderr.startswith("error: ") and proc.stderr.count("error:") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for text in expected:
        assert text in proc.stderr, proc.stderr
    return proc.stderr


def test_a_wrong_path_inside_a_pypi_package_is_exit_2_saying_what_the_package_holds(project, cli, wheels):
    project.write("recipe.yaml", RECIPE.format(source=PYPI.format("mbdata/data/trian.csv")))
    where = ("file ", "recipe.yaml", "step 'copy'", "key 'inputs.data.path'", "mbdata==1.0")
    assert "will be fetched first" in cli("plan", "recipe.yaml", env=offline(wheels)).stdout  # not downloaded yet
    refused(cli, "build", *where, "no file or folder 'mbdata/data/trian.csv'",
            "did you mean 'mbdata/data/train.csv'?", "its folder mbdata/data/ holds test.csv, train.csv",
            env=offline(wheels))
    assert not list((cli.store / "objects").glob("*-copy")) and not any((cli.store / "tmp").iterdir())

    shutil.rmtree(wheels)  # the package's archive is in the store now: plan checks a path against it, offline
    refused(cli, "plan", *where, "did you mean 'mbdata/data/train.csv'?", env=offline(wheels))
    project.write("recipe.yaml", RECIPE.format(source=PYPI.format("mbdata/dat")))
    refused(cli, "plan", "no file or folder 'mbdata/dat'", "did you mean 'mbdata/data'?",
            "its folder mbdata/ holds __init__.py, data/", env=offline(wheels))

    project.write("recipe.yaml", RECIPE.format(source=PYPI.format("mbdata/data")))  # a folder, from the stored archive
    out = cli.build(env=offline(wheels))["by_step"]["copy"]["path"]
    assert sorted(p.name for p in (cli.project / out / "data").iterdir()) == ["test.csv", "train.csv"]


@pytest.mark.parametrize("source, key, expected", [
    ("{path: dta.csv}", "inputs.data.path", ["dta.csv does not exist", "did you mean 'data.csv'?"]),
    ("{log: lgs}", "inputs.data.log", ["the log folder", "lgs does not exist", "did you mean 'logs'?"]),
    (PYPI.format("mbdata/data/train.csv").replace("mbdata==", "mbdta=="), "inputs.data.pypi",
     ["cannot fetch the PyPI source mbdta==1.0", "Check the name and version"]),
])
def test_a_source_that_is_not_there_is_exit_2_naming_the_step_and_key(project, cli, wheels, source, key, expected):
    project.write("data.csv", "a\n1\n")
    (project / "logs").mkdir()
    project.write("recipe.yaml", RECIPE.format(source=source))
    for verb in ("plan", "build") if "pypi" not in source else ("build",):  # plan does not download
        refused(cli, verb, "step 'copy'", f"key '{key}'", *expected, env=offline(wheels))


def source_hash(cli, artifact) -> str:
    return json.loads(cli("show", artifact, "--json").stdout)["inputs"]["data"]["hash"]


def test_diff_of_a_source_that_moved_names_the_old_and_the_new_path(project, cli):
    project.write("data.csv", "a\n1\n")
    project.write("data-v2.csv", "a\n2\n")
    project.write("recipe.yaml", RECIPE.format(source="{path: data.csv}"))
    first = cli.build()["by_step"]["copy"]["path"]
    project.write("recipe.yaml", RECIPE.format(source="{path: data-v2.csv}"))
    second = cli.build()["by_step"]["copy"]["path"]
    old, new = (source_hash(cli, p) for p in (first, second))
    causes = json.loads(cli("diff", "--json", first, second).stdout)["causes"]
    assert causes == [f"copy <- data: source path: data.csv -> data-v2.csv (in {project}); content {old} -> {new}"]

    project.write("data-v2.csv", "a\n3\n")  # the same path, new content: named once, with both hashes
    third = cli.build()["by_step"]["copy"]["path"]
    assert json.loads(cli("diff", "--json", second, third).stdout)["causes"] == [
        f"copy <- data: source {project}/data-v2.csv: content {new} -> {source_hash(cli, third)}"]


FINETUNE = """
name: ft
steps:
  tuned:
    builder: finetune
    inputs: {{model: {{path: model}}, data: {{path: pairs}}}}
    params: {{task: sft, method: lora, {param}}}
"""


@pytest.mark.parametrize("param, key, hint", [
    ("learning_rate: 1e-3", "params.learning_rate", "did you mean 'optimizer.lr'?"),
    ("lora: {rnak: 4}", "params.lora.rnak", "did you mean 'r'?"),
])
def test_a_misplaced_or_misspelt_finetune_param_is_exit_2_with_the_right_name(project, cli, param, key, hint):
    (project / "model").mkdir()
    (project / "pairs").mkdir()
    project.write("recipe.yaml", FINETUNE.format(param=param))
    for verb in ("plan", "build"):
        refused(cli, verb, "step 'tuned'", f"key '{key}'", hint)


def test_diff_of_an_edited_script_source_shows_its_changed_lines(project, cli):
    """A `command` step's script is a source, not module code: its lines are kept in the lineage (small text
    files only), so `diff` shows them as it shows a python step's edited module."""
    project.write("count.py", "import sys\n\nrows = open(sys.argv[1]).read().splitlines()\nprint(len(rows))\n")
    project.write("data.csv", "a\n" + "1\n" * 3000)  # data, and 6 KB: not kept
    project.write("recipe.yaml", """
        name: count
        steps:
          count:
            builder: command
            inputs: {data: {path: data.csv}, script: {path: count.py}}
            params: {cmd: '"$PYTHON" "$MB_IN_SCRIPT" "$MB_IN_DATA" > "$MB_OUT/rows.txt"'}
        """)
    first = cli.build()["by_step"]["count"]["path"]
    project.write("count.py", "import sys\n\nrows = open(sys.argv[1]).read().splitlines()\nprint(len(rows) - 1)\n")
    second = cli.build()["by_step"]["count"]["path"]
    code = json.loads(cli("diff", "--json", first, second).stdout)["code"]
    assert [(c["where"], c["file"]) for c in code] == [("count <- script", "count.py")], code
    assert "-print(len(rows))\n+print(len(rows) - 1)\n" in code[0]["diff"]
    assert '"text"' not in cli("show", second).stdout
