"""A builder whose extra is not installed fails with the pip install that fixes it (exit 2), not a traceback."""

from __future__ import annotations

import os
import textwrap

BLOCKER = textwrap.dedent("""
    import sys

    class _NotInstalled:
        '''torch and Lightning look uninstalled to this interpreter (and to the workers it starts).'''

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "lightning"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled())
""")

RECIPE = """
name: demo
steps:
  model:
    builder: train
    inputs: {data: {path: data.csv}}
    params: {task: tabular-classification, data: {target: label}}
"""


def test_a_train_step_without_torch_names_the_extra_to_install(project, cli, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(blocker), os.environ.get("PYTHONPATH")) if p)}
    project.write("data.csv", "x,label\n1,yes\n2,no\n")
    project.write("recipe.yaml", RECIPE)

    result = cli.build(check=2, env=env)
    error = result["by_step"]["model"]["error"]
    assert "is not installed" in error and "pip install 'modelbuild[train]'" in error
    plain = cli("build", "recipe.yaml", check=2, env=env)
    assert "pip install 'modelbuild[train]'" in plain.stderr and "Traceback" not in plain.stderr
    assert not list((cli.store / "objects").glob("*-model"))  # nothing committed for the step
