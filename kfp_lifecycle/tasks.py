"""Tasks and metrics: the one list of what the project measures and which way is better."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from kfp_lifecycle.errors import DataError

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


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("roc_auc", CLASSIFICATION, True, needs_probabilities=True),
        MetricSpec("accuracy", CLASSIFICATION, True),
        MetricSpec("balanced_accuracy", CLASSIFICATION, True),
        MetricSpec("f1", CLASSIFICATION, True),
        MetricSpec("precision", CLASSIFICATION, True),
        MetricSpec("recall", CLASSIFICATION, True),
        MetricSpec("log_loss", CLASSIFICATION, False, needs_probabilities=True),
        MetricSpec("rmse", REGRESSION, False),
        MetricSpec("mae", REGRESSION, False),
        MetricSpec("r2", REGRESSION, True),
    )
}

PRIMARY_METRIC = {CLASSIFICATION: "roc_auc", REGRESSION: "rmse"}

# Used by the gate when the user sets no threshold of their own: a model must beat chance
# (classification) or the mean of the target (regression) by a visible margin.
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    CLASSIFICATION: {"roc_auc": 0.70},
    REGRESSION: {"r2": 0.10},
}


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
