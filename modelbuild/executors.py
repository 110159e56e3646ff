"""Executors: where resolved jobs run. The realiser and a search submit jobs and wait for them through this
interface only, so another executor (a cluster's) or a warm worker pool plugs in without touching either.

The interface (see docs/concepts.md, "Jobs and executors"):

- `submit(job, expect=None) -> Handle`: start building a job (`expect`: `build --check` compares with it);
- `free() -> int`: how many more jobs may start now (`-j N` slots; a job holds one until released);
- `wait_any(handles, timeout) -> [done handles]`, a handle's `result()` (the worker's answer) and `progress()`;
- `cancel(handle)`: kill it now (SIGKILL to the job's process group); `interrupt(handles)`: Ctrl-C, then kill.

`LocalExecutor` runs each job in a worker process of its own (`python -m modelbuild.worker RUN.json`), in a
process group of its own, so a killed job takes its children (DDP ranks, a sandbox) with it. The process is
forked from a warm zygote that has already imported what the builder needs (modelbuild/zygote.py), or started
plainly where that is not possible or MODELBUILD_WARM=0.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import zygote
from .derivation import Job
from .store import Store
from .worker import Run


@dataclass(eq=False)
class Handle:
    """A submitted job: its process (Popen-like: pid, poll, wait, send_signal, kill, returncode) and files."""

    job: Job
    mode: str
    proc: object
    run_file: Path
    result_file: Path
    progress_file: Path
    log: Path
    started: float = field(default_factory=time.time)

    def done(self) -> bool:
        return self.proc.poll() is not None

    def progress(self) -> dict | None:
        try:
            return json.loads(self.progress_file.read_text())
        except (OSError, ValueError):
            return None

    def result(self) -> dict:
        """The worker's answer; a worker that died before answering is a failed build that says how."""
        try:
            return json.loads(self.result_file.read_text())
        except (OSError, ValueError):
            code = self.proc.returncode
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            return {"error": {"type": "BuildError", "message":
                              f"step '{self.job.step}': the build worker {how} before reporting a result "
                              f"(out of memory, or a crash in a native library). The log is {self.log}"}}


class LocalExecutor:
    """Worker processes on this machine, at most `slots` at once."""

    def __init__(self, store: Store, slots: int = 1):
        self.store, self.slots = store, max(1, slots)
        self.live: set[Handle] = set()

    def free(self) -> int:
        """Slots left: a job holds its slot until it is released (its result read), so the next job starts
        only once the scheduler has seen how the last one ended (a failure stops the build)."""
        return self.slots - len(self.live)

    def submit(self, job: Job, expect: Path | None = None) -> Handle:
        jobs_dir = self.store.tmp / "jobs"
        jobs_dir.mkdir(parents=True, exist_ok=True)
        base = jobs_dir / uuid.uuid4().hex
        run = Run(str(self.store.root), job, "check" if expect else "build", str(expect) if expect else None,
                  f"{base}.result.json", f"{base}.progress.json")
        run_file = Path(f"{base}.job.json")
        run_file.write_text(json.dumps(run.to_json()))
        handle = Handle(job, run.mode, self.start_worker(run_file, job), run_file, Path(run.result), Path(run.progress),
                        self.store.logs / f"{job.key}.log")
        self.live.add(handle)
        return handle

    def start_worker(self, run_file: Path, job: Job):
        """The one place a worker process starts (a Popen-like object): forked from the zygote for the builder's
        declared packages, in a session and process group of its own, so cancelling a job kills whatever it
        started; killed with the build if the build is killed (zygote.py)."""
        return zygote.start_worker(run_file, job.drv.get("env", {}).get("packages", ()))

    def wait_any(self, handles, timeout: float = 0.0) -> list[Handle]:
        """The handles that are done, waiting up to `timeout` seconds for one."""
        deadline = time.monotonic() + timeout
        while True:
            done = [h for h in handles if h.done()]
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))

    def release(self, handle: Handle) -> None:
        """Forget a finished job: its files go (its result has been read)."""
        self.live.discard(handle)
        for f in (handle.run_file, handle.result_file, handle.progress_file):
            f.unlink(missing_ok=True)

    def cancel(self, handle: Handle) -> None:
        """Kill the job now, with every process it started, and forget it."""
        _signal_group(handle.proc, signal.SIGKILL)
        handle.proc.wait()
        self.release(handle)

    def interrupt(self, handles, grace: float = 10.0) -> None:
        """Ctrl-C: each job's process group gets SIGINT (a build stops at its next checkpoint and leaves the
        store as it was); whatever still runs after `grace` seconds is killed."""
        handles = list(handles)
        for h in handles:
            if not h.done():
                _signal_group(h.proc, signal.SIGINT)
        deadline = time.time() + grace
        for h in handles:
            try:
                h.proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            self.cancel(h)  # and whatever the job left running in its group (a shell's background child)


def _signal_group(proc, sig) -> None:
    """Signal the job's process group (it lives on while any process in it does, the worker gone or not)."""
    proc.send_signal(sig)  # a zygote's process signals its job's whole group (zygote.WarmProcess)
