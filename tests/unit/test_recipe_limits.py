"""The limits that keep a recipe from hanging or exhausting the machine (docs/recipes.md#limits).

Each recipe is loaded in a child process with a time and memory limit, so that a regression fails here instead
of hanging the suite or the machine; the child reports how long loading took.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

from modelbuild.recipe import MAX_DEPTH, MAX_EXPANSION

LOAD = """
import json, sys, time
from modelbuild.errors import ModelbuildError
from modelbuild.recipe import load_recipe
start = time.perf_counter()
try:
    result = {"params": load_recipe(sys.argv[1]).steps["train"].params}
except ModelbuildError as e:
    result = {"error": str(e), "exit_code": e.exit_code}
result["seconds"] = time.perf_counter() - start
print(json.dumps(result))
"""


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def load(tmp_path, text: str) -> dict:
    """Load `text` as recipe.yaml: {"params": train's params} or {"error", "exit_code"}, with "seconds"."""
    (tmp_path / "recipe.yaml").write_text(text)
    (tmp_path / "steps.py").write_text("def train(ctx):\n    pass\n")
    try:
        proc = subprocess.run([sys.executable, "-c", LOAD, "recipe.yaml"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=20, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail("loading the recipe hung (over 20 s)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def refused(tmp_path, text: str, *words: str) -> str:
    """The error of a recipe that must be refused fast, with exit code 2, in words that say why."""
    result = load(tmp_path, text)
    assert "error" in result, f"loaded: {str(result)[:300]}"
    assert result["exit_code"] == 2 and result["seconds"] < 2, result
    for word in words:
        assert word in result["error"], f"{word!r} not in {result['error']}"
    return result["error"]


def python_step(data: str, head: str = "") -> str:
    return f"{head}steps:\n  train: {{builder: python, params: {{function: 'steps:train', data: {data}}}}}\n"


def laughs(item: str, width: int = 10, levels: int = 9, anchors: bool = True) -> str:
    """`vars:` of lists l0..l8, each `width` times the one before ("billion laughs")."""
    lines = ["vars:", f"  l0: {'&l0 ' * anchors}[{', '.join('x' * width)}]"]
    for i in range(1, levels):
        lines.append(f"  l{i}: {f'&l{i} ' * anchors}[{', '.join([item.format(prev=f'l{i - 1}')] * width)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_fast(tmp_path):
    refused(tmp_path, python_step("*l8", laughs("*{prev}")), "aliases expand to more than 100000 values",
            "MAX_EXPANSION", "recipe.yaml")


def test_aliases_may_add_up_to_the_limit_and_no_more(tmp_path):
    shared = f"vars:\n  a: &a [{', '.join(['x'] * 999)}]\n"  # 1000 values with its list
    copies = MAX_EXPANSION // 1000
    params = load(tmp_path, python_step(f"[{', '.join(['*a'] * copies)}]", shared))["params"]
    assert len(params["data"]) == copies and params["data"][0] == ["x"] * 999
    refused(tmp_path, python_step(f"[{', '.join(['*a'] * (copies + 1))}]", shared), "aliases expand")


def test_an_anchor_shared_a_few_times_loads(tmp_path):
    text = python_step("{<<: *base, lr: 0.1}", "vars:\n  base: &base {lr: 0.01, layers: [8, 8]}\n")
    assert load(tmp_path, text)["params"]["data"] == {"lr": 0.1, "layers": [8, 8]}


@pytest.mark.parametrize("anchored", ["&loop [*loop]", "&loop {next: *loop}", "&loop [[[*loop]]]"])
def test_a_recursive_alias_is_refused(tmp_path, anchored):
    refused(tmp_path, python_step("*loop", f"vars:\n  loop: {anchored}\n"), "line 2, column 9",
            "an alias to itself")


def test_nesting_is_limited(tmp_path):
    levels = MAX_DEPTH - 4  # under the recipe, steps, train and params
    assert "data" in load(tmp_path, python_step("[" * levels + "]" * levels))["params"]
    for levels in (MAX_DEPTH, 900, 100_000):  # libyaml itself refuses more than 1000
        refused(tmp_path, python_step("[" * levels + "]" * levels), f"nested more than {MAX_DEPTH} deep",
                "MAX_DEPTH")


def test_nesting_through_aliases_is_limited(tmp_path):
    inner = "&deep " + "[" * 60 + "]" * 60
    refused(tmp_path, python_step("[" * 50 + "*deep" + "]" * 50, f"vars:\n  d: {inner}\n"), "nested more than")


def test_an_interpolation_bomb_is_refused_fast(tmp_path):
    refused(tmp_path, python_step("1", laughs("'${{vars.{prev}}}'", anchors=False)),
            "refused interpolation", "MAX_EXPANSION")


def test_a_string_interpolation_bomb_is_refused_fast(tmp_path):
    strings = "vars:\n  s0: xxxxxxxxxx\n" + "".join(f"  s{i}: '{f'${{vars.s{i - 1}}}' * 10}'\n" for i in range(1, 9))
    refused(tmp_path, python_step("'${vars.s8}'", strings), "refused interpolation", "MiB of text")


def test_many_references_that_add_up_are_refused(tmp_path):
    shared = f"vars:\n  a: [{', '.join(['x'] * 999)}]\n"
    refused(tmp_path, python_step(f"[{', '.join([repr('${vars.a}')] * 101)}]", shared),
            "its interpolations add", "values")


def test_interpolations_within_the_limits_resolve(tmp_path):
    text = python_step("{lr: 0.1, again: '${.lr}', seed: '${seed}', text: 'lr=${vars.lr}', list: '${vars.l}', "
                       "shell: 'echo \\${HOME}'}", "seed: 3\nvars: {lr: 0.5, l: [1, 2]}\n")
    data = load(tmp_path, text)["params"]["data"]
    assert data == {"lr": 0.1, "again": 0.1, "seed": 3, "text": "lr=0.5", "list": [1, 2], "shell": "echo ${HOME}"}


def test_a_nested_interpolation_is_refused(tmp_path):
    refused(tmp_path, python_step("'${vars.${vars.which}}'", "vars: {which: a, a: 1}\n"),
            "nested interpolation", "steps.train.params.data")


def test_a_long_chain_of_references_is_refused(tmp_path):
    chain = "".join(f"  a{i}: ${{vars.a{i + 1}}}\n" for i in range(2000))  # a0 -> a1 -> ... -> a2000
    refused(tmp_path, python_step("'${vars.a0}'", f"vars:\n{chain}  a2000: x\n"), "chain", "refer to the value itself")


def test_nesting_through_interpolations_is_limited(tmp_path):
    deep = "vars:\n  d0: " + "[" * 60 + "x" + "]" * 60 + "\n  d1: " + "[" * 60 + "'${vars.d0}'" + "]" * 60 + "\n"
    refused(tmp_path, python_step("'${vars.d1}'", deep), "once resolved", "nested more than 100 deep")


def test_a_long_chain_of_steps_is_ordered_without_deep_recursion(tmp_path):
    n = 3000  # each step's input is declared after it, so ordering walks the whole chain at once
    steps = "".join(f"  s{i}: {{builder: command, inputs: [s{i + 1}], params: {{cmd: 'true'}}}}\n" for i in range(n))
    text = f"steps:\n{steps}  s{n}: {{builder: command, params: {{cmd: 'true'}}}}\n".replace("s0:", "train:")
    assert load(tmp_path, text)["params"]["cmd"] == "true"
