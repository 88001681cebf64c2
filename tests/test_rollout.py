"""Rollout strategies in both KServe modes, with the Kubernetes API as the mocked boundary.

Each strategy is checked request by request against the state the fake API server builds
from RFC 7386 merge patches, including a failure half-way (rolled back, nothing left at N%).
Every InferenceService written, in both modes, validates against the shared CRD schema
generated from KServe's own CRD (it has spec.canary).
"""

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from test_deploy import FakeCustomObjects, merge_patch

from kfp_lifecycle import deploy, rollout
from kfp_lifecycle.canary import (
    PROMOTE,
    ROLLBACK,
    CanaryOptions,
    RevisionStats,
    Verdict,
    run_rollout,
)
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.deploy import KNATIVE, STANDARD, KServeApi, ServiceSpec

ROOT = Path(__file__).resolve().parents[1]
REPO_SCHEMA = ROOT / "schemas/crds/serving.kserve.io/inferenceservice_v1beta1.json"
SHARED_SCHEMA = ROOT.parent / "shared/schemas/crds/serving.kserve.io/inferenceservice_v1beta1.json"
V1 = "s3://models/registry/churn/versions/1/"
V2 = "s3://models/registry/churn/versions/2/"
V3 = "s3://models/registry/churn/versions/3/"
NS = "kfp-lifecycle"


@pytest.fixture(scope="module")
def schema():
    """The shared schema when this checkout sits beside it, else the repository's copy."""
    path = SHARED_SCHEMA if SHARED_SCHEMA.exists() else REPO_SCHEMA
    found = json.loads(path.read_text())
    assert "canary" in found["properties"]["spec"]["properties"], f"{path} lacks spec.canary"
    return jsonschema.validators.validator_for(found)(found)  # checked once, not per manifest


def test_the_repository_schema_is_the_shared_one():
    if not SHARED_SCHEMA.exists():
        pytest.skip(f"no shared schemas beside this checkout ({SHARED_SCHEMA})")
    assert json.loads(REPO_SCHEMA.read_text()) == json.loads(SHARED_SCHEMA.read_text())


class FakeCore:
    def __init__(self, data):
        self.data, self.calls = data, []

    def read_namespaced_config_map(self, name, namespace):
        self.calls.append((name, namespace))
        if self.data is None:
            from kubernetes.client.exceptions import ApiException

            raise ApiException(status=403, reason="Forbidden")
        return {"data": self.data}


def new_api(core=None):
    return KServeApi(FakeCustomObjects(), core)


def spec(uri, mode=STANDARD, **extra):
    return ServiceSpec("churn", uri, deployment_mode=mode, **extra)


def create(api, uri, mode):
    for request in deploy.plan_deploy(spec(uri, mode), None):
        api.apply(request)
    return api.get("churn", NS)


def apply(api, requests):
    for request in requests:
        api.apply(request)
    return api.get("churn", NS)


def every_written_object_validates(api, schema):
    """Replays the writes: the created object and the state after each patch are valid."""
    state = None
    for call in api.api.writes:
        state = copy.deepcopy(call[-1]) if call[0] == "create" else merge_patch(state, call[-1])
        schema.validate(state)
    return state


def test_standard_mode_canary_names_variants_and_promotes_by_renaming(schema):
    api = new_api()
    first = create(api, V1, STANDARD)
    assert first["metadata"]["annotations"][deploy.DEPLOYMENT_MODE_ANNOTATION] == "Standard"
    assert first["spec"]["predictor"]["name"] == "v1"
    assert "canaryTrafficPercent" not in first["spec"]["predictor"]

    state = apply(api, deploy.plan_deploy(spec(V2, canary_percent=20), first))
    (variant,) = state["spec"]["canary"]
    assert variant == {
        "predictor": {
            "model": {
                "modelFormat": {"name": deploy.MODEL_FORMAT},
                "resources": {
                    "limits": {"cpu": "2", "memory": "2Gi"},
                    "requests": {"cpu": "500m", "memory": "1Gi"},
                },
                "runtime": deploy.RUNTIME,
                "storageUri": V2,
                "name": "",  # required by the CRD on a canary; KServe's e2e sends "" too
            },
            "name": "v2",
            "serviceAccountName": "kfp-lifecycle-serving",
        },
        "trafficPercent": 20,
    }  # no replica fields: KServe's webhook refuses autoscaling on a canary
    assert deploy.canary_in_progress(state) and deploy.canary_percent(state) == 20
    with pytest.raises(LifecycleError, match="in progress at 20%"):
        deploy.plan_deploy(spec(V3), state)

    state = apply(api, deploy.plan_set_traffic("churn", NS, 50, state))
    assert state["spec"]["canary"][0]["trafficPercent"] == 50
    state = apply(api, deploy.plan_promote("churn", NS, state))
    assert state["spec"]["predictor"]["name"] == "v2"  # renamed, as KServe documents
    assert state["spec"]["predictor"]["model"]["storageUri"] == V2
    assert state["spec"]["canary"] == []
    assert deploy.previous_storage_uri(state) == V1
    assert not deploy.canary_in_progress(state)
    assert api.api.writes[-1][-1] == {
        "metadata": {
            "annotations": {deploy.PREVIOUS_STORAGE_URI: V1, deploy.MODEL_VERSION_ANNOTATION: V2}
        },
        "spec": {"predictor": {"name": "v2", "model": {"storageUri": V2}}, "canary": []},
    }
    # after a promotion, rollback re-applies the previous model under its own name
    state = apply(api, deploy.plan_rollback("churn", NS, state))
    assert (state["spec"]["predictor"]["name"], deploy.storage_uri_of(state)) == ("v1", V1)
    every_written_object_validates(api, schema)


def test_standard_rollback_during_a_canary_removes_the_variant_in_one_patch(schema):
    api = new_api()
    state = apply(api, deploy.plan_deploy(spec(V2), create(api, V1, STANDARD)))
    requests = deploy.plan_rollback("churn", NS, state)
    assert [r.body for r in requests] == [{"spec": {"canary": []}}]
    state = apply(api, requests)
    assert deploy.storage_uri_of(state) == V1 and not deploy.canary_in_progress(state)
    every_written_object_validates(api, schema)


def test_knative_manifests_and_scale_to_zero_validate(schema):
    api = new_api()
    state = create(api, V1, KNATIVE)
    state = apply(api, deploy.plan_deploy(spec(V2, KNATIVE, canary_percent=25), state))
    assert state["spec"]["predictor"]["canaryTrafficPercent"] == 25
    every_written_object_validates(api, schema)
    zero = deploy.build_inference_service(spec(V1, KNATIVE, min_replicas=0))
    assert zero["spec"]["predictor"]["minReplicas"] == 0
    schema.validate(zero)
    with pytest.raises(LifecycleError, match=r"scale to zero .* needs Knative mode"):
        deploy.build_inference_service(spec(V1, STANDARD, min_replicas=0))
    with pytest.raises(LifecycleError, match="not canaryTrafficPercent"):
        deploy.build_inference_service(spec(V1, STANDARD, canary_percent=10))


@pytest.mark.parametrize(
    ("requested", "live", "config", "expected"),
    [
        (None, None, {"deploy": '{"defaultDeploymentMode": "RawDeployment"}'}, STANDARD),
        (None, None, {"deploy": '{"defaultDeploymentMode": "Serverless"}'}, KNATIVE),
        (None, None, None, KNATIVE),  # the ConfigMap cannot be read: Knative
        ("standard", None, {"deploy": '{"defaultDeploymentMode": "Knative"}'}, STANDARD),
        (None, STANDARD, {"deploy": '{"defaultDeploymentMode": "Knative"}'}, STANDARD),
    ],
)
def test_the_mode_comes_from_the_flag_the_service_or_the_cluster(requested, live, config, expected):
    core = FakeCore(config)
    api = new_api(core)
    existing = create(api, V1, live) if live else None
    cluster = api.cluster_default_mode() if existing is None and not requested else None
    assert deploy.choose_mode(requested, existing, cluster) == expected


def test_a_live_service_keeps_its_mode():
    api = new_api()
    existing = create(api, V1, STANDARD)
    with pytest.raises(LifecycleError, match="runs in Standard mode; --mode knative"):
        deploy.choose_mode("knative", existing, None)
    with pytest.raises(LifecycleError, match="unknown KServe deployment mode 'edge'"):
        deploy.choose_mode("edge", None, None)


def _verdicts(*decisions):
    stats = RevisionStats("v", 100, 0.0, 0.01, 0.02)
    found = iter(decisions)
    return lambda: Verdict(next(found), [], stats, stats)


@pytest.mark.parametrize(
    ("decisions", "outcome"), [((PROMOTE,) * 3, "promoted"), ((ROLLBACK,), "rolled back")]
)
def test_the_canary_analysis_drives_standard_mode_too(decisions, outcome):
    api = new_api()
    apply(api, deploy.plan_deploy(spec(V2), create(api, V1, STANDARD)))
    result = run_rollout(
        api, "churn", NS, CanaryOptions(), _verdicts(*decisions), lambda s: None, lambda m: None
    )
    assert result.outcome == outcome
    state = api.get("churn", NS)
    assert state["spec"]["canary"] == []
    served = V2 if outcome == "promoted" else V1
    assert deploy.storage_uri_of(state) == served
    if outcome == "promoted":
        shares = [c[-1]["spec"]["canary"][0]["trafficPercent"] for c in api.api.writes[2:4]]
        assert shares == [10, 50]


class Clock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def ready(service, canaries=True):
    """The status KServe reports once every Deployment is up (kserve#5672's conditions)."""
    conditions = [{"type": "Ready", "status": "True"}]
    names = [v["predictor"]["name"] for v in deploy.variants_of(service)]
    if names and canaries:
        conditions.append({"type": "CanaryPredictorReady", "status": "True"})
    status = {"conditions": conditions, "canaryStatuses": [
        {"name": n, "ready": canaries, "trafficPercent": 0} for n in names
    ]}  # fmt: skip
    return {**service, "status": status}


class StatusServer(FakeCustomObjects):
    """Reports readiness (or not) on reads, as the controller would."""

    def __init__(self, canaries_ready=True):
        super().__init__()
        self.canaries_ready = canaries_ready

    def get_namespaced_custom_object(self, *args):
        found = super().get_namespaced_custom_object(*args)
        return ready(found, self.canaries_ready)


@pytest.mark.parametrize("mode", [STANDARD, KNATIVE])
def test_blue_green_comes_up_at_zero_then_switches_in_one_patch(mode, schema):
    fake = StatusServer()
    api = KServeApi(fake)
    create(api, V1, mode)
    seen = []
    service = rollout.run_blue_green(
        api, spec(V2, mode), seen.append, clock=Clock(), log=lambda m: None
    )
    start, switch = [call[-1] for call in fake.writes[1:]]
    assert seen and seen[0]["metadata"]["name"] == "churn"  # smoke ran before the switch
    if mode == STANDARD:
        assert start["spec"]["canary"][0]["trafficPercent"] == 0
        assert start["metadata"]["annotations"][deploy.STRATEGY_ANNOTATION] == "bluegreen"
        assert switch["spec"]["canary"][0]["trafficPercent"] == 100
        assert service["spec"]["predictor"]["model"]["storageUri"] == V1  # blue still up
        assert rollout.green_url(service, V2) == (
            "http://churn-v2-predictor.kfp-lifecycle.svc.cluster.local"
        )
    else:
        assert start["spec"]["predictor"] == {
            "canaryTrafficPercent": 0,
            "model": {"storageUri": V2},
        }
        assert switch == {"spec": {"predictor": {"canaryTrafficPercent": 100}}}
    # instant rollback: one patch sends everything back to blue (Knative: 0% first)
    back = deploy.plan_rollback("churn", NS, api.get("churn", NS))
    settled = {"annotations": {deploy.STRATEGY_ANNOTATION: None}}
    instant = {"spec": {"canary": []}, "metadata": settled}
    assert back[0].body in (instant, {"spec": {"predictor": {"canaryTrafficPercent": 0}}})
    # confirm: promote clears the strategy mark
    state = apply(api, deploy.plan_promote("churn", NS, api.get("churn", NS)))
    assert deploy.strategy_of(state) is None and deploy.storage_uri_of(state) == V2
    every_written_object_validates(api, schema)


def test_blue_green_failing_its_smoke_request_is_rolled_back():
    fake = StatusServer()
    api = KServeApi(fake)
    create(api, V1, STANDARD)

    def smoke(service):
        raise LifecycleError("smoke request to http://churn-v2-predictor: 500")

    with pytest.raises(LifecycleError, match=r"stopped before the switch: smoke .* rolled back"):
        rollout.run_blue_green(api, spec(V2), smoke, clock=Clock(), log=lambda m: None)
    bodies = [call[-1] for call in fake.writes[1:]]
    assert [b["spec"]["canary"] for b in bodies] == [[deploy.build_variant(spec(V2), V2, 0)], []]
    state = fake.objects["churn"]
    assert state["spec"]["canary"] == [] and deploy.strategy_of(state) is None


def test_blue_green_not_ready_in_time_is_rolled_back_and_never_switched():
    fake = StatusServer(canaries_ready=False)
    api = KServeApi(fake)
    create(api, V1, STANDARD)
    with pytest.raises(LifecycleError, match=r"not ready after 30s.*rolled back"):
        rollout.run_blue_green(api, spec(V2), lambda s: None, 30, 5, Clock(), lambda m: None)
    percents = [c[-1]["spec"]["canary"] for c in fake.writes[1:]]
    assert percents == [[deploy.build_variant(spec(V2), V2, 0)], []]  # never at 100%


class FailingOn(FakeCustomObjects):
    """Refuses the n-th write (counting from 1) with an API error."""

    def __init__(self, failing):
        super().__init__()
        self.failing, self.count = failing, 0

    def patch_namespaced_custom_object(self, *args):
        self.count += 1
        if self.count == self.failing:
            from kubernetes.client.exceptions import ApiException

            raise ApiException(status=500, reason="Internal Server Error")
        return super().patch_namespaced_custom_object(*args)


def test_a_failure_half_way_rolls_back_and_a_first_failure_changes_nothing():
    fake = FailingOn(failing=2)  # the switch fails after green came up
    api = KServeApi(fake)
    create(api, V1, STANDARD)
    fake.count = 0
    existing = api.get("churn", NS)
    requests = [*rollout.plan_blue_green(spec(V2), existing)]
    requests += rollout.plan_switch("churn", NS, merge_patch(existing, requests[0].body))
    with pytest.raises(
        LifecycleError, match=r"failed: .*500.*rolled back: .*versions/1/ serves again"
    ):
        rollout.apply_all(api, requests, lambda m: None)
    assert fake.objects["churn"]["spec"]["canary"] == []
    fake.failing, fake.count = 1, 0
    with pytest.raises(LifecycleError, match="patch kfp-lifecycle/churn failed: 500"):
        rollout.apply_all(api, requests, lambda m: None)
    assert fake.objects["churn"]["spec"]["canary"] == []


def test_dark_launch_is_a_standard_variant_at_zero(schema):
    api = new_api()
    state = apply(api, rollout.plan_dark_launch(spec(V2), create(api, V1, STANDARD)))
    assert [(v["predictor"]["name"], v["trafficPercent"]) for v in state["spec"]["canary"]] == [
        ("v2", 0)
    ]
    assert deploy.strategy_of(state) == "dark"
    knative = create(new_api(), V1, KNATIVE)
    with pytest.raises(LifecycleError, match="dark launch needs Standard mode"):
        rollout.plan_dark_launch(spec(V2, KNATIVE), knative)
    every_written_object_validates(api, schema)


def test_one_rollout_at_a_time_names_the_one_running():
    api = new_api()
    state = apply(api, rollout.plan_dark_launch(spec(V2), create(api, V1, STANDARD)))
    for attempt in (
        lambda: rollout.plan_blue_green(spec(V3), state),
        lambda: rollout.plan_fixed_shares(spec(V1), state, {V3: 50}, rollout.ABTEST),
        lambda: deploy.plan_deploy(spec(V3), state),
    ):
        with pytest.raises(LifecycleError, match=r"a dark of s3://.*versions/2/ is in progress"):
            attempt()


def test_fixed_shares_take_several_variants_in_standard_mode_and_one_in_knative(schema):
    api = new_api()
    existing = create(api, V1, STANDARD)
    state = apply(api, rollout.plan_fixed_shares(spec(V1), existing, {V2: 30, V3: 30}, "abtest"))
    shares = [(v["predictor"]["name"], v["trafficPercent"]) for v in state["spec"]["canary"]]
    assert shares == [("v2", 30), ("v3", 30)]
    with pytest.raises(LifecycleError, match="name the variant"):
        deploy.plan_promote("churn", NS, state)
    state = apply(api, deploy.plan_promote("churn", NS, state, "v3"))
    assert deploy.storage_uri_of(state) == V3 and state["spec"]["canary"] == []
    every_written_object_validates(api, schema)
    knative = create(new_api(), V1, KNATIVE)
    with pytest.raises(LifecycleError, match="one challenger, got 2"):
        rollout.plan_fixed_shares(spec(V1, KNATIVE), knative, {V2: 30, V3: 30}, "abtest")
    (request,) = rollout.plan_fixed_shares(spec(V1, KNATIVE), knative, {V2: 50}, "abtest")
    assert request.body["spec"]["predictor"]["canaryTrafficPercent"] == 50
    with pytest.raises(LifecycleError, match="add up to 120%"):
        rollout.plan_fixed_shares(
            spec(V1), create(new_api(), V1, STANDARD), {V2: 60, V3: 60}, "abtest"
        )


def test_dry_run_output_is_valid_yaml_with_kubectl_as_comments():
    api = new_api()
    existing = create(api, V1, STANDARD)
    plan = rollout.plan_blue_green(spec(V2), existing)
    text = rollout.render(plan)
    # patches are not manifests `kubectl apply` could take: comments only, bodies included
    assert [d for d in yaml.safe_load_all(text) if d is not None] == []
    assert dry_run_patches(text) == [request.body for request in plan]
    assert all(line.startswith("#") for line in text.splitlines())


def dry_run_patches(text: str) -> list[dict]:
    """The merge patches a dry run shows, read back from its `kubectl patch` comments."""
    marker = " --type merge -p '"
    return [
        json.loads(line.split(marker, 1)[1].removesuffix("'"))
        for line in text.splitlines()
        if line.startswith("# kubectl ") and marker in line
    ]


class VersionedObjects(FakeCustomObjects):
    """Keeps resourceVersion as the API server does: bumped on each write, and a patch that
    names an older one is refused with 409 Conflict."""

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
        return super().create_namespaced_custom_object(group, version, namespace, plural, body)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        from kubernetes.client.exceptions import ApiException

        current = self.objects[name]["metadata"]["resourceVersion"]
        wanted = body.get("metadata", {}).get("resourceVersion", current)
        if wanted != current:
            raise ApiException(status=409, reason="Conflict")
        found = super().patch_namespaced_custom_object(
            group, version, namespace, plural, name, body
        )
        found["metadata"]["resourceVersion"] = str(int(current) + 1)
        return found


@pytest.mark.parametrize("mode", [STANDARD, KNATIVE])
def test_two_rollouts_started_at_once_cannot_both_begin(mode):
    fake = VersionedObjects()
    api = KServeApi(fake)
    seen = create(api, V1, mode)  # both planners read the same settled object
    first = rollout.plan_blue_green(spec(V2, mode), seen)
    second = deploy.plan_deploy(spec(V3, mode), seen)
    assert first[0].body["metadata"]["resourceVersion"] == "1"
    rollout.apply_all(api, first, lambda m: None)
    with pytest.raises(LifecycleError, match="409 Conflict"):
        rollout.apply_all(api, second, lambda m: None)
    assert deploy.canary_uris(fake.objects["churn"]) == [V2]  # the first one, untouched
