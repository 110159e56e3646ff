"""How `plan` and `diff` word a change: the element of a long list that differs, never two prefixes that look
the same; a parameter that is added or removed says so, never `null -> <unset>`."""

from __future__ import annotations

RECIPE = """
name: demo
steps:
  raw:
    builder: ingest
    inputs: {data: {path: data.csv}}
    params: {na_values: ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "a10", "a11"]}
  hello:
    builder: command
    params: {cmd: 'echo hi > "$MB_OUT/x"', output_hash: null}
"""


def test_plan_names_the_list_element_and_the_removed_param(project, cli):
    project.write("data.csv", "x,y\n1,2\n")
    project.write("recipe.yaml", RECIPE)
    cli.build()
    project.write("recipe.yaml", RECIPE.replace('"a11"', '"zz"').replace(", output_hash: null", ""))
    out = cli("plan", "recipe.yaml").stdout
    assert "params.na_values[11] 'a11' -> 'zz'" in out, out
    assert "params.output_hash removed (was null)" in out, out
    assert "<unset>" not in out and "..." not in out, out

