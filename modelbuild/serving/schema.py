"""What a tabular model accepts: the columns it was trained on, their types and allowed values.

Read from the model's lineage, never guessed from a request: the `validate` step upstream of the training
data, where there is one, gives each column's dtype, nullability, `isin` categories and bounds; otherwise
the training table's recorded columns and types (table.json) give the types, and the model's own vocabulary
(config.json) the categories. A request record is checked against it field by field, so a bad one is a 422
that names the field instead of a 500 from inside the network.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

META = ".meta.json"
NUMBER, INTEGER, STRING, BOOL = "number", "integer", "string", "boolean"
BOUNDS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
          "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}


@dataclass
class Column:
    name: str
    kind: str  # NUMBER, INTEGER, STRING or BOOL
    nullable: bool = True
    allowed: list | None = None  # categories
    bounds: dict = field(default_factory=dict)  # ge/gt/le/lt -> number

    def as_json(self) -> dict:
        out = {"name": self.name, "type": self.kind, "nullable": self.nullable}
        if self.allowed is not None:
            out["allowed"] = self.allowed
        return {**out, **self.bounds}


@dataclass
class Schema:
    columns: list[Column]
    source: str  # where the types came from, for /info and the docs

    def check(self, record) -> list[tuple[str, str]]:
        """(field, problem) for each thing wrong with one request record; [] when it is fine."""
        if not isinstance(record, dict):
            return [("(record)", f"a record is a JSON object of column: value, not {type(record).__name__}")]
        known = {c.name for c in self.columns}
        problems = [(k, f"unknown field; the model's columns are {', '.join(sorted(known))}")
                    for k in record if k not in known]
        for c in self.columns:
            if c.name not in record:
                problems.append((c.name, f"missing: the model needs column {c.name!r} ({c.kind})"))
                continue
            problem = _check_value(c, record[c.name])
            if problem:
                problems.append((c.name, problem))
        return problems


def _check_value(c: Column, value) -> str | None:
    if value is None:
        return None if c.nullable else "null, but the column is not nullable"
    expected = {NUMBER: (int, float), INTEGER: (int,), STRING: (str,), BOOL: (bool,)}[c.kind]
    if isinstance(value, bool) and c.kind != BOOL or not isinstance(value, expected):
        return f"expected {c.kind}, got {type(value).__name__} {json.dumps(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite {c.kind}, got {value}"
    if c.allowed is not None and value not in c.allowed:
        return f"unknown category {json.dumps(value)}; allowed: {', '.join(map(json.dumps, c.allowed))}"
    for name, bound in c.bounds.items():
        ok, sign = BOUNDS[name]
        if not ok(value, bound):
            return f"{value} is out of range: must be {sign} {bound}"
    return None


def tabular_schema(model: Path) -> Schema:
    """The request schema of a tabular model artifact, from its config.json and lineage."""
    model = Path(model)
    config = json.loads((model / "config.json").read_text())
    table, validated = _training_table(model)
    recorded = {c["name"]: c["type"] for c in (table or {}).get("columns", [])}
    declared = (validated or {}).get("columns") or {}
    columns = []
    for spec, categorical in [(c, False) for c in config["numeric"]] + [(c, True) for c in config["categorical"]]:
        name = spec["name"]
        decl = declared.get(name) or {}
        kind = _kind(decl.get("dtype"), recorded.get(name), categorical)
        column = Column(name, kind, nullable=bool(decl.get("nullable", True)))
        checks = decl.get("checks") or {}
        if "isin" in checks:
            column.allowed = list(checks["isin"])
        elif categorical:
            column.allowed = list(spec["vocabulary"])
        if isinstance(checks.get("in_range"), dict):
            checks = {**checks, **{("ge" if k == "min_value" else "le"): v for k, v in checks["in_range"].items()
                                   if k in ("min_value", "max_value")}}
        column.bounds = {k: checks[k] for k in BOUNDS if isinstance(checks.get(k), int | float)}
        columns.append(column)
    source = "the validate step's schema" if validated else "the training table's columns" if table else \
        "the model's config.json"
    return Schema(columns, source)


def _kind(dtype: str | None, arrow_type: str | None, categorical: bool) -> str:
    text = (dtype or arrow_type or ("string" if categorical else "double")).lower()
    if text.startswith("bool"):
        return BOOL
    if "int" in text:
        return INTEGER
    if text.startswith(("float", "double", "decimal", "halffloat")):
        return NUMBER
    return STRING


def _training_table(model: Path) -> tuple[dict | None, dict | None]:
    """(the training table's table.json, the schema of the nearest `validate` step upstream), from the
    lineage records of the model's inputs; (None, None) for a folder outside a store."""
    store_root = model.parent.parent
    meta = _read(model / META)
    data = (meta.get("inputs") or {}).get("data") or {}
    if not data.get("path"):
        return None, None
    data_dir = store_root / data["path"]
    table = _read(data_dir / "train" / "table.json") or _read(data_dir / "table.json") or None
    return table, _validate_schema(store_root, data_dir, set())


def _validate_schema(store_root: Path, artifact: Path, seen: set) -> dict | None:
    if artifact in seen:
        return None
    seen.add(artifact)
    meta = _read(artifact / META)
    if meta.get("builder") == "validate":
        return ((meta.get("derivation") or {}).get("params") or {}).get("schema")
    for info in (meta.get("inputs") or {}).values():
        if isinstance(info, dict) and info.get("path"):
            found = _validate_schema(store_root, store_root / info["path"], seen)
            if found:
                return found
    return None


def _read(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}
