"""One build in its own process: `python -m modelbuild.worker JOB.json`.

The worker takes the key's lock, builds into tmp/, and commits; a crash here (even a segfault in a
native library) cannot leave anything in the store but an unreferenced tmp dir. Its stdout and stderr
are the step's log.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from . import steplog
from .builders import BUILTIN, BuildContext, load_builder
from .builders.base import RANK_OF_ENV, launcher_rank
from .derivation import Job, derivation_key, merge_unkeyed, split_unkeyed
from .errors import BuildError, ModelbuildError, UsageError
from .hashing import hash_tree
from .store import Store, remove_tree, store_fault


@dataclass(frozen=True)
class Run:
    """What a worker is asked: build (or `check`) one resolved job into a store, answering in `result`."""

    store: str
    job: Job
    mode: str = "build"  # build | check
    expect: str | None = None  # check: the stored artifact to compare with
    result: str = ""
    progress: str | None = None

    def to_json(self) -> dict:
        return {"store": self.store, "job": self.job.to_json(), "mode": self.mode, "expect": self.expect,
                "result": self.result, "progress": self.progress}

    @classmethod
    def from_json(cls, data: dict) -> Run:
        return cls(data["store"], Job.from_json(data["job"]), data["mode"], data.get("expect"), data["result"],
                   data.get("progress"))


def main(job_file: str) -> int:
    run = Run.from_json(json.loads(Path(job_file).read_text()))
    if os.environ.get(RANK_OF_ENV) == str(os.getppid()):
        return _run_rank(store=Store(run.store), run=run)
    result = run_job(run)
    tmp = Path(run.result).with_suffix(".part")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, run.result)
    return 0 if "error" not in result else 1


def run_job(run: Run) -> dict:
    store, job = Store(run.store), run.job
    key = job.key
    started = time.time()
    try:
        if derivation_key(job.drv) != key:
            raise BuildError(f"the job's derivation does not hash to its key {key}: the job file was altered")
        if launcher_rank() and _builder(job).distributed:
            return _run_launched_rank(store, run, started)
        if run.mode == "check":
            return _check(store, run)
        with store.lock(key):
            hit = store.lookup(key)
            if hit and store.check_artifact(hit[0]):
                return _with_failure(store, key, {"status": "cached", "path": str(hit[0]), "seconds": 0.0})
            _log_to(store.logs / f"{key}.log")
            path = _build(store, run, started)
            return _with_failure(store, key, {"status": "built", "path": str(path),
                                              "seconds": round(time.time() - started, 3)})
    except ModelbuildError as e:
        message = str(e) if f"'{job.step}'" in str(e) else f"step '{job.step}': {e}"
        print(f"error: {message}", file=sys.stderr, flush=True)  # the log says why, too
        return {"error": {"type": type(e).__name__, "message": message}, "seconds": time.time() - started}
    except KeyboardInterrupt:
        return {"error": {"type": "BuildError", "message": "interrupted"}, "interrupted": True}
    except BaseException as e:  # noqa: BLE001 - any builder failure becomes a step failure, never a crash
        missing = missing_extra(job, e) if isinstance(e, ModuleNotFoundError) else None
        if missing is not None:  # torch not installed, say: name the pip install, no traceback
            print(f"error: {missing}", file=sys.stderr, flush=True)
            return {"error": {"type": "UsageError", "message": str(missing)}, "seconds": time.time() - started}
        fault = store_fault(e, store.root) if isinstance(e, OSError) else None
        if fault is not None:  # the disk filled while the step wrote its output
            message = f"step '{job.step}': {fault}"
            print(f"error: {message}", file=sys.stderr, flush=True)
            return {"error": {"type": "StoreUnavailable", "message": message}, "seconds": time.time() - started}
        traceback.print_exc()
        log = store.logs / f"{key}.log"
        return {"error": {"type": "BuildError", "message":
                          f"step '{job.step}' failed: {type(e).__name__}: {e}. The full traceback is in "
                          f"{log} (`modelbuild log {job.recipe}:{job.step}`)"},
                "seconds": time.time() - started}


def missing_extra(job: Job, error: ModuleNotFoundError) -> UsageError | None:
    """A builder's library that is not installed, named with the extra that installs it (None when the
    missing module is no dependency of modelbuild's extras: then it is the builder's own failure)."""
    if job.builder not in BUILTIN:  # a recipe's own builder class: its import is its own business
        return None
    module = (error.name or "").split(".")[0]
    extra = _extras().get(ALIASES.get(module, module).lower().replace("_", "-"))
    if extra is None:
        return None
    return UsageError(f"step '{job.step}': the builder '{job.builder}' needs {module}, which is not installed. "
                      f"Install the '{extra}' extra: pip install 'modelbuild[{extra}]'")


ALIASES = {"sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow"}  # import names that are not the package's


def _extras() -> dict[str, str]:
    """Distribution name -> the extra of modelbuild that installs it (read from the installed metadata)."""
    import importlib.metadata
    import re

    try:
        requires = importlib.metadata.requires("modelbuild") or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    out = {}
    for line in requires:
        found = re.match(r"\s*([A-Za-z0-9_.-]+).*extra\s*==\s*['\"]([^'\"]+)['\"]", line)
        if found and found.group(2) != "all":
            out.setdefault(found.group(1).lower().replace("_", "-"), found.group(2))
    return out


def _run_rank(store: Store, run: Run) -> int:
    """One more rank of a distributed build that a library (Lightning's DDP launcher) started by re-running
    this worker's command line: run the builder beside the rank-0 worker, which holds the key's lock, keeps
    the log (inherited stdout/stderr) and alone commits. Whatever this rank writes under `out` is dropped."""
    _build_and_drop(store, run)
    return 0


def _build_and_drop(store: Store, run: Run, fresh_work: bool = False) -> None:
    """Run the builder as one more rank: into a tmp dir of its own, deleted afterwards (with a work area of
    its own too when `fresh_work`: a `--check` rank never resumes from the real build's checkpoints)."""
    tmp = store.new_tmp(run.job.key)
    (tmp / "out").mkdir()
    try:
        _run_builder(store, run, tmp / "out", work=tmp / "work" if fresh_work else None)
    finally:
        store.drop_tmp(tmp)


def _with_failure(store: Store, key: str, result: dict) -> dict:
    """A committed failure (an artifact kept, its step failed: a failed evaluation gate) reports the failure
    recorded in the trace, whether this worker built the artifact or found it built."""
    failure = store.failure_of(key)
    if failure:
        result["error"], result["kept"] = failure, True
    return result


def _run_launched_rank(store: Store, run: Run, started: float) -> dict:
    """A rank other than 0 of a job started outside modelbuild (torchrun, srun, other nodes): train beside
    rank 0 (which holds the key's lock and alone commits), then wait for its commit and answer with it. The
    store must be shared between nodes (as the work area with its checkpoints is). Under `build --check`
    it retrains beside rank 0, which alone compares: this rank gives no verdict."""
    rank, job = launcher_rank(), run.job
    checking = run.mode == "check"
    _log_to(store.logs / f"{job.key}.{'check.' if checking else ''}rank{rank}.log")
    _build_and_drop(store, run, fresh_work=checking)
    if checking:
        return {"status": "checked", "path": run.expect, "differences": None, "check": None,
                "seconds": round(time.time() - started, 3), "rank": rank}
    with store.lock(job.key):
        hit = store.lookup(job.key)
    if not hit:
        raise BuildError(f"step '{job.step}': rank {rank} trained, but rank 0 committed no artifact to the store "
                         f"{store.root}. Every rank of a distributed build must use one shared store (--store or "
                         f"MODELBUILD_STORE on a shared file system); see rank 0's log for its error")
    return {"status": "built", "path": str(hit[0]), "seconds": round(time.time() - started, 3),
            "rank": rank}


def _log_to(path: Path) -> None:
    """Send this process's stdout/stderr (and native libraries' output) to the step log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    steplog.setup()


def _context(store: Store, run: Run, out: Path, builder, work: Path | None = None) -> BuildContext:
    """What build() sees: params and seed from the derivation (a builder whose key has no seed sees 0),
    never from anything the key does not contain but the params its builder declares unkeyed_params."""
    job = run.job
    work = work or store.tmp / "work" / job.key
    work.mkdir(parents=True, exist_ok=True)
    inputs = {n: i.path for n, i in job.inputs.items()} | {n: Path(f) for n, f in job.files.items()}
    # of what the job carries outside the key, only what the builder declares unkeyed: any other value would
    # change the output under a key that does not say so
    params = merge_unkeyed(job.drv["params"], split_unkeyed(job.unkeyed, builder.unkeyed_params)[1])
    return BuildContext(step=job.step, inputs=inputs, out=out, params=params,
                        recipe_dir=Path(job.recipe_dir), seed=job.drv.get("seed") or 0,
                        work=work, log=logging.getLogger(f"modelbuild.{job.step}"),
                        progress_file=Path(run.progress) if run.progress else None,
                        live_logs=None if run.mode == "check" else live_logs(store, job.recipe, job.step, job.key))


def live_logs(store: Store, recipe: str, step: str, key: str) -> Path:
    """Where a build's live logs go: one folder per recipe step, so a search's trials (builds of its target
    step) sit side by side under one TensorBoard log root."""
    return store.logs / "tensorboard" / recipe / step / key[:16]


def _builder(job: Job):
    """The builder the job's derivation names."""
    return load_builder(job.builder, recipe_dir=Path(job.recipe_dir), step=job.step)


def _run_builder(store: Store, run: Run, out: Path, work: Path | None = None) -> dict:
    """Run the builder; return the facts of the run it recorded (`ctx.record_facts`)."""
    job = run.job
    builder = _builder(job)
    logging.getLogger("modelbuild").info("building step %s (key %s) with builder %s", job.step, job.key,
                                         job.builder)
    ctx = _context(store, run, out, builder, work)
    builder.build(ctx)
    sys.stdout.flush()
    sys.stderr.flush()
    from .resolved import source_fingerprint
    for name, i in job.inputs.items():
        if i.stat is not None and source_fingerprint(i.path) != i.stat:
            raise BuildError(f"step '{job.step}': source input '{name}' ({i.path}) changed while "
                             "the step was building, so the result cannot be trusted. Build again")
    return ctx.facts


def _build(store: Store, run: Run, started: float) -> Path:
    job = run.job
    tmp = store.new_tmp(job.key)
    out = tmp / "out"
    out.mkdir()
    try:
        failure = None
        code = _code(job)  # before the build: the files as the key saw them, not as they may be after
        try:
            facts = _run_builder(store, run, out)
        except ModelbuildError as e:
            if not e.keep_artifact:
                raise
            # a committed failure: keep the output as the artifact, record why the step fails (see errors.py)
            message = str(e) if f"'{job.step}'" in str(e) else f"step '{job.step}': {e}"
            print(f"error: {message}", file=sys.stderr, flush=True)
            facts, failure = {}, {"type": type(e).__name__, "message": message}
        meta = _lineage(job, started, out, facts)
        meta["code"] = code
        if failure:
            meta["failure"] = failure
        path = store.commit(job.key, job.step, out, meta, refs=[Path(p) for p in job.refs])
        remove_tree(store.tmp / "work" / job.key)  # checkpoints are no longer needed
        return path
    finally:
        store.drop_tmp(tmp)


def _check(store: Store, run: Run) -> dict:
    """Rebuild into tmp and compare file by file with the stored artifact (`build --check`)."""
    job = run.job
    tmp = store.new_tmp(job.key)
    out = tmp / "out"
    out.mkdir()
    try:
        _log_to(store.logs / f"{job.key}.check.log")
        started = time.time()
        _run_builder(store, run, out, work=tmp / "work")  # never resumes from the real build's checkpoints
        metrics = _read_json(out / "metrics.json")
        if metrics.get("reproducibility") == "tolerance":
            mode, differ = "metrics", _metric_differences(_read_json(Path(run.expect) / "metrics.json"), metrics)
        else:
            new = {rel: e.digest for rel, e in hash_tree(out).entries.items() if not rel.endswith("/")}
            old = (store.meta_of(Path(run.expect)) or {}).get("files", {})
            mode, differ = "bytes", sorted(rel for rel in set(old) | set(new) if old.get(rel) != new.get(rel))
        return {"status": "checked", "path": run.expect, "differences": differ, "check": mode,
                "seconds": round(time.time() - started, 3)}
    finally:
        store.drop_tmp(tmp)


def _is_fact(name: str) -> bool:
    """Facts of a run (time, speed, memory, resumption) differ between runs by nature: not compared."""
    return name.endswith(("_seconds", "_per_second", "_mb")) or name in ("seconds", "resumed_from_step")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _metric_differences(old: dict, new: dict) -> list[str]:
    """Where bit-identity is not promised (GPU), a rebuild must reproduce the metrics within the recorded
    relative tolerance; timings and memory are facts of the run, not results, and are not compared."""
    tolerance = float(new.get("tolerance", old.get("tolerance", 0.0)) or 0.0)
    differ = []
    for name in sorted(old):
        a, b = old[name], new.get(name)
        if _is_fact(name) or isinstance(a, bool) or not isinstance(a, (int, float)):
            continue
        if not isinstance(b, (int, float)) or abs(a - b) > tolerance * max(abs(a), abs(b), 1e-12):
            differ.append(f"metrics.json:{name} {a} -> {b} (tolerance {tolerance})")
    return differ


def _cluster_worker() -> dict:
    """Which Dask worker built it (its address, and the name it was started with), when one did."""
    address = os.environ.get("MODELBUILD_WORKER_NAME")
    return {"worker": address, "worker_name": os.environ.get("MODELBUILD_WORKER_NAME_LABEL")} if address else {}


def _git_rev(directory: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", directory, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5)
        return proc.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _code(job: Job) -> dict:
    """Per-file digests (and small project sources) of the code the key's code hashes cover, by the field of
    the derivation they explain: what `diff` names when code changed. Best effort: a build never fails here."""
    from .builders import builder_code_record
    from .codehash import code_record
    try:
        builder = _builder(job)
        code = {"builder_code": builder_code_record(builder)}
        for what, path in builder.key_code(job.drv["params"], Path(job.recipe_dir)).items():
            code[what] = code_record(path, Path(job.recipe_dir))
        return code
    except (OSError, SyntaxError, ValueError, ModelbuildError):
        return {}


def _lineage(job: Job, started: float, out: Path, facts: dict | None = None) -> dict:
    """The facts kept beside an artifact: its derivation plus what does not enter the key. `metrics` is the
    builder's metrics.json merged with the facts of the run it recorded (which are not in the artifact)."""
    metrics_file = out / "metrics.json"
    try:
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
    except ValueError:
        metrics = None
    if facts:
        metrics = {**(metrics or {}), **facts}
    return {
        "key": job.key, "kind": "step", "recipe": job.recipe, "recipe_file": job.recipe_file,
        "step": job.step, "builder": job.builder, "derivation": job.drv, "inputs": {n: i.lineage for n, i in job.inputs.items()},
        "host": socket.gethostname(), "platform": platform.platform(), "python": sys.version.split()[0],
        "git_rev": _git_rev(job.recipe_dir), "started": started, "seconds": round(time.time() - started, 3),
        "log": f"logs/{job.key}.log", "metrics": metrics,
        **({"unkeyed": job.unkeyed} if job.unkeyed else {}),  # the settings outside the key this build ran with
        **_cluster_worker(),
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
