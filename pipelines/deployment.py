"""The deployment pipeline: the registry's blessed version, served by KServe as a canary."""

from kfp import dsl

from kfp_lifecycle.cluster import with_s3_access
from kfp_lifecycle.components.deploy import deploy, wait_ready
from kfp_lifecycle.components.rollout import rollout

PIPELINE_NAME = "deployment"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Deploy the registry's blessed champion as a KServe InferenceService; when a "
    "version is already served, roll the new one out as a canary analysed in Prometheus, "
    "then promote or roll back. Knative mode (canaryTrafficPercent) or Standard mode "
    "(spec.canary variants): deployment_mode, else KServe's default.",
)
def deployment_pipeline(
    registry: str,
    model_name: str,
    service_name: str,
    namespace: str = "kfp-lifecycle",
    alias: str = "champion",
    canary_percent: int = 10,
    ready_timeout_seconds: int = 900,
    rollout_options: dict = {},  # noqa: B006 (KFP pipeline default, never mutated)
    deployment_mode: str = "",
):
    deployed = with_s3_access(
        deploy(
            registry=registry,
            model_name=model_name,
            service_name=service_name,
            namespace=namespace,
            alias=alias,
            canary_percent=canary_percent,
            deployment_mode=deployment_mode,
        )
    ).set_caching_options(False)
    # A canary that is not ready in time is rolled back by wait_ready itself.
    ready = wait_ready(
        service_name=service_name,
        namespace=namespace,
        timeout_seconds=ready_timeout_seconds,
        action=deployed.outputs["action"],
    )
    ready.set_caching_options(False)
    # "created" serves 100% at once; "unchanged" (the champion is already served) has
    # nothing to roll out: only a canary is analysed.
    with dsl.If(deployed.outputs["action"] == "canary", name="canary-in-progress"):
        rollout(
            service_name=service_name,
            model_name=service_name,
            canary_version=deployed.outputs["canary_version"],
            stable_version=deployed.outputs["stable_version"],
            namespace=namespace,
            options=rollout_options,
        ).after(ready).set_caching_options(False)
