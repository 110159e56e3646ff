"""`graph`: a recipe's steps, or an artifact's lineage, as DOT or Mermaid text."""

from __future__ import annotations

import re
from pathlib import Path

from .lineage import input_path, record
from .store import Store


def recipe_edges(recipe) -> tuple[list[tuple[str, str]], list[tuple]]:
    """Nodes (id, label) and edges (from, to[, label]) of a recipe: sources appear as their own nodes. A
    search (tune) gets a labelled edge from each step it searches (`model -> tuned`) in place of the inputs
    it takes over from them."""
    from .recipe import Source
    nodes, edges = [], []
    for name in recipe.order:
        step = recipe.steps[name]
        nodes.append((name, f"{name}\\n{step.builder_name}"))
        searched = step.builder.searched()
        edges += [(s, name, "trials") for s in searched]
        for input_name, ref in ({} if searched else step.inputs).items():
            if isinstance(ref, Source):
                src_id = f"{name}.{input_name}"
                dvc = ref.spec.get("dvc") or {}
                label = ref.spec.get("pypi") or ref.spec.get("path") or f"dvc {dvc.get('path')}@{dvc.get('rev', 'HEAD')}"
                nodes.append((src_id, f"{input_name}: {label}"))
                edges.append((src_id, name))
            else:
                edges.append((ref, name))
    return nodes, edges


def artifact_edges(store: Store, path: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """An artifact's lineage, each input followed as its consumer's build recorded it (see lineage.record)."""
    nodes, edges, seen, stack = [], [], set(), [(Path(path), None)]
    while stack:
        p, key = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        m = record(store, p, key)
        nodes.append((p.name, f"{m.get('step') or p.name.split('-', 1)[-1]}\\n{p.name[:12]}"))
        for name, info in (m.get("inputs") or {}).items():
            sub = input_path(store, info, f"input {name} in the record of {store.rel(p)}")
            if sub is not None:
                edges.append((sub.name, p.name))
                stack.append((sub, info.get("key")))
            else:
                src_id = f"{p.name}.{name}"
                nodes.append((src_id, f"{name}: {info.get('path')}"))
                edges.append((src_id, p.name))
    return nodes[::-1], edges[::-1]


def _ident(text: str) -> str:
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", text)


def to_dot(nodes, edges, title: str) -> str:
    lines = [f'digraph "{title}" {{', "  rankdir=LR;", "  node [shape=box, fontname=monospace];"]
    lines += [f'  {_ident(n)} [label="{label}"];' for n, label in nodes]
    lines += [f"  {_ident(a)} -> {_ident(b)}" + (f' [style=dashed, label="{e[0]}"]' if e else "") + ";"
              for a, b, *e in edges]
    return "\n".join(lines + ["}"])


def to_mermaid(nodes, edges, title: str) -> str:
    lines = ["flowchart LR", f"  %% {title}"]
    lines += [f'  {_ident(n)}["{label.replace(chr(92) + "n", "<br/>")}"]' for n, label in nodes]
    lines += [f"  {_ident(a)} " + (f"-. {e[0]} .->" if e else "-->") + f" {_ident(b)}" for a, b, *e in edges]
    return "\n".join(lines)
