"""split: divide one table into named tables (train, validation, test, ...) by rows, class, group or time.

Output layout::

    <artifact>/
      train/        data.parquet table.json stats.json rows.xxh   (each split is a whole table artifact)
      validation/   ...
      test/         ...
      split.json    method, fractions, order, seed, column, rows per split; and per method:
                    stratified: classes {split: {class: rows}}; group: groups {split: groups};
                    time: ranges {split: {min, max}}

Class keys in split.json are the value itself for strings, and its JSON spelling otherwise (null, 1, true).

Methods (`fractions` in their order, first split first; the order is recorded in `order` because the key
sorts mappings):

- random: a seeded permutation; split i takes its share of rows by largest remainder, so every split is
  within one row of `fraction * rows`.
- stratified: the same within each class of `stratify` (null is a class): each split gets the floor or the
  ceiling of its share of every class, as largest-remainder allocation would, and which splits take the
  ceilings is chosen jointly across classes (dependent rounding on the class-by-split table), so the split
  totals are also within one row of their shares.
- group: each value of `group` goes wholly to one split, chosen by a seeded 64-bit hash of the value
  against the cumulative fractions. A group keeps its split when rows or groups are added, so the
  fractions hold in expectation over groups, not to the row.
- time: rows sorted by `time` (nulls last, ties in input order); the earliest go to the first split and
  the latest to the last. A boundary that would cut through equal times moves to the nearer end of the
  tie (the earlier on a draw), so ties never straddle splits.

Rows keep their input order within each split, except for `time`, whose splits are sorted by time.
The output depends only on the input table and the params: the same input gives the same bytes.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from ..errors import RecipeError
from ..table import input_table, require_columns, stable_json, write_table
from .base import Builder, Param

METHODS = ("random", "stratified", "group", "time")
COLUMN_PARAM = {"stratified": "stratify", "group": "group", "time": "time"}
DEFAULT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class Split(Builder):
    """Split a table into train/validation/test tables.

    Example::

        split:
          builder: split
          inputs: {data: clean}
          params: {method: stratified, stratify: income, fractions: {train: 0.8, validation: 0.1, test: 0.1}}
    """

    name = "split"
    env = ("pyarrow", "numpy")  # numpy's Generator streams may change between versions
    params = {
        "fractions": Param("dict", default=DEFAULT_FRACTIONS,
                           help="split name -> fraction of the rows, summing to 1, e.g. {train: 0.8, test: 0.2}"),
        "order": Param("list", help="the split names, first (earliest for `time`) first; default: the order "
                                    "of `fractions`"),
        "method": Param("str", default="random", choices=METHODS),
        "stratify": Param("str", help="stratified: the class column whose proportions every split keeps"),
        "group": Param("str", help="group: the column whose values never appear in two splits"),
        "time": Param("str", help="time: the column to sort by; earliest rows go to the first split"),
        "seed": Param("int", default=0, help="seed of the permutation (random, stratified) or hash (group)"),
        "table": Param("str", help="the table to read when the input holds several, e.g. `train` of a split"),
    }

    def normalise(self, params: dict, *, file: str | None, step: str) -> dict:
        out = super().normalise(params, file=file, step=step)
        out["fractions"] = {name: float(f) for name, f in out["fractions"].items()}
        out["order"] = list(out["order"] or out["fractions"])
        return out

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        def fail(key, message):
            raise RecipeError(message, file=file, step=step, key=f"params.{key}")

        fractions = params["fractions"]
        if not fractions:
            fail("fractions", "fractions is empty; name at least one split, e.g. {train: 0.8, test: 0.2}")
        for name, f in fractions.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                fail("fractions", f"split name {name!r} must be a folder name: letters, digits, '_' and '-', "
                                  f"starting with a letter or digit")
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
                fail(f"fractions.{name}", f"the fraction of split {name!r} must be a number from 0 to 1, got {f!r}")
        total = sum(fractions.values())
        if abs(total - 1) > 1e-9:
            shares = ", ".join(f"{k}: {v}" for k, v in fractions.items())
            fail("fractions", f"fractions must sum to 1, but {shares} sum to {total:.12g}; adjust them so they do")
        order = params["order"]
        if order is not None and sorted(map(str, order)) != sorted(fractions):
            fail("order", f"order must list each split of fractions once ({', '.join(fractions)}), got {order!r}")
        if params["seed"] is not None and params["seed"] < 0:
            fail("seed", f"seed must be 0 or more, got {params['seed']}")
        method = params["method"]
        for m, key in COLUMN_PARAM.items():
            if m == method and not params[key]:
                fail(key, f"method {method!r} needs the column to use: set `{key}: <column>`")
            if m != method and params[key]:
                fail(key, f"`{key}:` is used only by method {m!r}, but method is {method!r}; "
                          f"set `method: {m}` or remove `{key}:`")

    def build(self, ctx) -> None:
        import numpy as np

        from ..table import read_table

        p = ctx.params
        source = input_table(ctx, p["table"])
        table = read_table(source)
        key = COLUMN_PARAM.get(p["method"])
        column = p[key] if key else None
        require_columns({key: column} if key else {}, table.schema, ctx.step)
        names = p["order"]
        weights = [Fraction(repr(p["fractions"][name])) for name in names]
        info = {"method": p["method"], "fractions": p["fractions"], "order": names, "seed": p["seed"],
                "column": column}
        n = table.num_rows
        if p["method"] in ("random", "stratified"):
            parts, classes = _by_class(table, column, weights, p["seed"])
            if column:
                info["classes"] = {name: dict(zip(classes["keys"], counts, strict=True))
                                   for name, counts in zip(names, classes["cells"], strict=True)}
        elif p["method"] == "group":
            parts, groups = _by_group(table.column(column), weights, p["seed"])
            info["groups"] = dict(zip(names, groups, strict=True))
        else:
            parts, ranges = _by_time(table.column(column), _largest_remainder(n, weights))
            info["ranges"] = dict(zip(names, ranges, strict=True))
        rows = {}
        for name, rows_of in zip(names, parts, strict=True):
            rows[name] = len(rows_of)
            write_table(table.take(np.asarray(rows_of, dtype=np.int64)), ctx.out / name)
        info["rows"] = rows
        (ctx.out / "split.json").write_text(stable_json(info))
        ctx.log.info("split %d rows %s: %s", n, p["method"], ", ".join(f"{k} {v}" for k, v in rows.items()))


def _largest_remainder(n: int, weights: list[Fraction]) -> list[int]:
    """Whole counts summing to n, each the floor or ceiling of its share; larger remainders round up first."""
    total = sum(weights)
    quotas = [n * w / total for w in weights]
    counts = [math.floor(q) for q in quotas]
    ranked = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in ranked[:n - sum(counts)]:
        counts[i] += 1
    return counts


def _by_class(table, column, weights, seed):
    """random (one class) or stratified: row indices per split, in input order, and the class table."""
    import numpy as np

    from ..table import _plain

    n = table.num_rows
    if column:
        encoded = _plain(table.column(column)).dictionary_encode(null_encoding="encode")
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        keys = [_class_key(v) for v in encoded.dictionary.to_pylist()]
        sizes = np.bincount(codes, minlength=len(keys)).tolist()
        cells = _round_table(sizes, weights)
    else:
        codes, keys, sizes = np.zeros(n, dtype=np.int64), [None], [n]
        cells = [_largest_remainder(n, weights)]
    perm = np.random.default_rng(seed).permutation(n)
    grouped = perm[np.argsort(codes[perm], kind="stable")]  # by class, in random order within each class
    labels = np.concatenate([np.repeat(np.arange(len(weights)), row) for row in cells] or [np.empty(0, int)])
    split_of = np.empty(n, dtype=np.int64)
    split_of[grouped] = labels
    parts = [np.flatnonzero(split_of == i) for i in range(len(weights))]
    by_split = [[row[i] for row in cells] for i in range(len(weights))]
    return parts, {"keys": keys, "cells": by_split}


def _round_table(sizes: list[int], weights: list[Fraction]) -> list[list[int]]:
    """Counts per class (row) and split (column): each cell the floor or ceiling of size * share, each row
    summing to its class size, each column within one of its share of all rows.

    Dependent rounding (Gandhi et al., 2006): take the fractional parts of the quotas as a bipartite graph
    of classes and splits; repeatedly find a cycle, or a path between two splits, of fractional edges and
    shift alternate edges up and down until one of them is whole. Every class sum is an integer and is kept;
    a split's sum moves only while it ends a path, when one fractional edge is left to it, so it ends at
    the floor or the ceiling of its share. The direction of each shift is the smaller of the two moves.
    """
    total, k = sum(weights), len(weights)
    cells, frac = [], {}
    for c, size in enumerate(sizes):
        quotas = [size * w / total for w in weights]
        cells.append([math.floor(q) for q in quotas])
        frac.update({(c, i): q - cells[c][i] for i, q in enumerate(quotas) if q != cells[c][i]})
    stacks = [[c for c in range(len(sizes)) if (c, i) in frac][::-1] for i in range(k)]  # lowest class on top

    def next_edge(vertex, previous):
        side, v = vertex
        if side == "c":
            return next(((v, i) for i in range(k) if (v, i) in frac and (v, i) != previous), None)
        stack, hidden, found = stacks[v], [], None
        while stack:
            c = stack[-1]
            if (c, v) not in frac:
                stack.pop()
            elif (c, v) == previous:
                hidden.append(stack.pop())
            else:
                found = (c, v)
                break
        stack.extend(hidden)
        return found

    def walk(start):
        """Edges of a cycle (True) or of a path to a split with no other fractional edge (False)."""
        edges, seen, vertex, previous = [], {start: 0}, start, None
        while True:
            edge = next_edge(vertex, previous)
            if edge is None:
                return edges, False, vertex
            other = ("s", edge[1]) if vertex[0] == "c" else ("c", edge[0])
            edges.append(edge)
            if other in seen:
                return edges[seen[other]:], True, other
            seen[other], vertex, previous = len(edges), other, edge

    classes = iter(range(len(sizes)))
    c = next(classes, None)
    while frac:
        while not any((c, i) in frac for i in range(k)):
            c = next(classes)
        edges, cycle, end = walk(("c", c))
        if not cycle:  # `end` is a split with one fractional edge: walk again from it for a maximal path
            edges, cycle, _ = walk(end)
        up, down = edges[0::2], edges[1::2]
        rise = min([1 - frac[e] for e in up] + [frac[e] for e in down])
        fall = min([frac[e] for e in up] + [1 - frac[e] for e in down])
        if fall < rise:
            up, down, rise = down, up, fall
        for e in up:
            frac[e] += rise
        for e in down:
            frac[e] -= rise
        for e in edges:
            if frac[e] in (0, 1):
                cells[e[0]][e[1]] += int(frac.pop(e))
    return cells


def _by_group(column, weights, seed):
    """Row indices per split, each group value sent whole to the split its seeded hash falls in."""
    import numpy as np

    from ..table import column_hashes, mix64

    hashes = column_hashes(column)
    spot = mix64(hashes ^ mix64(np.array([seed % (1 << 64)], dtype=np.uint64)))
    total, cumulative, bounds = sum(weights), Fraction(0), []
    for w in weights[:-1]:
        cumulative += w
        bounds.append(min(int(cumulative / total * (1 << 64)), (1 << 64) - 1))
    split_of = np.searchsorted(np.array(bounds, dtype=np.uint64), spot, side="right")
    parts = [np.flatnonzero(split_of == i) for i in range(len(weights))]
    return parts, [int(np.unique(hashes[part]).size) for part in parts]


def _by_time(column, counts):
    """Row indices per split in time order, with boundaries moved off ties, and each split's time range."""
    import numpy as np
    import pyarrow.compute as pc

    from ..table import _iso, _plain

    column = _plain(column)
    rank = pc.rank(column, sort_keys="ascending", tiebreaker="dense").to_numpy()
    order = np.argsort(rank, kind="stable")
    ranked = rank[order]
    edges = np.concatenate([[0], np.flatnonzero(np.diff(ranked)) + 1, [len(order)]])
    bounds, target = [0], 0
    for count in counts[:-1]:
        target += count
        at = int(np.searchsorted(edges, target))
        lo, hi = int(edges[at - 1]) if at else 0, int(edges[min(at, len(edges) - 1)])
        bounds.append(hi if hi == target or hi - target < target - lo else lo)
    bounds.append(len(order))
    parts = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    def value(i):
        v = column[int(i)].as_py()
        return v if v is None or isinstance(v, (str, int, float)) else _iso(v)

    ranges = [{"min": value(part[0]), "max": value(part[-1])} if len(part) else None for part in parts]
    return parts, ranges


def _class_key(value) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        import json

        return json.dumps(value)
    return str(value)
