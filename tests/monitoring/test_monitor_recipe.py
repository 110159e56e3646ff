"""recipes/employment-monitor.yaml is a valid recipe: its first run (the reference model and drift) plans in an
empty store, and the whole loop refuses to plan until a model is promoted to `production` (exit 2, saying so).
The loop itself is built end to end in docs/monitoring.md (its training takes ten minutes on two cores)."""

from __future__ import annotations

import json

from conftest import REPO


def test_the_first_run_plans_and_the_loop_waits_for_production(cli):
    recipe = REPO / "recipes" / "employment-monitor.yaml"
    plan = json.loads(cli("plan", recipe, "-t", "evaluation", "-t", "drift", "--json").stdout)
    assert {s["step"] for s in plan["steps"]} == {"reference_raw", "traffic", "reference", "splits", "model",
                                                  "evaluation", "drift"}
    proc = cli("plan", recipe, check=2)
    assert "step 'candidate_evaluation', key 'inputs.baseline.tag'" in proc.stderr
    assert "there is no tag 'production'" in proc.stderr and "Traceback" not in proc.stderr
