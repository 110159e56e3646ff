"""Kubernetes, KServe, Knative and Prometheus documents for one served model, as plain dicts.

Each function returns one document for `Spec`; the deploy builder writes them. The image is always pinned by
digest (`repo@sha256:...`): a tag can move under a running Deployment, a digest cannot. The metric names come
from serving.metrics, the one place the server defines them, so the alert rules and the HPA query what the
server exports.
"""

from __future__ import annotations

import shlex
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
    model_image: str | None = None  # a modelcar (repo@sha256:...) whose /models the server serves; None: in the image
    serve_args: tuple[str, ...] = ()  # more `modelbuild serve` flags (dynamic batching)

    def labels(self) -> dict:
        return {"app.kubernetes.io/name": self.name, "app.kubernetes.io/managed-by": "modelbuild",
                "modelbuild.dev/model-digest": self.model_digest}

    def meta(self, **extra) -> dict:
        return {"name": self.name, "namespace": self.namespace, "labels": self.labels(), **extra}


LOCKED_DOWN = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "readOnlyRootFilesystem": True,
               "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
               "seccompProfile": {"type": "RuntimeDefault"}}


def serve_command(s: Spec, models: str = "/models") -> dict:
    """For a server image that does not hold the model: serve the model folder a volume puts at `models`.
    Inside a pod 0.0.0.0 is the pod's own network namespace, which the Service and probes must reach; the
    command-line default stays 127.0.0.1."""
    return {"command": ["modelbuild", "serve", models, "--host", "0.0.0.0", "--port", str(s.port),
                        "--log-dir", "/tmp/serve-logs", *s.serve_args],
            "env": [{"name": "MODELBUILD_STORE", "value": "/tmp/store"}]}


def container(s: Spec) -> dict:
    """The server container: probes on /health, not root, nothing written outside /tmp (and /models, read-only,
    when the model comes from a modelcar)."""
    probe = {"httpGet": {"path": "/health", "port": s.port}, "periodSeconds": 10, "timeoutSeconds": 2}
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    if s.model_image:
        mounts.append({"name": "models", "mountPath": "/models", "readOnly": True})
    return {
        "name": "server", "image": s.image, "imagePullPolicy": "IfNotPresent",
        **(serve_command(s) if s.model_image else _image_args(s)),
        "ports": [{"name": "http", "containerPort": s.port, "protocol": "TCP"}],
        "resources": s.resources,
        "readinessProbe": {**probe, "initialDelaySeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**probe, "initialDelaySeconds": 30, "failureThreshold": 6},
        "securityContext": LOCKED_DOWN,
        "volumeMounts": mounts,
    }


def _image_args(s: Spec) -> dict:
    """For a server image that holds the model: its entrypoint stays, `args` (replacing the image's Cmd) adds
    the flags, if any."""
    if not s.serve_args:
        return {}
    return {"args": ["--host", "0.0.0.0", "--port", str(s.port), *s.serve_args]}


def model_init_container(s: Spec) -> dict:
    """Copies the modelcar's /models into the pod's `models` emptyDir before the server starts. An init container
    rather than an `image` volume: image volumes are not in the Kubernetes 1.30 API, and are off by default
    before 1.35. The modelcar needs `cp` (a base with a shell, e.g. busybox; KServe's modelcar sidecar needs one
    too)."""
    return {"name": "model", "image": s.model_image, "imagePullPolicy": "IfNotPresent",
            "command": ["cp", "-R", "/models/.", "/mnt/models/"],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
            "securityContext": LOCKED_DOWN, "volumeMounts": [{"name": "models", "mountPath": "/mnt/models"}]}


def pod_spec(s: Spec) -> dict:
    volumes = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    spec = {"containers": [container(s)], "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "fsGroup": 65532}, "terminationGracePeriodSeconds": 30}
    if s.model_image:
        spec["initContainers"] = [model_init_container(s)]
        volumes.append({"name": "models", "emptyDir": {}})
    return {**spec, "volumes": volumes}


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
    """KServe with a custom predictor container. The server image holds the model, or (a modelcar) KServe's
    storage initializer mounts the modelcar's /models at /mnt/models from `STORAGE_URI=oci://...@sha256:...`
    (KServe's modelcars, `enableModelcar: true` in its storageInitializer config)."""
    server = {**container(s), "name": "kserve-container"}
    volumes = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    if s.model_image:
        server.update(serve_command(s, "/mnt/models"))
        server["env"] = server["env"] + [{"name": "STORAGE_URI", "value": f"oci://{s.model_image}"}]
        server["volumeMounts"] = [m for m in server["volumeMounts"] if m["name"] != "models"]
    predictor = {"minReplicas": s.min_replicas, "maxReplicas": s.max_replicas, "scaleMetric": "concurrency",
                 "scaleTarget": s.concurrency, "containers": [server],
                 "volumes": volumes, "securityContext": pod_spec(s)["securityContext"]}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": s.meta(),
            "spec": {"predictor": predictor}}


def knative_service(s: Spec) -> dict:
    """Serverless: scales to zero when idle, one pod per `concurrency` requests in flight."""
    c = container(s)
    c["ports"] = [{"name": "http1", "containerPort": s.port}]  # Knative routes to the one port named http1
    annotations = {"autoscaling.knative.dev/min-scale": "0", "autoscaling.knative.dev/max-scale": str(s.max_replicas),
                   "autoscaling.knative.dev/metric": "concurrency",
                   "autoscaling.knative.dev/target": str(s.concurrency)}
    pod = pod_spec(s)
    spec = {"containerConcurrency": s.concurrency, "containers": [c], "volumes": pod["volumes"],
            "timeoutSeconds": 60, **({"initContainers": pod["initContainers"]} if s.model_image else {})}
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


# What a scheduled build's exit code means; 2, 4 and 5 fail the Job at once (no retry can change them)
EXIT_CODES = {0: "built: no alert, every gate passed", 1: "a build failed (retried once)",
              2: "a recipe or usage error", 3: "the data is invalid", 4: "a drift alert or a failed gate",
              5: "the store or a cache is damaged or untrusted", 7: "the store cannot be written"}
FINAL_EXIT_CODES = [2, 3, 4, 5]


@dataclass(frozen=True)
class Schedule:
    name: str
    namespace: str
    cron: str
    recipe: str  # a path inside the image, relative to workdir
    image: str  # repo@sha256:..., an image with modelbuild and the recipe
    workdir: str
    claim: str  # the PersistentVolumeClaim holding the store
    store_size: str
    time_zone: str | None
    promote: dict | None  # {tag, artifact}: promote after a build that exits 0
    model_digest: str
    logs_claim: str | None = None  # a PVC with the server's request and feedback logs, mounted at /serve-logs

    def meta(self) -> dict:
        return {"name": self.name, "namespace": self.namespace,
                "labels": {"app.kubernetes.io/name": self.name, "app.kubernetes.io/managed-by": "modelbuild",
                           "app.kubernetes.io/component": "monitor", "modelbuild.dev/model-digest": self.model_digest}}


def store_claim(s: Schedule) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {**s.meta(), "name": s.claim},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": s.store_size}}}}


def cronjob(s: Schedule) -> dict:
    """`modelbuild build RECIPE` on a schedule, the store on a PVC; one run at a time (Forbid). Exit 4 (a drift
    alert or a failed gate) and the other verdicts fail the Job without a retry, for `kube_job_status_failed`."""
    build = ["modelbuild", "build", s.recipe, "-k"]
    if s.promote:
        promote = ["modelbuild", "promote", s.promote["tag"], s.promote["artifact"], "--reason",
                   f"scheduled build {s.name}"]
        command = ["/bin/sh", "-c", f"{shlex.join(build)} && {shlex.join(promote)}"]
    else:
        command = build
    container = {"name": "monitor", "image": s.image, "imagePullPolicy": "IfNotPresent", "command": command,
                 "workingDir": s.workdir,
                 "env": [{"name": "MODELBUILD_STORE", "value": "/store"},
                         {"name": "MODELBUILD_USER", "value": f"cronjob/{s.name}"},
                         {"name": "HOME", "value": "/tmp"}],
                 "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
                 "securityContext": LOCKED_DOWN,
                 "volumeMounts": [{"name": "store", "mountPath": "/store"}, {"name": "tmp", "mountPath": "/tmp"}]}
    pod = {"restartPolicy": "Never", "automountServiceAccountToken": False,
           "securityContext": {"runAsNonRoot": True, "fsGroup": 65532}, "containers": [container],
           "volumes": [{"name": "store", "persistentVolumeClaim": {"claimName": s.claim}},
                       {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}}]}
    if s.logs_claim:
        container["volumeMounts"].append({"name": "logs", "mountPath": "/serve-logs", "readOnly": True})
        pod["volumes"].append({"name": "logs", "persistentVolumeClaim": {"claimName": s.logs_claim,
                                                                          "readOnly": True}})
    job = {"backoffLimit": 1, "activeDeadlineSeconds": 6 * 3600,
           "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
               "containerName": "monitor", "operator": "In", "values": FINAL_EXIT_CODES}}]},
           "template": {"metadata": {"labels": s.meta()["labels"]}, "spec": pod}}
    spec = {"schedule": s.cron, **({"timeZone": s.time_zone} if s.time_zone else {}),
            "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 5, "jobTemplate": {"spec": job}}
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": s.meta(), "spec": spec}
