"""Lineage: where an artifact came from (`show`), why two differ (`diff`), how one reaches another
(`why-depends`). Reads only `.meta.json` files and the trace: no ML library is imported here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .store import Store


def meta(store: Store, path: Path) -> dict:
    m = store.meta_of(path)
    if m is None:
        raise UsageError(f"{path} has no lineage record (.meta.json): it is not an artifact of this store")
    return m


def _input_path(store: Store, info: dict) -> Path | None:
    if info.get("kind") == "step":
        return store.root / info["path"]
    if info.get("artifact"):
        return store.root / info["artifact"]
    return None


def table_summary(path: Path) -> dict | None:
    """Rows and columns of a table artifact, from the table.json its builder wrote."""
    try:
        return json.loads((Path(path) / "table.json").read_text())
    except (OSError, ValueError):
        return None


# ---- show ------------------------------------------------------------------------------------------
def show(store: Store, path: Path) -> dict:
    m = meta(store, path)
    m = {k: v for k, v in m.items() if k != "files"}
    m["files"] = len((store.meta_of(path) or {}).get("files", {}))
    m["keys"] = store.keys_of(path)
    m["roots"] = [name for name, p, _ in store.roots() if p == path]
    table = table_summary(path)
    if table:
        m["table"] = {"rows": table.get("rows"), "columns": [c.get("name") for c in table.get("columns", [])]}
    return m


def format_show(info: dict) -> str:
    drv = info.get("derivation") or {}
    lines = [f"artifact   {info.get('path')}", f"digest     {info.get('digest')}"]
    if info.get("kind") == "source":
        lines.append(f"source     {json.dumps(info.get('source'))}")
    else:
        lines += [f"step       {info.get('recipe')}:{info.get('step')}  (builder {info.get('builder')})",
                  f"key        {info.get('key')}"]
        if len(info.get("keys", [])) > 1:
            lines.append(f"also built by keys {', '.join(k for k in info['keys'] if k != info.get('key'))}")
        lines.append(f"builder    code {drv.get('builder_code')}")
        for k, v in sorted((drv.get("params") or {}).items()):
            lines.append(f"param      {k} = {json.dumps(v)}")
        for k, v in sorted((drv.get("extras") or {}).items()):
            lines.append(f"extra      {k} = {json.dumps(v)}")
        for name, i in sorted((info.get("inputs") or {}).items()):
            where = i.get("path") if i.get("kind") == "step" else json.dumps(
                {k: v for k, v in i.items() if k not in ("kind", "hash")})
            what = f"step {i.get('step')}" if i.get("kind") == "step" else f"{i.get('kind')} source"
            lines.append(f"input      {name}: {what} {where}" + (f" hash {i['hash']}" if i.get("hash") else ""))
        env = drv.get("env") or {}
        pkgs = ", ".join(f"{p}=={v}" for p, v in (env.get("packages") or {}).items())
        lines.append(f"env        python {env.get('python')}" + (f"; {pkgs}" if pkgs else ""))
        lines.append(f"built      on {info.get('host')} ({info.get('platform')}) in {info.get('seconds')} s"
                     + (f", git {info['git_rev'][:12]}" if info.get("git_rev") else ""))
        lines.append(f"log        {info.get('log')}")
    if info.get("table"):
        t = info["table"]
        lines.append(f"table      {t['rows']} rows; columns {', '.join(t['columns'])}")
    if info.get("metrics"):
        lines.append(f"metrics    {json.dumps(info['metrics'], sort_keys=True)}")
    lines.append(f"files      {info.get('files')}")
    if info.get("roots"):
        lines.append(f"roots      {', '.join(info['roots'])}")
    return "\n".join(lines)


# ---- diff ------------------------------------------------------------------------------------------
@dataclass
class Diff:
    """Causes are what a person changed (params, source data, code, environment); effects follow from them."""

    causes: list[str] = field(default_factory=list)
    effects: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"identical": not (self.causes or self.effects), "causes": self.causes, "effects": self.effects}


def _flat(d, prefix):
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}.{k}"
        out.update(_flat(v, key) if isinstance(v, dict) and v else {key: v})
    return out


def _changes(a: dict, b: dict, prefix: str) -> list[str]:
    fa, fb = _flat(a, prefix), _flat(b, prefix)
    return [f"{k}: {json.dumps(fa.get(k))} -> {json.dumps(fb.get(k))}" for k in sorted(set(fa) | set(fb))
            if fa.get(k) != fb.get(k)]


def diff(store: Store, a: Path, b: Path) -> Diff:
    result = Diff()
    _diff(store, Path(a), Path(b), "", result, seen=set())
    return result


def _diff(store: Store, a: Path, b: Path, trail: str, out: Diff, seen: set) -> None:
    if (a, b) in seen or a == b:
        return
    seen.add((a, b))
    ma, mb = store.meta_of(a) or {}, store.meta_of(b) or {}
    label = trail or (mb.get("step") or mb.get("path") or str(b))
    da, db = ma.get("derivation") or {}, mb.get("derivation") or {}
    if ma.get("kind") == "source" or mb.get("kind") == "source":
        if ma.get("source_hash") != mb.get("source_hash"):
            out.causes.append(f"{label}: source {mb.get('source')} content {ma.get('source_hash')} -> "
                              f"{mb.get('source_hash')}")
        return
    if da.get("builder") != db.get("builder"):
        out.causes.append(f"{label}: builder {da.get('builder')} -> {db.get('builder')}")
    elif da.get("builder_code") != db.get("builder_code"):
        out.causes.append(f"{label}: builder code {da.get('builder_code')} -> {db.get('builder_code')}")
    out.causes += [f"{label}: {c}" for c in _changes(da.get("params"), db.get("params"), "params")]
    out.causes += [f"{label}: {c}" for c in _changes(da.get("extras"), db.get("extras"), "extras")]
    out.causes += [f"{label}: {c}" for c in _changes(da.get("env"), db.get("env"), "env")]
    if da.get("seed") != db.get("seed"):
        out.causes.append(f"{label}: seed {da.get('seed')} -> {db.get('seed')}")
    ia, ib = ma.get("inputs") or {}, mb.get("inputs") or {}
    for name in sorted(set(ia) | set(ib)):
        x, y = ia.get(name), ib.get(name)
        here = f"{label} <- {name}"
        if x is None or y is None:
            out.causes.append(f"{label}: input {name} {'added' if x is None else 'removed'}")
        elif x.get("kind") == "step" and y.get("kind") == "step":
            if x.get("path") != y.get("path"):
                out.effects.append(f"{here}: input artifact {x.get('path')} -> {y.get('path')}")
                _diff(store, store.root / x["path"], store.root / y["path"], f"{label} <- {y.get('step')}",
                      out, seen)
        elif x.get("hash") != y.get("hash") or x.get("kind") != y.get("kind"):
            src = y.get("path") or y.get("pypi") or y.get("dvc")
            out.causes.append(f"{here}: source {src} content {x.get('hash')} -> {y.get('hash')}")
            if x.get("path") != y.get("path"):
                out.causes.append(f"{here}: source path {x.get('path')} -> {y.get('path')}")
    _diff_table(a, b, label, out)
    out.effects += [f"{label}: {c}" for c in _changes(ma.get("metrics"), mb.get("metrics"), "metrics")]


def _diff_table(a: Path, b: Path, label: str, out: Diff) -> None:
    ta, tb = table_summary(a), table_summary(b)
    if not (ta and tb):
        return
    if ta.get("rows") != tb.get("rows"):
        out.effects.append(f"{label}: table rows {ta.get('rows')} -> {tb.get('rows')}")
    ca = {c["name"]: c.get("type") for c in ta.get("columns", [])}
    cb = {c["name"]: c.get("type") for c in tb.get("columns", [])}
    for name in sorted(set(ca) | set(cb)):
        if name not in ca:
            out.effects.append(f"{label}: column {name} added ({cb[name]})")
        elif name not in cb:
            out.effects.append(f"{label}: column {name} removed")
        elif ca[name] != cb[name]:
            out.effects.append(f"{label}: column {name} type {ca[name]} -> {cb[name]}")


def format_diff(d: Diff, a: str, b: str) -> str:
    if not (d.causes or d.effects):
        return f"{a} and {b} have identical lineage"
    lines = [f"why {b} differs from {a}:", "causes:"]
    lines += [f"  {c}" for c in d.causes] or ["  (none recorded: the same derivation built different bytes; "
                                              "run `modelbuild build --check`)"]
    if d.effects:
        lines += ["effects:"] + [f"  {e}" for e in d.effects]
    return "\n".join(lines)


# ---- why-depends -----------------------------------------------------------------------------------
def why_depends(store: Store, a: Path, b: Path) -> list[str] | None:
    """The chain of steps from artifact a down to its dependency b, or None if a does not depend on b."""
    def walk(path: Path, chain: list[str], seen: set):
        if path == b:
            return chain
        if path in seen:
            return None
        seen.add(path)
        m = store.meta_of(path) or {}
        for name, info in sorted((m.get("inputs") or {}).items()):
            sub = _input_path(store, info)
            label = f"{name} ({sub.name if sub else info.get('path')})"
            if sub is not None:
                found = walk(sub, chain + [label], seen)
                if found:
                    return found
        return None

    return walk(Path(a), [Path(a).name], set())
