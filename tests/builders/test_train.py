"""The train builder on tabular tasks, in process: it learns, the export reloads to the same predictions,
CPU builds are bit-identical, a resumed build is byte-identical to an uninterrupted one, and bad input
fails with a clear error."""

from __future__ import annotations

import json
import time

import pytest

pa = pytest.importorskip("pyarrow")
np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("safetensors")

from modelbuild.builders.base import BuildContext  # noqa: E402
from modelbuild.builders.train import Train  # noqa: E402
from modelbuild.errors import BuildError, RecipeError  # noqa: E402
from modelbuild.table import write_table  # noqa: E402

FAST = {"trainer": {"max_epochs": 3, "enable_model_summary": False, "num_sanity_val_steps": 0},
        "batch_size": 64, "optimizer": {"lr": 0.01}}


def synthetic(n: int, seed: int = 0):
    """Two numbers and a colour decide the label (and the regression target), with a little noise."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    score = x1 + 0.5 * x2 + (colour == "red") + 0.1 * rng.normal(size=n)
    return pa.table({"x1": x1, "x2": x2, "colour": colour, "size": rng.integers(0, 5, n),
                     "label": np.where(score > 0.5, "yes", "no"), "score": score})


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    """A split artifact: train/ and validation/ tables."""
    root = tmp_path_factory.mktemp("splits")
    table = synthetic(1200)
    write_table(table.slice(0, 1000), root / "train")
    write_table(table.slice(1000), root / "validation")
    return root


def params(**overrides) -> dict:
    given = {"task": "tabular-classification", "data": {"target": "label", "drop": ["score"]}, **FAST, **overrides}
    return Train().normalise(given, file="recipe.yaml", step="model")


def fit(tmp_path, data, p, name="out", seed=0, work=None):
    """Run the loop in process, like the worker would; return (task, context)."""
    from modelbuild.training import loop
    from modelbuild.training.tasks import load_task

    out = tmp_path / name
    out.mkdir()
    ctx = BuildContext(step="model", inputs={"data": data}, out=out, params=p, recipe_dir=tmp_path, seed=seed,
                       work=work or tmp_path / f"{name}-work", live_logs=tmp_path / f"{name}-live")
    task = load_task(p["task"], ctx, p)
    loop.fit(ctx, task, p)
    return task, ctx


def files(folder) -> dict:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def trained(splits, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    return fit(tmp, splits, params())


def test_it_learns_and_writes_the_artifact(trained):
    _, ctx = trained
    metrics = json.loads((ctx.out / "metrics.json").read_text())
    assert metrics["val_accuracy"] > 0.85, metrics  # chance is about 0.5
    assert 0 < metrics["val_f1"] <= 1 and metrics["val_loss"] < 0.6
    assert metrics["reproducibility"] == "bit-identical" and metrics["device"] == "cpu"
    assert metrics["epochs"] == 3 and metrics["steps"] == 3 * 16 and metrics["samples"] == 3 * 1000
    assert "wall_seconds" not in metrics  # facts of the run are not part of the artifact...
    assert ctx.facts["samples_per_second"] > 0 and ctx.facts["peak_memory_mb"] > 0  # ...but of its lineage
    assert sorted(files(ctx.out)) == ["config.json", "logs/metrics.csv",
                                      "logs/tensorboard/events.out.tfevents.modelbuild", "metrics.json",
                                      "model.onnx", "model.safetensors"]
    config = json.loads((ctx.out / "config.json").read_text())
    assert config["model_type"] == "modelbuild-tabular-mlp"
    assert [c["name"] for c in config["numeric"]] == ["x1", "x2", "size"]
    assert [c["name"] for c in config["categorical"]] == ["colour"]
    assert config["target"] == {"name": "label", "classes": ["no", "yes"]}
    header = (ctx.out / "logs/metrics.csv").read_text().splitlines()[0]
    assert header.startswith("step,epoch,") and "val_accuracy" in header and "train_loss_epoch" in header


def test_tensorboard_events_are_readable(trained):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, ctx = trained
    events = EventAccumulator(str(ctx.out / "logs/tensorboard"))
    events.Reload()
    assert {"val_accuracy", "train_loss_epoch", "lr-AdamW"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val_accuracy")] == [15, 31, 47]
    assert [e.value for e in events.Scalars("lr-AdamW")] == pytest.approx([0.01] * 3)  # an epoch each
    assert {e.wall_time for e in events.Scalars("val_accuracy")} == {0.0}  # the artifact stays byte-identical
    # the live events, outside the artifact: the params as hparams, the same values, with the times they were logged
    live = EventAccumulator(str(ctx.live_logs))
    live.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        live.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["optimizer.lr"].number_value == pytest.approx(0.01)
    assert json.loads(start.hparams["data.drop"].string_value) == ["score"]
    assert start.hparams["optimizer.name"].string_value == "adamw" and "checkpoint_every_n_steps" not in start.hparams
    assert [e.value for e in live.Scalars("val_accuracy")] == [e.value for e in events.Scalars("val_accuracy")]
    times = [e.wall_time for e in live.Scalars("train_loss_epoch") + live.Scalars("val_loss")]
    assert all(time.time() - 3600 < t <= time.time() for t in times)
    assert "_hparams_/session_end_info" in live.PluginTagToContent("hparams")


def test_the_exported_model_reloads_to_the_same_predictions(trained, splits):
    from modelbuild.table import read_table
    from modelbuild.training.tabular import load

    task, ctx = trained
    module, preprocess = load(ctx.out)
    table = read_table(splits / "validation")
    task.net.eval()
    with torch.no_grad():
        expected = task.net(*preprocess(table))
        got = module(*preprocess(table))
        from_pandas = module(*preprocess(table.to_pandas()))
    assert torch.equal(expected, got) and torch.equal(got, from_pandas)
    assert got.shape == (200, 2)
    unknown = {"x1": [0.1], "x2": [None], "colour": ["purple"], "size": [2]}
    numeric, categorical = preprocess(unknown)
    assert categorical.tolist() == [[0]] and numeric[0, 1].item() == 0.0  # unknown -> 0, missing -> the mean
    assert module(numeric, categorical).shape == (1, 2)


def test_the_public_loader_predicts_labels_and_probabilities(trained, splits):
    import modelbuild
    from modelbuild.table import read_table

    task, ctx = trained
    model = modelbuild.load_model(ctx.out)
    table = read_table(splits / "validation")
    with torch.no_grad():
        expected = torch.softmax(task.net.eval()(*model.encode(table)), dim=1).numpy()
    assert model.task == "tabular-classification" and model.classes == ["no", "yes"]
    assert np.array_equal(model.predict_proba(table), expected)
    assert model.predict(table) == [["no", "yes"][i] for i in expected.argmax(1)]
    assert model.predict({"x1": [3.0], "x2": [1.0], "colour": ["red"], "size": [1]}) == ["yes"]
    with pytest.raises(ValueError, match="holds no model modelbuild can load"):
        modelbuild.load_model(splits)


def test_onnx_export_gives_torchs_predictions_in_onnxruntime(trained, splits, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import modelbuild
    from modelbuild.table import read_table

    _, ctx = trained
    regression = fit(tmp_path, splits, params(task="tabular-regression", data={"target": "score", "drop": ["label"]},
                                              trainer={**FAST["trainer"], "max_epochs": 1}))[1]
    table = read_table(splits / "validation")
    for out, shape in ((ctx.out, (200, 2)), (regression.out, (200,))):
        model = modelbuild.load_model(out)
        numeric, categorical = model.encode(table)
        session = ort.InferenceSession(str(out / "model.onnx"))
        assert [i.name for i in session.get_inputs()] == ["numeric", "categorical"]
        got = session.run(["output"], {"numeric": numeric.numpy(), "categorical": categorical.numpy()})[0]
        assert got.shape == shape
        np.testing.assert_allclose(got, model(table).numpy(), rtol=0, atol=1e-5)


def test_two_builds_are_bit_identical(trained, splits, tmp_path):
    _, first = trained
    _, second = fit(tmp_path, splits, params())
    assert files(first.out) == files(second.out)


def test_another_seed_gives_other_weights(trained, splits, tmp_path):
    _, first = trained
    weights = (first.out / "model.safetensors").read_bytes()
    _, step_seed = fit(tmp_path, splits, params(seed=1), name="step-seed")
    _, recipe_seed = fit(tmp_path, splits, params(), name="recipe-seed", seed=1)
    assert (step_seed.out / "model.safetensors").read_bytes() != weights
    assert (recipe_seed.out / "model.safetensors").read_bytes() != weights
    assert json.loads((step_seed.out / "metrics.json").read_text())["seed"] == 1


def test_a_resumed_build_is_byte_identical(trained, splits, tmp_path, monkeypatch):
    """Stop right after the checkpoint of step 20 (mid-epoch), build again: same bytes as no stop at all."""
    from modelbuild.training import loop

    class Killed(Exception):
        pass

    save = loop._AtomicCheckpointIO.save_checkpoint

    def save_then_die(self, checkpoint, path, storage_options=None):
        save(self, checkpoint, path, storage_options)
        if checkpoint["global_step"] >= 20:
            raise Killed

    p = params(checkpoint_every_n_steps=10)
    monkeypatch.setattr(loop._AtomicCheckpointIO, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        fit(tmp_path, splits, p, name="killed", work=tmp_path / "work")
    monkeypatch.undo()
    assert (tmp_path / "work/checkpoints/last.ckpt").is_file()
    _, resumed = fit(tmp_path, splits, p, name="resumed", work=tmp_path / "work")
    assert resumed.facts["resumed_from_step"] == 20
    _, first = trained
    assert files(resumed.out) == files(first.out)  # checkpoint_every_n_steps does not change the model


def test_by_default_a_short_training_saves_no_checkpoint_but_a_slow_one_does(splits, tmp_path, monkeypatch):
    """Checkpoints wait for 30 s of training (and 20 times the last save) since the previous one, so a short
    run pays nothing for them; the bytes of the model do not depend on where they fall."""
    from modelbuild.training import loop

    saved = []
    save = loop._AtomicCheckpointIO.save_checkpoint
    monkeypatch.setattr(loop._AtomicCheckpointIO, "save_checkpoint",
                        lambda self, checkpoint, path, storage_options=None: (
                            saved.append(checkpoint["global_step"]), save(self, checkpoint, path, storage_options)))
    monkeypatch.delenv(loop.CHECKPOINT_SECONDS_ENV)
    p = params(checkpoint_every_n_steps=10)
    fit(tmp_path, splits, p, name="quick")
    assert saved == []
    clock = iter(range(0, 10**6, 7))  # every reading of the clock 7 s later: each step is a long one
    monkeypatch.setattr(loop.time, "perf_counter", lambda: float(next(clock)))
    fit(tmp_path, splits, p, name="slow")
    assert saved and all(step % 10 == 0 for step in saved) and len(saved) < 48 // 10 + 1


def test_regression_learns_and_reloads(splits, tmp_path):
    from modelbuild.table import read_table
    from modelbuild.training.tabular import load

    p = params(task="tabular-regression", data={"target": "score", "drop": ["label"]})
    task, ctx = fit(tmp_path, splits, p)
    metrics = json.loads((ctx.out / "metrics.json").read_text())
    assert metrics["val_mae"] < 0.3 and metrics["val_rmse"] < 0.4, metrics  # the score's std is about 1.3
    module, preprocess = load(ctx.out)
    table = read_table(splits / "validation")
    task.net.eval()
    with torch.no_grad():
        predictions = module(*preprocess(table))
        assert torch.equal(predictions, task.net(*preprocess(table)))
    truth = np.asarray(table.column("score"))
    assert np.abs(predictions.numpy() - truth).mean() == pytest.approx(metrics["val_mae"], rel=1e-4)


def test_a_loss_that_becomes_nan_fails_the_build(splits, tmp_path):
    with pytest.raises(BuildError, match=r"step 'model': the training loss became (nan|inf).* at training "
                                         r"step \d+.*optimizer.lr.*gradient_clip_val"):
        fit(tmp_path, splits, params(optimizer={"lr": 1e20}))
    assert not (tmp_path / "out-work/checkpoints").exists()


def test_too_little_memory_says_what_to_lower(splits, tmp_path):
    with pytest.raises(BuildError, match=r"step 'model': too little memory to train .*Lower `batch_size`"):
        fit(tmp_path, splits, params(model={"hidden": [2 ** 38]}))


def test_a_missing_target_is_named_with_did_you_mean(splits, tmp_path):
    with pytest.raises(BuildError, match=r"params.data.target names column 'labl' \(did you mean 'label'\?\)"):
        fit(tmp_path, splits, params(data={"target": "labl"}))


def test_a_target_with_one_class_fails(tmp_path):
    table = synthetic(100).append_column("one", pa.array(["same"] * 100))
    write_table(table, tmp_path / "table")
    with pytest.raises(BuildError, match=r"target 'one' has 1 class in the training data \('same'\)"):
        fit(tmp_path, tmp_path / "table", params(data={"target": "one"}))


def test_a_feature_that_is_no_number_must_be_categorical(splits, tmp_path):
    with pytest.raises(BuildError, match=r"feature 'colour' has type string.*data.categorical"):
        fit(tmp_path, splits, params(data={"target": "label", "features": ["x1", "colour"], "categorical": []}))


@pytest.mark.parametrize("change, message", [
    ({"trainer": {"max_epoch": 3}}, r"key 'params.trainer.max_epoch': unknown lightning.Trainer argument "
                                    r"'max_epoch' \(did you mean 'max_epochs'\?\)"),
    ({"trainer": {"max_epochs": 1, "logger": True}}, r"trainer.logger is set by modelbuild"),
    ({"trainer": {"max_epochs": 1, "max_time": "00:01:00:00"}}, r"depend on the machine's speed"),
    ({"trainer": {"precision": "bf16-mixed"}}, r"set trainer.max_epochs or trainer.max_steps"),
    ({"trainer": {"max_epochs": 1, "strategy": "ddp_spawn"}}, r"use `strategy: ddp`"),
    ({"trainer": {"max_epochs": 1, "val_check_interval": 1.5}}, r"val_check_interval must be a fraction of an "
                                                                 r"epoch above 0 and at most 1.0"),
    ({"optimizer": {"name": "adamw", "lr": 0.1, "momentum": 0.9}}, r"unknown key 'momentum' in optimizer"),
    ({"optimizer": {"name": "adam_w"}}, r"unknown optimizer 'adam_w' \(did you mean 'adamw'\?\)"),
    ({"scheduler": {"name": "cosin"}}, r"did you mean 'cosine'"),
    ({"early_stopping": {"mode": "up"}}, r"mode must be min or max"),
    ({"data": {"target": "label", "feature": ["x1"]}}, r"unknown key 'feature' in data \(did you mean 'features'"),
    ({"data": {}}, r"say which column to predict"),
    ({"model": {"hidden": [64, 0]}}, r"hidden must be a list of layer sizes"),
    ({"task": "tabular-clasification"}, r"unknown task 'tabular-clasification' \(did you mean "
                                        r"'tabular-classification'\?\)"),
])
def test_bad_params_are_refused_before_anything_runs(change, message):
    with pytest.raises(RecipeError, match=message):
        params(**change)


def test_nested_defaults_are_filled_so_equal_settings_share_a_key():
    short = params(optimizer={"lr": 0.01}, early_stopping={"patience": 2})
    full = params(optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.0}, scheduler={"name": "none"},
                  early_stopping={"monitor": "val_loss", "patience": 2, "mode": "min", "min_delta": 0.0})
    assert short == full
