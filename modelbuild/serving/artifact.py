"""What `modelbuild serve` is asked to serve: an artifact found, checked and recognised before any server
starts. No ML library is imported here, so a refusal is quick."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import HashMismatch, UsageError

META = ".meta.json"
SERVABLE = ("tabular-classification", "tabular-regression", "sequence-classification", "causal-lm")
WHAT_CAN_BE_SERVED = ("a model artifact of a `train` or `finetune` step: a tabular classifier or regressor, a "
                      "text classifier, or a causal language model")


@dataclass
class Servable:
    path: Path
    digest: str
    name: str  # RECIPE:STEP where the lineage says, else the folder's name
    task: str
    meta: dict


def find(target: str, store_root: Path) -> Servable:
    """The artifact `target` names (a store reference, or a folder holding a model), verified: its content
    must match its digest (exit 5), and it must be a model we can serve (exit 2)."""
    folder = Path(target)
    if folder.is_dir() and not _in_store(folder):
        _verify_folder(folder)
    else:
        from ..store import Store

        store = Store(store_root)
        folder = store.resolve(target)
        store.verify_or_raise(folder)
    meta = _read(folder / META)
    from ..evaluation.predict import detect_task

    task = detect_task(folder)
    name = f"{meta['recipe']}:{meta['step']}" if meta.get("recipe") and meta.get("step") else folder.name
    if task not in SERVABLE:
        step = f"step '{name}' (builder {meta.get('builder')})" if meta.get("builder") else f"the folder {folder}"
        have = ", ".join(sorted(p.name for p in folder.iterdir() if p.name != META)[:6]) or "nothing"
        raise UsageError(f"{target}: {step} is not a model that can be served: it holds {have}. Serve "
                         f"{WHAT_CAN_BE_SERVED}, e.g. `modelbuild serve quickstart:model`")
    digest = meta.get("digest") or _content_digest(folder)
    return Servable(folder.absolute(), digest, name, task, meta)


def _in_store(folder: Path) -> bool:
    """A folder directly under a store's objects/ is checked by that store (its trace knows it)."""
    real = folder.resolve()
    return real.parent.name == "objects" and (real.parent.parent / "trace.sqlite").exists()


def _verify_folder(folder: Path) -> None:
    """A copied artifact (an image's /models) carries its lineage record: its files must hash to its digest."""
    meta = _read(folder / META)
    if not meta.get("digest"):
        return
    from ..hashing import Unhashable, hash_tree

    try:
        digest = hash_tree(folder).digest
    except Unhashable as e:
        digest = f"unhashable ({e})"
    if digest != meta["digest"]:
        raise HashMismatch(f"the model folder {folder} does not match the digest its lineage record names "
                           f"({meta['digest']}; its content hashes to {digest}): it was changed after it was "
                           "built. Copy the artifact again from the store, or rebuild it")


def _content_digest(folder: Path) -> str:
    """A folder with no lineage record is named by its content, as the store would name it."""
    from ..hashing import hash_tree

    return hash_tree(folder).digest


def _read(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}
