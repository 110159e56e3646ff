"""recipes/tweets.yaml as written: MiniLM (pinned inside a PyPI wheel) fine-tuned for three-way sentiment on a
stratified sample of the cleaned tweets, then evaluated on the test split. Slow: minutes on two CPU cores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, Cli

pytest.importorskip("transformers")


@pytest.mark.slow(minutes=16)
@pytest.mark.timeout(1800)  # ~5 min alone on two cores; longer beside another test worker
def test_tweets_finetune_learns_sentiment_and_loads_offline(tmp_path, monkeypatch):
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    cli = Cli(tmp_path, tmp_path / "store")
    def build() -> dict:
        result = json.loads(cli("build", "recipes/tweets.yaml", "--target", "evaluate", "--json",
                                timeout=1800).stdout)
        return {**result, "by_step": {s["step"]: s for s in result["steps"]}}

    first = build()
    assert cli.statuses(first)["finetune"] == cli.statuses(first)["evaluate"] == "built"
    again = build()
    assert set(cli.statuses(again).values()) == {"cached"}

    artifact = Path(first["by_step"]["finetune"]["path"])
    metrics = json.loads((artifact / "metrics.json").read_text())
    # the sample's validation part: 594 tweets, 43% negative; a model that learned nothing scores <= 0.43
    assert metrics["val_accuracy"] > 0.55, metrics
    assert metrics["samples"] >= 2000
    evaluation = json.loads((Path(first["by_step"]["evaluate"]["path"]) / "metrics.json").read_text())
    assert evaluation["rows"] == 3711 and evaluation["accuracy"] >= 0.60  # the test split, never trained on

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(artifact)
    model = AutoModelForSequenceClassification.from_pretrained(artifact).eval()
    assert sorted(model.config.id2label.values()) == ["negative", "neutral", "positive"]
    texts = ["I love this, what a wonderful day", "This is awful, I hate it so much"]
    with torch.no_grad():
        probabilities = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits.softmax(-1)
    positive, negative = model.config.label2id["positive"], model.config.label2id["negative"]
    assert probabilities[1].argmax() == negative
    assert probabilities[0, positive] > probabilities[1, positive] and probabilities[1, negative] > probabilities[0, negative]
