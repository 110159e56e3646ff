"""`modelbuild promote TAG ARTIFACT`: move a tag to a model only past the gates of its evaluations.

A model's evaluations are the evaluate steps in the trace whose `model` input is that artifact; each keeps
its gates in gates.json and, when a gate failed, a committed failure in the trace. Promotion needs at least
one evaluation with gates and refuses (exit 4) when any of them failed, so a tag can only ever name a model
that met the bar set for it. `modelbuild tag` still moves a tag unconditionally (both are kept in history).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import GateFailed
from ..store import Store


@dataclass
class Evaluation:
    path: Path
    step: str
    passed: bool
    failed: list[str]  # the metrics whose gates failed


def evaluations_of(store: Store, model: Path) -> list[Evaluation]:
    """The gated evaluations of `model` recorded in the trace, oldest first."""
    rel, found = store.rel(model), {}
    rows = store.db.execute("SELECT t.path, t.meta FROM trace t JOIN refs r ON r.path = t.path WHERE r.ref=? "
                            "ORDER BY t.created", (rel,))
    for path_rel, meta_text in rows:
        try:
            meta = json.loads(meta_text)
        except ValueError:
            continue
        model_input = (meta.get("inputs") or {}).get("model") or {}
        if meta.get("builder") != "evaluate" or model_input.get("path") != rel:
            continue
        path = store.object_path(path_rel, "an evaluation's path in the trace")
        gates = _read_json(path / "gates.json")
        if not gates.get("gates"):
            continue  # an evaluation without gates judges nothing
        failed = [g.get("metric", "?") for g in gates["gates"] if not g.get("passed")]
        passed = bool(gates.get("passed")) and not failed and not meta.get("failure")
        found[path_rel] = Evaluation(path, f"{meta.get('recipe')}:{meta.get('step')}", passed, failed)
    return list(found.values())


def promote(store: Store, tag: str, model: Path, key: str | None, reason: str | None) -> tuple[str | None, list]:
    """Move `tag` to `model` when every gated evaluation of it passed; returns (old path, evaluations)."""
    evaluations = evaluations_of(store, model)
    name = store.rel(model)
    if not evaluations:
        raise GateFailed(f"cannot promote {name} to '{tag}': no evaluation with gates has judged it. Build an "
                         "evaluate step with `model:` this artifact and `gates:` (e.g. `accuracy: \">= baseline - "
                         f"0.01\"` against `baseline: {{tag: {tag}}}`), then promote again; `modelbuild tag` "
                         "moves a tag without gates")
    failed = [e for e in evaluations if not e.passed]
    if failed:
        listing = "; ".join(f"{e.step} ({store.rel(e.path)}) failed {', '.join(e.failed) or 'its gates'}"
                            for e in failed)
        raise GateFailed(f"cannot promote {name} to '{tag}': {len(failed)} of its {len(evaluations)} gated "
                         f"evaluations failed: {listing}. `modelbuild show` on an evaluation prints its gate table; "
                         f"the tag still names what it named")
    reason = reason or "passed " + ", ".join(sorted({e.step for e in evaluations}))
    return store.set_tag(tag, model, key, reason=reason, action="promote"), evaluations


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
