"""What the `evaluate` builder uses: scoring a model (predict), its metrics (metrics), bias by group
(fairness), gates (gates) and the artifact's files (report). See docs/evaluate.md."""
