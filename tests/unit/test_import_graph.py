"""The package's import graph: every import in every module (lazy ones inside functions included) has no
cycle, and no core module imports a builder, tune, training or evaluation module. The core is what every
verb and every future executor loads; a builder reaching it through the core would tie them together
(the builder registry, `modelbuild.builders`, looks builders up by name and is allowed)."""

from __future__ import annotations

import ast
from pathlib import Path

import modelbuild

ROOT = Path(modelbuild.__file__).resolve().parent
CORE = ("recipe", "derivation", "store", "realise", "lineage", "hashing", "codehash", "graph", "gc", "errors")
NOT_IN_CORE = ("modelbuild.builders.", "modelbuild.tune", "modelbuild.training", "modelbuild.evaluation")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The package modules `name` imports anywhere in its source (`from . import x` names x too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {n for n in names if n in modules and n != name}
    return found


def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on.discard(component[-1])
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_no_core_module_imports_a_builder_tune_training_or_evaluation_module():
    edges = graph()
    bad = sorted(f"{m} imports {n}" for m in (f"modelbuild.{c}" for c in CORE) for n in edges[m]
                 if n.startswith(NOT_IN_CORE))
    assert bad == []


def test_the_checks_see_lazy_imports_and_cycles():
    """The scan itself: an import inside a function counts, and a two-module loop is a cycle."""
    edges = graph()
    assert "modelbuild.codehash" in edges["modelbuild.builders"]  # imported inside builder_code_hash only
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
