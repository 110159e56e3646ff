"""`report`: the HTML report (and optionally the model card) of the step's inputs and their lineage, as an
artifact, so a recipe ships its own audit page. The same page `modelbuild report ARTIFACT` writes."""

from __future__ import annotations

from .base import Builder, Param


class Report(Builder):
    """Inputs: the artifacts to report on (any names), e.g. `inputs: {evaluate: evaluate}`. Output:
    report.html, and README.md (a Hugging Face model card) with `model_card: true`."""

    name = "report"
    params = {
        "title": Param("str", default=None, help="the page's title (default: the step names of the inputs)"),
        "model_card": Param("bool", default=False, help="also write README.md, a model card of the model the "
                            "inputs are or evaluate"),
    }
    env = ("matplotlib",)

    def check_inputs(self, params, inputs, *, file, step) -> None:
        from ..errors import RecipeError
        if not inputs:
            raise RecipeError("a report needs the artifacts to report on: add them under `inputs:`, e.g. "
                              "`inputs: {evaluate: evaluate}`", file=file, step=step, key="inputs")

    def build(self, ctx) -> None:
        from ..errors import BuildError
        from ..report import from_artifacts, render
        from ..store import Store

        paths = [ctx.inputs[name] for name in sorted(ctx.inputs)]
        if any(p.parent.name != "objects" for p in paths):
            raise BuildError(f"step '{ctx.step}': a report's inputs must be steps of the recipe (artifacts in the "
                             "store), not source files")
        store = Store(paths[0].parent.parent)
        facts = from_artifacts(store, [(p, None) for p in paths], ctx.params["title"] or ", ".join(sorted(ctx.inputs)))
        (ctx.out / "report.html").write_text(render(store, facts))
        if ctx.params["model_card"]:
            from ..report.card import model_card
            (ctx.out / "README.md").write_text(model_card(store, facts))
        ctx.log.info("reported on %d steps", len(facts.steps))
