"""modelbuild: declarative, reproducible, content-addressed builds of ML models."""

__version__ = "0.1.0"


def load_model(path):
    """The model in a `train` or `finetune` artifact, ready to predict (imports torch; `import modelbuild` does not).

    - a tabular model (config.json's model_type `modelbuild-tabular-mlp`): a
      `modelbuild.training.tabular.TabularModel`, with `predict(table)` and `predict_proba(table)`;
    - a LoRA adapter (`lora.merge: false`): a `peft.PeftModel` on its base model, found in the store that holds
      the adapter (adapter_config.json's `base_model_name_or_path` is relative to that store's root);
    - a causal LM or a sequence classifier (a `save_pretrained` folder): transformers' model, as
      `AutoModelForCausalLM` / `AutoModelForSequenceClassification.from_pretrained(path)` give it, offline.
    """
    import json
    from pathlib import Path

    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    if config.get("model_type") == "modelbuild-tabular-mlp" or str(config.get("task")).startswith("tabular-"):
        from .training.tabular import TabularModel

        return TabularModel.load(path)
    from .evaluation.predict import detect_task  # json only

    task = detect_task(path)
    if task in ("causal-lm", "sequence-classification"):
        from .training import pretrained

        if (path / "adapter_config.json").is_file() and (path / pretrained.BASE_FILE).is_file():
            return pretrained.load_adapter_model(task, path).eval()
        return pretrained.load_model(task, path).eval()
    raise ValueError(f"{path} holds no model modelbuild can load (a tabular model, a causal LM, a sequence "
                     f"classifier or a LoRA adapter); give the folder `modelbuild path RECIPE:STEP` prints for a "
                     f"train or finetune step")
