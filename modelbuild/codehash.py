"""What code a step runs: a module plus every project or modelbuild module it imports, found statically.

A key that hashed only the named module would miss an edit to a helper it imports (a cache hit that
should have been a miss). Imports are read from the source (no execution), including imports inside
functions; third-party imports are reported by distribution so their versions can enter the key.
"""

from __future__ import annotations

import ast
import os
import sys
from functools import cache
from pathlib import Path

from . import persist
from .environment import distributions, package_version
from .hashing import hash_bytes

CACHE = "code"  # per file: its stat identity, content digest and imports (see persist.py)

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds the modelbuild package

# The engine: how builds are planned, run, stored and reported. It decides *whether* a step runs, not
# *what* it writes, so its source is not part of any step's code identity (else editing an error message
# would rebuild every step of every recipe). Builders, BuildContext and the libraries builders call
# (table, training, ...) are.
ENGINE = frozenset(f"modelbuild/{m}" for m in (
    "__init__.py", "__main__.py", "builders/__init__.py", "cli.py", "codehash.py", "derivation.py", "environment.py",
    "errors.py", "gc.py", "graph.py", "lineage.py", "persist.py", "progress.py", "realise.py", "recipe.py",
    "resolved.py", "sandbox.py", "sources.py", "sources_dvc.py", "store.py", "worker.py"))


def _is_engine(path: Path) -> bool:
    try:
        return str(path.relative_to(PACKAGE_ROOT)) in ENGINE
    except ValueError:
        return False


def _module_file(dotted: str, roots: tuple[Path, ...]) -> Path | None:
    parts = dotted.split(".")
    for root in roots:
        base = root.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate.resolve()
    return None


def _package_of(path: Path, roots: tuple[Path, ...]) -> list[str]:
    for root in roots:
        try:
            rel = path.resolve().relative_to(root.resolve())
        except ValueError:
            continue
        parts = list(rel.with_suffix("").parts)
        return parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    return []


def _file_facts(path: Path) -> dict:
    """A file's digest and its imports as written ([level, module, [names]]), cached by stat identity: an
    unchanged file costs one stat, not a read and a parse."""
    table = persist.table(CACHE)
    stamp = persist.stat_stamp(os.stat(path))
    hit = table.get(str(path))
    if hit and hit["stat"] == stamp:
        return hit
    data = path.read_bytes()
    found = []
    for node in ast.walk(ast.parse(data, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [[0, a.name, []] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append([node.level, node.module or "", [a.name for a in node.names]])
    facts = {"stat": stamp, "digest": hash_bytes(data), "imports": found}
    if persist.stat_stamp(os.stat(path)) == stamp:  # not edited while it was read
        table[str(path)] = facts
        persist.touch(CACHE)
    return facts


def _imports(path: Path, roots: tuple[Path, ...]) -> list[str]:
    """Absolute dotted names imported anywhere in the file (relative imports resolved)."""
    package = _package_of(path, roots)
    names = []
    for level, module, imported in _file_facts(path)["imports"]:
        if not imported:  # `import a.b`
            names.append(module)
            continue
        base = module.split(".") if module else []
        if level:
            base = package[: len(package) - level + 1] + base
        prefix = ".".join(base)
        names.append(prefix)
        names += [f"{prefix}.{a}" if prefix else a for a in imported]
    return [n for n in names if n]


def closure(path: Path, roots: tuple[Path, ...]) -> tuple[list[Path], set[str]]:
    """(files of the module and every module it imports under `roots`, top-level names imported from elsewhere)."""
    files, external, stack = {}, set(), [Path(path).resolve()]
    while stack:
        current = stack.pop()
        if current in files:
            continue
        files[current] = True
        for name in _imports(current, roots):
            found = _module_file(name, roots)
            if found is not None:
                parent = (found.parent / "__init__.py").resolve()
                stack += [f for f in (found, parent) if f.is_file() and not _is_engine(f)]
            elif _module_file(name.split(".")[0], roots) is None:
                external.add(name.split(".")[0])
    return sorted(files), external


@cache
def package_code_hash(path: str) -> str:
    """Hash of a modelbuild module and the modelbuild modules it imports (a builder's code identity)."""
    files, _ = closure(Path(path), (PACKAGE_ROOT,))
    return _hash_files(files, PACKAGE_ROOT)


def project_code(path: Path, project: Path) -> dict:
    """Identity of a user's module: its source and imported project/modelbuild sources, and the versions
    of the third-party distributions it imports."""
    roots = (project.resolve(), PACKAGE_ROOT)
    files, external = closure(path, roots)
    return {"source": _hash_files(files, project.resolve()), "packages": distribution_versions(external)}


def _hash_files(files: list[Path], base: Path) -> str:
    def name(f: Path) -> str:
        for root in (base, PACKAGE_ROOT):
            try:
                return str(f.relative_to(root))
            except ValueError:
                pass
        return f.name
    return hash_bytes("".join(f"{name(f)}\0{_file_facts(f)['digest']}\n" for f in sorted(files, key=name)))


def distribution_versions(top_level_names: set[str]) -> dict[str, str]:
    """{distribution: version} for imported top-level names that are installed packages (not stdlib)."""
    out = {}
    for name in sorted(top_level_names):
        if name in sys.stdlib_module_names or name == "modelbuild":
            continue
        for dist in distributions().get(name, []):
            version = package_version(dist)
            if version:
                out[dist] = version
    return out
