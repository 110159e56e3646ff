"""modelbuild: declarative, reproducible, content-addressed builds of ML models."""

__version__ = "0.1.0"


def load_model(path):
    """The model in a `train` or `finetune` artifact, ready to predict (imports torch; `import modelbuild` does not).

    - a tabular model (config.json's model_type `modelbuild-tabular-mlp`): a
      `modelbuild.training.tabular.TabularModel`, with `predict(table)` and `predict_proba(table)`;
    - a LoRA adapter (`lora.merge: false`): a `peft.PeftModel` on its base model, found in the store that holds
      the adapter (adapter_config.json's `base_model_name_or_path` is relative to that store's root).

    A full transformers model (a `save_pretrained` folder) loads with transformers itself:
    `AutoModelForCausalLM.from_pretrained(path)` or `AutoModelForSequenceClassification.from_pretrained(path)`.
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
    if (path / "adapter_config.json").is_file():
        from .training.pretrained import BASE_FILE, load_adapter_model

        task = json.loads((path / "adapter_config.json").read_text()).get("task_type")
        kinds = {"CAUSAL_LM": "causal-lm", "SEQ_CLS": "sequence-classification"}
        if task in kinds and (path / BASE_FILE).is_file():
            return load_adapter_model(kinds[task], path).eval()
    kind = config.get("model_type")
    raise ValueError(f"{path} is not a tabular model or a LoRA adapter built by modelbuild" + (
        f"; it is a transformers {kind} model: load it with transformers' AutoModelFor<task>.from_pretrained"
        if kind else "; give the folder `modelbuild path RECIPE:STEP` prints for a train or finetune step"))
