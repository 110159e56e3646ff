"""`command` and `python` steps run sandboxed: what they read undeclared, they cannot see.

Each probe tries one thing a step must not do (read an undeclared project file, read $HOME, read a host
environment variable, write outside its output, connect to a listener on the host) and writes what it saw
into its output. Unsandboxed, every probe sees or does it; sandboxed, none does.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from pathlib import Path

import pytest

from modelbuild.sandbox import unavailable

needs_bwrap = pytest.mark.skipif(unavailable() is not None, reason=f"no sandbox here: {unavailable()}")
NO_BWRAP = {"MODELBUILD_BWRAP": "/nonexistent/bwrap"}


@pytest.fixture
def listener():
    """A TCP listener on the host's 127.0.0.1 that accepts every connection; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                pass
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def home(tmp_path):
    """A $HOME holding a credential, as a user's does."""
    path = tmp_path / "home"
    path.mkdir()
    (path / ".netrc").write_text("machine example.com password hunter2\n")
    return path


# probe -> (shell command, python function body, what a sandboxed step writes to r)
PROBES = {
    "undeclared-project-file": (
        'cat "{project}/secret.txt" > "$MB_OUT/r" 2>/dev/null || echo blind > "$MB_OUT/r"',
        'try:\n        seen = open("{project}/secret.txt").read()\n    except OSError:\n        seen = "blind"',
        "blind"),
    "home": (
        '(cat "$HOME/.netrc" || cat "{home}/.netrc") > "$MB_OUT/r" 2>/dev/null || echo blind > "$MB_OUT/r"',
        'import os\n    seen = "blind"\n    for p in (os.path.expanduser("~/.netrc"), "{home}/.netrc"):\n'
        '        try:\n            seen = open(p).read()\n        except OSError:\n            pass',
        "blind"),
    "undeclared-env-var": (
        '(test -n "$SECRET_TOKEN" && echo "$SECRET_TOKEN" || echo unset) > "$MB_OUT/r"',
        'import os\n    seen = os.environ.get("SECRET_TOKEN", "unset")',
        "unset"),
    "write-outside-output": (
        '(echo leaked > "{project}/leak.txt") 2>/dev/null; echo done > "$MB_OUT/r"',
        'try:\n        open("{project}/leak.txt", "w").write("leaked")\n    except OSError:\n        pass\n'
        '    seen = "done"',
        "done"),
    "network": (
        '(echo hi > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo connected > "$MB_OUT/r" '
        '|| echo refused > "$MB_OUT/r"',
        'import socket\n    try:\n        socket.create_connection(("127.0.0.1", {port}), timeout=5).close()\n'
        '        seen = "connected"\n    except OSError:\n        seen = "refused"',
        "refused"),
}


def probe_project(project, builder: str, probe: str, **values) -> None:
    cmd, body, _ = PROBES[probe]
    project.write("secret.txt", "top secret\n")
    if builder == "command":
        params = json.dumps({"cmd": cmd.format(project=project, **values)})
    else:
        params = json.dumps({"function": "steps:probe"})
        project.write("steps.py", "def probe(ctx):\n    " + body.format(project=project, **values)
                      + '\n    (ctx.out / "r").write_text(seen.strip() + "\\n")\n')
    project.write("recipe.yaml", f"name: probe\nsteps:\n  probe: {{builder: {builder}, params: {params}}}\n")


def read_output(result: dict, step: str = "probe", name: str = "r") -> str:
    return (Path(result["by_step"][step]["path"]) / name).read_text().strip()


@needs_bwrap
@pytest.mark.parametrize("builder", ["command", "python"])
@pytest.mark.parametrize("probe", sorted(PROBES))
def test_a_step_cannot_see_or_touch_what_it_did_not_declare(project, cli, home, listener, builder, probe):
    probe_project(project, builder, probe, home=home, port=listener)
    result = cli.build(env={"HOME": str(home), "SECRET_TOKEN": "hunter2"})
    assert read_output(result) == PROBES[probe][2]
    assert not (project / "leak.txt").exists()


@needs_bwrap
def test_declared_inputs_env_and_imported_modules_are_visible(project, cli):
    project.write("secret.txt", "top secret\n")
    project.write("helper.py", "def shout(text):\n    return text.upper()\n")
    project.write("steps.py", """
        import os
        from helper import shout

        def use(ctx):
            text = (ctx.inputs["secret"]).read_text() + os.environ["TOKEN"]
            (ctx.out / "r").write_text(shout(text))
    """)
    project.write("recipe.yaml", """
        name: declared
        steps:
          cmd:
            builder: command
            inputs: {secret: {path: secret.txt}}
            params: {cmd: 'cat secret.txt "$MB_IN_SECRET" > "$MB_OUT/r"; echo "$TOKEN" >> "$MB_OUT/r"', env: {TOKEN: t0k}}
          py:
            builder: python
            inputs: {secret: {path: secret.txt}}
            params: {function: "steps:use", env: {TOKEN: t0k}}
    """)
    result = cli.build()
    assert read_output(result, "cmd") == "top secret\ntop secret\nt0k"  # relative to the recipe's folder too
    assert read_output(result, "py") == "TOP SECRET\nT0K"


@needs_bwrap
def test_the_lineage_says_a_step_ran_sandboxed_and_keeps_a_python_steps_facts(project, cli):
    project.write("steps.py", """
        def work(ctx):
            ctx.record_facts({"rows_per_second": 5})
            ctx.progress(1, 1, "done")
            (ctx.out / "r").write_text("ok")
    """)
    project.write("recipe.yaml", """
        name: facts
        steps:
          cmd: {builder: command, params: {cmd: 'echo ok > "$MB_OUT/r"'}}
          py: {builder: python, params: {function: "steps:work"}}
    """)
    cli.build()
    assert json.loads(cli("show", "--json", "facts:cmd").stdout)["metrics"] == {"sandboxed": True}
    assert json.loads(cli("show", "--json", "facts:py").stdout)["metrics"] == {"sandboxed": True,
                                                                               "rows_per_second": 5}


@needs_bwrap
def test_a_python_steps_failure_keeps_its_meaning_and_its_traceback(project, cli):
    project.write("steps.py", """
        from modelbuild.errors import DataValidationError

        def crash(ctx):
            print("about to fail")
            raise ValueError("boom")

        def invalid(ctx):
            raise DataValidationError("column age has 3 negative values")
    """)
    project.write("recipe.yaml", """
        name: fails
        steps:
          crash: {builder: python, params: {function: "steps:crash"}}
    """)
    result = cli.build(check=1)
    assert "ValueError: boom" in result["by_step"]["crash"]["error"]
    log = cli("log", "fails:crash").stdout
    assert "about to fail" in log and "Traceback" in log
    project.write("recipe.yaml", "name: fails\nsteps:\n  bad: {builder: python, params: {function: 'steps:invalid'}}\n")
    result = cli.build(check=3)
    assert "column age has 3 negative values" in result["by_step"]["bad"]["error"]


def test_network_needs_a_pinned_output_hash(project, cli):
    project.write("recipe.yaml", """
        name: net
        steps:
          fetch: {builder: command, params: {cmd: 'true', network: true}}
    """)
    err = cli("build", "recipe.yaml", check=2).stderr
    assert "step 'fetch'" in err and "`network: true` needs `output_hash:`" in err
    assert "Traceback" not in err
    assert not (cli.store / "objects").exists() or not list((cli.store / "objects").iterdir())


@needs_bwrap
@pytest.mark.parametrize("builder", ["command", "python"])
def test_network_with_a_pinned_output_hash_is_checked_like_a_fixed_output(project, cli, listener, builder):
    cmd, body, _ = PROBES["network"]
    if builder == "command":
        params = {"cmd": cmd.format(port=listener)}
    else:
        project.write("steps.py", "def probe(ctx):\n    " + body.format(port=listener)
                      + '\n    (ctx.out / "r").write_text(seen + "\\n")\n')
        params = {"function": "steps:probe"}

    def recipe(pin: str) -> None:
        spec = json.dumps({**params, "network": True, "output_hash": pin})
        project.write("recipe.yaml", f"name: net\nsteps:\n  probe: {{builder: {builder}, params: {spec}}}\n")

    recipe("0" * 32)
    err = cli("build", "recipe.yaml", check=5).stderr
    assert "`params.output_hash` pins 00000000000000000000000000000000" in err
    actual = re.search(r"set `output_hash: '([0-9a-f]{32})'`", err)[1]
    recipe(actual)
    assert read_output(cli.build()) == "connected"


def test_required_sandbox_without_bwrap_is_exit_2_and_builds_nothing(project, cli):
    project.write("recipe.yaml", "name: req\nsteps:\n  s: {builder: command, params: {cmd: 'echo ok > $MB_OUT/ok'}}\n")
    err = cli("build", "recipe.yaml", check=2, env={**NO_BWRAP, "MODELBUILD_SANDBOX": "required"}).stderr
    assert "the sandbox is required" in err and "no bwrap binary found" in err and "bubblewrap" in err
    assert "Traceback" not in err
    assert not (cli.store / "objects").exists() or not list((cli.store / "objects").iterdir())


def test_auto_sandbox_without_bwrap_warns_once_and_records_it(project, cli):
    project.write("steps.py", "def work(ctx):\n    (ctx.out / 'r').write_text('ok')\n")
    project.write("recipe.yaml", """
        name: auto
        steps:
          a: {builder: command, params: {cmd: 'echo a > $MB_OUT/a'}}
          b: {builder: command, params: {cmd: 'echo b > $MB_OUT/b'}}
          c: {builder: python, params: {function: "steps:work"}}
    """)
    result = cli.build(env=NO_BWRAP)
    warnings = [line for line in result["stderr"].splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result["stderr"]
    assert "unsandboxed" in warnings[0] and "no bwrap binary found" in warnings[0]
    assert "undeclared files and environment variables" in warnings[0]
    assert json.loads(cli("show", "--json", "auto:c").stdout)["metrics"] == {"sandboxed": False}


def test_an_unknown_sandbox_mode_is_exit_2(project, cli):
    project.write("recipe.yaml", "name: m\nsteps:\n  s: {builder: command, params: {cmd: 'true'}}\n")
    err = cli("build", "recipe.yaml", check=2, env={"MODELBUILD_SANDBOX": "sometimes"}).stderr
    assert "MODELBUILD_SANDBOX='sometimes'" in err and "auto" in err and "Traceback" not in err
