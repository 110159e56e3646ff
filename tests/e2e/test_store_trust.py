"""A store you can trust with anything: names that try to leave it, damaged records, a store that cannot be
written, a lost trace. Through the real CLI.

Every case damages a copy of one built store (or builds its own), runs one command, and specifies what a
user sees: the exit code (2 usage, 5 damage or tampering, 7 store unavailable), one `error:` paragraph with
the words that say what and how to fix it, never a traceback, and nothing outside the store touched.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TWO_STEPS

FULL = "No space left on device"


@dataclass
class Case:
    args: tuple  # after `--store STORE`; {train} and {prepare} stand for those artifacts' digest prefixes
    code: int
    words: tuple = ()  # each in stderr
    damage: Callable | None = None  # damage(cli) before the command
    out: tuple = ()  # each in stdout
    then: Callable | None = None  # then(cli, proc): what else must hold afterwards
    run_as: str = "root"  # root, read-only (the store on a read-only bind mount), nobody (may not write it)
    env: dict | None = None


# ---- damage ----------------------------------------------------------------------------------------------

def obj(cli, step: str) -> Path:
    return next(p for p in (cli.store / "objects").iterdir() if p.name.endswith(f"-{step}"))


def key_of(cli, step: str) -> str:
    return json.loads((obj(cli, step) / ".meta.json").read_text())["key"]


def sql(statement: str, *params):
    def damage(cli):
        db = sqlite3.connect(cli.store / "trace.sqlite")
        with db:
            db.execute(statement.format(train=key_of(cli, "train")), params)
        db.close()
    return damage


def edit_meta(step: str, change: Callable[[dict], None]):
    def damage(cli):
        meta_file = obj(cli, step) / ".meta.json"
        meta = json.loads(meta_file.read_text())
        change(meta)
        os.chmod(meta_file, 0o644)
        meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True))
    return damage


def write_drv(text: str):
    def damage(cli):
        (cli.store / "drv" / f"{key_of(cli, 'train')}.json").write_text(text)
    return damage


def edit_drv(cli):
    path = cli.store / "drv" / f"{key_of(cli, 'train')}.json"
    drv = json.loads(path.read_text())
    drv["params"]["cmd"] = "echo edited"
    path.write_text(json.dumps(drv))


def trace_bytes(data: bytes | None, keep: int | None = None):
    def damage(cli):
        trace = cli.store / "trace.sqlite"
        trace.write_bytes(trace.read_bytes()[:keep] if keep is not None else data)
    return damage


def both(*damages):
    def damage(cli):
        for d in damages:
            d(cli)
    return damage


def victim(cli) -> Path:
    (cli.store.parent / "victim.txt").write_text("SECRET\n")
    (cli.store.parent / "victim.log").write_text("SECRET\n")
    return cli.store.parent / "victim.txt"


def copy_outside(cli):
    shutil.copytree(obj(cli, "train"), cli.store.parent / "elsewhere" / obj(cli, "train").name)


def store_is_a_file(cli):
    shutil.rmtree(cli.store)
    cli.store.write_text("not a store\n")


def flip(step: str, name: str):
    def damage(cli):
        f = obj(cli, step) / name
        os.chmod(f, 0o644)
        data = bytearray(f.read_bytes())
        data[0] ^= 0xFF
        with open(f, "r+b") as fh:
            fh.write(data)
    return damage


# ---- what else must hold --------------------------------------------------------------------------------

def victim_intact(cli, proc):
    assert (cli.store.parent / "victim.txt").read_text() == "SECRET\n"
    assert "SECRET" not in proc.stdout


def store_intact(cli, proc):
    assert "SECRET" not in proc.stdout
    cli("verify")
    assert "tag:best" in cli("roots").stdout


def clean_and_cached(cli, proc):
    cli("verify")
    assert "tag:best" in cli("roots").stdout
    assert set(cli.statuses(cli.build()).values()) == {"cached"}


def rebuilt(step: str):
    def check(cli, proc):
        assert cli.build()["by_step"][step]["status"] == "built"
        cli("verify")
    return check


def drv_sound(cli, proc):
    from modelbuild.hashing import hash_json
    key = key_of(cli, "train")
    assert hash_json(json.loads((cli.store / "drv" / f"{key}.json").read_text())) == key
    cli("verify")


def verify_clean(cli, proc):
    cli("verify")


CASES = {
    # ---- 1. names that become paths ------------------------------------------------------------------
    "tag-delete-a-file-outside-the-store": Case(
        ("tag", "--delete", "../../../victim.txt"), 2, ("tag name '../../../victim.txt'", "letters, digits"),
        damage=victim, then=victim_intact),
    "tag-delete-the-trace": Case(
        ("tag", "--delete", "../../trace.sqlite"), 2, ("tag name '../../trace.sqlite'",), then=store_intact),
    "tag-a-name-outside-roots": Case(("tag", "../../evil", "demo:train"), 2, ("tag name '../../evil'",),
                                     then=store_intact),
    "log-of-a-record-naming-etc-passwd": Case(
        ("log", "{train}"), 5, ("lineage record", "'../../../../../../../../etc/passwd'", "leads outside",
                                "modelbuild verify"),
        damage=edit_meta("train", lambda m: m.update(log="../../../../../../../../etc/passwd")),
        then=lambda cli, proc: "root:" not in proc.stdout),
    "log-of-an-attempt-with-a-tampered-key": Case(
        ("log", "demo:train"), 5, ("'../../victim'", "not a key", "verify --repair"),
        damage=both(victim, sql("UPDATE attempts SET key='../../victim' WHERE name='demo:train'")),
        then=victim_intact),
    "show-a-copy-outside-the-store": Case(
        ("show", "{elsewhere}"), 2, ("is not an artifact of the store", "RECIPE:STEP"), damage=copy_outside),
    "show-a-root-whose-path-was-tampered": Case(
        ("show", "best"), 5, ("the root tag:best", "'../../etc'", "leads outside"),
        damage=sql("UPDATE roots SET path='../../etc' WHERE name='tag:best'")),
    "gc-with-an-input-path-outside-the-store": Case(
        ("gc",), 5, ("'../../victim.txt'", "leads outside"),
        damage=both(victim, sql("UPDATE trace SET meta=json_set(meta, '$.inputs.prepare.path', '../../victim.txt') "
                                "WHERE key='{train}'")), then=victim_intact),
    # ---- 2. damaged records ----------------------------------------------------------------------------
    "verify-a-garbled-drv": Case(("verify",), 5, ("CORRUPT drv/", "not valid JSON", "verify --repair"),
                                 damage=write_drv("garbage{")),
    "verify-an-edited-drv": Case(("verify",), 5, ("CORRUPT drv/", "does not hash to its key"), damage=edit_drv),
    "build-over-a-garbled-drv": Case(
        ("build", "recipe.yaml", "steps.train.params.cmd='echo other > $MB_OUT/model.txt'"), 0,
        damage=write_drv("garbage{")),
    "plan-over-a-garbled-drv": Case(
        ("plan", "recipe.yaml", "steps.train.params.cmd='echo other > $MB_OUT/model.txt'"), 0,
        damage=write_drv(""), out=("train",)),
    "build-repairs-a-garbled-drv": Case(("build", "recipe.yaml"), 0, damage=write_drv("[1, 2]"), then=drv_sound),
    "verify-a-trace-record-that-differs-from-meta-json": Case(
        ("verify",), 5, ("CORRUPT objects/", "differs from .meta.json"),
        damage=sql("UPDATE trace SET meta=json_set(meta, '$.metrics', json('{{\"accuracy\": 0.99}}')) "
                   "WHERE key='{train}'")),
    # ---- 3. a store that cannot be used as asked -------------------------------------------------------
    "show-on-a-garbled-trace": Case(
        ("show", "demo:train"), 5, ("trace.sqlite is damaged", "modelbuild verify --repair"),
        damage=trace_bytes(b"garbage" * 1000)),
    "show-on-a-truncated-trace": Case(
        ("show", "demo:train"), 5, ("trace.sqlite is damaged", "modelbuild verify --repair"),
        damage=trace_bytes(None, keep=1024)),
    "build-on-a-garbled-trace": Case(
        ("build", "recipe.yaml"), 5, ("trace.sqlite is damaged", "verify --repair"),
        damage=trace_bytes(b"\x00garbage" * 1000)),
    "verify-a-garbled-trace": Case(("verify",), 5, ("CORRUPT trace.sqlite", "verify --repair"),
                                   damage=trace_bytes(b"garbage" * 1000)),
    "verify-an-emptied-trace": Case(
        ("verify",), 5, ("UNRECORDED objects/", "the trace has no record", "UNKNOWN roots/tag/best",
                         "a root the trace does not have", "verify --repair"), damage=trace_bytes(b"")),
    "show-on-a-store-that-is-a-file": Case(("show", "demo:train"), 7, ("is a file, not a directory", "--store"),
                                           damage=store_is_a_file),
    "build-on-a-store-that-is-a-file": Case(("build", "recipe.yaml"), 7, ("is a file, not a directory",),
                                            damage=store_is_a_file),
    **{f"{verb}-on-a-read-only-store": Case(args, 0, run_as="read-only", out=out) for verb, args, out in (
        ("show", ("show", "demo:train"), ("demo:train",)), ("path", ("path", "best"), ("objects/",)),
        ("verify", ("verify",), ("ok: 2 artifacts",)), ("roots", ("roots",), ("tag:best",)),
        ("log", ("log", "{train}"), ("building step train",)), ("diff", ("diff", "demo:prepare", "demo:train"), ()),
        ("graph", ("graph", "demo:train"), ("digraph",)))},
    "build-on-a-read-only-store": Case(("build", "recipe.yaml", "steps.train.params.cmd='echo x > $MB_OUT/x'"), 7,
                                       ("read-only file system", "use a store you may write"), run_as="read-only"),
    "tag-on-a-read-only-store": Case(("tag", "other", "demo:train"), 7, ("read-only file system",),
                                     run_as="read-only"),
    "show-on-a-store-you-may-not-write": Case(("show", "demo:train"), 0, run_as="nobody", out=("demo:train",)),
    "verify-on-a-store-you-may-not-write": Case(("verify",), 0, run_as="nobody", out=("ok: 2 artifacts",)),
    "build-on-a-store-you-may-not-write": Case(
        ("build", "recipe.yaml", "steps.train.params.cmd='echo x > $MB_OUT/x'"), 7, ("permission denied", "use a store you may write"),
        run_as="nobody"),
    "gc-on-a-store-you-may-not-write": Case(("gc",), 7, ("permission denied",), run_as="nobody"),
    "verify-a-leftover-of-a-build-killed-as-it-committed": Case(
        ("verify",), 0, out=("note: objects/", "is not in the trace", "`modelbuild gc` removes it", "ok: 1 artifacts"),
        damage=both(sql("DELETE FROM artifacts WHERE path LIKE '%-prepare'"),
                    sql("DELETE FROM trace WHERE path LIKE '%-prepare'"))),
    "verify-a-deleted-trace": Case(("verify",), 5, ("MISSING trace.sqlite", "verify --repair"),
                                   damage=lambda cli: (cli.store / "trace.sqlite").unlink()),
    "verify-repair-a-deleted-trace": Case(("verify", "--repair"), 0, out=("recorded objects/", "restored root tag:best"),
                                          damage=lambda cli: (cli.store / "trace.sqlite").unlink(),
                                          then=clean_and_cached),
    # ---- 4. a lost trace, rebuilt ------------------------------------------------------------------------
    "verify-repair-an-emptied-trace": Case(
        ("verify", "--repair"), 0, out=("recorded objects/", "from its lineage record", "restored root tag:best",
                                        "restored root demo:train", "ok: 2 artifacts"),
        damage=trace_bytes(b""), then=clean_and_cached),
    "verify-repair-a-garbled-trace": Case(
        ("verify", "--repair"), 0, out=("moved the damaged trace aside to trace.sqlite.corrupt-", "recorded objects/",
                                        "restored root tag:best"),
        damage=trace_bytes(b"garbage" * 1000),
        then=lambda cli, proc: (clean_and_cached(cli, proc), list(cli.store.glob("trace.sqlite.corrupt-*")))[1]),
    "verify-repair-quarantines-a-tampered-unrecorded-record": Case(
        ("verify", "--repair"), 5, ("MISSING objects/", "the root tag:best points to it"),
        out=("quarantined objects/", "its derivation does not hash to its key", "restored root tag:best"),
        damage=both(trace_bytes(b""), edit_meta("train", lambda m: m["derivation"]["params"].update(cmd="rm -rf /"))),
        then=rebuilt("train")),
    "verify-repair-quarantines-a-damaged-artifact": Case(
        ("verify", "--repair"), 5, ("MISSING objects/", "the root demo:prepare points to it"),
        out=("quarantined objects/", "fruit.txt changed"), damage=flip("prepare", "fruit.txt"),
        then=rebuilt("prepare")),
    "verify-repair-restores-a-tampered-trace-record": Case(
        ("verify", "--repair"), 0, out=("restored the trace's record of key",),
        damage=sql("UPDATE trace SET meta=json_set(meta, '$.metrics', json('{{\"accuracy\": 0.99}}')) "
                   "WHERE key='{train}'"), then=verify_clean),
    "verify-a-root-row-leading-outside-the-store": Case(
        ("verify",), 5, ("CORRUPT trace.sqlite", "its roots table names '../../etc' as a path", "verify --repair"),
        damage=sql("UPDATE roots SET path='../../etc' WHERE name='tag:best'")),
    "verify-repair-a-root-row-leading-outside-the-store": Case(
        ("verify", "--repair"), 0, out=("removed from the trace: its roots table names '../../etc'",
                                        "restored root tag:best", "ok: 2 artifacts"),
        damage=sql("UPDATE roots SET path='../../etc' WHERE name='tag:best'"), then=clean_and_cached),
    # ---- 5. the sandbox flag -----------------------------------------------------------------------------
    "build-with-an-unknown-sandbox-mode": Case(("build", "recipe.yaml", "--sandbox", "bogus"), 2,
                                               ("invalid choice: 'bogus'", "'auto', 'required', 'off'")),
    "build-with-the-sandbox-required-where-there-is-none": Case(
        ("build", "recipe.yaml", "steps.train.params.cmd='echo x > $MB_OUT/x'", "--sandbox", "required"), 2,
        ("the sandbox is required",), env={"MODELBUILD_BWRAP": "/nonexistent/bwrap"}),
    "build-with-the-sandbox-off-overrides-the-environment": Case(
        ("build", "recipe.yaml", "steps.train.params.cmd='echo x > $MB_OUT/x'", "--sandbox", "off"), 0,
        env={"MODELBUILD_BWRAP": "/nonexistent/bwrap", "MODELBUILD_SANDBOX": "required"}),
}


@pytest.fixture(scope="session")
def built_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trusted")
    (root / "recipe.yaml").write_text(TWO_STEPS)
    for args in (("build", "recipe.yaml"), ("tag", "best", "demo:train")):
        subprocess.run([sys.executable, "-m", "modelbuild", "--store", str(root / "store"), *args],
                       cwd=root, check=True, capture_output=True)
    return root / "store"


def _can(command: list[str]) -> bool:
    return subprocess.run(command, capture_output=True).returncode == 0


def _wrapped(run_as: str, store: Path) -> list[str]:
    """The command prefix that runs the CLI on a read-only mount of the store, or as user nobody."""
    if run_as == "read-only":
        if not _can(["unshare", "--mount", "--map-root-user", "true"]) and not _can(["unshare", "--mount", "true"]):
            pytest.skip("no mount namespace here (unshare) to mount the store read-only")
        flags = ["--mount"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--mount"]
        return ["unshare", *flags, "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(store)]
    if run_as == "nobody":
        if os.geteuid() != 0:
            pytest.skip("only root can run the CLI as another user")
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    return []


def _artifact_names(cli, args) -> list[str]:
    names = {}
    if (cli.store / "objects").is_dir():
        names = {step: obj(cli, step).name[:12] for step in ("train", "prepare")}
        names["elsewhere"] = str(cli.store.parent / "elsewhere" / obj(cli, "train").name)
    return [a.format(**names) if "{" in a and "$" not in a else a for a in args]


@pytest.fixture
def open_dir():
    """A folder user nobody may enter (pytest's own tmp folders are root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="mb-nobody-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("name", list(CASES))
def test_store_trust(name, project, cli, built_store, request):
    case = CASES[name]
    if case.run_as == "nobody":  # nobody must reach the project and the store
        base = request.getfixturevalue("open_dir")
        cli.project, cli.store = base / "project", base / "store"
        cli.project.mkdir()
    (cli.project / "recipe.yaml").write_text(TWO_STEPS)
    shutil.copytree(built_store, cli.store, symlinks=True)
    if case.run_as == "nobody":
        subprocess.run(["chmod", "-R", "a+rX", str(cli.store.parent)], check=True)
    if case.damage:
        case.damage(cli)
    args = _artifact_names(cli, case.args)
    command = [*_wrapped(case.run_as, cli.store), sys.executable, "-m", "modelbuild", "--store", str(cli.store),
               *args]
    proc = subprocess.run(command, cwd=cli.project, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(case.env or {})})

    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode == case.code, f"exit {proc.returncode}, expected {case.code}\n{proc.stderr}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == (case.code != 0), proc.stderr
    for word in case.words:
        assert word in proc.stderr, f"{word!r} not in:\n{proc.stderr}"
    for word in case.out:
        assert word in proc.stdout, f"{word!r} not in stdout:\n{proc.stdout}"
    if case.then:
        assert case.then(cli, proc) is not False


# ---- damage shared between artifacts, and files a step does not own ----------------------------------------

SHARED = """
name: shared
steps:
  model:
    builder: command
    params: {cmd: 'head -c 5000 /dev/zero | tr "\\\\0" w > "$MB_OUT/weights.bin"; echo {n} > "$MB_OUT/n.txt"'}
"""


def test_a_damaged_file_shared_by_two_artifacts_is_repaired_in_both_by_one_build(project, cli):
    project.write("recipe.yaml", SHARED.replace("{n}", "1"))
    first = cli.build()["by_step"]["model"]["path"]
    project.write("recipe.yaml", SHARED.replace("{n}", "2"))
    second = cli.build()["by_step"]["model"]["path"]
    assert os.stat(Path(first) / "weights.bin").st_ino == os.stat(Path(second) / "weights.bin").st_ino
    victim = Path(second) / "weights.bin"
    os.chmod(victim, 0o644)
    with open(victim, "r+b") as f:  # one flipped byte damages both artifacts: they share the inode
        f.write(b"X")
    assert cli("verify", check=5).stderr.count("weights.bin") == 2

    assert cli.build()["by_step"]["model"]["status"] == "built"
    cli("verify")  # the first artifact, not part of this build, was repaired from the rebuilt sound copy
    assert (Path(first) / "weights.bin").read_bytes() == b"w" * 5000


def test_a_damaged_shared_file_that_no_build_repairs_is_quarantined_by_verify_repair(project, cli):
    project.write("recipe.yaml", SHARED.replace("{n}", "1"))
    first = cli.build()["by_step"]["model"]["path"]
    project.write("recipe.yaml", SHARED.replace("{n}", "2"))
    second = cli.build()["by_step"]["model"]["path"]
    victim = Path(second) / "weights.bin"
    os.chmod(victim, 0o644)
    victim.write_bytes(b"X" * 5000)
    out = cli("verify", "--repair", check=5).stdout
    assert out.count("quarantined objects/") == 2
    assert not Path(first).exists() and not Path(second).exists()
    assert cli.build()["by_step"]["model"]["status"] == "built"
    project.write("recipe.yaml", SHARED.replace("{n}", "1"))
    assert cli.build()["by_step"]["model"]["status"] == "built"
    cli("verify")


def test_a_step_that_hard_links_a_users_file_does_not_change_it(project, cli):
    project.write("data.txt", "mine\n")
    os.chmod(project / "data.txt", 0o644)
    project.write("recipe.yaml", f"""
        name: ln
        steps:
          keep:
            builder: command
            params: {{cmd: 'ln "{project / 'data.txt'}" "$MB_OUT/data.txt"'}}
    """)
    out = Path(cli.build(env={"MODELBUILD_SANDBOX": "off"})["by_step"]["keep"]["path"])
    user = os.stat(project / "data.txt")
    assert user.st_mode & 0o777 == 0o644, "the build made the user's file read-only"
    assert user.st_ino != os.stat(out / "data.txt").st_ino, "the user's file became part of the store"
    assert (out / "data.txt").read_text() == "mine\n"
    (project / "data.txt").write_text("edited\n")  # the user may still edit it; the artifact does not change
    cli("verify")


# ---- a full disk ----------------------------------------------------------------------------------------------

def _on_a_tiny_disk(cli, size: str, args: list[str], setup: str = "true", env=None):
    """Run the CLI with the store on a tmpfs of `size` (in a mount namespace of its own); `setup` runs first.
    The store is copied out afterwards (to cli.store) for a look at what was left."""
    if not _can(["unshare", "--mount", "true"]):
        pytest.skip("no mount namespace here (unshare) for a small file system")
    disk = cli.store.parent / "disk"
    disk.mkdir()
    script = (f'mount -t tmpfs -o size={size} tmpfs "$0" && {setup}; "$@"; rc=$?; '
              f'cp -a "$0/store" "{cli.store}"; exit $rc')
    return subprocess.run(["unshare", "--mount", "sh", "-c", script, str(disk), sys.executable, "-m", "modelbuild",
                           "--store", str(disk / "store"), *args], cwd=cli.project, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def _nothing_half_written(cli, steps: int) -> None:
    objects = [p for p in (cli.store / "objects").iterdir() if p.name != ".links"]
    assert len(objects) == steps, objects
    assert not [p for p in (cli.store / "tmp").iterdir() if p.name not in ("jobs", "work")]
    assert subprocess.run([sys.executable, "-m", "modelbuild", "--store", str(cli.store), "verify"],
                          capture_output=True, text=True).returncode == 0


def test_a_build_on_a_full_disk_says_so_and_keeps_nothing_half_written(project, cli, built_store):
    project.write("recipe.yaml", TWO_STEPS)
    fill = f'cp -a "{built_store}" "$0/store" && (head -c 10000000 /dev/zero > "$0/filler" || true)'
    proc = _on_a_tiny_disk(cli, "2m", ["build", "recipe.yaml", "steps.train.params.cmd='echo other > $MB_OUT/m'"],
                           setup=fill)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode == 7, proc.stderr
    assert "no space left on its device" in proc.stderr and "modelbuild gc" in proc.stderr
    _nothing_half_written(cli, 2)


def test_a_step_that_fills_the_disk_fails_clearly_and_keeps_nothing(project, cli):
    project.write("recipe.yaml", """
        name: big
        steps:
          small: {builder: command, params: {cmd: 'echo hi > "$MB_OUT/a.txt"'}}
          big:
            builder: python
            inputs: [small]
            params: {function: "steps:big"}
    """)
    project.write("steps.py", """
        def big(ctx):
            (ctx.out / "big.bin").write_bytes(b"x" * 4_000_000)
    """)
    proc = _on_a_tiny_disk(cli, "3m", ["build", "recipe.yaml"], env={"MODELBUILD_SANDBOX": "off"})
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode == 7, proc.stderr
    assert "step 'big'" in proc.stderr and "o space left on" in proc.stderr, proc.stderr
    _nothing_half_written(cli, 1)
