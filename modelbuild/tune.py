"""The search of a `tune` step, run by the realiser in its own process (see docs/tune.md).

Every trial is a derivation of the target step with the searched params overridden (and, when the objective
is read from a step downstream of the target, a derivation of that step on the trial's artifact), planned
and built exactly like a recipe step: cached when its key was ever built, else built by a worker process.
So a trial is never built twice, whoever built it first.

The realiser moves a search on through `Search.advance()`: its trials are ordinary jobs submitted to the
realiser's executor (modelbuild/executors.py), at most `num_workers` at once and only while the executor has a
free slot. Once every trial is known, it writes the trials into a file and submits the tune step's own job,
whose builder (`builders/tune.py`) writes the artifact; that job's result is the step's.

Which trials: `grid` and `random` are fixed sequences of points, a function of the space, seed and budget.
A Nevergrad optimizer asks in rounds of `num_workers` points, told in ask order (so the asks are the same
whatever `-j` and the order trials finish in). Its finished trials are indexed in trace.sqlite under the
search's identity (Store.trial_points / record_trial; the tune derivation without budget, num_workers and max_failure_rate): a later run of the
same search (a larger budget, or after a kill) first evaluates those points again (cache hits), tells them
to the optimizer, and asks only for the rest.

This module imports no heavy library at module level: nevergrad is imported by the search only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import random
import time
import uuid
from pathlib import Path

from .errors import BuildError, ModelbuildError

KINDS = ("log", "uniform", "int", "choice")
OURS = ("grid", "random")
# Nevergrad optimizers accepted without importing nevergrad at recipe-check time (1.4 s); any other name is
# looked up in nevergrad.optimizers.registry. tests/builders/test_tune.py checks they are all registered.
COMMON_NEVERGRAD = ("NGOpt", "NgIohTuned", "TwoPointsDE", "DE", "CMA", "DiagonalCMA", "BO", "PSO", "OnePlusOne",
                    "DiscreteOnePlusOne", "PortfolioDiscreteOnePlusOne", "RandomSearch", "ScrHammersleySearch",
                    "HammersleySearch", "LHSSearch", "TBPSA", "NelderMead", "Cobyla", "Powell")
SEARCH_PARAMS_OUTSIDE_IDENTITY = ("budget", "num_workers", "max_failure_rate")
RESOLUTION = 1e-3  # two points closer than this share of every range (log ranges on a log scale) are one trial
MAX_REPEATS = 3  # repeats in a row before the search asks a seeded random point instead


# ---- the space -----------------------------------------------------------------------------------------
def round12(value: float) -> float:
    """12 significant digits: grid points read as written (1e-3, not 0.0010000000000000002), and a told
    point keeps its key."""
    return float(f"{value:.12g}")


def axis(spec: dict) -> list:
    """The grid values of one dimension (`points` of them for a float range)."""
    kind = next(k for k in KINDS if k in spec)
    if kind == "choice":
        return list(spec["choice"])
    lo, hi = spec[kind]
    n = spec.get("points")
    if kind == "int":
        if n is None or n >= hi - lo + 1:
            return list(range(lo, hi + 1))
        return sorted({round(lo + (hi - lo) * i / (n - 1)) for i in range(n)})
    if n == 1:
        return [lo]
    if kind == "log":
        a, b = math.log(lo), math.log(hi)
        return [round12(math.exp(a + (b - a) * i / (n - 1))) for i in range(n)]
    return [round12(lo + (hi - lo) * i / (n - 1)) for i in range(n)]


def grid_size(space: dict) -> int:
    return math.prod(len(axis(space[p])) for p in space)


def grid_points(space: dict) -> list[dict]:
    """The Cartesian product, dimensions in sorted path order (the order the key sees)."""
    paths = sorted(space)
    return [dict(zip(paths, values, strict=True)) for values in itertools.product(*(axis(space[p]) for p in paths))]


def random_points(space: dict, seed: int, n: int) -> list[dict]:
    """n points drawn independently; the first k are the same for every n >= k."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        point = {}
        for path in sorted(space):
            spec = space[path]
            kind = next(k for k in KINDS if k in spec)
            if kind == "choice":
                point[path] = spec["choice"][rng.randrange(len(spec["choice"]))]
            elif kind == "int":
                point[path] = rng.randint(*spec["int"])
            elif kind == "log":
                a, b = (math.log(v) for v in spec["log"])
                point[path] = round12(math.exp(rng.uniform(a, b)))
            else:
                point[path] = round12(rng.uniform(*spec["uniform"]))
        out.append(point)
    return out


def same_point(space: dict, a: dict, b: dict) -> bool:
    """The same trial: equal choices and whole numbers, floats within RESOLUTION of their range."""
    for path, spec in space.items():
        x, y = a.get(path), b.get(path)
        if "log" in spec or "uniform" in spec:
            lo, hi = spec.get("log") or spec["uniform"]
            if "log" in spec:
                x, y, lo, hi = (math.log(v) for v in (x, y, lo, hi))
            if abs(x - y) > RESOLUTION * (hi - lo):
                return False
        elif x != y:
            return False
    return True


def set_path(params: dict, path: str, value) -> dict:
    """A copy of params with the dotted path set (intermediate mappings copied, missing ones created)."""
    out = dict(params)
    node, parts = out, path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, dict) else {}
        node = node[part]
    node[parts[-1]] = value
    return out


def trial_params(target, point: dict, file: str | None) -> dict:
    """The target's params with the point applied, normalised by the target's builder (defaults, types,
    checks) exactly as the recipe's own step is, so equal settings give equal keys."""
    params = target.params
    for path, value in sorted(point.items()):
        params = set_path(params, path, value)
    return target.builder.normalise(params, file=file, step=target.name)


# ---- nevergrad --------------------------------------------------------------------------------------------
def nevergrad_names() -> list[str]:
    import nevergrad as ng
    return sorted(ng.optimizers.registry)


def _parametrization(space: dict, seed: int):
    import nevergrad as ng
    import numpy as np

    dims = {}
    for path in sorted(space):
        spec = space[path]
        kind = next(k for k in KINDS if k in spec)
        if kind == "choice":
            dims[path] = ng.p.Choice(list(spec["choice"]))
        elif kind == "int":
            dims[path] = ng.p.Scalar(lower=spec["int"][0], upper=spec["int"][1]).set_integer_casting()
        elif kind == "log":
            dims[path] = ng.p.Log(lower=spec["log"][0], upper=spec["log"][1])
        else:
            dims[path] = ng.p.Scalar(lower=spec["uniform"][0], upper=spec["uniform"][1])
    param = ng.p.Dict(**dims)
    param.random_state = np.random.RandomState(seed)
    return param


def make_optimizer(name: str, space: dict, seed: int, budget: int, num_workers: int):
    import nevergrad as ng
    return ng.optimizers.registry[name](parametrization=_parametrization(space, seed), budget=budget,
                                        num_workers=num_workers)


def _plain(value):
    """A JSON value from what nevergrad returns (numpy scalars, tuples)."""
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()
    if isinstance(value, float):
        return round12(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def _quiet():
    """Nevergrad warns about settings it finds inefficient and points it was told twice: not the user's to fix."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _ask_one(opt) -> tuple:
    """A candidate and its point as JSON values."""
    with _quiet():
        c = opt.ask()
    return c, {p: _plain(v) for p, v in c.value.items()}


# ---- the trial index ----------------------------------------------------------------------------------------
def search_identity(drv: dict) -> str:
    """A search's identity: its tune derivation without the params that do not change which point is
    asked after which (budget, parallelism, tolerated failures)."""
    from .hashing import hash_json
    params = {k: v for k, v in drv.get("params", {}).items() if k not in SEARCH_PARAMS_OUTSIDE_IDENTITY}
    return hash_json({**drv, "params": params})


# ---- downstream -----------------------------------------------------------------------------------------------
def best_trial(store, tune_path: Path) -> tuple[Path, str | None]:
    """The best trial's artifact and key: what a step that takes a tune step as input receives."""
    try:
        best = json.loads((Path(tune_path) / "best.json").read_text())
        rel, key = best["path"], best.get("key")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BuildError(f"{tune_path} is not a tune artifact with a readable best.json ({e}); move it aside "
                         "with `modelbuild verify` and build again") from None
    return store.object_path(rel, f"the best trial named in {store.rel(tune_path)}/best.json"), key


# ---- the search ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Trial:
    number: int
    point: dict
    seq: int | None = None  # its row in the trial index (Nevergrad optimizers)
    stage: int = 0  # 0: the target step; 1: the objective step, when there is one
    run: dict | None = None
    keys: list = dataclasses.field(default_factory=list)
    paths: list = dataclasses.field(default_factory=list)
    built: bool = False
    status: str = "pending"  # pending | ok | failed
    value: float | None = None
    error: str | None = None
    interrupted: bool = False
    asked: int | None = None  # how many points the optimizer had asked when it asked this one, repeats included
    ready: tuple | None = None  # (stage, job): resolved, not cached, waiting for a slot (resolved once, not per poll)

    def record(self, store) -> dict:
        out = {"number": self.number, "params": self.point, "status": self.status, "objective": self.value,
               "key": self.keys[0] if self.keys else None}
        if self.asked is not None:
            out["asked"] = self.asked
        if self.paths:
            out.update(digest=self.paths[0].name.split("-", 1)[0], path=store.rel(self.paths[0]))
            if len(self.paths) > 1:
                out.update(objective_key=self.keys[-1], objective_path=store.rel(self.paths[-1]))
        return out


class Search:
    """One tune step's search: the realiser moves it on with `advance()` (never blocking) until it answers
    with the tune step's result. Trials, and then the tune step's own build (which writes the artifact from
    the finished trials), are ordinary jobs submitted to the realiser's executor."""

    def __init__(self, realiser, step, job, expect: Path | None = None, mode: str = "build"):
        self.r, self.store, self.recipe = realiser, realiser.store, realiser.recipe
        self.step, self.job, self.expect, self.mode = step, job, expect, mode
        self.target, self.judge = step.builder.target_step, step.builder.objective_step
        p = step.params
        self.space, self.objective, self.optimizer = p["space"], p["objective"], p["optimizer"]
        self.budget = p["budget"] if p["budget"] is not None else grid_size(self.space)
        self.search_id = search_identity(job.drv)
        self.trials: list[Trial] = []
        self.final = None  # the tune step's own job, once every trial is known
        self.outcome: dict | None = None
        self.status = {"done": 0, "total": self.budget, "message": ""}
        self.held = contextlib.ExitStack()  # the search's lock, while this process runs it
        self.started = time.time()
        self.counts = {"built": 0, "cached": 0, "failed": 0}
        self.steps = None
        self.asks, self.repeats = 0, []  # Nevergrad's asks, and the repeats among them (answered, not built)

    # ---- what the realiser calls ---------------------------------------------------------------------------
    def advance(self) -> dict | None:
        """Move the search on as far as it goes without waiting; its step's result once it is over."""
        if self.outcome is None:
            try:
                self._advance()
            except ModelbuildError as e:
                self._fail(type(e).__name__, str(e))
            except Exception as e:  # noqa: BLE001 - a failed search is a failed step, never a crashed build
                self._fail("BuildError", f"step '{self.step.name}': the search failed: {type(e).__name__}: {e}")
        return self.outcome

    def _advance(self) -> None:
        if self.final is None:
            self.steps = self.steps or self._search()
            next(self.steps, None)
        elif self.final.done():
            result = self.final.result()
            self.r.executor.release(self.final)
            result["seconds"] = round(time.time() - self.started, 3)  # the whole search's, not its last job's
            self._done(result)

    def progress(self) -> dict:
        """The search's own progress (trials done of the budget) and, for the build view to nest under it,
        each running trial's: what its builder reports (a training's steps, rate and ETA)."""
        now = time.time()
        running = [{**(t.run.progress() or {}), "name": f"trial {t.number}", "status": "running",
                    "seconds": f"{now - t.run.started:.1f}s"} for t in self.trials if t.run]
        return {**self.status, "unit": "trials", "trials": running}

    def handles(self) -> list:
        """The jobs this search has running (trials, or its step's own build)."""
        return [t.run for t in self.trials if t.run] + ([self.final] if self.final else [])

    def close(self) -> None:
        """Give the search's lock back (after an interrupt, or once it is over)."""
        self.held.close()
        getattr(self, "trials_file", Path("/nonexistent")).unlink(missing_ok=True)

    def _done(self, result: dict) -> None:
        self.outcome = result
        self.close()

    def _fail(self, kind: str, message: str) -> None:
        for h in self.handles():
            self.r.executor.cancel(h)
        for t in self.trials:
            t.run = None
        self._done({"error": {"type": kind, "message": message}, "seconds": round(time.time() - self.started, 3)})

    # ---- the search itself ------------------------------------------------------------------------------------
    def _search(self):
        yield from self._lock()
        if self.optimizer == "grid":
            self.trials = [Trial(i + 1, p) for i, p in enumerate(grid_points(self.space)[:self.budget])]
            yield from self._evaluate(self.trials)
        elif self.optimizer == "random":
            self.trials = [Trial(i + 1, p) for i, p in enumerate(random_points(self.space, self._seed(), self.budget))]
            yield from self._evaluate(self.trials)
        else:
            yield from self._nevergrad()
        ok = [t for t in self.trials if t.status == "ok"]
        if not ok:
            raise BuildError(f"step '{self.step.name}': all {len(self.trials)} trials failed; the first: "
                             f"{self.trials[0].error}")
        self._submit_final()

    def _seed(self) -> int:
        return self.step.params["seed"]

    def _nevergrad(self):
        rows = self.store.trial_points(self.search_id)
        next_seq = max((seq for seq, _ in rows), default=0) + 1
        self.trials = [Trial(i + 1, point, seq=seq, asked=i + 1) for i, (seq, point) in enumerate(rows[:self.budget])]
        if self.trials:
            self._say(f"{len(self.trials)} earlier trials of this search found: evaluating and telling them first")
        yield from self._evaluate(self.trials)
        num_workers = self.step.params["num_workers"]
        with _quiet():
            opt = make_optimizer(self.optimizer, self.space, self._seed(), self.budget, num_workers)
            for t in self.trials:
                opt.suggest(t.point)
                opt.tell(opt.ask(), self._loss(t))
        self.asks = len(self.trials)
        while len(self.trials) < self.budget:
            k = min(num_workers, self.budget - len(self.trials))
            asked, later = self._ask(opt, k, next_seq)
            next_seq += k
            batch = [t for _, t in asked]
            self.trials += batch
            yield from self._evaluate(batch)
            for c, t in asked:
                self._tell(opt, c, t)
            for c, t in later:
                self._tell(opt, c, t, repeat=True)

    def _ask(self, opt, k: int, next_seq: int) -> tuple[list, list]:
        """k new points, each one neither a trial of this search nor another point of the batch. A repeat (a
        point within RESOLUTION of a trial's, in every dimension) is answered with that trial's result, not
        built, and does not count against the budget; after MAX_REPEATS repeats in a row (an optimizer that has
        settled on one point) the next point is the search's next seeded random point that is not a repeat."""
        asked, later, run = [], [], 0
        while len(asked) < k:
            batch = [t for _, t in asked]
            c, point = _ask_one(opt)
            twin = self._twin(point, batch)
            if twin is not None:
                self.repeats.append({"asked": self.asks + 1, "params": point, "trial": twin.number})
                self._say(f"point {json.dumps(point, sort_keys=True)} asked again: answered by trial {twin.number}, "
                          "not built")
                if twin.status == "pending":  # a twin in this batch: told once it is built
                    later.append((c, twin))
                else:
                    self._tell(opt, c, twin, repeat=True)
                self.asks, run = self.asks + 1, run + 1
                if run < MAX_REPEATS:
                    continue
                with _quiet():
                    opt.suggest(self._fresh(batch))
                c, point = _ask_one(opt)
            self.asks, run = self.asks + 1, 0
            asked.append((c, Trial(len(self.trials) + len(batch) + 1, point, seq=next_seq + len(batch),
                                   asked=self.asks)))
        return asked, later

    def _twin(self, point: dict, batch: list[Trial]) -> Trial | None:
        return next((t for t in [*self.trials, *batch] if same_point(self.space, t.point, point)), None)

    def _fresh(self, batch: list[Trial]) -> dict:
        """The first of the search's seeded random points that repeats no trial (a far point, if all do)."""
        draws = random_points(self.space, self._seed() + 7919 * self.asks, 200)
        return next((d for d in draws if self._twin(d, batch) is None), draws[0])

    def _tell(self, opt, candidate, t: Trial, repeat: bool = False) -> None:
        try:
            with _quiet():
                opt.tell(candidate, self._loss(t))
        except Exception:  # an optimizer may refuse a point it was told already (bayes_opt's NotUniqueError)
            if not repeat:
                raise

    def _loss(self, t: Trial) -> float:
        """What the optimizer minimises; a failed trial scores worse than any trial so far."""
        if t.status == "ok":
            return t.value if self.objective["mode"] == "min" else -t.value
        losses = [self._loss(x) for x in self.trials if x.status == "ok"]
        return max(losses) + (max(losses) - min(losses)) + 1.0 if losses else 1e6

    def _lock(self):
        """One process runs a search at a time (its trial index is appended to); another waits."""
        while True:
            if self.held.enter_context(self.store.lock(f"tune-{self.search_id}", blocking=False)):
                return
            self.held.close()
            self._progress("waiting for another build running this search")
            yield

    def _evaluate(self, trials: list[Trial]):
        while True:
            finished = [self._move(t) for t in trials]
            if all(finished):
                return
            yield

    def _has_slot(self) -> bool:
        """A trial may start: fewer than num_workers of this search's run, and the executor has a slot."""
        return (sum(1 for x in self.trials if x.run) < self.step.params["num_workers"]
                and self.r.executor.free() > 0)

    def _move(self, t: Trial) -> bool:
        """Move a trial on as far as it goes without waiting; True once it is finished."""
        if t.status != "pending":
            return True
        while t.status == "pending":
            if t.run is not None:
                if not t.run.done():
                    return False
                self._collect(t)
                continue
            planning = self.mode == "plan"
            if t.stage == (2 if self.judge else 1):
                if planning:
                    t.status = "cached"
                    return True
                self._score(t)
                break
            if t.ready is None or t.ready[0] != t.stage:
                try:
                    job = self._stage(t)
                except ModelbuildError as e:
                    t.status, t.error = "failed", str(e)
                    break
                cached = self.r.cached(job.key, repair=not planning)
                if cached is not None or planning:
                    t.keys.append(job.key)
                    if cached is None:
                        t.status = "to build"
                        return True
                    t.paths.append(cached)
                    t.stage += 1
                    continue
                self.store.write_drv(job.key, job.drv)
                t.ready = (t.stage, job)
            if not self._has_slot():  # polled again on the build's next turn, without resolving it again
                return False
            job = t.ready[1]
            t.keys.append(job.key)
            t.run = self.r.executor.submit(job)
            t.built = True
        self._finished(t)
        return True

    def _collect(self, t: Trial) -> None:
        result = t.run.result()
        self.r.executor.release(t.run)
        t.run = None
        if "error" in result and not result.get("kept"):
            t.status, t.error, t.interrupted = "failed", result["error"]["message"], bool(result.get("interrupted"))
            return
        t.paths.append(Path(result["path"]))
        t.stage += 1

    def _stage(self, t: Trial):
        """The job of a trial's next build: the target with the point's params, or the objective step on the
        trial's artifact; resolved like any step (derivation.resolve)."""
        from .derivation import Input, resolve

        inputs_of = self.job.inputs
        if t.stage == 0:
            step = dataclasses.replace(self.target, params=trial_params(self.target, t.point, str(self.recipe.file)))
            return resolve(step, {n: inputs_of["target." + n] for n in self.target.inputs}, self.recipe)
        inputs = {n: inputs_of["objective." + n] for n, r in self.judge.inputs.items() if r != self.target.name}
        trial = t.paths[0]
        lineage = {"kind": "step", "step": self.target.name, "key": t.keys[0], "path": self.store.rel(trial),
                   "tune": self.step.name}
        for n, r in self.judge.inputs.items():
            if r == self.target.name:
                inputs[n] = Input(trial, "step", trial.name.split("-", 1)[0], lineage, refs=(str(trial),))
        return resolve(self.judge, dict(sorted(inputs.items())), self.recipe)

    def _score(self, t: Trial) -> None:
        metric = self.objective["metric"]
        path = t.paths[-1] / "metrics.json"
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError):
            metrics = {}
        value = metrics.get(metric)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            t.status = "failed"
            t.error = (f"{self.store.rel(path)} has no finite number '{metric}' (got {value!r}); it has: "
                       f"{', '.join(sorted(metrics)) or 'no metrics'}")
            return
        t.status, t.value = "ok", float(value)

    def _finished(self, t: Trial) -> None:
        if self.mode == "plan":
            return
        what = "failed" if t.status == "failed" else ("built" if t.built else "cached")
        self.counts[what] += 1
        if t.seq is not None and not t.interrupted:
            self.store.record_trial(self.search_id, t.seq, t.point, t.keys[0] if t.keys else None, t.status)
        shown = f"{self.objective['metric']} {t.value:.6g}" if t.status == "ok" else t.error.splitlines()[0][:200]
        self._say(f"trial {t.number}/{self.budget} {what} ({shown})")
        failed = self.counts["failed"]
        if failed > self.step.params["max_failure_rate"] * self.budget:
            raise BuildError(f"step '{self.step.name}': {failed} of {self.budget} trials failed, more than "
                             f"max_failure_rate {self.step.params['max_failure_rate']} allows; the first: "
                             f"{next(x.error for x in self.trials if x.status == 'failed')}")

    def _progress(self, message: str) -> None:
        done = sum(1 for t in self.trials if t.status != "pending")
        self.status = {"done": done, "total": self.budget, "message": message}

    def _say(self, text: str) -> None:
        """A line in the build view (the reporter's note), and the progress detail."""
        self._progress(text)
        self.r.note(f"tune {self.step.name}: {text}")

    def _submit_final(self) -> None:
        """Hand the trials to an ordinary job of the tune step itself, whose builder writes the artifact."""
        data = {"metric": self.objective["metric"], "mode": self.objective["mode"], "optimizer": self.optimizer,
                "budget": self.budget, "paths": sorted(self.space), "space": self.space,
                "trials": [t.record(self.store) for t in self.trials],
                "errors": {t.number: t.error for t in self.trials if t.error},
                "repeats": self.repeats,
                "facts": {"trials_built": self.counts["built"], "trials_cached": self.counts["cached"],
                          "trials_failed": self.counts["failed"], "points_repeated": len(self.repeats)}}
        jobs_dir = self.store.tmp / "jobs"
        jobs_dir.mkdir(parents=True, exist_ok=True)
        self.trials_file = jobs_dir / f"{uuid.uuid4().hex}.trials.json"
        self.trials_file.write_text(json.dumps(data))
        final = self.job.with_files({"trials": self.trials_file}, [str(path) for t in self.trials for path in t.paths])
        self.final = self.r.executor.submit(final, expect=self.expect)
        self._progress("writing the artifact")


def describe(realiser, step, prepared) -> list[str]:
    """What `plan` says a tune step will do."""
    p = step.params
    search = Search(realiser, step, prepared, mode="plan")
    what = f"{p['objective']['mode']}imise {p['objective']['metric']}"
    if p["objective"]["step"]:
        what += f" of step {p['objective']['step']}"
    if search.optimizer in OURS:
        points = (grid_points(search.space)[:search.budget] if search.optimizer == "grid"
                  else random_points(search.space, p["seed"], search.budget))
        trials = [Trial(i + 1, point) for i, point in enumerate(points)]
        search.trials = trials
        for t in trials:
            search._move(t)
        cached = sum(1 for t in trials if t.status == "cached")
        return [f"tune: {len(trials)} trials of {step.builder.target_step.name} ({search.optimizer}), {what}: "
                f"{cached} in the store, {len(trials) - cached} to build"]
    earlier = len(realiser.store.trial_points(search.search_id)[:search.budget])
    return [f"tune: {search.budget} trials of {step.builder.target_step.name} ({search.optimizer}, "
            f"{p['num_workers']} at a time), {what}: {earlier} earlier trials of this search are evaluated (from "
            f"the store) and told first, {search.budget - earlier} asked"]
