"""InferenceService manifests and canary requests, with the Kubernetes API as the mocked boundary.

The fake API applies each merge patch the way the API server does (RFC 7386), so a sequence
of actions is checked request by request against the state it produces.
"""

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.deploy import (
    GROUP,
    MODEL_FORMAT,
    MODEL_VERSION_ANNOTATION,
    PLURAL,
    PREVIOUS_STORAGE_URI,
    SERVERLESS,
    VERSION,
    KServeApi,
    NotReadyError,
    ServiceSpec,
    build_inference_service,
    plan_deploy,
    plan_promote,
    plan_rollback,
    plan_set_traffic,
    status_kubectl,
    wait_ready_or_roll_back,
)
from kfp_lifecycle.pipelines import COMPILED_DIR

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "schemas" / "crds"
V1 = "s3://models/registry/churn/versions/1/"
V2 = "s3://models/registry/churn/versions/2/"
V3 = "s3://models/registry/churn/versions/3/"
NS = "kfp-lifecycle"


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
    """Records every call, reads included; holds one namespace's InferenceServices.

    Each call must address InferenceServices (group, version, plural) in `namespace`: a
    read or a write anywhere else fails the test where it happens.
    """

    def __init__(self, namespace="kfp-lifecycle"):
        self.namespace = namespace
        self.calls = []
        self.objects = {}

    def _check(self, group, version, namespace, plural):
        assert (group, version, plural) == (GROUP, VERSION, PLURAL), (group, version, plural)
        assert namespace == self.namespace, f"call to namespace {namespace!r}"

    @property
    def writes(self):
        return [call for call in self.calls if call[0] != "get"]

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        from kubernetes.client.exceptions import ApiException

        self._check(group, version, namespace, plural)
        self.calls.append(("get", group, version, namespace, plural, name))
        if name not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.objects[name])

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self._check(group, version, namespace, plural)
        self.calls.append(("create", group, version, namespace, plural, copy.deepcopy(body)))
        self.objects[body["metadata"]["name"]] = copy.deepcopy(body)
        return body

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self._check(group, version, namespace, plural)
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
    validator = jsonschema.validators.validator_for(schema)(schema)  # the schema checked once
    for percent in (None, 25):
        manifest = build_inference_service(ServiceSpec("churn", V1, canary_percent=percent))
        validator.validate(manifest)
    predictor = manifest["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 25
    assert predictor["serviceAccountName"] == "kfp-lifecycle-serving"
    assert predictor["model"] == {
        "modelFormat": {"name": MODEL_FORMAT},
        "runtime": NS,
        "storageUri": V1,
        "resources": {
            "limits": {"cpu": "2", "memory": "2Gi"},
            "requests": {"cpu": "500m", "memory": "1Gi"},
        },
    }
    annotations = manifest["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-tag-routing"] == "true"
    # canaryTrafficPercent works only in Knative mode: the manifest must not leave it to
    # the cluster's default, which is RawDeployment/Standard on many installs
    assert annotations["serving.kserve.io/deploymentMode"] == "Knative"
    older = build_inference_service(ServiceSpec("churn", V1, deployment_mode=SERVERLESS))
    assert older["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    validator.validate(older)


def test_first_deploy_creates_at_full_traffic(api):
    run(api, plan_deploy(ServiceSpec("churn", V1, canary_percent=10), api.get("churn", NS)))
    read, call = api.api.calls
    assert read == ("get", GROUP, VERSION, NS, PLURAL, "churn")
    assert call[:5] == ("create", GROUP, VERSION, NS, PLURAL)
    assert call[5] == build_inference_service(ServiceSpec("churn", V1))
    assert "canaryTrafficPercent" not in call[5]["spec"]["predictor"]


def test_update_is_a_canary_that_remembers_the_stable_model(api):
    run(api, plan_deploy(ServiceSpec("churn", V1), None))
    existing = api.get("churn", NS)
    run(api, plan_deploy(ServiceSpec("churn", V2, canary_percent=10), existing))
    assert api.api.calls[-1] == (
        "patch", GROUP, VERSION, NS, PLURAL, "churn",
        {
            "metadata": {"annotations": {
                PREVIOUS_STORAGE_URI: V1, "kfp-lifecycle.io/model-uri": V2,
            }},
            "spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": V2}}},
        },
    )  # fmt: skip


def test_set_traffic_and_promote(api):
    run(api, plan_deploy(ServiceSpec("churn", V1), None))
    run(
        api,
        plan_deploy(ServiceSpec("churn", V2, canary_percent=10), api.get("churn", NS)),
    )
    run(api, plan_set_traffic("churn", NS, 50))
    assert api.api.calls[-1][-1] == {"spec": {"predictor": {"canaryTrafficPercent": 50}}}
    run(api, plan_promote("churn", NS, api.get("churn", NS)))
    assert api.api.calls[-1][-1] == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    state = api.get("churn", NS)
    assert "canaryTrafficPercent" not in state["spec"]["predictor"]
    assert state["spec"]["predictor"]["model"]["storageUri"] == V2
    with pytest.raises(LifecycleError, match="no canary in progress"):
        plan_promote("churn", NS, state)


def test_rollback_during_a_canary_zeroes_it_then_reapplies_the_stable_model(api):
    run(api, plan_deploy(ServiceSpec("churn", V1), None))
    run(
        api,
        plan_deploy(ServiceSpec("churn", V2, canary_percent=25), api.get("churn", NS)),
    )
    run(api, plan_rollback("churn", NS, api.get("churn", NS)))
    first, second = (call[-1] for call in api.api.calls[-2:])
    assert first == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert second["spec"]["predictor"] == {"canaryTrafficPercent": 0, "model": {"storageUri": V1}}
    state = api.get("churn", NS)
    assert state["spec"]["predictor"]["canaryTrafficPercent"] == 0  # never just dropped
    assert state["spec"]["predictor"]["model"]["storageUri"] == V1
    assert PREVIOUS_STORAGE_URI not in state["metadata"]["annotations"]


def test_rollback_after_a_promotion_rolls_the_previous_model_out_again(api):
    run(api, plan_deploy(ServiceSpec("churn", V1), None))
    run(
        api,
        plan_deploy(ServiceSpec("churn", V2, canary_percent=10), api.get("churn", NS)),
    )
    run(api, plan_promote("churn", NS, api.get("churn", NS)))
    calls_before = len(api.api.writes)
    run(api, plan_rollback("churn", NS, api.get("churn", NS)))
    (call,) = api.api.writes[calls_before:]
    assert call[-1] == {
        "metadata": {"annotations": {"kfp-lifecycle.io/model-uri": V1, PREVIOUS_STORAGE_URI: None}},
        "spec": {"predictor": {"model": {"storageUri": V1}}},
    }
    state = api.get("churn", NS)
    assert state["spec"]["predictor"]["model"]["storageUri"] == V1
    with pytest.raises(LifecycleError, match="no previous storageUri"):
        plan_rollback("churn", NS, state)


def test_bad_requests_are_refused_before_any_call(api):
    with pytest.raises(LifecycleError, match=r"0\.\.100"):
        plan_set_traffic("churn", NS, 120)
    run(api, plan_deploy(ServiceSpec("churn", V1), None))
    with pytest.raises(LifecycleError, match="already serves"):
        plan_deploy(ServiceSpec("churn", V1, canary_percent=10), api.get("churn", NS))
    assert len(api.api.writes) == 1


def test_every_request_prints_its_kubectl_equivalent():
    (create,) = plan_deploy(ServiceSpec("churn", V1), None)
    assert create.kubectl().startswith("kubectl -n kfp-lifecycle apply -f - <<'EOF'")
    (patch,) = plan_set_traffic("churn", NS, 25)
    assert patch.kubectl() == (
        "kubectl -n kfp-lifecycle patch isvc churn --type merge "
        """-p '{"spec":{"predictor":{"canaryTrafficPercent":25}}}'"""
    )


def _canary_of_v2(api):
    """v1 served at 100%, then v2 as a canary at 10%."""
    run(api, plan_deploy(ServiceSpec("churn", V1), None))
    run(api, plan_deploy(ServiceSpec("churn", V2, canary_percent=10), api.get("churn", NS)))


def test_a_deploy_during_a_canary_is_refused_and_sends_nothing(api):
    _canary_of_v2(api)
    writes = len(api.api.writes)
    with pytest.raises(LifecycleError, match=rf"a canary of {V2} is in progress at 10%.*{V1}"):
        run(api, plan_deploy(ServiceSpec("churn", V3, canary_percent=10), api.get("churn", NS)))
    assert len(api.api.writes) == writes
    with pytest.raises(LifecycleError, match=rf"already serves {V2} as a canary at 10%"):
        plan_deploy(ServiceSpec("churn", V2), api.get("churn", NS))


def test_a_forced_deploy_replaces_the_canary_and_rollback_returns_to_the_stable_model(api):
    _canary_of_v2(api)
    spec = ServiceSpec("churn", V3, canary_percent=10)
    run(api, plan_deploy(spec, api.get("churn", NS), force=True))
    assert api.api.writes[-1][-1]["metadata"]["annotations"][PREVIOUS_STORAGE_URI] == V1
    run(api, plan_rollback("churn", NS, api.get("churn", NS)))
    state = api.get("churn", NS)["spec"]["predictor"]
    assert (state["canaryTrafficPercent"], state["model"]["storageUri"]) == (0, V1)


def test_a_new_canary_after_a_rollback_or_a_promotion_is_allowed(api):
    _canary_of_v2(api)
    run(api, plan_rollback("churn", NS, api.get("churn", NS)))  # settled: v1 again, field at 0
    run(api, plan_deploy(ServiceSpec("churn", V3, canary_percent=20), api.get("churn", NS)))
    assert api.api.writes[-1][-1]["metadata"]["annotations"][PREVIOUS_STORAGE_URI] == V1
    run(api, plan_promote("churn", NS, api.get("churn", NS)))
    run(api, plan_deploy(ServiceSpec("churn", V2, canary_percent=20), api.get("churn", NS)))
    assert api.api.writes[-1][-1]["metadata"]["annotations"][PREVIOUS_STORAGE_URI] == V3


class Clock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def _not_ready(api):
    api.api.objects["churn"]["status"] = {
        "conditions": [{"type": "Ready", "status": "False", "message": "image pull backoff"}]
    }


def test_a_canary_that_is_not_ready_in_time_is_rolled_back(api):
    _canary_of_v2(api)
    _not_ready(api)
    writes = len(api.api.writes)
    message = rf"not ready after 30s: Ready=False image pull backoff; rolled back: {V1} serves"
    with pytest.raises(LifecycleError, match=message):
        wait_ready_or_roll_back(api, "churn", NS, 30, 10, Clock())
    assert api.api.writes[writes:] == [
        ("patch", GROUP, VERSION, NS, PLURAL, "churn",
         {"spec": {"predictor": {"canaryTrafficPercent": 0}}}),
        ("patch", GROUP, VERSION, NS, PLURAL, "churn",
         {"metadata": {"annotations": {MODEL_VERSION_ANNOTATION: V1, PREVIOUS_STORAGE_URI: None}},
          "spec": {"predictor": {"canaryTrafficPercent": 0, "model": {"storageUri": V1}}}}),
    ]  # fmt: skip


def test_a_first_deploy_that_is_not_ready_says_there_is_nothing_to_roll_back_to(api):
    run(api, plan_deploy(ServiceSpec("churn", V1), None))
    _not_ready(api)
    with pytest.raises(NotReadyError, match="a first deploy has no previous version to roll back"):
        wait_ready_or_roll_back(api, "churn", NS, 30, 10, Clock())
    assert [call[0] for call in api.api.writes] == ["create"]


def _compiled(name):
    return next(yaml.safe_load_all((COMPILED_DIR / f"{name}.yaml").read_text()))


CANARY_ONLY = "inputs.parameter_values['pipelinechannel--deploy-action'] == 'canary'"


def _deployment_dag_runs_the_rollout_only_for_a_canary(spec, dag):
    (branch,) = [task for task in dag["tasks"].values() if "triggerPolicy" in task]
    assert branch["triggerPolicy"]["condition"] == CANARY_ONLY
    assert "rollout" in spec["components"][branch["componentRef"]["name"]]["dag"]["tasks"]
    action = dag["tasks"]["wait-ready"]["inputs"]["parameters"]["action"]
    assert action["taskOutputParameter"] == {
        "outputParameterKey": "action",
        "producerTask": "deploy",
    }


def test_compiled_pipelines_skip_the_canary_when_the_deploy_changed_nothing():
    """deploy says created, canary or unchanged; only a canary is rolled out."""
    deployment = _compiled("deployment")
    _deployment_dag_runs_the_rollout_only_for_a_canary(deployment, deployment["root"]["dag"])
    monitoring = _compiled("monitoring")  # retraining runs the deployment pipeline inside
    _deployment_dag_runs_the_rollout_only_for_a_canary(
        monitoring, monitoring["components"]["comp-deployment"]["dag"]
    )


def _readme_section(title):
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    return text[start : text.find("\n## ", start + 1)]


def _shell_commands(block):
    """Each command of a shell block as tokens: continuations and quoted newlines joined."""
    commands, current = [], ""
    for line in block.replace("\\\n", " ").splitlines():
        current += line + "\n"
        if current.count("'") % 2 == 0:
            commands += [tokens] if (tokens := shlex.split(current, comments=True)) else []
            current = ""
    return commands


def test_the_readme_kubectl_way_is_what_lifecycle_sends():
    section = _readme_section("Deploy with KServe and roll out as a canary")
    (manifest,) = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)]
    assert manifest == build_inference_service(ServiceSpec("churn", V1))
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    commands = [c for block in blocks for c in _shell_commands(block) if c[0] == "kubectl"]
    (canary,) = plan_deploy(ServiceSpec("churn", V2, canary_percent=10), manifest)
    during = merge_patch(manifest, canary.body)
    expected = [
        canary,
        *plan_set_traffic("churn", NS, 50),
        *plan_promote("churn", NS, during),
        *plan_rollback("churn", NS, during),
    ]
    assert commands[0] == shlex.split(status_kubectl("churn", NS))
    assert len(commands[1:]) == len(expected)
    for command, request in zip(commands[1:], expected, strict=True):
        wanted = shlex.split(request.kubectl())
        assert command[:-1] == wanted[:-1], request.note  # all but the -p body
        assert json.loads(command[-1]) == request.body, request.note
