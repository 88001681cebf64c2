"""The monitoring pipeline: drift and live quality of the served champion; retraining when
the rule says so (the training pipeline on the window's labelled rows, then, on a cluster,
the deployment pipeline's canary)."""

from kfp import dsl

from kfp_lifecycle.cluster import with_s3_access
from kfp_lifecycle.components.drift import drift
from kfp_lifecycle.components.monitor import PREDICTION_COLUMN, monitor
from kfp_lifecycle.components.quality import quality
from kfp_lifecycle.components.retrain import retrain
from kfp_lifecycle.families import DEFAULT_FAMILIES
from kfp_lifecycle.pipelines.deployment import deployment_pipeline
from kfp_lifecycle.pipelines.training import training_pipeline

PIPELINE_NAME = "monitoring"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Read a window of logged requests, check drift against the champion's "
    "training reference and live quality against late labels, decide by a configured rule, "
    "and retrain (then canary-deploy) when it says so.",
)
def monitoring_pipeline(
    registry: str,
    model_name: str,
    log_uri: str,
    start: str = "",
    end: str = "",
    window_days: int = 1,
    labels_uri: str = "",
    training_data_uri: str = "",
    drift_options: dict = {},  # noqa: B006 (KFP pipeline defaults, never mutated)
    quality_options: dict = {},  # noqa: B006
    retrain_options: dict = {},  # noqa: B006
    pushgateway: str = "",
    families: list = DEFAULT_FAMILIES,
    tune_options: dict = {},  # noqa: B006
    gate_options: dict = {},  # noqa: B006
    deploy: bool = False,
    service_name: str = "",
    namespace: str = "kfp-lifecycle",
) -> dsl.Artifact:
    window = with_s3_access(
        monitor(
            registry=registry,
            model_name=model_name,
            log_uri=log_uri,
            start=start,
            end=end,
            window_days=window_days,
            labels_uri=labels_uri,
            training_data_uri=training_data_uri,
        ).set_caching_options(False)
    )
    drifted = drift(
        reference=window.outputs["reference"],
        current=window.outputs["current"],
        options=drift_options,
        prediction_column=PREDICTION_COLUMN,
        contract=window.outputs["contract"],
        importance=window.outputs["importance"],
    )
    live = quality(
        predictions=window.outputs["predictions"],
        labels=window.outputs["labels"],
        task=window.outputs["task"],
        target=window.outputs["target"],
        test_metrics=window.outputs["test_metrics"],
        options=quality_options,
    )
    decided = retrain(
        drift_verdict=drifted.outputs["verdict"],
        quality=live.outputs["quality"],
        training_data=window.outputs["training_data"],
        rule=retrain_options,
        pushgateway=pushgateway,
        model_name=model_name,
        model_version=window.outputs["model_version"],
    ).set_caching_options(False)  # it pushes the gauges to the Pushgateway: a side effect
    with dsl.If(decided.outputs["Output"] == True, name="retrain"):  # noqa: E712 (a KFP condition)
        retrained = training_pipeline(
            data=window.outputs["training_data"],
            target=window.outputs["target"],
            registry=registry,
            model_name=model_name,
            task=window.outputs["task"],
            families=families,
            tune_options=tune_options,
            gate_options=gate_options,
            positive_class=window.outputs["positive_class"],
        )
        with dsl.If(deploy == True, name="deploy"):  # noqa: E712
            deployment_pipeline(
                registry=registry,
                model_name=model_name,
                service_name=service_name,
                namespace=namespace,
            ).after(retrained)
    return decided.outputs["decision"]
