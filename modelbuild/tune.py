"""The search of a `tune` step, run by the realiser in its own process (see docs/tune.md).

Every trial is a derivation of the target step with the searched params overridden (and, when the objective
is read from a step downstream of the target, a derivation of that step on the trial's artifact), planned
and built exactly like a recipe step: cached when its key was ever built, else built by a worker process.
So a trial is never built twice, whoever built it first.

The search object poses as a worker process to the realiser's loop (`poll`, `send_signal`, `wait`, `kill`,
`returncode`): each `poll` moves the search on without blocking; once every trial is known, it writes the
trials into a file and launches an ordinary worker for the tune step itself, whose builder
(`builders/tune.py`) writes the artifact; from then on `poll` is that worker's.

Which trials: `grid` and `random` are fixed sequences of points, a function of the space, seed and budget.
A Nevergrad optimizer asks in rounds of `num_workers` points, told in ask order (so the asks are the same
whatever `-j` and the order trials finish in). Its finished trials are indexed in trace.sqlite under the
search's identity (the tune derivation without budget, num_workers and max_failure_rate): a later run of the
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
import sqlite3
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

from .errors import BuildError, ModelbuildError

KINDS = ("log", "uniform", "int", "choice")
OURS = ("grid", "random")
# Nevergrad optimizers accepted without importing nevergrad at recipe-check time (1.4 s); any other name is
# looked up in nevergrad.optimizers.registry. tests/builders/test_tune.py checks they are all registered.
COMMON_NEVERGRAD = ("NGOpt", "NgIohTuned", "TwoPointsDE", "DE", "CMA", "DiagonalCMA", "BO", "PSO", "OnePlusOne",
                    "DiscreteOnePlusOne", "PortfolioDiscreteOnePlusOne", "RandomSearch", "ScrHammersleySearch",
                    "HammersleySearch", "LHSSearch", "TBPSA", "NelderMead", "Cobyla", "Powell")
SEARCH_PARAMS_OUTSIDE_IDENTITY = ("budget", "num_workers", "max_failure_rate")
INDEX_SCHEMA = """CREATE TABLE IF NOT EXISTS tune_trials (search TEXT NOT NULL, seq INTEGER NOT NULL,
    point TEXT NOT NULL, key TEXT, status TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (search, seq))"""


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


# ---- the trial index ----------------------------------------------------------------------------------------
def search_identity(drv: dict) -> str:
    """A search's identity: its tune derivation without the params that do not change which point is
    asked after which (budget, parallelism, tolerated failures)."""
    from .hashing import hash_json
    params = {k: v for k, v in drv.get("params", {}).items() if k not in SEARCH_PARAMS_OUTSIDE_IDENTITY}
    return hash_json({**drv, "params": params})


def index_rows(store, search: str) -> list[tuple[int, dict]]:
    """(seq, point) of the indexed trials of a search, in order; [] for a store without the index."""
    if not store.exists():
        return []
    try:
        rows = store.db.execute("SELECT seq, point FROM tune_trials WHERE search=? ORDER BY seq", (search,)).fetchall()
    except sqlite3.OperationalError:  # no such table: no tune step ever ran on this store
        return []
    return [(seq, json.loads(point)) for seq, point in rows]


def _record(store, search: str, seq: int, point: dict, key: str | None, status: str) -> None:
    with store.db:
        store.db.execute(INDEX_SCHEMA)
        store.db.execute("INSERT OR REPLACE INTO tune_trials VALUES (?,?,?,?,?,?)",
                         (search, seq, json.dumps(point, sort_keys=True), key, status, time.time()))


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


def is_tune(step) -> bool:
    return bool(getattr(step.builder, "drives_trials", False))


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

    def record(self, store) -> dict:
        out = {"number": self.number, "params": self.point, "status": self.status, "objective": self.value,
               "key": self.keys[0] if self.keys else None}
        if self.paths:
            out.update(digest=self.paths[0].name.split("-", 1)[0], path=store.rel(self.paths[0]))
            if len(self.paths) > 1:
                out.update(objective_key=self.keys[-1], objective_path=store.rel(self.paths[-1]))
        return out


class Search:
    """One tune step's search, moved on by the realiser's loop through `poll()`."""

    def __init__(self, realiser, step, st, prepared, mode: str = "build", running: dict | None = None):
        self.r, self.store, self.recipe = realiser, realiser.store, realiser.recipe
        self.step, self.st, self.prepared, self.mode = step, st, prepared, mode
        self.running = running if running is not None else {}
        self.target, self.judge = step.builder.target_step, step.builder.objective_step
        p = step.params
        self.space, self.objective, self.optimizer = p["space"], p["objective"], p["optimizer"]
        self.budget = p["budget"] if p["budget"] is not None else grid_size(self.space)
        self.search_id = search_identity(prepared.drv)
        self.trials: list[Trial] = []
        self.returncode: int | None = None
        self.final: dict | None = None
        self.stopping = False
        self.held = contextlib.ExitStack()  # the search's lock, while this process runs it
        self.started = time.time()
        self.counts = {"built": 0, "cached": 0, "failed": 0}

    # ---- posing as a worker process for the realiser --------------------------------------------------------
    def start(self) -> dict:
        jobs_dir = self.store.tmp / "jobs"
        jobs_dir.mkdir(parents=True, exist_ok=True)
        jid = uuid.uuid4().hex
        self.trials_file = jobs_dir / f"{jid}.trials.json"
        self.run = {"proc": self, "file": jobs_dir / f"{jid}.search.json", "mode": self.mode,
                    "job": {"step": self.step.name, "key": self.prepared.key,
                            "result": str(jobs_dir / f"{jid}.result.json"),
                            "progress": str(jobs_dir / f"{jid}.progress.json")}}
        self.steps = self._search()
        return self.run

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if self.final is not None:
            code = self.final["proc"].poll()
            if code is not None:
                self._whole_time()
                self._done(code)
            return self.returncode
        if self.stopping:
            if not any(t.run["proc"].poll() is None for t in self.trials if t.run):
                self._done(-2)
            return self.returncode
        try:
            next(self.steps)
        except StopIteration:
            pass
        except ModelbuildError as e:
            self._fail(type(e).__name__, str(e))
        except Exception as e:  # noqa: BLE001 - a failed search is a failed step, never a crashed build
            self._fail("BuildError", f"step '{self.step.name}': the search failed: {type(e).__name__}: {e}")
        return self.returncode

    def _procs(self) -> list:
        procs = [t.run["proc"] for t in self.trials if t.run]
        return procs + ([self.final["proc"]] if self.final else [])

    def send_signal(self, sig) -> None:
        self.stopping = True
        for proc in self._procs():
            if proc.poll() is None:
                proc.send_signal(sig)

    def wait(self, timeout=None) -> int:
        deadline = time.time() + (timeout if timeout is not None else 1e9)
        for proc in self._procs():
            proc.wait(timeout=max(0.1, deadline - time.time()))  # TimeoutExpired: the realiser kills
        self._done(self.returncode if self.returncode is not None else -2)
        return self.returncode

    def kill(self) -> None:
        for proc in self._procs():
            if proc.poll() is None:
                proc.kill()

    def _whole_time(self) -> None:
        """The step's time in the build view and --json is the whole search's, not only the last worker's."""
        result = Path(self.run["job"]["result"])
        try:
            data = json.loads(result.read_text())
        except (OSError, ValueError):
            return
        data["seconds"] = round(time.time() - self.started, 3)
        result.write_text(json.dumps(data))

    def _done(self, code: int) -> None:
        self.returncode = code
        self.held.close()
        if hasattr(self, "trials_file"):
            self.trials_file.unlink(missing_ok=True)

    def _fail(self, kind: str, message: str) -> None:
        for t in self.trials:
            if t.run and t.run["proc"].poll() is None:
                t.run["proc"].kill()
                t.run["proc"].wait()
                self._cleanup(t.run)
        result = {"error": {"type": kind, "message": message}, "seconds": round(time.time() - self.started, 3)}
        Path(self.run["job"]["result"]).write_text(json.dumps(result))
        self._done(1)

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
        self._launch_final()

    def _seed(self) -> int:
        return self.step.params["seed"]

    def _nevergrad(self):
        import warnings

        rows = index_rows(self.store, self.search_id)
        next_seq = max((seq for seq, _ in rows), default=0) + 1
        self.trials = [Trial(i + 1, point, seq=seq) for i, (seq, point) in enumerate(rows[:self.budget])]
        if self.trials:
            self._say(f"{len(self.trials)} earlier trials of this search found: evaluating and telling them first")
        yield from self._evaluate(self.trials)
        num_workers = self.step.params["num_workers"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = make_optimizer(self.optimizer, self.space, self._seed(), self.budget, num_workers)
            for t in self.trials:
                opt.suggest(t.point)
                opt.tell(opt.ask(), self._loss(t))
        while len(self.trials) < self.budget:
            k = min(num_workers, self.budget - len(self.trials))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                asked = [opt.ask() for _ in range(k)]
            batch = [Trial(len(self.trials) + i + 1, {p: _plain(v) for p, v in c.value.items()}, seq=next_seq + i)
                     for i, c in enumerate(asked)]
            next_seq += k
            self.trials += batch
            yield from self._evaluate(batch)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for c, t in zip(asked, batch, strict=True):
                    opt.tell(c, self._loss(t))

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

    def _slots(self) -> int:
        others = len(self.running) - any(r is self.run for r in self.running.values())
        return max(1, min(self.step.params["num_workers"], self.r.jobs - others))

    def _move(self, t: Trial) -> bool:
        """Move a trial on as far as it goes without waiting; True once it is finished."""
        if t.status != "pending":
            return True
        while t.status == "pending":
            if t.run is not None:
                if t.run["proc"].poll() is None:
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
            try:
                step, prepared = self._stage(t)
            except ModelbuildError as e:
                t.status, t.error = "failed", str(e)
                break
            t.keys.append(prepared.key)
            cached = self.r._cached(prepared.key, repair=not planning)
            if cached is not None:
                t.paths.append(cached)
                t.stage += 1
                continue
            if planning:
                t.status = "to build"
                return True
            self.store.write_drv(prepared.key, prepared.drv)
            if sum(1 for x in self.trials if x.run) >= self._slots():
                return False
            t.run = self.r._launch(step, SimpleNamespace(path=None), prepared, mode="build")
            t.built = True
        self._finished(t)
        return True

    def _collect(self, t: Trial) -> None:
        result = self.r._read_result(t.run)
        self._cleanup(t.run)
        t.run = None
        if "error" in result and not result.get("kept"):
            t.status, t.error, t.interrupted = "failed", result["error"]["message"], bool(result.get("interrupted"))
            return
        t.paths.append(Path(result["path"]))
        t.stage += 1

    @staticmethod
    def _cleanup(run: dict) -> None:
        for f in (run["file"], Path(run["job"]["result"]), Path(run["job"]["progress"])):
            Path(f).unlink(missing_ok=True)

    def _stage(self, t: Trial):
        """The derivation of a trial's next build: the target with the point's params, or the objective
        step on the trial's artifact."""
        from .derivation import Input, resolve

        p = self.prepared
        if t.stage == 0:
            step = dataclasses.replace(self.target, params=trial_params(self.target, t.point, str(self.recipe.file)))
            names, prefix = list(self.target.inputs), "target."
        else:
            step, names, prefix = self.judge, [n for n, r in self.judge.inputs.items() if r != self.target.name], \
                "objective."
        inputs = {n: p.inputs[prefix + n] for n in names}
        if t.stage == 1:
            trial = t.paths[0]
            lineage = {"kind": "step", "step": self.target.name, "key": t.keys[0], "path": self.store.rel(trial),
                       "tune": self.step.name}
            for n, r in self.judge.inputs.items():
                if r == self.target.name:
                    inputs[n] = Input(trial, "step", trial.name.split("-", 1)[0], lineage, refs=(str(trial),))
        return step, resolve(step, inputs, self.recipe)

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
            _record(self.store, self.search_id, t.seq, t.point, t.keys[0] if t.keys else None, t.status)
        shown = f"{self.objective['metric']} {t.value:.6g}" if t.status == "ok" else t.error.splitlines()[0][:200]
        self._say(f"trial {t.number}/{self.budget} {what} ({shown})")
        failed = self.counts["failed"]
        if failed > self.step.params["max_failure_rate"] * self.budget:
            raise BuildError(f"step '{self.step.name}': {failed} of {self.budget} trials failed, more than "
                             f"max_failure_rate {self.step.params['max_failure_rate']} allows; the first: "
                             f"{next(x.error for x in self.trials if x.status == 'failed')}")

    def _progress(self, message: str) -> None:
        done = sum(1 for t in self.trials if t.status != "pending")
        Path(self.run["job"]["progress"]).write_text(json.dumps({"done": done, "total": self.budget,
                                                                 "message": message}))

    def _say(self, text: str) -> None:
        """A line in the build view (above the live table, or a plain line), and the progress detail."""
        line = f"tune {self.step.name}: {text}"
        self._progress(text)
        reporter = self.r.reporter
        if hasattr(reporter, "console"):
            reporter.console.print(line, markup=False, highlight=False)
        elif hasattr(reporter, "stream"):
            print(line, file=reporter.stream, flush=True)

    def _launch_final(self) -> None:
        """Hand the trials to an ordinary worker build of the tune step, which writes the artifact."""
        data = {"metric": self.objective["metric"], "mode": self.objective["mode"], "optimizer": self.optimizer,
                "budget": self.budget, "paths": sorted(self.space),
                "trials": [t.record(self.store) for t in self.trials],
                "errors": {t.number: t.error for t in self.trials if t.error},
                "facts": {"trials_built": self.counts["built"], "trials_cached": self.counts["cached"],
                          "trials_failed": self.counts["failed"]}}
        self.trials_file.write_text(json.dumps(data))
        final = self.prepared.with_files({"trials": self.trials_file},
                                         [str(path) for t in self.trials for path in t.paths])
        self.final = self.r._launch(self.step, self.st, final, mode=self.mode)
        Path(self.run["job"]["progress"]).unlink(missing_ok=True)
        self.run["job"], self.run["file"] = self.final["job"], self.final["file"]


def start_search(realiser, step, st, prepared, mode: str, running: dict) -> dict:
    """The realiser's entry: a run record (as `Realiser._launch` returns) whose `proc` is the search."""
    return Search(realiser, step, st, prepared, mode, running).start()


def describe(realiser, step, prepared) -> list[str]:
    """What `plan` says a tune step will do."""
    p = step.params
    search = Search(realiser, step, None, prepared, mode="plan")
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
    earlier = len(index_rows(realiser.store, search.search_id)[:search.budget])
    return [f"tune: {search.budget} trials of {step.builder.target_step.name} ({search.optimizer}, "
            f"{p['num_workers']} at a time), {what}: {earlier} earlier trials of this search are evaluated (from "
            f"the store) and told first, {search.budget - earlier} asked"]
