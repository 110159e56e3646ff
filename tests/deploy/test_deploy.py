"""The deploy builder: manifests that the Kubernetes schemas, promtool and the lineage commands accept."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import Cli, Project

from .conftest import DEPLOY, model_recipe, need

KUBERNETES = ("1.30.0", "1.33.0", "1.37.0")
PINNED = "registry.example.com/modelbuild-serve@sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_base) -> tuple[Cli, Path]:
    """One store for the module: the model packaged and deployed once, read by every test here."""
    root = tmp_path_factory.mktemp("deployed")
    cli = Cli(Project(root / "project"), root / "store")
    shutil.copytree(tiny_base, cli.project / "base")
    cli.project.write("recipe.yaml", model_recipe(1, DEPLOY))
    return cli, Path(cli.build()["by_step"]["deploy"]["path"])


@pytest.fixture
def deployed(built) -> Path:
    return built[1]


def _validate(version: str, *files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "--quiet",
                           "-k", version, *map(str, files)], capture_output=True, text=True, timeout=120)


def test_core_kinds_are_valid_for_several_kubernetes_versions(deployed, tmp_path):
    """Deployment, Service, HPA and PDB strictly; Knative's and KServe's pod parts as core PodSpecs."""
    pods = {"knative": yaml.safe_load((deployed / "knative/service.yaml").read_text())["spec"]["template"]["spec"],
            "kserve": yaml.safe_load((deployed / "kserve/inferenceservice.yaml").read_text())["spec"]["predictor"]}
    for name, spec in pods.items():
        spec = {k: v for k, v in spec.items() if k not in ("containerConcurrency", "timeoutSeconds", "minReplicas",
                                                           "maxReplicas", "scaleMetric", "scaleTarget")}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod",
                                                               "metadata": {"name": name}, "spec": spec}))
    files = sorted((deployed / "kubernetes").glob("*.yaml")) + sorted(tmp_path.glob("*.yaml"))
    assert len(files) == 6
    for version in KUBERNETES:
        proc = _validate(version, *files)
        assert proc.returncode == 0, f"Kubernetes {version}:\n{proc.stdout}{proc.stderr}"


def test_the_validator_rejects_a_broken_manifest(deployed, tmp_path):
    """The check above can fail: a field Kubernetes does not know is refused under --strict."""
    doc = yaml.safe_load((deployed / "kubernetes/deployment.yaml").read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/health"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(doc))
    proc = _validate(KUBERNETES[-1], tmp_path / "broken.yaml")
    assert proc.returncode != 0 and "pathh" in proc.stdout + proc.stderr


def test_image_is_pinned_by_digest_and_pods_are_locked_down(deployed):
    info = json.loads((deployed / "deploy.json").read_text())
    deployment = yaml.safe_load((deployed / "kubernetes/deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == info["image"]
    assert info["image"].startswith("registry.example.com/demo@sha256:") and len(info["image"].split(":")[-1]) == 64
    assert container["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health" == container["livenessProbe"]["httpGet"]["path"]
    hpa = yaml.safe_load((deployed / "kubernetes/hpa.yaml").read_text())
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Resource", "Pods"}
    knative = yaml.safe_load((deployed / "knative/service.yaml").read_text())["spec"]["template"]
    assert not any("&id0" in f.read_text() for f in deployed.rglob("*.yaml"))  # written out, no YAML aliases
    assert knative["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "0"


RULE_TESTS = """
rule_files: [RULES]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # 10 requests/s, 1 in 10 answered 500, every request slower than 1 s
      - series: 'modelbuild_serve_requests_total{job="demo-server",route="/predict",status="200"}'
        values: '0+540x30'
      - series: 'modelbuild_serve_requests_total{job="demo-server",route="/predict",status="500"}'
        values: '0+60x30'
      - series: 'modelbuild_serve_request_duration_seconds_bucket{job="demo-server",route="/predict",le="0.5"}'
        values: '0x30'
      - series: 'modelbuild_serve_request_duration_seconds_bucket{job="demo-server",route="/predict",le="1.0"}'
        values: '0x30'
      - series: 'modelbuild_serve_request_duration_seconds_bucket{job="demo-server",route="/predict",le="+Inf"}'
        values: '0+600x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: ModelLatencyHigh
        exp_alerts:
          - exp_labels: {severity: warning, model: demo-server}
            exp_annotations: {summary: "demo-server: p95 latency above 0.5s for 10 minutes", model_digest: DIGEST}
      - eval_time: 20m
        alertname: ModelErrorRateHigh
        exp_alerts:
          - exp_labels: {severity: critical, model: demo-server}
            exp_annotations: {summary: "demo-server: more than 5% of requests answered 5xx", model_digest: DIGEST}
      - eval_time: 20m
        alertname: ModelNoTraffic
        exp_alerts: []
  - interval: 1m
    input_series:
      - series: 'modelbuild_serve_requests_total{job="demo-server",route="/predict",status="200"}'
        values: '5x30'
    alert_rule_test:
      - eval_time: 25m
        alertname: ModelNoTraffic
        exp_alerts:
          - exp_labels: {severity: info, model: demo-server}
            exp_annotations: {summary: "demo-server: no requests for 10m", model_digest: DIGEST}
      - eval_time: 25m
        alertname: ModelErrorRateHigh
        exp_alerts: []
"""


def test_alert_rules_pass_promtool(deployed, tmp_path):
    need("promtool")
    rules = deployed / "prometheus/rules.yaml"
    check = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    digest = json.loads((deployed / "deploy.json").read_text())["model_digest"]
    (tmp_path / "test.yaml").write_text(RULE_TESTS.replace("RULES", str(rules)).replace("DIGEST", digest))
    proc = subprocess.run(["promtool", "test", "rules", tmp_path / "test.yaml"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_diff_of_two_deployments_names_the_model_change(built, deployed, tmp_path):
    cli = Cli(built[0].project, built[0].store)
    cli.project = Project(tmp_path / "project")
    shutil.copytree(built[0].project, cli.project)
    cli.project.write("recipe.yaml", model_recipe(2, DEPLOY))
    after = Path(cli.build()["by_step"]["deploy"]["path"])
    proc = cli("diff", deployed, after)
    assert "deploy <- server <- model: params.cmd" in proc.stdout
    assert "WEIGHT" not in proc.stdout and '1}' in proc.stdout and '2}' in proc.stdout


def test_why_depends_goes_through_the_image(built):
    proc = built[0]("why-depends", "demo:deploy", "demo:model")
    lines = proc.stdout.splitlines()
    assert "deploy" in lines[0] and "image (" in lines[1] and "model (" in lines[2]


DATA_TO_DEPLOY = """
name: demo
steps:
  data:
    builder: command
    params: {cmd: 'echo "rows: ROWS" > "$MB_OUT/table.txt"'}
  model:
    builder: command
    inputs: {data: data}
    params: {cmd: 'cp "$MB_IN_DATA/table.txt" "$MB_OUT/weights.txt"'}
  image:
    builder: package
    inputs: {model: model}
  deploy:
    builder: deploy
    inputs: {image: image}
    params: {server_image: PINNED}
"""


def test_why_depends_and_diff_reach_the_data_under_the_model(cli):
    """Lineage runs from the manifests through the modelcar and the model to the data it was trained on: new data
    gives new manifests, and `diff` names the data step's change, three steps down."""
    recipe = DATA_TO_DEPLOY.replace("PINNED", PINNED)
    cli.project.write("recipe.yaml", recipe.replace("ROWS", "100"))
    before = cli.build()["by_step"]["deploy"]["path"]
    lines = cli("why-depends", "demo:deploy", "demo:data").stdout.splitlines()
    assert [line.strip().split(" ")[-2:][0] for line in lines[1:]] == ["image", "model", "data"], lines
    assert "-deploy" in lines[0] and lines[-1].rstrip().endswith("-data)")
    cli.project.write("recipe.yaml", recipe.replace("ROWS", "200"))
    after = cli.build()["by_step"]["deploy"]["path"]
    assert after != before
    proc = cli("diff", before, after)
    assert "deploy <- image <- model <- data: params.cmd" in proc.stdout, proc.stdout
    assert "rows: 100" in proc.stdout and "rows: 200" in proc.stdout


RUNTIME = """
  runtime:
    builder: package
    description: the server image without a model, shared by every modelcar
    inputs: {base: {path: base}}
    params: {server: true, image: modelbuild-serve}
  deploy:
    builder: deploy
    inputs: {image: image, server: runtime}
    params: {repository: registry.example.com/demo}
"""


def test_a_server_image_built_by_the_recipe_serves_the_modelcar_pinned_by_its_digest(cli, tiny_base):
    """`server: true` without a model is the runtime alone; the deploy step pins the digest it was built with,
    and a new model changes the modelcar and the manifests, not the runtime."""
    shutil.copytree(tiny_base, cli.project / "base")
    digests, runtimes = [], []
    for weight in (1, 2):
        cli.project.write("recipe.yaml", model_recipe(weight, RUNTIME))
        steps = cli.build()["by_step"]
        runtime = json.loads((Path(steps["runtime"]["path"]) / "image.json").read_text())
        assert list(runtime["images"]) == ["server"] and runtime["model_digest"] is None
        assert len(runtime["images"]["server"]["layers"]) == 2  # the base and the app: no model layer
        deployed = Path(steps["deploy"]["path"])
        info = json.loads((deployed / "deploy.json").read_text())
        assert info["image"] == "registry.example.com/demo-server@" + runtime["images"]["server"]["manifest"]
        assert "server_image_placeholder" not in info
        assert info["push_server"].endswith("/oci:server docker://registry.example.com/demo-server:"
                                            + runtime["images"]["server"]["manifest"][7:19])
        server = yaml.safe_load((deployed / "kubernetes/deployment.yaml").read_text())["spec"]["template"]["spec"]
        assert server["containers"][0]["image"] == info["image"]
        assert server["initContainers"][0]["image"] == info["model_image"]
        digests.append(info["model_image"])
        runtimes.append((steps["runtime"]["status"], info["image"]))
    assert digests[0] != digests[1] and runtimes[1] == ("cached", runtimes[0][1])


@pytest.mark.parametrize("change, says", [
    ({"inputs": {"image": "runtime"}}, "holds no model"),
    ({"params": {"server_image": PINNED}}, "not both"),
])
def test_a_runtime_in_the_wrong_place_is_refused(cli, tiny_base, change, says):
    shutil.copytree(tiny_base, cli.project / "base")
    recipe = yaml.safe_load(model_recipe(1, RUNTIME))
    for key, value in change.items():
        recipe["steps"]["deploy"][key] = {**recipe["steps"]["deploy"][key], **value}
    cli.project.write("recipe.yaml", yaml.safe_dump(recipe))
    proc = cli("build", "recipe.yaml", check=None)
    assert proc.returncode in (1, 2) and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_batching_params_reach_the_server_image_and_the_pods(cli, tiny_base):
    """The package step's batching is in the image's command; the deploy step's own values override it in the pods'
    args (the image's entrypoint stays), and a modelcar's pods get them in their `modelbuild serve` command."""
    from modelbuild import oci

    shutil.copytree(tiny_base, cli.project / "base")
    recipe = model_recipe(1, DEPLOY.replace("image: demo-server}", "image: demo-server, max_batch_size: 16, "
                                                                   "batch_timeout: 0.01}")
                          .replace("max: 4}}", "max: 4}, batch_timeout: 0.02}"))
    cli.project.write("recipe.yaml", recipe + """
  modelcar_deploy:
    builder: deploy
    inputs: {image: image}
    params: {max_batch_size: 4, server_image: PINNED}
""".replace("PINNED", PINNED))
    steps = cli.build()["by_step"]
    _, config = oci.read_image(Path(steps["server"]["path"]) / "oci", "server")
    assert config["config"]["Cmd"] == ["--host", "0.0.0.0", "--port", "8000", "--max-batch-size", "16",
                                       "--batch-timeout", "0.01"]

    def server(step: str) -> dict:
        doc = yaml.safe_load((Path(steps[step]["path"]) / "kubernetes/deployment.yaml").read_text())
        return doc["spec"]["template"]["spec"]["containers"][0]

    assert "command" not in server("deploy")
    assert server("deploy")["args"] == ["--host", "0.0.0.0", "--port", "8000", "--max-batch-size", "16",
                                        "--batch-timeout", "0.02"]
    assert server("modelcar_deploy")["command"][-2:] == ["--max-batch-size", "4"]


def test_deploy_of_a_modelcar_only_package_says_what_to_set(cli):
    cli.project.write("recipe.yaml", model_recipe(1, """
  deploy:
    builder: deploy
    inputs: {image: image}
"""))
    proc = cli("build", "recipe.yaml", check=1)
    assert "has no server image (only modelcar)" in proc.stderr and "server: true" in proc.stderr
    assert "server_image" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_prometheus_scrapes_the_server_metrics_and_the_rules_return_data(deployed, tmp_path):
    """A real Prometheus on loopback scrapes the server's metric names; the alert expressions, as written in
    rules.yaml, select the series (latency and errors firing here) and the rules load."""
    need("prometheus")
    import urllib.parse
    import urllib.request

    from .conftest import free_port, stop, wait_for_port

    exporter_port, prometheus_port = free_port(), free_port()
    rules = yaml.safe_load((deployed / "prometheus/rules.yaml").read_text())["groups"][0]["rules"]
    job = json.loads((deployed / "deploy.json").read_text())["name"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(deployed / "prometheus/rules.yaml")],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}]}))
    exporter = subprocess.Popen([sys.executable, Path(__file__).parent / "exporter.py", str(exporter_port)])
    prometheus = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def query(expr: str) -> list:
        url = f"http://127.0.0.1:{prometheus_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)["data"]["result"]

    try:
        wait_for_port(exporter_port, exporter)
        wait_for_port(prometheus_port, prometheus)
        deadline = time.monotonic() + 60  # it listens before its TSDB is open, answering 503 until /-/ready is 200
        while not _answers(f"http://127.0.0.1:{prometheus_port}/-/ready") and time.monotonic() < deadline:
            time.sleep(0.5)
        exprs = {r.get("alert") or r["record"]: r["expr"] for r in rules}
        deadline, results = time.monotonic() + 30, {}
        while time.monotonic() < deadline:
            results = {name: query(expr) for name, expr in exprs.items()}
            if all(results[n] for n in exprs if n != "ModelNoTraffic"):
                break
            time.sleep(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{prometheus_port}/api/v1/rules", timeout=5) as r:
            loaded = json.load(r)["data"]["groups"][0]["rules"]
    finally:
        stop(prometheus)
        stop(exporter)
    assert float(results["ModelLatencyHigh"][0]["value"][1]) > 0.5
    assert 0.05 < float(results["ModelErrorRateHigh"][0]["value"][1]) < 0.2
    assert results["ModelNoTraffic"] == []  # there is traffic
    assert {r["name"] for r in loaded} == set(exprs) and all(r["health"] == "ok" for r in loaded)


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.parametrize("params, key", [
    ("{repository: registry.example.com/demo:v1}", "params.repository"),
    ("{name: Demo_Server}", "params.name"),
    ("{replicas: {min: 5, max: 2}}", "params.replicas"),
    ("{alerts: {p95_second: 1}}", "params.alerts.p95_second"),
    ("{max_batch_size: 0}", "params.max_batch_size"),
    ("{batch_timeout: -1}", "params.batch_timeout"),
])
def test_bad_deploy_params_are_recipe_errors(cli, tiny_base, params, key):
    shutil.copytree(tiny_base, cli.project / "base")
    cli.project.write("recipe.yaml", model_recipe(1, DEPLOY.replace(
        "params: {repository: registry.example.com/demo, replicas: {min: 1, max: 4}}", f"params: {params}")))
    proc = cli("plan", "recipe.yaml", check=2)
    assert key in proc.stderr and "deploy" in proc.stderr and "Traceback" not in proc.stderr


REPO = Path(__file__).resolve().parents[2]


def _quickstart_deploy(extra: dict | None = None, recipe: str = "quickstart") -> str:
    """The quickstart's (or another recipe's) own `image` and `deploy` steps, on the stand-in model (training is
    tests/e2e's job)."""
    steps = yaml.safe_load((REPO / f"recipes/{recipe}.yaml").read_text())["steps"]
    image, deploy = dict(steps["image"]), dict(steps["deploy"])
    image["inputs"] = {"model": "model"}
    deploy["params"] = {**deploy["params"], **(extra or {})}
    recipe = yaml.safe_load(model_recipe(1))
    recipe["steps"].update(image=image, deploy=deploy)
    return yaml.safe_dump(recipe, sort_keys=False, width=200)


SCHEDULE = {"schedule": {"cron": "0 3 * * *", "recipe": "recipes/employment-monitor.yaml", "image": PINNED,
                         "promote": {"tag": "production", "artifact": "employment-monitor:candidate"},
                         "logs_claim": "serve-logs"}}


@pytest.fixture(scope="module")
def modelcar_deployed(tmp_path_factory) -> Path:
    """The quickstart's deploy step (a modelcar and a server image by digest) with a monitoring schedule."""
    root = tmp_path_factory.mktemp("modelcar")
    cli = Cli(Project(root / "project"), root / "store")
    cli.project.write("recipe.yaml", _quickstart_deploy(SCHEDULE))
    return Path(cli.build()["by_step"]["deploy"]["path"])


def _as_pods(deployed: Path, out: Path) -> list[Path]:
    """Knative's template and KServe's predictor written as core Pods (neither CRD is in the schemas)."""
    pods = {"knative": yaml.safe_load((deployed / "knative/service.yaml").read_text())["spec"]["template"]["spec"],
            "kserve": yaml.safe_load((deployed / "kserve/inferenceservice.yaml").read_text())["spec"]["predictor"]}
    files = []
    for name, spec in pods.items():
        spec = {k: v for k, v in spec.items() if k not in ("containerConcurrency", "timeoutSeconds", "minReplicas",
                                                           "maxReplicas", "scaleMetric", "scaleTarget")}
        files.append(out / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                                             "spec": spec}))
    return files


def test_quickstart_manifests_and_the_cronjob_are_valid_for_several_kubernetes_versions(modelcar_deployed, tmp_path):
    files = (sorted((modelcar_deployed / "kubernetes").glob("*.yaml")) + sorted(
        (modelcar_deployed / "monitor").glob("*.yaml")) + _as_pods(modelcar_deployed, tmp_path))
    assert [f.name for f in files] == ["deployment.yaml", "hpa.yaml", "pdb.yaml", "service.yaml", "cronjob.yaml",
                                       "store-pvc.yaml", "knative.yaml", "kserve.yaml"]
    for version in KUBERNETES:
        proc = _validate(version, *files)
        assert proc.returncode == 0, f"Kubernetes {version}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("recipe, batching", [("tweets", ["--max-batch-size", "16", "--batch-timeout", "0.01"]),
                                             ("tinylm", [])])
def test_tweets_and_tinylm_deploy_steps_write_valid_manifests(cli, tmp_path, recipe, batching):
    """The text classifier's pods batch as its package step says; the language model's have none to set."""
    cli.project.write("recipe.yaml", _quickstart_deploy(recipe=recipe))
    deployed = Path(cli.build()["by_step"]["deploy"]["path"])
    files = sorted((deployed / "kubernetes").glob("*.yaml")) + _as_pods(deployed, tmp_path)
    proc = _validate(KUBERNETES[-1], *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    server = yaml.safe_load((deployed / "kubernetes/deployment.yaml").read_text())["spec"]["template"]["spec"]
    command = server["containers"][0]["command"]
    assert command[:3] == ["modelbuild", "serve", "/models"] and command[9:] == batching
    assert json.loads((deployed / "deploy.json").read_text())["name"] == {"tweets": "tweets-sentiment"}.get(recipe,
                                                                                                            recipe)


def test_the_modelcar_is_copied_into_the_pod_and_mounted_by_kserve(modelcar_deployed):
    info = json.loads((modelcar_deployed / "deploy.json").read_text())
    qs = yaml.safe_load((REPO / "recipes/quickstart.yaml").read_text())["steps"]["deploy"]["params"]
    assert info["image"] == qs["server_image"] and info["server_image_placeholder"] is True
    assert info["model_image"].startswith(qs["repository"] + "@sha256:") and "oci:modelcar" in info["push"]
    pod = yaml.safe_load((modelcar_deployed / "kubernetes/deployment.yaml").read_text())["spec"]["template"]["spec"]
    init, server = pod["initContainers"][0], pod["containers"][0]
    assert init["image"] == info["model_image"] and init["command"][:3] == ["cp", "-R", "/models/."]
    assert init["securityContext"]["runAsNonRoot"] and server["securityContext"]["readOnlyRootFilesystem"]
    assert server["image"] == info["image"] and server["command"][:3] == ["modelbuild", "serve", "/models"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]
    assert {"name": "models", "emptyDir": {}} in pod["volumes"]
    kserve = yaml.safe_load((modelcar_deployed / "kserve/inferenceservice.yaml").read_text())
    container = kserve["spec"]["predictor"]["containers"][0]
    assert {"name": "STORAGE_URI", "value": f"oci://{info['model_image']}"} in container["env"]
    assert container["command"][2] == "/mnt/models"


def test_the_cronjob_runs_the_monitor_recipe_one_at_a_time_and_stops_on_exit_4(modelcar_deployed):
    cron = yaml.safe_load((modelcar_deployed / "monitor/cronjob.yaml").read_text())
    assert cron["kind"] == "CronJob" and cron["apiVersion"] == "batch/v1"
    assert cron["spec"]["schedule"] == "0 3 * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert 4 in job["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"]
    pod = job["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == PINNED and container["securityContext"]["runAsNonRoot"]
    assert "modelbuild build recipes/employment-monitor.yaml -k && modelbuild promote production " \
           "employment-monitor:candidate" in container["command"][-1]
    assert {"name": "MODELBUILD_STORE", "value": "/store"} in container["env"]
    claim = yaml.safe_load((modelcar_deployed / "monitor/store-pvc.yaml").read_text())["metadata"]["name"]
    assert {"name": "store", "persistentVolumeClaim": {"claimName": claim}} in pod["volumes"]
    assert {"name": "logs", "mountPath": "/serve-logs", "readOnly": True} in container["volumeMounts"]
    info = json.loads((modelcar_deployed / "deploy.json").read_text())
    assert info["schedule"]["exit_codes"]["4"] == "a drift alert or a failed gate"


@pytest.mark.parametrize("params, key, says", [
    ({"server_image": "registry.example.com/modelbuild-serve:1.0"}, "params.server_image", "pinned by digest"),
    ({"schedule": {**SCHEDULE["schedule"], "image": "registry.example.com/m:latest"}}, "params.schedule.image",
     "pinned by digest"),
    ({"schedule": {**SCHEDULE["schedule"], "cronn": "0 3 * * *"}}, "params.schedule.cronn", "did you mean"),
    ({"schedule": {"cron": "0 3 * * *", "image": PINNED}}, "params.schedule.recipe", "needs `recipe`"),
    ({"schedule": {**SCHEDULE["schedule"], "cron": "every night"}}, "params.schedule.cron", "not a cron"),
    ({"schedule": {**SCHEDULE["schedule"], "promote": "production"}}, "params.schedule.promote", "{tag: TAG"),
])
def test_bad_server_image_or_schedule_is_exit_2_naming_the_key(cli, params, key, says):
    cli.project.write("recipe.yaml", _quickstart_deploy(params))
    proc = cli("plan", "recipe.yaml", check=2)
    assert key in proc.stderr and "step 'deploy'" in proc.stderr and says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1
