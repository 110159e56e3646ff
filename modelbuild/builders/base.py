"""What every builder is: a name, declared params, the packages whose versions enter its key, and build().

A builder module must import no heavy library at module level: recipes are checked (`check`) before
anything runs, and the lineage CLI loads builders without paying for torch or pandas.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import RecipeError, did_you_mean

# Set by a builder while a library it calls (Lightning's DDP launcher) re-runs `python -m modelbuild.worker JOB`
# for extra ranks: the value is the pid of the worker that launched them. Such a worker process builds but never
# locks, logs to its own file or commits (see worker.main).
RANK_OF_ENV = "MODELBUILD_RANK_OF"



def launcher_rank() -> int:
    """This process's global rank in a job started outside modelbuild (torchrun, `srun` with several tasks,
    Lightning's NODE_RANK for other nodes), or 0. Each rank runs `modelbuild build`; rank 0 builds as usual,
    the others train beside it (see worker.run_job)."""
    import os

    env = os.environ
    if int(env.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in env:
        return int(env["RANK"])
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"])
    return int(env.get("NODE_RANK") or env.get("GROUP_RANK") or 0)


_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}


@dataclass(frozen=True)
class Param:
    """One declared param: type name ('str', 'int', 'float', 'bool', 'list', 'dict', 'any')."""

    type: str = "any"
    required: bool = False
    default: Any = None
    choices: tuple = ()
    help: str = ""
    omit: bool = False  # left out of params when the recipe does not set it, so adding it keeps existing keys

    def coerce(self, value, where: dict):
        """Return the value in its declared type (ints widen to floats), or raise a RecipeError."""
        if value is None and not self.required:
            return value
        if self.type == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        expected = _TYPES.get(self.type)
        if expected and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
            hint = " (quote it in the YAML to make it a string)" if self.type == "str" else ""
            raise RecipeError(f"expected a {self.type}, got {type(value).__name__} {value!r}{hint}; "
                              f"set it to a {self.type}" + (f": {self.help}" if self.help else ""), **where)
        if self.choices and value not in self.choices:
            raise RecipeError(f"{value!r} is not one of {', '.join(map(repr, self.choices))}"
                              f"{did_you_mean(value, self.choices)}", **where)
        return value


class Builder:
    """Base class. Subclasses set `name`, `params`, `env` and implement `build(ctx)`.

    Example::

        class Upper(Builder):
            name = "upper"
            params = {"column": Param("str", required=True)}

            def build(self, ctx):
                text = (ctx.inputs["data"] / "x.txt").read_text()
                (ctx.out / "x.txt").write_text(text.upper())
    """

    name: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    env: ClassVar[tuple[str, ...]] = ()  # distributions whose versions enter the key
    open_params: ClassVar[bool] = False  # accept params beyond the declared ones (e.g. `python`)
    # names users reach for that live inside a nested param: name -> its path (learning_rate -> optimizer.lr)
    param_hints: ClassVar[dict[str, str]] = {}
    uses_seed: ClassVar[bool] = False  # the recipe's seed reaches build() and so enters the key
    # params that cannot change the output, as dotted paths ('checkpoint_every_n_steps', 'trainer.profiler'):
    # build() receives them, the key does not, so changing one reuses the artifact (derivation.split_unkeyed).
    # Declare only what never reaches the artifact's bytes: a cache hit that should be a miss is the worst bug.
    unkeyed_params: ClassVar[tuple[str, ...]] = ()
    # the step runs jobs of its own before build() (tune's trials): the realiser calls start() instead of
    # submitting the step's job, and a step that takes this one as input receives stand_in()'s artifact
    runs_jobs: ClassVar[bool] = False
    # build() may be one rank of a distributed job launched outside modelbuild (torchrun, srun): on the other
    # ranks it runs without the lock and commits nothing (worker.run_job)
    distributed: ClassVar[bool] = False

    def normalise(self, params: dict, *, file: str | None, step: str) -> dict:
        """Check names and types, fill defaults. Cheap: no heavy imports."""
        out = {}
        for key in params:
            if key in self.param_hints and key not in self.params:
                parent, _, child = self.param_hints[key].partition(".")
                raise RecipeError(f"unknown param for builder '{self.name}' (did you mean "
                                  f"'{self.param_hints[key]}'?); write it as `{parent}: {{{child}: "
                                  f"{params[key]!r}}}`", file=file, step=step, key=f"params.{key}")
            if key not in self.params and not self.open_params:
                raise RecipeError(f"unknown param for builder '{self.name}'{did_you_mean(key, self.params)}; "
                                  f"it takes: {', '.join(sorted(self.params)) or 'no params'}",
                                  file=file, step=step, key=f"params.{key}")
        for key, spec in self.params.items():
            where = {"file": file, "step": step, "key": f"params.{key}"}
            if key not in params:
                if spec.required:
                    raise RecipeError(f"missing required param for builder '{self.name}'"
                                      f"{': ' + spec.help if spec.help else ''}", **where)
                if not spec.omit:
                    out[key] = spec.default
            else:
                out[key] = spec.coerce(params[key], where)
        for key, value in params.items():
            out.setdefault(key, value)
        self.check(out, file=file, step=step)
        return out

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        """Extra cheap validation across params; raise RecipeError."""

    def check_inputs(self, params: dict, inputs: dict, *, file: str | None, step: str) -> None:
        """Cheap validation of the step's inputs (name -> upstream step name or Source) against its params,
        before anything runs; raise RecipeError."""

    def check_steps(self, step, steps: dict, *, file: str | None) -> dict | None:
        """Checks that need the recipe's other steps (name -> Step), run once every step is read and before
        the build order is fixed; raise RecipeError. Returns the step's inputs where they come from other
        steps (tune takes its target's), else None."""
        return None

    def expand(self, step, steps: dict, *, file: str | None) -> dict:
        """Steps this step stands for beside itself (name -> Step), added to the recipe once every step is
        checked; the step may rewire its inputs to them (benchmark: one step per task). Raise RecipeError."""
        return {}

    def metric_names(self, params: dict) -> set[str] | None:
        """The names this builder may write into metrics.json for these params (a tune objective is checked
        against them), or None when it cannot say (then nothing is checked)."""
        return None

    def key_extras(self, params: dict, recipe_dir: Path) -> dict:
        """Content outside params that the output depends on (e.g. a user module's source)."""
        return {}

    def key_code(self, params: dict, recipe_dir: Path) -> dict[str, Path]:
        """{dotted field of the derivation: module file} for each code hash key_extras holds (a user module's
        closure): the lineage records its files one by one, so `diff` can say which changed."""
        return {}

    def build(self, ctx: BuildContext) -> None:
        raise NotImplementedError

    # ---- only for a builder with runs_jobs ------------------------------------------------------------------
    def start(self, realiser, step, job, expect: Path | None = None):
        """Begin the jobs that come before build() (an object with advance(), progress(), handles(), close();
        see modelbuild/tune.py's Search)."""
        raise NotImplementedError

    def describe(self, realiser, step, job) -> list[str]:
        """What `plan` says the step's own jobs will do."""
        return []

    def stand_in(self, store, path: Path) -> tuple[Path, str | None]:
        """The artifact (and key) a consumer of this step's artifact `path` receives instead."""
        return path, None

    def searched(self) -> list[str]:
        """The steps whose variants this one builds as its jobs (tune: its target and objective step): a build
        of the whole recipe builds them only where another step consumes them."""
        return []


@dataclass
class BuildContext:
    """Everything a build may use. Inputs are read-only store paths; write only under `out`."""

    step: str
    inputs: dict[str, Path]
    out: Path
    params: dict
    recipe_dir: Path
    seed: int = 0
    device: str = "cpu"
    work: Path | None = None  # scratch space that survives a killed build of this key (checkpoints)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("modelbuild.build"))
    progress_file: Path | None = None
    facts: dict = field(default_factory=dict)  # facts of this run for the lineage only: see record_facts
    live_logs: Path | None = None  # outside the artifact: live logs with real times (TensorBoard events)

    def input(self, name: str) -> Path:
        try:
            return self.inputs[name]
        except KeyError:
            from ..errors import BuildError
            raise BuildError(f"step '{self.step}' needs an input named '{name}'"
                             f"{did_you_mean(name, self.inputs)}; it has: {', '.join(self.inputs) or 'none'}. "
                             f"Add it under `inputs:` in the recipe") from None

    def progress(self, done: float, total: float | None = None, message: str = "", unit: str = "") -> None:
        """Report progress for the live build view (cheap; safe to call often). `unit` ('steps', 'rows', 'B')
        lets the view show a rate ('12.5 steps/s') beside the ETA."""
        if self.progress_file is not None:
            self.progress_file.write_text(json.dumps({"done": done, "total": total, "message": message,
                                                      "unit": unit}))

    def record_facts(self, facts: dict) -> None:
        """Facts of this run that are not results (wall time, throughput, peak memory, a resumed build):
        merged into the lineage's metrics (`show`, `diff`) but not written into the artifact, so that two
        builds that differ only in them have the same bytes and `build --check` compares results only."""
        self.facts.update(facts)

    def write_metrics(self, metrics: dict) -> None:
        """Merge values into out/metrics.json; they are copied into the artifact's lineage."""
        path = self.out / "metrics.json"
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(metrics)
        path.write_text(json.dumps(current, indent=2, sort_keys=True))


def check_input_names(builder: str, names, known, *, file: str | None, step: str) -> None:
    """Refuse an input a builder does not take, naming the ones it does (exit 2)."""
    for name in names:
        if name not in known:
            raise RecipeError(f"{builder} takes the inputs {', '.join(known)}, not '{name}'"
                              f"{did_you_mean(name, known)}", file=file, step=step, key=f"inputs.{name}")
