"""Which lm-eval task a recipe names, where its data lies, and what of it enters the step's key.

A task is named three ways: a task shipped with modelbuild (`mb_arith`, `mb_mc`, `mb_instruct`: YAML and
JSONL in tasks/), a path to a task YAML of the recipe's own (relative to the recipe), or a task of lm-eval's
own registry (`hellaswag`, `arc_easy`, `mmlu`, ...), whose data must be in the Hugging Face datasets cache.
A YAML task's `data_files` are read relative to the YAML file, so the key holds their content.
Cheap: yaml and the standard library only.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from ..errors import DataValidationError, did_you_mean

BUNDLED_DIR = Path(__file__).parent / "tasks"
LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow")  # datasets builders that read `data_files`


class TaskProblem(ValueError):
    """A task name or file the recipe cannot use (the builder turns it into a RecipeError, exit 2)."""


@dataclass(frozen=True)
class TaskRef:
    spec: str  # as the recipe wrote it
    name: str  # lm-eval's task name
    yaml: Path | None = None  # None: a task of lm-eval's registry
    data: tuple[Path, ...] = ()  # local data files, absolute

    def config(self, config: dict) -> dict:
        """The task's config as lm-eval read it, with its data files made absolute (lm-eval's own loader reads
        them relative to the working directory)."""
        files = (config.get("dataset_kwargs") or {}).get("data_files")
        if files is not None:
            config["dataset_kwargs"]["data_files"] = _map_files(files, lambda f: str(self.yaml.parent / f))
        return config

    def key(self) -> dict:
        """What of the task enters the key: its YAML and data files' content (a registry task: its name,
        and lm-eval's version through the builder's env)."""
        from ..hashing import hash_bytes, hash_file

        if self.yaml is None:
            return {"registry": self.name}
        return {"yaml": hash_bytes(self.yaml.read_bytes()),
                "data": {str(p.relative_to(self.yaml.parent)) if p.is_relative_to(self.yaml.parent) else p.name:
                         hash_file(p) for p in self.data}}


def bundled() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.yaml"))}


def resolve(spec: str, recipe_dir: Path) -> TaskRef:
    """The task `spec` names, or a TaskProblem that says what is wrong and what would work."""
    if not isinstance(spec, str) or not spec:
        raise TaskProblem(f"a task is a name (e.g. mb_arith, hellaswag) or a path to a task YAML, got {spec!r}")
    if spec.endswith((".yaml", ".yml")) or "/" in spec:
        path = (Path(recipe_dir) / spec).resolve()
        if not path.is_file():
            raise TaskProblem(f"the task file {path} does not exist; give a path relative to the recipe "
                              f"({recipe_dir}), or a task name ({', '.join(bundled())}, or one of lm-eval's)")
        return _yaml_task(spec, path)
    if spec in bundled():
        return _yaml_task(spec, bundled()[spec])
    if spec in registry():
        return TaskRef(spec, spec)
    known = list(bundled()) + sorted(registry())
    raise TaskProblem(f"unknown task {spec!r}{did_you_mean(spec, known)}; modelbuild ships "
                      f"{', '.join(bundled())}, lm-eval {_lm_eval_version() or '(not installed)'} knows "
                      f"{len(registry())} more (`lm_eval ls tasks`), or give a path to a task YAML")


def _yaml_task(spec: str, path: Path) -> TaskRef:
    try:
        config = read_yaml(path)
    except (OSError, yaml.YAMLError) as e:
        raise TaskProblem(f"cannot read the task file {path}: {e}") from None
    name = config.get("task")
    if not isinstance(name, str) or not name:
        raise TaskProblem(f"the task file {path} has no `task:` name; an lm-eval task YAML names its task")
    data = []
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    for f in _flat(files) if files is not None else []:
        if "://" in f:
            raise TaskProblem(f"the task {name} ({path}) reads {f}, which is not a local file; modelbuild "
                              "scores offline: download the file and point `data_files` at it")
        p = (path.parent / f).resolve()
        if not p.is_file():
            raise TaskProblem(f"the data file {p} of task {name} ({path}) does not exist; `data_files` are read "
                              "relative to the task YAML")
        data.append(p)
    return TaskRef(spec, name, path, tuple(data))


class _Loader(yaml.SafeLoader):
    """Reads lm-eval YAMLs: their `!function module.name` tags are kept as text (lm-eval resolves them)."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix} {loader.construct_scalar(node)}")


def read_yaml(path: Path) -> dict:
    value = yaml.load(Path(path).read_text(), Loader=_Loader)
    return value if isinstance(value, dict) else {}


def _flat(files) -> list[str]:
    if isinstance(files, str):
        return [files]
    if isinstance(files, dict):
        return [f for v in files.values() for f in _flat(v)]
    return [f for v in files for f in _flat(v)]


def _map_files(files, fn):
    if isinstance(files, str):
        return fn(files)
    if isinstance(files, dict):
        return {k: _map_files(v, fn) for k, v in files.items()}
    return [_map_files(v, fn) for v in files]


# ---- lm-eval's registry, read from its YAML files without importing it ------------------------------------
_NAME = re.compile(r"^(?:task|group):\s*['\"]?([\w.\-]+)", re.MULTILINE)


@cache
def registry() -> frozenset[str]:
    """The task and group names of the installed lm-eval (a text scan: importing it costs seconds)."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    root = Path(next(iter(spec.submodule_search_locations))) / "tasks"
    names = set()
    for path in root.rglob("*.yaml"):
        try:
            names.update(_NAME.findall(path.read_text(errors="replace")))
        except OSError:
            continue
    return frozenset(names)


def _lm_eval_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm-eval")
    except PackageNotFoundError:
        return None


# ---- the data's rows, checked before a model loads -------------------------------------------------------
def check_rows(task: TaskRef) -> int:
    """Every row of the task's JSONL files has the fields its prompts name, and a multiple-choice `answer`
    is one of its `choices`; else a DataValidationError (exit 3) naming the file and line. Returns rows."""
    if task.yaml is None:
        return 0
    fields = template_fields(read_yaml(task.yaml))
    rows = 0
    for path in task.data:
        if path.suffix not in (".jsonl", ".json"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}, line {n}"
            try:
                row = json.loads(line)
            except ValueError as e:
                raise DataValidationError(f"{where}: not a JSON object ({e}); each line of a task's JSONL is one "
                                          "object") from None
            missing = [f for f in fields if not isinstance(row, dict) or row.get(f) is None]
            if missing:
                raise DataValidationError(f"{where}: the row has no {', '.join(map(repr, missing))}, which the "
                                          f"task {task.name}'s prompts use ({task.yaml.name}); add the field or "
                                          "remove the row")
            choices, answer = row.get("choices"), row.get("answer")
            if isinstance(choices, list) and isinstance(answer, str) and answer not in choices:
                raise DataValidationError(f"{where}: the answer {answer!r} is not one of its choices "
                                          f"{choices!r}; make it one of them, spelt the same")
            rows += 1
    return rows


def template_fields(config: dict) -> list[str]:
    """The document fields the task's Jinja prompts name (doc_to_text, doc_to_target, doc_to_choice)."""
    from jinja2 import Environment, meta

    env, fields = Environment(), set()
    for key in ("doc_to_text", "doc_to_target", "doc_to_choice"):
        text = config.get(key)
        if isinstance(text, str) and not text.startswith("!"):
            fields |= meta.find_undeclared_variables(env.parse(text))
    return sorted(fields)
