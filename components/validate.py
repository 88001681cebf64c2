"""Validate: refuse data that cannot train a model, and settle the task and primary metric."""

from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Output

from kfp_lifecycle.component import component
from kfp_lifecycle.errors import DataError
from kfp_lifecycle.tasks import CLASSIFICATION, resolve_metric, resolve_task

# Stratified train/validation/test needs every class on each side.
MIN_ROWS_PER_CLASS = 3


@dataclass
class ValidationResult:
    task: str
    primary_metric: str
    warnings: list[str] = field(default_factory=list)


def validate_table(
    frame: pd.DataFrame, target: str, task: str = "auto", metric: str = "auto"
) -> ValidationResult:
    """Raise DataError naming the problem; return the resolved task, metric and warnings."""
    if frame.empty:
        raise DataError("the table has no rows")
    if target not in frame.columns:
        raise DataError(
            f"target column '{target}' not found; columns are: {', '.join(map(str, frame.columns))}"
        )
    if frame.shape[1] < 2:
        raise DataError(
            f"the table has only the target column '{target}'; no features to learn from"
        )
    empty = [str(c) for c in frame.columns if frame[c].isna().all()]
    if empty:
        raise DataError(f"column(s) entirely null: {', '.join(empty)}")

    labels = frame[target]
    warnings = []
    missing_labels = int(labels.isna().sum())
    if missing_labels:
        warnings.append(
            f"target '{target}' is missing in {missing_labels} row(s); "
            "they are left out of training"
        )
        labels = labels.dropna()
    if labels.nunique() < 2:
        raise DataError(
            f"target '{target}' is constant ({labels.iloc[0]!r}); a model needs at least two values"
        )

    resolved_task = resolve_task(task, labels)
    if resolved_task == CLASSIFICATION:
        counts = labels.value_counts()
        rare = counts[counts < MIN_ROWS_PER_CLASS]
        if len(rare):
            listed = ", ".join(f"{label!r} ({n})" for label, n in rare.items())
            raise DataError(
                f"class(es) of '{target}' with fewer than {MIN_ROWS_PER_CLASS} rows: {listed}; "
                "a stratified split needs more examples, or use --task regression"
            )
    return ValidationResult(resolved_task, resolve_metric(metric, resolved_task), warnings)


@component
def validate(
    dataset: Input[Dataset],
    target: str,
    report: Output[Artifact],
    task: str = "auto",
    metric: str = "auto",
) -> NamedTuple("ValidateOutputs", task=str, primary_metric=str):
    """Check the table can train a model and resolve the task and primary metric.

    Args:
        dataset: The ingested table.
        target: Name of the column to predict.
        report: JSON with the resolved task, primary metric and warnings. Steps inside a
            ParallelFor read it instead of the parameters below (kfp.local 2.17 replaces
            upstream task outputs passed into a loop with the loop item).
        task: classification, regression, or auto (detected from the target).
        metric: Primary metric used to pick the champion, or auto (ROC-AUC / RMSE).

    Returns:
        task: The resolved task.
        primary_metric: The resolved primary metric.
    """
    import json
    from dataclasses import asdict

    import pandas as pd

    from kfp_lifecycle.components.validate import validate_table

    result = validate_table(pd.read_parquet(dataset.path), target, task, metric)
    with open(report.path, "w") as handle:
        json.dump(asdict(result), handle, indent=2)
    for warning in result.warnings:
        print(f"WARNING: {warning}")
    print(f"task: {result.task}, primary metric: {result.primary_metric}")
    return (result.task, result.primary_metric)
