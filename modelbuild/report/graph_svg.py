"""The build graph as inline SVG: steps in columns by depth (inputs to the left), coloured by status, each a
link to its section. Drawn here rather than by Graphviz so that the report needs no program on the PATH and
the same facts always give the same bytes."""

from __future__ import annotations

from .facts import Facts
from .html import e

W, H, GAP_X, GAP_Y, PAD = 160, 44, 56, 14, 10
FILL = {"built": ("#dcf3e0", "#2e7d32"), "failed": ("#fde0e0", "#c62828"), "not built": ("#eceff1", "#78909c"),
        "searched": ("#e3f2fd", "#1565c0"), "outdated": ("#fff3e0", "#e65100")}


def _layers(facts: Facts) -> dict[str, int]:
    """Each step's column: one more than its deepest upstream step."""
    depth: dict[str, int] = {}
    for s in facts.steps:  # inputs come first in both recipe order and lineage order
        ups = [depth.get(up, 0) for _, up, _ in s.inputs if up is not None]
        depth[s.name] = 1 + max(ups) if ups else 0
    return depth


def _short(text: str, n: int = 20) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def build_graph(facts: Facts) -> str:
    depth = _layers(facts)
    columns: dict[int, list[str]] = {}
    for s in facts.steps:
        columns.setdefault(depth[s.name], []).append(s.name)
    pos = {name: (PAD + col * (W + GAP_X), PAD + row * (H + GAP_Y))
           for col, names in columns.items() for row, name in enumerate(names)}
    width = PAD * 2 + (max(columns, default=0) + 1) * (W + GAP_X) - GAP_X
    height = PAD * 2 + max((len(n) for n in columns.values()), default=1) * (H + GAP_Y) - GAP_Y
    edges = []
    for s in facts.steps:
        for _, up, _ in s.inputs:
            if up in pos:
                (x1, y1), (x2, y2) = pos[up], pos[s.name]
                a, b, mid = (x1 + W, y1 + H / 2), (x2, y2 + H / 2), (x1 + W + x2) / 2
                edges.append(f'<path d="M{a[0]:g},{a[1]:g} C{mid:g},{a[1]:g} {mid:g},{b[1]:g} {b[0] - 4:g},{b[1]:g}" '
                             'fill="none" stroke="#90a4ae" stroke-width="1.4" marker-end="url(#arrow)"/>')
    nodes = []
    for s in facts.steps:
        x, y = pos[s.name]
        fill, stroke = FILL.get(s.status, FILL["not built"])
        nodes.append(f'<a href="#{e(s.anchor)}"><title>{e(s.name)} ({e(s.builder)}): {e(s.status)}</title>'
                     f'<rect x="{x}" y="{y}" width="{W}" height="{H}" rx="6" fill="{fill}" stroke="{stroke}" '
                     f'stroke-width="1.5"/><text x="{x + W / 2:g}" y="{y + 18}" text-anchor="middle" '
                     f'font-weight="600" font-size="13">{e(_short(s.name))}</text><text x="{x + W / 2:g}" '
                     f'y="{y + 34}" text-anchor="middle" font-size="11" fill="#455a64">{e(_short(s.builder))} · '
                     f'{e(s.status)}</text></a>')
    label = f"Build graph of {facts.title}: " + "; ".join(
        f"{s.name} ({s.status})" + (f" from {', '.join(up for _, up, _ in s.inputs if up)}" if any(
            up for _, up, _ in s.inputs) else "") for s in facts.steps)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{e(label)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" font-family="system-ui,sans-serif">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#90a4ae"/></marker></defs>'
            + "".join(edges) + "".join(nodes) + "</svg>")
