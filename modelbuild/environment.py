"""The installed environment: package versions, and which distribution provides an imported name.

Both enter keys (a builder's declared packages, a python step's imports). `importlib.metadata` answers them by
reading every distribution's metadata, ~0.3 s per process; the answers are kept in the store's cache under a
stamp of the import path (each `sys.path` folder and its mtime: installing, upgrading or removing a package
changes its folder), so an unchanged environment costs a stat per folder.
"""

from __future__ import annotations

import os
import sys
from functools import cache

from . import persist

CACHE = "environment"


@cache
def _stamp() -> list:
    """The folders on the import path that hold installed distributions, each with its mtime. Folders without
    distribution metadata (a project or recipe folder put on the path) are left out, so the stamp is the same
    for every project on one environment."""
    stamp = []
    for entry in dict.fromkeys(sys.path):
        try:
            with os.scandir(entry or ".") as it:
                if any(e.name.endswith((".dist-info", ".egg-info")) for e in it):
                    stamp.append([os.path.abspath(entry or "."), os.stat(entry or ".").st_mtime_ns])
        except OSError:
            continue
    return stamp


def _cached() -> dict:
    """The cache for this environment; emptied when the stamp no longer matches."""
    table = persist.table(CACHE)
    if table.get("stamp") != _stamp():
        table.clear()
        table.update({"stamp": _stamp(), "versions": {}, "distributions": None})
        persist.touch(CACHE)
    return table


def package_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None when it is not installed."""
    versions = _cached()["versions"]
    if name not in versions:
        from importlib import metadata

        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
        persist.touch(CACHE)
    return versions[name]


def distributions() -> dict[str, list[str]]:
    """Top-level import name -> the distributions that provide it (importlib.metadata.packages_distributions)."""
    table = _cached()
    if table["distributions"] is None:
        from importlib import metadata

        table["distributions"] = {k: sorted(set(v)) for k, v in metadata.packages_distributions().items()}
        persist.touch(CACHE)
    return table["distributions"]


def env_fingerprint(packages: tuple[str, ...]) -> dict:
    """The environment a derivation records: the Python version and the declared packages' versions."""
    return {"python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "packages": {p: package_version(p) for p in sorted(packages)}}
