"""Realising a recipe: plan each step (cached or build, and why), then build in dependency order.

Keys are computed from the content of the inputs, so a step can only be planned exactly once its inputs
are built; a rebuilt input with identical bytes leaves everything downstream cached (early cutoff).
Each step is resolved into a job (`derivation.resolve`) and submitted to an executor (modelbuild/executors.py;
by default worker processes on this machine, up to `jobs` at once). A builder that runs jobs of its own
before its build (tune's trials) is moved on here too, through the same executor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import errors, persist
from .derivation import Input, Job, derivation_key, explain, resolve
from .errors import BuildError, HashMismatch, ModelbuildError
from .executors import Handle, LocalExecutor
from .recipe import Recipe, Source, Step
from .resolved import ResolvedSource
from .sources import fixed_output_key
from .sources import resolve as resolve_source
from .store import Store

FINAL = ("cached", "substituted", "built", "failed", "skipped")
DONE = ("cached", "substituted", "built")  # an artifact to use: in the store, fetched from a cache, or built


@dataclass
class StepState:
    name: str
    status: str = "pending"  # pending | running | cached | substituted | built | failed | skipped
    key: str | None = None
    path: Path | None = None
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: dict | None = None
    started: float | None = None
    progress: dict | None = None
    differences: list[str] | None = None  # --check: files (or metrics) that differ
    check: str | None = None  # --check compared "bytes" or, where bit-identity is not promised, "metrics"
    kept: bool = False  # failed, but its artifact is kept (a committed failure: a failed evaluation gate)

    def as_json(self, store: Store) -> dict:
        out = {"step": self.name, "status": self.status, "path": str(self.path) if self.path else None,
               "key": self.key, "seconds": round(self.seconds, 3)}
        if self.reasons and self.status == "built":
            out["reasons"] = self.reasons
        if self.error:
            out["error"] = self.error["message"]
        if self.differences is not None:
            out["reproducible"] = not self.differences
            out["differences"] = self.differences
            out["check"] = self.check
        return out


class Realiser:
    def __init__(self, store: Store, recipe: Recipe, *, jobs: int = 1, keep_going: bool = False,
                 check: bool = False, reporter=None, substituter=None, require_cached: bool = False,
                 executor=None):
        self.store, self.recipe = store, recipe
        if store.exists():  # code hashes and the distributions' map, kept between runs (persist.py)
            persist.configure(store.root / "cache")
        self.jobs, self.keep_going, self.check = max(1, jobs), keep_going, check
        self.reporter = reporter
        self.executor = executor or LocalExecutor(store, self.jobs)
        self.substituter, self.require_cached = substituter, require_cached  # modelbuild/cache
        self.sources: dict[tuple[str, str], ResolvedSource] = {}
        self.prepared: dict[str, Job] = {}

    # ---- shared by plan and build -----------------------------------------------------------------
    def _why(self, step: str, drv: dict) -> list[str]:
        """Why a step is built: how its derivation differs from that of its last build (which its root
        names). A damaged or missing record of that build is said so, never read as 'new' or as changes."""
        root = self.store.get_root(f"{self.recipe.name}:{step}") if self.store.exists() else None
        if not root or not root[1]:
            return explain(None, drv)
        old = self.store.read_drv(root[1])
        if old is None or derivation_key(old) != root[1]:
            return [f"what changed since its last build is unknown: the record of that build's derivation "
                    f"(drv/{root[1]}.json) is missing or damaged"]
        return explain(old, drv)

    def _source(self, step: Step, name: str, source: Source, fetch: bool) -> ResolvedSource | None:
        if (step.name, name) not in self.sources:
            resolved = resolve_source(source, self.store, self.recipe.dir, step=step.name, input_name=name, fetch=fetch,
                               recipe_file=str(self.recipe.file))
            if resolved is None:
                return None
            self.sources[(step.name, name)] = resolved
        return self.sources[(step.name, name)]

    def prepare(self, step: Step, states: dict[str, StepState], fetch: bool = True) -> Job | None:
        """The step's job, once every input's content is known; None while one is not."""
        known = [self._source(step, n, r, fetch) is not None for n, r in step.inputs.items() if isinstance(r, Source)]
        if not all(known):
            return None
        inputs = {}
        for name, ref in step.inputs.items():
            if isinstance(ref, Source):
                src = self.sources[(step.name, name)]
                refs = (str(self.store.root / src.lineage["artifact"]),) if "artifact" in src.lineage else ()
                inputs[name] = Input(src.path, "source", src.digest, src.lineage,
                                     stat=src.stat_identity if ref.kind == "path" else None, refs=refs)
            else:
                up = states[ref]
                if up.path is None:
                    return None
                inputs[name] = self._step_input(step, name, ref, up)
        return resolve(step, inputs, self.recipe)

    def _step_input(self, step: Step, name: str, ref: str, up: StepState) -> Input:
        """An upstream step's artifact as an input; a tune step's stands for its best trial's artifact."""
        path, key, via, refs = up.path, up.key, {}, ()
        upstream = self.recipe.steps[ref].builder
        if upstream.runs_jobs:  # a tune step's artifact stands for its best trial's
            path, key = upstream.stand_in(self.store, up.path)
            via, refs = {"tune": self.store.rel(up.path)}, (str(up.path),)
        self._check_input(step, name, ref, path)
        lineage = {"kind": "step", "step": ref, "key": key, "path": self.store.rel(path), **via}
        return Input(path, "step", path.name.split("-", 1)[0], lineage, refs=(*refs, str(path)))

    def _check_input(self, step: Step, name: str, ref: str, path: Path) -> None:
        """An input is read only after the same check as a cache hit: damage found here (after the input's
        own step was found intact or built) fails the step, never reaches its build."""
        if not self.store.check_artifact(path):
            raise HashMismatch(f"step '{step.name}': its input {name} (from step '{ref}'), the artifact "
                               f"{self.store.rel(path)}, is missing or damaged, so it is not used. Run "
                               "`modelbuild verify` to list the damage, and build again: the damaged artifact is "
                               "moved aside and rebuilt")

    def _damaged_trial(self, step: Step, path: Path) -> Path | None:
        """A tune step's artifact is only as sound as its best trial, which is what its consumers read:
        that trial when it is damaged or missing, else None."""
        if not step.builder.runs_jobs:
            return None
        trial, _ = step.builder.stand_in(self.store, path)
        return None if self.store.check_artifact(trial) else trial

    def cached(self, key: str, repair: bool = True) -> Path | None:
        """A trace hit whose artifact is intact; a damaged artifact is moved aside so it gets rebuilt
        (unless `repair` is off: a dry run changes nothing)."""
        if not self.store.exists():
            return None
        hit = self.store.lookup(key)
        if not hit:
            return None
        path = hit[0]
        if self.store.check_artifact(path):
            return path
        if not repair:
            return None
        if path.exists():
            self.store.quarantine(path)
        else:
            with self.store.db:
                self.store.db.execute("DELETE FROM trace WHERE key=?", (key,))
        return None

    def _trial_reason(self, trial: Path, tune: Path, repair: bool) -> list[str]:
        """A tune artifact whose best trial is damaged is unusable too (a rebuilt trial may land elsewhere):
        both are moved aside and the search runs again, rebuilding the trial; every other trial is a hit."""
        if repair:
            for path in (trial, tune):
                if path.exists():
                    self.store.quarantine(path)
        verb = "are" if repair else "will be"
        return [f"the best trial of its search, {self.store.rel(trial)}, is damaged or missing: it and this "
                f"step's artifact {verb} moved aside, and the search runs again to rebuild it"]

    # ---- plan --------------------------------------------------------------------------------------
    def plan(self, targets: list[str] | None = None) -> list[StepState]:
        """A dry run: what would be cached or built, and why. Nothing is built or fetched."""
        states = {name: StepState(name) for name in self.recipe.order}
        failing: set[str] = set()  # steps whose recorded result is a failure, and what depends on them
        for name in self.recipe.closure(targets or self.recipe.defaults):
            st, step = states[name], self.recipe.steps[name]
            blocked = [n for n, r in step.inputs.items() if isinstance(r, str) and r in failing]
            if blocked:
                failing.add(name)
                st.status, st.reasons = "skip", [f"input {n} fails, so this step is not built" for n in blocked]
                continue
            prepared = self.prepare(step, states, fetch=False)
            if prepared is None:
                st.status = "build"
                st.reasons = [f"input {n} will be built first" for n, r in step.inputs.items()
                              if isinstance(r, str) and states[r].path is None]
                st.reasons += [f"source {n} will be fetched first" for n, r in step.inputs.items()
                               if isinstance(r, Source) and (name, n) not in self.sources]
                continue
            st.key = prepared.key
            st.path = self.cached(prepared.key, repair=False)
            trial = st.path and self._damaged_trial(step, st.path)
            if trial:
                st.status = "build"
                st.reasons = self._trial_reason(trial, st.path, repair=False) + step.builder.describe(self, step, prepared)
                st.path = None
            elif st.path is not None:
                st.status = "cached"
                failure = self.store.failure_of(prepared.key)
                if failure:
                    failing.add(name)
                    st.reasons = [f"its recorded result is a failure ({failure['type']}): the step fails again "
                                  "and nothing that depends on it builds"]
            elif self.store.exists() and self.store.lookup(prepared.key):
                st.status = "build"
                st.reasons = ["the stored artifact is damaged or missing: it will be moved aside and rebuilt"]
            else:
                st.status = "build"
                st.reasons = self._why(name, prepared.drv)
                st.reasons += step.builder.describe(self, step, prepared)
        return [states[n] for n in self.recipe.closure(targets or self.recipe.defaults)]

    # ---- build -------------------------------------------------------------------------------------
    def build(self, targets: list[str] | None = None) -> list[StepState]:
        self.store.init()
        with self.store.gc_lock(exclusive=False):
            try:
                return self._build(targets)
            finally:  # again at the end: a killed build's worker may have held its key's lock at the start
                self.store.clean_tmp()

    def _build(self, targets: list[str] | None) -> list[StepState]:
        self.store.clean_tmp()
        order = self.recipe.closure(targets or self.recipe.defaults)
        for name in order:  # a wrong pin or a missing package fails the build before any step runs
            step = self.recipe.steps[name]
            for input_name, ref in step.inputs.items():
                if isinstance(ref, Source):
                    self._substitute_source(ref)
                    self._source(step, input_name, ref, fetch=True)
        states = {name: StepState(name) for name in self.recipe.order}
        pending, running = list(order), {}
        stop = False
        self._report("start", [states[n] for n in order])
        try:
            while pending or running:
                progressed = False
                for name in list(pending):
                    outcome = self._advance(states, name, running, stop)
                    if outcome != "wait":
                        pending.remove(name)
                        progressed = True
                        if outcome == "failed" and not self.keep_going:
                            stop = True
                progressed |= self._collect(states, running)
                if any(states[n].status == "failed" for n in order) and not self.keep_going:
                    stop = True
                self._poll_progress(states, running)
                self._report("update", [states[n] for n in order])
                if not progressed:
                    self.executor.wait_any(self._handles(running), timeout=0.01)
        except KeyboardInterrupt:
            self._interrupt(running)
            raise
        for name in order:
            if states[name].status in DONE or states[name].kept:
                self._root(name, states[name])
        self.store.record_attempts([(f"{self.recipe.name}:{n}", states[n].key, states[n].status) for n in order
                                    if states[n].key and states[n].status in (*DONE, "failed")])
        self._report("finish", [states[n] for n in order])
        return [states[n] for n in order]

    def _advance(self, states, name, running, stop) -> str:
        """Try to move one pending step on; returns its new status or 'wait'."""
        step, st = self.recipe.steps[name], states[name]
        if any(states[d].status in ("failed", "skipped") for d in step.deps):
            st.status = "skipped"
            st.error = {"message": "an input failed"}
            return "skipped"
        if any(states[d].status not in DONE for d in step.deps):
            return "wait"
        if stop:
            st.status = "skipped"
            st.error = {"message": "the build stopped at an earlier failure (use --keep-going)"}
            return "skipped"
        if st.key is None:
            try:
                prepared = self.prepare(step, states)
            except ModelbuildError as e:
                st.status, st.error = "failed", {"type": type(e).__name__, "message": str(e)}
                return "failed"
            st.key, self.prepared[name] = prepared.key, prepared
            self.store.write_drv(prepared.key, prepared.drv)
            st.path = self.cached(prepared.key)
            try:
                substituted = st.path is None and self._substitute(st)
            except ModelbuildError as e:  # a cache offered an untrustworthy artifact: refused (exit 5)
                st.status, st.error = "failed", {"type": type(e).__name__, "message": str(e)}
                return "failed"
            trial = st.path and self._damaged_trial(step, st.path)
            if trial:
                st.reasons = self._trial_reason(trial, st.path, repair=True)
                st.path = None
            failure = self.store.failure_of(prepared.key) if st.path is not None else None
            if st.path is None:
                st.reasons = st.reasons or self._why(name, prepared.drv)
            elif failure:  # a committed failure: the artifact is kept, the step fails on every cache hit
                st.status, st.error, st.kept = "failed", failure, True
                return "failed"
            elif not self.check:
                st.status = "substituted" if substituted else "cached"
                return st.status
        if self.require_cached and st.path is None:
            st.status, st.error = "failed", {"type": "NotCached", "message": f"step '{name}' is in no cache and would "
                                             f"have to be built ({'; '.join(st.reasons)}); --require-cached builds nothing"}
            return "failed"
        if self.executor.free() <= 0:
            return "wait"
        job, expect = self.prepared[name], st.path  # expect: `build --check` rebuilds a cached step to compare
        # here a job that is not cached (or is checked) is about to be submitted
        running[name] = (step.builder.start(self, step, job, expect) if step.builder.runs_jobs
                         else self.executor.submit(job, expect=expect))
        st.status, st.started = "running", time.time()
        return "running"

    def _substitute(self, st: StepState) -> bool:
        """Fetch the step's artifact from a shared cache (modelbuild/cache) when one has it."""
        if self.substituter is None:
            return False
        started = time.time()
        st.path = self.substituter.substitute(st.key)
        st.seconds = time.time() - started
        return st.path is not None

    def _substitute_source(self, source: Source) -> None:
        """A fetched source (a PyPI pin) comes from a shared cache too, when one has it."""
        key = fixed_output_key(source) if self.substituter is not None else None
        hit = key and self.store.lookup(key)
        if key and not (hit and self.store.check_artifact(hit[0])):
            self.substituter.substitute(key)

    def _outcome(self, task) -> dict | None:
        """A running step's result once it is over: a job's (its files then go), or a search's."""
        if isinstance(task, Handle):
            if not task.done():
                return None
            result = task.result()
            self.executor.release(task)
            return result
        return task.advance()

    def _collect(self, states, running) -> bool:
        progressed = False
        for name, task in list(running.items()):
            result = self._outcome(task)
            if result is None:
                continue
            progressed = True
            del running[name]
            st = states[name]
            checking = st.path is not None
            st.seconds = result.get("seconds", time.time() - (st.started or time.time()))
            if "error" in result:
                st.status, st.error = "failed", result["error"]
                if result.get("kept"):
                    st.path, st.kept = Path(result["path"]), True
            elif checking:
                st.status, st.differences, st.check = "cached", result["differences"], result.get("check")
            else:
                st.status, st.path = result["status"], Path(result["path"])
        return progressed

    def _poll_progress(self, states, running) -> None:
        for name, task in running.items():
            states[name].progress = task.progress() or states[name].progress

    @staticmethod
    def _handles(running) -> list[Handle]:
        """Every job running: the steps' own, and those of their searches."""
        return [h for task in running.values() for h in ([task] if isinstance(task, Handle) else task.handles())]

    def _interrupt(self, running) -> None:
        self.executor.interrupt(self._handles(running))
        for task in running.values():
            if not isinstance(task, Handle):
                task.close()
        self.store.clean_tmp()

    def note(self, text: str) -> None:
        """A line in the build view, between the steps' states (a search's trials)."""
        if self.reporter is not None:
            self.reporter.note(text)

    def _root(self, name: str, st: StepState) -> None:
        root_name = f"{self.recipe.name}:{name}"
        current = self.store.get_root(root_name)
        if current is None or current[0] != st.path or current[1] != st.key:
            self.store.set_root(root_name, st.path, st.key)

    def _report(self, event: str, states: list[StepState]) -> None:
        if self.reporter is not None:
            getattr(self.reporter, event)(states)


def exit_code(states: list[StepState]) -> int:
    """The most specific failure wins: validation (3) or gate (4) over a plain build failure (1)."""
    codes = []
    for st in states:
        if st.status == "failed":
            cls = errors.EXIT_CLASSES.get((st.error or {}).get("type", ""), BuildError)
            codes.append(cls.exit_code)
        if st.differences:
            codes.append(errors.NOT_REPRODUCIBLE)
    for preferred in (errors.STORE_UNAVAILABLE, errors.CORRUPT, errors.USAGE, errors.NOT_CACHED, errors.DATA_INVALID, errors.GATE_FAILED, errors.BUILD_FAILED,
                      errors.NOT_REPRODUCIBLE):
        if preferred in codes:
            return preferred
    return errors.OK
