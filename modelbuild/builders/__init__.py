"""The builder registry: names to classes, imported only when a recipe uses them.

A recipe may also name its own builder class as `module:Class` (a `Builder` subclass importable from
the recipe's directory); its module source enters the key like a built-in's.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

from ..errors import RecipeError, did_you_mean
from .base import BuildContext, Builder, Param

BUILTIN = {
    "command": "modelbuild.builders.command:Command",
    "python": "modelbuild.builders.python:Python",
    "ingest": "modelbuild.builders.ingest:Ingest",
    "clean": "modelbuild.builders.clean:Clean",
    "validate": "modelbuild.builders.validate:Validate",
    "split": "modelbuild.builders.split:Split",
    "profile": "modelbuild.builders.profile:Profile",
    "tokenizer": "modelbuild.builders.tokenizer:Tokenizer",
    "train": "modelbuild.builders.train:Train",
    "finetune": "modelbuild.builders.finetune:Finetune",
    "evaluate": "modelbuild.builders.evaluate:Evaluate",
    "benchmark": "modelbuild.builders.benchmark:Benchmark",
    "benchmark-task": "modelbuild.builders.benchmark:BenchmarkTask",
    "tune": "modelbuild.builders.tune:Tune",
    "drift": "modelbuild.builders.drift:Drift",
    "decay": "modelbuild.builders.decay:Decay",
    "package": "modelbuild.builders.package:Package",
    "deploy": "modelbuild.builders.deploy:Deploy",
    "report": "modelbuild.builders.report:Report",
}

__all__ = ["BUILTIN", "BuildContext", "Builder", "Param", "load_builder", "builder_code_hash"]


def load_builder(name: str, *, recipe_dir: Path | None = None, file: str | None = None,
                 step: str | None = None) -> Builder:
    target = BUILTIN.get(name)
    if target is None and ":" not in name:
        raise RecipeError(f"unknown builder '{name}'{did_you_mean(name, BUILTIN)}; the built-in builders are "
                          f"{', '.join(sorted(BUILTIN))}, or name your own class as 'module:Class'",
                          file=file, step=step, key="builder")
    target = target or name
    module_name, _, cls_name = target.partition(":")
    if recipe_dir is not None and str(recipe_dir) not in sys.path:
        sys.path.insert(0, str(recipe_dir))
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise RecipeError(f"cannot load builder '{name}': {e}. Check the module is importable from "
                          f"{recipe_dir or 'the current directory'} and defines {cls_name}",
                          file=file, step=step, key="builder") from None
    if not (isinstance(cls, type) and issubclass(cls, Builder)):
        raise RecipeError(f"'{name}' is not a modelbuild Builder subclass", file=file, step=step, key="builder")
    return cls()


def builder_code_hash(builder: Builder) -> str:
    """Hash of the builder's module and the modelbuild modules it imports: editing any of them rebuilds
    what the builder built, and nothing else."""
    from ..codehash import PACKAGE_ROOT, package_code_hash, project_code
    path = Path(inspect.getsourcefile(type(builder))).resolve()
    if PACKAGE_ROOT in path.parents:
        return package_code_hash(str(path))
    return project_code(path, path.parent)["source"]  # a recipe's own builder class


def builder_code_record(builder: Builder) -> dict:
    """The files builder_code_hash covers, each with its digest (see codehash.code_record)."""
    from ..codehash import PACKAGE_ROOT, code_record
    path = Path(inspect.getsourcefile(type(builder))).resolve()
    return code_record(path, None if PACKAGE_ROOT in path.parents else path.parent)
