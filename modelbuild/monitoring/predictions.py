"""A tabular model's scores on a frame without labels, for prediction drift and decay: the probability of
the positive (second) class of a binary classifier, the predicted class index of a multi-class one, or the
prediction of a regressor. The model is loaded as evaluation/predict.py loads it (training.tabular.load)."""

from __future__ import annotations

from pathlib import Path

from ..errors import BuildError


def scores(model: Path, frame, batch_size: int, step: str):
    import numpy as np
    import torch

    from ..training.tabular import load

    try:
        net, preprocess = load(model)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise BuildError(f"step '{step}': cannot load the model input {Path(model).name} as a tabular model ({e}); "
                         "prediction drift and decay read `train` artifacts of tabular tasks") from None
    missing = [c["name"] for c in net.config["numeric"] + net.config["categorical"] if c["name"] not in frame]
    if missing:
        raise BuildError(f"step '{step}': the model reads the columns {', '.join(missing)}, which the data lacks")
    classes = net.config["target"].get("classes") or []
    outputs = []
    with torch.no_grad():
        for start in range(0, len(frame), batch_size):
            numeric, categorical = preprocess(frame.iloc[start:start + batch_size])
            outputs.append(net(numeric, categorical).double())
    out = torch.cat(outputs) if outputs else torch.zeros((0, max(1, len(classes))), dtype=torch.float64)
    if not classes:
        return out.reshape(-1).numpy()
    proba = torch.softmax(out, dim=1).numpy()
    return proba[:, 1] if len(classes) == 2 else np.argmax(proba, axis=1).astype(float)


def predicted_labels(model: Path, frame, batch_size: int, step: str) -> tuple[list, object]:
    """(the model's classes, the predicted class of each row) of a tabular classifier."""
    import numpy as np

    from ..training.tabular import load

    net, _ = load(model)
    classes = list(net.config["target"].get("classes") or [])
    s = scores(model, frame, batch_size, step)
    index = (s >= 0.5).astype(int) if len(classes) == 2 else s.astype(int)
    return classes, np.asarray(classes, dtype=object)[index]
