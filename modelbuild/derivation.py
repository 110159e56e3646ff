"""Derivations: what a step's output depends on, written as canonical JSON and hashed into its key.

The key covers the builder's name and source code, the params, anything the builder declares beyond
params (e.g. a user module's source), the content addresses of the inputs, and the environment
(Python version and the versions of the packages the builder declares). Nothing else: no paths,
no host, no time, so the same work on another machine has the same key.
"""

from __future__ import annotations

import sys
from functools import cache

from .builders import builder_code_hash
from .hashing import canonical_json, hash_json
from .recipe import Step

FORMAT = 2  # bump when the derivation layout changes; every key changes with it


@cache
def package_version(name: str) -> str | None:
    from importlib import metadata  # imported here: it costs ~20 ms and most steps declare no packages

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def env_fingerprint(packages: tuple[str, ...]) -> dict:
    return {"python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "packages": {p: package_version(p) for p in sorted(packages)}}


def make_derivation(step: Step, inputs: dict[str, dict], recipe_dir, seed: int | None) -> dict:
    """`inputs` maps input name -> {"kind": "step"|"source", "digest": content hash}."""
    builder = step.builder
    drv = {
        "format": FORMAT,
        "builder": step.builder_name,
        "builder_code": builder_code_hash(builder),
        "params": step.params,
        "extras": builder.key_extras(step.params, recipe_dir),
        "inputs": {name: {"kind": i["kind"], "digest": i["digest"]} for name, i in sorted(inputs.items())},
        "env": env_fingerprint(tuple(builder.env)),
    }
    if getattr(builder, "uses_seed", False):
        drv["seed"] = seed
    return drv


def derivation_key(drv: dict) -> str:
    return hash_json(drv)


def _flatten(value, prefix=""):
    if isinstance(value, dict) and value:
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


class _Unset:
    def __repr__(self):
        return "<unset>"


_UNSET = _Unset()


def _same(a, b) -> bool:
    """Equal as the key sees them: 1 and 1.0 (or True) differ, NaN equals NaN."""
    if a is _UNSET or b is _UNSET:
        return a is b
    return canonical_json(a) == canonical_json(b)


def _short(value, other=None) -> str:
    """A value in at most ~40 characters; a long string is shown around where it differs from `other`."""
    text = repr(value) if isinstance(value, (str, _Unset)) else canonical_json(value)
    if len(text) <= 40:
        return text
    start = 0
    if isinstance(value, str) and isinstance(other, str):
        start = next((i for i, (a, b) in enumerate(zip(value, other, strict=False)) if a != b), min(len(value), len(other)))
        start = max(0, start - 15)
    return ("..." if start else "") + text[start:start + 37] + "..."


def explain(old: dict | None, new: dict) -> list[str]:
    """Why a step must be rebuilt, in words: 'params.lr 0.001 -> 0.0003', 'input clean changed', ..."""
    if old is None:
        return ["new"]
    reasons = []
    if old.get("builder") != new.get("builder"):
        reasons.append(f"builder {old.get('builder')} -> {new.get('builder')}")
    elif old.get("builder_code") != new.get("builder_code"):
        reasons.append("builder code changed")
    a, b = _flatten(old.get("params", {}), "params"), _flatten(new.get("params", {}), "params")
    keys = sorted(set(a) | set(b))
    for k in keys:
        x, y = a.get(k, _UNSET), b.get(k, _UNSET)
        if _same(x, y) or ({} in (x, y) and any(o.startswith(k + ".") for o in keys)):
            continue  # unchanged, or an empty mapping whose new/removed entries are listed one by one
        reasons.append(f"{k} {_short(x, y)} -> {_short(y, x)}")
    ea, eb = _flatten(old.get("extras", {}), "extras"), _flatten(new.get("extras", {}), "extras")
    reasons += [f"{k} changed" for k in sorted(set(ea) | set(eb)) if ea.get(k) != eb.get(k)]
    ia, ib = old.get("inputs", {}), new.get("inputs", {})
    for name in sorted(set(ia) | set(ib)):
        if name not in ia:
            reasons.append(f"input {name} added")
        elif name not in ib:
            reasons.append(f"input {name} removed")
        elif ia[name] != ib[name]:
            kind = "source" if ib[name].get("kind") == "source" else "input"
            reasons.append(f"{kind} {name} changed")
    va, vb = _flatten(old.get("env", {}), "env"), _flatten(new.get("env", {}), "env")
    reasons += [f"{k} {va.get(k)} -> {vb.get(k)}" for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]
    if old.get("seed") != new.get("seed"):
        reasons.append(f"seed {old.get('seed')} -> {new.get('seed')}")
    if old.get("format") != new.get("format"):
        reasons.append("derivation format changed")
    return reasons or ["not in the store"]
