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
from pathlib import Path

from .builders import BuildContext, load_builder
from .builders.base import RANK_OF_ENV, launcher_rank
from .errors import BuildError, ModelbuildError
from .hashing import hash_tree
from .store import Store, remove_tree, store_fault


def main(job_file: str) -> int:
    job = json.loads(Path(job_file).read_text())
    if os.environ.get(RANK_OF_ENV) == str(os.getppid()):
        return _run_rank(store=Store(job["store"]), job=job)
    result = run_job(job)
    tmp = Path(job["result"]).with_suffix(".part")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, job["result"])
    return 0 if "error" not in result else 1


def run_job(job: dict) -> dict:
    store = Store(job["store"])
    key = job["key"]
    started = time.time()
    try:
        if launcher_rank() and load_builder(job["builder"], recipe_dir=Path(job["recipe_dir"]),
                                            step=job["step"]).distributed:
            return _run_launched_rank(store, job, started)
        if job["mode"] == "check":
            return _check(store, job)
        with store.lock(key):
            hit = store.lookup(key)
            if hit and store.check_artifact(hit[0]):
                return _with_failure(store, key, {"status": "cached", "path": str(hit[0]), "seconds": 0.0})
            _log_to(store.logs / f"{key}.log")
            path = _build(store, job, started)
            return _with_failure(store, key, {"status": "built", "path": str(path),
                                              "seconds": round(time.time() - started, 3)})
    except ModelbuildError as e:
        message = str(e) if f"'{job['step']}'" in str(e) else f"step '{job['step']}': {e}"
        print(f"error: {message}", file=sys.stderr, flush=True)  # the log says why, too
        return {"error": {"type": type(e).__name__, "message": message}, "seconds": time.time() - started}
    except KeyboardInterrupt:
        return {"error": {"type": "BuildError", "message": "interrupted"}, "interrupted": True}
    except BaseException as e:  # noqa: BLE001 - any builder failure becomes a step failure, never a crash
        fault = store_fault(e, store.root) if isinstance(e, OSError) else None
        if fault is not None:  # the disk filled while the step wrote its output
            message = f"step '{job['step']}': {fault}"
            print(f"error: {message}", file=sys.stderr, flush=True)
            return {"error": {"type": "StoreUnavailable", "message": message}, "seconds": time.time() - started}
        traceback.print_exc()
        log = store.logs / f"{key}.log"
        return {"error": {"type": "BuildError", "message":
                          f"step '{job['step']}' failed: {type(e).__name__}: {e}. The full traceback is in "
                          f"{log} (`modelbuild log {job['recipe']}:{job['step']}`)"},
                "seconds": time.time() - started}


def _run_rank(store: Store, job: dict) -> int:
    """One more rank of a distributed build that a library (Lightning's DDP launcher) started by re-running
    this worker's command line: run the builder beside the rank-0 worker, which holds the key's lock, keeps
    the log (inherited stdout/stderr) and alone commits. Whatever this rank writes under `out` is dropped."""
    _build_and_drop(store, job)
    return 0


def _build_and_drop(store: Store, job: dict, fresh_work: bool = False) -> None:
    """Run the builder as one more rank: into a tmp dir of its own, deleted afterwards (with a work area of
    its own too when `fresh_work`: a `--check` rank never resumes from the real build's checkpoints)."""
    tmp = store.new_tmp(job["key"])
    (tmp / "out").mkdir()
    try:
        _run_builder(store, job, tmp / "out", work=tmp / "work" if fresh_work else None)
    finally:
        remove_tree(tmp)


def _with_failure(store: Store, key: str, result: dict) -> dict:
    """A committed failure (an artifact kept, its step failed: a failed evaluation gate) reports the failure
    recorded in the trace, whether this worker built the artifact or found it built."""
    failure = store.failure_of(key)
    if failure:
        result["error"], result["kept"] = failure, True
    return result


def _run_launched_rank(store: Store, job: dict, started: float) -> dict:
    """A rank other than 0 of a job started outside modelbuild (torchrun, srun, other nodes): train beside
    rank 0 (which holds the key's lock and alone commits), then wait for its commit and answer with it. The
    store must be shared between nodes (as the work area with its checkpoints is). Under `build --check`
    it retrains beside rank 0, which alone compares: this rank gives no verdict."""
    rank = launcher_rank()
    checking = job["mode"] == "check"
    _log_to(store.logs / f"{job['key']}.{'check.' if checking else ''}rank{rank}.log")
    _build_and_drop(store, job, fresh_work=checking)
    if checking:
        return {"status": "checked", "path": job["expect"], "differences": None, "check": None,
                "seconds": round(time.time() - started, 3), "rank": rank}
    with store.lock(job["key"]):
        hit = store.lookup(job["key"])
    if not hit:
        raise BuildError(f"step '{job['step']}': rank {rank} trained, but rank 0 committed no artifact to the store "
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
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)


def _context(store: Store, job: dict, out: Path, work: Path | None = None) -> BuildContext:
    work = work or store.tmp / "work" / job["key"]
    work.mkdir(parents=True, exist_ok=True)
    return BuildContext(step=job["step"], inputs={k: Path(v) for k, v in job["inputs"].items()}, out=out,
                        params=job["params"], recipe_dir=Path(job["recipe_dir"]), seed=job["seed"],
                        work=work, log=logging.getLogger(f"modelbuild.{job['step']}"),
                        progress_file=Path(job["progress"]) if job.get("progress") else None)


def _run_builder(store: Store, job: dict, out: Path, work: Path | None = None) -> dict:
    """Run the builder; return the facts of the run it recorded (`ctx.record_facts`)."""
    builder = load_builder(job["builder"], recipe_dir=Path(job["recipe_dir"]), step=job["step"])
    logging.getLogger("modelbuild").info("building step %s (key %s) with builder %s", job["step"], job["key"],
                                         job["builder"])
    ctx = _context(store, job, out, work)
    builder.build(ctx)
    sys.stdout.flush()
    sys.stderr.flush()
    from .resolved import source_fingerprint
    for name, expected in job.get("source_stats", {}).items():
        if source_fingerprint(job["inputs"][name]) != expected:
            raise BuildError(f"step '{job['step']}': source input '{name}' ({job['inputs'][name]}) changed while "
                             "the step was building, so the result cannot be trusted. Build again")
    return ctx.facts


def _build(store: Store, job: dict, started: float) -> Path:
    tmp = store.new_tmp(job["key"])
    out = tmp / "out"
    out.mkdir()
    try:
        failure = None
        try:
            facts = _run_builder(store, job, out)
        except ModelbuildError as e:
            if not e.keep_artifact:
                raise
            # a committed failure: keep the output as the artifact, record why the step fails (see errors.py)
            message = str(e) if f"'{job['step']}'" in str(e) else f"step '{job['step']}': {e}"
            print(f"error: {message}", file=sys.stderr, flush=True)
            facts, failure = {}, {"type": type(e).__name__, "message": message}
        meta = _lineage(job, started, out, facts)
        if failure:
            meta["failure"] = failure
        path = store.commit(job["key"], job["step"], out, meta, refs=[Path(p) for p in job["refs"]])
        remove_tree(store.tmp / "work" / job["key"])  # checkpoints are no longer needed
        return path
    finally:
        remove_tree(tmp)


def _check(store: Store, job: dict) -> dict:
    """Rebuild into tmp and compare file by file with the stored artifact (`build --check`)."""
    tmp = store.new_tmp(job["key"])
    out = tmp / "out"
    out.mkdir()
    try:
        _log_to(store.logs / f"{job['key']}.check.log")
        started = time.time()
        _run_builder(store, job, out, work=tmp / "work")  # never resumes from the real build's checkpoints
        metrics = _read_json(out / "metrics.json")
        if metrics.get("reproducibility") == "tolerance":
            mode, differ = "metrics", _metric_differences(_read_json(Path(job["expect"]) / "metrics.json"), metrics)
        else:
            new = {rel: e.digest for rel, e in hash_tree(out).entries.items() if not rel.endswith("/")}
            old = (store.meta_of(Path(job["expect"])) or {}).get("files", {})
            mode, differ = "bytes", sorted(rel for rel in set(old) | set(new) if old.get(rel) != new.get(rel))
        return {"status": "checked", "path": job["expect"], "differences": differ, "check": mode,
                "seconds": round(time.time() - started, 3)}
    finally:
        remove_tree(tmp)


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


def _git_rev(directory: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", directory, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5)
        return proc.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _lineage(job: dict, started: float, out: Path, facts: dict | None = None) -> dict:
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
        "key": job["key"], "kind": "step", "recipe": job["recipe"], "recipe_file": job["recipe_file"],
        "step": job["step"], "builder": job["builder"], "derivation": job["drv"], "inputs": job["lineage"],
        "host": socket.gethostname(), "platform": platform.platform(), "python": sys.version.split()[0],
        "git_rev": _git_rev(job["recipe_dir"]), "started": started, "seconds": round(time.time() - started, 3),
        "log": f"logs/{job['key']}.log", "metrics": metrics,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
