"""Tests over the bytes of an Arrow string array, so that ingest and clean skip a text rule with nothing to do.

Stripping and normalising copy every value of a column; on a column of clean ASCII text (most columns) they
change nothing. One scan of the column's data buffer (and a gather of each value's first and last byte)
tells, at a small part of the cost of the rule itself.
"""

from __future__ import annotations

# the ASCII bytes pc.utf8_trim_whitespace strips: \t \n \v \f \r, the separators 0x1c-0x1f, and space
WHITESPACE = (9, 10, 11, 12, 13, 28, 29, 30, 31, 32)


def _chunks(column):
    import pyarrow as pa

    return column.chunks if isinstance(column, pa.ChunkedArray) else [column]


def _spans(chunk):
    """(the data buffer as uint8, each value's start, each value's end) of a string array, or None for a type
    whose layout is not offsets and data (string_view)."""
    import numpy as np
    import pyarrow as pa

    if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
        return None
    _, offsets, data = chunk.buffers()
    width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    ends = np.frombuffer(offsets, width, len(chunk) + 1, chunk.offset * np.dtype(width).itemsize)
    raw = np.frombuffer(data, np.uint8) if data is not None else np.empty(0, np.uint8)
    return raw, ends[:-1], ends[1:]


def is_ascii(column) -> bool:
    """Whether every value of a string array (or chunked array) is ASCII: one scan of its data buffer."""
    for chunk in _chunks(column):
        spans = _spans(chunk) if len(chunk) else None
        if spans is None:
            if len(chunk):
                return False
            continue
        raw, starts, stops = spans
        start, stop = int(starts[0]), int(stops[-1])
        if stop > start and int(raw[start:stop].max()) >= 128:
            return False
    return True


def trim_whitespace(column):
    """pc.utf8_trim_whitespace(column), or `column` itself where no value of it, all ASCII, starts or ends with
    whitespace (nothing to strip, nothing copied)."""
    import numpy as np
    import pyarrow.compute as pc

    space = np.zeros(256, bool)
    space[list(WHITESPACE)] = True
    for chunk in _chunks(column):
        if not len(chunk):
            continue
        spans = _spans(chunk)
        if spans is None or not is_ascii(chunk):
            return pc.utf8_trim_whitespace(column)
        raw, starts, stops = spans
        filled = stops > starts
        if space[raw[starts[filled]]].any() or space[raw[stops[filled] - 1]].any():
            return pc.utf8_trim_whitespace(column)
    return column
