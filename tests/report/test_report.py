"""`modelbuild report`: one static, reproducible HTML page of a recipe or an artifact, its changes against
another build, the Hugging Face model card, the report builder, and bad input as one error paragraph."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import STEPS

HEAVY = ("torch", "lightning", "pytorch_lightning", "transformers", "litserve", "dvc", "pandas")


def page(cli, *args) -> str:
    out = cli.project / "out.html"
    cli("report", *args, "-o", out)
    return out.read_text()


def test_recipe_page_has_every_step_the_graph_the_gates_and_no_outside_reference(built):
    cli, _ = built
    html = page(cli, "recipe.yaml")
    for step in STEPS:
        assert f'<section class="step" id="step-{step}"' in html and f'<a href="#step-{step}">' in html, step
    assert "<caption>Gate table</caption>" in html and ">accuracy</td>" in html and "passed" in html
    assert html.count("<svg") >= 5  # the graph, loss and metric curves, trials, bias bars, calibration
    assert "quarantined rows" in html and "2 trials" in html and "Confusion matrix" in html
    assert "searched" in html  # the tune target, trained only as the search's trials
    assert all(re.search(rf'id="step-{s}-h">{s} <span class="badge built"', html) for s in STEPS if s != "model")
    assert "<caption>Per-column drift</caption>" in html and ">x1</td><td>numeric</td>" in html
    assert "<h3>Profile</h3>" in html and "red (" in html  # the profile's most common values
    assert "<script" not in html and not re.search(r'(src|href)="(?!#)', html)  # nothing to fetch
    assert page(cli, "recipe.yaml") == html  # byte-identical from the same store


def test_artifact_page_covers_its_lineage_only(built):
    cli, _ = built
    html = page(cli, "rep:splits")
    assert all(f'id="step-{s}"' in html for s in ("raw", "checked", "splits"))
    assert 'id="step-evaluate"' not in html and 'id="step-model"' not in html
    assert "train: " in html and "validation: " in html  # the split's tables


def test_model_card_metadata_reads_back_with_huggingface_hub(built):
    from huggingface_hub import ModelCard
    cli, result = built
    card_file = cli.project / "README.md"
    cli("report", "rep:evaluate", "--model-card", "-o", card_file)
    card = ModelCard.load(card_file)
    metrics = json.loads((cli.store.parent / result["by_step"]["evaluate"]["path"] / "metrics.json").read_text())
    found = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert found["accuracy"] == metrics["accuracy"] and found["roc_auc"] == metrics["roc_auc"]
    assert card.data.eval_results[0].task_type == "tabular-classification"
    assert card.data.datasets == ["data.csv"] and card.data.library_name == "pytorch"
    for heading in ("## Intended use", "## Training data", "## Training procedure", "## Evaluation",
                    "## Bias by group", "## Limitations"):
        assert heading in card.text, heading
    assert "| optimizer.lr |" in card.text and "By `sex`" in card.text


def test_report_builder_writes_the_page_and_card_as_an_artifact(built):
    from huggingface_hub import ModelCard
    cli, result = built
    out = cli.store.parent / result["by_step"]["audit"]["path"]
    html = (out / "report.html").read_text()
    assert all(f'id="step-{s}"' in html for s in ("raw", "checked", "splits", "evaluate"))
    assert ModelCard.load(out / "README.md").data.eval_results


def test_report_imports_no_ml_framework(built):
    cli, _ = built
    probe = ("import contextlib, io, json, sys\nfrom modelbuild.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             f"    code = main(['--store', {str(cli.store)!r}, 'report', 'recipe.yaml'])\n"
             f"print(json.dumps([code, sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})]))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=cli.project, capture_output=True, text=True, timeout=120)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [0, []], proc.stderr


@pytest.mark.parametrize("args, words", [
    (["rep:nosuch"], "no artifact named 'rep:nosuch'"),
    (["rep:splits", "--model-card"], "has no model in its lineage"),
    (["rep:splits", "-o", "missing/dir/out.html"], "cannot write missing/dir/out.html"),
    (["rep:splits", "--against", "nosuch"], "no artifact named 'nosuch'"),
])
def test_bad_input_is_one_error_paragraph(built, args, words):
    cli, _ = built
    proc = cli("report", *args, check=2)
    assert proc.stderr.startswith("error:") and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (cli.project / "missing").exists()


def test_against_renders_the_diff_as_a_change_list(built):
    """Last in this file: it moves the rep:splits root to a rebuild with another seed."""
    cli, result = built
    before = result["by_step"]["splits"]["path"]
    cli.build("recipe.yaml", "steps.splits.params.seed=1", "-t", "splits")
    html = page(cli, "rep:splits", "--against", before)
    changes = html.split('id="changes"')[1].split("</section>")[0]
    assert "Changes since" in changes and "splits: params.seed: 0 -&gt; 1" in changes
    assert re.search(r"splits/train: rows: \d+ added, \d+ removed", changes), changes
    assert Path(cli.store.parent / before).is_dir()
    recipe_page = page(cli, "recipe.yaml")  # evaluate was built from the splits before: it is outdated now
    assert re.search(r'id="step-evaluate-h">evaluate <span class="badge outdated"', recipe_page)
    assert re.search(r'id="step-splits-h">splits <span class="badge built"', recipe_page)
