"""The training pipeline: data in, a gated and registered model bundle out."""

from kfp import dsl

from kfp_lifecycle.budget import DEFAULT_TIME_BUDGET
from kfp_lifecycle.cluster import with_db_access, with_s3_access
from kfp_lifecycle.components.balance import balance
from kfp_lifecycle.components.calibrate import calibrate
from kfp_lifecycle.components.clean import clean
from kfp_lifecycle.components.diagnose import diagnose
from kfp_lifecycle.components.evaluate import evaluate
from kfp_lifecycle.components.explain import explain
from kfp_lifecycle.components.export import export
from kfp_lifecycle.components.features import features
from kfp_lifecycle.components.gate import gate
from kfp_lifecycle.components.ingest import ingest
from kfp_lifecycle.components.preprocess import preprocess
from kfp_lifecycle.components.profile import profile
from kfp_lifecycle.components.register import register
from kfp_lifecycle.components.report import report
from kfp_lifecycle.components.select import select
from kfp_lifecycle.components.split import split
from kfp_lifecycle.components.train import train
from kfp_lifecycle.components.validate import validate
from kfp_lifecycle.families import DEFAULT_FAMILIES

PIPELINE_NAME = "training"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Ingest, validate, profile, clean, split, preprocess, select features, "
    "balance, tune and train model families in parallel, select the best, calibrate it "
    "(probabilities and decision threshold), evaluate it on held-out data, gate it against "
    "business thresholds and the current champion, diagnose its fit, explain it, report, "
    "assemble and register the bundle from the model and those documents, and export it as "
    "one ONNX model.",
)
def training_pipeline(
    data: str,
    target: str,
    registry: str,
    model_name: str,
    task: str = "auto",
    metric: str = "auto",
    families: list = DEFAULT_FAMILIES,
    tune_options: dict = {},  # noqa: B006
    calibrate_options: dict = {},  # noqa: B006
    diagnose_options: dict = {},  # noqa: B006
    explain_options: dict = {},  # noqa: B006
    report_options: dict = {},  # noqa: B006
    gate_options: dict = {},  # noqa: B006
    profile_options: dict = {},  # noqa: B006
    clean_options: dict = {},  # noqa: B006
    split_options: dict = {},  # noqa: B006
    preprocess_options: dict = {},  # noqa: B006
    features_options: dict = {},  # noqa: B006
    balance_options: dict = {},  # noqa: B006
    sql_options: dict = {},  # noqa: B006
    positive_class: str = "",
    time_budget: float = DEFAULT_TIME_BUDGET,
    onnx_export: bool = True,
    engine: str = "pandas",
    dask_options: dict = {},  # noqa: B006
    dask_scheduler: str = "",
) -> dsl.Artifact:
    # The data stage and training run on pandas or Dask (kfp_lifecycle/dask_engine), on the
    # scheduler at dask_scheduler when given (training-dask passes its cluster's address;
    # KFP cannot put a task's output inside the dask_options dict). features and balance
    # only read a sample of the rows, with no cluster.
    sampled = {"engine": engine, "dask_options": dask_options}
    on = {**sampled, "dask_scheduler": dask_scheduler}
    # never cached: the key is the URI string, and the data behind a URI changes
    ingested = with_db_access(
        with_s3_access(
            ingest(
                source=data,
                sql_options=sql_options,
                registry=registry,
                model_name=model_name,
                **on,
            ).set_caching_options(False)
        )
    )
    checked = with_s3_access(
        validate(
            dataset=ingested.outputs["dataset"],
            target=target,
            task=task,
            metric=metric,
            registry=registry,
            model_name=model_name,
            positive_class=positive_class,
            **on,
        ).set_caching_options(False)  # the champion whose contract applies may have changed
    )
    resolved_task = checked.outputs["task"]
    profile(
        dataset=ingested.outputs["dataset"],
        target=target,
        task=resolved_task,
        options=profile_options,
        **on,
    ).set_display_name("profile (EDA report)")
    cleaned = clean(dataset=ingested.outputs["dataset"], target=target, options=clean_options, **on)
    parts = split(
        dataset=cleaned.outputs["cleaned"],
        target=target,
        task=resolved_task,
        options=split_options,
        **on,
    )
    # Preprocessing is fitted on real training rows; balancing only adds rows for the models.
    prepared = preprocess(
        train=parts.outputs["train"],
        target=target,
        task=resolved_task,
        options=preprocess_options,
        **on,
    )
    selected = features(
        train=prepared.outputs["train_clean"],
        preprocessor=prepared.outputs["preprocessor"],
        target=target,
        task=resolved_task,
        options=features_options,
        **sampled,
    )
    balanced = balance(
        train=prepared.outputs["train_clean"],
        target=target,
        task=resolved_task,
        options=balance_options,
        **sampled,
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
            tune=tune_options,
            split=split_options,  # tuning's cross-validation follows the split's strategy
            balance=balance_options,  # ... and replays the balancing inside each fold
            time_budget=time_budget,
            **on,
        )

    chosen = select(
        candidates=dsl.Collected(candidate.outputs["model"]),
        primary_metric=checked.outputs["primary_metric"],
    )
    # The model stays as select passed it on: what the steps after it decide travels beside
    # it as documents, and register assembles the registered bundle from them once.
    model = chosen.outputs["selected"]
    calibrated = calibrate(
        model=model,
        validation=parts.outputs["validation"],
        options=calibrate_options,
    ).set_display_name("calibrate (decision threshold)")
    calibration = calibrated.outputs["calibration"]
    evaluated = evaluate(model=model, calibration=calibration, test=parts.outputs["test"])
    decided = with_s3_access(
        gate(
            model=model,
            calibration=calibration,
            test=parts.outputs["test"],
            evaluation=evaluated.outputs["evaluation"],
            task=resolved_task,
            registry=registry,
            model_name=model_name,
            options=gate_options,
        ).set_caching_options(False)  # the registry's champion is an input it cannot see
    )
    diagnosed = diagnose(
        model=model,
        calibration=calibration,
        train=prepared.outputs["train_clean"],
        validation=parts.outputs["validation"],
        options=diagnose_options,
        trials=dsl.Collected(candidate.outputs["trials"]),
        time_budget=time_budget,
    ).set_display_name("diagnose (learning curves)")
    explained = explain(
        model=model,
        calibration=calibration,
        test=parts.outputs["test"],
        options=explain_options,
        time_budget=time_budget,
    ).set_display_name("explain (feature importance)")
    reported = report(
        model=model,
        calibration=calibration,
        leaderboard=chosen.outputs["leaderboard"],
        test=parts.outputs["test"],
        evaluation=evaluated.outputs["evaluation"],
        blessing=decided.outputs["blessing"],
        diagnosis=diagnosed.outputs["diagnosis"],
        explanation=explained.outputs["explanation"],
        trials=dsl.Collected(candidate.outputs["trials"]),
        preprocessing=prepared.outputs["report"],
        features=selected.outputs["report"],
        options=report_options,
    ).set_display_name("report (evaluation report, model card)")
    registered = with_s3_access(
        register(
            model=model,
            leaderboard=chosen.outputs["leaderboard"],
            calibration=calibration,
            explanation=explained.outputs["explanation"],
            model_card=reported.outputs["model_card"],
            evaluation=evaluated.outputs["evaluation"],
            blessing=decided.outputs["blessing"],
            contract=checked.outputs["contract"],
            reference=parts.outputs["train"],
            registry=registry,
            model_name=model_name,
            data_source=data,
            data_sha256=ingested.outputs["Output"],
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).set_caching_options(False)
    )
    with dsl.If(onnx_export == True):  # noqa: E712 (a pipeline condition, not Python's)
        export(
            model=registered.outputs["bundle"],
            test=parts.outputs["test"],
            summary=registered.outputs["summary"],
        ).set_display_name("export (ONNX, checked against the bundle)")
    return registered.outputs["summary"]
