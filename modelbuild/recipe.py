"""Recipes: YAML composed with Hydra/OmegaConf, checked completely before anything runs.

Loading is tiered for a fast CLI: plain YAML when the file uses no interpolation, no `defaults:` and no
overrides; OmegaConf when it interpolates; Hydra's compose API when it has a defaults list or overrides.
All three read numbers the same way (`1e-3` is a float, as in OmegaConf's YAML loader).
"""

from __future__ import annotations

import operator
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .builders import Builder, load_builder
from .errors import RecipeError, UsageError, did_you_mean

RECIPE_KEYS = ("name", "description", "defaults", "seed", "steps", "vars")
STEP_KEYS = ("builder", "params", "inputs", "resources", "description")
SOURCE_KINDS = ("path", "pypi", "dvc", "tag", "artifact", "log")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# Limits that keep a hostile or careless recipe from hanging or exhausting the machine (docs/recipes.md#limits).
MAX_RECIPE_BYTES = 1 << 20  # a recipe file, and the text its interpolations may add
MAX_DEPTH = 100  # nesting of lists and mappings; canonical JSON and OmegaConf recurse once per level
MAX_EXPANSION = 100_000  # values that aliases (*name, <<: *name), or interpolations, may add as copies
TOO_DEEP = f"lists and mappings nested more than {MAX_DEPTH} deep (the limit, MAX_DEPTH); write the value flatter"


class YAMLLimit(yaml.MarkedYAMLError):
    """YAML that parses but is refused (a limit, an odd key or tag); `problem` already says how to fix it."""


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when present: 10x faster
    """SafeLoader that reads 1e-3 as a float and refuses duplicate keys, like OmegaConf and Hydra do; and refuses
    what would mean something other than written: keys that are not strings, numbers out of range, tags."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if key_node.tag != "tag:yaml.org,2002:str":
                raise _refuse(key_node, _key_problem(key_node))
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError("while reading a mapping", node.start_mark,
                                                        f"found duplicate key '{key_node.value}'",
                                                        key_node.start_mark)
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise _refuse(node, f"the integer of {len(node.value)} digits is too long to read (Python's limit is "
                          "4300 digits); write a smaller number, or quote it to keep it as text") from None

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if value in (float("inf"), float("-inf")) and "inf" not in node.value.lower():
            raise _refuse(node, f"the number {_clip(node.value)} is too large for a float and would read as "
                          "infinity; check the exponent, write .inf if infinity is meant, or quote it")
        return value

    def construct_undefined(self, node):
        raise _refuse(node, f"the tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not allowed: a recipe holds "
                      "plain values (strings, numbers, booleans, lists, mappings); remove the tag")


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)
_Loader.add_constructor(None, _Loader.construct_undefined)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


@dataclass(frozen=True)
class Source:
    """Data from outside the store, hashed by content. `spec` is what the recipe wrote."""

    kind: str  # path | pypi | dvc | tag | artifact (an artifact already in the store) | log (closed log files)
    spec: dict
    expected_hash: str | None = None


@dataclass
class Step:
    name: str
    builder_name: str
    builder: Builder
    params: dict
    inputs: dict[str, str | Source]  # input name -> upstream step name or Source
    description: str = ""
    resources: dict[str, float] = field(default_factory=dict)  # where it may run (a cluster), not in the key

    @property
    def deps(self) -> list[str]:
        return [v for v in self.inputs.values() if isinstance(v, str)]


@dataclass
class Recipe:
    name: str
    file: Path
    steps: dict[str, Step]
    seed: int = 0
    order: list[str] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return self.file.parent

    def closure(self, targets: list[str]) -> list[str]:
        """The targets and everything they depend on, in build order."""
        want, stack = set(), list(targets)
        while stack:
            s = stack.pop()
            if s not in want:
                want.add(s)
                stack.extend(self.steps[s].deps)
        return [s for s in self.order if s in want]

    @property
    def defaults(self) -> list[str]:
        """What a build without --target builds: every step but those only a search uses (a tune step's
        target trains once per trial, never as itself, unless another step consumes it)."""
        searched = {s for step in self.steps.values() for s in step.builder.searched()}
        return self.closure([s for s in self.order if s not in searched])


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise UsageError(f"recipe file {file} does not exist{_nearby(path)}. Pass the path of a recipe YAML, "
                         "e.g. `modelbuild build recipes/quickstart.yaml`")
    data = _compose(path, overrides or [])
    return check_recipe(data, path)


def _nearby(path: Path, pattern: str = "*.y*ml", base: Path = Path()) -> str:
    """A 'did you mean' among the files next to `path` (as written, relative to `base`)."""
    folder = base / path.parent
    if not folder.is_dir():
        return ""
    return did_you_mean(str(path), [str(path.parent / p.name) for p in folder.glob(pattern)])


def _compose(path: Path, overrides: list[str]) -> dict:
    file = str(path)
    text = _read_text(path)
    data = _parse(text, file)
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a YAML mapping with at least a `steps:` key, e.g.\n"
                          "  steps:\n    raw: {builder: ingest, inputs: {data: {path: data.csv}}}", file=file)
    if overrides or "defaults" in data:
        return _compose_hydra(path, overrides, data)
    if "${" in text:
        return _resolve_omegaconf(data, file)
    return data


def _read_text(path: Path) -> str:
    """The file as text, refused when too large to be a recipe, binary or not UTF-8."""
    file = str(path)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(min(size, MAX_RECIPE_BYTES) + 1 if size else MAX_RECIPE_BYTES + 1)  # /proc: size 0
    except OSError as e:
        raise UsageError(f"cannot read recipe {file}: {e.strerror or e}") from None
    if max(size, len(raw)) > MAX_RECIPE_BYTES:
        raise RecipeError(f"the file is over {MAX_RECIPE_BYTES >> 20} MiB, the limit for a recipe; a recipe "
                          "describes steps: keep data in its own file and name it as a source, e.g. "
                          "inputs: {data: {path: table.csv}}", file=file)
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise RecipeError("the file is UTF-16 text; save the recipe as UTF-8", file=file)
    if b"\0" in raw:
        raise RecipeError(f"the file is not YAML text: it holds a NUL byte at {_where(raw, raw.index(0))} (a "
                          "binary file?); pass the recipe's .yaml file", file=file)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"the file is not UTF-8 text: byte 0x{raw[e.start]:02x} at {_where(raw, e.start)} "
                          "cannot be read; save the recipe as UTF-8", file=file) from None


def _where(raw: bytes, offset: int) -> str:
    line, line_start = raw.count(b"\n", 0, offset) + 1, raw.rfind(b"\n", 0, offset) + 1
    return f"line {line}, column {offset - line_start + 1}"


def _parse(text: str, file: str):
    """One YAML document, its aliases, depth and values checked before anything expands them."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        (_check_aliases if ANCHOR.search(text) and ALIAS.search(text) else _check_depth)(node)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise RecipeError(_yaml_problem(e), file=file) from None
    except RecursionError:  # the pure-Python composer, without libyaml
        raise RecipeError(f"refused YAML: {TOO_DEEP}", file=file) from None
    finally:
        loader.dispose()


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if isinstance(e, YAMLLimit):
        return f"refused YAML{where}: {problem}"
    if "maximum nesting depth" in problem:  # libyaml's own limit (1000), above ours
        return f"refused YAML{where}: {TOO_DEEP}"
    if "duplicate key" in problem:
        fix = "Each key may appear once in a mapping: rename or remove one"
    elif "another document" in problem:
        fix = "A recipe is one YAML document: remove the second `---` and what follows it, or move that to its own file"
    else:
        fix = "Fix the syntax (indentation, quotes, colons) at that place"
    return f"unreadable YAML{where}: {problem}. {fix}"


def _refuse(node, problem: str) -> YAMLLimit:
    return YAMLLimit(problem=problem, problem_mark=node.start_mark)


def _key_problem(node) -> str:
    if not isinstance(node, yaml.ScalarNode):
        return f"a key must be a string, not a {'list' if isinstance(node, yaml.SequenceNode) else 'mapping'}"
    kind = KEY_KINDS.get(node.tag.rsplit(":", 1)[-1], node.tag)
    return (f"the key {_clip(node.value) or '(empty)'} reads as {kind}, not a string (YAML reads 1, 1.5, yes, on, "
            f"null, ~ as values); quote it: '{_clip(node.value)}': ...")


KEY_KINDS = {"int": "an integer", "float": "a number", "bool": "a boolean", "null": "null", "timestamp": "a date"}


def _clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else f"{text[:n]}..."


# Anchor and alias names are letters, digits, '-' and '_' (PyYAML and libyaml); a false match (`a&b`) only costs
# the slower check.
ANCHOR, ALIAS = re.compile(r"&[\w-]"), re.compile(r"\*[\w-]")


def _check_depth(node, depth: int = 0) -> None:
    """Refuse deep nesting in a document without aliases (a tree), at a third of _check_aliases's cost."""
    if depth >= MAX_DEPTH:
        raise _refuse(node, TOO_DEEP)
    for child in node.value if type(node) is yaml.SequenceNode else map(_second, node.value):  # keys are strings
        if type(child) is not yaml.ScalarNode:
            _check_depth(child, depth + 1)


_second = operator.itemgetter(1)


def _check_aliases(root) -> None:
    """Refuse alias bombs and recursive aliases, as Go's yaml.v3 and Rust's serde_yaml do, and deep nesting:
    the composed nodes form a graph in which an alias is one more edge to its anchor's node. Each node is
    sized once, so this takes time in proportion to the file, not to what its aliases would expand to."""
    known, expanded = {}, 0  # id(node) -> (size, height), or None while inside it
    scalar, sequence = yaml.ScalarNode, yaml.SequenceNode

    def visit(node, depth: int) -> tuple[int, int]:
        nonlocal expanded
        key = id(node)
        if key not in known:
            if depth >= MAX_DEPTH:
                raise _refuse(node, TOO_DEEP)
            known[key] = None
            size = height = 0
            children = node.value if type(node) is sequence else map(_second, node.value)  # keys are strings
            for child in children:
                if type(child) is not scalar:
                    child_size, child_height = visit(child, depth + 1)
                    size, height = size + child_size - 1, max(height, child_height)
            size += len(node.value)
            known[key] = size + 1, height + 1
            return known[key]
        if known[key] is None:
            raise _refuse(node, "this value contains an alias to itself (a `*name` inside its own `&name`), "
                          "which would be infinitely deep; an alias may refer only to a value outside it")
        size, height = known[key]
        expanded += size
        if expanded > MAX_EXPANSION:
            raise _refuse(node, f"its aliases expand to more than {MAX_EXPANSION} values (the limit, "
                          "MAX_EXPANSION); an anchor (&name) shares a mapping a few times, it does not "
                          "multiply data: write the values out, or keep large data in a file")
        if depth + height > MAX_DEPTH:
            raise _refuse(node, TOO_DEEP)
        return size, height

    if type(root) is not scalar:
        visit(root, 0)


def _resolve_omegaconf(data: dict, file: str) -> dict:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    _check_interpolations(data, file)
    try:
        return OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    except OmegaConfBaseException as e:
        raise RecipeError(f"interpolation failed: {_first_line(e).rstrip('.')}. {_interpolation_fix(e)}",
                          file=file, key=getattr(e, "full_key", None)) from None


REFERENCE = re.compile(r"(?<!\\)\$\{([^${}]*)\}")  # ${key}, ${.sibling}, ${resolver:args}; not \${escaped}


def _check_interpolations(data: dict, file: str) -> None:
    """Refuse ${...} bombs before OmegaConf expands them: a reference counts the values, text and depth of the key
    it names, each key sized once, so a bomb is sized in time proportional to the recipe (as in _check_aliases)."""
    sized: dict[tuple, tuple | None] = {}  # a referenced key's (values, characters, depth); None while sizing

    def size(value, path: tuple, resolve: bool = True) -> tuple[int, int, int]:
        if isinstance(value, dict | list):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            parts = [size(v, (*path, str(k)), resolve) for k, v in items]
            return 1 + sum(p[0] for p in parts), 2 + sum(p[1] for p in parts), 1 + max((p[2] for p in parts), default=0)
        if not resolve or not isinstance(value, str) or "${" not in value:
            return 1, len(str(value)), 0
        if "${" in REFERENCE.sub("", value).replace("\\${", ""):
            raise RecipeError("a nested interpolation ${...${...}...} cannot be checked before it runs; name the key "
                              "directly, e.g. ${vars.lr}", file=file, key=".".join(path))
        refs = [refer(ref, path) for ref in REFERENCE.findall(value)]
        if not REFERENCE.fullmatch(value):
            return 1, len(REFERENCE.sub("", value)) + sum(chars + 2 * values for values, chars, _ in refs), 0
        if len(path) + refs[0][2] > MAX_DEPTH:
            raise RecipeError(f"refused interpolation: once resolved, {TOO_DEEP}", file=file, key=".".join(path))
        return refs[0]

    def refer(ref: str, path: tuple) -> tuple[int, int, int]:
        target = _target(ref.strip(), path)
        if target is None or (target not in sized and _lookup(data, target) is _MISSING):
            return 1, len(ref), 0  # a resolver, or a missing key that OmegaConf reports
        if target not in sized:
            sized[target] = None
            sized[target] = size(_lookup(data, target), target)
            _limit(sized[target], f"${{{ref}}} expands to", file, ".".join(path))
        return sized[target] or (1, len(ref), 0)  # None: a cycle, which OmegaConf reports

    try:
        values, chars, _ = size(data, ())
    except RecursionError:
        raise RecipeError("refused interpolation: its ${...} refer to keys that are references in turn, in a chain "
                          "too long to resolve; refer to the value itself", file=file) from None
    written = size(data, (), resolve=False)
    _limit((values - written[0], chars - written[1]), "its interpolations add", file, None)


def _limit(size: tuple, what: str, file: str, key: str | None) -> None:
    values, chars = size[:2]
    if values > MAX_EXPANSION or chars > MAX_RECIPE_BYTES:
        raise RecipeError(f"refused interpolation: {what} {values} values and {chars} characters, over the limit "
                          f"of {MAX_EXPANSION} values (MAX_EXPANSION) and {MAX_RECIPE_BYTES >> 20} MiB of text "
                          "(MAX_RECIPE_BYTES); refer to a value a few times, do not multiply data with references "
                          "to references", file=file, key=key)


_MISSING = object()


def _target(ref: str, path: tuple) -> tuple | None:
    """The key path that ${ref} in the value at `path` names; None for a resolver call (oc.env:HOME)."""
    if ":" in ref:
        name, _, args = ref.partition(":")
        if name.strip() not in ("oc.select", "oc.dict.keys", "oc.dict.values"):
            return None
        ref = args.split(",", 1)[0].strip()
    dots = len(ref) - len(ref.lstrip("."))
    base = path[:len(path) - dots] if dots else ()
    return (*base, *re.findall(r"[^.\[\]]+", ref))


def _lookup(data, path: tuple):
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


def _interpolation_fix(e: Exception) -> str:
    """How to fix a failed ${...}: a shell variable in a command is the usual culprit."""
    missing = re.search(r"Interpolation key '([^']+)' not found", str(e))
    if missing and re.fullmatch(r"[A-Z][A-Z0-9_]*", missing.group(1)):
        return (f"For the shell variable write ${missing.group(1)} (no braces) or escape it as "
                f"\\${{{missing.group(1)}}}; ${{...}} refers to a key of the recipe")
    return "Check that each ${...} names an existing key of the recipe, e.g. ${vars.lr} or ${seed}"


def _compose_hydra(path: Path, overrides: list[str], data: dict) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    file = str(path)
    _check_config_files(path, data, overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(path.parent.absolute()), version_base=None), \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Defaults list is missing `_self_`")
            cfg = compose(config_name=path.stem, overrides=list(overrides))
        _check_interpolations(OmegaConf.to_container(cfg, resolve=False), file)
        return OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException, yaml.YAMLError, ValueError) as e:
        msg = _first_line(e).rstrip(".")
        key, hint = getattr(e, "full_key", None) or None, ""
        if "Could not override" in msg:
            key, hint = _override_hint(msg, data)
        elif "Could not load" in msg:
            hint = " Each `defaults:` entry names a YAML file next to the recipe, without .yaml (`- base` reads base.yaml)"
        elif "Interpolation key" in msg:
            hint = f" {_interpolation_fix(e)}"
        with_overrides = f" with the overrides {' '.join(overrides)}" if overrides else ""
        raise RecipeError(f"cannot compose the recipe{with_overrides}: {msg}.{hint}", file=file, key=key) from None
    finally:
        GlobalHydra.instance().clear()


def _check_config_files(path: Path, data: dict, overrides: list[str]) -> None:
    """Hydra reads the files that a defaults list names with its own loader, which expands aliases: check each
    first, as a recipe is checked: the files its entries name (`- base`: base.yaml next to the file), and every
    option of the config groups that its entries (`- model: small`) and the overrides (`model=large`) name."""
    seen, todo = {path.absolute()}, [(path.parent, data, overrides)]
    while todo:
        folder, config, extra = todo.pop()
        for file in _default_files(path.parent, folder, config.get("defaults"), extra):
            if file.absolute() not in seen and file.is_file():
                seen.add(file.absolute())
                parsed = _parse(_read_text(file), str(file))
                if isinstance(parsed, dict):
                    todo.append((file.parent, parsed, []))


def _default_files(root: Path, folder: Path, defaults, overrides: list[str]) -> list[Path]:
    entries = defaults if isinstance(defaults, list) else []
    names = [o.split("=", 1)[0] for o in overrides] + [str(k) for e in entries if isinstance(e, dict) for k in e]
    groups = {re.sub(r"^(?:override |optional |[+~/])*", "", n).split("@")[0] for n in names}
    inside = [g for g in groups if g and ".." not in g.split("/")]
    dirs = {base / g for g in inside for base in (root, folder) if (base / g).is_dir()}
    files = [folder / f"{e.lstrip('/')}.yaml" for e in entries if isinstance(e, str) and ".." not in e.split("/")]
    return files + [f for d in sorted(dirs) for f in sorted(d.rglob("*.y*ml"))]


def _override_hint(msg: str, data: dict) -> tuple[str | None, str]:
    """For an override of a key the recipe lacks: the key, and the nearest key that it has."""
    failed = re.search(r"Could not override '([^']+)'", msg)
    if not failed:
        return None, " To add a key that the recipe does not have, prefix the override with '+'"
    key, node = failed.group(1), data
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            break
        if part not in node:
            where = ".".join(parts[:i]) or "the top level"
            return key, (f" The recipe has no '{part}' under {where}{did_you_mean(part, node)}. To add a key "
                         f"that the recipe does not have, prefix the override with '+': +{key}=...")
        node = node[part]
    return key, " To add a key that the recipe does not have, prefix the override with '+'"


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def check_recipe(data: dict, path: Path) -> Recipe:
    """Turn composed YAML into a Recipe, or raise the first problem as a RecipeError."""
    file = str(path)
    for key in data:
        if key not in RECIPE_KEYS and not (path.parent / str(key)).is_dir():  # a Hydra config group's values
            raise RecipeError(f"unknown top-level key{did_you_mean(key, RECIPE_KEYS)}; a recipe has "
                              f"{', '.join(RECIPE_KEYS)}, and the config groups in folders next to it",
                              file=file, key=str(key))
    name = data.get("name") or path.stem
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RecipeError(f"recipe name {name!r} must be letters, digits, '-', '_' or '.'", file=file, key="name")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise RecipeError(f"seed must be an integer, got {seed!r}", file=file, key="seed")
    steps_data = data.get("steps")
    if not isinstance(steps_data, dict) or not steps_data:
        raise RecipeError("the recipe has no steps: add a `steps:` mapping of step name -> "
                          "{builder, params, inputs}", file=file, key="steps")
    steps = {}
    for step_name, spec in steps_data.items():
        steps[str(step_name)] = _check_step(str(step_name), spec, steps_data, path)
    for step in steps.values():
        inputs = step.builder.check_steps(step, steps, file=file)
        if inputs is not None:  # a step that takes other steps' inputs (tune takes its target's)
            step.inputs = inputs
    for step in list(steps.values()):  # steps a step stands for (benchmark: one per task)
        steps.update(step.builder.expand(step, steps, file=file))
    recipe = Recipe(name=name, file=path.absolute(), steps=steps, seed=seed)
    recipe.order = _topological_order(steps, file)
    return recipe


def _check_step(name: str, spec, all_steps: dict, path: Path) -> Step:
    file = str(path)
    if not NAME_RE.match(name):
        raise RecipeError("a step name must be letters, digits, '-', '_' or '.'", file=file, step=name)
    if not isinstance(spec, dict):
        raise RecipeError(f"a step must be a mapping with `builder:`, got {type(spec).__name__} {spec!r}",
                          file=file, step=name)
    for key in spec:
        if key not in STEP_KEYS:
            raise RecipeError(f"unknown step key{did_you_mean(key, STEP_KEYS)}; a step has "
                              f"{', '.join(STEP_KEYS)}", file=file, step=name, key=str(key))
    builder_name = spec.get("builder")
    if not isinstance(builder_name, str):
        raise RecipeError("missing `builder:` (e.g. builder: command)", file=file, step=name, key="builder")
    builder = load_builder(builder_name, recipe_dir=path.parent.absolute(), file=file, step=name)
    inputs = _check_inputs(name, spec.get("inputs") or {}, all_steps, path)
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        raise RecipeError(f"`params:` must be a mapping, got {params!r}", file=file, step=name, key="params")
    params = builder.normalise(params, file=file, step=name)
    builder.check_inputs(params, inputs, file=file, step=name)
    return Step(name, builder_name, builder, params, inputs, str(spec.get("description") or ""),
                _check_resources(spec.get("resources"), file, name))


UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
QUANTITY_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)


def _check_resources(raw, file: str, step: str) -> dict[str, float]:
    """`resources: {cpus: 4, memory: 16GB, gpus: 1}`: what a cluster worker must offer to run the step (Dask
    worker resources of the same names). Scheduling only: it never enters the key, so moving a step to a
    bigger machine rebuilds nothing. Memory may be written with a unit (16GB, 512MiB); it is kept in bytes."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError(f"`resources:` must be a mapping such as {{cpus: 4, memory: 16GB, gpus: 1}}, got {raw!r}",
                          file=file, step=step, key="resources")
    out = {}
    for name, value in raw.items():
        found = QUANTITY_RE.match(str(value)) if not isinstance(value, bool) else None
        if not NAME_RE.match(str(name)) or found is None:
            raise RecipeError(f"a resource is a name and a non-negative amount (cpus: 4, memory: 16GB, gpus: 1), "
                              f"got {name}: {value!r}", file=file, step=step, key=f"resources.{name}")
        out[str(name)] = float(found.group(1)) * UNITS[(found.group(2) or "").lower()]
    return out


def _check_inputs(step: str, raw, all_steps: dict, path: Path) -> dict:
    file = str(path)
    if isinstance(raw, list):
        raw = {str(v): v for v in raw}
    if not isinstance(raw, dict):
        raise RecipeError("`inputs:` must be a mapping of input name -> step name or source, or a list of "
                          "step names", file=file, step=step, key="inputs")
    inputs = {}
    for name, value in raw.items():
        key = f"inputs.{name}"
        if not NAME_RE.match(str(name)):
            raise RecipeError("an input name must be letters, digits, '-', '_' or '.'", file=file, step=step, key=key)
        if isinstance(value, str):
            if value not in all_steps:
                raise RecipeError(f"unknown input step '{value}'{did_you_mean(value, all_steps)}; to read a file, "
                                  f"write it as a source: {{path: {value}}}", file=file, step=step, key=key)
            if value == step:
                raise RecipeError(f"a step cannot be its own input: remove '{value}' from `inputs:`, or name the "
                                  "step that builds what it needs", file=file, step=step, key=key)
            inputs[str(name)] = value
        elif isinstance(value, dict):
            inputs[str(name)] = _check_source(value, path, step, key)
        else:
            raise RecipeError(f"an input is a step name or a source mapping, got {value!r}",
                              file=file, step=step, key=key)
    return inputs


def _check_source(spec: dict, path: Path, step: str, key: str) -> Source:
    file = str(path)
    kinds = [k for k in SOURCE_KINDS if k in spec]
    if "log" in spec:
        return _check_log(spec, file, step, key)
    allowed = {"path", "pypi", "dvc", "tag", "artifact", "hash"}
    for k in spec:
        if k not in allowed:
            raise RecipeError(f"unknown source key{did_you_mean(k, allowed)}; a source is {{path: FILE}}, "
                              "{pypi: 'name==version', path: FILE_IN_PACKAGE}, {dvc: {repo, path, rev}}, "
                              "{tag: NAME}, {artifact: DIGEST_PREFIX} or {log: DIR}, each with an optional `hash:` pin",
                              file=file, step=step, key=f"{key}.{k}")
    expected = spec.get("hash")
    if expected is not None and not (isinstance(expected, str) and re.fullmatch(r"[0-9a-f]{32}", expected)):
        raise RecipeError(f"a source `hash:` is 32 hex digits (xxh3-128), got {expected!r}",
                          file=file, step=step, key=f"{key}.hash")
    if "tag" in spec or "artifact" in spec:
        return _check_stored(spec, file, step, key, expected)
    if "pypi" in spec:
        pin = spec["pypi"]
        if not isinstance(pin, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+", pin):
            raise RecipeError(f"a PyPI source is pinned as 'name==version', got {pin!r}",
                              file=file, step=step, key=f"{key}.pypi")
        if not isinstance(spec.get("path"), str):
            raise RecipeError("a PyPI source needs `path:`, the file or folder inside the package",
                              file=file, step=step, key=f"{key}.path")
        return Source("pypi", {"pypi": pin, "path": spec["path"].strip("/")}, expected)
    if "dvc" in spec:
        return Source("dvc", {"dvc": _check_dvc(spec, path, step, key)}, expected)
    if not kinds or not isinstance(spec.get("path"), str):
        raise RecipeError("a source needs `path:` (a file or folder, relative to the recipe)",
                          file=file, step=step, key=key)
    local = (path.parent / spec["path"]).absolute()
    if not local.exists():
        raise RecipeError(f"source file {local} does not exist"
                          f"{_nearby(Path(spec['path']), '*', path.parent)}; paths are relative to the "
                          "recipe's folder", file=file, step=step, key=f"{key}.path")
    return Source("path", {"path": spec["path"]}, expected)


LOG_KEYS = ("log", "glob", "since", "until", "last")


def _check_log(spec: dict, file: str, step: str, key: str) -> Source:
    """`{log: DIR, glob, since, until, last}`: closed log segments or data drops (sources_log.py)."""
    for k, value in spec.items():
        if k not in LOG_KEYS:
            raise RecipeError(f"unknown key of a log source{did_you_mean(k, LOG_KEYS)}; a log source is {{log: DIR}} "
                              "with optional `glob:` (e.g. \"requests-*\"), `since:`/`until:` (ISO times) or `last:` "
                              "(e.g. 7d)", file=file, step=step, key=f"{key}.{k}")
        if not isinstance(value, str) and not (k in ("since", "until") and hasattr(value, "isoformat")):
            raise RecipeError(f"`{k}:` of a log source is a string, got {value!r}", file=file, step=step,
                              key=f"{key}.{k}")
    if spec.get("last") is not None and spec.get("since") is not None:
        raise RecipeError("a log source takes `since:` or `last:`, not both", file=file, step=step, key=f"{key}.last")
    return Source("log", {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in spec.items()})


def _check_stored(spec: dict, file: str, step: str, key: str, expected: str | None) -> Source:
    """`{tag: NAME}` or `{artifact: DIGEST_PREFIX}`: an artifact already in the store, found when the step is
    planned (sources.resolve); the key covers its digest, so moving the tag rebuilds the step."""
    kind = "tag" if "tag" in spec else "artifact"
    others = [k for k in spec if k not in (kind, "hash")]
    if others:
        raise RecipeError(f"a {{{kind}: ...}} source names an artifact of the store and nothing else; remove "
                          f"`{others[0]}:`", file=file, step=step, key=f"{key}.{others[0]}")
    value = spec[kind]
    if kind == "tag" and not (isinstance(value, str) and NAME_RE.match(value)):
        raise RecipeError(f"a tag is a name of letters, digits, '-', '_' or '.' (as `modelbuild tag NAME "
                          f"ARTIFACT` gave it), got {value!r}", file=file, step=step, key=f"{key}.tag")
    if kind == "artifact" and not (isinstance(value, str) and re.fullmatch(r"[0-9a-f]{6,32}", value)):
        raise RecipeError(f"`artifact:` is the digest of a store artifact or its first 6 or more hex digits "
                          f"(objects/<digest>-<name>), got {value!r}"
                          + ("; quote it so YAML reads it as text" if isinstance(value, (int, float)) else ""),
                          file=file, step=step, key=f"{key}.artifact")
    return Source(kind, {kind: value}, expected)


DVC_KEYS = ("repo", "path", "rev")
DVC_EXAMPLE = "{dvc: {repo: ../data-registry, path: data/table.csv, rev: v1}}"


def _check_dvc(spec: dict, path: Path, step: str, key: str) -> dict:
    """`dvc: {repo, path, rev}`, checked without importing dvc; resolved at build time by sources_dvc."""
    file, dvc = str(path), spec["dvc"]
    if "path" in spec:
        raise RecipeError(f"a DVC source names its file inside `dvc:`, e.g. {DVC_EXAMPLE}; move `path:` there",
                          file=file, step=step, key=f"{key}.path")
    if not isinstance(dvc, dict):
        raise RecipeError(f"a DVC source is a mapping with `repo:`, `path:` and an optional `rev:`, e.g. "
                          f"{DVC_EXAMPLE}; got {dvc!r}", file=file, step=step, key=f"{key}.dvc")
    for k in dvc:
        if k not in DVC_KEYS:
            prefix = [d for d in DVC_KEYS if str(k).startswith(d) or d.startswith(str(k))]  # revision -> rev
            hint = did_you_mean(k, DVC_KEYS) or (f" (did you mean '{prefix[0]}'?)" if prefix else "")
            raise RecipeError(f"unknown DVC source key{hint}; a DVC source has `repo:` (a "
                              "git URL, or a local repo relative to the recipe), `path:` (relative to the repo's "
                              "root) and an optional `rev:` (a tag, branch or commit; default HEAD)",
                              file=file, step=step, key=f"{key}.dvc.{k}")
    for k, what in (("repo", "a git URL, or the path of a local git+DVC repo relative to the recipe's folder"),
                    ("path", "the DVC-tracked file or folder, relative to the repo's root")):
        if not isinstance(dvc.get(k), str) or not dvc[k].strip():
            raise RecipeError(f"a DVC source needs `{k}:`, {what}, e.g. {DVC_EXAMPLE}"
                              + (f"; got {dvc[k]!r}" if k in dvc else ""), file=file, step=step,
                              key=f"{key}.dvc.{k}")
    inner = dvc["path"].strip().strip("/")
    if not inner or ".." in inner.split("/"):
        raise RecipeError(f"a DVC source's `path:` is a path inside the repo, without '..', got {dvc['path']!r}",
                          file=file, step=step, key=f"{key}.dvc.path")
    out = {"repo": dvc["repo"].strip(), "path": inner}
    is_url = re.match(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|[^/:@\s]+@[^/:\s]+:)", out["repo"])  # as sources_dvc.is_url
    if not is_url and not (path.parent / Path(out["repo"]).expanduser()).is_dir():
        raise RecipeError(f"the DVC repo {out['repo']} does not exist{_nearby(Path(out['repo']), '*', path.parent)}; "
                          "`repo:` is a git URL, or the folder of a git+DVC repo relative to the recipe's folder",
                          file=file, step=step, key=f"{key}.dvc.repo")
    if dvc.get("rev") is not None:
        rev = dvc["rev"]
        if not isinstance(rev, str) or not rev.strip():
            raise RecipeError(f"a DVC source's `rev:` is a tag, branch or commit written as a string, got {rev!r}; "
                              f"quote it (rev: '{rev}') so YAML does not read it as a number",
                              file=file, step=step, key=f"{key}.dvc.rev")
        out["rev"] = rev.strip()
    return out


def _topological_order(steps: dict[str, Step], file: str) -> list[str]:
    """File order, moved only as far as dependencies require; a cycle is named step by step. Depth-first with
    its own stack, so a chain of thousands of steps needs no deep recursion."""
    order, done, active = [], set(), set()
    for first in steps:
        if first in done:
            continue
        stack = [(first, iter(steps[first].deps))]  # the steps being visited, each with its deps still to visit
        active.add(first)
        while stack:
            name, deps = stack[-1]
            dep = next((d for d in deps if d not in done), None)
            if dep is None:
                stack.pop()
                active.discard(name)
                done.add(name)
                order.append(name)
            elif dep in active:
                trail = [n for n, _ in stack]
                cycle = trail[trail.index(dep):] + [dep]
                raise RecipeError(f"the steps form a cycle: {' -> '.join(cycle)}. Remove one of these inputs",
                                  file=file, step=dep, key="inputs")
            else:
                stack.append((dep, iter(steps[dep].deps)))
                active.add(dep)
    return order
