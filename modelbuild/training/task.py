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

The LightningModule (`self.module`) logs `train_loss` every step and `val_loss` plus its task metrics
(e.g. `val_accuracy`) every validation epoch; `batch_size(batch)` and `tokens(batch)` let the loop
measure throughput without knowing the batch layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

TASKS = {
    "tabular-classification": "modelbuild.training.tabular:TabularClassification",
    "tabular-regression": "modelbuild.training.tabular:TabularRegression",
    "causal-lm": "modelbuild.training.lm:CausalLM",
    "sequence-classification": "modelbuild.training.lm:SequenceClassification",
}


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

    def batch_size(self, batch) -> int:
        """Samples in a batch (for samples/s)."""
        first = batch[0] if isinstance(batch, (list, tuple)) else next(iter(batch.values()))
        return len(first)

    def tokens(self, batch) -> int:
        """Tokens in a batch (for tokens/s); 0 for tasks without tokens."""
        return 0


def load_task(name: str, ctx, params: dict) -> Task:
    import importlib
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(ctx, params)
