"""The training pipeline: data in, a gated and registered model bundle out."""

from kfp import dsl

from kfp_lifecycle.cluster import with_s3_access
from kfp_lifecycle.components.balance import balance
from kfp_lifecycle.components.clean import clean
from kfp_lifecycle.components.evaluate import evaluate
from kfp_lifecycle.components.features import select_features
from kfp_lifecycle.components.gate import gate
from kfp_lifecycle.components.ingest import ingest
from kfp_lifecycle.components.preprocess import preprocess
from kfp_lifecycle.components.register import register
from kfp_lifecycle.components.select import select
from kfp_lifecycle.components.split import split
from kfp_lifecycle.components.train import DEFAULT_FAMILIES, train
from kfp_lifecycle.components.validate import validate

PIPELINE_NAME = "training"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Ingest, validate, split, preprocess, train model families in parallel, "
    "select the champion, evaluate it on held-out data, gate it and register it.",
)
def training_pipeline(
    data: str,
    target: str,
    registry: str,
    model_name: str,
    task: str = "auto",
    metric: str = "auto",
    families: list = DEFAULT_FAMILIES,
    thresholds: dict = {},  # noqa: B006
    clean_options: dict = {},  # noqa: B006
    split_options: dict = {},  # noqa: B006
    preprocess_options: dict = {},  # noqa: B006
    features_options: dict = {},  # noqa: B006
    balance_options: dict = {},  # noqa: B006
) -> dsl.Artifact:
    ingested = with_s3_access(ingest(source=data))
    checked = validate(dataset=ingested.outputs["dataset"], target=target, task=task, metric=metric)
    resolved_task = checked.outputs["task"]
    cleaned = clean(dataset=ingested.outputs["dataset"], target=target, options=clean_options)
    parts = split(
        dataset=cleaned.outputs["cleaned"],
        target=target,
        task=resolved_task,
        options=split_options,
    )
    # Preprocessing is fitted on real training rows; balancing only adds rows for the models.
    prepared = preprocess(
        train=parts.outputs["train"], target=target, task=resolved_task, options=preprocess_options
    )
    selected = select_features(
        train=prepared.outputs["train_clean"],
        preprocessor=prepared.outputs["preprocessor"],
        target=target,
        task=resolved_task,
        options=features_options,
    )
    balanced = balance(
        train=prepared.outputs["train_clean"],
        target=target,
        task=resolved_task,
        options=balance_options,
    )

    with dsl.ParallelFor(items=families, name="model-families") as family:
        candidate = train(
            train=balanced.outputs["balanced"],
            validation=parts.outputs["validation"],
            preprocessor=selected.outputs["selected"],
            fitted_rows=prepared.outputs["train_clean"],
            validation_report=checked.outputs["report"],
            target=target,
            family=family,
        )

    chosen = select(
        candidates=dsl.Collected(candidate.outputs["model"]),
        primary_metric=checked.outputs["primary_metric"],
    )
    evaluated = evaluate(model=chosen.outputs["champion"], test=parts.outputs["test"])
    decided = gate(
        evaluation=evaluated.outputs["evaluation"], task=resolved_task, thresholds=thresholds
    )
    registered = with_s3_access(
        register(
            champion=chosen.outputs["champion"],
            evaluation=evaluated.outputs["evaluation"],
            blessing=decided.outputs["blessing"],
            registry=registry,
            model_name=model_name,
            data_source=data,
            data_sha256=ingested.outputs["Output"],
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).set_caching_options(False)
    )
    return registered.outputs["summary"]
