"""InferenceService manifests and canary requests, with the Kubernetes API as the mocked boundary.

The fake API applies each merge patch the way the API server does (RFC 7386), so a sequence
of actions is checked request by request against the state it produces.
"""

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from kfp_lifecycle.deploy import (
    GROUP,
    MODEL_FORMAT,
    PLURAL,
    PREVIOUS_STORAGE_URI,
    VERSION,
    KServeApi,
    ServiceSpec,
    build_inference_service,
    plan_deploy,
    plan_promote,
    plan_rollback,
    plan_set_traffic,
)
from kfp_lifecycle.errors import LifecycleError

CRDS = Path(__file__).resolve().parents[1] / "schemas" / "crds"
V1 = "s3://models/registry/churn/versions/1/"
V2 = "s3://models/registry/churn/versions/2/"


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeCustomObjects:
    """Records every call; holds one namespace's InferenceServices like the API server."""

    def __init__(self):
        self.calls = []
        self.objects = {}

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        from kubernetes.client.exceptions import ApiException

        if name not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.objects[name])

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", group, version, namespace, plural, copy.deepcopy(body)))
        self.objects[body["metadata"]["name"]] = copy.deepcopy(body)
        return body

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.calls.append(("patch", group, version, namespace, plural, name, copy.deepcopy(body)))
        self.objects[name] = merge_patch(self.objects[name], body)
        return self.objects[name]


@pytest.fixture
def api():
    return KServeApi(FakeCustomObjects())


def run(api, requests):
    for request in requests:
        api.apply(request)


def test_manifest_validates_against_the_kserve_crd_schema():
    schema = json.loads((CRDS / "serving.kserve.io" / "inferenceservice_v1beta1.json").read_text())
    for percent in (None, 25):
        manifest = build_inference_service(ServiceSpec("churn", V1, canary_percent=percent))
        jsonschema.validate(manifest, schema)
    predictor = manifest["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 25
    assert predictor["serviceAccountName"] == "kfp-lifecycle-serving"
    assert predictor["model"] == {
        "modelFormat": {"name": MODEL_FORMAT},
        "runtime": "kfp-lifecycle",
        "storageUri": V1,
        "resources": {
            "limits": {"cpu": "2", "memory": "2Gi"},
            "requests": {"cpu": "500m", "memory": "1Gi"},
        },
    }
    assert manifest["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"


def test_first_deploy_creates_at_full_traffic(api):
    run(api, plan_deploy(ServiceSpec("churn", V1, canary_percent=10), api.get("churn", "ml")))
    (call,) = api.api.calls
    assert call[:5] == ("create", GROUP, VERSION, "kfp-lifecycle", PLURAL)
    assert call[5] == build_inference_service(ServiceSpec("churn", V1))
    assert "canaryTrafficPercent" not in call[5]["spec"]["predictor"]


def test_update_is_a_canary_that_remembers_the_stable_model(api):
    run(api, plan_deploy(ServiceSpec("churn", V1), None))
    existing = api.get("churn", "kfp-lifecycle")
    run(api, plan_deploy(ServiceSpec("churn", V2, canary_percent=10), existing))
    assert api.api.calls[-1] == (
        "patch", GROUP, VERSION, "kfp-lifecycle", PLURAL, "churn",
        {
            "metadata": {"annotations": {
                PREVIOUS_STORAGE_URI: V1, "kfp-lifecycle.io/model-uri": V2,
            }},
            "spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": V2}}},
        },
    )  # fmt: skip


def test_set_traffic_and_promote(api):
    run(api, plan_deploy(ServiceSpec("churn", V1), None))
    run(api, plan_deploy(ServiceSpec("churn", V2, canary_percent=10), api.get("churn", "x")))
    run(api, plan_set_traffic("churn", "kfp-lifecycle", 50))
    assert api.api.calls[-1][-1] == {"spec": {"predictor": {"canaryTrafficPercent": 50}}}
    run(api, plan_promote("churn", "kfp-lifecycle", api.get("churn", "x")))
    assert api.api.calls[-1][-1] == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    state = api.get("churn", "x")
    assert "canaryTrafficPercent" not in state["spec"]["predictor"]
    assert state["spec"]["predictor"]["model"]["storageUri"] == V2
    with pytest.raises(LifecycleError, match="no canary in progress"):
        plan_promote("churn", "kfp-lifecycle", state)


def test_rollback_during_a_canary_zeroes_it_then_reapplies_the_stable_model(api):
    run(api, plan_deploy(ServiceSpec("churn", V1), None))
    run(api, plan_deploy(ServiceSpec("churn", V2, canary_percent=25), api.get("churn", "x")))
    run(api, plan_rollback("churn", "kfp-lifecycle", api.get("churn", "x")))
    first, second = (call[-1] for call in api.api.calls[-2:])
    assert first == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert second["spec"]["predictor"] == {"canaryTrafficPercent": 0, "model": {"storageUri": V1}}
    state = api.get("churn", "x")
    assert state["spec"]["predictor"]["canaryTrafficPercent"] == 0  # never just dropped
    assert state["spec"]["predictor"]["model"]["storageUri"] == V1
    assert PREVIOUS_STORAGE_URI not in state["metadata"]["annotations"]


def test_rollback_after_a_promotion_rolls_the_previous_model_out_again(api):
    run(api, plan_deploy(ServiceSpec("churn", V1), None))
    run(api, plan_deploy(ServiceSpec("churn", V2, canary_percent=10), api.get("churn", "x")))
    run(api, plan_promote("churn", "kfp-lifecycle", api.get("churn", "x")))
    calls_before = len(api.api.calls)
    run(api, plan_rollback("churn", "kfp-lifecycle", api.get("churn", "x")))
    (call,) = api.api.calls[calls_before:]
    assert call[-1] == {
        "metadata": {"annotations": {"kfp-lifecycle.io/model-uri": V1, PREVIOUS_STORAGE_URI: None}},
        "spec": {"predictor": {"model": {"storageUri": V1}}},
    }
    state = api.get("churn", "x")
    assert state["spec"]["predictor"]["model"]["storageUri"] == V1
    with pytest.raises(LifecycleError, match="no previous storageUri"):
        plan_rollback("churn", "kfp-lifecycle", state)


def test_bad_requests_are_refused_before_any_call(api):
    with pytest.raises(LifecycleError, match=r"0\.\.100"):
        plan_set_traffic("churn", "kfp-lifecycle", 120)
    run(api, plan_deploy(ServiceSpec("churn", V1), None))
    with pytest.raises(LifecycleError, match="already serves"):
        plan_deploy(ServiceSpec("churn", V1, canary_percent=10), api.get("churn", "x"))
    assert len(api.api.calls) == 1


def test_every_request_prints_its_kubectl_equivalent():
    (create,) = plan_deploy(ServiceSpec("churn", V1), None)
    assert create.kubectl().startswith("kubectl -n kfp-lifecycle apply -f - <<'EOF'")
    (patch,) = plan_set_traffic("churn", "kfp-lifecycle", 25)
    assert patch.kubectl() == (
        "kubectl -n kfp-lifecycle patch isvc churn --type merge "
        """-p '{"spec":{"predictor":{"canaryTrafficPercent":25}}}'"""
    )
