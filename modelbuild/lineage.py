"""Lineage: where an artifact came from (`show`), why two differ (`diff`), how one reaches another
(`why-depends`). Reads only `.meta.json` files and the trace: no ML library is imported here.

`diff` also compares the tables it meets (an artifact's own, its subfolders' such as a split's train/,
and those of its inputs, recursively) from the small files modelbuild.table writes beside each
data.parquet: rows added and removed by a merge of the two sorted `rows.xxh` fingerprint files (stdlib
`array`), column and type changes from `table.json`, and statistic shifts from `stats.json`.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import sys
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from .codehash import files_hash
from .derivation import UNSET, Change, changes, field_changes
from .errors import UsageError
from .store import Store

TABLE, STATS, ROWS = "table.json", "stats.json", "rows.xxh"  # as modelbuild.table names them


def meta(store: Store, path: Path) -> dict:
    m = store.meta_of(path)
    if m is None:
        raise UsageError(f"{path} has no lineage record (.meta.json): it is not an artifact of this store")
    return m


def input_path(store: Store, info: dict, what: str) -> Path | None:
    """The artifact an input record names (a step's output, or a tagged artifact), refused unless it is
    an entry of objects/; None for other sources."""
    if info.get("kind") == "step":
        return store.object_path(info.get("path"), what)
    if info.get("artifact"):
        return store.object_path(info["artifact"], what)
    return None


def table_summary(path: Path) -> dict | None:
    """Rows and columns of a table artifact, from the table.json its builder wrote."""
    try:
        return json.loads((Path(path) / TABLE).read_text())
    except (OSError, ValueError):
        return None


# ---- show ------------------------------------------------------------------------------------------
def damage(store: Store, path: Path) -> list[str]:
    """The files of an artifact that no longer match the hashes recorded when it was built (its lineage
    record .meta.json included); [] for an intact artifact."""
    if store.check_artifact(path):
        return []
    if not Path(path).is_dir():
        return ["(the whole artifact: it is missing)"]
    return store.changed_files(path) or ["(its tree: a file's mode or a folder changed)"]


def show(store: Store, path: Path) -> dict:
    m = meta(store, path)
    m = {k: v for k, v in m.items() if k != "files"}
    m["damaged"] = damage(store, path)
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
    if info.get("damaged"):
        lines[:0] = [f"WARNING: changed since it was built: {', '.join(info['damaged'])}",
                     "WARNING: it no longer matches the hashes recorded at its build, so what follows may not be "
                     "true; `modelbuild verify` lists the damage, and the next build that needs it moves it aside "
                     "and rebuilds it"]
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
        for k, v in sorted((info.get("unkeyed") or {}).items()):
            lines.append(f"unkeyed    {k} = {json.dumps(v)}  (outside the key: cannot change the output)")
        for k, v in sorted((drv.get("extras") or {}).items()):
            lines.append(f"extra      {k} = {json.dumps(v)}")
        for what, rec in sorted((info.get("code") or {}).items()):
            if what != "builder_code" and isinstance(rec, dict) and isinstance(rec.get("files"), dict):
                lines.append(f"code       {what}: {', '.join(sorted(rec['files']))}")
        for name, i in sorted((info.get("inputs") or {}).items()):
            where = i.get("path") if i.get("kind") == "step" else json.dumps(
                {k: v for k, v in i.items() if k not in ("kind", "hash", "text")})
            what = f"step {i.get('step')}" if i.get("kind") == "step" else f"{i.get('kind')} source"
            lines.append(f"input      {name}: {what} {where}" + (f" hash {i['hash']}" if i.get("hash") else ""))
        env = drv.get("env") or {}
        pkgs = ", ".join(f"{p}=={v}" for p, v in (env.get("packages") or {}).items())
        lines.append(f"env        python {env.get('python')}" + (f"; {pkgs}" if pkgs else ""))
        lines.append(f"built      on {info.get('host')} ({info.get('platform')}) in {info.get('seconds')} s"
                     + (f", git {info['git_rev'][:12]}" if info.get("git_rev") else "")
                     + (f", Dask worker {info.get('worker_name')} ({info['worker']})" if info.get("worker") else ""))
        lines.append(f"log        {info.get('log')}")
    if info.get("table"):
        t = info["table"]
        lines.append(f"table      {t['rows']} rows; columns {', '.join(t['columns'])}")
    if info.get("metrics"):
        lines.append(f"metrics    {json.dumps(info['metrics'], sort_keys=True)}")
    if info.get("failure"):  # a kept artifact of a failed step (an evaluation whose gate did not pass)
        first = (info["failure"].get("message") or "").strip().splitlines()[:1]
        lines.append(f"failed     {info['failure'].get('type', 'BuildError')}: {first[0] if first else ''}")
    lines.append(f"files      {info.get('files')}")
    if info.get("roots"):
        lines.append(f"roots      {', '.join(info['roots'])}")
    return "\n".join(lines)


# ---- diff ------------------------------------------------------------------------------------------
@dataclass
class Diff:
    """Causes are what a person changed (params, source data, code, environment); effects follow from them.
    Notes say where a build record was gone, so what is listed rests on another record."""

    causes: list[str] = field(default_factory=list)
    effects: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    code: list[dict] = field(default_factory=list)  # {where, file, change, diff}: the code files a cause names

    def as_json(self) -> dict:
        return {"identical": not (self.causes or self.effects), "causes": self.causes, "effects": self.effects,
                "notes": self.notes, "code": self.code}


def _change(what: str, old, new) -> str:
    """'what: old -> new', or 'what: added (new)'/'what: removed (was old)' where one side lacks it."""
    if old is UNSET:
        return f"{what}: added ({json.dumps(new)})"
    if new is UNSET:
        return f"{what}: removed (was {json.dumps(old)})"
    return f"{what}: {json.dumps(old)} -> {json.dumps(new)}"


def _cause(c: Change) -> str:
    """One derivation change as `diff` words it (`plan` words the same changes its own way)."""
    words = {"builder": "builder", "builder_code": "builder code", "seed": "seed", "format": "derivation format"}
    if c.what in words:
        return f"{words[c.what]} {c.old} -> {c.new}"
    return _change(c.what, c.old, c.new)


CODE_WORDS = {"builder_code": "builder code", "extras.module": "module code", "extras.model": "schema model code"}
DIFF_LINES = 80  # of one file's unified diff


def _code_record(meta: dict, what: str, value) -> dict | None:
    """The per-file record of a code hash, if the record is the code the key saw (it hashes to `value`)."""
    rec = (meta.get("code") or {}).get(what)
    if isinstance(rec, dict) and isinstance(rec.get("files"), dict) and files_hash(rec["files"]) == value:
        return rec
    return None


def _code_cause(ma: dict, mb: dict, c: Change, label: str, out: Diff) -> str | None:
    """'module code changed: steps.py edited, util.py added', with each file's unified diff into `out.code`
    where both records keep its source; None where a record lacks the files (an older build)."""
    if c.what not in CODE_WORDS:
        return None
    a, b = _code_record(ma, c.what, c.old), _code_record(mb, c.what, c.new)
    if a is None or b is None:
        return None
    fa, fb = a["files"], b["files"]
    changed = [(n, "removed" if n not in fb else "added" if n not in fa else "edited")
               for n in sorted(set(fa) | set(fb)) if fa.get(n) != fb.get(n)]
    for name, change in changed:
        old, new = a.get("sources", {}).get(name), b.get("sources", {}).get(name)
        text = None
        if (old is not None or change == "added") and (new is not None or change == "removed"):
            text = _unified(name, old or "", new or "")
        out.code.append({"where": label, "file": name, "change": change, "diff": text})
    return f"{CODE_WORDS[c.what]} changed: " + ", ".join(f"{n} {what}" for n, what in changed)


def _unified(name: str, old: str, new: str, old_name: str | None = None) -> str:
    """The unified diff of two texts, cut at DIFF_LINES."""
    lines = list(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                      f"a/{old_name or name}", f"b/{name}"))
    more = len(lines) - DIFF_LINES
    return "".join(x if x.endswith("\n") else x + "\n" for x in lines[:DIFF_LINES]) + \
        (f"... {more} more lines\n" if more > 0 else "")


SOURCE_FIELDS = ("kind", "pypi", "repo", "path", "rev", "commit", "tag", "prefix", "log", "glob", "since", "until",
                 "last")  # what names a source in an input's record (sources*.py), as a person wrote or moved it


def _source_cause(x: dict, y: dict) -> str:
    """A changed source input, as nix-diff shows a changed input: what names it on each side, then its content:
    'source path: data.csv -> data-v2.csv (in /data); content 4b50... -> 9786...', or, where only the content
    changed, 'source /data/data.csv: content 4b50... -> 9786...'."""
    changed = [k for k in SOURCE_FIELDS if x.get(k) != y.get(k)]
    if "rev" in changed:  # the commit follows the revision; it is news only when a branch moved
        changed.remove("commit")
    content = (f"content {x.get('hash')} -> {y.get('hash')}" if x.get("hash") != y.get("hash")
               else f"content {y.get('hash')} (the same)")
    if not changed:
        name = next((y[k] for k in ("path", "tag", "log", "prefix", "artifact") if y.get(k)), y.get("kind"))
        return f"source {name}: {content}"
    named = next((y[k] for k in ("path", "tag", "log") if y.get(k) and k not in changed), None)
    return f"source {named + ': ' if named else ''}" + "; ".join([*(_moved(k, x.get(k), y.get(k)) for k in changed),
                                                                   content])


def _moved(what: str, old, new) -> str:
    """'path: data.csv -> data-v2.csv (in /data)': two absolute paths relative to the folder they share."""
    if old is None or new is None:
        return f"{what}: {'added' if old is None else 'removed'} ({new if old is None else old})"
    if what in ("path", "log", "repo") and all(str(p).startswith("/") for p in (old, new)):
        common = os.path.commonpath([os.path.dirname(old), os.path.dirname(new)])
        if common != "/":
            return f"{what}: {os.path.relpath(old, common)} -> {os.path.relpath(new, common)} (in {common})"
    return f"{what}: {old} -> {new}"


def diff(store: Store, a: Path, b: Path, key_a: str | None = None, key_b: str | None = None) -> Diff:
    """Why b differs from a. `key_a`/`key_b` name the build of each to compare (a root knows it); without
    one, an artifact's own lineage record (its first build) is used."""
    result = Diff()
    _diff(store, (Path(a), key_a), (Path(b), key_b), "", result, seen=set())
    return result


def record(store: Store, path: Path, key: str | None, out: Diff | None = None) -> dict:
    """What the build of `key` recorded (derivation, inputs, metrics). Under early cutoff one artifact has
    several builds, and its .meta.json is only the first's: a consumer names the key it was built from, and
    that build's trace record is the truth about it. Where the trace has no record of `key`, the artifact's
    own record stands in, with the derivation of `key` (drv/) when that is intact; `out` gets a note."""
    own = store.meta_of(path) or {}
    if not key or own.get("key") == key:
        return own
    hit = store.lookup(key)
    if hit:
        return hit[1]
    drv = store.read_drv(key)
    if out is not None:
        what = "its derivation (drv/) and the artifact's first build record" if drv else \
            f"the record of the artifact's first build (key {own.get('key')})"
        out.notes.append(f"{store.rel(path)}: the trace has no record of build {key}; compared {what} instead")
    return {**own, "key": key, "derivation": drv} if drv else own


def _diff(store: Store, a: tuple, b: tuple, trail: str, out: Diff, seen: set) -> None:
    if (a, b) in seen or a[0] == b[0]:
        return
    seen.add((a, b))
    ma, mb = record(store, *a, out), record(store, *b, out)
    for path in (a[0], b[0]):
        changed = damage(store, path)
        note = f"{store.rel(path)} changed since it was built ({', '.join(changed)}): what it records may not be true"
        if changed and note not in out.notes:
            out.notes.append(note)
    label = trail or (mb.get("step") or mb.get("path") or str(b[0]))
    if ma.get("kind") == "source" or mb.get("kind") == "source":
        if ma.get("source_hash") != mb.get("source_hash"):
            out.causes.append(f"{label}: source {mb.get('source')} content {ma.get('source_hash')} -> "
                              f"{mb.get('source_hash')}")
        return
    found = changes(ma.get("derivation") or {}, mb.get("derivation") or {})
    for c in found:
        if c.section != "inputs":  # inputs: by lineage below
            out.causes.append(f"{label}: {_code_cause(ma, mb, c, label, out) or _cause(c)}")
    ia, ib = ma.get("inputs") or {}, mb.get("inputs") or {}
    for name in sorted(set(ia) | set(ib)):
        x, y = ia.get(name), ib.get(name)
        here = f"{label} <- {name}"
        if x is None or y is None:
            out.causes.append(f"{label}: input {name} {'added' if x is None else 'removed'}")
        elif x.get("kind") == "step" and y.get("kind") == "step":
            if x.get("path") != y.get("path"):  # the same bytes explain nothing, whichever build made them
                out.effects.append(f"{here}: input artifact {x.get('path')} -> {y.get('path')}")
                what = f"input {name} in the record of {label}"
                _diff(store, (input_path(store, x, what), x.get("key")), (input_path(store, y, what), y.get("key")),
                      f"{label} <- {y.get('step')}", out, seen)
        elif x.get("hash") != y.get("hash") or x.get("kind") != y.get("kind"):
            out.causes.append(f"{here}: {_source_cause(x, y)}")
            if isinstance(x.get("text"), str) and isinstance(y.get("text"), str):  # a small script, kept whole
                names = [os.path.basename(str(v.get("path"))) for v in (x, y)]
                out.code.append({"where": here, "file": names[1], "change": "edited",
                                 "diff": _unified(names[1], x["text"], y["text"], names[0])})
    _diff_table(a[0], b[0], label, out)
    _diff_tune(a[0], b[0], label, out)
    metrics = field_changes(ma.get("metrics") or {}, mb.get("metrics") or {}, "metrics")
    out.effects += [f"{label}: {_change(c.what, c.old, c.new)}" for c in metrics]


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _point(params: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(params.items()))


def _diff_tune(a: Path, b: Path, label: str, out: Diff, shown: int = 10) -> None:
    """Two tune artifacts: which trials (points of the space) one has and the other not, which gave another
    result, and how the best trial moved; from their trials.json and best.json."""
    ta, tb = _read_json(Path(a) / "trials.json"), _read_json(Path(b) / "trials.json")
    ba, bb = _read_json(Path(a) / "best.json"), _read_json(Path(b) / "best.json")
    if not (isinstance(ta, dict) and isinstance(tb, dict) and isinstance(ba, dict) and isinstance(bb, dict)):
        return
    pa = {_point(t["params"]): t for t in ta.get("trials", [])}
    pb = {_point(t["params"]): t for t in tb.get("trials", [])}
    added, removed = [k for k in pb if k not in pa], [k for k in pa if k not in pb]
    changed = [k for k in pb if k in pa and (pa[k]["status"], pa[k]["objective"]) != (pb[k]["status"], pb[k]["objective"])]
    if added or removed or changed or len(pa) != len(pb):
        out.effects.append(f"{label}: trials {len(ta.get('trials', []))} -> {len(tb.get('trials', []))}: "
                           f"{len(added)} added, {len(removed)} removed, {len(changed)} with another result")
    metric = bb.get("metric")
    for what, keys, side in (("added", added, pb), ("removed", removed, pa)):
        for k in keys[:shown]:
            t = side[k]
            result = f"{metric} {t['objective']}" if t["status"] == "ok" else t["status"]
            out.effects.append(f"{label}: trial {what}: #{t['number']} {k}: {result}")
        if len(keys) > shown:
            out.effects.append(f"{label}: ... and {len(keys) - shown} more trials {what}")
    for k in changed[:shown]:
        x, y = pa[k], pb[k]
        out.effects.append(f"{label}: trial {k}: {metric} {x['objective'] if x['status'] == 'ok' else x['status']}"
                           f" -> {y['objective'] if y['status'] == 'ok' else y['status']}")
    if (ba.get("digest"), ba.get("objective")) != (bb.get("digest"), bb.get("objective")):
        moved = [f"{p} {json.dumps(ba['params'].get(p))} -> {json.dumps(v)}" for p, v in sorted(bb["params"].items())
                 if ba.get("params", {}).get(p) != v]
        out.effects.append(f"{label}: best {metric} {ba.get('objective')} -> {bb.get('objective')} (trial "
                           f"#{ba.get('trial')} -> #{bb.get('trial')}; {', '.join(moved) or 'same params'}; "
                           f"{ba.get('path')} -> {bb.get('path')})")


def _diff_table(a: Path, b: Path, label: str, out: Diff) -> None:
    """Compare two table artifacts, and the tables in their subfolders (a split's train/, test/, ...)."""
    _diff_one_table(Path(a), Path(b), label, out)
    subs_a, subs_b = _subtables(a), _subtables(b)
    for name in sorted(subs_a | subs_b):
        if name not in subs_a or name not in subs_b:
            what, where = ("added", b) if name not in subs_a else ("removed", a)
            rows = (table_summary(Path(where) / name) or {}).get("rows")
            out.effects.append(f"{label}/{name}: table {what} ({rows} rows)")
        else:
            _diff_one_table(Path(a) / name, Path(b) / name, f"{label}/{name}", out)


def _subtables(path: Path) -> set[str]:
    try:
        return {p.name for p in Path(path).iterdir()
                if p.is_dir() and not p.name.startswith(".") and (p / TABLE).is_file()}
    except OSError:
        return set()


def _diff_one_table(a: Path, b: Path, label: str, out: Diff) -> None:
    ta, tb = table_summary(a), table_summary(b)
    if not (ta and tb):
        return
    changes = _row_changes(a / ROWS, b / ROWS)  # None for tables written without rows.xxh
    if changes is not None and any(changes):
        out.effects.append(f"{label}: rows: {changes[0]} added, {changes[1]} removed "
                           f"({ta.get('rows')} -> {tb.get('rows')})")
    elif changes is None and ta.get("rows") != tb.get("rows"):
        out.effects.append(f"{label}: rows: {ta.get('rows')} -> {tb.get('rows')}")
    ca = {c["name"]: c.get("type") for c in ta.get("columns", [])}
    cb = {c["name"]: c.get("type") for c in tb.get("columns", [])}
    for name in sorted(set(ca) | set(cb)):
        if name not in ca:
            out.effects.append(f"{label}: column {name} added ({cb[name]})")
        elif name not in cb:
            out.effects.append(f"{label}: column {name} removed")
        elif ca[name] != cb[name]:
            out.effects.append(f"{label}: column {name} type {ca[name]} -> {cb[name]}")
    sa, sb = _column_stats(a), _column_stats(b)
    for name in [c["name"] for c in tb.get("columns", [])]:
        if name in sa and name in sb:
            out.effects += [f"{label}: {name}: {shift}" for shift in _stat_shifts(sa[name], sb[name])]


def _row_changes(a: Path, b: Path) -> tuple[int, int] | None:
    """(added, removed) rows between two sorted row-fingerprint files, by a merge; None if either is missing.

    Rows are a multiset: a row present twice in a and three times in b counts as one added.
    """
    try:
        raw_a, raw_b = a.read_bytes(), b.read_bytes()
    except OSError:
        return None
    if raw_a == raw_b:
        return 0, 0
    xs, ys = array("Q"), array("Q")
    try:
        xs.frombytes(raw_a)
        ys.frombytes(raw_b)
    except ValueError:  # not a whole number of fingerprints: not a file this version wrote
        return None
    if sys.byteorder == "big":
        xs.byteswap()
        ys.byteswap()
    i = j = same = 0
    na, nb = len(xs), len(ys)
    while i < na and j < nb:
        x, y = xs[i], ys[j]
        if x == y:
            same, i, j = same + 1, i + 1, j + 1
        elif x < y:
            i += 1
        else:
            j += 1
    return nb - same, na - same


def _column_stats(path: Path) -> dict:
    try:
        stats = json.loads((Path(path) / STATS).read_text())
        return {c["name"]: c for c in stats.get("columns", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


SHIFT_TOLERANCE = 1e-3  # a mean or std that moves less than this share of the column's scale is not reported
NULL_RATE_TOLERANCE = 1e-3  # nor a null rate that moves less than this (0.1 percentage point)


def _stat_shifts(x: dict, y: dict) -> list[str]:
    """'mean 38.58 -> 39.10 (+1.3%)', 'null rate 0.00% -> 1.20%', 'min 17 -> 16', 'distinct 9 -> 10'."""
    shifts = []
    ra, rb = _null_rate(x), _null_rate(y)
    if ra is not None and rb is not None and abs(rb - ra) > NULL_RATE_TOLERANCE:
        shifts.append(f"null rate {100 * ra:.2f}% -> {100 * rb:.2f}%")
    for key in ("mean", "std"):
        a, b = x.get(key), y.get(key)
        if not (_number(a) and _number(b)):
            continue
        spread = [abs(s) for s in (x.get("std"), y.get("std")) if _number(s)] if key == "mean" else []
        scale = max(abs(a), abs(b), *spread)
        if abs(b - a) > SHIFT_TOLERANCE * scale:
            pa, pb = _pair(a, b)
            shifts.append(f"{key} {pa} -> {pb}" + (f" ({(b - a) / abs(a):+.1%})" if a else ""))
    for key in ("min", "max", "distinct"):
        a, b = x.get(key), y.get(key)
        if a is not None and b is not None and a != b:
            pa, pb = _pair(a, b) if _number(a) and _number(b) else (a, b)
            shifts.append(f"{key} {pa} -> {pb}")
    return shifts


def _null_rate(s: dict) -> float | None:
    count, nulls = s.get("count"), s.get("nulls")
    if not (isinstance(count, int) and isinstance(nulls, int)) or count + nulls == 0:
        return None
    return nulls / (count + nulls)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _pair(a, b) -> tuple[str, str]:
    """Two numbers spelled alike: ints as they are, floats to 4 significant digits of the larger (more if
    they would read the same)."""
    if isinstance(a, int) and isinstance(b, int):
        return str(a), str(b)
    top = max(abs(a), abs(b))
    digits = max(0, 3 - math.floor(math.log10(top))) if top else 0
    while f"{a:.{digits}f}" == f"{b:.{digits}f}" and digits < 12:
        digits += 1
    return f"{a:.{digits}f}", f"{b:.{digits}f}"


def format_diff(d: Diff, a: str, b: str) -> str:
    if not (d.causes or d.effects):
        return f"{a} and {b} have identical lineage"
    lines = [f"why {b} differs from {a}:", "causes:"]
    lines += [f"  {c}" for c in d.causes] or ["  (none recorded: the same derivation built different bytes; "
                                              "run `modelbuild build --check`)"]
    for f in d.code:
        if f["diff"]:
            lines += [f"  {f['where']}: {f['file']} ({f['change']}):"] + [f"    {x}" for x in f["diff"].splitlines()]
    if d.effects:
        lines += ["effects:"] + [f"  {e}" for e in d.effects]
    return "\n".join(lines + [f"note: {n}" for n in d.notes])


# ---- why-depends -----------------------------------------------------------------------------------
def why_depends(store: Store, a: Path, b: Path) -> list[str] | None:
    """The chain of steps from artifact a down to its dependency b, or None if a does not depend on b.
    Each input is followed as its consumer's build recorded it."""
    def walk(path: Path, key: str | None, chain: list[str], seen: set):
        if path == b:
            return chain
        if (path, key) in seen:
            return None
        seen.add((path, key))
        for name, info in sorted((record(store, path, key).get("inputs") or {}).items()):
            sub = input_path(store, info, f"input {name} in the record of {store.rel(path)}")
            if sub is not None:
                found = walk(sub, info.get("key"), chain + [f"{name} ({sub.name})"], seen)
                if found:
                    return found
        return None

    return walk(Path(a), None, [Path(a).name], set())
