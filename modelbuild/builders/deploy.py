"""deploy: Kubernetes, KServe, Knative and Prometheus manifests for a packaged model, as an artifact.

Output layout::

    <artifact>/
      kubernetes/   deployment.yaml service.yaml hpa.yaml pdb.yaml   (`kubectl apply -f kubernetes/`)
      kserve/       inferenceservice.yaml
      knative/      service.yaml                                      (serverless: scales to zero)
      prometheus/   rules.yaml (alerts: p95 latency, error rate, no traffic), adapter.yaml (requests/s for the HPA)
      monitor/      cronjob.yaml store-pvc.yaml                                (with `schedule`: a scheduled build)
      deploy.json   the image reference, the model digest, the push command, the files

The image is the `server` image of the `image` input (a package step with `server: true`), pinned as
`<repository>@sha256:...`: push it there first (deploy.json's `push`: `skopeo copy` keeps the digest). Because
the manifests name the image by digest and the digest follows from the model, a retrained model gives new
manifests, and `modelbuild diff` of two deploy artifacts walks down to what changed in the model.

A package step without a server image (the modelcar alone) is deployed with a `server` input (a package step
with `server: true` and no model: the runtime, pinned by the digest it was built with) or `server_image`, a
modelbuild server image pinned by digest: the pods copy the modelcar's /models into an emptyDir in an init container and serve it;
KServe mounts the modelcar itself (`STORAGE_URI=oci://<repository>@sha256:...`).
"""

from __future__ import annotations

import json
import re

from ..errors import BuildError, RecipeError, did_you_mean
from .base import Builder, Param
from .package import batching_args, check_batching

_DNS = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_PINNED = re.compile(r"[a-z0-9][a-z0-9._-]*(:[0-9]+)?(/[a-z0-9][a-z0-9._-]*)*@sha256:[0-9a-f]{64}")
_CRON = re.compile(r"(@(yearly|annually|monthly|weekly|daily|midnight|hourly))|([0-9*/,?LW#A-Za-z-]+( +|$)){5}")
SCHEDULE_KEYS = {"cron": "required", "recipe": "required", "image": "required", "workdir": "/project",
                 "claim": "<name>-store", "store_size": "20Gi", "time_zone": None, "promote": None, "name": None,
                 "logs_claim": None}
PLACEHOLDER = "@sha256:" + "0" * 64  # a server_image digest no image has: the manifests wait for a real one
DEFAULT_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}


class Deploy(Builder):
    """Manifests that run a packaged model's server image.

    Example::

        deploy:
          builder: deploy
          inputs: {image: image}
          params: {repository: registry.example.com/models/income, replicas: {min: 2, max: 10}}
    """

    name = "deploy"
    env = ("pyyaml",)
    params = {
        "name": Param("str", help="the objects' name (a DNS label), default the image's title"),
        "namespace": Param("str", default="default"),
        "repository": Param("str", default="localhost:5000/modelbuild",
                            help="where the image is pushed; manifests name it as <repository>@sha256:..."),
        "resources": Param("dict", default=DEFAULT_RESOURCES, help="the container's requests and limits"),
        "replicas": Param("dict", default={"min": 2, "max": 10}, help="{min, max} for the HPA and KServe"),
        "target_cpu": Param("int", default=70, help="HPA: average CPU use, percent of the request"),
        "target_rps": Param("int", default=50, help="HPA: requests per second per pod"),
        "concurrency": Param("int", default=16, help="Knative/KServe: requests in flight per pod"),
        "alerts": Param("dict", default={"p95_seconds": 0.5, "error_rate": 0.05, "no_traffic_minutes": 10},
                        help="thresholds: p95_seconds, error_rate (0-1), no_traffic_minutes"),
        "server_image": Param("str", help="for a modelcar-only image: the server image that serves its /models, "
                                          "pinned by digest (repo@sha256:<64 hex>)"),
        "server_repository": Param("str", omit=True, help="where the `server` input's image is pushed (default "
                                                           "<repository>-server)"),
        "max_batch_size": Param("int", omit=True, help="the server's --max-batch-size in the pods (default: the "
                                                        "package step's)"),
        "batch_timeout": Param("float", omit=True, help="the server's --batch-timeout in the pods (default: the "
                                                        "package step's)"),
        "schedule": Param("dict", help="a CronJob running a recipe: {cron, recipe, image (repo@sha256:...), "
                                       "workdir, claim, store_size, time_zone, promote: {tag, artifact}, name, "
                                       "logs_claim}"),
    }

    def check(self, params: dict, *, file: str | None, step: str) -> None:
        def fail(key, message):
            raise RecipeError(message, file=file, step=step, key=f"params.{key}")

        if params["name"] is not None and not _DNS.fullmatch(params["name"]):
            fail("name", f"{params['name']!r} is not a DNS label: lowercase letters, digits and '-', at most 63")
        replicas = params["replicas"]
        if set(replicas) - {"min", "max"} or not all(isinstance(replicas.get(k), int) for k in ("min", "max")) \
                or not 0 <= replicas["min"] <= replicas["max"] or replicas["max"] < 1:
            fail("replicas", f"replicas must be {{min: N, max: M}} with 0 <= N <= M and M >= 1, got {replicas!r}")
        alerts = {"p95_seconds": 0.5, "error_rate": 0.05, "no_traffic_minutes": 10}
        for key in params["alerts"]:
            if key not in alerts:
                fail(f"alerts.{key}", f"unknown alert threshold{did_you_mean(key, alerts)}; "
                                      f"the thresholds are {', '.join(alerts)}")
        for key in ("target_cpu", "target_rps", "concurrency"):
            if params[key] < 1:
                fail(key, f"{key} must be 1 or more, got {params[key]}")
        if "@" in params["repository"] or ":" in params["repository"].rpartition("/")[2]:
            fail("repository", f"repository is a name without tag or digest (e.g. registry.example.com/team/model), "
                               f"got {params['repository']!r}: the digest is added from the image")
        if params["server_image"] is not None and not _PINNED.fullmatch(params["server_image"]):
            fail("server_image", f"server_image must be pinned by digest (registry/name@sha256:<64 hex digits>), got "
                                 f"{params['server_image']!r}: a tag can move under a running Deployment")
        check_batching(params, file=file, step=step)
        if params["schedule"] is not None:
            _check_schedule(params["schedule"], fail)

    def check_inputs(self, params: dict, inputs: dict, *, file: str | None, step: str) -> None:
        if "image" not in inputs or set(inputs) - {"image", "server"}:
            raise RecipeError("deploy takes an `image` input (a package step with `server: true`, or a modelcar) "
                              "and, for a modelcar, a `server` input (a package step with `server: true`, its "
                              f"server image serving the modelcar); got {', '.join(sorted(inputs)) or 'none'}",
                              file=file, step=step, key="inputs")
        if "server" in inputs and params["server_image"] is not None:
            raise RecipeError("set `server_image` or a `server` input, not both: each names the image that serves "
                              "the modelcar", file=file, step=step, key="params.server_image")

    def build(self, ctx) -> None:
        import yaml

        from .. import k8s

        p, image = ctx.params, ctx.input("image")
        info_path = image / "image.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        server, modelcar = info.get("images", {}).get("server"), info.get("images", {}).get("modelcar")
        if not info.get("model_digest"):
            raise BuildError(f"step '{ctx.step}': its `image` input holds no model (a server image alone); name it "
                             f"as the `server` input, and a package step with a model as `image`")
        runtime = _runtime(ctx, p)
        if modelcar is not None and (p["server_image"] or runtime):  # a server image serves the modelcar
            image_ref, model_image = p["server_image"] or runtime, f"{p['repository']}@{modelcar['manifest']}"
        elif server is not None:
            image_ref, model_image = f"{p['repository']}@{server['manifest']}", None
        else:
            raise BuildError(f"step '{ctx.step}': its `image` input has no server image"
                             f"{' (only ' + ', '.join(info['images']) + ')' if info.get('images') else ''}; "
                             f"set `server: true` and a `base` input on the package step it names, or "
                             f"`server_image` (a server image pinned by digest) or a `server` input (a package step with "
                             f"`server: true`) to serve the modelcar")
        title = info["labels"].get("org.opencontainers.image.title", ctx.step)
        name = p["name"] or _dns_label(title)
        alerts = {"p95_seconds": 0.5, "error_rate": 0.05, "no_traffic_minutes": 10, **p["alerts"]}
        spec = k8s.Spec(name=name, namespace=p["namespace"], image=image_ref, model_image=model_image,
                        port=info.get("port", 8000), model_digest=info["model_digest"], resources=p["resources"],
                        min_replicas=p["replicas"]["min"], max_replicas=p["replicas"]["max"],
                        target_cpu=p["target_cpu"], target_rps=p["target_rps"], concurrency=p["concurrency"],
                        p95_seconds=float(alerts["p95_seconds"]), error_rate=float(alerts["error_rate"]),
                        no_traffic_minutes=int(alerts["no_traffic_minutes"]),
                        serve_args=tuple(_serve_args(p, info, in_image=model_image is None)))
        files = {"kubernetes/deployment.yaml": k8s.deployment(spec), "kubernetes/service.yaml": k8s.service(spec),
                 "kubernetes/hpa.yaml": k8s.hpa(spec), "kubernetes/pdb.yaml": k8s.pdb(spec),
                 "kserve/inferenceservice.yaml": k8s.inference_service(spec),
                 "knative/service.yaml": k8s.knative_service(spec),
                 "prometheus/rules.yaml": k8s.alert_rules(spec), "prometheus/adapter.yaml": k8s.adapter_rules(spec)}
        if p["schedule"] is not None:
            sched = {k: v for k, v in SCHEDULE_KEYS.items() if v != "required"} | p["schedule"]
            monitor = sched["name"] or _dns_label(f"{name}-monitor")
            schedule = k8s.Schedule(name=monitor, namespace=p["namespace"], cron=sched["cron"],
                                    recipe=sched["recipe"], image=sched["image"], workdir=sched["workdir"],
                                    claim=sched["claim"].replace("<name>", monitor),
                                    store_size=str(sched["store_size"]), time_zone=sched["time_zone"],
                                    promote=sched["promote"], model_digest=info["model_digest"],
                                    logs_claim=sched["logs_claim"])
            files["monitor/cronjob.yaml"] = k8s.cronjob(schedule)
            files["monitor/store-pvc.yaml"] = k8s.store_claim(schedule)
        for rel, doc in files.items():
            (ctx.out / rel).parent.mkdir(parents=True, exist_ok=True)
            (ctx.out / rel).write_text(yaml.dump(doc, Dumper=_no_aliases(), sort_keys=False, width=120))
        tag = info["model_digest"][:12]
        ref = "modelcar" if model_image else "server"
        summary = {"name": name, "image": spec.image, "model_digest": info["model_digest"], "files": sorted(files),
                   "push": f"skopeo copy oci:$(modelbuild path {image.name.split('-')[0]})/oci:{ref} "
                           f"docker://{p['repository']}:{tag}"}
        if model_image:
            summary["model_image"] = model_image
        if runtime:  # tagged with its digest's first 12 hex digits: it holds no model
            repository, _, digest = runtime.partition("@sha256:")
            summary["push_server"] = (f"skopeo copy oci:$(modelbuild path {ctx.input('server').name.split('-')[0]})"
                                      f"/oci:server docker://{repository}:{digest[:12]}")
        if image_ref.endswith(PLACEHOLDER):
            summary["server_image_placeholder"] = True
            ctx.log.warning("step '%s': server_image %s is a placeholder: the manifests validate, but no pod starts "
                            "until it names a real server image (docs/deploy.md, \"The server image\")",
                            ctx.step, image_ref)
        if p["schedule"] is not None:
            summary["schedule"] = {"cron": schedule.cron, "recipe": schedule.recipe, "image": schedule.image,
                                   "exit_codes": {str(k): v for k, v in k8s.EXIT_CODES.items()},
                                   "fail_job_on": k8s.FINAL_EXIT_CODES}
        (ctx.out / "deploy.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        ctx.log.info("deploy %s: %s", name, spec.image)


def _runtime(ctx, p: dict) -> str | None:
    """The `server` input's server image, as `<server_repository>@sha256:...`; None without the input."""
    if "server" not in ctx.inputs:
        return None
    path = ctx.input("server") / "image.json"
    server = (json.loads(path.read_text()) if path.is_file() else {}).get("images", {}).get("server")
    if server is None:
        raise BuildError(f"step '{ctx.step}': its `server` input has no server image; set `server: true` (and a "
                         f"`base` input) on the package step it names")
    return f"{p.get('server_repository') or p['repository'] + '-server'}@{server['manifest']}"


def _serve_args(p: dict, info: dict, *, in_image: bool) -> list[str]:
    """The batching flags the pods add: the package step's, overridden by this step's. A server image already
    runs with the package step's (in its Cmd), so its pods add flags only when this step sets some."""
    own = {k: p[k] for k in ("max_batch_size", "batch_timeout") if p.get(k) is not None}
    if in_image and not own:
        return []
    return batching_args({**info.get("batching", {}), **own})


def _check_schedule(schedule: dict, fail) -> None:
    for key in schedule:
        if key not in SCHEDULE_KEYS:
            fail(f"schedule.{key}", f"unknown schedule key{did_you_mean(key, SCHEDULE_KEYS)}; the keys are "
                                    f"{', '.join(SCHEDULE_KEYS)}")
    for key in (k for k, v in SCHEDULE_KEYS.items() if v == "required"):
        if not isinstance(schedule.get(key), str) or not schedule[key].strip():
            fail(f"schedule.{key}", f"schedule needs `{key}`: {_SCHEDULE_HELP[key]}")
    if not _CRON.fullmatch(schedule["cron"].strip()):
        fail("schedule.cron", f"{schedule['cron']!r} is not a cron schedule: five fields (minute hour day month "
                              f"weekday), e.g. \"0 3 * * *\", or @daily")
    if not _PINNED.fullmatch(schedule["image"]):
        fail("schedule.image", f"schedule.image must be pinned by digest (registry/name@sha256:<64 hex digits>), "
                               f"got {schedule['image']!r}")
    for key in ("workdir", "claim", "store_size", "time_zone", "name", "logs_claim"):
        if schedule.get(key) is not None and not isinstance(schedule[key], str):
            fail(f"schedule.{key}", f"schedule.{key} must be a string, got {schedule[key]!r}")
    if schedule.get("name") is not None and not _DNS.fullmatch(schedule["name"]):
        fail("schedule.name", f"{schedule['name']!r} is not a DNS label: lowercase letters, digits and '-'")
    for key in ("claim", "logs_claim"):
        if schedule.get(key) is not None and not _DNS.fullmatch(schedule[key].replace("<name>", "x")):
            fail(f"schedule.{key}", f"{schedule[key]!r} is not a DNS label: lowercase letters, digits and '-'")
    promote = schedule.get("promote")
    if promote is not None and (not isinstance(promote, dict) or set(promote) != {"tag", "artifact"}
                                or not all(isinstance(v, str) and v for v in promote.values())):
        fail("schedule.promote", f"schedule.promote is {{tag: TAG, artifact: RECIPE:STEP}} (promoted after a build "
                                 f"that exits 0), got {promote!r}")


_SCHEDULE_HELP = {"cron": 'when to run, e.g. "0 3 * * *"',
                  "recipe": "the recipe to build, a path inside the image, e.g. recipes/employment-monitor.yaml",
                  "image": "an image with modelbuild and the recipe, pinned as registry/name@sha256:<64 hex>"}


def _no_aliases():
    import yaml

    class NoAliases(yaml.SafeDumper):
        """Writes a value shared by two keys twice, as a person would, instead of as an &anchor and *alias."""

        def ignore_aliases(self, data):
            return True
    return NoAliases


def _dns_label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return label or "model"
