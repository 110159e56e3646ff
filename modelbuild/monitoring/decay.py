"""Joining feedback labels with logged predictions, and the served model's metrics per time window."""

from __future__ import annotations


def _key(value) -> str:
    """Labels and predictions compare by their text (a label posted as 1 matches a prediction 1 or "1")."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def join(requests, feedback):
    """(labelled rows: request_id, record, time, prediction, label; the unknown request ids of feedback).
    The last label sent for a request wins (a correction replaces an earlier one)."""
    import pandas as pd

    known = set(requests["request_id"].astype(str))
    feedback = feedback.assign(request_id=feedback["request_id"].astype(str))
    unknown = sorted(set(feedback["request_id"]) - known)
    latest = feedback[feedback["request_id"].isin(known)].drop_duplicates("request_id", keep="last")
    rows = []
    labels = dict(zip(latest["request_id"], latest["label"], strict=True))
    for r in requests.assign(request_id=requests["request_id"].astype(str)).to_dict("records"):
        if r["request_id"] not in labels:
            continue
        label = labels[r["request_id"]]
        record = int(r.get("record") or 0)
        if isinstance(label, list):
            label = label[record] if record < len(label) else None
        elif record:
            continue  # one label for a request of several records: it belongs to the first
        if label is None or r.get("prediction") is None:
            continue
        rows.append({"request_id": r["request_id"], "record": record, "time": r.get("time"),
                     "prediction": _key(r["prediction"]), "label": _key(label)})
    frame = pd.DataFrame(rows, columns=["request_id", "record", "time", "prediction", "label"])
    frame["time"] = pd.to_datetime(frame["time"], utc=True, errors="coerce")
    return frame, unknown


def positive_label(frame, given) -> str | None:
    classes = sorted(set(frame["label"]) | set(frame["prediction"]))
    if given is not None:
        return _key(given)
    return classes[1] if len(classes) == 2 else None


def measure(labels, predictions, positive) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    y, p = list(labels), list(predictions)
    if not y:
        return {"labelled": 0}
    out = {"labelled": len(y), "accuracy": float(accuracy_score(y, p))}
    out["error_rate"] = 1 - out["accuracy"]
    if positive is not None:
        kw = {"pos_label": positive, "zero_division": 0}
        out.update(f1=float(f1_score(y, p, **kw)), precision=float(precision_score(y, p, **kw)),
                   recall=float(recall_score(y, p, **kw)))
    return out


def per_window(frame, seconds: float, positive, min_labels: int) -> list[dict]:
    """The metrics of each window of `seconds` (aligned to the Unix epoch), oldest first."""
    import pandas as pd

    timed = frame.dropna(subset=["time"])
    if not len(timed):
        return []
    starts = timed["time"].map(lambda t: int(t.timestamp()) // int(seconds) * int(seconds))  # any resolution
    out = []
    for start, group in timed.groupby(starts):
        values = measure(group["label"], group["prediction"], positive)
        out.append({"start": pd.Timestamp(int(start), unit="s", tz="UTC").isoformat(),
                    "end": pd.Timestamp(int(start + seconds), unit="s", tz="UTC").isoformat(),
                    "judged": len(group) >= min_labels, **values})
    return out
