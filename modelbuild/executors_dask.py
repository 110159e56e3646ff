"""The Dask executor: a recipe's ready jobs and a search's trials run on a Dask `distributed` cluster.

The realiser plans, keys and collects exactly as with local workers (modelbuild/executors.py); only where a
job runs changes. Each job becomes one Dask task, which starts the ordinary build worker
(`python -m modelbuild.worker RUN.json`, forked from a warm zygote on the cluster worker, as local jobs are),
so the key's lock, the tmp build and the atomic commit are the worker's as ever; a job dies with its Dask
worker (the zygote kills its jobs when its client goes).

How a cluster worker reaches the store (docs/cluster.md):

- `shared` (the default): the client's store, mounted at the same path on every worker (NFS, Lustre, a
  PVC). A worker killed mid-step leaves only a tmp dir and a released lock; Dask reruns the task elsewhere,
  which commits once.
- `cache`: each worker builds into a store of its own. It substitutes the job's inputs from the shared cache
  (the client publishes those it has first), builds, pushes the artifact, and the client substitutes it, so
  the client's store ends as a local build's would.

A step's `resources:` (`{gpus: 1}`) become the task's Dask resources: it runs only on a worker started with
them (`dask worker ... --resources gpus=1`). Ctrl-C sets a Dask Event each running task watches: the job's
process group gets SIGINT, then SIGKILL after a grace period, as local jobs do.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from .derivation import Input, Job
from .errors import BuildError, ModelbuildError, UsageError
from .executors import Handle
from .store import Store
from .worker import Run

SCHEME = "dask://"
STORE_MODES = ("shared", "cache")
GRACE = 10.0  # seconds between SIGINT and SIGKILL when a job is interrupted
WORKER_ENV = "MODELBUILD_WORKER_NAME"  # recorded in the artifact's lineage (which cluster worker built it)
_ZYGOTE_LOCK = threading.Lock()


def scheduler_address(url: str) -> str:
    """`dask://HOST:PORT` -> the scheduler's `tcp://HOST:PORT`; anything else is a usage error."""
    found = re.fullmatch(r"dask://([^/:\s]+|\[[0-9a-fA-F:]+\]):(\d+)/?", url.strip())
    if not found:
        raise UsageError(f"--executor {url}: a Dask scheduler is written dask://HOST:PORT (e.g. dask://10.0.0.5:8786, "
                         "the address `dask scheduler` prints); the local executor is `local`")
    return f"tcp://{found.group(1)}:{found.group(2)}"


@dataclass(eq=False)
class DaskHandle(Handle):
    """A job running as a Dask task (`proc` is its Future); done when the task ends or the scheduler is lost."""

    executor: DaskExecutor | None = None

    def done(self) -> bool:
        return self.proc.done() or self.executor.lost()

    def result(self) -> dict:
        return self.executor.answer(self)


class DaskExecutor:
    """Jobs as tasks on a Dask cluster: as many at once as the cluster has threads (or `slots`)."""

    def __init__(self, store: Store, url: str, *, slots: int | None = None, mode: str = "shared",
                 worker_store: str | None = None, cache=None, timeout: float = 10.0):
        import logging

        from distributed import Client

        # a lost scheduler is said once, as the failed steps' error, not in distributed's reconnect tracebacks
        for name in ("distributed", "distributed.client", "distributed.comm", "distributed.core"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self.store, self.url, self.mode, self.fixed_slots = store, url, mode, slots
        self.worker_store, self.cache = worker_store, cache
        self.live: set[DaskHandle] = set()
        self._threads, self._asked = 1, 0.0
        self._finished = threading.Event()  # set by every task that finishes: wait_any sleeps on it
        try:
            self.client = Client(scheduler_address(url), timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise UsageError(f"--executor {url}: the Dask scheduler cannot be reached ({str(e)[:200]}). Start one "
                             "(`dask scheduler`, then `dask worker tcp://HOST:8786` on each machine) or fix the "
                             "address; docs/cluster.md") from None
        if mode == "cache":
            self.substituter, self.pusher = _cache_client(store, cache)

    # ---- the executor interface (modelbuild/executors.py) --------------------------------------------------
    def free(self) -> int:
        """Slots left: `-j N` where given, else one per thread of the cluster's workers (asked once a second)."""
        if self.fixed_slots:
            return self.fixed_slots - len(self.live)
        if time.monotonic() - self._asked > 1.0 and not self.lost():
            self._asked = time.monotonic()
            try:
                self._threads = max(1, sum(self.client.nthreads().values()))
            except Exception:  # noqa: BLE001 - a scheduler going away is seen by lost()
                pass
        return self._threads - len(self.live)

    def submit(self, job: Job, expect: Path | None = None) -> DaskHandle:
        from distributed import Event

        tag = uuid.uuid4().hex
        jobs_dir = self.store.tmp / "jobs"
        jobs_dir.mkdir(parents=True, exist_ok=True)
        progress = jobs_dir / f"{tag}.progress.json"
        run = Run(str(self.store.root), job, "check" if expect else "build", str(expect) if expect else None,
                  "", str(progress) if self.mode == "shared" else None)
        cancel = f"modelbuild-cancel-{tag}"
        try:
            self._check_resources(job)
            remote = self._remote(job, expect) if self.mode == "cache" else None
            future = self.client.submit(run_task, run.to_json(), cancel, remote, pure=False,
                                        key=f"{job.step}-{job.key[:12]}-{tag[:8]}", resources=job.resources or None)
            future.add_done_callback(lambda _: self._finished.set())
        except ModelbuildError as e:  # the step fails (and the build goes on as after any failed step)
            future = Failed({"error": {"type": type(e).__name__, "message": str(e)}})
        handle = DaskHandle(job, run.mode, future, jobs_dir / f"{tag}.job.json", jobs_dir / f"{tag}.result.json",
                            progress, self.store.logs / f"{job.key}.log", executor=self)
        handle.cancel_event = Event(cancel, client=self.client)
        self.live.add(handle)
        return handle

    def wait_any(self, handles, timeout: float = 0.0) -> list[DaskHandle]:
        """The handles that are done, waiting up to `timeout` for one. The wait is on the tasks' done callbacks:
        `distributed.wait` needs a default client, which this one is not (set_as_default=False), and it failed at
        once, so the build's loop spun on a core the cluster's workers needed (+0.15 s a job on 2 cores)."""
        handles = list(handles)
        self._finished.clear()  # before looking: a task finishing after the look sets it again
        done = [h for h in handles if h.done()]
        if done or not handles or timeout <= 0:
            return done
        self._finished.wait(timeout)  # a lost scheduler is seen by done() at the next look
        return [h for h in handles if h.done()]

    def release(self, handle: DaskHandle) -> None:
        self.live.discard(handle)
        handle.progress_file.unlink(missing_ok=True)

    def cancel(self, handle: DaskHandle) -> None:
        """Stop the job on its worker (its process group is signalled there) and forget it."""
        self._stop([handle])
        self.release(handle)

    def interrupt(self, handles, grace: float = GRACE) -> None:
        """Ctrl-C: every running job on the cluster is stopped (SIGINT, then SIGKILL after the grace period),
        and its task cancelled, so the cluster is left running nothing of this build."""
        handles = list(handles)
        self._stop(handles)
        for h in handles:
            self.release(h)

    def close(self) -> None:
        try:
            self.client.close(timeout=5)
        except Exception:  # noqa: BLE001 - closing a client whose scheduler is gone
            pass

    # ---- results ------------------------------------------------------------------------------------------
    def lost(self) -> bool:
        """The scheduler went away (the client gave up reconnecting)."""
        return self.client.status not in ("running", "connecting", "newly-created")

    def answer(self, handle: DaskHandle) -> dict:
        """The worker's answer; in cache mode its artifact is substituted into this store first."""
        step = handle.job.step
        if not handle.proc.done() and self.lost():
            return _error(f"step '{step}': the Dask scheduler {self.url} went away while the step ran, so the build "
                          "stopped. Every step finished before is kept: start the scheduler again and build again "
                          "to resume")
        if isinstance(handle.proc, Failed):
            return handle.proc.answer
        try:
            result = handle.proc.result(timeout=5)
        except Exception as e:  # noqa: BLE001 - the task failed on the cluster: the step failed, saying why
            return _error(_task_failure(step, e, self.url))
        if self.mode == "cache" and result.get("path"):
            result = self._fetch(handle, result)
        return result

    def _fetch(self, handle: DaskHandle, result: dict) -> dict:
        """Take the worker's pushed artifact from the cache into this store (a check's verdict needs nothing)."""
        if result.get("status") == "checked":
            return {**result, "path": str(self.store.root / result["rel"])}
        path = self.substituter.substitute(handle.job.key)
        if path is None:
            return _error(f"step '{handle.job.step}': a cluster worker built it (key {handle.job.key}) but the cache "
                          f"{self.cache.push_to} does not offer it to this client: check that the client's substituters "
                          "and trusted-public-keys include the workers' push-to cache and key")
        return {**result, "path": str(path)}

    # ---- helpers ------------------------------------------------------------------------------------------
    def _stop(self, handles) -> None:
        for h in handles:
            if h.proc.done():
                continue
            try:
                h.cancel_event.set()
                h.proc.cancel()
            except Exception:  # noqa: BLE001 - the scheduler is gone: its workers stop their tasks themselves
                pass

    def _check_resources(self, job: Job) -> None:
        """A step whose resources no worker offers would wait forever: it fails now, saying which are there."""
        if not job.resources:
            return
        offered = {a: w.get("resources", {}) for a, w in self.client.scheduler_info()["workers"].items()}
        if any(all(have.get(k, 0) >= v for k, v in job.resources.items()) for have in offered.values()):
            return
        want = ",".join(f"{k}={v:g}" for k, v in job.resources.items())
        raise BuildError(f"step '{job.step}': its resources ({want}) are offered by no worker of the Dask cluster "
                         f"{self.url} (they offer: {_offers(offered)}). Start a worker with "
                         f"`dask worker {scheduler_address(self.url)} --resources \"{want.replace(',', ' ')}\"`, "
                         "or change the step's `resources:`")

    def _remote(self, job: Job, expect: Path | None) -> dict:
        """What a worker with a store of its own needs: the cache settings, every artifact of this store the job
        reads or refers to, and under `--check` the artifact it is compared with (published first, so the worker
        can substitute them), and the job's extra files."""
        from .cache.push import closure, push

        wanted = []
        for p in {*(str(i.path) for i in job.inputs.values()), *job.refs, *([str(expect)] if expect else [])}:
            rel = self._rel(p)
            if rel is not None:
                keys = self.store.keys_of(self.store.root / rel)
                wanted.append((self.store.root / rel, keys[-1] if keys else None))
        unkeyed = [self.store.rel(p) for p, k in wanted if k is None]
        if unkeyed:
            raise BuildError(f"step '{job.step}': its input {unkeyed[0]} has no key in this store's trace, so a cluster "
                             "worker with a store of its own cannot fetch it: use the shared store mode")
        items = closure(self.store, [(p, k) for p, k in wanted])
        if items:
            push(self.store, self.pusher[0], self.pusher[1], self.cache.secret_key_file, items)
        return {"root": str(self.store.root), "worker_store": self.worker_store,
                "fetch": sorted({k for _, k in items}),
                "files": {n: Path(f).read_text() for n, f in job.files.items()},
                "substituters": self.cache.substituters, "trusted": self.cache.trusted_public_keys,
                "push_to": self.cache.push_to, "secret_key_file": self.cache.secret_key_file,
                "project_dir": str(self.cache.project_dir)}

    def _rel(self, path: str) -> str | None:
        try:
            return str(Path(path).relative_to(self.store.root))
        except ValueError:
            return None


@dataclass
class Failed:
    """A job that never reached the cluster (no worker offers its resources): done, with its failure."""

    answer: dict

    def done(self) -> bool:
        return True

    def cancel(self) -> None:
        pass


def _cache_client(store: Store, cache):
    """The client's substituter (the workers' artifacts) and its push target (the inputs it has)."""
    from .cache.remote import Remote
    from .cache.substitute import Substituter

    if not (cache and cache.substituters and cache.push_to and cache.secret_key_file):
        raise UsageError("cluster-store = cache needs the shared cache settings on the client and the workers: "
                         "substituters, trusted-public-keys, push-to and secret-key-file (flags, MODELBUILD_* or "
                         "[tool.modelbuild]; docs/cache.md), or use cluster-store = shared")
    secret = Path(cache.secret_key_file).expanduser().read_text()
    return (Substituter(store, cache.substituters, cache.trusted_public_keys, cache.project_dir),
            (Remote(cache.push_to, cache.project_dir), secret))


def _offers(offered: dict) -> str:
    if not offered:
        return "the cluster has no worker now"
    named = sorted({f"{k}={v:g}" for have in offered.values() for k, v in have.items()})
    return ", ".join(named) or "no resources"


def _error(message: str) -> dict:
    return {"error": {"type": "BuildError", "message": message}}


def _task_failure(step: str, e: BaseException, url: str) -> str:
    name = type(e).__name__
    if name == "KilledWorker":
        return (f"step '{step}': the Dask workers running it died again and again ({e}); the scheduler gave up. Look "
                "for an out-of-memory kill in the workers' logs; nothing of it was committed")
    if name in ("CancelledError", "FutureCancelledError", "CommClosedError"):
        return (f"step '{step}': its task was lost when the Dask scheduler {url} went away or restarted; build "
                "again to resume (every step finished before is kept)")
    return f"step '{step}': its Dask task failed on the cluster: {name}: {str(e)[:500]}"


# ---- on the cluster worker --------------------------------------------------------------------------------
def run_task(run_data: dict, cancel: str, remote: dict | None) -> dict:
    """One job on a Dask worker: start the build worker process, watch it and the cancel event, answer."""
    from distributed import Event, get_worker

    worker = get_worker()
    run = Run.from_json(run_data)
    if remote is not None:
        run = _localise(run, remote, worker.name)
    store = Store(run.store)
    if not (store.root / "trace.sqlite").is_file():
        return _error(f"step '{run.job.step}': the Dask worker {worker.address} cannot see the store {store.root}: in "
                      "the shared store mode every worker mounts the store at the same path. Mount it there, or use "
                      "cluster-store = cache (docs/cluster.md)")
    jobs = store.tmp / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    base = jobs / uuid.uuid4().hex
    run = Run(run.store, run.job, run.mode, run.expect, f"{base}.result.json", run.progress)
    run_file = Path(f"{base}.job.json")
    run_file.write_text(json.dumps(run.to_json()))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", WORKER_ENV: str(worker.address), f"{WORKER_ENV}_LABEL": str(worker.name)}
    proc = _start(run_file, run.job, env)
    try:
        _watch(proc, Event(cancel))
        result = _read_result(Path(run.result), proc.returncode, run.job)
    finally:
        _signal(proc, signal.SIGKILL)  # whatever the job left running in its group
        for f in (run_file, Path(run.result)):
            f.unlink(missing_ok=True)
    if remote is not None and "path" in result:
        result = _publish(store, run, result, remote)
    result["worker"] = str(worker.address)
    return result


def _start(run_file: Path, job: Job, env: dict):
    """The build worker, forked from this Dask worker's warm zygote for the builder's imports (as the local
    executor's are: a plain `python -m modelbuild.worker` pays its imports for every job). The zygote kills
    its jobs' process groups when this Dask worker dies, so a killed worker leaves no build running."""
    from . import zygote

    with _ZYGOTE_LOCK:  # the zygote's client side serves one thread at a time
        return zygote.start("modelbuild.worker", [str(run_file)], env=env,
                            preload=zygote.import_set(job.drv.get("env", {}).get("packages", ())))


def _poll(proc) -> int | None:
    with _ZYGOTE_LOCK:
        return proc.poll()


def _signal(proc, sig: int) -> None:
    with _ZYGOTE_LOCK:
        proc.send_signal(sig)  # to the job's whole process group


def _watch(proc, cancel) -> None:
    """Wait for the job (polled every 10 ms, so a finished job is answered at once); the cancel event is
    asked twice a second. Once it is set: SIGINT to the job's group, SIGKILL after GRACE seconds."""
    asked = time.monotonic()
    while _poll(proc) is None:
        time.sleep(0.01)
        if time.monotonic() - asked < 0.5:
            continue
        asked = time.monotonic()
        try:
            stop = cancel.is_set()
        except Exception:  # noqa: BLE001 - the scheduler is gone: no client waits for this job any more
            stop = True
        if stop:
            _signal(proc, signal.SIGINT)
            deadline = time.monotonic() + GRACE
            while _poll(proc) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            _signal(proc, signal.SIGKILL)
            while _poll(proc) is None:
                time.sleep(0.05)
            return


def _read_result(path: Path, code: int | None, job: Job) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        how = f"was killed by signal {-code}" if code and code < 0 else f"exited with code {code}"
        return _error(f"step '{job.step}': the build worker {how} before reporting a result (out of memory, or a "
                      "crash in a native library)")


def _localise(run: Run, remote: dict, worker_name) -> Run:
    """The job as this worker's own store sees it: its store artifacts substituted from the cache, every path
    under the client's store moved to the same place under this one (artifact names are content addresses),
    and its extra files written here. A path source is read where it lies (the project, at the same path)."""
    from .cache.substitute import Substituter

    root = os.environ.get("MODELBUILD_WORKER_STORE") or remote["worker_store"].format(
        worker=re.sub(r"[^A-Za-z0-9_.-]", "_", str(worker_name)))
    store = Store(root)
    store.init()
    sub = Substituter(store, remote["substituters"], remote["trusted"], Path(remote["project_dir"]))
    for key in remote["fetch"]:
        if sub.substitute(key) is None:
            raise BuildError(f"the cluster worker {worker_name} cannot substitute the input with key {key} from "
                             f"{', '.join(remote['substituters'])}: check the workers' access to the cache")

    def move(p: str) -> str:
        path = Path(p)
        return str(store.root / path.relative_to(remote["root"])) if path.is_relative_to(remote["root"]) else p

    job = run.job
    inputs = {n: Input(Path(move(str(i.path))), i.kind, i.digest, i.lineage, _stat(i), tuple(move(r) for r in i.refs))
              for n, i in job.inputs.items()}
    files = {}
    for name, text in remote["files"].items():
        target = store.tmp / "jobs" / f"{uuid.uuid4().hex}.{name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        files[name] = str(target)
    job = replace(job, inputs=inputs, files=files, extra_refs=tuple(move(r) for r in job.extra_refs))
    return Run(str(store.root), job, run.mode, move(run.expect) if run.expect else None, run.result, None)


def _stat(i: Input) -> str | None:
    """A path source seen by another machine: its content must be the key's (hashed here, once), and the stat
    identity to re-check after the build is this machine's."""
    if i.stat is None:
        return None
    from .hashing import hash_tree
    from .resolved import source_fingerprint

    if hash_tree(i.path, follow_links=True).digest != i.digest:
        raise BuildError(f"the source {i.path} on this cluster worker differs from the client's (content "
                         f"{i.digest}): check out the same project on every worker")
    return source_fingerprint(i.path)


def _publish(store: Store, run: Run, result: dict, remote: dict) -> dict:
    """Push the worker's artifact (and what it refers to) to the shared cache, for the client to substitute."""
    from .cache.push import closure, push
    from .cache.remote import Remote

    path = Path(result["path"])
    result["rel"] = store.rel(path)
    if result.get("status") == "checked":
        return result
    secret_file = os.environ.get("MODELBUILD_SECRET_KEY_FILE") or remote["secret_key_file"]
    secret = Path(secret_file).expanduser().read_text()
    push(store, Remote(remote["push_to"], Path(remote["project_dir"])), secret, secret_file,
         closure(store, [(path, run.job.key)]))
    return result
