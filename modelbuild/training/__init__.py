"""Training shared by the `train` and `finetune` builders.

A *task* (tabular classification, causal language modelling, ...) knows its data and its model; the
*loop* (`loop.fit`) knows Lightning: the Trainer from recipe params, seeds and determinism, logging,
checkpoints kept under the step's work area so a killed build resumes, and `metrics.json`. Everything
here imports torch and Lightning: builders import this package inside `build()` only.
"""
