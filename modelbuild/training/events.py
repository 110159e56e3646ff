"""TensorBoard events of a training run, written twice for two readers.

- In the artifact, `logs/tensorboard/events.out.tfevents.modelbuild`: every logged value (no hparams) with wall time 0 and
  no host name, so a rebuild is byte-identical (TensorBoard's own writers stamp both).
- Outside it, in the store's `logs/tensorboard/<recipe>/<step>/<key>/` (BuildContext.live_logs): the same
  values as they are logged, with real wall times, so TensorBoard shows live curves and relative times.
  Every trial of a search is a build of its target step, so a search's trials share that log root and
  TensorBoard (its HParams tab included) compares them.

The live copy carries the step's params as TensorBoard hparams (a session start; the session end says ok or failed).
Only tensorboard itself is used: its record writer for the reproducible file, its EventFileWriter for the live
one, its hparams summaries.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

FILE = "events.out.tfevents.modelbuild"


def available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def flat_params(params: dict, prefix: str = "") -> dict:
    """Params as TensorBoard hparams: dotted names, values a number, bool or string (lists as JSON)."""
    out = {}
    for name, value in sorted(params.items()):
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{key}."))
        elif isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = json.dumps(value, sort_keys=True)
    return out


def _scalars(row: dict):
    from tensorboard.compat.proto.summary_pb2 import Summary
    return Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in sorted(row.items()) if k != "step"])


def _hparams(tag: str, **data):
    """A Summary holding HParams plugin data (what tensorboard.plugins.hparams.summary writes, without the
    tensorflow it imports)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    plugin_data = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **data)
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(plugin_data),
                                        tensor=metadata.NULL_TENSOR)])


def _session(hparams: dict, when: float):
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo(start_time_secs=when)
    for name, value in hparams.items():
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
        elif isinstance(value, (int, float)):
            start.hparams[name].number_value = value
        else:
            start.hparams[name].string_value = value
    return _hparams(metadata.SESSION_START_INFO_TAG, session_start_info=start)


def _session_end(ok: bool, when: float):
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    status = api_pb2.STATUS_SUCCESS if ok else api_pb2.STATUS_FAILURE
    end = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=when)
    return _hparams(metadata.SESSION_END_INFO_TAG, session_end_info=end)


def write_reproducible(rows: list[dict], folder: Path, hparams: dict) -> None:
    """TensorBoard's event file format (TFRecord framing of Event protos), with wall_time 0."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / FILE, "wb") as f:
        writer = RecordWriter(f)
        writer.write(Event(wall_time=0.0, step=0, file_version="brain.Event:2").SerializeToString())
        writer.write(Event(wall_time=0.0, step=0, summary=_session(hparams, 0.0)).SerializeToString())
        for row in rows:
            writer.write(Event(wall_time=0.0, step=row["step"] or 0, summary=_scalars(row)).SerializeToString())
        writer.write(Event(wall_time=0.0, step=0, summary=_session_end(True, 0.0)).SerializeToString())
        writer.flush()


class Live:
    """Events with real wall times, written as they are logged (flushed every few seconds)."""

    def __init__(self, folder: Path, hparams: dict):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        folder.mkdir(parents=True, exist_ok=True)
        self.writer = EventFileWriter(str(folder), flush_secs=5)
        self._add(0, _session(hparams, time.time()))

    def _add(self, step: int, summary) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        self.writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))

    def log(self, row: dict) -> None:
        self._add(row["step"] or 0, _scalars(row))

    def close(self, ok: bool) -> None:
        self._add(0, _session_end(ok, time.time()))
        self.writer.close()
