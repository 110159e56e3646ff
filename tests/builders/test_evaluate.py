"""The evaluate builder's parts: metrics and bias by group against values written out here in plain numpy,
gate parsing and results, recipe-time checks, and byte-stable report files."""

from __future__ import annotations

import numpy as np
import pytest

from modelbuild.builders.evaluate import Evaluate
from modelbuild.errors import RecipeError
from modelbuild.evaluation import gates as G
from modelbuild.evaluation import metrics as M

try:  # SmolLM2-135M-Instruct's GGUF, downloaded once: the fixtures test_finetune.py defines
    from test_finetune import model_cache, smollm  # noqa: F401
except pytest.skip.Exception:  # torch, lightning, transformers or peft is missing: its tests skip
    pass

pytest.importorskip("fairlearn")
pytest.importorskip("sklearn")

# 12 rows, two protected columns; positive class 1
Y_TRUE = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0])
Y_PRED = np.array([1, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0])
SEX = ["F", "F", "F", "F", "F", "F", "M", "M", "M", "M", "M", "M"]
RACE = ["a", "b", "a", "b", "a", "b", "a", "b", "a", "b", None, "b"]


def rate(hits) -> float:
    """A share; 0 when there is nothing to count (fairlearn's convention: a group with no negatives has FPR 0)."""
    return float(hits.mean()) if len(hits) else 0.0


def by_hand(y_true, y_pred, groups):
    """Per group: selection rate, TPR, FPR, FNR and accuracy, with plain numpy."""
    groups = np.array(groups, dtype=object)
    out = {}
    for g in sorted(set(groups.tolist())):
        t, p = y_true[groups == g], y_pred[groups == g]
        pos, neg = t == 1, t == 0
        out[g] = {"selection": rate(p == 1), "tpr": rate(p[pos] == 1), "fpr": rate(p[neg] == 1),
                  "fnr": rate(p[pos] == 0), "accuracy": rate(p == t), "count": len(t)}
    return out


def spread(per_group, name):
    values = [v[name] for v in per_group.values()]
    return max(values) - min(values)


def test_group_metrics_match_numpy():
    from modelbuild.evaluation import fairness

    race = fairness.group_labels(RACE)
    assert race[10] == "(missing)"
    flat, tables = fairness.classification(Y_TRUE, Y_PRED, {"sex": SEX, "race": race}, positive=1, classes=2)
    for column, groups in (("sex", SEX), ("race", race)):
        hand = by_hand(Y_TRUE, Y_PRED, groups)
        selection = [v["selection"] for v in hand.values()]
        assert flat[f"{column}.demographic_parity_difference"] == pytest.approx(max(selection) - min(selection))
        assert flat[f"{column}.demographic_parity_ratio"] == pytest.approx(min(selection) / max(selection))
        assert flat[f"{column}.equalized_odds_difference"] == pytest.approx(
            max(spread(hand, "tpr"), spread(hand, "fpr")))
        assert flat[f"{column}.accuracy_gap"] == pytest.approx(spread(hand, "accuracy"))
        assert flat[f"{column}.fpr_gap"] == pytest.approx(spread(hand, "fpr"))
        assert flat[f"{column}.fnr_gap"] == pytest.approx(spread(hand, "fnr"))
        rows = {r["group"]: r for r in tables[column]}
        assert sorted(rows) == sorted(hand)
        for g, expected in hand.items():
            assert rows[g]["count"] == expected["count"]
            assert rows[g]["accuracy"] == pytest.approx(expected["accuracy"])
            assert rows[g]["fpr"] == pytest.approx(expected["fpr"])
    # the bare name is the worst over the columns: largest difference, smallest ratio
    for name in ("demographic_parity_difference", "equalized_odds_difference", "accuracy_gap", "fnr_gap"):
        assert flat[name] == max(flat[f"sex.{name}"], flat[f"race.{name}"])
    assert flat["demographic_parity_ratio"] == min(flat["sex.demographic_parity_ratio"],
                                                   flat["race.demographic_parity_ratio"])


def test_multiclass_bias_is_one_vs_rest_worst_or_the_positive_label():
    from modelbuild.evaluation import fairness

    y_true = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 0, 2, 2, 1, 1, 2, 0])
    g = ["x"] * 5 + ["y"] * 5
    worst, _ = fairness.classification(y_true, y_pred, {"g": g}, positive=None, classes=3)
    dpd = []
    for c in range(3):
        hand = by_hand((y_true == c).astype(int), (y_pred == c).astype(int), g)
        dpd.append(spread(hand, "selection"))
    assert worst["demographic_parity_difference"] == pytest.approx(max(dpd))
    only2, _ = fairness.classification(y_true, y_pred, {"g": g}, positive=2, classes=3)
    assert only2["demographic_parity_difference"] == pytest.approx(dpd[2])
    acc = by_hand(y_true, y_pred, g)
    assert worst["accuracy_gap"] == pytest.approx(spread(acc, "accuracy"))  # multiclass accuracy


def test_regression_gaps_match_numpy():
    from modelbuild.evaluation import fairness

    y, p = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), np.array([1.5, 2.0, 2.0, 4.0, 7.0, 6.5])
    g = ["a", "a", "a", "b", "b", "b"]
    flat, _ = fairness.regression(y, p, {"g": g})
    err = np.abs(y - p)
    mae = [err[:3].mean(), err[3:].mean()]
    rmse = [np.sqrt((err[:3] ** 2).mean()), np.sqrt((err[3:] ** 2).mean())]
    assert flat["g.mae_gap"] == pytest.approx(abs(mae[0] - mae[1]))
    assert flat["rmse_gap"] == pytest.approx(abs(rmse[0] - rmse[1]))


def test_classification_metrics_match_numpy():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45], [0.1, 0.9]])
    y = np.array([0, 1, 1, 1, 0, 0])
    values, details = M.classification(y, proba, positive=1, bins=10)
    pred = proba.argmax(1)
    assert values["accuracy"] == pytest.approx((pred == y).mean())
    tp, fp, fn = ((pred == 1) & (y == 1)).sum(), ((pred == 1) & (y == 0)).sum(), ((pred == 0) & (y == 1)).sum()
    assert values["precision"] == pytest.approx(tp / (tp + fp))
    assert values["recall"] == pytest.approx(tp / (tp + fn))
    assert values["log_loss"] == pytest.approx(-np.mean(np.log(proba[np.arange(6), y])))
    conf = proba.max(1)
    ece = 0.0
    for b in range(10):
        inside = np.minimum((conf * 10).astype(int), 9) == b
        if inside.any():
            ece += abs((pred[inside] == y[inside]).mean() - conf[inside].mean()) * inside.sum() / 6
    assert values["ece"] == pytest.approx(ece)
    assert details["confusion"] == [[((y == t) & (pred == p)).sum() for p in (0, 1)] for t in (0, 1)]
    assert values["roc_auc"] is not None and values["rows"] == 6


def test_multiclass_without_a_positive_class_has_no_binary_metrics():
    proba = np.eye(3)[[0, 1, 2, 1]] * 0.7 + 0.1
    values, _ = M.classification(np.array([0, 1, 2, 2]), proba, positive=None, bins=5)
    assert "f1" not in values and values["f1_macro"] > 0 and values["roc_auc"] is not None


def test_bootstrap_is_seeded_and_brackets_the_value():
    correct = np.random.default_rng(7).random(100)
    a = M.bootstrap(correct, resamples=500, confidence=0.95, seed=0)
    assert a == M.bootstrap(correct, resamples=500, confidence=0.95, seed=0)
    assert a != M.bootstrap(correct, resamples=500, confidence=0.95, seed=1)
    assert a[0] < correct.mean() < a[1]
    assert M.bootstrap(correct, resamples=0, confidence=0.95, seed=0) == (None, None)


@pytest.mark.parametrize(("text", "op", "number", "baseline"), [
    (">= 0.82", ">=", 0.82, False), ("<=0.1", "<=", 0.1, False), ("> baseline", ">", 0.0, True),
    (">= baseline - 0.01", ">=", -0.01, True), ("< baseline + 1e-3", "<", 0.001, True), (">= -2", ">=", -2.0, False),
])
def test_gate_syntax(text, op, number, baseline):
    gate = G.parse("accuracy", text)
    assert (gate.op, gate.number, gate.baseline) == (op, pytest.approx(number), baseline)


@pytest.mark.parametrize(("text", "says"), [
    ("=> 0.8", "unknown operator '=>'"), ("== 0.8", "unknown operator '=='"), (">= high", "not OP NUMBER"),
    ("0.8", "does not start with an operator"), (0.8, 'write the operator too, e.g. ">= 0.8"'),
    (">= baseline * 2", "not OP NUMBER"),
])
def test_malformed_gates_say_what_is_wrong(text, says):
    with pytest.raises(ValueError, match=None) as e:
        G.parse("accuracy", text)
    assert says in str(e.value)


def test_gate_results_and_table():
    gates = [G.parse("accuracy", ">= 0.9"), G.parse("f1", ">= baseline - 0.01"), G.parse("roc_auc", "> 0.5")]
    rows = G.evaluate(gates, {"accuracy": 0.85, "f1": 0.80, "roc_auc": None}, {"f1": 0.805})
    assert [r["passed"] for r in rows] == [False, True, False]
    assert rows[1]["threshold"] == pytest.approx(0.795) and rows[1]["baseline"] == 0.805
    message = G.failure_message(rows, "evaluate")
    assert "2 of 3 evaluation gates failed (accuracy, roc_auc)" in message
    assert "accuracy  0.85   >= 0.9" in message and "FAIL" in message and "n/a" in message


def normalise(params, inputs=("model", "data")):
    builder = Evaluate()
    out = builder.normalise(params, file="r.yaml", step="ev")
    builder.check_inputs(out, {name: name for name in inputs}, file="r.yaml", step="ev")
    return out


@pytest.mark.parametrize(("params", "inputs", "says"), [
    ({"gates": {"acuracy": ">= 0.8"}}, ("model", "data"), "no metric 'acuracy' (did you mean 'accuracy'?)"),
    ({"gates": {"accuracy": "=> 0.8"}}, ("model", "data"), "unknown operator '=>'"),
    ({"gates": {"accuracy": ">= baseline"}}, ("model", "data"), "has no `baseline` input"),
    ({"gates": {"demographic_parity_difference": "<= 0.1"}}, ("model", "data"), "add `protected:"),
    ({"protected": ["sex"], "gates": {"race.fpr_gap": "<= 0.1"}}, ("model", "data"), "'race' is not a protected"),
    ({"task": "tabular-regression", "gates": {"accuracy": ">= 0.8"}}, ("model", "data"), "no metric 'accuracy'"),
    ({"confidence": 1.5}, ("model", "data"), "between 0 and 1"),
    ({"bootstrapp": 10}, ("model", "data"), "did you mean 'bootstrap'"),
    ({}, ("model",), "needs a `data` input"),
    ({"protected": ["race"], "gates": {"upper(race.fpr_gap)": "<= 0.2", "mid(accuracy)": ">= 0.8"}},
     ("model", "data"), "unknown bound 'mid' in 'mid(accuracy)'; use lower(METRIC) or upper(METRIC)"),
    ({"gates": {"upper(f1)": ">= 0.8"}}, ("model", "data"), "'f1' has no confidence interval"),
    ({"gates": {"lower(acuracy)": ">= 0.8"}}, ("model", "data"), "(did you mean 'accuracy'?)"),
    ({"bootstrap": 0, "gates": {"lower(accuracy)": ">= 0.8"}}, ("model", "data"), "`bootstrap: 0` computes none"),
    ({"predictions": "x >= 1"}, ("data",), "set `target:`"),
    ({"predictions": "x >= 1", "target": "y"}, ("model", "data"), "the `model` input is not used"),
    ({"predictions": {"column": "x", "threshold": "high"}, "target": "y"}, ("data",), "threshold is a number"),
    ({"predictions": "x >= 1", "target": "y", "task": "causal-lm"}, ("data",), "not causal-lm"),
    ({"min_group_size": 0}, ("model", "data"), "min_group_size must be at least 1"),
    ({}, ("model", "data", "baseline", "extra"), "not 'extra'"),
    ({"pairs": {"prompt": "q", "reponse": "a"}}, ("model", "data"), "unknown key 'reponse' in pairs (did you mean "
                                                                     "'response'?)"),
    ({"pairs": {"prompt": "q", "template": "A: {response} Q: {prompt}"}}, ("model", "data"), "{prompt} before"),
    ({"pairs": {"prompt": "q"}, "text": "t"}, ("model", "data"), "give one"),
    ({"pairs": {"prompt": "q"}, "task": "sequence-classification"}, ("model", "data"), "not sequence-classification"),
])
def test_recipe_time_checks(params, inputs, says):
    with pytest.raises(RecipeError) as e:
        normalise(params, inputs)
    assert says in str(e.value) and "step 'ev'" in str(e.value)


def test_good_params_pass_and_fill_defaults():
    out = normalise({"protected": ["sex", "race"], "gates": {"sex.demographic_parity_ratio": ">= 0.8",
                                                             "accuracy": ">= baseline - 0.01"}},
                    ("model", "data", "baseline"))
    assert out["bootstrap"] == 1000 and out["table"] == "test"


def test_bound_gates_read_the_interval():
    gates = [G.parse("upper(race.fpr_gap)", "<= 0.25"), G.parse("lower(accuracy)", ">= baseline - 0.05")]
    assert [g.key for g in gates] == ["race.fpr_gap_ci_high", "accuracy_ci_low"]
    values = {"race.fpr_gap": 0.1, "race.fpr_gap_ci_high": 0.3, "accuracy": 0.9, "accuracy_ci_low": 0.86}
    rows = G.evaluate(gates, values, {"accuracy_ci_low": 0.8})
    assert [(r["metric"], r["value"], r["passed"]) for r in rows] == [("upper(race.fpr_gap)", 0.3, False),
                                                                       ("lower(accuracy)", 0.86, True)]


def test_a_good_predictions_step_passes():
    out = normalise({"predictions": "education_num >= 13", "target": "high_income", "protected": ["race"],
                     "min_group_size": 30, "gates": {"upper(race.fpr_gap)": "<= 0.25"}}, ("data",))
    assert out["min_group_size"] == 30
    assert "min_group_size" not in normalise({})  # not set, not in the params: existing keys stay


@pytest.mark.parametrize(("spec", "column", "op", "value"), [
    ("education_num >= 13", "education_num", ">=", 13.0), ("age<30", "age", "<", 30.0),
    ("sex == Female", "sex", "==", "Female"), ("race != 'Asian-Pac-Islander'", "race", "!=", "Asian-Pac-Islander"),
    ({"column": "decile_score", "threshold": 5}, "decile_score", ">=", 5.0), ({"column": "last_year"}, "last_year", None, None),
])
def test_prediction_forms(spec, column, op, value):
    from modelbuild.evaluation import columns

    parsed = columns.parse(spec)
    assert (parsed.column, parsed.op, parsed.value) == (column, op, value)


@pytest.mark.parametrize(("spec", "says"), [
    ("education_num => 13", "unknown operator '=>'"), ("education_num >= high", "is not a number"),
    ("education_num", "is not a rule COLUMN OP VALUE"), ("x >=", "has nothing after '>='"),
    ("x >= 1 and y < 2", "is not a number"), ("x == a b", "quote it"),
    ({"column": "p", "threshold": 2, "probability": True}, "between 0 and 1"), ({"col": "x"}, "unknown key 'col'"),
    (3, "predictions is a rule or a mapping"),
])
def test_bad_prediction_forms(spec, says):
    from modelbuild.evaluation import columns

    with pytest.raises(ValueError) as e:
        columns.parse(spec)
    assert says in str(e.value)


def test_a_rule_and_a_score_are_scored_like_a_model():
    pa = pytest.importorskip("pyarrow")
    from modelbuild.evaluation import columns

    table = pa.table({"edu": [9, 13, 16, None, 10, 14], "p": [0.1, 0.7, 0.9, 0.4, 0.6, 0.2],
                      "y": [0, 1, 1, 0, 1, 0]})
    rule = columns.parse("edu >= 13")
    classes = columns.classes(table, "y", rule)
    scored = columns.score("classification", table, rule, target="y", classes=classes, positive=1)
    assert classes == [0, 1] and scored.skipped == 1 and scored.y_pred.tolist() == [0, 1, 1, 0, 1]
    values, details = M.classification(scored.y_true, None, positive=1, bins=10, classes=2, y_pred=scored.y_pred,
                                       score=scored.score)
    assert values["accuracy"] == pytest.approx(3 / 5) and values["log_loss"] is None
    assert values["roc_auc"] == pytest.approx(2 / 3 * 0.5 + 1 / 3 * 0.5 + 1 / 6)  # edu ranks the rows
    assert details["rates"] == [[0.5, 0.5], [1 / 3, 2 / 3]]
    prob = columns.parse({"column": "p", "threshold": 0.5, "probability": True})
    scored = columns.score("classification", table, prob, target="y", classes=classes, positive=1)
    values, details = M.classification(scored.y_true, scored.proba, positive=1, bins=10, classes=2,
                                       y_pred=scored.y_pred, score=scored.score)
    assert values["log_loss"] is not None and details["calibration"] is not None and scored.skipped == 0


def fairlearn_gaps(y, p, g, positive, classes):
    """The gaps as fairlearn's functions compute them, worst over the one-vs-rest classes."""
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        false_negative_rate,
        false_positive_rate,
    )
    from sklearn.metrics import accuracy_score

    per_class = []
    for c in ([positive] if positive is not None else range(classes)):
        yt, yp = (y == c).astype(int), (p == c).astype(int)
        gaps = MetricFrame(metrics={"fpr": false_positive_rate, "fnr": false_negative_rate}, y_true=yt, y_pred=yp,
                           sensitive_features=g).difference()
        per_class.append([demographic_parity_difference(yt, yp, sensitive_features=g),
                          demographic_parity_ratio(yt, yp, sensitive_features=g),
                          equalized_odds_difference(yt, yp, sensitive_features=g), gaps["fpr"], gaps["fnr"]])
    worst = [max(x[0] for x in per_class), min(x[1] for x in per_class)] + [max(x[i] for x in per_class)
                                                                             for i in (2, 3, 4)]
    accuracy = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=p, sensitive_features=g).difference()
    return dict(zip(("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
                     "fpr_gap", "fnr_gap", "accuracy_gap"), [*worst, accuracy], strict=True))


def test_the_gaps_are_fairlearns_without_the_small_groups():
    """The vectorised statistic behind the gaps and their bootstrap gives fairlearn's numbers on the rows
    of the groups large enough: binary, one-vs-rest multiclass and regression."""
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    from modelbuild.evaluation import fairness as F

    rng = np.random.default_rng(1)
    n = 400
    groups = {"g": list(rng.choice(["a", "b", "c", "d"], n, p=[0.5, 0.3, 0.18, 0.02])),
              "h": list(rng.choice(["x", "y"], n))}
    kept = np.asarray(groups["g"]) != "d"
    for classes, positive in ((2, 1), (3, None), (3, 2)):
        y = rng.integers(0, classes, n)
        p = np.where(rng.random(n) < 0.7, y, rng.integers(0, classes, n))
        flat, tables = F.classification(y, p, groups, positive=positive, classes=classes, min_group_size=20)
        theirs = fairlearn_gaps(y[kept], p[kept], np.asarray(groups["g"])[kept], positive, classes)
        assert {k: flat[f"g.{k}"] for k in theirs} == pytest.approx(theirs)
        theirs = fairlearn_gaps(y, p, np.asarray(groups["h"]), positive, classes)
        assert {k: flat[f"h.{k}"] for k in theirs} == pytest.approx(theirs)
        assert F.excluded(tables) == {"g": {"d": groups["g"].count("d")}}
    y, p = rng.random(n), rng.random(n)
    flat, _ = F.regression(y, p, groups, min_group_size=20)
    frame = MetricFrame(metrics={"mae": mean_absolute_error, "rmse": root_mean_squared_error}, y_true=y[kept],
                        y_pred=p[kept], sensitive_features=np.asarray(groups["g"])[kept]).difference()
    assert (flat["g.mae_gap"], flat["g.rmse_gap"]) == pytest.approx((frame["mae"], frame["rmse"]))
    ci = F.intervals("regression", y, p, groups, min_group_size=20, resamples=200, confidence=0.9, seed=3)
    assert ci == F.intervals("regression", y, p, groups, min_group_size=20, resamples=200, confidence=0.9, seed=3)
    assert ci["g.mae_gap_ci_low"] < ci["g.mae_gap_ci_high"]
    assert ci["mae_gap_ci_high"] == max(ci["g.mae_gap_ci_high"], ci["h.mae_gap_ci_high"])


def test_a_gap_needs_two_groups():
    from modelbuild.evaluation import fairness as F

    flat, tables = F.classification(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), {"g": ["a", "a", "a", "b"]},
                                    positive=1, classes=2, min_group_size=2)
    assert flat["g.fpr_gap"] is None and flat["fpr_gap"] is None
    assert [(r["group"], r["in_gaps"]) for r in tables["g"]] == [("a", True), ("b", False)]
    b = tables["g"][1]  # one negative, no false positive: the Wilson interval of 0/1 is 0 .. z^2 / (1 + z^2)
    assert (b["fpr"], b["fpr_ci_low"], b["fnr_ci_low"]) == (0.0, 0.0, None)
    assert b["fpr_ci_high"] == pytest.approx(1.959964 ** 2 / (1 + 1.959964 ** 2))


def test_ece_equals_torchmetrics():
    """scikit-learn has no ECE, and torchmetrics' gives the number but not the bins that calibration.json
    and the plot need: ours is checked against it."""
    torch = pytest.importorskip("torch")
    functional = pytest.importorskip("torchmetrics.functional.classification")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 3)) * 2
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, 3, 500)
    values, _ = M.classification(y, proba, positive=None, bins=10)
    theirs = functional.multiclass_calibration_error(torch.tensor(proba), torch.tensor(y), num_classes=3, n_bins=10)
    assert values["ece"] == pytest.approx(float(theirs), abs=1e-6)


def test_plots_are_byte_identical(tmp_path):
    from modelbuild.evaluation import report

    bins = M.expected_calibration_error(np.array([0.55, 0.7, 0.9, 0.95]), np.array([1, 0, 1, 1]), 10)[1]
    for name in ("a", "b"):
        report.plot_confusion(tmp_path / f"{name}-cm.png", ["no", "yes"], [[3, 1], [2, 4]], [[.75, .25], [1 / 3, 2 / 3]])
        report.plot_calibration(tmp_path / f"{name}-cal.png", bins, 0.1)
        report.plot_group_rates(tmp_path / name, {"race": [
            {"group": "a", "count": 40, "in_gaps": True, "fpr": 0.1, "fnr": 0.3},
            {"group": "b", "count": 3, "in_gaps": False, "fpr": 0.5, "fnr": 0.0}]}, 30)
    assert (tmp_path / "a-cm.png").read_bytes() == (tmp_path / "b-cm.png").read_bytes()
    assert (tmp_path / "a-cal.png").read_bytes() == (tmp_path / "b-cal.png").read_bytes()
    assert (tmp_path / "a/groups/race.png").read_bytes() == (tmp_path / "b/groups/race.png").read_bytes()
    assert b"Software" not in (tmp_path / "a-cm.png").read_bytes()


# ---- language models, through the builder ---------------------------------------------------------------
def _train(tmp_path, task, inputs, model, data, steps):
    from modelbuild.builders.base import BuildContext
    from modelbuild.builders.train import Train
    from modelbuild.training import loop
    from modelbuild.training.tasks import load_task

    params = Train().normalise({"task": task, "model": model, "data": data, "batch_size": 8,
                                "trainer": {"max_steps": steps}, "optimizer": {"lr": 0.01}}, file="r.yaml", step="m")
    out = tmp_path / task
    out.mkdir()
    ctx = BuildContext(step="m", inputs=inputs, out=out, params=params, recipe_dir=tmp_path, work=tmp_path / "work")
    loop.fit(ctx, load_task(task, ctx, params), params)
    return out


def _tokenizer(tmp_path, table, column):
    from modelbuild.builders.base import BuildContext
    from modelbuild.builders.tokenizer import Tokenizer

    out = tmp_path / "tok"
    out.mkdir()
    params = Tokenizer().normalise({"kind": "wordpiece", "vocab_size": 80, "column": column}, file="r.yaml", step="t")
    Tokenizer().build(BuildContext(step="t", inputs={"data": table}, out=out, params=params, recipe_dir=tmp_path))
    return out


def _evaluate(tmp_path, inputs, **params):
    from modelbuild.builders.base import BuildContext

    out = tmp_path / "evaluation"
    out.mkdir()
    params = Evaluate().normalise(params, file="r.yaml", step="ev")
    Evaluate().build(BuildContext(step="ev", inputs=inputs, out=out, params=params, recipe_dir=tmp_path))
    return out


@pytest.mark.slow(minutes=3)
def test_language_models_are_scored(tmp_path):
    """A tiny BERT classifier (with bias by group) and a tiny GPT-2 (loss and perplexity)."""
    import json
    import math
    import random

    pa = pytest.importorskip("pyarrow")
    pytest.importorskip("transformers")
    from modelbuild.table import write_table

    rng = random.Random(0)
    words = {"pos": "good fine happy", "neg": "bad sad grim"}
    rows = [(label, rng.choice(["x", "y"])) for label in rng.choices(sorted(words), k=200)]
    texts = [f"it was {rng.choice(words[label].split())} today" for label, _ in rows]
    table = pa.table({"sentence": texts, "mood": [r[0] for r in rows], "group": [r[1] for r in rows]})
    write_table(table, tmp_path / "data")
    tok = _tokenizer(tmp_path, tmp_path / "data", "sentence")
    bert = {"architecture": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 32, "max_position_embeddings": 32}
    classifier = _train(tmp_path, "sequence-classification", {"data": tmp_path / "data", "tokenizer": tok}, bert,
                        {"text": "sentence", "label": "mood", "max_length": 16}, 40)
    out = _evaluate(tmp_path, {"model": classifier, "data": tmp_path / "data"}, text="sentence", target="mood",
                    protected=["group"], bootstrap=50)
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "evaluation.json").read_text())["task"] == "sequence-classification"
    assert metrics["rows"] == 200 and metrics["accuracy"] > 0.5 and "group.fpr_gap" in metrics
    header = (out / "groups" / "group.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["group", "count", "in_gaps"] and {"accuracy", "fpr", "fnr", "fpr_ci_low"} <= set(header)

    gpt2 = {"architecture": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 32}
    lm = _train(tmp_path, "causal-lm", {"data": tmp_path / "data", "tokenizer": tok}, gpt2,
                {"column": "sentence", "block_size": 16}, 20)
    out2 = tmp_path / "second"
    out2.mkdir()
    scored = _evaluate(out2, {"model": lm, "data": tmp_path / "data"}, text="sentence", max_length=16, bootstrap=50)
    metrics = json.loads((scored / "metrics.json").read_text())
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]), rel=1e-6)
    assert metrics["perplexity_ci_low"] < metrics["perplexity"] < metrics["perplexity_ci_high"]
    assert metrics["tokens"] > metrics["blocks"] > 0
    assert not (scored / "confusion_matrix.png").exists()


# ---- instruction-tuned models: scored as training framed them ---------------------------------------------
SFT_RECIPE = """
name: sftval
steps:
  pairs:
    builder: ingest
    inputs: {data: {path: pairs.jsonl}}
  splits:
    builder: split
    inputs: {data: pairs}
    params: {method: random, fractions: {train: 0.75, validation: 0.25}, seed: 0}
  sft:
    builder: finetune
    inputs: {model: {path: tiny}, data: splits}
    params:
      task: sft
      num_threads: 1
      max_length: 32
      batch_size: 4
      optimizer: {lr: 0.01}
      trainer: {max_steps: 6, val_check_interval: 6, num_sanity_val_steps: 0}
  judge:
    builder: evaluate
    inputs: {model: sft, data: splits, baseline: {path: tiny}}
    params: {table: validation, bootstrap: 200, num_threads: 1, gates: {perplexity: "<= baseline"}}
  responses:
    builder: evaluate
    description: the responses alone as plain text, one block of up to 128 tokens
    inputs: {model: sft, data: splits}
    params: {table: validation, text: response, max_length: 128, bootstrap: 50, num_threads: 1}
"""
THINGS = ["sky", "grass", "sun", "snow", "coal", "rose", "sea", "leaf"]
COLOURS = ["blue", "green", "yellow", "white", "black", "red", "blue", "green"]
CHAT = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}\n{% if m['role'] == 'assistant' %}<eos>"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}")


def _save_chat_llama(folder) -> None:
    """A 2-layer llama from a config, with a word-level tokenizer and a chat template of plain words."""
    import torch
    import transformers
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<eos>", "<unk>", "user", "assistant", ":", "\n", "what", "colour", "is", "the", "?", ".",
             *dict.fromkeys(THINGS + COLOURS)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w ]"), behavior="isolated")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                                unk_token="<unk>")
    fast.chat_template = CHAT
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=128, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)


def test_an_instruction_tuned_model_is_scored_as_training_framed_it(project, cli):
    """evaluate's perplexity of an sft fine-tune on its validation pairs is training's val_perplexity; the
    base model (the baseline) is framed alike; one block of plain text warns that its interval is no interval."""
    import json
    import math
    from pathlib import Path

    pytest.importorskip("lightning")
    _save_chat_llama(project / "tiny")
    rows = [{"instruction": f"what colour is the {t} ?", "response": f"the {t} is {c} ."}
            for t, c in zip(THINGS * 5, COLOURS * 5, strict=True)]
    project.write("pairs.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    project.write("recipe.yaml", SFT_RECIPE)
    result = cli.build()
    paths = {step: Path(s["path"]) for step, s in result["by_step"].items()}
    trained = json.loads((paths["sft"] / "metrics.json").read_text())
    scored = json.loads((paths["judge"] / "metrics.json").read_text())
    info = json.loads((paths["judge"] / "evaluation.json").read_text())
    assert scored["perplexity"] == pytest.approx(trained["val_perplexity"], rel=1e-5)
    assert scored["loss"] == pytest.approx(trained["val_loss"], rel=1e-5)
    assert scored["blocks"] == info["scored"] == 10  # each validation pair, its response tokens as training counted
    assert f"validation: 10 pairs, {scored['tokens']} response tokens" in cli("log", "sftval:sft").stdout
    assert "chat template" in info["framing"] and "response tokens only" in info["framing"]
    assert info["baseline_framing"] == info["framing"] and info["text_column"] is None
    assert info["pairs"] == {"prompt_column": "instruction", "response_column": "response", "template": None,
                             "max_length": 32, "from": "training"}
    baseline = json.loads((paths["judge"] / "baseline" / "metrics.json").read_text())
    assert baseline["perplexity"] > scored["perplexity"] and info["warnings"] == []  # the fine-tune learnt
    assert scored["perplexity_ci_low"] < scored["perplexity"] < scored["perplexity_ci_high"]

    plain = json.loads((paths["responses"] / "evaluation.json").read_text())
    metrics = json.loads((paths["responses"] / "metrics.json").read_text())
    assert plain["framing"].startswith("plain text") and plain["pairs"] is None
    assert metrics["blocks"] == 1 and metrics["perplexity_ci_low"] == metrics["perplexity_ci_high"]
    assert plain["bootstrap"]["units"] == 1 and "rests on one block" in plain["warnings"][0]
    log = cli("log", "sftval:responses").stdout
    assert "WARNING" in log and "perplexity interval rests on one block" in log
    assert not math.isclose(metrics["perplexity"], scored["perplexity"], rel_tol=0.01)



@pytest.mark.slow(minutes=3)
def test_a_gguf_model_is_a_baseline_and_a_model(tmp_path, smollm):
    """SmolLM2-135M-Instruct as `finetune` takes it (the folder holding its .gguf file) is the baseline of a
    fine-tune, framed by its own chat template; a .gguf file or its folder is a causal LM to evaluate."""
    import json

    pa = pytest.importorskip("pyarrow")
    pytest.importorskip("gguf")
    from modelbuild.evaluation.predict import detect_task
    from modelbuild.table import write_table

    assert detect_task(smollm) == detect_task(smollm.parent) == "causal-lm"  # refused before: no config.json
    _save_chat_llama(tmp_path / "tiny")
    pairs = [("what colour is the sky ?", "the sky is blue ."), ("what colour is the snow ?", "the snow is white ."),
             ("what colour is the coal ?", "the coal is black .")]
    write_table(pa.table({"question": [p for p, _ in pairs], "answer": [r for _, r in pairs]}), tmp_path / "data")
    out = _evaluate(tmp_path, {"model": tmp_path / "tiny", "data": tmp_path / "data", "baseline": smollm.parent},
                    pairs={"prompt": "question", "response": "answer"}, bootstrap=50, batch_size=4,
                    gates={"perplexity": ">= baseline"})
    info = json.loads((out / "evaluation.json").read_text())
    baseline = json.loads((out / "baseline" / "metrics.json").read_text())
    assert info["task"] == "causal-lm" and info["pairs"]["from"] == "params" and info["scored"] == 3
    assert "chat template" in info["framing"] and info["baseline_framing"] == info["framing"]
    assert baseline["blocks"] == 3 and 1 < baseline["perplexity"] < 50  # an instruct model, framed as it was tuned
    assert json.loads((out / "gates.json").read_text())["passed"]  # the untrained tiny model: far worse
