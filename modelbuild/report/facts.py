"""What a report shows, read from the store: the steps of a recipe as last built, or the lineage of one
artifact, each with its build record. Reads only the trace, roots and `.meta.json` files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..lineage import input_path, record
from ..store import Store

OK = ("built", "cached", "substituted")


@dataclass
class StepFacts:
    """One step of the report: its artifact (None when never built or when its last build failed without
    keeping one), the build record of that artifact, and its inputs as (name, upstream step or None, info)."""

    name: str
    builder: str
    status: str  # built | failed | not built | outdated (built from an older upstream) | searched
    path: Path | None = None
    key: str | None = None
    record: dict = field(default_factory=dict)
    description: str = ""
    inputs: list[tuple[str, str | None, dict]] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return f"step-{self.name}"


@dataclass
class Facts:
    title: str
    subject: str  # what the report is of: a recipe file or an artifact
    steps: list[StepFacts]

    def step(self, name: str) -> StepFacts | None:
        return next((s for s in self.steps if s.name == name), None)


def from_recipe(store: Store, recipe) -> Facts:
    """Every step of the recipe, as its last build in this store left it (roots and attempts)."""
    from ..recipe import Source
    steps = []
    searched = {t for step in recipe.steps.values() for t in step.builder.searched()}
    for name in recipe.order:
        step = recipe.steps[name]
        root = store.get_root(f"{recipe.name}:{name}") if store.exists() else None
        attempt = store.last_attempt(f"{recipe.name}:{name}") if store.exists() else None
        status, path, key = "not built", None, None
        if attempt and attempt[1] == "failed":
            status = "failed"
            if root and root[1] == attempt[0]:  # a committed failure keeps its artifact (a gate that failed)
                path, key = root
        elif root:
            status, (path, key) = "built", root
        elif name in searched:  # a search's target trains once per trial, not as itself
            status = "searched"
        rec = record(store, path, key) if path is not None else {}
        facts = StepFacts(name, step.builder_name, status, path, key, rec, step.description)
        recorded = rec.get("inputs") or {}
        for input_name, ref in step.inputs.items():
            info = recorded.get(input_name) or ({"kind": ref.kind, **ref.spec} if isinstance(ref, Source) else {})
            facts.inputs.append((input_name, None if isinstance(ref, Source) else ref, info))
        if step.builder_name == "tune" and isinstance(step.params.get("target"), str):
            facts.inputs.append(("target", step.params["target"], {"kind": "step", "step": step.params["target"]}))
        steps.append(facts)
    _mark_outdated(store, steps)
    return Facts(recipe.name, str(recipe.file), steps)


def _mark_outdated(store: Store, steps: list[StepFacts]) -> None:
    """A step whose artifact was built from another artifact than its upstream step's last build (the
    upstream was rebuilt since, and this step was skipped or not asked for) is `outdated`."""
    paths = {s.name: store.rel(s.path) for s in steps if s.path is not None}
    for s in steps:
        recorded = s.record.get("inputs") or {}
        used = {name: info.get("tune") or info.get("path") for name, info in recorded.items()}  # a search: itself
        if s.status == "built" and any(up in paths and used.get(name) not in (None, paths[up])
                                       for name, up, _ in s.inputs):
            s.status = "outdated"


def from_artifacts(store: Store, targets: list[tuple[Path, str | None]], title: str) -> Facts:
    """The artifacts and everything they were built from, inputs first (each input followed as its
    consumer's build recorded it)."""
    order: list[StepFacts] = []
    names: dict[Path, str] = {}

    def visit(path: Path, key: str | None) -> str:
        if path in names:
            return names[path]
        rec = record(store, path, key)
        name = rec.get("step") or path.name.split("-", 1)[-1]
        if name in names.values():
            name = f"{name}-{path.name[:8]}"
        names[path] = name
        facts = StepFacts(name, rec.get("builder") or rec.get("kind") or "?",
                          "failed" if rec.get("failure") else "built", path, key or rec.get("key"), rec)
        for input_name, info in sorted((rec.get("inputs") or {}).items()):
            sub = input_path(store, info, f"input {input_name} in the record of {store.rel(path)}")
            facts.inputs.append((input_name, visit(sub, info.get("key")) if sub is not None else None, info))
            if info.get("tune"):  # the input is a search's best trial: the search is part of the lineage too
                search = store.object_path(info["tune"], f"the search of input {input_name} of {store.rel(path)}")
                facts.inputs.append((f"{input_name} (search)", visit(search, None),
                                     {"kind": "step", "path": info["tune"]}))
        order.append(facts)
        return name

    for path, key in targets:
        visit(Path(path), key)
    return Facts(title, title, order)
