"""`build --check` where bit-identity is not promised: metrics must agree within the recorded tolerance."""

from modelbuild.worker import _metric_differences


def test_metrics_within_tolerance_pass_and_timings_are_ignored():
    old = {"val_loss": 0.500, "val_accuracy": 0.81, "samples_per_second": 900.0, "wall_seconds": 12.0,
           "tolerance": 0.01, "device": "cuda"}
    new = {"val_loss": 0.503, "val_accuracy": 0.81, "samples_per_second": 450.0, "wall_seconds": 30.0,
           "tolerance": 0.01, "device": "cuda"}
    assert _metric_differences(old, new) == []


def test_a_metric_outside_tolerance_is_named():
    old = {"val_loss": 0.50, "tolerance": 0.01}
    new = {"val_loss": 0.60, "tolerance": 0.01}
    assert _metric_differences(old, new) == ["metrics.json:val_loss 0.5 -> 0.6 (tolerance 0.01)"]
