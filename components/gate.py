"""Gate: business validation. A model is blessed only if it passes every configured check.

The checks: bounds on test metrics (at least one is required: like TFX's Evaluator, the gate
refuses to bless when no metric threshold is configured), guardrails on prediction latency
and model size that the gate measures itself, and a champion/challenger comparison: the
registry's current champion is scored on the same test rows and the candidate must beat it
by a margin on the primary metric. The decision is an artifact of its own, written whether
or not the model passes. An operator may override a refusal: the model is then blessed with
every failed check kept, `overridden` set and the operator's reason recorded.
"""

import logging
import math
import statistics
import time
from pathlib import Path

import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Model, Output
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kfp_lifecycle.component import component
from kfp_lifecycle.components.evaluate import evaluate_bundle
from kfp_lifecycle.core.bundle import DEFAULT_DECISION_THRESHOLD, MODEL_FILE, Bundle
from kfp_lifecycle.core.documents import Baseline, Blessing, Check, Evaluation
from kfp_lifecycle.core.errors import DataError, LifecycleError
from kfp_lifecycle.core.tasks import METRICS, PRIMARY_METRIC, metrics_for
from kfp_lifecycle.registry import CHAMPION, load_version, open_registry

logger = logging.getLogger(__name__)

LATENCY = "latency_ms_per_row"
MODEL_SIZE = "model_size_mb"
BYTES_PER_MB = 1_000_000


class GateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Test metric -> bound: a floor where higher is better (roc_auc, recall), "
        "a ceiling otherwise (rmse, log_loss). With no metric bound here or in "
        "primary_threshold the gate blesses nothing.",
    )
    primary_threshold: float | None = Field(
        None, description="A bound on the model's primary metric, added to the thresholds."
    )
    max_latency_ms_per_row: float | None = Field(
        None,
        gt=0,
        description="Ceiling on prediction time per row in milliseconds, measured by the gate "
        "(median over latency_repeats of one batch of latency_batch_rows test rows).",
    )
    max_model_size_mb: float | None = Field(
        None, gt=0, description="Ceiling on the size of model.joblib in MB (10^6 bytes)."
    )
    compare_with_champion: bool = Field(
        True,
        description="Score the registry's `champion` on the same test rows; the candidate "
        "must beat it by champion_margin on the primary metric. Without a champion (the "
        "first model) there is nothing to compare and the check is skipped.",
    )
    champion_margin: float = Field(
        0.0,
        description="How much better than the champion the candidate must be, in the "
        "primary metric's units and its better direction (roc_auc: at least champion + "
        "margin; rmse: at most champion - margin). 0: not worse (a tie passes); a negative "
        "margin tolerates that much loss.",
    )
    latency_batch_rows: int = Field(100, ge=1, description="Test rows per timed prediction.")
    latency_repeats: int = Field(5, ge=1, description="Timed predictions; the median counts.")
    override: bool = Field(
        False,
        description="Bless even if checks fail: the operator accepts the risk. The failed "
        "checks stay in the decision, marked overridden; needs override_reason.",
    )
    override_reason: str = Field(
        "", description="Why the operator accepts the risk (required with override)."
    )

    @field_validator("thresholds")
    @classmethod
    def _known_metrics(cls, thresholds: dict[str, float]) -> dict[str, float]:
        unknown = [name for name in thresholds if name not in METRICS]
        if unknown:
            raise ValueError(
                f"unknown metric(s) {', '.join(unknown)}; choose from: {', '.join(METRICS)}"
            )
        return thresholds

    @model_validator(mode="after")
    def _override_says_why(self) -> "GateOptions":
        if self.override and not self.override_reason.strip():
            raise ValueError("override_reason is required with override: say why")
        return self


def check_thresholds(thresholds: dict[str, float], task: str) -> None:
    unknown = [name for name in thresholds if name not in metrics_for(task)]
    if unknown:
        raise LifecycleError(
            f"gate threshold on unknown metric(s) {', '.join(unknown)} for {task}; "
            f"choose from: {', '.join(metrics_for(task))}"
        )


def _bound_check(name: str, value: float, bound: float, at_most: bool) -> tuple[Check, str]:
    finite = value is not None and math.isfinite(value)
    passed = finite and (value <= bound if at_most else value >= bound)
    relation = "<=" if at_most else ">="
    shown = f"{value:.4f}" if finite else "undefined"
    reason = f"{'pass' if passed else 'FAIL'}: {name} = {shown} (required {relation} {bound})"
    return Check(name=name, value=value if finite else None, bound=bound, passed=passed), reason


def decide(
    metrics: dict[str, float],
    task: str,
    options: GateOptions,
    primary_metric: str = "",
    measured: dict[str, float] | None = None,
    baseline: Baseline | None = None,
) -> Blessing:
    """Every configured check on the candidate's test metrics and measurements.

    `measured` holds latency_ms_per_row and model_size_mb (needed only when bounded);
    `baseline` is the champion scored on the same test rows (None: no champion).
    """
    primary_metric = primary_metric or PRIMARY_METRIC[task]
    thresholds = dict(options.thresholds)
    if options.primary_threshold is not None:
        thresholds[primary_metric] = options.primary_threshold
    check_thresholds(thresholds, task)
    measured = measured or {}
    checks, reasons = [], []
    if not thresholds:
        reasons.append(
            "FAIL: no metric threshold configured: the gate blesses no model without one "
            "(set thresholds or primary_threshold)"
        )
    for name, bound in thresholds.items():
        if name not in metrics:
            raise LifecycleError(f"the evaluation has no metric '{name}' to check")
        check, reason = _bound_check(
            name, metrics[name], bound, not METRICS[name].greater_is_better
        )
        checks.append(check)
        reasons.append(reason)
    for name, bound in (
        (LATENCY, options.max_latency_ms_per_row),
        (MODEL_SIZE, options.max_model_size_mb),
    ):
        if bound is None:
            continue
        if name not in measured:
            raise LifecycleError(f"'{name}' is bounded but was not measured")
        check, reason = _bound_check(name, measured[name], bound, at_most=True)
        checks.append(check)
        reasons.append(reason)
    if not options.compare_with_champion:
        reasons.append("skip: champion comparison disabled (compare_with_champion is false)")
    elif baseline is None:
        reasons.append("skip: the registry has no champion yet: nothing to compare with")
    else:
        check, reason = _champion_check(metrics, primary_metric, baseline, options.champion_margin)
        checks.append(check)
        reasons.append(reason)

    blessed = bool(thresholds) and all(c.passed for c in checks)
    overridden = not blessed and options.override
    if overridden:
        reasons.append(f"OVERRIDDEN: blessed despite the failures above: {options.override_reason}")
    return Blessing(
        blessed=blessed or overridden,
        reasons=reasons,
        checks=checks,
        thresholds=thresholds,
        baseline=baseline,
        margin=options.champion_margin if options.compare_with_champion else None,
        primary_metric=primary_metric,
        measured=dict(measured),
        overridden=overridden,
        override_reason=options.override_reason if overridden else "",
    )


def _champion_check(
    metrics: dict[str, float], metric: str, baseline: Baseline, margin: float
) -> tuple[Check, str]:
    name = f"{metric}_vs_champion"
    champion = f"champion version {baseline.version}"
    if baseline.problem:
        return Check(name=name, value=None, bound=None, passed=False), (
            f"FAIL: cannot compare with {champion} ({baseline.uri}): {baseline.problem}"
        )
    greater = METRICS[metric].greater_is_better
    bound = baseline.metrics[metric] + margin if greater else baseline.metrics[metric] - margin
    check, _ = _bound_check(name, metrics[metric], bound, at_most=not greater)
    relation = ">=" if greater else "<="
    return check, (
        f"{'pass' if check.passed else 'FAIL'}: {metric} = {metrics[metric]:.4f} against "
        f"{champion}'s {baseline.metrics[metric]:.4f} on the same test rows (required "
        f"{relation} {bound:.4f}, margin {margin})"
    )


def measure_latency(bundle: Bundle, features: pd.DataFrame, rows: int, repeats: int) -> float:
    """Milliseconds per row: the median time of predicting one batch, over the batch size."""
    batch = features.head(rows)
    bundle.predict(batch)  # warm-up: the first call pays one-off costs (lazy imports, caches)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        bundle.predict(batch)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) / len(batch) * 1000


def champion_baseline(
    registry_uri: str, model_name: str, test: pd.DataFrame, candidate: Bundle, workdir: str
) -> Baseline | None:
    """The registry's champion scored on `test`; None without one. A champion that cannot
    be loaded or scored on these rows gives a Baseline with the problem, not an exception."""
    version = None
    try:
        version = open_registry(registry_uri).alias(model_name, CHAMPION)
        if version is None:
            return None
        champion = load_version(version.uri, workdir)
        for key in ("task", "target"):
            if champion.metadata[key] != candidate.metadata[key]:
                raise LifecycleError(
                    f"the champion's {key} is '{champion.metadata[key]}', this model's is "
                    f"'{candidate.metadata[key]}'"
                )
        metrics = evaluate_bundle(champion, test)["metrics"]
    except (LifecycleError, ValueError) as error:  # ValueError: scikit-learn, unknown labels
        number = version.version if version else None
        uri = version.uri if version else registry_uri
        return Baseline(
            version=number, uri=uri, metrics=None, problem=f"{type(error).__name__}: {error}"
        )
    return Baseline(version=version.version, uri=version.uri, metrics=metrics)


def assess(
    candidate: Bundle,
    test: pd.DataFrame,
    evaluation: Evaluation,
    task: str,
    registry_uri: str,
    model_name: str,
    options: GateOptions,
    workdir: str,
) -> Blessing:
    """Measure the candidate as it will be served (core.documents.served: its calibration
    applied), score the champion on the same test rows, then decide."""
    if test.empty:
        raise DataError("the test set has no rows: nothing to gate on")
    if candidate.metadata["task"] != task:
        raise LifecycleError(f"the model is a {candidate.metadata['task']} model, not {task}")
    if evaluation.rows != len(test):
        raise DataError(
            f"the evaluation was made on {evaluation.rows} rows but the test set has "
            f"{len(test)}: the gate must see the evaluation's own test rows"
        )
    served_threshold = candidate.metadata.get("decision_threshold", DEFAULT_DECISION_THRESHOLD)
    if evaluation.decision_threshold not in (None, served_threshold):
        raise LifecycleError(
            f"the evaluation was made at decision threshold {evaluation.decision_threshold}, "
            f"but the model is served at {served_threshold}: the gate judges what is served"
        )
    features = test.drop(columns=[candidate.metadata["target"]])
    measured = {
        LATENCY: measure_latency(
            candidate, features, options.latency_batch_rows, options.latency_repeats
        ),
        MODEL_SIZE: (Path(candidate.path) / MODEL_FILE).stat().st_size / BYTES_PER_MB,
    }
    baseline = None
    if options.compare_with_champion:
        baseline = champion_baseline(registry_uri, model_name, test, candidate, workdir)
    primary_metric = candidate.metadata.get("primary_metric", PRIMARY_METRIC[task])
    return decide(evaluation.metrics, task, options, primary_metric, measured, baseline)


@component
def gate(
    model: Input[Model],
    calibration: Input[Artifact],
    test: Input[Dataset],
    evaluation: Input[Artifact],
    task: str,
    registry: str,
    model_name: str,
    blessing: Output[Artifact],
    options: dict = {},  # noqa: B006
) -> bool:
    """Bless the model only if it passes every check: metric bounds, latency and size
    guardrails, and beating the registry's current champion on the same test rows.

    Args:
        model: The candidate bundle (the one evaluated).
        calibration: Its calibration (core.documents.Calibration): the gate measures the
            model with it applied, as it will be served.
        test: The test rows it was evaluated on; the champion is scored on them too.
        evaluation: The candidate's test-set evaluation (its metrics are checked).
        task: classification or regression (decides which metrics a threshold may name).
        registry: Registry location (a directory, file:// or s3:// URI) holding the champion.
        model_name: Registered model name whose `champion` alias is the baseline.
        blessing: JSON decision (core.documents.Blessing), written whether or not the
            model passes: blessed, overridden, reasons, checks (name, value, bound,
            passed), thresholds, baseline (the champion's version, uri and metrics on
            these rows, or null), margin.
        options: GateOptions: thresholds, primary_threshold, max_latency_ms_per_row,
            max_model_size_mb, compare_with_champion, champion_margin, latency_batch_rows,
            latency_repeats, override, override_reason. With no metric threshold nothing
            is blessed.

    Returns:
        Whether the model is blessed (overridden refusals included).
    """
    import tempfile

    import pandas as pd

    from kfp_lifecycle.components.gate import GateOptions, assess, logger
    from kfp_lifecycle.core.bundle import load_bundle
    from kfp_lifecycle.core.documents import (
        Calibration,
        Evaluation,
        read_document,
        served,
        write_document,
    )

    settings = GateOptions.model_validate(options)
    candidate = served(load_bundle(model.path), read_document(calibration.path, Calibration))
    with tempfile.TemporaryDirectory() as workdir:
        decision = assess(
            candidate,
            pd.read_parquet(test.path),
            read_document(evaluation.path, Evaluation),
            task,
            registry,
            model_name,
            settings,
            workdir,
        )
    write_document(blessing.path, decision)
    blessing.metadata.update({"blessed": decision.blessed, "overridden": decision.overridden})
    verdict = "BLESSED (OVERRIDDEN)" if decision.overridden else "BLESSED"
    logger.info(
        (verdict if decision.blessed else "NOT BLESSED") + "\n  " + "\n  ".join(decision.reasons)
    )
    return decision.blessed
