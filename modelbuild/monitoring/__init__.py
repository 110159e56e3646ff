"""Monitoring a served model: drift and decay statistics, promotion past gates, figures for Prometheus.

Every module here imports numpy, scipy or pandas inside its functions only: `promote` and `tag --history`
are lineage verbs and stay light.
"""
