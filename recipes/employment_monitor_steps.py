"""Python steps of recipes/employment-monitor.yaml: each takes a BuildContext and writes a table into ctx.out."""

from modelbuild.table import read_table, write_table

EARLIER_MODEL = ["prediction", "predicted_probability"]  # an earlier model's outputs, not features


def label_new(ctx):
    """The 2016-2018 rows with their labels (joined by `id`), shaped like the cleaned reference year."""
    rows = read_table(ctx.inputs["rows"]).to_pandas()
    labels = read_table(ctx.inputs["labels"]).to_pandas()[["id", "employed"]]
    df = rows.drop(columns=EARLIER_MODEL).merge(labels, on="id", how="inner", validate="one_to_one")
    df["AGEP"] = df["AGEP"].astype("int64")
    summary = write_table(df[read_table(ctx.inputs["like"]).column_names].reset_index(drop=True), ctx.out)
    ctx.write_metrics({"rows": summary["rows"]})


def combine(ctx):
    """The reference year and the new years in one table: what the candidate model is trained on."""
    import pandas as pd

    frames = [read_table(ctx.inputs[name]).to_pandas() for name in ("reference", "new")]
    for f in frames:
        for c in f.columns:
            if str(f[c].dtype) == "category":
                f[c] = f[c].astype(str)  # the two years' category sets differ; concat keeps their union as text
    summary = write_table(pd.concat(frames, ignore_index=True), ctx.out)
    ctx.write_metrics({"rows": summary["rows"]})
