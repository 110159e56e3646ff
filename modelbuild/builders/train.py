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

Params (all enter the key; the defaults are filled in before hashing, nested ones included, so
`optimizer: {lr: 0.001}` and `optimizer: {name: adamw, lr: 0.001, weight_decay: 0.0}` are one key):

| param | default | meaning |
| --- | --- | --- |
| `task` | required | tabular-classification, tabular-regression, causal-lm, sequence-classification |
| `model` | `{}` | the task's model options (tabular: `hidden`, `dropout`, `embedding_dim`) |
| `data` | `{}` | the task's data options (tabular: `target`, `features`, `categorical`, `drop`) |
| `seed` | `0` | combined with the recipe's seed: `(recipe_seed * 1000003 + seed) mod 2**32` |
| `num_threads` | `2` | torch CPU threads; in the key because another count changes CPU results |
| `deterministic` | `true` | `torch.use_deterministic_algorithms` (and the cuBLAS workspace setting) |
| `batch_size` | `64` | samples per batch (per device under DDP) |
| `optimizer` | `{name: adamw, lr: 0.001, weight_decay: 0.0}` | adam/adamw also take `betas`, `eps`; sgd takes `momentum`, `nesterov` |
| `scheduler` | `{name: none, warmup_steps: 0}` | `none`, `linear` (warmup, then linear decay to 0) or `cosine` (warmup, then cosine to 0), stepped per optimizer step |
| `trainer` | `{max_epochs: 10}` | passed unchanged to `lightning.Trainer`: max_epochs, max_steps, precision, accelerator, devices, strategy, num_nodes, accumulate_grad_batches, gradient_clip_val, val_check_interval, limit_*_batches, log_every_n_steps, ... Key names are checked; one of max_epochs, max_steps must be set; `strategy: ddp` runs the other ranks as workers of the build (ddp_spawn and ddp_fork are refused) |
| `early_stopping` | `null` | `{monitor: val_loss, patience: 3, mode: min, min_delta: 0.0}` |
| `checkpoint_every_n_steps` | `50` | how often a checkpoint is kept in the step's work area for resuming a killed build; 0: never |
| `tolerance` | `0.01` | where bit-identity is not promised (GPU, `deterministic: false`), the relative difference of each metric that `build --check` accepts |

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
from .base import Builder, Param

# lightning.Trainer's parameters (2.6), kept here so that recipes are checked without importing lightning.
TRAINER_KEYS = (
    "accelerator", "strategy", "devices", "num_nodes", "precision", "fast_dev_run", "max_epochs", "min_epochs",
    "max_steps", "min_steps", "limit_train_batches", "limit_val_batches", "limit_test_batches",
    "limit_predict_batches", "overfit_batches", "val_check_interval", "check_val_every_n_epoch",
    "num_sanity_val_steps", "log_every_n_steps", "enable_model_summary", "accumulate_grad_batches",
    "gradient_clip_val", "gradient_clip_algorithm", "benchmark", "inference_mode", "use_distributed_sampler",
    "profiler", "detect_anomaly", "sync_batchnorm", "reload_dataloaders_every_n_epochs", "enable_autolog_hparams",
)
# Trainer parameters the loop sets itself, and why a recipe may not.
TRAINER_OWNED = {
    "logger": "the loop logs to logs/metrics.csv and TensorBoard itself",
    "callbacks": "the loop adds its own; use `early_stopping:` for early stopping",
    "enable_checkpointing": "set `checkpoint_every_n_steps:` (0 disables checkpoints)",
    "enable_progress_bar": "progress goes to the build view and the step log",
    "default_root_dir": "files go to the artifact and the step's work area",
    "deterministic": "set `deterministic:` at the step level",
    "plugins": "the loop installs its checkpoint plugin",
    "barebones": "it turns off the logging and checkpoints the loop relies on",
    "max_time": "a time limit makes the result depend on the machine's speed; use max_steps or max_epochs",
    "model_registry": "artifacts live in the store",
}
SPAWNING = ("spawn", "fork", "notebook")  # ddp_spawn, ddp_fork, ddp_notebook (and their find_unused variants)
OPTIMIZERS = {"adam": ("lr", "weight_decay", "betas", "eps"), "adamw": ("lr", "weight_decay", "betas", "eps"),
              "sgd": ("lr", "weight_decay", "momentum", "nesterov")}
OPTIMIZER_DEFAULT = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0}
SCHEDULERS = ("none", "linear", "cosine")
SCHEDULER_DEFAULT = {"name": "none", "warmup_steps": 0}
EARLY_STOPPING_DEFAULT = {"monitor": "val_loss", "patience": 3, "mode": "min", "min_delta": 0.0}
# The tabular tasks' options (modelbuild/training/tabular.py), here so that recipes are checked cheaply.
TABULAR_MODEL_DEFAULTS = {"hidden": [64, 32], "dropout": 0.1, "embedding_dim": None, "max_categories": 1000}
TABULAR_DATA_KEYS = ("target", "features", "categorical", "drop")

# The params `loop.fit` reads; a builder that trains (train, finetune) includes them in its own params.
LOOP_PARAMS = {
    "seed": Param("int", default=0, help="combined with the recipe's seed"),
    "num_threads": Param("int", default=2, help="torch CPU threads (another count changes CPU results)"),
    "deterministic": Param("bool", default=True, help="use deterministic algorithms"),
    "batch_size": Param("int", default=64, help="samples per batch"),
    "optimizer": Param("dict", default=OPTIMIZER_DEFAULT, help="{name: adam|adamw|sgd, lr, weight_decay, ...}"),
    "scheduler": Param("dict", default=SCHEDULER_DEFAULT, help="{name: none|linear|cosine, warmup_steps}"),
    "trainer": Param("dict", default={"max_epochs": 10}, help="lightning.Trainer arguments, passed unchanged"),
    "early_stopping": Param("dict", help="{monitor, patience, mode, min_delta}"),
    "checkpoint_every_n_steps": Param("int", default=50, help="keep a checkpoint for resuming every N steps"),
    "tolerance": Param("float", default=0.01, help="relative metric tolerance for `build --check` off CPU"),
}


class Train(Builder):
    """Train a model (a task from modelbuild.training.task.TASKS) with Lightning."""

    name = "train"
    env = ("torch", "lightning", "numpy", "safetensors", "transformers", "tokenizers", "pyarrow", "tensorboard")
    uses_seed = True
    distributed = True
    params = {
        "task": Param("str", required=True, help="one of " + ", ".join(
            ("tabular-classification", "tabular-regression", "causal-lm", "sequence-classification"))),
        "model": Param("dict", default={}, help="the task's model options"),
        "data": Param("dict", default={}, help="the task's data options, e.g. {target: label}"),
        **LOOP_PARAMS,
    }

    def normalise(self, params: dict, *, file: str | None, step: str) -> dict:
        out = super().normalise(params, file=file, step=step)
        return complete_loop_params(out)

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        from ..training.task import TASKS

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
        from ..training.task import load_task

        loop.fit(ctx, load_task(ctx.params["task"], ctx, ctx.params), ctx.params)


# What each task logs on the validation set (modelbuild/training/tabular.py, lm.py, pretrained.py); the val_ ones
# are in metrics.json only when the step has validation data.
TASK_METRICS = {
    "tabular-classification": ("val_loss", "val_accuracy", "val_f1"),
    "tabular-regression": ("val_loss", "val_mae", "val_rmse"),
    "causal-lm": ("val_loss", "val_perplexity", "tokens"),
    "sft": ("val_loss", "val_perplexity", "val_accuracy", "tokens"),
    "sequence-classification": ("val_loss", "val_accuracy", "val_f1", "tokens"),
}


def loop_metric_names(task: str, params: dict) -> set[str] | None:
    """The names loop._metrics writes into metrics.json for a task (None for a task not listed here)."""
    if task not in TASK_METRICS:
        return None
    names = {"train_loss", "steps", "epochs", "samples", "seed", "num_threads", "device", "precision",
             "world_size", "deterministic", "reproducibility", "tolerance", *TASK_METRICS[task]}
    if params.get("early_stopping"):
        names.add("stopped_early")
    return names


def complete_loop_params(params: dict) -> dict:
    """Fill the nested defaults (optimizer, scheduler, early_stopping) so equal settings hash alike."""
    out = dict(params)
    if isinstance(out.get("optimizer"), dict):
        out["optimizer"] = {**OPTIMIZER_DEFAULT, **out["optimizer"]}
    if isinstance(out.get("scheduler"), dict):
        out["scheduler"] = {**SCHEDULER_DEFAULT, **out["scheduler"]}
    elif out.get("scheduler") is None:
        out["scheduler"] = dict(SCHEDULER_DEFAULT)
    if isinstance(out.get("early_stopping"), dict):
        out["early_stopping"] = {**EARLY_STOPPING_DEFAULT, **out["early_stopping"]}
    for key in ("lr", "weight_decay"):
        if isinstance(out.get("optimizer", {}).get(key), int) and not isinstance(out["optimizer"][key], bool):
            out["optimizer"][key] = float(out["optimizer"][key])
    return out


def check_loop_params(params: dict, *, file: str | None, step: str) -> None:
    """Cheap checks of the loop's params (no lightning import): trainer key names, optimizer, scheduler."""
    def fail(key, message):
        raise RecipeError(message, file=file, step=step, key=f"params.{key}")

    for key, low in (("num_threads", 1), ("batch_size", 1), ("checkpoint_every_n_steps", 0), ("seed", 0)):
        if params.get(key) is not None and params[key] < low:
            fail(key, f"{key} must be at least {low}, got {params[key]}")
    if (params.get("tolerance") or 0) < 0:
        fail("tolerance", f"tolerance must be 0 or more, got {params['tolerance']}")
    _check_trainer(params.get("trainer") or {}, fail)
    _check_optimizer(params.get("optimizer") or {}, fail)
    scheduler = params.get("scheduler") or SCHEDULER_DEFAULT
    _check_mapping(scheduler, ("name", "warmup_steps"), "scheduler", fail)
    if scheduler["name"] not in SCHEDULERS:
        fail("scheduler.name", f"unknown scheduler {scheduler['name']!r}{did_you_mean(scheduler['name'], SCHEDULERS)};"
                               f" choose one of {', '.join(SCHEDULERS)}")
    if not isinstance(scheduler["warmup_steps"], int) or scheduler["warmup_steps"] < 0:
        fail("scheduler.warmup_steps", f"warmup_steps must be a whole number >= 0, got {scheduler['warmup_steps']!r}")
    stopping = params.get("early_stopping")
    if stopping is not None:
        _check_mapping(stopping, tuple(EARLY_STOPPING_DEFAULT), "early_stopping", fail)
        if stopping["mode"] not in ("min", "max"):
            fail("early_stopping.mode", f"mode must be min or max, got {stopping['mode']!r}")
        if not isinstance(stopping["patience"], int) or stopping["patience"] < 1:
            fail("early_stopping.patience", f"patience must be a whole number >= 1, got {stopping['patience']!r}")


def _check_tabular(params: dict, *, file: str | None, step: str) -> None:
    def fail(key, message):
        raise RecipeError(message, file=file, step=step, key=f"params.{key}")

    data, model = params["data"] or {}, params["model"] or {}
    _check_mapping(data, TABULAR_DATA_KEYS, "data", fail)
    _check_mapping(model, tuple(TABULAR_MODEL_DEFAULTS), "model", fail)
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


def _check_mapping(given, known, section, fail) -> None:
    if not isinstance(given, dict):
        fail(section, f"{section} must be a mapping, got {given!r}")
    for key in given:
        if key not in known:
            fail(f"{section}.{key}", f"unknown key {key!r} in {section}{did_you_mean(key, known)}; "
                                     f"it takes: {', '.join(known)}")


def _check_trainer(trainer: dict, fail) -> None:
    for key in trainer:
        if key in TRAINER_OWNED:
            fail(f"trainer.{key}", f"trainer.{key} is set by modelbuild: {TRAINER_OWNED[key]}")
        if key not in TRAINER_KEYS:
            fail(f"trainer.{key}", f"unknown lightning.Trainer argument {key!r}{did_you_mean(key, TRAINER_KEYS)}; "
                                   f"it takes: {', '.join(TRAINER_KEYS)}")
    strategy = trainer.get("strategy")
    if isinstance(strategy, str) and strategy.startswith("ddp_") and strategy.split("_")[1] in SPAWNING:
        fail("trainer.strategy", f"strategy {strategy!r} trains in processes it spawns, where the loop's "
                                 f"logging and counters cannot follow; use `strategy: ddp`, which runs every "
                                 f"rank as a worker of this build")
    if not any(trainer.get(k) not in (None, -1) for k in ("max_epochs", "max_steps", "fast_dev_run")):
        fail("trainer", "say how long to train: set trainer.max_epochs or trainer.max_steps")


def _check_optimizer(optimizer: dict, fail) -> None:
    name = optimizer.get("name")
    if name not in OPTIMIZERS:
        fail("optimizer.name", f"unknown optimizer {name!r}{did_you_mean(name, OPTIMIZERS)}; choose one of "
                               f"{', '.join(OPTIMIZERS)}")
    _check_mapping(optimizer, ("name", *OPTIMIZERS[name]), "optimizer", fail)
    lr = optimizer.get("lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
        fail("optimizer.lr", f"lr must be a number above 0, got {lr!r}")
