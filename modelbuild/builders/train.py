"""train: fit a model with Lightning from recipe params; the artifact is the exported model.

Example::

    model:
      builder: train
      inputs: {data: splits}                 # a split (train/ + validation/) or one table
      params:
        task: tabular-classification
        data: {target: high_income}
        model: {hidden: [64, 32], dropout: 0.1}
        batch_size: 256
        optimizer: {name: adamw, lr: 0.003}
        trainer: {max_epochs: 5}

Params: `Train.params` below (the loop's own in modelbuild/training/params.py); all enter the key, with
every default filled in before hashing, nested ones included, so `optimizer: {lr: 0.001}` and
`optimizer: {name: adamw, lr: 0.001, weight_decay: 0.0}` are one key. docs/training.md's table is
generated from their help.

Inputs: `data` (required), `tokenizer` and `model` (a pretrained model artifact) for the tasks that use them.

Artifact: the task's export (tabular: `model.safetensors`, `config.json`; language models: a
`save_pretrained` folder), `metrics.json` (results: losses, task metrics, steps, epochs, seed, device,
precision, num_threads, reproducibility, and `tolerance` where it applies) and `logs/` (`metrics.csv`,
one row per logged step and per validation, and TensorBoard events in `logs/tensorboard/` when
tensorboard is installed), all byte-identical across CPU rebuilds. Facts of the run (wall_seconds,
fit_seconds, samples_per_second, tokens_per_second, peak_memory_mb, resumed_from_step) go into the
lineage only (`modelbuild show`). See modelbuild/training/loop.py for how training runs.
"""

from __future__ import annotations

from ..errors import RecipeError, did_you_mean
from ..training.params import (
    LOOP_PARAMS,
    TABULAR_DATA_KEYS,
    TABULAR_MODEL_DEFAULTS,
    UNKEYED_LOOP_PARAMS,
    check_loop_params,
    check_mapping,
    complete_loop_params,
    loop_metric_names,
)
from ..training.tasks import TASKS
from .base import Builder, Param


class Train(Builder):
    """Train a model (a task from modelbuild.training.tasks.TASKS) with Lightning."""

    name = "train"
    env = ("torch", "lightning", "numpy", "safetensors", "transformers", "tokenizers", "pyarrow", "tensorboard", "onnx")
    uses_seed = True
    distributed = True
    unkeyed_params = UNKEYED_LOOP_PARAMS
    params = {
        "task": Param("str", required=True, help=", ".join(f"`{t}`" for t in TASKS)),
        "model": Param("dict", default={}, help="the task's model options ([tasks](#tasks-of-train))"),
        "data": Param("dict", default={}, help="the task's data options, e.g. `{target: label}`"),
        **LOOP_PARAMS,
    }

    def normalise(self, params: dict, *, file: str | None, step: str) -> dict:
        out = super().normalise(params, file=file, step=step)
        return complete_loop_params(out)

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        params = complete_loop_params(params)
        if params["task"] not in TASKS:
            raise RecipeError(f"unknown task {params['task']!r}{did_you_mean(params['task'], TASKS)}; the tasks "
                              f"are: {', '.join(TASKS)}", file=file, step=step, key="params.task")
        if params["task"].startswith("tabular-"):
            _check_tabular(params, file=file, step=step)
        else:
            from ..training.lm import check_model_params
            check_model_params(params["task"], params["model"], params["data"], file=file, step=step)
        check_loop_params(params, file=file, step=step)

    def metric_names(self, params: dict) -> set[str] | None:
        return loop_metric_names(params["task"], params)

    def build(self, ctx) -> None:
        from ..training import loop
        from ..training.tasks import load_task

        loop.fit(ctx, load_task(ctx.params["task"], ctx, ctx.params), ctx.params)


def _check_tabular(params: dict, *, file: str | None, step: str) -> None:
    def fail(key, message):
        raise RecipeError(message, file=file, step=step, key=f"params.{key}")

    data, model = params["data"] or {}, params["model"] or {}
    check_mapping(data, TABULAR_DATA_KEYS, "data", fail)
    check_mapping(model, tuple(TABULAR_MODEL_DEFAULTS), "model", fail)
    if not isinstance(data.get("target"), str):
        fail("data.target", "say which column to predict: `data: {target: <column>}`")
    for key in ("features", "categorical", "drop"):
        value = data.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            fail(f"data.{key}", f"data.{key} must be a list of column names, got {value!r}")
    hidden = model.get("hidden", TABULAR_MODEL_DEFAULTS["hidden"])
    if not isinstance(hidden, list) or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0
                                               for h in hidden):
        fail("model.hidden", f"hidden must be a list of layer sizes (whole numbers > 0), got {hidden!r}")
    dropout = model.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        fail("model.dropout", f"dropout must be a number from 0 up to 1, got {dropout!r}")
    for key in ("embedding_dim", "max_categories"):
        value = model.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            fail(f"model.{key}", f"{key} must be a whole number >= 1, got {value!r}")
