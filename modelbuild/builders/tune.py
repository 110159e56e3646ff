"""tune: search the params of another step; every trial is a derivation of that step, so trials are cached.

Example::

    tuned:
      builder: tune
      params:
        target: model                          # a step of the recipe; its inputs become the tune step's
        space:                                 # param paths of the target -> a dimension
          optimizer.lr: {log: [1.0e-4, 1.0e-1]}
          model.dropout: {uniform: [0.0, 0.5], points: 3}   # `points`: the values a grid takes
          batch_size: {int: [32, 256]}
          model.hidden: {choice: [[32], [64, 32]]}
        objective: {metric: val_accuracy, mode: max}        # or {step: evaluate, metric: accuracy, mode: max}
        optimizer: NGOpt                       # grid, random, or any Nevergrad optimizer
        budget: 20
    serve:
      builder: ...
      inputs: {model: tuned}                   # the best trial's artifact

The search (modelbuild/tune.py, begun by `start`) submits each trial as an ordinary job; this builder's build()
only writes the artifact from the finished trials: trials.json, trials.csv, best.json (which names the
best trial's artifact: an artifact holds no link to another, so it stays whole when checked) and
objective.png. See docs/tune.md.
"""

from __future__ import annotations

import csv
import json
import math
import re

from ..errors import RecipeError, did_you_mean
from ..tune import COMMON_NEVERGRAD, KINDS, OURS, Search, best_trial, describe, grid_size, set_path
from .base import Builder, Param

PATH_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
MAX_GRID = 100_000
SPACE_HELP = ("{log: [lo, hi]}, {uniform: [lo, hi]}, {int: [lo, hi]} (each with an optional `points: N` for a "
              "grid) or {choice: [a, b, ...]}")


class Tune(Builder):
    """Search a target step's params (see the module docstring and docs/tune.md)."""

    name = "tune"
    env = ("nevergrad", "numpy", "matplotlib")
    uses_seed = True
    runs_jobs = True  # the search's trials run (modelbuild/tune.py) before build() writes the artifact
    params = {
        "target": Param("str", required=True, help="the step whose params are searched"),
        "space": Param("dict", required=True, help=f"param path -> {SPACE_HELP}"),
        "objective": Param("any", required=True, help="{metric: NAME, mode: min|max, step: STEP}"),
        "optimizer": Param("str", default="NGOpt", help="grid, random, or a Nevergrad optimizer (NGOpt, BO, CMA, ...)"),
        "budget": Param("int", help="the number of trials (default for grid: the whole grid)"),
        "num_workers": Param("int", default=1, help="trials built at once (and asked at once)"),
        "seed": Param("int", default=0, help="the optimizer's seed"),
        "max_failure_rate": Param("float", default=0.5, help="the share of trials that may fail"),
    }
    target_step = None  # bound by check_steps
    objective_step = None

    def normalise(self, params: dict, *, file: str | None, step: str) -> dict:
        out = super().normalise(params, file=file, step=step)

        def fail(key, message):
            raise RecipeError(message, file=file, step=step, key=f"params.{key}")

        out["space"] = _space(out["space"], fail)
        out["objective"] = _objective(out["objective"], fail)
        _check_optimizer(out, fail)
        return out

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        def fail(key, message):
            raise RecipeError(message, file=file, step=step, key=f"params.{key}")

        if params["budget"] is not None and params["budget"] < 1:
            fail("budget", f"budget is the number of trials, at least 1; got {params['budget']}")
        if params["num_workers"] < 1:
            fail("num_workers", f"num_workers must be at least 1, got {params['num_workers']}")
        if params["seed"] < 0:
            fail("seed", f"seed must be 0 or more, got {params['seed']}")
        if not 0 <= params["max_failure_rate"] <= 1:
            fail("max_failure_rate", f"max_failure_rate is a share from 0 to 1, got {params['max_failure_rate']}")

    def check_steps(self, step, steps: dict, *, file: str | None) -> dict:
        """The target and objective step exist, the space fits the target's params, the metric is one the
        objective's builder writes; then the tune step takes the inputs of both."""
        def fail(key, message):
            raise RecipeError(message, file=file, step=step.name, key=key)

        params = step.params
        name = params["target"]
        if name not in steps or name == step.name:
            fail("params.target", f"the target '{name}' is not a step of this recipe"
                                  f"{did_you_mean(name, [s for s in steps if s != step.name])}; name the step whose "
                                  f"params to search, one of: {', '.join(s for s in steps if s != step.name)}")
        target = steps[name]
        if target.builder.runs_jobs:
            fail("params.target", f"the target '{name}' is a tune step itself; tune the step it targets instead")
        if step.inputs:
            fail("inputs", f"a tune step takes the inputs of its target '{name}' (and of its objective step); "
                           "remove `inputs:`")
        for path, spec in params["space"].items():
            _check_path(target, path, spec, file, fail)
        judge = None
        objective = params["objective"]
        if objective["step"] is not None:
            judge = _objective_step(objective["step"], step, target, steps, fail)
        scorer = judge or target
        names = scorer.builder.metric_names(scorer.params)
        if names is not None and objective["metric"] not in names:
            fail("params.objective.metric", f"step '{scorer.name}' (builder {scorer.builder_name}) does not write "
                                            f"a metric '{objective['metric']}'"
                                            f"{did_you_mean(objective['metric'], names)}; it writes: "
                                            f"{', '.join(sorted(names))}")
        self.target_step, self.objective_step = target, judge
        inputs = {f"target.{n}": r for n, r in target.inputs.items()}
        if judge is not None:
            inputs.update({f"objective.{n}": r for n, r in judge.inputs.items() if r != target.name})
        return inputs

    def key_extras(self, params: dict, recipe_dir) -> dict:
        """The target's (and objective step's) whole derivation but its inputs, which are the tune step's."""
        if self.target_step is None:
            return {}
        out = {"target": _template(self.target_step, recipe_dir)}
        if self.objective_step is not None:
            out["objective"] = _template(self.objective_step, recipe_dir)
        return out

    def metric_names(self, params: dict) -> set[str] | None:
        return {"best_objective", "trials", "failed"}

    def start(self, realiser, step, job, expect=None):
        """The search, submitting its trials to the realiser's executor (modelbuild/tune.py)."""
        return Search(realiser, step, job, expect, mode="check" if expect else "build")

    def describe(self, realiser, step, job) -> list[str]:
        return describe(realiser, step, job)

    def stand_in(self, store, path):
        """A tune step's consumers receive its best trial's artifact."""
        return best_trial(store, path)

    def searched(self) -> list[str]:
        return [s.name for s in (self.target_step, self.objective_step) if s is not None]

    def build(self, ctx) -> None:
        data = json.loads(ctx.input("trials").read_text())
        trials, metric, mode = data["trials"], data["metric"], data["mode"]
        for number, error in sorted(data.get("errors", {}).items(), key=lambda kv: int(kv[0])):
            ctx.log.info("trial %s failed: %s", number, error)
        ok = [t for t in trials if t["status"] == "ok"]
        best = min(ok, key=lambda t: (t["objective"] if mode == "min" else -t["objective"], t["number"]))
        _write_json(ctx.out / "trials.json", {"metric": metric, "mode": mode, "optimizer": data["optimizer"],
                                               "budget": data["budget"], "paths": data["paths"], "trials": trials,
                                               "repeats": data.get("repeats", [])})
        _write_csv(ctx.out / "trials.csv", trials, data["paths"])
        _write_json(ctx.out / "best.json", {"metric": metric, "mode": mode, "objective": best["objective"],
                                             "params": best["params"], "trial": best["number"], "key": best["key"],
                                             "digest": best["digest"], "path": best["path"]})
        _plot(ctx.out / "objective.png", trials, metric, mode, data["space"])
        ctx.write_metrics({"best_objective": best["objective"], "metric": metric, "trials": len(trials),
                           "failed": len(trials) - len(ok)})
        ctx.record_facts(data.get("facts", {}))
        ctx.log.info("best %s %s at trial %d: %s (%s)", metric, best["objective"], best["number"],
                     json.dumps(best["params"], sort_keys=True), best["path"])


# ---- recipe checks -------------------------------------------------------------------------------------------
def _space(space: dict, fail) -> dict:
    if not space:
        fail("space", f"the space is empty: map at least one param path of the target to {SPACE_HELP}, e.g. "
                      "`space: {optimizer.lr: {log: [1.0e-4, 1.0e-1]}}`")
    out = {}
    for path, spec in _flatten_space(space).items():
        key = f"space.{path}"
        if not isinstance(path, str) or not PATH_RE.match(path):
            fail(key, f"a space key is a param path of the target, as names joined by dots (optimizer.lr), "
                      f"got {path!r}")
        if not isinstance(spec, dict):
            fail(key, f"a dimension is a mapping, {SPACE_HELP}; got {spec!r}")
        kinds = [k for k in KINDS if k in spec]
        for k in spec:
            if k not in (*KINDS, "points"):
                fail(f"{key}.{k}", f"unknown key{did_you_mean(k, (*KINDS, 'points'))} in a dimension; it is "
                                   f"{SPACE_HELP}")
        if len(kinds) != 1:
            fail(key, f"a dimension has exactly one of {', '.join(KINDS)}, got {', '.join(kinds) or 'none'}")
        kind = kinds[0]
        if kind == "choice":
            if "points" in spec:
                fail(f"{key}.points", "`points:` is for ranges; a grid takes every choice")
            if not isinstance(spec["choice"], list) or not spec["choice"]:
                fail(f"{key}.choice", f"choice is a non-empty list of values, got {spec['choice']!r}")
            out[path] = {"choice": spec["choice"]}
            continue
        bounds = spec[kind]
        number = int if kind == "int" else (int, float)
        if (not isinstance(bounds, list) or len(bounds) != 2
                or any(isinstance(b, bool) or not isinstance(b, number) for b in bounds)):
            what = "whole numbers" if kind == "int" else "numbers"
            fail(f"{key}.{kind}", f"{kind} takes [lower, upper], two {what}; got {bounds!r}")
        lo, hi = bounds if kind == "int" else (float(bounds[0]), float(bounds[1]))
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            fail(f"{key}.{kind}", f"the lower bound must be below the upper one, got [{lo}, {hi}]")
        if kind == "log" and lo <= 0:
            fail(f"{key}.log", f"a log range is of numbers above 0, got [{lo}, {hi}]; use uniform for 0 or less")
        out[path] = {kind: [lo, hi]}
        if "points" in spec:
            n = spec["points"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                fail(f"{key}.points", f"points is the number of grid values, a whole number >= 1; got {n!r}")
            out[path]["points"] = n
    return out


def _flatten_space(space: dict, prefix: str = "") -> dict:
    """`{optimizer: {lr: {log: [...]}}}` is `{optimizer.lr: {log: [...]}}` (the nested form survives Hydra
    overrides, which read dots as nesting): a mapping without a dimension's keys is a level of the path."""
    out = {}
    for name, spec in space.items():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(spec, dict) and spec and not any(k in spec for k in (*KINDS, "points")):
            out.update(_flatten_space(spec, str(path)))
        else:
            out[path] = spec
    return out


def _objective(objective, fail) -> dict:
    if isinstance(objective, str):
        objective = {"metric": objective}
    if not isinstance(objective, dict):
        fail("objective", f"objective is {{metric: NAME, mode: min|max}} (and `step:` for a metric of a step "
                          f"downstream of the target), got {objective!r}")
    for k in objective:
        if k not in ("metric", "mode", "step"):
            fail(f"objective.{k}", f"unknown key{did_you_mean(k, ('metric', 'mode', 'step'))} in objective; it "
                                   "takes metric, mode (min or max) and step")
    out = {"metric": objective.get("metric"), "mode": objective.get("mode", "min"), "step": objective.get("step")}
    if not isinstance(out["metric"], str) or not out["metric"]:
        fail("objective.metric", "say which metric of metrics.json to optimise: `objective: {metric: val_loss}`")
    if out["mode"] not in ("min", "max"):
        fail("objective.mode", f"mode is min or max{did_you_mean(out['mode'], ('min', 'max'))}, got {out['mode']!r}")
    if out["step"] is not None and not isinstance(out["step"], str):
        fail("objective.step", f"objective.step names a step of the recipe, got {out['step']!r}")
    return out


def _check_optimizer(params: dict, fail) -> None:
    name, space = params["optimizer"], params["space"]
    if name == "grid":
        for path, spec in space.items():
            if ("log" in spec or "uniform" in spec) and "points" not in spec:
                kind = "log" if "log" in spec else "uniform"
                fail(f"space.{path}", f"a grid needs the number of values of a float range: write "
                                      f"`{{{kind}: {spec[kind]}, points: 4}}`")
        size = grid_size(space)
        if size > MAX_GRID:
            fail("space", f"the grid has {size} points, more than {MAX_GRID}; use fewer points, or random or a "
                          "Nevergrad optimizer with a budget")
        return
    if params["budget"] is None:
        fail("budget", f"optimizer {name} needs a budget: the number of trials, e.g. `budget: 20`")
    if name in OURS or name in COMMON_NEVERGRAD:
        return
    # only for a name not in the common list: importing nevergrad takes ~1.5 s
    from ..tune import nevergrad_names
    names = nevergrad_names()
    if name not in names:
        fail("optimizer", f"unknown optimizer {name!r}{did_you_mean(name, [*OURS, *names])}; use grid, random, "
                          f"a common Nevergrad optimizer ({', '.join(COMMON_NEVERGRAD)}) or any of the {len(names)} "
                          f"in nevergrad.optimizers.registry: {', '.join(names)}")


def _check_path(target, path: str, spec: dict, file, fail) -> None:
    """The path exists in the target's params (nested keys of a dict param are accepted, and left to the
    target's own checks), and the target's builder accepts the dimension's ends and choices."""
    key = f"params.space.{path}"
    builder = target.builder
    top, *rest = path.split(".")
    declared = builder.params.get(top)
    if declared is None and not builder.open_params:
        fail(key, f"step '{target.name}' (builder {target.builder_name}) has no param '{top}'"
                  f"{did_you_mean(top, builder.params)}; its params are: {', '.join(sorted(builder.params))}")
    if rest:
        node, seen = target.params, []
        for part in [top, *rest[:-1]]:
            node = node.get(part) if isinstance(node, dict) else None
            seen.append(part)
            if node is not None and not isinstance(node, dict):
                fail(key, f"params.{'.'.join(seen)} of step '{target.name}' is {json.dumps(node)}, not a mapping, "
                          f"so it has no '{path}'; search it whole: `{'.'.join(seen)}: {{choice: [...]}}`")
        if declared is not None and declared.type not in ("dict", "any") and not isinstance(
                target.params.get(top), dict):
            fail(key, f"param '{top}' of builder {target.builder_name} is a {declared.type}, not a mapping, so it "
                      f"has no '{path}'")
    kind = next(k for k in KINDS if k in spec)
    values = spec["choice"] if kind == "choice" else spec[kind]
    for value in values:
        try:
            builder.normalise(set_path(target.params, path, value), file=file, step=target.name)
        except RecipeError as e:
            bare = str(e).split(f"key '{e.key}': ", 1)[-1] if e.key else str(e)
            fail(key, f"step '{target.name}' refuses {path} = {json.dumps(value)}"
                      f"{' (at ' + e.key + ')' if e.key else ''}: {bare}")


def _objective_step(name: str, step, target, steps: dict, fail):
    others = [s for s in steps if s not in (step.name, target.name)]
    if name not in steps or name in (step.name, target.name):
        fail("params.objective.step", f"the objective step '{name}' is not a step of this recipe downstream of "
                                      f"'{target.name}'{did_you_mean(name, others)}; leave `step:` out to read the "
                                      "target's own metrics.json")
    judge = steps[name]
    if target.name not in judge.inputs.values():
        fail("params.objective.step", f"step '{name}' does not take '{target.name}' as an input, so it cannot "
                                      f"score its trials; name a step with `inputs: {{model: {target.name}}}`")
    stack, seen = [r for r in judge.inputs.values() if r != target.name], set()
    while stack:  # its other inputs must not depend on the target: they are built once, not per trial
        ref = stack.pop()
        if ref == target.name:
            fail("params.objective.step", f"step '{name}' reaches '{target.name}' through another input too; a "
                                          "trial replaces only its direct input")
        if ref not in seen and ref in steps:
            seen.add(ref)
            stack.extend(steps[ref].deps)
    return judge


def _template(step, recipe_dir) -> dict:
    from ..derivation import make_derivation
    drv = make_derivation(step, {}, recipe_dir, None)
    return {k: v for k, v in drv.items() if k not in ("inputs", "format", "seed")}


# ---- the artifact --------------------------------------------------------------------------------------------
def _write_json(path, value) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _write_csv(path, trials: list[dict], paths: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["trial", "status", "objective", *paths, "digest", "path"])
        for t in trials:
            w.writerow([t["number"], t["status"], "" if t["objective"] is None else repr(t["objective"]),
                        *(_cell(t["params"].get(p)) for p in paths), t.get("digest") or "", t.get("path") or ""])


def _cell(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _plot(path, trials: list[dict], metric: str, mode: str, space: dict) -> None:
    """The objective per trial with the best so far, then against each searched param (log ranges on a log
    axis, choices as categories), so a sweep shows where along each range the good trials lie. Agg without
    the Software tag, so the bytes are reproducible."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = sorted(space)
    fig, axes = plt.subplots(1, 1 + len(paths), figsize=(4.5 * (1 + len(paths)), 3.5), dpi=100, squeeze=False,
                             sharey=True)
    ok = [t for t in trials if t["status"] == "ok"]
    _plot_trials(axes[0][0], trials, ok, mode)
    axes[0][0].set_ylabel(metric)
    for ax, param in zip(axes[0][1:], paths, strict=True):
        _plot_param(ax, ok, param, space[param], mode)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def _plot_trials(ax, trials: list[dict], ok: list[dict], mode: str) -> None:
    xs, ys = [t["number"] for t in ok], [t["objective"] for t in ok]
    best, running = [], None
    for y in ys:
        running = y if running is None else (min if mode == "min" else max)(running, y)
        best.append(running)
    ax.scatter(xs, ys, s=14, color="#4c72b0", label="trial")
    ax.step(xs, best, where="post", color="#dd8452", label=f"best so far ({mode})")
    failed = [t["number"] for t in trials if t["status"] != "ok"]
    if failed and ys:
        top = max(ys) if mode == "min" else min(ys)
        ax.scatter(failed, [top] * len(failed), marker="x", color="#c44e52", label="failed")
    ax.set_xlabel("trial")
    ax.legend(loc="best", fontsize=8)


def _plot_param(ax, ok: list[dict], param: str, spec: dict, mode: str) -> None:
    """One dot per trial at its value of `param`; the best trial ringed."""
    values = [t["params"].get(param) for t in ok]
    if "choice" in spec:
        labels = [_cell(c) for c in spec["choice"]]
        xs = [labels.index(_cell(v)) if _cell(v) in labels else -1 for v in values]
        ax.set_xticks(range(len(labels)), labels, fontsize=8, rotation=20)
        ax.set_xlim(-0.5, len(labels) - 0.5)
    else:
        xs = values
        if "log" in spec:
            from matplotlib.ticker import NullFormatter
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
    ys = [t["objective"] for t in ok]
    ax.scatter(xs, ys, s=14, color="#4c72b0")
    if ok:
        i = (ys.index(min(ys)) if mode == "min" else ys.index(max(ys)))
        ax.scatter([xs[i]], [ys[i]], s=80, facecolors="none", edgecolors="#dd8452", label="best")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(param)
