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
CLOSURES = "closures"  # per module: its closure, with what it was found from (see `closure`)

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


def _module_file(dotted: str, roots: tuple[Path, ...], seen: dict | None = None) -> Path | None:
    """The file of module `dotted` under `roots`, or None; `seen` collects the mtime of every folder looked
    in, so that a result found from them can be trusted while no file is added or removed there."""
    parts = dotted.split(".")
    for root in roots:
        base = root.joinpath(*parts)
        if seen is not None:
            _note_folders(root, parts, seen)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate.resolve()
    return None


def _note_folders(root: Path, parts: list[str], seen: dict) -> None:
    """The mtimes of root and of each existing folder on the way to root/parts[:-1]."""
    folder = root
    for part in [None, *parts]:
        folder = folder / part if part else folder
        if str(folder) not in seen:
            try:
                seen[str(folder)] = os.stat(folder).st_mtime_ns
            except OSError:
                seen[str(folder)] = None  # absent: creating it changes its parent's mtime, noted too
                return
        if seen[str(folder)] is None:
            return


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
    """(files of the module and every module it imports under `roots`, top-level names imported from elsewhere).

    Kept in the store's cache with the stat identity of each file and the mtime of each folder searched: while
    none changed (no file edited, none added or removed where an import was looked for), the closure is the
    same, so an unchanged tree costs a stat per file and per folder rather than a search per import."""
    path = Path(path).resolve()
    table = persist.table(CLOSURES)
    entry = f"{path}|{'|'.join(map(str, roots))}"
    hit = table.get(entry)
    if hit and _unchanged(hit):
        return [Path(f) for f in hit["files"]], set(hit["external"])
    folders: dict[str, int | None] = {}
    files, external, stack = {}, set(), [path]
    while stack:
        current = stack.pop()
        if current in files:
            continue
        files[current] = _file_facts(current)["stat"]
        for name in _imports(current, roots):
            found = _module_file(name, roots, folders)
            if found is not None:
                parent = (found.parent / "__init__.py").resolve()
                stack += [f for f in (found, parent) if f.is_file() and not _is_engine(f)]
            elif _module_file(name.split(".")[0], roots, folders) is None:
                external.add(name.split(".")[0])
    table[entry] = {"files": {str(f): s for f, s in sorted(files.items())}, "folders": folders, "external": sorted(external)}
    persist.touch(CLOSURES)
    return sorted(files), external


def _unchanged(hit: dict) -> bool:
    """Every file of a cached closure has the stat identity it had, every folder searched its mtime."""
    try:
        for f, stamp in hit["files"].items():
            if persist.stat_stamp(os.stat(f)) != stamp:
                return False
    except OSError:
        return False
    for folder, mtime in hit["folders"].items():
        try:
            now = os.stat(folder).st_mtime_ns
        except OSError:
            now = None
        if now != mtime:
            return False
    return True


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


def _name(f: Path, base: Path) -> str:
    """A file's name in the key: relative to the project (or to modelbuild's package root)."""
    for root in (base, PACKAGE_ROOT):
        try:
            return str(f.relative_to(root))
        except ValueError:
            pass
    return f.name


def _hash_files(files: list[Path], base: Path) -> str:
    def name(f: Path) -> str:
        return _name(f, base)
    return hash_bytes("".join(f"{name(f)}\0{_file_facts(f)['digest']}\n" for f in sorted(files, key=name)))


def files_hash(digests: dict[str, str]) -> str:
    """The code hash the key holds (as _hash_files makes it), from {file name: digest}: a per-file record that
    hashes to the key's value is the code the key saw."""
    return hash_bytes("".join(f"{name}\0{digest}\n" for name, digest in sorted(digests.items())))


SOURCE_LIMIT = 32 * 1024  # a project file up to this size is kept whole in the lineage record, for `diff`
SOURCES_LIMIT = 256 * 1024  # and no more than this in all, per record


def code_record(path: Path, project: Path | None = None) -> dict:
    """Per-file digests of the code a key's code hash covers (a modelbuild module's closure without
    `project`, else a project module's), named as the key names them, with the text of small project files:
    `diff` says which files changed and shows how. modelbuild's own files are named, not kept (the installed
    version has them)."""
    path = Path(path).resolve()
    if project is None:
        files, _ = closure(path, (PACKAGE_ROOT,))
        base = PACKAGE_ROOT
    else:
        base = project.resolve()
        files, _ = closure(path, (base, PACKAGE_ROOT))
    digests = {_name(f, base): _file_facts(f)["digest"] for f in files}
    sources, room = {}, SOURCES_LIMIT
    for f in files:
        size = f.stat().st_size
        if PACKAGE_ROOT not in f.parents and size <= min(SOURCE_LIMIT, room):
            text = f.read_bytes()
            if hash_bytes(text) == digests[_name(f, base)]:  # not edited since it was hashed
                sources[_name(f, base)] = text.decode("utf-8", errors="replace")
                room -= size
    return {"files": digests, "sources": sources}


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
