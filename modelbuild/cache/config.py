"""Where the cache settings come from: flags, else environment variables, else the project's config.

Project config is the `[tool.modelbuild]` table of pyproject.toml or a modelbuild.toml (its top level), in
the working directory or the nearest folder above it:

    substituters = ["remote://storage", "s3://team-cache/modelbuild"]
    trusted-public-keys = ["ci-1:...", "alice-1:..."]
    push-to = "remote://storage"
    secret-key-file = "~/.config/modelbuild/ci-1.secret"

As in Nix, a flag or an environment variable replaces the configured list instead of adding to it, so a CI
job can name exactly what it trusts without a config file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

KEYS = ("substituters", "trusted-public-keys", "push-to", "secret-key-file",
        "executor", "cluster-store", "worker-store")  # the last three: where jobs run (executors_dask.py)


@dataclass
class CacheSettings:
    substituters: list[str] = field(default_factory=list)
    trusted_public_keys: list[str] = field(default_factory=list)
    push_to: str | None = None
    secret_key_file: str | None = None
    project_dir: Path = field(default_factory=Path.cwd)


def settings(*, substituters=None, trusted=None, push_to=None, secret_key_file=None,
             cwd: Path | None = None) -> CacheSettings:
    """The settings in force: each from its flag, else its environment variable, else the project file."""
    cwd = Path(cwd or Path.cwd()).absolute()
    conf, where = project_config(cwd)
    env = os.environ
    return CacheSettings(
        substituters=substituters or env.get("MODELBUILD_SUBSTITUTERS", "").split() or _list(conf, "substituters", where),
        trusted_public_keys=trusted or env.get("MODELBUILD_TRUSTED_PUBLIC_KEYS", "").split()
        or _list(conf, "trusted-public-keys", where),
        push_to=push_to or env.get("MODELBUILD_PUSH_TO") or _str(conf, "push-to", where),
        secret_key_file=secret_key_file or env.get("MODELBUILD_SECRET_KEY_FILE") or _path(conf, "secret-key-file", where),
        project_dir=where.parent if where else cwd)


def project_config(cwd: Path) -> tuple[dict, Path | None]:
    """The cache table of the nearest modelbuild.toml or pyproject.toml with [tool.modelbuild]."""
    for folder in (cwd, *cwd.parents):
        for name, table in (("modelbuild.toml", ()), ("pyproject.toml", ("tool", "modelbuild"))):
            path = folder / name
            if not path.is_file():
                continue
            try:
                conf = tomllib.loads(path.read_text())
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
                raise UsageError(f"{path} cannot be read as TOML ({e}): fix it, or remove its modelbuild "
                                 "settings") from None
            for part in table:
                conf = conf.get(part) if isinstance(conf, dict) else None
            if isinstance(conf, dict):
                _typos(conf, path)
                return conf, path
    return {}, None


def _typos(conf: dict, path: Path) -> None:
    """A misspelt cache setting is an error, not silently no cache; other tools' settings are left alone."""
    from ..errors import did_you_mean
    for key in conf:
        hint = did_you_mean(key, KEYS) if key not in KEYS else ""
        if hint:
            raise UsageError(f"{path}: unknown setting '{key}'{hint}; the cache settings are {', '.join(KEYS)}")


def _list(conf: dict, key: str, where) -> list[str]:
    value = conf.get(key, [])
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{where}: '{key}' must be a list of strings, e.g. {key} = [\"...\"]")
    return value


def _path(conf: dict, key: str, where) -> str | None:
    """A file named in the config, from the config file's folder."""
    value = _str(conf, key, where)
    return str(Path(where).parent / Path(value).expanduser()) if value else None


def _str(conf: dict, key: str, where) -> str | None:
    value = conf.get(key)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{where}: '{key}' must be a string")
    return value
