"""Warm workers: a pre-started zygote per import set forks a fresh process for each job.

A plain worker (`python -m modelbuild.worker JOB`) pays ~0.2 s to start Python and modelbuild, and a step
that trains pays seconds more to import torch and Lightning; a search pays it again for every trial. As with
Bazel's persistent workers, a zygote pays it once: it imports a set of modules and then forks one child per
job. Unlike a persistent worker, every job still runs in a process of its own, so a build keeps its clean
process state: the child gets its own session and process group, environment, working directory and stdio,
runs the module as `python -m` would, and exits. A crash, a leaked global or a signal in one job touches no
other job and not the zygote.

The client's side is `start()`, which returns a `WarmProcess` with the `subprocess.Popen` surface the
realiser uses (pid, poll, wait, send_signal, terminate, kill, returncode). Signals go to the job's whole
process group, through the zygote, which alone knows whether the job has been reaped (no pid-reuse race).

- Ctrl-C: the zygote runs in a session of its own, so a terminal's SIGINT reaches only the client, which
  forwards it to each running job's group (as the realiser does for plain workers).
- A zygote that dies (killed, out of memory) takes its running jobs with it: their groups are killed and they
  report `killed by signal 9`; the next job starts a fresh zygote.
- A zygote whose imported files changed on disk (stat: mtime, size, inode) answers `stale` and is replaced,
  so an edited builder or an upgraded library is never run from memory.
- The zygote exits with its client: when the client closes the socket (or dies) it kills its jobs' groups.
- Fork safety: the zygote starts no Python thread (checked: one that has any is not used). The native
  threads numpy's OpenBLAS and torch start at import re-initialise after fork through their atfork handlers,
  as they do in a DataLoader worker; torch's intra-op pool is sized by the job itself, after the fork.
- Where fork is unavailable (not Linux), `MODELBUILD_WARM=0`, or a zygote cannot be used, `start()` runs a
  plain process instead: same job, same result, only slower.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

WARM_ENV = "MODELBUILD_WARM"
LIGHT = ("modelbuild.worker", "pyarrow", "pyarrow.parquet")  # the data builders' tables
TORCH = (*LIGHT, "numpy", "torch", "lightning", "modelbuild.training.loop", "modelbuild.training.tabular",
         "onnx")  # tabular models export ONNX too; importing it costs ~1.5 CPU s (ml_dtypes)
LLM = (*LIGHT, "numpy", "torch", "transformers", "transformers.modeling_utils", "lm_eval.evaluator",
       "lm_eval.models.huggingface")  # benchmark: modeling_utils is most of a model's load (~3 CPU s of imports)


def enabled() -> bool:
    return os.environ.get(WARM_ENV, "1") != "0" and sys.platform.startswith("linux") and hasattr(os, "fork")


def import_set(env_packages) -> tuple[str, ...]:
    """What a builder's zygote imports, from the packages it declares: lm-eval and transformers for those that
    score language models (not Lightning: its import costs them 5-9 s), torch and Lightning for the others
    that use torch, the worker and pyarrow otherwise (three zygotes at most, rather than one per builder)."""
    if "lm-eval" in env_packages:
        return LLM
    return TORCH if "torch" in env_packages else LIGHT


# ---- the client's side -----------------------------------------------------------------------------------
class WarmProcess:
    """A job forked by a zygote, seen from the client like a `subprocess.Popen`. It is asked for at once and
    forked when the zygote is ready (its imports may take seconds); one the zygote refuses (stale, dead, unfit
    to fork) runs as a plain process instead."""

    def __init__(self, zygote: Zygote | None, request: dict):
        self._zygote, self._request = zygote, request
        self.args = [request["module"], *request["args"]]
        self.pid: int | None = None
        self.returncode: int | None = None
        self._plain: subprocess.Popen | None = None
        self._signal: int | None = None  # asked for before the fork: sent right after it
        if zygote is None:
            self._refused("warm workers are off")

    def poll(self) -> int | None:
        if self._plain is not None:
            self.returncode = self._plain.poll()
        elif self.returncode is None:
            self._zygote.pump(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            if self._plain is not None:
                self.returncode = self._plain.wait(left)
            else:
                self._zygote.pump(left)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the job's whole process group: what it started too, even once the job itself has exited (a
        shell's background child lives on in its group)."""
        if self.pid is None:
            self._signal = sig
        elif self._plain is None and self.poll() is None:
            self._zygote.signal(self.pid, sig)  # the zygote knows it has not reaped it: no pid-reuse race
        else:
            _killpg(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _started(self, pid: int) -> None:
        self.pid = pid
        if self._signal is not None:
            self.send_signal(self._signal)

    def _refused(self, why: str) -> None:
        self.why_cold = why
        self._plain = _plain(**self._request)
        self._started(self._plain.pid)


class Zygote:
    """One zygote process, started with `modules` imported, and the jobs it has forked."""

    def __init__(self, modules: tuple[str, ...], env: dict, cwd: str):
        self.sock, theirs = socket.socketpair()
        code = f"from modelbuild.zygote import serve; serve({theirs.fileno()}, {list(modules)!r})"
        self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=[theirs.fileno()], env=env, cwd=cwd,
                                     start_new_session=True, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        theirs.close()
        self.pending: list[WarmProcess] = []  # asked for, not yet forked (in order)
        self.jobs: dict[int, WarmProcess] = {}  # forked, not yet exited
        self.buffer = b""
        self.alive, self.usable, self.unfit = True, True, False

    def start(self, request: dict) -> WarmProcess:
        job = WarmProcess(self, request)
        self.pending.append(job)
        self._send(request)
        return job

    def signal(self, pid: int, sig: int) -> None:
        if self.alive:
            self._send({"signal": pid, "sig": int(sig)})
        else:
            _killpg(pid, sig)

    def pump(self, timeout: float | None) -> None:
        """Read what the zygote said (jobs forked, refused or exited), waiting up to `timeout` for it."""
        if not self.alive:
            return
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if not readable:
            return
        data = self.sock.recv(1 << 16)
        if not data:
            self._died()
            return
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            message = json.loads(line)
            if "exit" in message:
                job = self.jobs.pop(message["exit"], None)
                if job is not None:
                    job.returncode = message["code"]
            elif "pid" in message:
                job = self.pending.pop(0)
                self.jobs[message["pid"]] = job
                job._started(message["pid"])
            else:
                self.usable, self.unfit = False, message.get("unfit", False)
                self.pending.pop(0)._refused(message["refused"])

    def close(self) -> None:
        """Let the zygote go: it kills the jobs still running and exits (as it does when the client dies)."""
        if self.alive:
            self.alive = False
            self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._orphans()

    def _send(self, message: dict) -> None:
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            self._died()

    def _died(self) -> None:
        if self.alive:
            self.alive, self.usable = False, False
            self.sock.close()
        self.proc.wait()
        self._orphans()

    def _orphans(self) -> None:
        """Jobs whose zygote is gone cannot be waited for: those it forked are killed (their groups) and say
        so; those it had not forked yet run as plain processes."""
        for pid, job in self.jobs.items():
            _killpg(pid, signal.SIGKILL)
            job.returncode = -signal.SIGKILL
        self.jobs.clear()
        while self.pending:
            self.pending.pop(0)._refused("the zygote has exited")


_ZYGOTES: dict[tuple, Zygote] = {}
_RETIRED: list[Zygote] = []  # replaced (stale), kept until their jobs have exited


def start(module: str, args: list[str], *, preload: tuple[str, ...] = LIGHT, env: dict | None = None,
          cwd: str | None = None, output: str | None = None) -> WarmProcess:
    """Run `python -m module *args` as a fresh process forked from a warm zygote that imported `preload`
    (a plain process where that is not possible). `output`: a file for its stdout and stderr (else none)."""
    request = {"module": module, "args": list(args), "env": dict(os.environ if env is None else env),
               "cwd": os.fspath(cwd or os.getcwd()), "output": output}
    if not enabled():
        return WarmProcess(None, request)
    zygote = _zygote(preload, request["env"], request["cwd"])
    return zygote.start(request) if zygote else WarmProcess(None, request)


def start_worker(job_file, packages=()) -> WarmProcess:
    """The build worker for one job file (`python -m modelbuild.worker JOB`), forked from the zygote for the
    builder's declared `packages` (its derivation's env) where possible: what the local executor starts."""
    return start("modelbuild.worker", [os.fspath(job_file)], preload=import_set(packages),
                 env={**os.environ, "PYTHONUNBUFFERED": "1"})


def prestart(preload: tuple[str, ...]) -> None:
    """Start the zygote for `preload` now, so that its imports overlap with other work."""
    if enabled():
        _zygote(preload, dict(os.environ), os.getcwd())


def _zygote(preload: tuple[str, ...], env: dict, cwd: str) -> Zygote | None:
    """The usable zygote for this import set, environment and folder: a stale or dead one is replaced; None
    where one cannot be used (it had threads before forking)."""
    key = (preload, env.get("PYTHONPATH", ""), env.get("PATH", ""), cwd)
    zygote = _ZYGOTES.get(key)
    if zygote is not None:
        zygote.pump(0)
        if zygote.unfit:
            return None
        if not zygote.usable:
            _RETIRED.append(_ZYGOTES.pop(key))
            zygote = None
    for old in [z for z in _RETIRED if not z.jobs and not z.pending]:
        _RETIRED.remove(old)
        old.close()
    if zygote is None:
        zygote = _ZYGOTES[key] = Zygote(preload, env, cwd)
    return zygote


def _plain(module: str, args: list[str], env: dict, cwd: str, output: str | None) -> subprocess.Popen:
    """The job as a plain process, in a session of its own like a forked one."""
    with open(output or os.devnull, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True, preexec_fn=die_with_parent)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Get `sig` when the parent dies (Linux): a job outlives neither its zygote nor its client, and a
    zygote kills its jobs' process groups (what they started) when its client dies."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@atexit.register
def shutdown() -> None:
    """Close every zygote (the client is exiting): each kills the jobs it still runs."""
    while _ZYGOTES:
        _ZYGOTES.popitem()[1].close()
    while _RETIRED:
        _RETIRED.pop().close()


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---- the zygote's side -----------------------------------------------------------------------------------
def serve(fd: int, modules: list[str]) -> None:
    """The zygote: import `modules`, then fork a child per request until the client goes away."""
    import importlib
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the client's to forward, job by job
    signal.signal(signal.SIGTERM, _exit_now)
    client = os.getppid()
    die_with_parent(signal.SIGTERM)  # the client died: kill the jobs' groups (below) and exit, now
    if os.getppid() != client:
        return
    sock = socket.socket(fileno=fd)
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing extra: the job itself imports it and says what to install
            pass
    files = _module_files()
    unfit = threading.active_count() > 1 and f"the zygote has {threading.active_count()} threads"
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    buffer, stale = b"", False
    try:
        while True:
            readable, _, _ = select.select([sock, wake_r], [], [])
            if wake_r in readable:
                while _drain(wake_r):
                    pass
            _reap(sock, children)
            if sock not in readable:
                continue
            data = sock.recv(1 << 16)
            if not data:
                return  # the client has gone
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                request = json.loads(line)
                if "signal" in request:
                    if request["signal"] in children:
                        _killpg(request["signal"], request["sig"])
                    continue
                if unfit or stale or _changed(files):
                    stale = not unfit
                    _say(sock, {"refused": unfit or "stale: a file it imported changed on disk", "unfit": bool(unfit)})
                    continue  # it serves its running jobs until the client lets it go
                if os.getppid() != client:
                    return  # never start a job for a client that has gone
                zygote = os.getpid()
                pid = os.fork()
                if pid == 0:
                    _child(request, (sock.fileno(), wake_r, wake_w), zygote)
                children.add(pid)
                _say(sock, {"pid": pid})
    finally:
        for pid in children:
            _killpg(pid, signal.SIGKILL)


def _exit_now(*_) -> None:
    raise SystemExit(0)


def _child(request: dict, fds: tuple[int, ...], zygote: int) -> None:
    """In the forked child: become the job's own process, run its module as `python -m` would, exit."""
    import runpy
    import traceback

    code = 1
    try:
        os.setsid()
        die_with_parent()
        if os.getppid() != zygote:
            return  # the zygote died before the line above
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in fds:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _stdio(request["output"])
        sys.argv = [request["module"], *request["args"]]
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, int) and e.code is not None:
                print(e.code, file=sys.stderr)
        except KeyboardInterrupt:
            code = -signal.SIGINT
        except BaseException:  # noqa: BLE001 - as an uncaught exception ends `python -m`
            traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            if code == -signal.SIGINT:  # die by the signal, as Python does on an uncaught KeyboardInterrupt
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
            os._exit(code & 0xFF)


def _stdio(output: str | None) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    out = os.open(output or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for fd in (1, 2):
        os.dup2(out, fd)
    os.close(null)
    os.close(out)


def _reap(sock: socket.socket, children: set[int]) -> None:
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        children.discard(pid)
        _say(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _say(sock: socket.socket, message: dict) -> None:
    try:
        sock.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the client has gone: the loop sees it at its next read


def _drain(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


def _module_files() -> dict[str, tuple]:
    """The stat identity of every file the zygote imported, to notice an edit or an upgrade."""
    files = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path:
            try:
                st = os.stat(path)
            except OSError:
                continue
            files[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return files


def _changed(files: dict[str, tuple]) -> bool:
    for path, identity in files.items():
        try:
            st = os.stat(path)
        except OSError:
            return True
        if (st.st_mtime_ns, st.st_size, st.st_ino) != identity:
            return True
    return False
