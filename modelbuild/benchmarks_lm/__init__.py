"""Benchmark tasks for language models: finding lm-eval tasks (ours, a recipe's, lm-eval's registry), checking
their local data, and scoring a model on one with lm-evaluation-harness (run.py, the only heavy module)."""
