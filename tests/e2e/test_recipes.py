"""Recipes composed with Hydra: defaults lists, config groups next to the recipe, interpolation, overrides."""

from __future__ import annotations


def write_composed(project):
    project.write("recipe.yaml", """
        defaults:
          - data: small
          - _self_
        name: composed
        vars: {greeting: hello}
        steps:
          make:
            builder: command
            params: {cmd: 'echo "${vars.greeting} ${data.rows}" > $MB_OUT/out.txt'}
    """)
    project.write("data/small.yaml", "rows: 10\n")
    project.write("data/large.yaml", "rows: 1000\n")


def test_defaults_list_and_config_groups_compose(project, cli):
    write_composed(project)
    result = cli.build()
    assert open(result["by_step"]["make"]["path"] + "/out.txt").read() == "hello 10\n"


def test_an_override_picks_another_config_group_option(project, cli):
    write_composed(project)
    cli.build()
    result = cli.build("recipe.yaml", "data=large", "vars.greeting=hi")
    assert open(result["by_step"]["make"]["path"] + "/out.txt").read() == "hi 1000\n"
    assert result["by_step"]["make"]["status"] == "built"


def test_interpolation_without_hydra(project, cli):
    project.write("recipe.yaml", """
        name: interp
        vars: {n: 3}
        steps:
          a: {builder: command, params: {cmd: 'seq ${vars.n} > $MB_OUT/seq'}}
    """)
    result = cli.build()
    assert open(result["by_step"]["a"]["path"] + "/seq").read().split() == ["1", "2", "3"]


def test_numbers_read_the_same_with_and_without_hydra(project, cli):
    project.write("recipe.yaml", """
        name: nums
        steps:
          a: {builder: python, params: {function: "steps:write", lr: 1e-3}}
    """)
    project.write("steps.py", """
        def write(ctx):
            (ctx.out / "lr").write_text(repr(ctx.params["lr"]))
    """)
    plain = cli.build()
    composed = cli.build("recipe.yaml", "steps.a.params.lr=1e-3")
    assert open(plain["by_step"]["a"]["path"] + "/lr").read() == "0.001"
    assert composed["by_step"]["a"]["status"] == "cached"
