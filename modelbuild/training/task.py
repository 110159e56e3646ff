"""The contract between a model family (a task) and the training loop.

A task is built from the step's context and params, then handed to `loop.fit`. The loop owns the
Trainer, seeding, logging, checkpoints and metrics.json; the task owns data, model and export.

    class MyTask(Task):
        name = "tabular-classification"

        def setup(self):                      # read ctx.inputs, build datasets and self.module
            ...
        def train_dataloader(self): ...
        def val_dataloader(self): ...         # None: no validation
        def export(self, out):                # the artifact: save_pretrained layout, safetensors, no pickle
            ...

    task = load_task(params["task"], ctx, params)
    metrics = loop.fit(ctx, task, params)     # seeds, then task.setup(), trains, task.export(ctx.out)

The LightningModule (`self.module`) logs `train_loss` every step and `val_loss` plus its task metrics
(e.g. `val_accuracy`) every validation epoch; `batch_size(batch)` and `tokens(batch)` let the loop
measure throughput without knowing the batch layout.

The rules, in detail (this docstring is the contract; changes are listed at the end):

- `params` is the step's whole completed params dict: the task's own `model:` and `data:` mappings plus
  the loop's params (`seed`, `batch_size`, `optimizer`, `trainer`, ...; see `LOOP_PARAMS` in
  modelbuild/training/params.py). A builder that trains (train, finetune) takes `LOOP_PARAMS` into its own
  `params` and calls `check_loop_params` from its `check()`.
- **Do not call `setup()` yourself.** `loop.fit` seeds every generator first and then calls `setup()`
  (only if `self.module` is still None), so weight initialisation is reproducible. `setup()` validates
  `model:`/`data:` (`check_keys` gives the standard error) and raises `BuildError` for bad data (a missing
  column, one class, a tokenizer that does not fit): messages name the step (`self.ctx.step`) and the fix.
- `setup()` reads the data before it loads or builds the model, and calls `self.check_epoch(samples)` in
  between, so that a setting the data cannot satisfy fails before the slow part.
- `train_dataloader()` returns a `torch.utils.data.DataLoader` with `shuffle=True` (or False) and
  `num_workers=0` unless loading is the bottleneck. In a single-process run the loop replaces its
  Random/SequentialSampler with one whose order is a function of (seed, epoch) and that can start mid-epoch,
  so a build resumed from a checkpoint sees exactly the batches an uninterrupted one would. A custom
  `sampler`/`batch_sampler` is kept as given (resuming is then exact only at epoch boundaries). Under DDP
  Lightning's DistributedSampler takes over, as usual.
- The loop reseeds torch's global generator before every training batch from (seed, epoch, batch, rank),
  so dropout and other randomness inside `training_step` needs nothing more to be reproducible and resumable.
  Randomness elsewhere (dataloader workers, numpy in a collate_fn) must be seeded by the task.
- Optimizer and scheduler: unless the module defines `configure_optimizers` itself, the loop installs one
  built from `params["optimizer"]` and `params["scheduler"]` over the parameters with `requires_grad`
  (so LoRA adapters train and frozen weights do not).
- Logging: `self.log("train_loss", loss)` in `training_step` (`on_epoch=True` is recommended: the final
  `train_loss` in metrics.json is then the last epoch's mean); `self.log("val_loss", ...)` and
  `self.log("val_<metric>", ...)` for validation. Every `val_*` value left in `trainer.callback_metrics`
  after fit goes into metrics.json. Under DDP, reduce before logging (`sync_dist=True`, or sum counts
  with `self.trainer.strategy.reduce`) so every rank logs the same number.
- `export(out)` writes the model only (weights as safetensors, config, tokenizer; never pickle); it
  is called on global rank 0 only. `metrics.json` and `logs/` in `out` belong to the loop. Everything written
  must be byte-identical for identical weights: sorted JSON keys, no timestamps, no absolute paths.
- `train_validation_tables(ctx)` finds the train and validation tables of the `data` input (a table
  artifact, or a split artifact with train/ and validation/).

Changes since the first version: `load_task` (now in tasks.py, the registry) imports task modules by name
(so a builder's key covers their code), `check_keys`, `train_validation_tables`, `check_epoch`, and the rules
above.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..errors import BuildError, did_you_mean


class Task:
    name: ClassVar[str] = ""

    def __init__(self, ctx, params: dict):
        self.ctx, self.params = ctx, params
        self.module: Any = None  # a lightning.LightningModule, set by setup()

    def setup(self) -> None:
        raise NotImplementedError

    def train_dataloader(self):
        raise NotImplementedError

    def val_dataloader(self):
        return None

    def export(self, out: Path) -> None:
        raise NotImplementedError

    def check_epoch(self, samples: int) -> None:
        """Call from `setup()` once the training samples are counted and before the model is loaded: trainer
        settings that cannot fit that many samples (`val_check_interval`) then fail in a second, not after
        the model has loaded. The loop checks again after `setup()`, for a task that does not call it."""
        from .params import check_epoch_batches

        check_epoch_batches(self.params, samples, step=self.ctx.step)

    def batch_size(self, batch) -> int:
        """Samples in a batch (for samples/s)."""
        first = batch[0] if isinstance(batch, (list, tuple)) else next(iter(batch.values()))
        return len(first)

    def tokens(self, batch) -> int:
        """Tokens in a batch (for tokens/s); 0 for tasks without tokens."""
        return 0


def check_keys(step: str, section: str, given: dict, known) -> None:
    """Refuse keys of `model:` or `data:` (`section`) that the task does not know, with a did-you-mean."""
    if not isinstance(given, dict):
        raise BuildError(f"step '{step}': params.{section} must be a mapping, got {given!r}")
    for key in given:
        if key not in known:
            raise BuildError(f"step '{step}': unknown key params.{section}.{key}{did_you_mean(key, known)}; "
                             f"this task takes: {', '.join(sorted(known)) or 'nothing'}")


def train_validation_tables(ctx, name: str = "data") -> tuple[Path, Path | None]:
    """(train table, validation table or None) of input `name`: a split artifact's train/ and validation/,
    or one table artifact, which is all training data."""
    from ..table import DATA

    root = Path(ctx.input(name))
    if (root / DATA).is_file():
        return root, None
    if (root / "train" / DATA).is_file():
        validation = root / "validation"
        return root / "train", validation if (validation / DATA).is_file() else None
    inner = sorted(p.name for p in root.iterdir() if (p / DATA).is_file()) if root.is_dir() else []
    raise BuildError(f"step '{ctx.step}': input {name} ({root}) is neither a table artifact nor a split with a "
                     f"train/ table (it holds: {', '.join(inner) or 'no tables'}). Give it an ingest or split step")
