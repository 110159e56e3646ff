"""The training loop's params: declared, defaulted and checked in one place, without importing Lightning.

`train` and `finetune` take `LOOP_PARAMS` into their own params; `complete_loop_params` fills every default
(top level and nested) once, in the builders' `normalise`, so equal settings hash alike and `loop.fit` reads
the same values the key holds. The docs' param tables are generated from these declarations
(tests/unit/test_training_params.py keeps them equal), so the help below is the documentation.

Importing this module is cheap (no torch, no Lightning): recipes are checked with it before anything runs.
"""

from __future__ import annotations

import json
import math
import re

from ..builders.base import Param
from ..errors import RecipeError, did_you_mean

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
# finetune's options (modelbuild/training/pretrained.py)
LORA_DEFAULT = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": None, "merge": True}
SFT_DATA_DEFAULT = {"prompt": "instruction", "response": "response", "template": None}
# sft data keys that enter params (and the key) only when a recipe sets them, so existing keys stay
SFT_DATA_OPTIONAL = {"drop_incomplete": False}

# The params `loop.fit` reads; a builder that trains (train, finetune) includes them in its own params.
LOOP_PARAMS = {
    "seed": Param("int", default=0, help="combined with the recipe's `seed`: training uses "
                  "`(recipe_seed * 1000003 + seed) mod 2**32`"),
    "num_threads": Param("int", default=2, help="torch CPU threads; in the key, because another count changes "
                         "CPU results"),
    "deterministic": Param("bool", default=True, help="`torch.use_deterministic_algorithms` (with "
                           "`CUBLAS_WORKSPACE_CONFIG=:4096:8` on GPU)"),
    "batch_size": Param("int", default=64, help="samples per batch (per device under DDP)"),
    "optimizer": Param("dict", default=OPTIMIZER_DEFAULT, help="`adam` and `adamw` also take `betas`, `eps`; "
                       "`sgd` takes `momentum`, `nesterov`"),
    "scheduler": Param("dict", default=SCHEDULER_DEFAULT, help="`none`, `linear` (warmup, then linear decay to "
                       "0) or `cosine` (warmup, then cosine to 0), stepped per optimizer step; `none` with "
                       "`warmup_steps` warms up, then stays constant"),
    "trainer": Param("dict", default={"max_epochs": 10}, help="passed unchanged to `lightning.Trainer` "
                     "([below](#the-trainer-param))"),
    "early_stopping": Param("dict", help="`{monitor: val_loss, patience: 3, mode: min, min_delta: 0.0}`; any key "
                            "given fills the rest from these"),
    "checkpoint_every_n_steps": Param("int", default=50, help="how often a checkpoint is kept in the step's work "
                                      "area, to [resume](#resuming-a-killed-build) a killed build; `0`: never. Not in the key "
                                      "([why](#params-outside-the-key))"),
    "tolerance": Param("float", default=0.01, help="where bit-identity is not promised (GPU, `deterministic: "
                       "false`), the relative difference of each metric that `build --check` accepts"),
}

# Params that cannot change the trained model, its metrics or its logs: `train` and `finetune` declare them
# `unkeyed_params`, so they reach the loop but not the key, and changing one reuses the artifact. Where the
# checkpoints fall never changes the result (resuming is exact, tests/builders/test_train.py), and the model
# summary and the profiler only print. Left in the key, because they do change the artifact: `log_every_n_steps`
# (the rows of logs/metrics.csv), `num_sanity_val_steps` (validation before training), `num_threads` (CPU results).
UNKEYED_LOOP_PARAMS = ("checkpoint_every_n_steps", "trainer.enable_model_summary", "trainer.profiler")

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
    """Fill the nested defaults (optimizer, scheduler, early_stopping) so equal settings hash alike. The
    builders call it once, in `normalise`, after the top-level defaults; `loop.fit` reads its result as is."""
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
    check_mapping(scheduler, ("name", "warmup_steps"), "scheduler", fail)
    if scheduler["name"] not in SCHEDULERS:
        fail("scheduler.name", f"unknown scheduler {scheduler['name']!r}{did_you_mean(scheduler['name'], SCHEDULERS)};"
                               f" choose one of {', '.join(SCHEDULERS)}")
    if not isinstance(scheduler["warmup_steps"], int) or scheduler["warmup_steps"] < 0:
        fail("scheduler.warmup_steps", f"warmup_steps must be a whole number >= 0, got {scheduler['warmup_steps']!r}")
    stopping = params.get("early_stopping")
    if stopping is not None:
        check_mapping(stopping, tuple(EARLY_STOPPING_DEFAULT), "early_stopping", fail)
        if stopping["mode"] not in ("min", "max"):
            fail("early_stopping.mode", f"mode must be min or max, got {stopping['mode']!r}")
        if not isinstance(stopping["patience"], int) or stopping["patience"] < 1:
            fail("early_stopping.patience", f"patience must be a whole number >= 1, got {stopping['patience']!r}")


def check_epoch_batches(params: dict, samples: int, *, step: str) -> None:
    """Refuse an integer `trainer.val_check_interval` above the training batches of an epoch, once the data is
    read and before the model loads: Lightning refuses it only inside fit, after the model is loaded."""
    trainer = params.get("trainer") or {}
    interval = trainer.get("val_check_interval")
    if isinstance(interval, bool) or not isinstance(interval, int) or trainer.get("check_val_every_n_epoch", 1) is None \
            or trainer.get("limit_val_batches", 1.0) == 0:
        return
    batches, how = epoch_batches(trainer, samples, params["batch_size"])
    if interval > batches:
        raise RecipeError(f"val_check_interval is {interval} training batches, but an epoch has only {batches} "
                          f"({how}). Set trainer.val_check_interval to at most {batches}, or to a fraction of an "
                          f"epoch (0.5: twice per epoch), or set trainer.check_val_every_n_epoch: null to count "
                          f"the batches across epochs", step=step, key="params.trainer.val_check_interval")


def epoch_batches(trainer: dict, samples: int, batch_size: int) -> tuple[int, str]:
    """The training batches one process runs per epoch, as Lightning counts them, and how they come about."""
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    world = devices * nodes if all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                   for v in (devices, nodes)) else 1
    batches = math.ceil(math.ceil(samples / world) / batch_size)  # DistributedSampler pads, no drop_last
    how = f"{samples} training samples in batches of {batch_size}" + (f" over {world} processes" if world > 1 else "")
    limit = trainer.get("limit_train_batches")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit < batches:
        batches, how = limit, f"{how}, limit_train_batches {limit}"
    elif isinstance(limit, float) and limit < 1.0:
        batches, how = int(batches * limit), f"{how}, limit_train_batches {limit}"
    return batches, how


def check_mapping(given, known, section, fail) -> None:
    """`given` is a mapping whose keys are all in `known`, else `fail(key, message)` with a did-you-mean."""
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
    interval = trainer.get("val_check_interval")
    if isinstance(interval, float) and not 0.0 < interval <= 1.0 or isinstance(interval, int) and interval < 1:
        fail("trainer.val_check_interval", f"val_check_interval must be a fraction of an epoch above 0 and at most "
                                           f"1.0, or a whole number of training batches >= 1, got {interval!r}")
    if not any(trainer.get(k) not in (None, -1) for k in ("max_epochs", "max_steps", "fast_dev_run")):
        fail("trainer", "say how long to train: set trainer.max_epochs or trainer.max_steps")


def _check_optimizer(optimizer: dict, fail) -> None:
    name = optimizer.get("name")
    if name not in OPTIMIZERS:
        fail("optimizer.name", f"unknown optimizer {name!r}{did_you_mean(name, OPTIMIZERS)}; choose one of "
                               f"{', '.join(OPTIMIZERS)}")
    check_mapping(optimizer, ("name", *OPTIMIZERS[name]), "optimizer", fail)
    lr = optimizer.get("lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
        fail("optimizer.lr", f"lr must be a number above 0, got {lr!r}")


# ---- the docs' param tables, generated from the declarations --------------------------------------------
def _flow(value) -> str:
    """A value as YAML flow style, the way a recipe writes it: `{name: adamw, lr: 0.001}`."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w.-]*", value) and value not in ("null", "true", "false"):
        return value  # a plain word needs no quotes in YAML
    return json.dumps(value)  # null, true, numbers, "other strings"


def params_table(params: dict[str, Param]) -> str:
    """The markdown table of a builder's params: name, type, default, and the param's own help."""
    rows = ["| param | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, spec in params.items():
        default = "required" if spec.required else f"`{_flow(spec.default)}`"
        rows.append(f"| `{name}` | {spec.type} | {default} | {spec.help.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)

