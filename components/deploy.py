"""Deploy: serve the registry's blessed version with KServe, as a canary when one is live."""

import logging
from typing import NamedTuple

from kfp_lifecycle.component import component
from kfp_lifecycle.deploy import (
    KServeApi,
    ServiceSpec,
    canary_in_progress,
    canary_uris,
    choose_mode,
    plan_deploy,
    stable_storage_uri,
    storage_uri_of,
)
from kfp_lifecycle.registry import (
    bundle_metadata,
    model_version_of,
    require_blessed,
    resolve_reference,
)

logger = logging.getLogger(__name__)

CREATED, CANARY, UNCHANGED = "created", "canary", "unchanged"


class DeployResult(NamedTuple):
    action: str  # created | canary | unchanged
    storage_uri: str
    canary_version: str
    stable_version: str


def deploy_blessed(
    api: KServeApi, spec: ServiceSpec, reference: str, mode: str = ""
) -> DeployResult:
    """Resolve the registry reference, refuse what the gate did not bless, then apply.

    `mode` (knative or standard) applies to a new service; empty: KServe's cluster default
    when it can be read, else Knative. A live service keeps its own mode.

    A reference that resolves to the model already served changes nothing and says so
    ("unchanged"): a retraining that kept the champion is not a failed deployment. If that
    model is a canary nobody judged (an earlier run stopped), it is reported as a canary
    again, so the rollout judges it instead of leaving it at N%.
    """
    uri = resolve_reference(reference)
    metadata = bundle_metadata(uri)
    version = model_version_of(metadata)
    require_blessed(metadata, uri, "deploy", override="")
    spec.storage_uri = uri
    existing = api.get(spec.name, spec.namespace)
    cluster = api.cluster_default_mode() if existing is None and not mode else None
    spec.deployment_mode = choose_mode(mode, existing, cluster)
    if existing is not None and canary_in_progress(existing) and uri in canary_uris(existing):
        logger.info(f"{uri} is already the canary, not yet judged: nothing sent, judging it")
        stable = model_version_of(bundle_metadata(stable_storage_uri(existing)))
        return DeployResult(CANARY, uri, version, stable)
    settled = existing is not None and not canary_in_progress(existing)
    if settled and storage_uri_of(existing) == uri:
        logger.info(f"{spec.namespace}/{spec.name} already serves {uri}: nothing to deploy")
        return DeployResult(UNCHANGED, uri, version, "")
    for request in plan_deploy(spec, existing):
        logger.info(request.note or f"{request.verb} {spec.namespace}/{spec.name}")
        logger.info(request.kubectl())
        api.apply(request)
    if existing is None:
        return DeployResult(CREATED, uri, version, "")
    stable = model_version_of(bundle_metadata(stable_storage_uri(existing)))
    return DeployResult(CANARY, uri, version, stable)


@component
def deploy(
    registry: str,
    model_name: str,
    service_name: str,
    namespace: str = "kfp-lifecycle",
    alias: str = "champion",
    canary_percent: int = 10,
    service_account: str = "kfp-lifecycle-serving",
    deployment_mode: str = "",
) -> NamedTuple(
    "DeployOutputs", action=str, storage_uri=str, canary_version=str, stable_version=str
):
    """Create the InferenceService, or start a canary of the registry's blessed version.

    Args:
        registry: Model registry URI (s3://bucket/prefix).
        model_name: Registered model name.
        service_name: InferenceService name.
        namespace: Namespace of the InferenceService.
        alias: Registry alias (or version number) to deploy; it must be blessed.
        canary_percent: Traffic share of the new version when one is already served.
        service_account: Service account holding the S3 credentials Secret for KServe.
        deployment_mode: knative (canaryTrafficPercent) or standard (spec.canary variants)
            for a new service; empty: KServe's default mode if readable, else knative.

    Returns:
        action: created (first deploy, 100%), canary, or unchanged (that version is the one
            already served: nothing sent, no canary to run).
        storage_uri: The deployed version's storageUri.
        canary_version: Registry version now deployed (unchanged: the one served).
        stable_version: Registry version that keeps the rest of the traffic (canary only).
    """
    from kfp_lifecycle.components.deploy import deploy_blessed
    from kfp_lifecycle.deploy import KServeApi, ServiceSpec

    spec = ServiceSpec(
        name=service_name,
        storage_uri="",
        namespace=namespace,
        service_account=service_account,
        canary_percent=canary_percent,
    )
    reference = f"{registry}/{model_name}@{alias}"
    return tuple(deploy_blessed(KServeApi(), spec, reference, deployment_mode))


@component
def wait_ready(
    service_name: str,
    namespace: str = "kfp-lifecycle",
    timeout_seconds: int = 900,
    action: str = "",
):
    """Wait until the InferenceService's newest revision is ready, or fail with its status.

    A canary that is not ready in time is rolled back before the step fails, so no
    half-finished rollout is left behind; a first deploy has nothing to roll back to.

    Args:
        service_name: InferenceService name.
        namespace: Its namespace.
        timeout_seconds: How long to wait before failing.
        action: The deploy step's action; "unchanged" means there is nothing to wait for.
    """
    from kfp_lifecycle.components.deploy import UNCHANGED, logger
    from kfp_lifecycle.deploy import KServeApi, wait_ready_or_roll_back

    if action == UNCHANGED:
        logger.info(f"{namespace}/{service_name}: nothing was deployed, nothing to wait for")
        return
    wait_ready_or_roll_back(KServeApi(), service_name, namespace, timeout_seconds)
    logger.info(f"{namespace}/{service_name} is ready")
