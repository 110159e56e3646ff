"""The task registry: task names to their classes, and `load_task` to make one for a step.

Kept apart from task.py (the `Task` contract that every task module imports), so that the registry may
import the task modules without an import cycle.
"""

from __future__ import annotations

from ..errors import BuildError, did_you_mean
from .task import Task

TASKS = {
    "tabular-classification": "modelbuild.training.tabular:TabularClassification",
    "tabular-regression": "modelbuild.training.tabular:TabularRegression",
    "causal-lm": "modelbuild.training.lm:CausalLM",
    "sequence-classification": "modelbuild.training.lm:SequenceClassification",
}


def load_task(name: str, ctx, params: dict) -> Task:
    if name not in TASKS:
        raise BuildError(f"step '{ctx.step}': unknown task {name!r}{did_you_mean(name, TASKS)}; "
                         f"the tasks are: {', '.join(TASKS)}")
    module_name, _, cls = TASKS[name].partition(":")
    return getattr(_task_module(module_name), cls)(ctx, params)


def _task_module(module_name: str):
    """The module of a task, imported by name rather than through importlib: a builder's key covers the
    modelbuild modules it imports, found statically, so every task's code must be visible from here."""
    if module_name == "modelbuild.training.tabular":
        from . import tabular
        return tabular
    if module_name == "modelbuild.training.lm":
        from . import lm
        return lm
    import importlib
    return importlib.import_module(module_name)
