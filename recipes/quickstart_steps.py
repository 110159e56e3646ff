"""Python steps of recipes/quickstart.yaml: each takes a BuildContext and writes into ctx.out."""

from modelbuild.table import read_table, write_table


def clean(ctx):
    """Drop rows missing a required column or younger than min_age; add `high_income` (the label)."""
    df = read_table(ctx.inputs["table"]).to_pandas()
    before = len(df)
    df = df.dropna(subset=ctx.params["required"])
    df = df[df["age"] >= ctx.params["min_age"]]
    df["high_income"] = df["income"].str.rstrip(".").eq(">50K")
    summary = write_table(df.reset_index(drop=True), ctx.out)
    ctx.log.info("kept %d of %d rows", summary["rows"], before)
    ctx.write_metrics({"rows_in": before, "rows_out": summary["rows"]})
