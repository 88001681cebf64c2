"""The training pipeline: data in, a gated and registered model bundle out."""

from kfp import dsl

from kfp_lifecycle.cluster import with_s3_access
from kfp_lifecycle.components.evaluate import evaluate
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
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 42,
) -> dsl.Artifact:
    ingested = with_s3_access(ingest(source=data))
    checked = validate(dataset=ingested.outputs["dataset"], target=target, task=task, metric=metric)
    resolved_task = checked.outputs["task"]
    parts = split(
        dataset=ingested.outputs["dataset"],
        target=target,
        task=resolved_task,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    prepared = preprocess(train=parts.outputs["train"], target=target)

    with dsl.ParallelFor(items=families, name="model-families") as family:
        candidate = train(
            train=parts.outputs["train"],
            validation=parts.outputs["validation"],
            preprocessor=prepared.outputs["preprocessor"],
            validation_report=checked.outputs["report"],
            target=target,
            family=family,
            seed=seed,
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
