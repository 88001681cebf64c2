"""Tasks and metrics: the one list of what the project measures and which way is better."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from kfp_lifecycle.core.errors import DataError

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)

# A numeric target with at most this many distinct integer values is taken as classes.
MAX_CLASSES_FOR_INTEGER_TARGET = 20


@dataclass(frozen=True)
class MetricSpec:
    name: str
    task: str
    greater_is_better: bool
    needs_probabilities: bool = False
    description: str = ""


# Binary precision, recall and F1 are those of the positive class (the second of the
# classes: the minority class unless data.positive_class names another); for multiclass
# they are macro averages. Threshold-dependent metrics use the
# bundle's decision threshold, exactly as serving does.
METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            "roc_auc",
            CLASSIFICATION,
            True,
            needs_probabilities=True,
            description="Area under the ROC curve (multiclass: one-vs-rest, macro average).",
        ),
        MetricSpec("accuracy", CLASSIFICATION, True, description="Share of rows labelled right."),
        MetricSpec(
            "balanced_accuracy",
            CLASSIFICATION,
            True,
            description="Mean recall over the classes; chance is 1 / classes.",
        ),
        MetricSpec(
            "f1",
            CLASSIFICATION,
            True,
            description="F1 of the positive class (multiclass: macro average).",
        ),
        MetricSpec(
            "f1_macro", CLASSIFICATION, True, description="F1 averaged over classes, unweighted."
        ),
        MetricSpec(
            "f1_weighted",
            CLASSIFICATION,
            True,
            description="F1 averaged over classes, weighted by their number of rows.",
        ),
        MetricSpec(
            "precision",
            CLASSIFICATION,
            True,
            description="Precision of the positive class (multiclass: macro average).",
        ),
        MetricSpec(
            "recall",
            CLASSIFICATION,
            True,
            description="Recall of the positive class (multiclass: macro average).",
        ),
        MetricSpec(
            "pr_auc",
            CLASSIFICATION,
            True,
            needs_probabilities=True,
            description="Average precision: area under the precision-recall curve of the "
            "positive class (multiclass: one-vs-rest, macro average).",
        ),
        MetricSpec(
            "log_loss",
            CLASSIFICATION,
            False,
            needs_probabilities=True,
            description="Cross-entropy of the predicted probabilities.",
        ),
        MetricSpec(
            "brier",
            CLASSIFICATION,
            False,
            needs_probabilities=True,
            description="Brier score: mean squared error of the probabilities (binary: of the "
            "positive class, 0 to 1; multiclass: summed over classes, 0 to 2).",
        ),
        MetricSpec(
            "calibration_error",
            CLASSIFICATION,
            False,
            needs_probabilities=True,
            description="Expected calibration error over 10 equal-width probability bins "
            "(binary: positive-class probability; multiclass: the top class's).",
        ),
        MetricSpec("rmse", REGRESSION, False, description="Root mean squared error."),
        MetricSpec("mae", REGRESSION, False, description="Mean absolute error."),
        MetricSpec("r2", REGRESSION, True, description="Share of the target's variance explained."),
        MetricSpec(
            "mape",
            REGRESSION,
            False,
            description="Mean absolute percentage error, as a fraction, over rows whose target "
            "is not zero (a zero target has no percentage error); NaN if every target is zero.",
        ),
    )
}

PRIMARY_METRIC = {CLASSIFICATION: "roc_auc", REGRESSION: "rmse"}


def metrics_for(task: str) -> list[str]:
    return [name for name, spec in METRICS.items() if spec.task == task]


def detect_task(target: pd.Series) -> str:
    """Classification for text, boolean and few-valued integer targets; regression otherwise."""
    values = target.dropna()
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return CLASSIFICATION
    is_integral = bool((values == values.round()).all())
    if is_integral and values.nunique() <= MAX_CLASSES_FOR_INTEGER_TARGET:
        return CLASSIFICATION
    return REGRESSION


def resolve_task(requested: str, target: pd.Series) -> str:
    if requested in ("", "auto"):
        return detect_task(target)
    if requested not in TASKS:
        raise DataError(f"unknown task '{requested}'; choose one of: auto, {', '.join(TASKS)}")
    if requested == REGRESSION and not pd.api.types.is_numeric_dtype(target.dropna()):
        raise DataError(
            f"task 'regression' needs a numeric target, but '{target.name}' holds "
            f"{target.dtype} values such as {target.dropna().iloc[0]!r}"
        )
    return requested


def resolve_metric(requested: str, task: str) -> str:
    if requested in ("", "auto"):
        return PRIMARY_METRIC[task]
    spec = METRICS.get(requested)
    if spec is None or spec.task != task:
        raise DataError(
            f"metric '{requested}' does not apply to {task}; choose one of: "
            f"{', '.join(metrics_for(task))}"
        )
    return requested


def is_better(metric: str, candidate: float, reference: float) -> bool:
    if METRICS[metric].greater_is_better:
        return candidate > reference
    return candidate < reference
