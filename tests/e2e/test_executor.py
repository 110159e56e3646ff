"""The local executor's kill semantics, as a user sees them: Ctrl-C stops every process a step started."""

from __future__ import annotations

import signal
import subprocess
import time

import psutil

RECIPE = """
name: kill
steps:
  long:
    builder: command
    params: {cmd: 'sleep 3517 & echo started > $MB_OUT/started; sleep 3518; wait'}
"""


def _left(marker: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]


def test_ctrl_c_leaves_no_process_of_a_step_behind(project, cli):
    """A shell's background child ignores SIGINT; the step's process group is killed after the interrupt."""
    project.write("recipe.yaml", RECIPE)
    proc = cli.popen("build", "recipe.yaml", "--sandbox=off", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                     start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((cli.store / "tmp").glob("*/out/started")):
            time.sleep(0.05)
        assert _left("sleep 3517"), "the step never started"
        proc.send_signal(signal.SIGINT)  # Ctrl-C reaches the build; the build stops its jobs
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        deadline = time.time() + 10
        while _left("sleep 351") and time.time() < deadline:
            time.sleep(0.1)
        assert _left("sleep 351") == []
    finally:
        for p in _left("sleep 351"):
            p.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
