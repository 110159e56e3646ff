"""Derivations: what a step's output depends on, written as canonical JSON and hashed into its key.

The key covers the builder's name and source code, the params (but those the builder declares
`unkeyed_params`, which cannot change the output: they travel beside the derivation in the Job), anything the builder declares beyond
params (e.g. a user module's source), the content addresses of the inputs, and the environment
(Python version and the versions of the packages the builder declares). Nothing else: no paths,
no host, no time, so the same work on another machine has the same key.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .environment import env_fingerprint
from .hashing import canonical_json, hash_json

if TYPE_CHECKING:
    from .recipe import Recipe, Step

FORMAT = 2  # bump when the derivation layout changes; every key changes with it


def make_derivation(step: Step, inputs: dict[str, dict], recipe_dir, seed: int | None) -> dict:
    """`inputs` maps input name -> {"kind": "step"|"source", "digest": content hash}."""
    # imported here: `diff` and `show` compare derivations without loading the builders
    from .builders import builder_code_hash

    builder = step.builder
    drv = {
        "format": FORMAT,
        "builder": step.builder_name,
        "builder_code": builder_code_hash(builder),
        "params": split_unkeyed(step.params, builder.unkeyed_params)[0],
        "extras": builder.key_extras(step.params, recipe_dir),
        "inputs": {name: {"kind": i["kind"], "digest": i["digest"]} for name, i in sorted(inputs.items())},
        "env": env_fingerprint(tuple(builder.env)),
    }
    if getattr(builder, "uses_seed", False):
        drv["seed"] = seed
    return drv


def derivation_key(drv: dict) -> str:
    return hash_json(drv)


def split_unkeyed(params: dict, paths) -> tuple[dict, dict]:
    """(the params the key sees, the values at `paths` that it does not): each dotted path ('trainer.profiler')
    moves from the first mapping to the same place in the second. `params` is left as it is."""
    keyed, unkeyed = copy.deepcopy(params), {}
    for path in paths:
        *parents, leaf = path.split(".")
        where = keyed
        for name in parents:
            where = where.get(name) if isinstance(where, dict) else None
        if isinstance(where, dict) and leaf in where:
            into = unkeyed
            for name in parents:
                into = into.setdefault(name, {})
            into[leaf] = where.pop(leaf)
    return keyed, unkeyed


def merge_unkeyed(params: dict, unkeyed: dict) -> dict:
    """`params` with the unkeyed values put back where split_unkeyed took them from: what build() sees."""
    out = dict(params)
    for name, value in unkeyed.items():
        out[name] = merge_unkeyed(out[name], value) if isinstance(value, dict) and isinstance(out.get(name), dict) \
            else value
    return out


# ---- the resolver: a step and its inputs' content -> a job ------------------------------------------------
@dataclass(frozen=True)
class Input:
    """One input of a step, resolved: where it lies, its content address (what the key sees) and what the
    lineage records; `stat` (a path source's stat identity) is re-checked after the build, `refs` are the
    store paths the artifact keeps alive."""

    path: Path
    kind: str  # "step" | "source"
    digest: str
    lineage: dict
    stat: str | None = None
    refs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    """One build, resolved: its derivation and key, and everything a worker needs to run it. A worker
    builds from `drv` alone (builder, params, seed); paths and files only say where the inputs lie."""

    key: str
    drv: dict
    step: str
    recipe: str
    recipe_file: str
    recipe_dir: str
    inputs: dict[str, Input]
    files: dict[str, str] = field(default_factory=dict)  # more files for build() outside the key (tune's trials)
    extra_refs: tuple[str, ...] = ()
    resources: dict[str, float] = field(default_factory=dict)  # what a cluster worker must offer (not in the key)
    unkeyed: dict = field(default_factory=dict)  # the builder's unkeyed_params, for build() only (not in the key)

    @property
    def builder(self) -> str:
        return self.drv["builder"]

    @property
    def out(self) -> str:
        """The artifact's name (store/objects/<digest>-<out>)."""
        return self.step

    @property
    def refs(self) -> list[str]:
        return [r for i in self.inputs.values() for r in i.refs] + list(self.extra_refs)

    def with_files(self, files: dict[str, Path], refs: list[str]) -> Job:
        """The same derivation with more files handed to build() (not in the key), keeping `refs` alive."""
        return replace(self, files={**self.files, **{k: str(v) for k, v in files.items()}},
                       extra_refs=(*self.extra_refs, *refs))

    def to_json(self) -> dict:
        return {"key": self.key, "drv": self.drv, "step": self.step, "recipe": self.recipe,
                "recipe_file": self.recipe_file, "recipe_dir": self.recipe_dir,
                "inputs": {n: {"path": str(i.path), "kind": i.kind, "digest": i.digest, "lineage": i.lineage,
                               "stat": i.stat, "refs": list(i.refs)} for n, i in self.inputs.items()},
                "files": self.files, "extra_refs": list(self.extra_refs), "resources": self.resources,
                "unkeyed": self.unkeyed}

    @classmethod
    def from_json(cls, data: dict) -> Job:
        inputs = {n: Input(Path(i["path"]), i["kind"], i["digest"], i["lineage"], i.get("stat"), tuple(i["refs"]))
                  for n, i in data["inputs"].items()}
        return cls(data["key"], data["drv"], data["step"], data["recipe"], data["recipe_file"], data["recipe_dir"],
                   inputs, dict(data.get("files", {})), tuple(data.get("extra_refs", ())),
                   dict(data.get("resources", {})), dict(data.get("unkeyed", {})))


def resolve(step: Step, inputs: dict[str, Input], recipe: Recipe) -> Job:
    """The one place a step becomes a derivation and a job: plan, build and a search's trials all call it,
    so a trial is keyed exactly like the same step in a recipe."""
    drv = make_derivation(step, {n: {"kind": i.kind, "digest": i.digest} for n, i in inputs.items()},
                          recipe.dir, recipe.seed)
    return Job(derivation_key(drv), drv, step.name, recipe.name, str(recipe.file), str(recipe.dir), dict(inputs),
               resources=dict(step.resources), unkeyed=split_unkeyed(step.params, step.builder.unkeyed_params)[1])


def _flatten(value, prefix=""):
    if isinstance(value, dict) and value:
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


class _Unset:
    def __repr__(self):
        return "<unset>"


UNSET = _Unset()  # the value of a field one derivation has and the other not


def _same(a, b) -> bool:
    """Equal as the key sees them: 1 and 1.0 (or True) differ, NaN equals NaN."""
    if a is UNSET or b is UNSET:
        return a is b
    return canonical_json(a) == canonical_json(b)


@dataclass(frozen=True)
class Change:
    """One field in which two derivations differ: `what` is its dotted path ('params.lr', 'inputs.data',
    'builder_code', 'env.packages.torch'); `old` or `new` is UNSET where only one side has it."""

    what: str
    old: object
    new: object

    @property
    def section(self) -> str:
        return self.what.split(".", 1)[0]


SECTIONS = ("builder", "builder_code", "params", "extras", "inputs", "env", "seed", "format")


def changes(old: dict, new: dict) -> list[Change]:
    """Every difference between two derivations that changes the key, in a stable order: what `plan`
    explains and `diff` reports. Values are compared as the key sees them (1 vs 1.0 differ, NaN equals
    NaN); inputs whole, by name; a new builder hides its code change."""
    out = []
    for section in [*SECTIONS, *sorted((set(old) | set(new)) - set(SECTIONS))]:
        if section == "builder_code" and out and out[-1].what == "builder":
            continue
        a, b = old.get(section, UNSET), new.get(section, UNSET)
        if section in ("params", "extras", "env"):
            out += field_changes(a if isinstance(a, dict) else {}, b if isinstance(b, dict) else {}, section)
        elif section == "inputs" and isinstance(a, dict) and isinstance(b, dict):
            out += [Change(f"inputs.{n}", a.get(n, UNSET), b.get(n, UNSET)) for n in sorted(set(a) | set(b))
                    if not _same(a.get(n, UNSET), b.get(n, UNSET))]
        elif not _same(a, b):
            out.append(Change(section, a, b))
    return out


def field_changes(a: dict, b: dict, section: str) -> list[Change]:
    """The leaves of two nested mappings that differ, named by their dotted path under `section`."""
    fa, fb = _flatten(a, section), _flatten(b, section)
    keys = sorted(set(fa) | set(fb))
    out = []
    for k in keys:
        x, y = fa.get(k, UNSET), fb.get(k, UNSET)
        if _same(x, y) or ({} in (x, y) and any(o.startswith(k + ".") for o in keys)):
            continue  # unchanged, or an empty mapping whose new/removed entries are listed one by one
        out.append(Change(k, x, y))
    return out


def _short(value, other=None) -> str:
    """A value in at most ~40 characters; a long string is shown around where it differs from `other`."""
    text = repr(value) if isinstance(value, (str, _Unset)) else canonical_json(value)
    if len(text) <= 40:
        return text
    start = 0
    if isinstance(value, str) and isinstance(other, str):
        start = next((i for i, (a, b) in enumerate(zip(value, other, strict=False)) if a != b), min(len(value), len(other)))
        start = max(0, start - 15)
    return ("..." if start else "") + text[start:start + 37] + "..."


def explain(old: dict | None, new: dict) -> list[str]:
    """Why a step must be rebuilt, in words: 'params.lr 0.001 -> 0.0003', 'input clean changed', ..."""
    if old is None:
        return ["new"]
    return [r for c in changes(old, new) for r in _reasons(c)] or ["not in the store"]


def _reasons(c: Change) -> list[str]:
    if c.section == "params":
        return describe(c)
    return [_reason(c)]


def describe(c: Change) -> list[str]:
    """A value's change in words a person can act on: 'added'/'removed' rather than a placeholder, and for
    two lists the elements that differ rather than two prefixes that look the same."""
    if c.old is UNSET:
        return [f"{c.what} added: {_short(c.new)}"]
    if c.new is UNSET:
        return [f"{c.what} removed (was {_short(c.old)})"]
    if isinstance(c.old, list) and isinstance(c.new, list):
        return _list_changes(c.what, c.old, c.new)
    if isinstance(c.old, dict) and isinstance(c.new, dict):
        return [r for sub in field_changes(c.old, c.new, c.what) for r in describe(sub)]
    return [f"{c.what} {_short(c.old, c.new)} -> {_short(c.new, c.old)}"]


def _list_changes(what: str, a: list, b: list, shown: int = 5) -> list[str]:
    """The elements two lists differ in, by index (difflib's opcodes over the canonical elements)."""
    import difflib

    ca, cb = [canonical_json(x) for x in a], [canonical_json(x) for x in b]
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ca, cb, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        if op == "replace" and i2 - i1 == j2 - j1:
            out += [r for k in range(i2 - i1) for r in describe(Change(f"{what}[{j1 + k}]", a[i1 + k], b[j1 + k]))]
            continue
        if i2 > i1:
            out.append(f"{what}[{_span(i1, i2)}] removed: {', '.join(_short(x) for x in a[i1:i2])}")
        if j2 > j1:
            out.append(f"{what}[{_span(j1, j2)}] added: {', '.join(_short(x) for x in b[j1:j2])}")
    if len(out) > shown:
        out = out[:shown] + [f"{what}: ... and {len(out) - shown} more changes ({len(a)} -> {len(b)} items)"]
    return out or [f"{what} {_short(a)} -> {_short(b)}"]


def _span(i: int, j: int) -> str:
    return str(i) if j == i + 1 else f"{i}:{j}"


def _reason(c: Change) -> str:
    section, plain = c.section, (lambda v: None if v is UNSET else v)
    if section == "builder":
        return f"builder {plain(c.old)} -> {plain(c.new)}"
    if section == "builder_code":
        return "builder code changed"
    if section == "extras":
        return f"{c.what} changed"
    if section == "inputs":
        name = c.what.split(".", 1)[1]
        if c.old is UNSET or c.new is UNSET:
            return f"input {name} {'added' if c.old is UNSET else 'removed'}"
        return f"{'source' if c.new.get('kind') == 'source' else 'input'} {name} changed"
    if section == "format":
        return "derivation format changed"
    if c.old is UNSET or c.new is UNSET:
        return describe(c)[0]
    return f"{c.what} {c.old} -> {c.new}"
