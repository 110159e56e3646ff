"""`diff` names the code files that changed between two builds of a python step, and shows how (as nix-diff
shows the changed inputs of two derivations), from the per-file record each build keeps in its lineage."""

from __future__ import annotations

import json

RECIPE = """
name: demo
steps:
  made:
    builder: python
    params: {function: "steps:make"}
"""
STEPS = "from helpers import scale\n\n\ndef make(ctx):\n    (ctx.out / 'x.txt').write_text(str(scale(2)))\n"


def test_diff_names_the_changed_file_and_shows_its_changed_lines(project, cli):
    project.write("recipe.yaml", RECIPE)
    project.write("steps.py", STEPS)
    project.write("helpers.py", "def scale(x):\n    return x * 2\n")
    first = cli.build()["by_step"]["made"]["path"]
    project.write("helpers.py", "def scale(x):\n    return x * 3\n")
    project.write("extra.py", "UNUSED = 1\n")  # not imported: not part of the step's code
    second = cli.build()["by_step"]["made"]["path"]

    assert "code       extras.module: helpers.py, steps.py" in cli("show", second).stdout
    out = cli("diff", first, second).stdout
    assert "made: module code changed: helpers.py edited" in out, out
    assert "-    return x * 2" in out and "+    return x * 3" in out, out
    assert "steps.py" not in out and "extra.py" not in out, out
    code = json.loads(cli("diff", first, second, "--json").stdout)["code"]
    assert [(c["file"], c["change"]) for c in code] == [("helpers.py", "edited")]
    assert code[0]["diff"].startswith("--- a/helpers.py\n+++ b/helpers.py\n")

    project.write("steps.py", STEPS.replace("from helpers import scale", "from helpers2 import scale"))
    project.write("helpers2.py", "def scale(x):\n    return x * 4\n")
    third = cli.build()["by_step"]["made"]["path"]
    out = cli("diff", second, third).stdout
    assert "module code changed: helpers.py removed, helpers2.py added, steps.py edited" in out, out
    assert "+from helpers2 import scale" in out, out
