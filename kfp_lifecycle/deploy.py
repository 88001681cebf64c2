"""KServe InferenceServices for registry versions, and the canary rollout that drives them.

Two deployment modes split traffic differently. Knative (Serverless) mode: one predictor
and `canaryTrafficPercent` between its revisions (below). Standard (RawDeployment) mode,
KServe 0.20+: `spec.canary[]`, named predictor variants each with a `trafficPercent`; the
stable predictor keeps the rest; promotion renames the stable predictor to the variant's
name and empties the list, rollback empties the list (kserve PR #5672, its e2e test
test/e2e/predictor/test_canary_raw_deployment.py). Every plan below takes the live object
and picks the mode from it, so callers never branch on the mode.

KServe splits traffic but never decides: a new `storageUri` with `canaryTrafficPercent: N`
sends N% to the new revision and keeps the rest on the last rolled-out one. Promote removes
the field; roll back sets it to 0 and re-applies the previous `storageUri` (never just drops
the field, which would send 100% to the bad revision). Every action here is a list of exact
Kubernetes requests, each with the `kubectl` command that does the same, so `--dry-run`,
the tests and the printed commands all show one truth.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubernetes.client import ApiClient, V1ObjectMeta, V1ResourceRequirements

from kfp_lifecycle.core.errors import LifecycleError

if TYPE_CHECKING:  # imported where used: importing kserve parses sys.argv (its server's
    # flags, abbreviations included), which must not happen while the CLI builds its parser
    from kserve import V1beta1ModelSpec

logger = logging.getLogger(__name__)

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
STANDARD = "Standard"  # raw Deployments; KServe <= 0.15 calls it RawDeployment
RAW_DEPLOYMENT = "RawDeployment"
MODES = {"knative": KNATIVE, "standard": STANDARD}
MERGE = "merge"
# Which strategy holds the service (canary, bluegreen, abtest, dark): one at a time.
STRATEGY_ANNOTATION = "kfp-lifecycle.io/rollout"
# KServe's cluster-wide defaults; its `deploy` key holds {"defaultDeploymentMode": ...}.
KSERVE_CONFIG = ("kserve", "inferenceservice-config")


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


def normal_mode(text: str | None) -> str | None:
    """KServe's spellings of a mode, as this module's two: KNATIVE or STANDARD."""
    if not text:
        return None
    known = {"knative": KNATIVE, "serverless": KNATIVE, "standard": STANDARD}
    known["rawdeployment"] = STANDARD
    found = known.get(text.strip().lower())
    if found is None:
        raise LifecycleError(f"unknown KServe deployment mode {text!r}: knative or standard")
    return found


def is_standard(spec_mode: str) -> bool:
    return normal_mode(spec_mode) == STANDARD


def mode_of(service: dict[str, Any]) -> str:
    """A live service's mode: its annotation, else what KServe recorded, else Knative."""
    annotations = service.get("metadata", {}).get("annotations") or {}
    recorded = annotations.get(DEPLOYMENT_MODE_ANNOTATION) or service.get("status", {}).get(
        "deploymentMode"
    )
    return normal_mode(recorded) or KNATIVE


def cluster_default_mode(config_map: dict[str, Any] | None) -> str | None:
    """The mode KServe gives services with no annotation, from inferenceservice-config."""
    text = ((config_map or {}).get("data") or {}).get("deploy")
    if not text:
        return None
    try:
        return normal_mode(json.loads(text).get("defaultDeploymentMode"))
    except (ValueError, AttributeError):
        raise LifecycleError(
            f"{'/'.join(KSERVE_CONFIG)}: its 'deploy' key is not JSON: {text[:80]!r}"
        ) from None


def choose_mode(
    requested: str | None, existing: dict[str, Any] | None, cluster_default: str | None
) -> str:
    """--mode, else the live service's mode, else the cluster's default, else Knative.

    A live service keeps its mode: switching it recreates every pod, which is no rollout.
    """
    wanted = normal_mode(requested)
    if existing is not None:
        live = mode_of(existing)
        if wanted and wanted != live:
            name = existing["metadata"]["name"]
            raise LifecycleError(
                f"{name} runs in {live} mode; --mode {requested} would redeploy it from "
                "scratch, which is not a rollout: delete and deploy it again to switch"
            )
        return live
    return wanted or cluster_default or KNATIVE


def variant_name(storage_uri: str) -> str:
    """The predictor name of a version in Standard mode: v<N> for a registry version.

    It names the Deployment (<service>-<name>-predictor), so it is a DNS label and the same
    for the same version every time; another URI gets a short hash.
    """
    parts = storage_uri.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "versions" and parts[-1].isdigit():
        return f"v{parts[-1]}"
    return "m" + hashlib.sha256(storage_uri.encode()).hexdigest()[:10]


def check_percent(percent: int) -> int:
    if not 0 <= percent <= 100:
        raise LifecycleError(f"canary traffic percent must be 0..100, got {percent}")
    return percent


def _model(spec: ServiceSpec, storage_uri: str, name: str | None = None) -> V1beta1ModelSpec:
    from kserve import V1beta1ModelFormat, V1beta1ModelSpec

    return V1beta1ModelSpec(
        name=name,  # None on the stable predictor: the SDK's default "" names no container
        model_format=V1beta1ModelFormat(name=MODEL_FORMAT),
        runtime=spec.runtime,
        storage_uri=storage_uri,
        resources=V1ResourceRequirements(
            requests={"cpu": spec.cpu, "memory": spec.memory},
            limits={"cpu": spec.cpu_limit, "memory": spec.memory_limit},
        ),
    )


def build_variant(spec: ServiceSpec, storage_uri: str, percent: int) -> dict[str, Any]:
    """One entry of Standard mode's spec.canary: a named predictor at a fixed share.

    KServe's webhook refuses autoscaling fields on a canary (fixed replicas), so only the
    model, the service account and the name are set. KServe's CRD requires a container
    name on a canary's model (the stable predictor's schema drops it): "" is what KServe's
    own e2e test sends through the SDK's default, and the container keeps KServe's name.
    """
    from kserve import V1beta1CanarySpec, V1beta1PredictorSpec

    variant = V1beta1CanarySpec(
        traffic_percent=check_percent(percent),
        predictor=V1beta1PredictorSpec(
            name=variant_name(storage_uri),
            service_account_name=spec.service_account,
            model=_model(spec, storage_uri, name=""),
        ),
    )
    return ApiClient().sanitize_for_serialization(variant)


def build_inference_service(spec: ServiceSpec) -> dict[str, Any]:
    """The InferenceService manifest, built from the kserve SDK's typed models.

    Standard mode names the predictor after its version (promotion renames it, as KServe
    documents) and has no canaryTrafficPercent; scale to zero exists in Knative mode only.
    """
    from kserve import V1beta1InferenceService, V1beta1InferenceServiceSpec, V1beta1PredictorSpec

    standard = is_standard(spec.deployment_mode)
    if spec.canary_percent is not None:
        check_percent(spec.canary_percent)
        if standard:
            raise LifecycleError(
                "Standard mode splits traffic with spec.canary variants, not canaryTrafficPercent"
            )
    if spec.min_replicas < 0 or spec.max_replicas < max(spec.min_replicas, 1):
        raise LifecycleError(
            f"replicas: need 0 <= min ({spec.min_replicas}) <= max ({spec.max_replicas}), max >= 1"
        )
    if spec.min_replicas == 0 and standard:
        raise LifecycleError(
            "scale to zero (min replicas 0) needs Knative mode: Standard mode keeps pods running"
        )
    predictor = V1beta1PredictorSpec(
        name=variant_name(spec.storage_uri) if standard else None,
        service_account_name=spec.service_account,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        canary_traffic_percent=spec.canary_percent,
        model=_model(spec, spec.storage_uri),
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
    """The stable predictor's model (in Knative mode during a canary: the canary's)."""
    return service["spec"]["predictor"]["model"]["storageUri"]


def previous_storage_uri(service: dict[str, Any]) -> str | None:
    return (service["metadata"].get("annotations") or {}).get(PREVIOUS_STORAGE_URI)


def variants_of(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Standard mode's spec.canary entries (none in Knative mode)."""
    return list(service["spec"].get("canary") or [])


def variant_uri(variant: dict[str, Any]) -> str:
    return variant["predictor"]["model"]["storageUri"]


def strategy_of(service: dict[str, Any]) -> str | None:
    return (service["metadata"].get("annotations") or {}).get(STRATEGY_ANNOTATION)


def canary_in_progress(service: dict[str, Any]) -> bool:
    """A rollout neither promoted nor rolled back.

    Knative: the field is set and the stable model known. A rollback keeps
    `canaryTrafficPercent: 0` (dropping it would serve the bad revision) but clears the
    previous-storageUri annotation, so a rolled-back service is settled. Standard: any
    variant in spec.canary, a dark launch at 0% included.
    """
    if mode_of(service) == STANDARD:
        return bool(variants_of(service))
    return "canaryTrafficPercent" in service["spec"]["predictor"] and bool(
        previous_storage_uri(service)
    )


def stable_storage_uri(service: dict[str, Any]) -> str:
    """The model serving the stable share: the previous one during a canary, else the current."""
    if mode_of(service) != STANDARD and canary_in_progress(service):
        return previous_storage_uri(service) or ""
    return storage_uri_of(service)


def canary_uris(service: dict[str, Any]) -> list[str]:
    """The models under test, newest share first as written."""
    if mode_of(service) == STANDARD:
        return [variant_uri(v) for v in variants_of(service)]
    return [storage_uri_of(service)] if canary_in_progress(service) else []


def canary_percent(service: dict[str, Any]) -> int | None:
    """The share the models under test get together (None: no split)."""
    if mode_of(service) == STANDARD:
        variants = variants_of(service)
        return sum(v["trafficPercent"] for v in variants) if variants else None
    return service["spec"]["predictor"].get("canaryTrafficPercent")


def describe(service: dict[str, Any]) -> list[str]:
    """The rollout state a person asks for: which model, what share, which revisions."""
    if mode_of(service) == STANDARD:
        return _describe_standard(service)
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


def _describe_standard(service: dict[str, Any]) -> list[str]:
    variants = variants_of(service)
    stable_share = 100 - sum(v["trafficPercent"] for v in variants)
    predictor = service["spec"]["predictor"]
    statuses = service.get("status", {}).get("canaryStatuses", [])
    ready = {s.get("name"): s.get("ready") for s in statuses}
    strategy = strategy_of(service) or ("canary" if variants else "none (fully rolled out)")
    lines = [
        "mode:     Standard (spec.canary)",
        f"stable:   {predictor.get('name', '-')} {storage_uri_of(service)} at {stable_share}%",
        f"previous: {previous_storage_uri(service) or '-'}",
        f"strategy: {strategy}",
    ]
    for variant in variants:
        name = variant["predictor"]["name"]
        state = {True: "ready", False: "not ready"}.get(ready.get(name), "no status yet")
        lines.append(
            f"variant:  {name} {variant_uri(variant)} at {variant['trafficPercent']}% ({state})"
        )
    return lines


def status_kubectl(name: str, namespace: str) -> str:
    """What `rollout status` reads, in kubectl: KServe's PREV and LATEST columns are the split."""
    return f"kubectl -n {namespace} get isvc {name}"


def guarded(body: dict[str, Any], existing: dict[str, Any]) -> dict[str, Any]:
    """The patch that starts a rollout, valid only against the object it was planned from.

    A resourceVersion in a patch is a precondition: the API server answers 409 Conflict if
    the object changed since it was read, so two rollouts started at once cannot both
    begin (the second one's plan saw no rollout in progress).
    """
    version = existing.get("metadata", {}).get("resourceVersion")
    if version:
        body.setdefault("metadata", {})["resourceVersion"] = version
    return body


def refuse_busy(service: dict[str, Any], doing: str, force: bool = False) -> None:
    """One rollout at a time per service: refuse while one is neither promoted nor rolled back."""
    if force or not canary_in_progress(service):
        return
    name, namespace = service["metadata"]["name"], service["metadata"].get("namespace", "")
    strategy = strategy_of(service) or "canary"
    under_test = ", ".join(canary_uris(service))
    raise LifecycleError(
        f"{namespace}/{name}: a {strategy} of {under_test} is in progress at "
        f"{canary_percent(service)}% ({stable_storage_uri(service)} serves the rest): promote or "
        f"roll back first (`lifecycle rollout promote|rollback --name {name}`) before {doing}"
    )


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
    if mode_of(existing) == STANDARD:
        return plan_variants(spec, existing, {spec.storage_uri: percent}, "", force)
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
    return [Request("patch", spec.name, spec.namespace, guarded(body, existing), MERGE, note)]


def plan_variants(
    spec: ServiceSpec,
    existing: dict[str, Any],
    shares: dict[str, int],
    strategy: str,
    force: bool = False,
) -> list[Request]:
    """Standard mode: the stable predictor keeps serving, each new storageUri becomes a
    named variant at its share (0 = dark launch); the stable keeps 100 - their sum.

    The whole list is written in one merge patch (RFC 7386 replaces lists whole).
    `strategy` is recorded on the service ("" for a plain canary) so a second rollout is
    refused while this one runs.
    """
    where = f"{spec.namespace}/{spec.name}"
    if mode_of(existing) != STANDARD:
        raise LifecycleError(f"{where} runs in Knative mode: named variants need Standard mode")
    stable = storage_uri_of(existing)
    for uri in shares:
        if uri == stable:
            raise LifecycleError(f"{where} already serves {uri}; nothing to roll out")
    if any(existing["spec"]["predictor"].get("name") == variant_name(u) for u in shares):
        raise LifecycleError(f"{where}: a variant would take the stable predictor's name")
    if canary_in_progress(existing) and not force:
        doing = "starting another (or force the deploy to replace it)"
        refuse_busy(existing, doing)
    total = sum(check_percent(p) for p in shares.values())
    if total > 100:
        raise LifecycleError(f"variant shares add up to {total}%: at most 100")
    body: dict[str, Any] = {
        "spec": {"canary": [build_variant(spec, uri, p) for uri, p in shares.items()]}
    }
    if strategy or strategy_of(existing):  # the stable predictor and its history stay as they are
        body["metadata"] = {"annotations": {STRATEGY_ANNOTATION: strategy or None}}
    split = ", ".join(f"{p}% to {variant_name(u)} ({u})" for u, p in shares.items())
    replaced = " (replaces the variants in progress)" if canary_in_progress(existing) else ""
    note = f"{strategy or 'canary'}: {split}, {100 - total}% stays on {stable}{replaced}"
    return [Request("patch", spec.name, spec.namespace, guarded(body, existing), MERGE, note)]


def _pick_variant(service: dict[str, Any], variant: str | None) -> dict[str, Any]:
    variants = variants_of(service)
    name = service["metadata"]["name"]
    if not variants:
        raise LifecycleError(f"{name} has no canary variant in progress")
    if variant is None and len(variants) == 1:
        return variants[0]
    names = [v["predictor"]["name"] for v in variants]
    for found in variants:
        if found["predictor"]["name"] == variant:
            return found
    raise LifecycleError(f"{name}: name the variant ({', '.join(names)}), got {variant!r}")


def plan_set_traffic(
    name: str,
    namespace: str,
    percent: int,
    existing: dict[str, Any] | None = None,
    variant: str | None = None,
) -> list[Request]:
    """The canary's share: canaryTrafficPercent in Knative mode, the variant's in Standard."""
    check_percent(percent)
    if existing is not None and mode_of(existing) == STANDARD:
        chosen = _pick_variant(existing, variant)["predictor"]["name"]
        variants = copy.deepcopy(variants_of(existing))
        for entry in variants:
            if entry["predictor"]["name"] == chosen:
                entry["trafficPercent"] = percent
        total = sum(v["trafficPercent"] for v in variants)
        if total > 100:
            raise LifecycleError(f"variant shares would add up to {total}%: at most 100")
        body = {"spec": {"canary": variants}}
        return [Request("patch", name, namespace, body, MERGE, f"variant {chosen} at {percent}%")]
    body = {"spec": {"predictor": {"canaryTrafficPercent": percent}}}
    return [Request("patch", name, namespace, body, MERGE, f"canary at {percent}%")]


def _settled(service: dict[str, Any]) -> dict[str, Any]:
    """Clears the strategy mark, only where one is set (plain canaries never write it)."""
    return {STRATEGY_ANNOTATION: None} if strategy_of(service) else {}


def plan_promote(
    name: str, namespace: str, existing: dict[str, Any], variant: str | None = None
) -> list[Request]:
    """Send everything to the model under test and make it the stable one.

    Standard mode, as KServe documents it: the stable predictor takes the variant's name
    and storageUri (its running pods are kept), and spec.canary is emptied.
    """
    if mode_of(existing) == STANDARD:
        chosen = _pick_variant(existing, variant)
        uri = variant_uri(chosen)
        body = {
            "metadata": {
                "annotations": {
                    PREVIOUS_STORAGE_URI: storage_uri_of(existing),
                    MODEL_VERSION_ANNOTATION: uri,
                    **_settled(existing),
                }
            },
            "spec": {
                "predictor": {"name": chosen["predictor"]["name"], "model": {"storageUri": uri}},
                "canary": [],
            },
        }
        note = f"promote: {chosen['predictor']['name']} ({uri}) becomes the stable predictor"
        return [Request("patch", name, namespace, body, MERGE, note)]
    if "canaryTrafficPercent" not in existing["spec"]["predictor"]:
        raise LifecycleError(f"{namespace}/{name} has no canary in progress to promote")
    # In a JSON merge patch (RFC 7386) null removes the field: the same as kubectl's
    # --type json remove, through the one patch type the custom-objects API sends.
    body: dict[str, Any] = {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    if _settled(existing):
        body["metadata"] = {"annotations": _settled(existing)}
    return [Request("patch", name, namespace, body, MERGE, "promote: 100% to the latest revision")]


def plan_rollback(name: str, namespace: str, existing: dict[str, Any]) -> list[Request]:
    """Back to the previous storageUri, never through a state that serves the bad model more.

    Knative, during a canary: traffic to the canary goes to 0 first, then the previous
    storageUri is re-applied with the canary kept at 0. After a promotion: the previous
    storageUri is rolled out again (the bad revision is the stable one, so 0% would change
    nothing). Standard, during a canary: the variants go (the stable predictor never
    stopped serving); after a promotion: the stable predictor gets the previous model back.
    """
    previous = previous_storage_uri(existing)
    settled = _settled(existing)
    if mode_of(existing) == STANDARD and variants_of(existing):
        stable = storage_uri_of(existing)
        body: dict[str, Any] = {"spec": {"canary": []}}
        if settled:
            body["metadata"] = {"annotations": settled}
        note = f"remove the variants: {stable} serves 100% again"
        return [Request("patch", name, namespace, body, MERGE, note)]
    if not previous:
        raise LifecycleError(f"{namespace}/{name} records no previous storageUri to roll back to")
    annotations = {MODEL_VERSION_ANNOTATION: previous, PREVIOUS_STORAGE_URI: None, **settled}
    if mode_of(existing) == STANDARD:
        predictor = {"name": variant_name(previous), "model": {"storageUri": previous}}
        body = {"metadata": {"annotations": annotations}, "spec": {"predictor": predictor}}
        return [Request("patch", name, namespace, body, MERGE, f"roll out {previous} again")]
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

    def __init__(self, custom_objects: Any | None = None, core: Any | None = None):
        if custom_objects is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            custom_objects, core = client.CustomObjectsApi(), core or client.CoreV1Api()
        self.api = custom_objects
        self.core = core  # reads KServe's ConfigMap only; None: the mode is not detected

    def cluster_default_mode(self) -> str | None:
        """KServe's defaultDeploymentMode from its ConfigMap; None when it cannot be read
        (the serving role may not read the kserve namespace: then --mode decides)."""
        core = getattr(self, "core", None)
        if core is None:
            return None
        try:
            found = core.read_namespaced_config_map(KSERVE_CONFIG[1], KSERVE_CONFIG[0])
        except Exception as error:  # no permission, no KServe, no cluster
            logger.info("KServe's default mode unknown (%s): Knative unless --mode", error)
            return None
        if not isinstance(found, dict):
            found = {"data": getattr(found, "data", None)}
        return cluster_default_mode(found)

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
    if mode_of(service) == STANDARD and variants_of(service):
        # Every variant written, each with its own Deployment, reports ready (kserve#5672).
        ready_names = {s.get("name") for s in status.get("canaryStatuses", []) if s.get("ready")}
        wanted = {v["predictor"]["name"] for v in variants_of(service)}
        canaries = any(
            c.get("type") == "CanaryPredictorReady" and c.get("status") == "True"
            for c in status.get("conditions", [])
        )
        return ready and canaries and wanted <= ready_names
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
    during = canary_in_progress(service)
    back_to = stable_storage_uri(service) if during else previous_storage_uri(service)
    for request in plan_rollback(name, namespace, service):
        api.apply(request)
    return back_to or ""


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
