"""evaluate: score a model artifact on held-out data; metrics, bias by group, gates that fail the build.

Example::

    evaluate:
      builder: evaluate
      inputs:
        model: model                         # a train or finetune artifact
        data: splits                         # a split (params.table picks the part, default test) or a table
        baseline: rule                       # optional: a model (scored on the same data) or an evaluation
      params:
        protected: [sex, race]
        min_group_size: 30                   # smaller groups are reported, not gated on
        gates:
          accuracy: ">= 0.82"
          "upper(race.fpr_gap)": "<= 0.25"     # the bootstrap interval's upper bound
          f1: ">= baseline - 0.01"
    rule:
      builder: evaluate                      # a column or a rule evaluated like a model: a baseline
      inputs: {data: splits}
      params: {predictions: "education_num >= 13", target: high_income}

A causal LM is scored as it was trained (modelbuild/evaluation/predict.py's `framing`): an `sft` fine-tune
on its prompt/response pairs, chat template and loss on the response tokens, so its perplexity is training's
val_perplexity; a baseline model (a GGUF too) is framed alike.

The evaluation artifact is always committed; when a gate fails the step fails with exit 4 and a table of
every gate, nothing downstream builds, and a later build of the same key fails the same way from the cache
(see `keep_artifact` in modelbuild/errors.py). Metric names, the artifact's files and the gate syntax are in
docs/evaluate.md; the metrics in modelbuild/evaluation/metrics.py and fairness.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import GateFailed, RecipeError, did_you_mean
from ..evaluation import columns as C
from ..evaluation import gates as G
from ..evaluation import metrics as M
from .base import Builder, Param, check_input_names

INPUTS = ("model", "data", "baseline")


class Evaluate(Builder):
    """Evaluate a model on a held-out table: metrics, per-group bias, gates."""

    name = "evaluate"
    env = ("numpy", "scikit-learn", "fairlearn", "pandas", "matplotlib", "pyarrow", "torch", "safetensors",
           "transformers", "tokenizers", "peft")
    params = {
        "table": Param("str", default="test", help="which table of a split input to score (a table input: itself)"),
        "task": Param("str", choices=M.TASKS, help="override the task read from the model artifact"),
        "target": Param("str", help="the label column (default: the one the model was trained on)"),
        "text": Param("str", help="the text column of language models (default: as trained); a causal LM "
                                  "trained on pairs (sft) is then scored on this column as plain text"),
        "pairs": Param("dict", omit=True, help="causal LMs: score prompt/response pairs as `finetune`'s sft frames "
                                               "them, `{prompt: instruction, response: response, template: null}` "
                                               "(default: as trained, for a model trained with task sft)"),
        "protected": Param("list", default=[], help="columns to measure bias over, e.g. [sex, race]"),
        "positive_label": Param("any", help="the positive class for binary-style metrics (default: the second "
                                            "of two classes; with more classes: one-vs-rest for every class)"),
        "gates": Param("dict", default={}, help='metric -> condition, e.g. {accuracy: ">= 0.82"}'),
        "predictions": Param("any", omit=True, help='score a column instead of a model: "education_num >= 13", '
                                                    "{column: COL, threshold: T} or {column: COL} (the labels)"),
        "min_group_size": Param("int", omit=True, help="groups with fewer scored rows are reported but left out "
                                                       "of the bias gaps (default 1: none)"),
        "bootstrap": Param("int", default=1000, help="resamples for the intervals: the headline metric, every gap (0: none)"),
        "confidence": Param("float", default=0.95, help="the bootstrap interval's confidence level"),
        "seed": Param("int", default=0, help="the bootstrap's seed"),
        "calibration_bins": Param("int", default=10, help="equal-width confidence bins for ece and the plot"),
        "batch_size": Param("int", default=256, help="rows (or blocks) scored at a time"),
        "max_length": Param("int", help="language models: tokens per text or block (default: as trained)"),
        "num_threads": Param("int", default=2, help="torch CPU threads"),
    }

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        def fail(key, message):
            raise RecipeError(message, file=file, step=step, key=f"params.{key}")

        protected = params["protected"] or []
        if not all(isinstance(c, str) and c for c in protected):
            fail("protected", f"protected is a list of column names, e.g. [sex, race]; got {protected!r}")
        if len(set(protected)) != len(protected):
            fail("protected", f"protected names a column twice: {protected!r}")
        for key, low in (("bootstrap", 0), ("seed", 0), ("calibration_bins", 1), ("batch_size", 1),
                         ("num_threads", 1), ("max_length", 2), ("min_group_size", 1)):
            if params.get(key) is not None and params[key] < low:
                fail(key, f"{key} must be at least {low}, got {params[key]}")
        if not 0 < params["confidence"] < 1:
            fail("confidence", f"confidence is a level between 0 and 1 (e.g. 0.95), got {params['confidence']}")
        kind = M.KINDS.get(params.get("task"))
        if kind == "language" and protected:
            fail("protected", "bias metrics apply to classification and regression models, not causal-lm; "
                              "remove `protected:`")
        if params.get("predictions") is not None:
            _check_predictions(params, fail)
            kind = kind or "classification"
        if params.get("pairs") is not None:
            _check_pairs(params, fail)
        G.check_gates(params["gates"] or {}, metrics=M.names(kind) if kind else M.ALL,
                      fairness=M.FAIRNESS[kind] if kind else M.ALL_FAIRNESS, protected=protected,
                      has_baseline=None, file=file, step=step, **_intervals(kind, params))

    def metric_names(self, params: dict) -> set[str]:
        """What metrics.json may hold (a tune objective on this step is checked against it): the task's
        metrics (every task's when the task is read from the model), and the bias gaps when `protected:`."""
        kind = M.KINDS.get(params.get("task"))
        kinds = [kind] if kind else list(M.FAIRNESS)
        names = {n for k in kinds for n in M.names(k)}
        fairness = {n for k in kinds for n in M.FAIRNESS[k]} if params.get("protected") else set()
        fairness |= {n + b for n in fairness for b in ("_ci_low", "_ci_high")}
        return names | fairness | {f"{c}.{n}" for c in params.get("protected") or [] for n in fairness}

    def check_inputs(self, params: dict, inputs: dict, *, file: str | None, step: str) -> None:
        check_input_names("evaluate", inputs, INPUTS, file=file, step=step)
        scores_column = params.get("predictions") is not None
        if scores_column and "model" in inputs:
            raise RecipeError("`predictions:` scores a column of the data, so the `model` input is not used; remove "
                              "one of them (a model is evaluated without `predictions:`)", file=file, step=step,
                              key="inputs.model")
        for name, what in (("model", "the model to evaluate (a train or finetune step), or `predictions:` to score "
                                     "a column"), ("data", "the held-out data (a split or a table step)")):
            if name not in inputs and not (name == "model" and scores_column):
                raise RecipeError(f"evaluate needs a `{name}` input: {what}", file=file, step=step, key="inputs")
        G.check_gates(params["gates"] or {}, metrics=M.ALL, fairness=M.ALL_FAIRNESS, protected=params["protected"],
                      has_baseline="baseline" in inputs, file=file, step=step, **_intervals(None, params))

    def build(self, ctx) -> None:
        from ..evaluation import predict, report
        from ..table import read_schema, read_table

        p, step = ctx.params, ctx.step
        data, table_name = _data_table(ctx)
        spec = C.parse(p["predictions"]) if p.get("predictions") is not None else None
        model = None if spec else ctx.input("model")
        task = p["task"] or ("tabular-classification" if spec else predict.detect_task(model))
        if task is None:
            raise RecipeError(f"cannot tell what task the model input ({model}) was trained for: it has no "
                              "tabular config.json, transformers architecture, adapter task type or .gguf file. Set "
                              f"`task:` ({', '.join(M.TASKS)})", step=step, key="params.task")
        kind = M.KINDS[task]
        if p.get("pairs") is not None and kind != "language":
            raise RecipeError(f"`pairs:` frames prompt/response pairs for a causal LM; this model is {task}",
                              step=step, key="params.pairs")
        target = p["target"] if spec else predict.label_column(task, model, p["target"])
        pairs = None if spec else predict.framing(task, model, p)
        text = None if spec or pairs else predict.text_column(task, model, p["text"])
        columns = list(read_schema(data).names)
        predict.require_columns(columns, [("params.target", "label column", target),
                                          ("params.text", "text column", text),
                                          ("params.pairs.prompt", "prompt column", pairs and pairs.prompt),
                                          ("params.pairs.response", "response column", pairs and pairs.response),
                                          ("params.predictions", "predictions column", spec and spec.column)]
                                + [("params.protected", "protected column", c) for c in p["protected"]], step)
        if kind == "language" and p["protected"]:
            raise RecipeError("bias metrics apply to classification and regression models, not causal-lm; remove "
                              "`protected:`", step=step, key="params.protected")
        table = read_table(data)
        classes = C.classes(table, target, spec) if spec and kind == "classification" else \
            predict.classes_of(task, model) if model else []
        positive = _positive(classes, p["positive_label"], step) if kind == "classification" else None
        produced = tuple(n for n in M.names(kind) if positive is not None or n not in M.BINARY_ONLY)
        gates = G.check_gates(p["gates"] or {}, metrics=produced, fairness=M.FAIRNESS[kind],
                              protected=p["protected"], has_baseline="baseline" in ctx.inputs, file=None, step=step,
                              **_intervals(kind, p))

        what = spec.describe() if spec else f"a {task} model"
        ctx.log.info("evaluating %s on %s (%d rows)", what, table_name or "the data table", table.num_rows)
        ctx.progress(0, 2, "scoring the predictions column" if spec else "scoring the model")
        if spec:
            scored = _score_column(kind, table, spec, target, classes, positive, step)
        else:
            scored = predict.score(task, model, table, target=target, text=text, params=p, log=ctx.log, pairs=pairs)
        values, details, groups = _measure(scored, kind, positive, table, p)
        values = report.stable(values)
        if scored.skipped:
            ctx.log.warning("%d rows %s: not scored", scored.skipped,
                            "lack a prompt or a response, or have a prompt that fills max_length" if pairs else
                            "have no label, or a class the model does not know" + (", or no prediction" if spec else ""))
        excluded = _excluded_groups(groups, p, ctx.log)
        warnings = _interval_warnings(scored, kind, _unit(kind, pairs), p, ctx.log)

        baseline_metrics = baseline_framing = None
        if "baseline" in ctx.inputs:
            ctx.progress(1, 2, "scoring the baseline")
            baseline_metrics, baseline_framing = _baseline(ctx, kind, table, target, text, p, pairs, warnings)
        rows = G.evaluate(gates, values, baseline_metrics)

        out = ctx.out
        info = {"format": 1, "step": step, "task": task, "kind": kind, "table": table_name, "rows": scored.rows,
                "scored": scored.rows - scored.skipped, "skipped": scored.skipped,
                "classes": scored.classes or None,
                "positive_label": classes[positive] if positive is not None else None, "protected": p["protected"],
                "headline": M.HEADLINE[kind], "label_column": target, "text_column": text,
                "predictions": spec.as_json() if spec else None,
                "min_group_size": p.get("min_group_size") or 1, "excluded_groups": excluded,
                "bootstrap": {"resamples": p["bootstrap"], "confidence": p["confidence"], "seed": p["seed"],
                              "method": "percentile", "units": _units(scored, kind),
                              "unit": _unit(kind, pairs)},
                "warnings": warnings}
        if kind == "language":
            info.update(framing=scored.framing, pairs=pairs.as_json() if pairs else None)
            if baseline_framing is not None:
                info["baseline_framing"] = baseline_framing
        report.write_json(out / "metrics.json", values)
        report.write_json(out / "evaluation.json", info)
        report.write_json(out / "gates.json", {"passed": all(r["passed"] for r in rows), "gates": rows})
        report.write_groups(out, groups)
        report.plot_group_rates(out, groups, p.get("min_group_size") or 1)
        if kind == "classification":
            labels = [str(c) for c in scored.classes]
            report.write_json(out / "confusion_matrix.json", {"labels": labels, "matrix": details["confusion"],
                                                              "rates": details["rates"]})
            report.plot_confusion(out / "confusion_matrix.png", labels, details["confusion"], details["rates"],
                                  target)
            if details["calibration"] is not None:
                report.write_json(out / "calibration.json", {"bins": details["calibration"], "ece": values["ece"]})
                report.plot_calibration(out / "calibration.png", details["calibration"], values["ece"])
        if baseline_metrics is not None:
            report.write_json(out / "baseline" / "metrics.json", baseline_metrics)
        table_text = G.table(rows) if rows else ""
        (out / "summary.md").write_text(report.summary(info, values, rows, table_text, baseline_metrics))
        ctx.progress(2, 2, "done")
        ctx.log.info("metrics %s", json.dumps(values, sort_keys=True))
        if rows:
            ctx.log.info("gates:\n%s", table_text)
        if not all(r["passed"] for r in rows):
            raise GateFailed(G.failure_message(rows, step), keep_artifact=True)


def _check_predictions(params: dict, fail) -> None:
    """`predictions:` parses, names no model task, and comes with the label column."""
    try:
        C.parse(params["predictions"])
    except ValueError as e:
        fail("predictions", f"{e}")
    if params.get("task") not in (None, "tabular-classification", "tabular-regression"):
        fail("task", f"`predictions:` scores a column as a tabular-classification or tabular-regression model, "
                     f"not {params['task']}")
    if not params.get("target"):
        fail("target", "`predictions:` scores a column, so there is no model to read the label column from: set "
                       "`target:` to it, e.g. `target: high_income`")
    if params.get("task") == "tabular-regression" and C.parse(params["predictions"]).op is not None:
        fail("predictions", "a regression is scored from a column of predicted values: {column: COLUMN}, not a "
                            "rule or a threshold")


def _check_pairs(params: dict, fail) -> None:
    """`pairs:` names the prompt and response columns (and optionally a template) of a causal LM's data."""
    from ..training.params import SFT_DATA_DEFAULT

    pairs = params["pairs"]
    if not isinstance(pairs, dict):
        fail("pairs", f"pairs is a mapping such as {{prompt: instruction, response: response}}, got {pairs!r}")
    for key, value in pairs.items():
        if key not in SFT_DATA_DEFAULT:
            fail(f"pairs.{key}", f"unknown key {key!r} in pairs{did_you_mean(key, SFT_DATA_DEFAULT)}; it takes: "
                                 f"{', '.join(SFT_DATA_DEFAULT)}")
        if key != "template" and (not isinstance(value, str) or not value):
            fail(f"pairs.{key}", f"pairs.{key} must name a column, got {value!r}")
    template = pairs.get("template")
    if template is not None and (not isinstance(template, str) or "{prompt}" not in template
                                 or "{response}" not in template
                                 or template.index("{prompt}") > template.index("{response}")):
        fail("pairs.template", f"template is a string with {{prompt}} before {{response}} (null: the tokenizer's "
                               f"chat template), got {template!r}")
    if params.get("text"):
        fail("pairs", "`text:` scores a column as plain text and `pairs:` scores prompt/response pairs; give one")
    if params.get("task") not in (None, "causal-lm"):
        fail("pairs", f"`pairs:` frames prompt/response pairs for a causal LM, not {params['task']}")


def _units(scored, kind: str) -> int:
    """How many independent units (rows, blocks or pairs) the bootstrap resamples."""
    return len(scored.losses) if kind == "language" else scored.rows - scored.skipped


def _unit(kind: str, pairs) -> str:
    return "row" if kind != "language" else "pair" if pairs else "block"


def _interval_warnings(scored, kind: str, unit: str, p: dict, log, who: str = "") -> list[str]:
    """A warning when the headline's interval rests on one unit: resampling one value gives low = high = the
    value, an interval that says nothing of the uncertainty."""
    units = _units(scored, kind)
    if not p["bootstrap"] or units != 1:
        return []
    fix = "score more rows" + (", or a smaller max_length for more blocks" if unit == "block" else "")
    message = (f"{who}the {M.HEADLINE[kind]} interval rests on one {unit}: low = high = the value, so it says "
               f"nothing about the uncertainty; {fix}")
    log.warning("%s", message)
    return [message]


def _intervals(kind: str | None, params: dict) -> dict:
    """The check_gates arguments for bounds: which metrics have an interval, and how many resamples."""
    headline = (M.HEADLINE[kind],) if kind else tuple(M.HEADLINE.values())
    return {"intervals": headline, "resamples": params["bootstrap"]}


def _score_column(kind: str, table, spec, target: str, classes: list, positive, step: str):
    try:
        return C.score(kind, table, spec, target=target, classes=classes, positive=positive)
    except ValueError as e:
        raise RecipeError(f"{e}", step=step, key="params.predictions") from None


def _excluded_groups(tables: dict, p: dict, log) -> dict:
    from ..evaluation import fairness

    excluded = fairness.excluded(tables)
    for column, small in excluded.items():
        log.warning("%s: %s below min_group_size %d: in groups/%s.csv, left out of the gaps", column,
                    ", ".join(f"{g} ({n} rows)" for g, n in small.items()), p.get("min_group_size") or 1, column)
    return excluded


def _data_table(ctx) -> tuple[Path, str | None]:
    """The table to score: the `data` input itself, or its part `params.table` (a split's test/)."""
    from ..table import DATA

    root = Path(ctx.input("data"))
    if (root / DATA).is_file():
        return root, None
    name = ctx.params["table"]
    if (root / name / DATA).is_file():
        return root / name, name
    inner = sorted(p.name for p in root.iterdir() if (p / DATA).is_file()) if root.is_dir() else []
    if not inner:
        raise RecipeError(f"the data input ({root}) is not a table or a split: it holds no {DATA}. Give it an "
                          "ingest, clean or split step", step=ctx.step, key="inputs.data")
    raise RecipeError(f"the data input holds no table {name!r}{did_you_mean(name, inner)}; its tables are: "
                      f"{', '.join(inner)}. Set `table:` to one of them", step=ctx.step, key="params.table")


def _positive(classes: list, label, step: str) -> int | None:
    """The index of the positive class: `positive_label`, or the second of two classes."""
    if label is None:
        return 1 if len(classes) == 2 else None
    for i, c in enumerate(classes):
        if c == label or str(c) == str(label):
            return i
    raise RecipeError(f"positive_label {label!r} is not a class of the model; its classes are: "
                      f"{', '.join(map(repr, classes))}", step=step, key="params.positive_label")


def _measure(scored, kind: str, positive, table, p: dict) -> tuple[dict, dict, dict]:
    """(flat metrics, details for plots, per-group tables) of one scored model."""
    import numpy as np

    from ..evaluation import fairness

    boot = {"resamples": p["bootstrap"], "confidence": p["confidence"], "seed": p["seed"]}
    size = p.get("min_group_size") or 1
    details, tables, groups = {}, {}, {}
    for column in p["protected"]:
        values = np.asarray(table.column(column).to_pylist(), dtype=object)[scored.keep]
        groups[column] = fairness.group_labels(values)
    if kind == "classification":
        k = len(scored.classes)
        values, details = M.classification(scored.y_true, scored.proba, positive=positive, bins=p["calibration_bins"],
                                           classes=k, y_pred=scored.y_pred, score=scored.score)
        y_pred = np.asarray(scored.proba).argmax(axis=1) if scored.y_pred is None else scored.y_pred
        interval = M.bootstrap(y_pred == scored.y_true, **boot)
        if groups:
            bias, tables = fairness.classification(scored.y_true, y_pred, groups, positive=positive, classes=k,
                                                   min_group_size=size, confidence=p["confidence"])
            values.update(bias)
            values.update(fairness.intervals(kind, scored.y_true, y_pred, groups, positive=positive, classes=k,
                                             min_group_size=size, **boot))
    elif kind == "regression":
        values = M.regression(scored.y_true, scored.y_pred)
        errors = (np.asarray(scored.y_true) - np.asarray(scored.y_pred)) ** 2
        interval = M.bootstrap(errors, transform=np.sqrt, **boot)
        if groups:
            bias, tables = fairness.regression(scored.y_true, scored.y_pred, groups, min_group_size=size)
            values.update(bias)
            values.update(fairness.intervals(kind, scored.y_true, scored.y_pred, groups, min_group_size=size,
                                             **boot))
    else:
        values = M.language(scored.losses, scored.tokens, scored.rows)
        interval = M.bootstrap(scored.losses, scored.tokens, transform=np.exp, **boot)
    headline = M.HEADLINE[kind]
    values[f"{headline}_ci_low"], values[f"{headline}_ci_high"] = interval
    return values, details, tables


def _baseline(ctx, kind: str, table, target, text, p: dict, pairs, warnings: list) -> tuple[dict, str | None]:
    """The baseline's metrics: an evaluation artifact's own, or a model's scored on the same table, framed as
    the evaluated model is (the same pairs or text column); and, for a language model, that framing."""
    from ..evaluation import predict, report

    base = Path(ctx.input("baseline"))
    evaluation = predict.read_json(base / "evaluation.json")
    if evaluation:
        if evaluation.get("kind") != kind:
            raise RecipeError(f"the baseline is an evaluation of a {evaluation.get('task')} model, but this step "
                              f"evaluates a {kind} model; compare like with like", step=ctx.step,
                              key="inputs.baseline")
        ctx.log.info("baseline: the metrics of the evaluation %s", base.name)
        return predict.read_json(base / "metrics.json"), evaluation.get("framing")
    task = p["task"] or predict.detect_task(base)
    if task is None or M.KINDS[task] != kind:
        raise RecipeError(f"the baseline input ({base.name}) is neither an evaluation artifact nor a {kind} model "
                          f"(it is {task or 'not a model modelbuild can read'}); give it an evaluate step or a model "
                          "of the same task (a causal LM may be a .gguf file or a folder holding one)",
                          step=ctx.step, key="inputs.baseline")
    ctx.log.info("baseline: scoring the model %s on the same data", base.name)
    classes = predict.classes_of(task, base)
    positive = _positive(classes, p["positive_label"], ctx.step) if kind == "classification" else None
    scored = predict.score(task, base, table, target=target, text=text, params=p, log=ctx.log, pairs=pairs)
    warnings += _interval_warnings(scored, kind, _unit(kind, pairs), p, ctx.log, "baseline: ")
    return report.stable(_measure(scored, kind, positive, table, p)[0]), scored.framing
