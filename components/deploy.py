"""Deploy: serve the registry's blessed version with KServe, as a canary when one is live."""

from typing import NamedTuple

from kfp_lifecycle.component import component
from kfp_lifecycle.deploy import KServeApi, ServiceSpec, plan_deploy, storage_uri_of
from kfp_lifecycle.errors import LifecycleError
from kfp_lifecycle.registry import bundle_metadata, model_version_of, resolve_reference


class DeployResult(NamedTuple):
    action: str  # created | canary
    storage_uri: str
    canary_version: str
    stable_version: str


def deploy_blessed(api: KServeApi, spec: ServiceSpec, reference: str) -> DeployResult:
    """Resolve the registry reference, refuse what the gate did not bless, then apply."""
    uri = resolve_reference(reference)
    metadata = bundle_metadata(uri)
    if not metadata.get("gate", {}).get("blessed"):
        raise LifecycleError(f"{uri} was not blessed by the gate: refusing to deploy it")
    spec.storage_uri = uri
    existing = api.get(spec.name, spec.namespace)
    for request in plan_deploy(spec, existing):
        print(request.note or f"{request.verb} {spec.namespace}/{spec.name}")
        print(request.kubectl())
        api.apply(request)
    if existing is None:
        return DeployResult("created", uri, model_version_of(metadata), "")
    stable = model_version_of(bundle_metadata(storage_uri_of(existing)))
    return DeployResult("canary", uri, model_version_of(metadata), stable)


@component
def deploy(
    registry: str,
    model_name: str,
    service_name: str,
    namespace: str = "kfp-lifecycle",
    alias: str = "champion",
    canary_percent: int = 10,
    service_account: str = "kfp-lifecycle-serving",
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

    Returns:
        action: created (first deploy, 100%) or canary.
        storage_uri: The deployed version's storageUri.
        canary_version: Registry version now deployed.
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
    return tuple(deploy_blessed(KServeApi(), spec, f"{registry}/{model_name}@{alias}"))


@component
def wait_ready(service_name: str, namespace: str = "kfp-lifecycle", timeout_seconds: int = 900):
    """Wait until the InferenceService's newest revision is ready, or fail with its status.

    Args:
        service_name: InferenceService name.
        namespace: Its namespace.
        timeout_seconds: How long to wait before failing.
    """
    from kfp_lifecycle.deploy import KServeApi, wait_until_ready

    wait_until_ready(KServeApi(), service_name, namespace, timeout_seconds)
    print(f"{namespace}/{service_name} is ready")
