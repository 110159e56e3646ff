"""Small HTML builders: escaped text, tables with header markup, definition lists, and the page around them.
Everything is a string, so the page is exactly what these functions return: no clock, no randomness."""

from __future__ import annotations

import json
import math
from html import escape

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;margin:0;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:1.5rem}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.25rem;margin:0 0 .4rem}h3{font-size:1rem;margin:1.1rem 0 .4rem}
section.step,section.block{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:1rem 1.2rem;margin:1rem 0}
table{border-collapse:collapse;margin:.3rem 0;font-size:13px}
th,td{border:1px solid #dde1e6;padding:.2rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
pre{background:#f3f4f6;padding:.6rem;overflow-x:auto;white-space:pre-wrap;border-radius:4px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;margin:.3rem 0}dt{color:#56606e}dd{margin:0}
.badge{display:inline-block;border-radius:3px;padding:0 .4rem;font-size:12px;font-weight:600;vertical-align:middle}
.built,.passed{background:#dcf3e0;color:#1b5e20}.failed{background:#fde0e0;color:#b71c1c}
.not-built{background:#eceff1;color:#455a64}.searched{background:#e3f2fd;color:#0d47a1}.outdated{background:#fff3e0;color:#bf360c}
figure{margin:.5rem 0}figcaption{color:#56606e;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.charts figure{flex:1 1 440px;max-width:540px}
svg{max-width:100%;height:auto}nav ul{columns:3;padding-left:1.2rem}
a{color:#0b57d0}
"""


def e(value) -> str:
    return escape(str(value), quote=True)


def fmt(value) -> str:
    """A value as a person reads it: floats to 4 significant digits, lists and dicts as JSON."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def cell(value, tag: str = "td") -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<{tag} class="num">{e(fmt(value))}</{tag}>' if numeric else f"<{tag}>{e(fmt(value))}</{tag}>"


def table(header: list[str], rows: list[list], caption: str = "", raw: bool = False) -> str:
    """A table with <th scope=col> headers; `raw` cells are HTML already (links, badges)."""
    head = "".join(f'<th scope="col">{e(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" if raw and isinstance(c, str) else cell(c) for c in row)
                   + "</tr>" for row in rows)
    cap = f"<caption>{e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def dl(pairs: list[tuple[str, str]]) -> str:
    """A definition list; values are HTML already."""
    return "<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def badge(status: str) -> str:
    return f'<span class="badge {e(status.replace(" ", "-"))}">{e(status)}</span>'


def details(summary: str, body: str) -> str:
    return f"<details><summary>{e(summary)}</summary>{body}</details>"


def figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{e(caption)}</figcaption></figure>"


def page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<meta name=\"generator\" content=\"modelbuild report\">\n"
            f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n"
            "</body>\n</html>\n")
