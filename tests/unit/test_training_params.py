"""The training builders' params are declared once (modelbuild/training/params.py and each builder's `params`),
and docs/training.md's tables are generated from those declarations: a param added, removed or re-defaulted in
code without the docs following fails here. To regenerate the tables after a deliberate change:

    MODELBUILD_UPDATE_DOCS=1 python -m pytest tests/unit/test_training_params.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modelbuild.builders.finetune import Finetune
from modelbuild.builders.train import Train
from modelbuild.training.params import LOOP_PARAMS, params_table

DOCS = Path(__file__).resolve().parents[2] / "docs" / "training.md"
BLOCK = re.compile(r"(<!-- params:(\w+)[^>]*-->\n)(.*?)(\n<!-- /params:\2 -->)", re.S)


@pytest.mark.parametrize("builder", [Train, Finetune], ids=lambda b: b.name)
def test_docs_table_is_the_builders_declared_params(builder):
    text = DOCS.read_text()
    blocks = {m.group(2): m for m in BLOCK.finditer(text)}
    assert builder.name in blocks, f"docs/training.md has no generated table for {builder.name}"
    generated = params_table(builder.params)
    if os.environ.get("MODELBUILD_UPDATE_DOCS") == "1":
        m = blocks[builder.name]
        DOCS.write_text(text[:m.start(3)] + generated + text[m.end(3):])
        return
    assert blocks[builder.name].group(3) == generated, (
        f"docs/training.md's {builder.name} table differs from {builder.__name__}.params: regenerate it with "
        "MODELBUILD_UPDATE_DOCS=1 python -m pytest tests/unit/test_training_params.py")
    for name in builder.params:
        assert f"| `{name}` |" in generated


def test_every_param_says_what_it_does():
    for builder in (Train, Finetune):
        assert all(spec.help for spec in builder.params.values()), builder.name


def test_defaults_are_filled_once_in_normalise_and_equal_settings_share_a_key():
    short = Train().normalise({"task": "tabular-classification", "data": {"target": "y"},
                               "optimizer": {"lr": 0.001}}, file="r.yaml", step="m")
    spelled_out = Train().normalise({"task": "tabular-classification", "data": {"target": "y"},
                                     "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 0.0},
                                     "scheduler": {"name": "none"}}, file="r.yaml", step="m")
    assert short == spelled_out
    assert set(LOOP_PARAMS) <= set(short)  # the loop reads every one of them without filling anything


def test_checking_a_training_recipe_imports_no_training_library():
    code = ("import sys\nfrom modelbuild.builders.train import Train\nfrom modelbuild.builders.finetune import Finetune\n"
            "Train().normalise({'task': 'tabular-classification', 'data': {'target': 'y'}}, file='r', step='s')\n"
            "print(sorted(m for m in ('torch', 'lightning', 'transformers', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
