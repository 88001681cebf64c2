"""KServe InferenceServices for registry versions, and the canary rollout that drives them.

KServe splits traffic but never decides: a new `storageUri` with `canaryTrafficPercent: N`
sends N% to the new revision and keeps the rest on the last rolled-out one. Promote removes
the field; roll back sets it to 0 and re-applies the previous `storageUri` (never just drops
the field, which would send 100% to the bad revision). Every action here is a list of exact
Kubernetes requests, each with the `kubectl` command that does the same, so `--dry-run`,
the tests and the printed commands all show one truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kserve import (
    V1beta1InferenceService,
    V1beta1InferenceServiceSpec,
    V1beta1ModelFormat,
    V1beta1ModelSpec,
    V1beta1PredictorSpec,
)
from kubernetes.client import ApiClient, V1ObjectMeta, V1ResourceRequirements

from kfp_lifecycle.core.errors import LifecycleError

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
API_VERSION = f"{GROUP}/{VERSION}"

# The project's ServingRuntime (manifests/) declares this model format, so an
# InferenceService needs only a storageUri to be served by the project's own runtime.
MODEL_FORMAT = "kfp-lifecycle-bundle"
RUNTIME = "kfp-lifecycle"
PREVIOUS_STORAGE_URI = "kfp-lifecycle.io/previous-storage-uri"
MODEL_VERSION_ANNOTATION = "kfp-lifecycle.io/model-uri"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# canaryTrafficPercent works only in Knative (Serverless) mode: RawDeployment (Standard)
# ignores it silently, so the mode is never left to the cluster's default. KServe 0.16
# renamed "Serverless" to "Knative" (kserve#4608) and records "Knative" in the status; its
# webhook then rejects every update of a service annotated with the old name, even an
# unchanged one (kserve#5885, seen on 0.16.0, the version cluster/ installs). KServe up to
# 0.15 knows only "Serverless": set ServiceSpec.deployment_mode to it there.
KNATIVE = "Knative"
SERVERLESS = "Serverless"  # KServe <= 0.15
MERGE = "merge"


@dataclass
class ServiceSpec:
    name: str
    storage_uri: str
    namespace: str = "kfp-lifecycle"
    service_account: str = "kfp-lifecycle-serving"
    canary_percent: int | None = None
    runtime: str = RUNTIME
    min_replicas: int = 1
    max_replicas: int = 3
    cpu: str = "500m"
    memory: str = "1Gi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"
    metrics_port: int = 8080
    deployment_mode: str = KNATIVE  # SERVERLESS on KServe <= 0.15
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """One call to the Kubernetes API, and the kubectl command that makes the same change."""

    verb: str  # create | patch
    name: str
    namespace: str
    body: Any
    patch_type: str = ""  # "merge" for patches: the custom-objects API sends merge patches
    note: str = ""

    def kubectl(self) -> str:
        if self.verb == "create":
            manifest = json.dumps(self.body, indent=2)
            return f"kubectl -n {self.namespace} apply -f - <<'EOF'\n{manifest}\nEOF"
        return (
            f"kubectl -n {self.namespace} patch isvc {self.name} --type {self.patch_type} "
            f"-p '{json.dumps(self.body, separators=(',', ':'))}'"
        )


class NotReadyError(LifecycleError):
    """The InferenceService's newest revision did not become ready in time."""


def check_percent(percent: int) -> int:
    if not 0 <= percent <= 100:
        raise LifecycleError(f"canary traffic percent must be 0..100, got {percent}")
    return percent


def build_inference_service(spec: ServiceSpec) -> dict[str, Any]:
    """The InferenceService manifest, built from the kserve SDK's typed models."""
    if spec.canary_percent is not None:
        check_percent(spec.canary_percent)
    predictor = V1beta1PredictorSpec(
        service_account_name=spec.service_account,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        canary_traffic_percent=spec.canary_percent,
        model=V1beta1ModelSpec(
            name=None,  # the SDK's default "" would name the container ""
            model_format=V1beta1ModelFormat(name=MODEL_FORMAT),
            runtime=spec.runtime,
            storage_uri=spec.storage_uri,
            resources=V1ResourceRequirements(
                requests={"cpu": spec.cpu, "memory": spec.memory},
                limits={"cpu": spec.cpu_limit, "memory": spec.memory_limit},
            ),
        ),
    )
    service = V1beta1InferenceService(
        api_version=API_VERSION,
        kind="InferenceService",
        metadata=V1ObjectMeta(
            name=spec.name,
            namespace=spec.namespace,
            labels={"app.kubernetes.io/part-of": "kfp-lifecycle", **spec.labels},
            annotations={
                # per-revision URLs (prev-..., latest-...) to test a canary directly
                "serving.kserve.io/enable-tag-routing": "true",
                "serving.kserve.io/enable-prometheus-scraping": "true",
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(spec.metrics_port),
                "prometheus.io/path": "/metrics",
                DEPLOYMENT_MODE_ANNOTATION: spec.deployment_mode,
                MODEL_VERSION_ANNOTATION: spec.storage_uri,
            },
        ),
        spec=V1beta1InferenceServiceSpec(predictor=predictor),
    )
    return ApiClient().sanitize_for_serialization(service)


def storage_uri_of(service: dict[str, Any]) -> str:
    return service["spec"]["predictor"]["model"]["storageUri"]


def previous_storage_uri(service: dict[str, Any]) -> str | None:
    return (service["metadata"].get("annotations") or {}).get(PREVIOUS_STORAGE_URI)


def canary_in_progress(service: dict[str, Any]) -> bool:
    """A canary neither promoted nor rolled back: the field is set and the stable model known.

    A rollback keeps `canaryTrafficPercent: 0` (dropping it would serve the bad revision)
    but clears the previous-storageUri annotation, so a rolled-back service is settled.
    """
    return "canaryTrafficPercent" in service["spec"]["predictor"] and bool(
        previous_storage_uri(service)
    )


def stable_storage_uri(service: dict[str, Any]) -> str:
    """The model serving the stable share: the previous one during a canary, else the current."""
    if canary_in_progress(service):
        return previous_storage_uri(service) or ""
    return storage_uri_of(service)


def describe(service: dict[str, Any]) -> list[str]:
    """The rollout state a person asks for: which model, what share, which revisions."""
    predictor = service["spec"]["predictor"]
    status = service.get("status", {}).get("components", {}).get("predictor", {})
    canary = predictor.get("canaryTrafficPercent")
    lines = [
        f"model:    {storage_uri_of(service)}",
        f"previous: {previous_storage_uri(service) or '-'}",
        f"canary:   {'none (fully rolled out)' if canary is None else f'{canary}%'}",
    ]
    for route in status.get("traffic", []):
        tag = f" (tag {route['tag']})" if route.get("tag") else ""
        lines.append(f"traffic:  {route.get('percent')}% -> {route.get('revisionName')}{tag}")
    lines.append(
        f"revisions: ready {status.get('latestReadyRevision', '-')}, "
        f"created {status.get('latestCreatedRevision', '-')}, "
        f"rolled out {status.get('latestRolledoutRevision', '-')}"
    )
    return lines


def status_kubectl(name: str, namespace: str) -> str:
    """What `rollout status` reads, in kubectl: KServe's PREV and LATEST columns are the split."""
    return f"kubectl -n {namespace} get isvc {name}"


def plan_deploy(
    spec: ServiceSpec, existing: dict[str, Any] | None, force: bool = False
) -> list[Request]:
    """First deploy: create at 100%. Later: a canary of the new storageUri at N%.

    A deploy during a canary is refused unless forced: the new version would replace a
    canary nobody judged yet. Forced, it replaces the canary and keeps the stable model as
    the one to roll back to (the canary's model was never rolled out).
    """
    if existing is None:
        first = ServiceSpec(**{**spec.__dict__, "canary_percent": None})
        return [Request("create", spec.name, spec.namespace, build_inference_service(first))]
    percent = check_percent(10 if spec.canary_percent is None else spec.canary_percent)
    current = storage_uri_of(existing)
    stable = stable_storage_uri(existing)
    in_progress = canary_in_progress(existing)
    live = existing["spec"]["predictor"].get("canaryTrafficPercent")
    where = f"{spec.namespace}/{spec.name}"
    if current == spec.storage_uri:
        how = f" as a canary at {live}%" if in_progress else ""
        raise LifecycleError(f"{where} already serves {spec.storage_uri}{how}; nothing to roll out")
    if in_progress and not force:
        raise LifecycleError(
            f"{where}: a canary of {current} is in progress at {live}% ({stable} serves the "
            f"rest): promote or roll back first (`lifecycle rollout promote|rollback --name "
            f"{spec.name}`), or force the deploy to replace the canary"
        )
    body = {
        "metadata": {
            "annotations": {
                PREVIOUS_STORAGE_URI: stable,
                MODEL_VERSION_ANNOTATION: spec.storage_uri,
            }
        },
        "spec": {
            "predictor": {
                "canaryTrafficPercent": percent,
                "model": {"storageUri": spec.storage_uri},
            }
        },
    }
    replaced = f" (replaces the canary of {current})" if in_progress else ""
    note = f"canary: {percent}% to {spec.storage_uri}, {100 - percent}% stays on {stable}{replaced}"
    return [Request("patch", spec.name, spec.namespace, body, MERGE, note)]


def plan_set_traffic(name: str, namespace: str, percent: int) -> list[Request]:
    body = {"spec": {"predictor": {"canaryTrafficPercent": check_percent(percent)}}}
    return [Request("patch", name, namespace, body, MERGE, f"canary at {percent}%")]


def plan_promote(name: str, namespace: str, existing: dict[str, Any]) -> list[Request]:
    if "canaryTrafficPercent" not in existing["spec"]["predictor"]:
        raise LifecycleError(f"{namespace}/{name} has no canary in progress to promote")
    # In a JSON merge patch (RFC 7386) null removes the field: the same as kubectl's
    # --type json remove, through the one patch type the custom-objects API sends.
    body = {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    return [Request("patch", name, namespace, body, MERGE, "promote: 100% to the latest revision")]


def plan_rollback(name: str, namespace: str, existing: dict[str, Any]) -> list[Request]:
    """Back to the previous storageUri, never through a state that serves the bad model more.

    During a canary: traffic to the canary goes to 0 first, then the previous storageUri is
    re-applied with the canary kept at 0. After a promotion: the previous storageUri is
    rolled out again (the bad revision is the stable one, so 0% would change nothing).
    """
    previous = previous_storage_uri(existing)
    if not previous:
        raise LifecycleError(f"{namespace}/{name} records no previous storageUri to roll back to")
    annotations = {MODEL_VERSION_ANNOTATION: previous, PREVIOUS_STORAGE_URI: None}
    if "canaryTrafficPercent" in existing["spec"]["predictor"]:
        return [
            *plan_set_traffic(name, namespace, 0),
            Request(
                "patch",
                name,
                namespace,
                {
                    "metadata": {"annotations": annotations},
                    "spec": {
                        "predictor": {"canaryTrafficPercent": 0, "model": {"storageUri": previous}}
                    },
                },
                MERGE,
                f"re-apply the previous model {previous}, canary kept at 0%",
            ),
        ]
    body = {
        "metadata": {"annotations": annotations},
        "spec": {"predictor": {"model": {"storageUri": previous}}},
    }
    return [Request("patch", name, namespace, body, MERGE, f"roll out {previous} again")]


# Every call KServeApi makes; manifests/base/serving/rbac.yaml grants exactly these.
API_VERBS = ("get", "create", "patch")


class KServeApi:
    """The Kubernetes API boundary: custom-object calls for InferenceServices, nothing else."""

    def __init__(self, custom_objects: Any | None = None):
        if custom_objects is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            custom_objects = client.CustomObjectsApi()
        self.api = custom_objects

    def get(self, name: str, namespace: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise LifecycleError(f"reading {namespace}/{name}: {error.reason}") from None

    def apply(self, request: Request) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            if request.verb == "create":
                return self.api.create_namespaced_custom_object(
                    GROUP, VERSION, request.namespace, PLURAL, request.body
                )
            return self.api.patch_namespaced_custom_object(
                GROUP, VERSION, request.namespace, PLURAL, request.name, request.body
            )
        except ApiException as error:
            raise LifecycleError(
                f"{request.verb} {request.namespace}/{request.name} failed: "
                f"{error.status} {error.reason}"
            ) from None


def is_ready(service: dict[str, Any]) -> bool:
    """Ready, and the newest revision is the one that is ready (not an older one)."""
    status = service.get("status", {})
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
    )
    predictor = status.get("components", {}).get("predictor", {})
    latest = predictor.get("latestCreatedRevision")
    return ready and (latest is None or latest == predictor.get("latestReadyRevision"))


def wait_until_ready(
    api: KServeApi,
    name: str,
    namespace: str,
    timeout_seconds: float,
    poll_seconds: float = 5.0,
    clock: Any = None,
) -> dict[str, Any]:
    import time

    clock = clock or time
    deadline = clock.monotonic() + timeout_seconds
    while True:
        service = api.get(name, namespace)
        if service is not None and is_ready(service):
            return service
        if clock.monotonic() >= deadline:
            conditions = (service or {}).get("status", {}).get("conditions", [])
            detail = "; ".join(
                f"{c.get('type')}={c.get('status')} {c.get('message', '')}".strip()
                for c in conditions
            )
            detail = detail or "no status"
            raise NotReadyError(
                f"{namespace}/{name} not ready after {timeout_seconds:.0f}s: {detail}"
            )
        clock.sleep(poll_seconds)


def apply_rollback(api: KServeApi, name: str, namespace: str) -> str:
    """Roll back from the live state (plan_rollback); returns the storageUri served again."""
    service = api.get(name, namespace)
    if service is None:
        raise LifecycleError(f"{namespace}/{name} does not exist: nothing to roll back")
    for request in plan_rollback(name, namespace, service):
        api.apply(request)
    return previous_storage_uri(service) or ""


def roll_back_because(api: KServeApi, name: str, namespace: str, problem: str) -> LifecycleError:
    """Roll back after `problem`; returns the error to raise, saying what was done.

    A rollout that stops half-way leaves the new model at N% with nobody watching it, so
    every failure after a canary started ends here rather than in a bare traceback.
    """
    try:
        previous = apply_rollback(api, name, namespace)
    except Exception as failed:
        return LifecycleError(
            f"{problem}; rolling back failed too ({failed}): roll back by hand with "
            f"`lifecycle rollout rollback --name {name} --namespace {namespace}`"
        )
    return LifecycleError(f"{problem}; rolled back: {previous} serves again")


def wait_ready_or_roll_back(
    api: KServeApi,
    name: str,
    namespace: str,
    timeout_seconds: float,
    poll_seconds: float = 5.0,
    clock: Any = None,
) -> dict[str, Any]:
    """Wait for the newest revision; a canary that does not get ready in time is rolled back."""
    try:
        return wait_until_ready(api, name, namespace, timeout_seconds, poll_seconds, clock)
    except NotReadyError as error:
        service = api.get(name, namespace)
        if service is not None and canary_in_progress(service):
            raise roll_back_because(api, name, namespace, str(error)) from None
        if service is None or previous_storage_uri(service) is None:
            raise NotReadyError(
                f"{error}; a first deploy has no previous version to roll back to: fix the "
                f"cause, or remove it with `kubectl -n {namespace} delete isvc {name}`"
            ) from None
        raise NotReadyError(
            f"{error}; no canary is in progress, so nothing was rolled back"
        ) from None
