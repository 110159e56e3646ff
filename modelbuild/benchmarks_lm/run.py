"""Score a causal LM on one lm-eval task with lm-evaluation-harness itself, offline.

The model is loaded by modelbuild (a save_pretrained folder, a merged fine-tune, a LoRA adapter on its base, or
a GGUF file dequantised) and handed to lm-eval's HFLM, so the scoring rules are lm-eval's own: per-choice
log-likelihood for `acc`/`acc_norm`, greedy `generate_until` for `exact_match`, its standard errors.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import RecipeError
from .tasks import TaskRef

Z95 = 1.959963984540054  # the normal quantile of a 95% interval: value +- Z95 * stderr


def offline(cache: Path) -> None:
    """Nothing reaches a hub; lm-eval's datasets are read from local files, cached under `cache`."""
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(cache),
                      TOKENIZERS_PARALLELISM="false", HF_DATASETS_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1")
    for name in ("lm-eval", "lm_eval", "datasets", "evaluate", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)


def load(model_path: Path, batch_size: int):
    """lm-eval's HFLM around the model modelbuild loads (float32 on CPU)."""
    from lm_eval.models.huggingface import HFLM

    from ..training.pretrained import load_model, load_tokenizer

    net = load_model("causal-lm", model_path).eval()
    return HFLM(pretrained=net, tokenizer=load_tokenizer(model_path), batch_size=batch_size, device="cpu")


def evaluate(lm, task: TaskRef, p: dict) -> tuple[dict, list[dict]]:
    """(lm-eval's result for the task, its per-sample records)."""
    from lm_eval import simple_evaluate

    seed = p["seed"]
    config, manager = task_config(task)
    try:
        with _without_env_report():
            out = simple_evaluate(model=lm, tasks=[config], task_manager=manager, limit=p["limit"],
                                  num_fewshot=p["num_fewshot"], apply_chat_template=p["apply_chat_template"],
                                  log_samples=True,
                                  random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                  fewshot_random_seed=seed, verbosity="WARNING")
    except (ConnectionError, FileNotFoundError, OSError) as e:
        if task.yaml is not None:
            raise
        raise RecipeError(f"the data of task {task.name} is not on this machine ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:300]}); modelbuild scores offline. Cache it first where the "
                          f"hub is reachable (`python -c \"import lm_eval.tasks as t; t.get_task_dict(['{task.name}'])\"` "
                          f"with HF_DATASETS_CACHE={os.environ.get('HF_DATASETS_CACHE')}), or give a task YAML over "
                          "local files", key="params.task") from None
    return out, out["samples"][task.name]


@contextmanager
def _without_env_report():
    """lm-eval adds torch's collect_env report to its results: a dozen commands (pip, conda, nvidia-smi, ...)
    costing 3-5 s of each task step. Nothing modelbuild writes reads it (the key's env holds the versions).
    Its git hash, too: `git describe` in the step's folder printed "fatal: not a git repository" into the log."""
    import lm_eval.evaluator

    saved = lm_eval.evaluator.add_env_info, lm_eval.evaluator.get_git_commit_hash
    lm_eval.evaluator.add_env_info = lambda results: None
    lm_eval.evaluator.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        lm_eval.evaluator.add_env_info, lm_eval.evaluator.get_git_commit_hash = saved


def task_config(task: TaskRef):
    """(what simple_evaluate is given for the task, the TaskManager that builds it). A YAML task is a config
    of its own, built without lm-eval's registry: indexing its thousands of built-in task YAMLs costs 15-25 s
    of CPU per run, which only a registry task (a name) needs."""
    from lm_eval.tasks import TaskManager

    if task.yaml is None:
        return task.name, TaskManager(metadata={})  # what simple_evaluate makes when given none
    from lm_eval.tasks._yaml_loader import load_yaml  # resolves `!function utils.fn` and `include:` beside it

    config = task.config(load_yaml(task.yaml, resolve_func=True))
    return config, TaskManager(include_path=task.yaml.parent, include_defaults=False, metadata={})


def metrics(result: dict) -> dict:
    """lm-eval's `metric,filter` values as flat names: `metric` (the filter dropped when there is one),
    `metric_stderr` and the 95% interval `metric_ci_low`/`metric_ci_high` from it."""
    filters = {k.split(",", 1)[1] for k in result if "," in k}
    flat = {}
    for key, value in result.items():
        if "," not in key or not isinstance(value, (int, float)) or "_stderr" in key:
            continue
        metric, filt = key.split(",", 1)
        name = metric if len(filters) == 1 else f"{metric}_{filt}"
        stderr = result.get(f"{metric}_stderr,{filt}")
        stderr = stderr if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
        flat[name] = value
        flat[f"{name}_stderr"] = stderr
        flat[f"{name}_ci_low"] = None if stderr is None else value - Z95 * stderr
        flat[f"{name}_ci_high"] = None if stderr is None else value + Z95 * stderr
    return flat


def records(samples: list[dict], metric_names: list[str]) -> dict[str, list]:
    """The per-sample table: doc_id, input (the prompt), target, choices and their log-likelihoods (multiple
    choice), generation (generate_until), and each metric's score."""
    import json

    cols = {"doc_id": [], "input": [], "target": [], "choices": [], "loglikelihoods": [], "generation": []}
    cols.update({m: [] for m in metric_names})
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        args = s["arguments"]
        generated = isinstance(args[0][1], dict)  # generate_until: (context, generation kwargs)
        cols["doc_id"].append(int(s["doc_id"]))
        cols["input"].append(str(args[0][0]))
        cols["target"].append(str(s["target"]))
        cols["choices"].append(None if generated else json.dumps([a[1] for a in args]))
        cols["loglikelihoods"].append(None if generated else json.dumps([float(r[0][0]) for r in s["resps"]]))
        cols["generation"].append(str(s["filtered_resps"][0]) if generated else None)
        for m in metric_names:
            value = s.get(m)
            cols[m].append(float(value) if isinstance(value, (int, float, bool)) else None)
    return cols
