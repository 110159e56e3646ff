"""profile: reference statistics of one table, the baseline that drift detection compares served data with.

Output: `profile.json` (below) and `metrics.json` ({"rows": N, "columns": K}, copied into the lineage).

profile.json, format 1. Keys are sorted, floats rounded to 12 significant digits, non-finite floats are
null; the file is byte-identical for the same table and params::

    {
      "format": 1,
      "rows": 32561,                     rows in the table
      "column_order": ["age", ...],      the table's column order
      "params": {"bins": 20, "max_categories": 50, "text_columns": [], "top_tokens": 20},
      "quantiles": [0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1],
      "columns": {
        "<name>": {
          "type": "int64",               the Arrow type
          "kind": "numeric" | "categorical" | "boolean" | "text" | "datetime" | "other",
          "count": 32561,                values present
          "missing": 0,                  nulls (and NaN in float columns)
          "missing_rate": 0.0,           missing / rows (null for an empty table)

          numeric (integers and floats; statistics over the finite values):
          "infinite": 0,                 +-inf values, counted in `count` but in no statistic below
          "min": 17, "max": 90, "mean": 38.58, "std": 13.64,     std: sample (ddof=1)
          "quantiles": {"0": 17.0, "0.01": 17.0, ..., "1": 90.0},  linear interpolation (numpy's default)
          "histogram": {"edges": [17.0, 20.65, ..., 90.0], "counts": [1650, ...]},
                                         `bins` equal-width bins from min to max (min +- 0.5 when all values
                                         are equal); each bin holds [left, right), the last [left, right]

          categorical (strings with at most `max_categories` distinct values, and dictionary columns)
          and boolean (true/false as the values):
          "distinct": 9,
          "frequencies": [{"value": "Private", "count": 22696, "rate": 0.697}, ...],
                                         the `max_categories` most frequent values, by count then value;
                                         rate: the value's count / the column's count
          "other": 0,                    values present but not listed

          text (strings with more than `max_categories` distinct values, or named in `text_columns`):
          "chars":  {"mean", "std", "min", "max", "quantiles"},   length in characters
          "tokens": {"mean", "std", "min", "max", "quantiles"},   whitespace-separated tokens (str.split())
          "vocabulary": {"size": 10432, "tokens": 250311, "top": [{"token": "the", "count": 8120}, ...]},
                                         case-sensitive whitespace tokens; top: the `top_tokens` most frequent

          datetime (dates, times, timestamps, durations): "min", "max" as ISO strings
        }
      }
    }

Only the numeric columns are read whole, one column at a time, for exact quantiles; everything else
streams over the table in batches.
"""

from __future__ import annotations

from collections import Counter

from ..table import input_table, iter_batches, read_schema, read_table, stable_json
from .base import Builder, Param

FORMAT = 1
QUANTILES = (0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1)
PROFILE = "profile.json"


class Profile(Builder):
    """Profile a table: the reference for drift detection.

    Example::

        reference:
          builder: profile
          inputs: {data: train}
          params: {bins: 20, text_columns: [review]}
    """

    name = "profile"
    env = ("pyarrow", "numpy")
    params = {
        "bins": Param("int", default=20, help="histogram bins of numeric columns"),
        "table": Param("str", help="the table to read when the input holds several, e.g. `train` of a split"),
        "max_categories": Param("int", default=50,
                                help="a string column with at most this many distinct values is categorical"),
        "text_columns": Param("list", default=[], help="string columns to profile as text whatever their values"),
        "top_tokens": Param("int", default=20, help="most frequent tokens listed per text column"),
    }

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        from ..errors import RecipeError

        for key, low in (("bins", 1), ("max_categories", 0), ("top_tokens", 0)):
            if params[key] < low:
                raise RecipeError(f"{key} must be {low} or more, got {params[key]}", file=file, step=step,
                                  key=f"params.{key}")
        if not all(isinstance(c, str) for c in params["text_columns"] or []):
            raise RecipeError(f"text_columns must be a list of column names, got {params['text_columns']!r}",
                              file=file, step=step, key="params.text_columns")

    def build(self, ctx) -> None:
        import pyarrow.parquet as pq

        from ..table import data_file, require_columns

        p = ctx.params
        source = input_table(ctx, p["table"])
        schema = read_schema(source)
        require_columns({f"text_columns[{i}]": c for i, c in enumerate(p["text_columns"] or [])}, schema, ctx.step)
        profilers = {f.name: _profiler(f.type, f.name in (p["text_columns"] or []), p) for f in schema}
        streamed = [name for name, prof in profilers.items() if not isinstance(prof, _Numeric)]
        rows, done = pq.ParquetFile(data_file(source)).metadata.num_rows, 0
        for batch in iter_batches(source, columns=streamed) if streamed else ():
            for name in streamed:
                profilers[name].add(batch.column(name))
            done += batch.num_rows
            ctx.progress(done, rows, f"{done} of {rows} rows")
        columns = {}
        for f in schema:
            prof = profilers[f.name]
            if isinstance(prof, _Numeric):
                prof.add(read_table(source, columns=[f.name]).column(0))
            stats = prof.result(p)  # may settle the kind: a string column with many values is text
            columns[f.name] = {"type": str(f.type), "kind": prof.kind, "count": rows - prof.missing,
                               "missing": prof.missing, "missing_rate": prof.missing / rows if rows else None, **stats}
        profile = {"format": FORMAT, "rows": rows, "column_order": schema.names, "quantiles": list(QUANTILES),
                   "params": {k: p[k] for k in ("bins", "max_categories", "text_columns", "top_tokens")},
                   "columns": columns}
        (ctx.out / PROFILE).write_text(stable_json(profile))
        ctx.write_metrics({"rows": rows, "columns": len(schema)})
        ctx.log.info("profiled %d rows x %d columns", rows, len(schema))


def _profiler(type_, text: bool, p: dict):
    import pyarrow as pa

    if pa.types.is_dictionary(type_):
        return _Text(p) if text else _Categorical("categorical", p, always=True)
    if pa.types.is_boolean(type_):
        return _Categorical("boolean", p, always=True)
    if pa.types.is_integer(type_) or pa.types.is_floating(type_):
        return _Numeric()
    if pa.types.is_string(type_) or pa.types.is_large_string(type_) or str(type_) == "string_view":
        return _Text(p) if text else _Categorical("categorical", p)
    from ..table import _is_plain_time

    return _Other("datetime" if _is_plain_time(type_) else "other")


def _values(column):
    from ..table import _plain

    return _plain(column)


def _summary(values) -> dict:
    """mean, std, min, max and quantiles of a numpy array of numbers (nulls for none)."""
    if not len(values):
        return {"mean": None, "std": None, "min": None, "max": None, "quantiles": _quantiles(values)}
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else None,
            "min": _scalar(values.min()), "max": _scalar(values.max()), "quantiles": _quantiles(values)}


def _quantiles(values) -> dict:
    import numpy as np

    if not len(values):
        return {_qkey(q): None for q in QUANTILES}
    return {_qkey(q): float(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True)}


def _qkey(q) -> str:
    return f"{q:g}"


def _scalar(x):
    return x.item() if hasattr(x, "item") else x


class _Other:
    """Count and missing; min and max too for dates and times."""

    def __init__(self, kind: str):
        self.kind, self.missing, self.low, self.high = kind, 0, None, None

    def add(self, column) -> None:
        import pyarrow.compute as pc

        arr = _values(column)
        self.missing += arr.null_count
        if self.kind == "datetime" and len(arr) > arr.null_count:
            both = pc.min_max(arr)
            low, high = both["min"].as_py(), both["max"].as_py()
            self.low = low if self.low is None else min(self.low, low)
            self.high = high if self.high is None else max(self.high, high)

    def result(self, p: dict) -> dict:
        from ..table import _iso

        return {"min": _iso(self.low), "max": _iso(self.high)} if self.kind == "datetime" else {}


class _Numeric:
    """Read whole (one column) for exact quantiles: moments, quantiles and histogram of the finite values."""

    kind = "numeric"

    def __init__(self):
        self.missing, self.values, self.infinite = 0, None, 0

    def add(self, column) -> None:
        import numpy as np
        import pyarrow as pa

        arr = _values(column)
        self.missing = arr.null_count
        integer = pa.types.is_integer(arr.type)
        values = arr.drop_null().to_numpy(zero_copy_only=False)
        if not integer:
            values = values.astype(np.float64)
            nan = np.isnan(values)
            self.missing += int(nan.sum())
            values = values[~nan]
            finite = np.isfinite(values)
            self.infinite = int((~finite).sum())
            values = values[finite]
        self.values = values

    def result(self, p: dict) -> dict:
        import numpy as np

        values, self.values = self.values, None  # columns are read one at a time; let this one go
        out = {"infinite": self.infinite, **_summary(values)}
        if len(values):
            low, high = float(values.min()), float(values.max())
            if low == high:
                low, high = low - 0.5, high + 0.5
            edges = np.linspace(low, high, p["bins"] + 1)
            counts, _ = np.histogram(values.astype(np.float64), bins=edges)
            out["histogram"] = {"edges": edges.tolist(), "counts": counts.tolist()}
        else:
            out["histogram"] = {"edges": [], "counts": []}
        return out


class _Categorical:
    """Value frequencies, streamed; a string column with too many distinct values turns into text."""

    def __init__(self, kind: str, p: dict, always: bool = False):
        self.kind, self.always, self.limit = kind, always, p["max_categories"]
        self.missing, self.counts = 0, Counter()
        self.text = _Text(p)  # fed alongside until the column is known to be categorical

    def add(self, column) -> None:
        import pyarrow.compute as pc

        arr = _values(column)
        self.missing += arr.null_count
        if self.kind == "categorical" and not self.always:
            self.text.add(arr)
            if len(self.counts) > self.limit:
                return
        for item in pc.value_counts(arr).to_pylist():
            if item["values"] is not None:
                self.counts[item["values"]] += item["counts"]

    def result(self, p: dict) -> dict:
        if not self.always and len(self.counts) > self.limit:
            self.kind = "text"
            return self.text.result(p)
        present = sum(self.counts.values())
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        top = ranked[:self.limit]
        return {"distinct": len(self.counts),
                "frequencies": [{"value": v, "count": c, "rate": c / present} for v, c in top],
                "other": present - sum(c for _, c in top)}


class _Text:
    """Lengths in characters and tokens (kept per row for exact quantiles) and token counts, streamed."""

    kind = "text"

    def __init__(self, p: dict):
        self.missing, self.chars, self.tokens, self.vocabulary = 0, [], [], Counter()

    def add(self, column) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        arr = _values(column)
        self.missing += arr.null_count
        arr = arr.drop_null()
        if not pa.types.is_string(arr.type):
            arr = arr.cast(pa.string())
        self.chars.append(pc.utf8_length(arr).to_numpy(zero_copy_only=False))
        split = pc.utf8_split_whitespace(arr)
        words = pc.list_flatten(split)
        keep = pc.not_equal(pc.utf8_length(words), 0)  # pyarrow keeps '' before leading and after trailing space
        parents = pc.list_parent_indices(split).to_numpy(zero_copy_only=False)
        keep_np = keep.to_numpy(zero_copy_only=False)
        self.tokens.append(np.bincount(parents[keep_np], minlength=len(arr)))
        for item in pc.value_counts(words.filter(keep)).to_pylist():
            self.vocabulary[item["values"]] += item["counts"]

    def result(self, p: dict) -> dict:
        import numpy as np

        chars = np.concatenate(self.chars) if self.chars else np.empty(0, np.int64)
        tokens = np.concatenate(self.tokens) if self.tokens else np.empty(0, np.int64)
        ranked = sorted(self.vocabulary.items(), key=lambda kv: (-kv[1], kv[0]))[:p["top_tokens"]]
        return {"chars": _summary(chars), "tokens": _summary(tokens),
                "vocabulary": {"size": len(self.vocabulary), "tokens": int(tokens.sum()),
                               "top": [{"token": t, "count": c} for t, c in ranked]}}

