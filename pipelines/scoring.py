"""The scoring pipeline: the champion (or any registered version) scores a table of any size,
in chunks, with quarantine, drift and contract checks, and publishes predictions atomically."""

from kfp import dsl

from kfp_lifecycle.cluster import with_s3_access
from kfp_lifecycle.components.score import score

PIPELINE_NAME = "scoring"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Score a CSV/Parquet file, directory or s3:// prefix with a registered model "
    "in bounded memory: predictions as Parquet parts, bad rows quarantined with reasons, "
    "drift and data contract checked against the model's training reference, and a manifest "
    "(scoring-summary.json) written last.",
)
def scoring_pipeline(
    model: str,
    data: str,
    output: str,
    options: dict = {},  # noqa: B006 (KFP pipeline default, never mutated)
    run_folder: bool = False,
) -> dsl.Artifact:
    scored = score(
        model=model,
        data=data,
        output=output,
        options=options,
        run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        run_folder=run_folder,
    )
    # It reads names of data that change (the champion alias, the input prefix) and writes
    # outside KFP's artifact store: a cached result would be a stale, unpublished one.
    with_s3_access(scored.set_caching_options(False))
    return scored.outputs["summary"]
