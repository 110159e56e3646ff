"""Tabular classification and regression: an MLP over numeric and categorical columns of a table.

Params of the `train` step::

    data:  {target: income,               # required
            features: [age, sex, ...],    # default: every column but the target and `drop`
            categorical: [sex, ...],      # default: string, bool and dictionary columns among the features
            drop: [id]}                   # columns left out of the default features
    model: {hidden: [64, 32], dropout: 0.1,
            embedding_dim: null,          # null: min(16, (values + 2) // 2) per column
            max_categories: 1000}         # the most frequent values of a column get an embedding

Preprocessing uses training statistics only: a numeric column is standardised with the train split's mean
and standard deviation (population; 1 where it is 0), and a missing value becomes the mean (0 after
standardising). A categorical column's vocabulary is its `max_categories` most frequent train values (ties
by value); index 0 is reserved for a value not in it, and for null. Numeric columns of other types
(timestamps, lists) are skipped from the default features (named in the step log).

Metrics (validation set, all rows of the epoch, summed over DDP ranks): classification `val_loss` (cross
entropy), `val_accuracy`, `val_f1` (binary: F1 of `classes[1]`, the greater class, e.g. 1 or true;
otherwise macro F1); regression `val_loss` (MSE of the standardised target), `val_mae`, `val_rmse` (in the
target's units).

Artifact layout (format 1), never pickle::

    model.safetensors   the MLP's state dict (`embeddings.<i>.weight`, `layers.<j>.weight`/`.bias`)
    model.onnx          the same network as an ONNX graph (tabular_onnx.py): inputs `numeric`, `categorical`
    config.json         what rebuilds the network and preprocesses a table, sorted keys:
      {"format": 1, "model_type": "modelbuild-tabular-mlp", "task": "tabular-classification",
       "architecture": "mlp",
       "numeric":     [{"name": "age", "mean": 38.44, "std": 13.13}, ...],
       "categorical": [{"name": "sex", "vocabulary": ["Male", "Female"], "embedding_dim": 2}, ...],
                      (input order: numeric columns, then each categorical column's embedding)
       "hidden": [64, 32], "dropout": 0.1, "outputs": 2,
       "target": {"name": "high_income", "classes": [0, 1]}        classification: output i is classes[i]
                 {"name": "price", "mean": 3.1, "std": 0.8}        regression: outputs are in target units
      }

Loading, without Lightning (docs/training.md, "Loading a model")::

    import modelbuild
    model = modelbuild.load_model("store/objects/...-model")    # a TabularModel
    model.predict(table)          # class labels, or numbers in the target's units
    model.predict_proba(table)    # classification: [rows, classes], in model.classes order
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import torch

from ..errors import BuildError, did_you_mean
from .params import TABULAR_DATA_KEYS as DATA_KEYS
from .params import TABULAR_MODEL_DEFAULTS as MODEL_DEFAULTS
from .tabular_onnx import to_onnx
from .task import Task, check_keys, train_validation_tables

FORMAT = 1
MODEL_TYPE = "modelbuild-tabular-mlp"  # config.json's model_type, as transformers' configs name their kind
MAX_CLASSES = 1000


# ---- the network (plain torch: loading a model needs no Lightning) -------------------------------------
class TabularMLP(torch.nn.Module):
    """Embeddings for categorical columns, concatenated with the numeric columns, then an MLP."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        self.embeddings = torch.nn.ModuleList(
            torch.nn.Embedding(len(c["vocabulary"]) + 1, c["embedding_dim"]) for c in config["categorical"])
        width = len(config["numeric"]) + sum(c["embedding_dim"] for c in config["categorical"])
        layers = []
        for size in config["hidden"]:
            layers += [torch.nn.Linear(width, size), torch.nn.ReLU(), torch.nn.Dropout(config["dropout"])]
            width = size
        layers.append(torch.nn.Linear(width, config["outputs"]))
        self.layers = torch.nn.Sequential(*layers)

    def raw(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Logits, or the standardised prediction for regression."""
        parts = [numeric] + [embed(categorical[:, i]) for i, embed in enumerate(self.embeddings)]
        return self.layers(torch.cat(parts, dim=1))

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        out = self.raw(numeric, categorical)
        if self.config["task"] == "tabular-regression":
            return out.squeeze(-1) * self.config["target"]["std"] + self.config["target"]["mean"]
        return out


def load(path) -> tuple[TabularMLP, callable]:
    """(the trained network in eval mode, a function from a table to its input tensors)."""
    model = TabularModel.load(path)
    return model.module, model.encode


class TabularModel:
    """A trained tabular model with its preprocessing: what `modelbuild.load_model` returns.

    `table` is a pyarrow Table, a pandas DataFrame or `{column: values}`; columns the model does not use are
    ignored, a missing number is read as the training mean and an unseen category as "other".
    """

    def __init__(self, module: TabularMLP, config: dict):
        self.module, self.config = module, config

    @classmethod
    def load(cls, path) -> TabularModel:
        from safetensors.torch import load_file

        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        if config.get("format") != FORMAT:
            raise ValueError(f"{path}: tabular model format {config.get('format')} is not {FORMAT}")
        module = TabularMLP(config)
        module.load_state_dict(load_file(path / "model.safetensors"))
        return cls(module.eval(), config)

    @property
    def task(self) -> str:
        return self.config["task"]

    @property
    def classes(self) -> list | None:
        """The class labels in output order (classification), else None."""
        return self.config["target"].get("classes")

    def encode(self, table) -> tuple[torch.Tensor, torch.Tensor]:
        """The input tensors (numeric, categorical) of the network, and of model.onnx."""
        return encode(table, self.config)

    def __call__(self, table) -> torch.Tensor:
        """Logits [rows, classes], or predictions [rows] in the target's units."""
        with torch.no_grad():
            return self.module(*self.encode(table))

    def predict_proba(self, table) -> np.ndarray:
        if self.classes is None:
            raise ValueError("predict_proba needs a classifier; this model is a regressor: use predict")
        return torch.softmax(self(table), dim=1).numpy()

    def predict(self, table) -> list | np.ndarray:
        """Class labels (a list), or predictions (a float array) for a regressor."""
        out = self(table)
        if self.classes is None:
            return out.numpy()
        return [self.classes[i] for i in out.argmax(dim=1).tolist()]


# ---- preprocessing, shared by training and loading ------------------------------------------------------
def _key(value):
    """How a categorical value is looked up: strings as themselves, other values by their JSON spelling."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    return json.dumps(value)


def _column(data, name: str) -> list | np.ndarray:
    if hasattr(data, "column_names"):  # pyarrow Table or RecordBatch
        return data.column(name).to_pylist()
    if hasattr(data, "columns") and hasattr(data, "iloc"):  # pandas DataFrame
        return data[name].tolist()
    return list(data[name])


def _float(value) -> float:
    """A number, or NaN for a missing value (None, NaN, pandas' NA)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _numeric(values, mean: float, std: float) -> np.ndarray:
    x = np.fromiter((_float(v) for v in values), np.float64, len(values))
    x[np.isnan(x)] = mean
    return (x - mean) / std


def encode(data, config: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(numeric float32 [rows, n], categorical int64 [rows, k]) for a table, as config.json says."""
    numeric = [_numeric(_column(data, c["name"]), c["mean"], c["std"]) for c in config["numeric"]]
    categorical = []
    for c in config["categorical"]:
        index = {_key(v): i + 1 for i, v in enumerate(c["vocabulary"])}
        values = _column(data, c["name"])
        categorical.append(np.fromiter((index.get(_key(v), 0) for v in values), np.int64, len(values)))
    rows = len(_column(data, (config["numeric"] or config["categorical"])[0]["name"]))
    num = np.stack(numeric, axis=1) if numeric else np.zeros((rows, 0))
    cat = np.stack(categorical, axis=1) if categorical else np.zeros((rows, 0), dtype=np.int64)
    return torch.from_numpy(num.astype(np.float32)), torch.from_numpy(cat)


# ---- the tasks ------------------------------------------------------------------------------------------
class _Tabular(Task):
    regression = False

    def setup(self) -> None:
        from ..table import read_table

        step = self.ctx.step
        model = {**MODEL_DEFAULTS, **_mapping(self.params.get("model"))}
        check_keys(step, "model", _mapping(self.params.get("model")), MODEL_DEFAULTS)
        data = _mapping(self.params.get("data"))
        check_keys(step, "data", data, DATA_KEYS)
        train_path, val_path = train_validation_tables(self.ctx)
        train = read_table(train_path)
        numeric, categorical = self._features(train, data)
        target = self._target(train, data["target"])
        train = _drop_null_target(train, data["target"], self.ctx, "train")
        self.config = {
            "format": FORMAT, "model_type": MODEL_TYPE, "task": self.name, "architecture": "mlp",
            "numeric": [_standardise(train, name) for name in numeric],
            "categorical": [_vocabulary(train, name, model) for name in categorical],
            "hidden": [int(h) for h in model["hidden"]], "dropout": float(model["dropout"]),
            "outputs": 1 if self.regression else len(target["classes"]), "target": target,
        }
        self.train_data = self._dataset(train)
        self.val_data = None
        if val_path is not None:
            validation = _drop_null_target(read_table(val_path), data["target"], self.ctx, "validation")
            self.val_data = self._dataset(validation)
        self.net = TabularMLP(self.config)
        self.module = _lightning_module()(self.net, self.config)
        self.ctx.log.info("tabular %s: %d train rows, %d validation rows; numeric %s; categorical %s",
                          self.name, len(self.train_data), len(self.val_data or ()), numeric or "none",
                          categorical or "none")

    def _features(self, train, data: dict) -> tuple[list[str], list[str]]:
        """(numeric, categorical) feature names, checked against the table."""
        import pyarrow as pa

        step, columns = self.ctx.step, train.schema.names
        target = data.get("target")
        if not target:
            raise BuildError(f"step '{step}': say which column to predict with `data: {{target: <column>}}`; "
                             f"the columns are: {', '.join(columns)}")
        for key in ("features", "categorical", "drop"):
            for name in data.get(key) or ():
                _require(step, f"data.{key}", name, columns)
        _require(step, "data.target", target, columns)
        explicit = data.get("features") is not None
        features = list(data["features"]) if explicit else [
            c for c in columns if c != target and c not in (data.get("drop") or ())]
        if target in features:
            raise BuildError(f"step '{step}': the target {target!r} is also listed in data.features; remove it")
        types = {f.name: f.type for f in train.schema}
        default_categorical = [c for c in features if _is_categorical(types[c])]
        categorical = list(data["categorical"]) if data.get("categorical") is not None else default_categorical
        for name in categorical:
            if name not in features:
                raise BuildError(f"step '{step}': data.categorical names {name!r}, which is not a feature; "
                                 f"add it to data.features or remove it")
        numeric, skipped = [], []
        for name in features:
            if name in categorical:
                continue
            if pa.types.is_integer(types[name]) or pa.types.is_floating(types[name]) or pa.types.is_decimal(types[name]):
                numeric.append(name)
            elif explicit:
                raise BuildError(f"step '{step}': feature {name!r} has type {types[name]}, which is not a number; "
                                 f"list it under data.categorical or leave it out of data.features")
            else:
                skipped.append(f"{name} ({types[name]})")
        if skipped:
            self.ctx.log.info("not used as features (neither numbers nor categories): %s", ", ".join(skipped))
        if not numeric and not categorical:
            raise BuildError(f"step '{step}': no feature columns to learn from; set data.features")
        return numeric, categorical

    def _dataset(self, table):
        from torch.utils.data import TensorDataset

        numeric, categorical = encode(table, self.config)
        return TensorDataset(numeric, categorical, self._labels(table))

    def train_dataloader(self):
        from torch.utils.data import DataLoader

        return DataLoader(self.train_data, batch_size=self.params.get("batch_size", 64), shuffle=True)

    def val_dataloader(self):
        from torch.utils.data import DataLoader

        if self.val_data is None:
            return None
        return DataLoader(self.val_data, batch_size=max(1024, self.params.get("batch_size", 64)))

    def export(self, out: Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(out / "model.safetensors"))
        (out / "model.onnx").write_bytes(to_onnx(self.config, state))
        (out / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")


class TabularClassification(_Tabular):
    name = "tabular-classification"

    def _target(self, train, target: str) -> dict:
        values = [v for v in train.column(target).unique().to_pylist() if v is not None]
        try:
            classes = sorted(values)
        except TypeError:
            classes = sorted(values, key=_key)
        if len(classes) < 2:
            raise BuildError(f"step '{self.ctx.step}': the target {target!r} has {len(classes)} class"
                             f"{'' if len(classes) == 1 else 'es'} in the training data "
                             f"({', '.join(map(repr, classes)) or 'no values'}); a classifier needs at least two. "
                             f"Check the split and the cleaning steps")
        if len(classes) > MAX_CLASSES:
            raise BuildError(f"step '{self.ctx.step}': the target {target!r} has {len(classes)} distinct values; "
                             f"to predict a number use `task: tabular-regression`")
        self._classes = {_key(c): i for i, c in enumerate(classes)}
        return {"name": target, "classes": classes}

    def _labels(self, table) -> torch.Tensor:
        name = self.config["target"]["name"]
        labels = [self._classes.get(_key(v), -1) for v in table.column(name).to_pylist()]
        unseen = sum(1 for y in labels if y < 0)
        if unseen:  # a class the training data never showed: it cannot be predicted, so it is not scored
            self.ctx.log.warning("%d rows have a %s class not in the training data; they are left out", unseen, name)
        return torch.tensor(labels, dtype=torch.int64)


class TabularRegression(_Tabular):
    name = "tabular-regression"
    regression = True

    def _target(self, train, target: str) -> dict:
        import pyarrow as pa

        kind = train.schema.field(target).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
            raise BuildError(f"step '{self.ctx.step}': the target {target!r} has type {kind}, not a number; "
                             f"to predict a class use `task: tabular-classification`")
        stats = _standardise(train, target)
        return {"name": target, "mean": stats["mean"], "std": stats["std"]}

    def _labels(self, table) -> torch.Tensor:
        target = self.config["target"]
        values = _numeric(_column(table, target["name"]), target["mean"], target["std"])
        return torch.from_numpy(values.astype(np.float32))


def _mapping(value) -> dict:
    return dict(value or {})


def _require(step: str, param: str, name: str, columns: list[str]) -> None:
    if name not in columns:
        raise BuildError(f"step '{step}': params.{param} names column {name!r}{did_you_mean(name, columns)}, "
                         f"which the input table does not have; its columns are: {', '.join(columns)}")


def _is_categorical(kind) -> bool:
    import pyarrow as pa

    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_boolean(kind)
            or pa.types.is_dictionary(kind))


def _drop_null_target(table, target: str, ctx, split: str):
    import pyarrow.compute as pc

    nulls = table.column(target).null_count
    if not nulls:
        return table
    ctx.log.warning("%d %s rows have no %s; they are left out", nulls, split, target)
    return table.filter(pc.is_valid(table.column(target)))


def _standardise(table, name: str) -> dict:
    values = np.array([v for v in table.column(name).to_pylist() if v is not None], dtype=np.float64)
    values = values[~np.isnan(values)]
    mean = float(values.mean()) if len(values) else 0.0
    std = float(values.std()) if len(values) else 1.0
    return {"name": name, "mean": mean, "std": std if std > 0 and math.isfinite(std) else 1.0}


def _vocabulary(table, name: str, model: dict) -> dict:
    """The most frequent values (ties broken by value), at most max_categories of them."""
    column = table.column(name)
    if hasattr(column.type, "value_type"):
        column = column.cast(column.type.value_type)
    counts = [(c["values"], c["counts"]) for c in column.value_counts().to_pylist() if c["values"] is not None]
    counts.sort(key=lambda vc: (-vc[1], _key(vc[0])))
    vocabulary = [v for v, _ in counts[: int(model["max_categories"])]]
    dim = model["embedding_dim"] or min(16, (len(vocabulary) + 2) // 2)
    return {"name": name, "vocabulary": vocabulary, "embedding_dim": int(dim)}


# ---- the LightningModule: created on first use, so `load` never imports Lightning ----------------------
@cache
def _lightning_module():
    import lightning.pytorch as pl

    class TabularModule(pl.LightningModule):
        """Loss per batch, and validation metrics from counts summed over the whole epoch (and ranks)."""

        def __init__(self, net: TabularMLP, config: dict):
            super().__init__()
            self.net, self.regression = net, config["task"] == "tabular-regression"
            self.classes = 1 if self.regression else config["outputs"]
            self._totals = None

        def _loss(self, numeric, categorical, y, reduction="mean"):
            out = self.net.raw(numeric, categorical)
            if self.regression:
                return torch.nn.functional.mse_loss(out.squeeze(-1), y, reduction=reduction), out.squeeze(-1)
            return torch.nn.functional.cross_entropy(out, y, reduction=reduction), out

        def training_step(self, batch, batch_idx):
            loss, _ = self._loss(*batch)
            self.log("train_loss", loss, on_step=True, on_epoch=True, batch_size=len(batch[2]),
                     sync_dist=self.trainer.world_size > 1)
            return loss

        def on_validation_epoch_start(self):
            size = 4 if self.regression else 2 + self.classes * self.classes
            self._totals = torch.zeros(size, dtype=torch.float64, device=self.device)

        def validation_step(self, batch, batch_idx):
            numeric, categorical, y = batch
            if not self.regression:
                keep = y >= 0
                numeric, categorical, y = numeric[keep], categorical[keep], y[keep]
            loss, out = self._loss(numeric, categorical, y, reduction="sum")
            t = self._totals
            t[0] += loss.double()
            t[1] += len(y)
            if self.regression:
                std = self.net.config["target"]["std"]
                error = (out - y).double() * std
                t[2] += error.abs().sum()
                t[3] += (error * error).sum()
            else:
                cells = y * self.classes + out.argmax(dim=1)
                t[2:] += torch.bincount(cells, minlength=self.classes ** 2).double()

        def on_validation_epoch_end(self):
            t = self.trainer.strategy.reduce(self._totals, reduce_op="sum")
            n = max(float(t[1]), 1.0)
            values = {"val_loss": float(t[0]) / n}
            if self.regression:
                values.update(val_mae=float(t[2]) / n, val_rmse=math.sqrt(float(t[3]) / n))
            else:
                confusion = t[2:].view(self.classes, self.classes)  # [true, predicted]
                values.update(val_accuracy=float(confusion.diag().sum()) / n, val_f1=_f1(confusion))
            # every rank holds the same sums, so syncing (a mean of equal numbers) changes nothing
            self.log_dict(values, sync_dist=True)

    return TabularModule


def _f1(confusion: torch.Tensor) -> float:
    """F1 of the positive (second) class for two classes, else the mean F1 over classes."""
    tp = confusion.diag()
    fp = confusion.sum(dim=0) - tp
    fn = confusion.sum(dim=1) - tp
    denominator = 2 * tp + fp + fn
    f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.zeros_like(tp))
    return float(f1[1]) if len(f1) == 2 else float(f1.mean())
