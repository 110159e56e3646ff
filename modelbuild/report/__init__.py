"""`modelbuild report`: one static HTML page (or a Hugging Face model card) from what the store knows.

The page is a pure function of the store's state: it reads roots, the trace, lineage records, logs and the
artifacts' own files, draws the build graph and charts as inline SVG, and uses no clock, so the same store
gives the same bytes. It imports no ML framework (matplotlib draws the charts).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import HashMismatch
from . import evaluation as ev
from . import sections as sec
from .facts import Facts, StepFacts, from_artifacts, from_recipe
from .graph_svg import build_graph
from .html import badge, e, fmt, page, table

__all__ = ["Facts", "facts_of", "from_artifacts", "from_recipe", "render", "step_section"]


def facts_of(store, what: str, overrides: list[str] | None = None) -> Facts:
    """A recipe file's steps as last built, or an artifact (path, digest, RECIPE:STEP, tag) and its lineage."""
    if what.endswith((".yaml", ".yml")) or Path(what).is_file():
        from ..recipe import load_recipe
        facts = from_recipe(store, load_recipe(what, overrides or []))
        facts.subject = what  # as the user named it: the page does not depend on where it was run from
        return facts
    path, key = store.resolve_with_key(what)
    return from_artifacts(store, [(path, key)], what)


def step_section(s: StepFacts, store) -> str:
    parts = [f'<section class="step" id="{e(s.anchor)}" aria-labelledby="{e(s.anchor)}-h">',
             f'<h2 id="{e(s.anchor)}-h">{e(s.name)} {badge(s.status)}</h2>']
    if s.description:
        parts.append(f"<p>{e(s.description)}</p>")
    if s.status == "not built":
        parts.append("<p>Not built in this store: <code>modelbuild build</code> the recipe to fill this in.</p>")
    if s.status == "outdated":
        parts.append("<p>Built from an older artifact of an upstream step than that step's last build: the "
                     "upstream was rebuilt since, and this step was not (it was skipped, or not a target).</p>")
    if s.status == "searched":
        parts.append("<p>The target of a search: it is trained once per trial (see the search's section), "
                     "not as itself.</p>")
    parts += [sec.header(s, store), sec.inputs(s, store), sec.params(s)]
    if s.path is not None and Path(s.path).is_dir():
        p = Path(s.path)
        parts += [sec.tables(p), sec.profile(p), sec.validation(p), sec.clean_report(p), sec.training(s), sec.search(p),
                  best_training(p, store), ev.evaluation(p), ev.drift(p), ev.decay(p)]
        if not any((p / f).is_file() for f in ("evaluation.json", "drift.json", "decay.json")):
            parts.append(ev.gates(p))
    parts += [sec.metrics(s), sec.environment(s), sec.log_tail(s, store), "</section>"]
    return "".join(x for x in parts if x)


def best_training(search: Path, store) -> str:
    """A search's best trial's training (the model its consumers receive), drawn like a train step's."""
    best = sec.read_json(search / "best.json")
    if not isinstance(best, dict) or not best.get("path"):
        return ""
    try:
        path = store.object_path(best["path"], f"the best trial named in {store.rel(search)}/best.json")
    except HashMismatch:  # a record pointing outside the store: left out of the page
        return ""
    trial = StepFacts(f"trial {best.get('trial')}", "train", "built", path, best.get("key"), store.meta_of(path) or {})
    shown = sec.training(trial)
    return shown.replace("<h3>Training</h3>", f"<h3>Training of the best trial ({e(best.get('trial'))})</h3>", 1)


def overview(facts: Facts, store) -> str:
    counts = {}
    for s in facts.steps:
        counts[s.status] = counts.get(s.status, 0) + 1
    rows = [[f'<a href="#{e(s.anchor)}">{e(s.name)}</a>', e(s.builder), badge(s.status), _verdict(s),
             f"<code>{e(s.record.get('digest', ''))}</code>", e(fmt(s.record.get("seconds", "")))]
            for s in facts.steps]
    return ('<section class="block" aria-labelledby="overview-h"><h2 id="overview-h">Steps</h2>'
            f"<p>{e(len(facts.steps))} steps: " + ", ".join(f"{n} {e(k)}" for k, n in sorted(counts.items()))
            + ". Each box links to its section.</p>" + build_graph(facts)
            + table(["step", "builder", "status", "gates", "digest", "seconds"], rows, raw=True) + "</section>")


def _verdict(s: StepFacts) -> str:
    """A step's gates at a glance: passed or failed, with the gates that failed."""
    data = sec.read_json(Path(s.path) / "gates.json") if s.path is not None else None
    rows = data.get("gates") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not rows:
        return ""
    failed = [str(g.get("metric")) for g in rows if isinstance(g, dict) and not g.get("passed")]
    return badge("failed") + " " + e(", ".join(failed)) if failed else badge("passed")


def changes(store, against: str, facts: Facts) -> str:
    """`diff` of the `against` artifact and this report's matching step, as a change list."""
    from ..lineage import diff
    old, old_key = store.resolve_with_key(against)
    old_step = (store.meta_of(old) or {}).get("step")
    built = [s for s in facts.steps if s.path is not None]
    if not built:
        return ""
    new = next((s for s in built if s.name == old_step), built[-1])
    d = diff(store, old, new.path, old_key, new.key)
    lists = "".join(f"<h3>{title}</h3><ul>" + "".join(f"<li><code>{e(x)}</code></li>" for x in items) + "</ul>"
                    for title, items in (("Causes: what was changed", d.causes),
                                         ("Effects: what followed", d.effects), ("Notes", d.notes)) if items)
    if not lists:
        lists = "<p>Identical lineage: nothing changed.</p>"
    return ('<section class="block" id="changes" aria-labelledby="changes-h">'
            f'<h2 id="changes-h">Changes since {e(against)}</h2><p>{e(store.rel(old))} → '
            f'<a href="#{e(new.anchor)}">{e(new.name)}</a> ({e(store.rel(new.path))})</p>{lists}</section>')


def render(store, facts: Facts, against: str | None = None) -> str:
    title = f"{facts.title}: modelbuild report"
    body = [f"<header><h1>{e(facts.title)}</h1><p>Report of <code>{e(facts.subject)}</code> from the store "
            "as it stands; every figure is read from the artifacts and their lineage records. Built with "
            "<code>modelbuild report</code>.</p></header>",
            '<nav aria-label="Steps"><ul>' + "".join(f'<li><a href="#{e(s.anchor)}">{e(s.name)}</a></li>'
                                                     for s in facts.steps) + "</ul></nav>",
            overview(facts, store)]
    if against:
        body.append(changes(store, against, facts))
    body += [step_section(s, store) for s in facts.steps]
    return page(title, "\n".join(body))
