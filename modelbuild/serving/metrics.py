"""The Prometheus metrics of `modelbuild serve`: their names and labels, in one place.

Alert rules, dashboards and the `deploy` builder query these names; the server creates the collectors. A
server runs its HTTP front and its inference workers in separate processes, so the collectors are
prometheus-client's multiprocess kind, backed by files in a folder the server owns for its lifetime.

    requests      modelbuild_serve_requests_total{route, status}          counter
    latency       modelbuild_serve_request_duration_seconds{route}         histogram (_bucket, _sum, _count)
    batch size    modelbuild_serve_batch_size                              histogram (requests per model call)
    in flight     modelbuild_serve_requests_in_flight                      gauge
    model info    modelbuild_serve_model_info{digest, name, task} = 1      gauge
"""

from __future__ import annotations

import os

PREFIX = "modelbuild_serve"
REQUESTS = f"{PREFIX}_requests_total"
LATENCY = f"{PREFIX}_request_duration_seconds"
BATCH_SIZE = f"{PREFIX}_batch_size"
IN_FLIGHT = f"{PREFIX}_requests_in_flight"
MODEL_INFO = f"{PREFIX}_model_info"

ROUTE, STATUS = "route", "status"  # labels of REQUESTS (status: the HTTP code as a string, e.g. "200")
INFO_LABELS = ("digest", "name", "task")  # labels of MODEL_INFO

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable: where the processes' values live


def multiprocess(folder: str) -> None:
    """Record this process's values under `folder` (set before any collector is made; children inherit it)."""
    os.environ[ENV] = str(folder)
    from prometheus_client import values
    values.ValueClass = values.MultiProcessValue()


class ServerMetrics:
    """The HTTP front's collectors."""

    def __init__(self):
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(REQUESTS.removesuffix("_total"), "HTTP requests answered, by route and status",
                                [ROUTE, STATUS])
        self.latency = Histogram(LATENCY, "seconds from request to the end of the response", [ROUTE],
                                 buckets=LATENCY_BUCKETS)
        self.in_flight = Gauge(IN_FLIGHT, "requests being answered now", multiprocess_mode="livesum")
        self.model_info = Gauge(MODEL_INFO, "the served model: 1, labelled with its digest", list(INFO_LABELS),
                                multiprocess_mode="max")


def batch_size_histogram():
    """The inference worker's collector: how many requests each model call answered."""
    from prometheus_client import Histogram
    return Histogram(BATCH_SIZE, "requests answered by one model call", buckets=BATCH_BUCKETS)


def exposition() -> tuple[bytes, str]:
    """(body, content type) of /metrics: every process's values, merged."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
