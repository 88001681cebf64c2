"""The Dask operator's manifests and the pipeline's RBAC: pinned, rendered, validated offline."""

import importlib.util
import json

import kubernetes_validate
import pytest
from test_manifests import (
    KUBERNETES_VERSION,
    MANIFESTS,
    OVERLAYS,
    ROOT,
    VERSIONS,
    assert_hardened,
    render,
    render_path,
)

from kfp_lifecycle.dask_cluster import API_RULES, GROUP, ClusterSpec

CRD = MANIFESTS / "dask-operator" / "crds" / "daskcluster.yaml"
SCHEMA = ROOT / "schemas" / "crds" / "kubernetes.dask.org" / "daskcluster_v1.json"


def _converter():
    spec = importlib.util.spec_from_file_location(
        "crd_to_jsonschema", ROOT / "schemas" / "crd_to_jsonschema.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def operator(tmp_path_factory) -> list[dict]:
    return render_path("dask-operator", tmp_path_factory.mktemp("dask-operator"))


def _one(objects: list[dict], kind: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def test_the_operator_validates_runs_hardened_and_is_the_pinned_release(operator):
    for obj in operator:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert_hardened(operator)
    deployment = _one(operator, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    pinned = VERSIONS["DASK_OPERATOR_VERSION"]
    assert container["image"] == f"ghcr.io/dask/dask-kubernetes-operator:{pinned}"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == pinned
    assert deployment["metadata"]["namespace"] == "dask-operator"
    # it watches every namespace, so DaskClusters in kfp-lifecycle are served
    assert "--all-namespaces" in container["args"]
    binding = _one(operator, "ClusterRoleBinding")
    (subject,) = binding["subjects"]
    assert subject == {
        "kind": "ServiceAccount",
        "name": deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "namespace": "dask-operator",
    }


def test_the_four_crds_are_installed_at_v1(operator):
    crds = {
        o["spec"]["names"]["kind"]: o for o in operator if o["kind"] == "CustomResourceDefinition"
    }
    assert set(crds) == {"DaskCluster", "DaskWorkerGroup", "DaskJob", "DaskAutoscaler"}
    for crd in crds.values():
        assert crd["spec"]["group"] == GROUP
        assert [(v["name"], v["served"], v["storage"]) for v in crd["spec"]["versions"]] == [
            ("v1", True, True)
        ]


def test_the_committed_schema_is_generated_from_the_installed_crd():
    assert SCHEMA.read_text() == _converter().render(CRD, "v1"), (
        "schemas/crds/kubernetes.dask.org/daskcluster_v1.json is stale: "
        "python schemas/crd_to_jsonschema.py manifests/dask-operator/crds/daskcluster.yaml v1"
    )


def test_the_converter_is_strict_below_the_root_and_refuses_other_documents():
    converter = _converter()
    crd = {
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.org"},
        "spec": {
            "versions": [
                {
                    "name": "v1",
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "port": {"x-kubernetes-int-or-string": True},
                                        "free": {
                                            "type": "object",
                                            "properties": {"a": {"type": "string"}},
                                            "x-kubernetes-preserve-unknown-fields": True,
                                        },
                                    },
                                }
                            },
                        }
                    },
                }
            ]
        },
    }
    schema = converter.crd_schema(crd, "v1")
    assert "additionalProperties" not in schema  # apiVersion, kind, metadata stay allowed
    spec = schema["properties"]["spec"]
    assert spec["additionalProperties"] is False
    assert spec["properties"]["port"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert "additionalProperties" not in spec["properties"]["free"]
    with pytest.raises(ValueError, match=r"has no version 'v2' \(has \['v1'\]\)"):
        converter.crd_schema(crd, "v2")
    with pytest.raises(ValueError, match="not a CustomResourceDefinition"):
        converter.crd_schema({"kind": "Deployment"}, "v1")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pipeline_runner_may_make_exactly_the_calls_the_code_makes(overlay, tmp_path):
    rendered = render(overlay, tmp_path)
    (role,) = [o for o in rendered if o["kind"] == "Role" and "dask" in o["metadata"]["name"]]
    assert role["rules"] == [
        {"apiGroups": [group], "resources": [resource], "verbs": list(verbs)}
        for group, resource, verbs in API_RULES
    ]
    # where the clusters go by default is where the Role applies
    assert role["metadata"]["namespace"] == ClusterSpec(name="x").namespace
    (binding,) = [
        o
        for o in rendered
        if o["kind"] == "RoleBinding" and o["roleRef"]["name"] == role["metadata"]["name"]
    ]
    (subject,) = binding["subjects"]
    assert (subject["name"], subject["namespace"]) == ("pipeline-runner", "kubeflow")
    for obj in (role, binding):
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_dask_cluster_schema_is_draft_4_json_like_the_others():
    schema = json.loads(SCHEMA.read_text())
    assert schema["type"] == "object"
    assert set(schema["properties"]) >= {"spec", "status"}
