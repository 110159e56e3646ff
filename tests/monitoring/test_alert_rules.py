"""The Prometheus alert rules on the drift and decay figures (modelbuild/monitoring/alerts.yml), checked by
`promtool test rules` against series shaped like the monitor.prom files the builders write."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import modelbuild.monitoring

RULES = Path(modelbuild.monitoring.__file__).parent / "alerts.yml"
TESTS = """
rule_files: [%s]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'modelbuild_drift_alert{step="drift"}'
        values: '0 0 1 1'
      - series: 'modelbuild_drift_prediction_psi{step="drift"}'
        values: '0.01 0.01 0.2 0.2'
      - series: 'modelbuild_decay_passed{step="decay"}'
        values: '1 1 0 0'
    alert_rule_test:
      - eval_time: 1m
        alertname: ModelInputDrift
        exp_alerts: []
      - eval_time: 1m
        alertname: ModelAccuracyDecay
        exp_alerts: []
      - eval_time: 3m
        alertname: ModelInputDrift
        exp_alerts:
          - exp_labels: {severity: warning, step: drift}
            exp_annotations:
              summary: "drift step drift: the served data no longer looks like the training data"
              description: "1: the share of drifted columns reached the step's drift_share. Read the step's summary.md (`modelbuild show`); the monitor recipe's candidate is retrained on the new data."
      - eval_time: 3m
        alertname: ModelPredictionDrift
        exp_alerts:
          - exp_labels: {severity: warning, step: drift}
            exp_annotations: {summary: "drift step drift: the model's predictions shifted (PSI 0.2)"}
      - eval_time: 3m
        alertname: ModelAccuracyDecay
        exp_alerts:
          - exp_labels: {severity: critical, step: decay}
            exp_annotations:
              summary: "decay step decay: the served model failed its accuracy gates on labelled traffic"
"""


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not installed")
def test_alert_rules_fire_on_the_figures_the_builders_write(tmp_path):
    assert subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True).returncode == 0
    tests = tmp_path / "tests.yml"
    tests.write_text(TESTS % RULES)
    proc = subprocess.run(["promtool", "test", "rules", str(tests)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
