"""decay: how well the served model does on the traffic users labelled, per time window, against its own
evaluation; gates fail the step (exit 4) like evaluate's.

Example::

    decay:
      builder: decay
      inputs:
        requests: {log: ../serve-logs, glob: "requests-*", last: 30d}   # the model's logged predictions
        feedback: {log: ../serve-logs, glob: "feedback-*", last: 30d}   # {request_id, label} posted later
        evaluation: evaluate                                            # optional: the model's own metrics
      params:
        window: 1d
        gates: {accuracy: ">= baseline - 0.05"}

Feedback joins the logged predictions by request id (a request's label applies to its record; a list of
labels to its records in order). A label for a request the log does not hold is refused (exit 3): it was
sent for another model or server, or its request's segment lies outside the source's window; set
`unknown_feedback: drop` to count and skip such labels instead. Output: decay.json, gates.json,
metrics.json, monitor.prom, summary.md.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataValidationError, GateFailed, RecipeError, did_you_mean
from .base import Builder, Param, check_input_names

INPUTS = ("requests", "feedback", "evaluation")
METRICS = ("accuracy", "f1", "precision", "recall", "error_rate")
UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class Decay(Builder):
    """Accuracy of the served model on labelled traffic, per window, gated against its evaluation."""

    name = "decay"
    env = ("numpy", "pandas", "pyarrow", "scikit-learn")
    params = {
        "window": Param("str", default="1d", help="the length of a time window: 30m, 12h, 1d, 1w"),
        "gates": Param("dict", default={}, help='metric -> condition on the whole period, e.g. {accuracy: '
                                                '">= baseline - 0.05"} (baseline: the evaluation input\'s value)'),
        "min_labels": Param("int", default=30, help="windows with fewer labels are reported, not judged"),
        "positive_label": Param("any", help="the positive class for f1/precision/recall (default: the second "
                                            "of two sorted labels)"),
        "unknown_feedback": Param("str", default="error", choices=("error", "drop"),
                                  help="a label for a request the log lacks: error (exit 3) or drop (counted)"),
    }

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        from ..evaluation import gates as G

        if _seconds(params["window"]) is None:
            raise RecipeError(f"window is a duration such as 30m, 12h, 1d or 1w, got {params['window']!r}",
                              file=file, step=step, key="params.window")
        if params["min_labels"] < 1:
            raise RecipeError("min_labels must be at least 1", file=file, step=step, key="params.min_labels")
        if not isinstance(params["gates"], dict):
            raise RecipeError("gates is a mapping of metric -> condition", file=file, step=step, key="params.gates")
        for metric, expression in params["gates"].items():
            where = {"file": file, "step": step, "key": f"params.gates.{metric}"}
            if metric not in METRICS:
                raise RecipeError(f"decay measures no metric {metric!r}{did_you_mean(str(metric), METRICS)}; it "
                                  f"measures: {', '.join(METRICS)}", **where)
            try:
                G.parse(metric, expression)
            except ValueError as e:
                raise RecipeError(f"malformed gate: {e}", **where) from None

    def check_inputs(self, params: dict, inputs: dict, *, file: str | None, step: str) -> None:
        check_input_names("decay", inputs, INPUTS, file=file, step=step)
        for name in ("requests", "feedback"):
            if name not in inputs:
                raise RecipeError(f"decay needs a `{name}` input (a `{{log: DIR}}` source of the server's {name} "
                                  "log, or a table)", file=file, step=step, key="inputs")

    def build(self, ctx) -> None:
        import json

        from ..evaluation import gates as G
        from ..monitoring import decay as D
        from ..monitoring import frames
        from ..monitoring.report import write_decay

        p = ctx.params
        requests = frames.read_frame(Path(ctx.input("requests")), None, "the requests input")
        feedback = frames.read_frame(Path(ctx.input("feedback")), None, "the feedback input")
        for what, frame, needed in (("requests", requests, ("request_id", "prediction", "time")),
                                    ("feedback", feedback, ("request_id", "label"))):
            missing = [c for c in needed if c not in frame.columns]
            if missing:
                raise DataValidationError(f"step '{ctx.step}': the {what} input has no column {', '.join(missing)} "
                                          f"(it has {', '.join(map(str, frame.columns))}); give it a request log "
                                          "of `modelbuild serve` or a table with these columns")
        joined, unknown = D.join(requests, feedback)
        if unknown and p["unknown_feedback"] == "error":
            raise DataValidationError(f"step '{ctx.step}': {len(unknown)} feedback labels name requests the request "
                                      f"log does not hold ({', '.join(map(str, unknown[:5]))}"
                                      f"{' ...' if len(unknown) > 5 else ''}): labels for another server, or for "
                                      "requests outside the log source's window. Widen the requests source's "
                                      "window, or set `unknown_feedback: drop` to skip them")
        if not len(joined):
            raise DataValidationError(f"step '{ctx.step}': no feedback label matches a logged request: there is "
                                      "nothing to measure yet")
        positive = D.positive_label(joined, p["positive_label"])
        windows = D.per_window(joined, _seconds(p["window"]), positive, p["min_labels"])
        overall = D.measure(joined["label"], joined["prediction"], positive)
        baseline = None
        if "evaluation" in ctx.inputs:
            baseline = json.loads((Path(ctx.input("evaluation")) / "metrics.json").read_text())
            if "error_rate" not in baseline and "accuracy" in baseline:
                baseline["error_rate"] = 1 - baseline["accuracy"]
        gates = [G.parse(m, e) for m, e in p["gates"].items()]
        rows = G.evaluate(gates, overall, baseline)
        result = {"format": 1, "step": ctx.step, "labelled": len(joined), "requests": int(requests["request_id"].nunique()),
                  "unknown_feedback": len(unknown), "positive_label": positive, "overall": overall,
                  "baseline": {m: baseline.get(m) for m in METRICS} if baseline else None, "windows": windows,
                  "window": p["window"], "passed": all(r["passed"] for r in rows)}
        write_decay(ctx.out, result, rows)
        ctx.log.info("%d labelled requests: %s", len(joined), json.dumps(overall, sort_keys=True))
        if not result["passed"]:
            raise GateFailed(G.failure_message(rows, ctx.step).replace("evaluation gates", "decay gates"),
                             keep_artifact=True)


def _seconds(text) -> float | None:
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", str(text))
    return float(m.group(1)) * UNITS[m.group(2)] if m and float(m.group(1)) > 0 else None
