"""Words a user acts on: `plan` names the element of a long list that differs (never two prefixes that look the
same) and says a parameter was added or removed (never `null -> <unset>`); `gc` names a left-over work area by
what it is."""

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



def test_gc_names_a_failed_ingests_work_area_by_what_it_is(project, cli):
    project.write("data.csv", 'x,y\n1,"2\n3,4\n')  # a quote that never closes: the ingest fails
    project.write("recipe.yaml", """
        name: demo
        steps:
          raw:
            builder: ingest
            inputs: {data: {path: data.csv}}
    """)
    cli("build", "recipe.yaml", check=1)
    out = cli("gc", "--dry-run").stdout
    assert "the work area of a build of step demo:raw (ingest) that did not finish: empty" in out, out
    assert "checkpoints" not in out and "1 work area (" in out, out
