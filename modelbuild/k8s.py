"""Kubernetes, KServe, Knative and Prometheus documents for one served model, as plain dicts.

Each function returns one document for `Spec`; the deploy builder writes them. The image is always pinned by
digest (`repo@sha256:...`): a tag can move under a running Deployment, a digest cannot. The metric names come
from serving.metrics, the one place the server defines them, so the alert rules and the HPA query what the
server exports.
"""

from __future__ import annotations

from dataclasses import dataclass

from .serving import metrics as M

RPS_METRIC = "modelbuild_serve_requests_per_second"  # what the Prometheus adapter rule below serves


@dataclass(frozen=True)
class Spec:
    name: str  # DNS-1123 label: every object's name
    namespace: str
    image: str  # repo@sha256:...
    port: int
    model_digest: str
    resources: dict
    min_replicas: int
    max_replicas: int
    target_cpu: int  # percent of the CPU request
    target_rps: int  # requests per second per pod
    concurrency: int  # Knative containerConcurrency and its autoscaling target
    p95_seconds: float
    error_rate: float
    no_traffic_minutes: int

    def labels(self) -> dict:
        return {"app.kubernetes.io/name": self.name, "app.kubernetes.io/managed-by": "modelbuild",
                "modelbuild.dev/model-digest": self.model_digest}

    def meta(self, **extra) -> dict:
        return {"name": self.name, "namespace": self.namespace, "labels": self.labels(), **extra}


def container(s: Spec) -> dict:
    """The server container: probes on /health, not root, nothing written outside /tmp."""
    probe = {"httpGet": {"path": "/health", "port": s.port}, "periodSeconds": 10, "timeoutSeconds": 2}
    return {
        "name": "server", "image": s.image, "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": s.port, "protocol": "TCP"}],
        "resources": s.resources,
        "readinessProbe": {**probe, "initialDelaySeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**probe, "initialDelaySeconds": 30, "failureThreshold": 6},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def pod_spec(s: Spec) -> dict:
    return {"containers": [container(s)], "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "fsGroup": 65532},
            "terminationGracePeriodSeconds": 30, "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]}


def deployment(s: Spec) -> dict:
    selector = {"app.kubernetes.io/name": s.name}
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(s.port), "prometheus.io/path": "/metrics"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": s.meta(),
            "spec": {"replicas": s.min_replicas, "selector": {"matchLabels": selector},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                     "template": {"metadata": {"labels": s.labels(), "annotations": scrape}, "spec": pod_spec(s)}}}


def service(s: Spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": s.meta(),
            "spec": {"selector": {"app.kubernetes.io/name": s.name},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}


def hpa(s: Spec) -> dict:
    """CPU and requests per second per pod (a custom metric served by the Prometheus adapter)."""
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": s.meta(),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": s.name},
                     "minReplicas": s.min_replicas, "maxReplicas": s.max_replicas,
                     "metrics": [
                         {"type": "Resource", "resource": {"name": "cpu", "target": {
                             "type": "Utilization", "averageUtilization": s.target_cpu}}},
                         {"type": "Pods", "pods": {"metric": {"name": RPS_METRIC}, "target": {
                             "type": "AverageValue", "averageValue": str(s.target_rps)}}}],
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}}


def pdb(s: Spec) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": s.meta(),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": s.name}}}}


def inference_service(s: Spec) -> dict:
    """KServe with a custom predictor container: the server image already holds the model."""
    predictor = {"minReplicas": s.min_replicas, "maxReplicas": s.max_replicas, "scaleMetric": "concurrency",
                 "scaleTarget": s.concurrency, "containers": [{**container(s), "name": "kserve-container"}],
                 "volumes": pod_spec(s)["volumes"], "securityContext": pod_spec(s)["securityContext"]}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": s.meta(),
            "spec": {"predictor": predictor}}


def knative_service(s: Spec) -> dict:
    """Serverless: scales to zero when idle, one pod per `concurrency` requests in flight."""
    c = container(s)
    c["ports"] = [{"name": "http1", "containerPort": s.port}]  # Knative routes to the one port named http1
    annotations = {"autoscaling.knative.dev/min-scale": "0", "autoscaling.knative.dev/max-scale": str(s.max_replicas),
                   "autoscaling.knative.dev/metric": "concurrency",
                   "autoscaling.knative.dev/target": str(s.concurrency)}
    spec = {"containerConcurrency": s.concurrency, "containers": [c], "volumes": pod_spec(s)["volumes"],
            "timeoutSeconds": 60}
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": s.meta(),
            "spec": {"template": {"metadata": {"labels": s.labels(), "annotations": annotations}, "spec": spec}}}


def alert_rules(s: Spec) -> dict:
    """Prometheus rules: p95 latency, share of 5xx answers, and no traffic at all."""
    sel = f'job="{s.name}"'
    rate = f"sum(rate({M.REQUESTS}{{{sel}}}[5m]))"
    p95 = f"histogram_quantile(0.95, sum by (le) (rate({M.LATENCY}_bucket{{{sel}}}[5m])))"
    errors = f'sum(rate({M.REQUESTS}{{{sel},{M.STATUS}=~"5.."}}[5m]))'
    quiet = f"{s.no_traffic_minutes}m"

    def rule(alert, expr, duration, severity, summary):
        return {"alert": alert, "expr": expr, "for": duration, "labels": {"severity": severity, "model": s.name},
                "annotations": {"summary": summary, "model_digest": s.model_digest}}

    return {"groups": [{"name": f"{s.name}.rules", "rules": [
        {"record": f"{s.name.replace('-', '_')}:request_latency_seconds:p95", "expr": p95},
        rule("ModelLatencyHigh", f"{p95} > {s.p95_seconds}", "10m", "warning",
             f"{s.name}: p95 latency above {s.p95_seconds}s for 10 minutes"),
        rule("ModelErrorRateHigh", f"({errors} or vector(0)) / {rate} > {s.error_rate}", "5m", "critical",
             f"{s.name}: more than {s.error_rate:.0%} of requests answered 5xx"),
        rule("ModelNoTraffic", f"(sum(rate({M.REQUESTS}{{{sel}}}[{quiet}])) or vector(0)) == 0", quiet, "info",
             f"{s.name}: no requests for {quiet}"),
    ]}]}


def adapter_rules(s: Spec) -> dict:
    """prometheus-adapter config: requests per second per pod, from the server's request counter."""
    return {"rules": [{"seriesQuery": f'{M.REQUESTS}{{namespace!="",pod!=""}}',
                       "resources": {"overrides": {"namespace": {"resource": "namespace"},
                                                   "pod": {"resource": "pod"}}},
                       "name": {"matches": f"^{M.REQUESTS}$", "as": RPS_METRIC},
                       "metricsQuery": "sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)"}]}
