"""The build view: on a terminal a row per step with a bar, count, rate and ETA while it runs, a search's running
trials nested under it, no markup and no line wider than the terminal; in a log, plain lines with a progress
line now and then."""

from __future__ import annotations

import io
import re

from rich.console import Console

from modelbuild.progress import LiveReporter, PlainReporter
from modelbuild.realise import StepState

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LONG_NOTE = ("tune search: trial 1/4 ok (val_loss 0.5): lr=0.001, batch_size=64, hidden=[64, 64], dropout=0.1, "
             "weight_decay=0.01")


def states(train_done: float, trial_done: float) -> list[StepState]:
    return [StepState("data", status="cached"),
            StepState("train", status="running", progress={"done": train_done, "total": 1000, "unit": "steps",
                                                          "message": "epoch 0 loss 0.6931"}),
            StepState("search", status="running", progress={
                "done": 1, "total": 4, "unit": "trials", "message": "[dim]",
                "trials": [{"name": "trial 2", "done": trial_done, "total": 50, "unit": "steps", "seconds": "1.0s"}]}),
            StepState("[bold]evaluate")]


def test_a_terminal_shows_a_bar_rate_and_eta_per_running_step_and_trials_under_their_search():
    clock = [100.0]
    console = Console(file=io.StringIO(), force_terminal=True, width=80)
    view = LiveReporter(console=console, get_time=lambda: clock[0], live=False)
    view.start(states(0, 0))
    for done in (1, 2):  # two reports 5 s apart: 50 steps each
        clock[0] += 5
        view.update(states(50 * done, 10 * done))
    view.note(LONG_NOTE)
    console.print(view.progress)
    out = console.file.getvalue()
    text = ANSI.sub("", out)
    lines = text.splitlines()
    assert lines[0].startswith("tune search: trial 1/4") and lines[0].endswith("…"), "a long note is cropped"
    assert all(len(line) <= 80 for line in lines), text
    rows = {line.split()[0] if not line.lstrip().startswith("└") else "trial": line for line in lines[1:]}
    assert list(rows) == ["data", "train", "search", "trial", "[bold]evaluate"], text  # the trial under its search
    assert "━" in rows["train"] and "100/1000 steps 10/s eta 1:30" in rows["train"], text
    assert "20/50 steps 2/s eta 0:15" in rows["trial"] and "1/4 trials" in rows["search"], text
    assert "[dim]" in rows["search"] and "[bold]evaluate" in text  # shown as written: text, never markup
    assert "[/" not in text and "pending" in rows["[bold]evaluate"]

    clock[0] += 1
    view.update([*states(0, 0)[:2], StepState("search", status="built", seconds=3.0), states(0, 0)[3]])
    console.file = io.StringIO()
    console.print(view.progress)
    assert "trial 2" not in ANSI.sub("", console.file.getvalue()), "a finished search's trials are gone"


def test_a_log_gets_plain_lines_and_a_progress_line_now_and_then():
    clock, stream = [0.0], io.StringIO()
    log = PlainReporter(stream=stream, every=30, clock=lambda: clock[0])
    for t, done in ((0, 0), (10, 100), (30, 300), (45, 450), (60, 600)):
        clock[0] = t
        log.update(states(done, 0)[:2])
    lines = stream.getvalue().splitlines()
    assert lines[0] == "cached   data"
    assert lines[1].startswith("running  train")
    assert lines[2:] == ["running  train: 30%, 300/1000 steps, 10 steps/s, eta 1:10, epoch 0 loss 0.6931",
                         "running  train: 60%, 600/1000 steps, 10 steps/s, eta 0:40, epoch 0 loss 0.6931"]
    assert "[" not in stream.getvalue()


def test_a_build_on_a_terminal_shows_no_markup_and_no_line_wider_than_it(project, cli):
    """The real CLI's build view on a pseudo-terminal (as `script` or a CI's tty capture sees it)."""
    import os
    import pty
    import subprocess
    import sys

    project.write("recipe.yaml", """
        name: demo
        steps:
          a_step_with_a_rather_long_name_indeed:
            builder: command
            params: {cmd: 'sleep 0.5; echo "[dim]x[/]" > "$MB_OUT/x"'}
    """)
    main, tty = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "modelbuild", "--store", str(cli.store), "build", "recipe.yaml"],
                            cwd=project, stdin=tty, stdout=subprocess.DEVNULL, stderr=tty, env={**os.environ, "COLUMNS": "60"})
    os.close(tty)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert proc.wait(timeout=120) == 0
    text = ANSI.sub("", b"".join(chunks).decode())
    lines = [part for line in text.replace("\r\n", "\n").split("\n") for part in line.split("\r")]
    assert any("built" in line for line in lines), text
    assert "[/" not in text and "[dim]" not in text, text
    assert all(len(line) <= 60 for line in lines), [line for line in lines if len(line) > 60]
