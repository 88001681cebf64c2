"""Quality: the served model's metrics once the labels arrive, window by window.

Predictions are logged when they are made (serving/payload_log.py); the truth comes later.
Joined by request id (and the row's index in the request), each time window and model
version gets the task's metrics, computed by the same function the evaluate step uses, so
live figures compare with the test figures kept in the model's metadata. A window whose
primary metric falls below the test figure by more than the tolerance is a quality drop.
"""

import math
from typing import Any

import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output
from pydantic import BaseModel, ConfigDict, Field

from kfp_lifecycle.bundle import Prediction
from kfp_lifecycle.component import component
from kfp_lifecycle.components.evaluate import compute_metrics
from kfp_lifecycle.errors import DataError
from kfp_lifecycle.serving.payload_log import (
    MODEL_VERSION,
    PREDICTION,
    PROBABILITY_PREFIX,
    REQUEST_ID,
    ROW,
    TIMESTAMP,
)
from kfp_lifecycle.tasks import CLASSIFICATION, METRICS, PRIMARY_METRIC

LABEL = "label"


class QualityOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: str = Field("1D", description="Time window per row of metrics (pandas frequency).")
    metric: str = Field("", description="The metric watched for a drop (empty: the primary).")
    tolerance: float = Field(
        0.05,
        ge=0,
        description="A window drops when its metric is worse than the model's test figure by "
        "more than this (in the metric's units).",
    )
    min_rows_per_window: int = Field(
        50, ge=1, description="Windows with fewer labelled rows are shown but never judged."
    )


def join_ground_truth(
    predictions: pd.DataFrame, labels: pd.DataFrame, target: str
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Logged rows with their label in LABEL; counts of matched, waiting and orphan rows."""
    keys = [REQUEST_ID, ROW] if ROW in labels.columns else [REQUEST_ID]
    for name in [*keys, target]:
        if name not in labels.columns:
            raise DataError(f"the labels lack column '{name}' (they need {', '.join(keys)}, "
                            f"'{target}')")  # fmt: skip
    repeated = labels[labels.duplicated(keys, keep=False)]
    if len(repeated):
        shown = ", ".join(repeated[REQUEST_ID].astype(str).unique()[:5])
        raise DataError(f"the labels name some requests twice: {shown}")
    truth = labels[[*keys, target]].rename(columns={target: LABEL}).dropna(subset=[LABEL])
    joined = predictions.merge(truth, on=keys, how="left", indicator=True)
    matched = joined[joined["_merge"] == "both"].drop(columns="_merge")
    counts = {
        "matched": len(matched),
        "waiting": int((joined["_merge"] == "left_only").sum()),
        "orphans": len(truth) - len(matched),
    }
    return matched, counts


def _prediction(rows: pd.DataFrame, task: str) -> tuple[list[Any], Prediction]:
    if task != CLASSIFICATION:
        return rows[LABEL].astype(float).tolist(), Prediction(rows[PREDICTION].tolist(), None, None)
    columns = [c for c in rows.columns if c.startswith(PROBABILITY_PREFIX)]
    classes = [c.removeprefix(PROBABILITY_PREFIX) for c in columns]
    truth = rows[LABEL].astype(str).tolist()
    unknown = sorted(set(truth) - set(classes))
    if unknown:
        raise DataError(
            f"label(s) {', '.join(map(repr, unknown))} are not classes of the model "
            f"({', '.join(classes)})"
        )
    probabilities = rows[columns].to_numpy(dtype=float)
    return truth, Prediction(rows[PREDICTION].astype(str).tolist(), probabilities, classes)


def windowed_quality(joined: pd.DataFrame, task: str, window: str = "1D") -> list[dict[str, Any]]:
    """The task's metrics per (time window, model version), oldest first."""
    if joined.empty:
        return []
    stamps = pd.to_datetime(joined[TIMESTAMP], utc=True)
    result = []
    for (start, version), rows in joined.groupby(
        [stamps.dt.floor(window), joined[MODEL_VERSION].astype(str)], sort=True
    ):
        truth, prediction = _prediction(rows, task)
        metrics = compute_metrics(task, truth, prediction)
        result.append(
            {
                "window_start": start.isoformat(),
                "model_version": version,
                "rows": len(rows),
                "metrics": {k: (v if math.isfinite(v) else None) for k, v in metrics.items()},
            }
        )
    return result


def quality_drops(
    windows: list[dict[str, Any]],
    reference: dict[str, float],
    metric: str,
    tolerance: float,
    min_rows: int,
) -> list[str]:
    """One sentence per judged window whose metric is worse than the reference + tolerance."""
    if metric not in reference:
        raise DataError(f"the model's test metrics have no '{metric}' to compare with")
    greater = METRICS[metric].greater_is_better
    bound = reference[metric] - tolerance if greater else reference[metric] + tolerance
    drops = []
    for window in windows:
        value = window["metrics"].get(metric)
        if window["rows"] < min_rows or value is None:
            continue
        if (value < bound) if greater else (value > bound):
            drops.append(
                f"window {window['window_start']} (version {window['model_version']}, "
                f"{window['rows']} rows): {metric} {value:.4f}, test {reference[metric]:.4f}, "
                f"{'floor' if greater else 'ceiling'} {bound:.4f}"
            )
    return drops


def assess_quality(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    task: str,
    target: str,
    reference: dict[str, float],
    options: QualityOptions,
) -> dict[str, Any]:
    """The quality document: counts, windows, and the drop verdict ({} without labels)."""
    if labels.empty:
        return {}
    metric = options.metric or PRIMARY_METRIC[task]
    if metric not in METRICS or METRICS[metric].task != task:
        raise DataError(f"metric '{metric}' does not apply to {task}")
    joined, counts = join_ground_truth(predictions, labels, target)
    windows = windowed_quality(joined, task, options.window)
    drops = quality_drops(
        windows, reference, metric, options.tolerance, options.min_rows_per_window
    )
    return {
        "metric": metric,
        "reference": reference.get(metric),
        "tolerance": options.tolerance,
        **counts,
        "windows": windows,
        "dropped": bool(drops),
        "drop_reasons": drops,
    }


@component
def quality(
    predictions: Input[Dataset],
    labels: Input[Dataset],
    task: str,
    target: str,
    test_metrics: dict,
    quality: Output[Artifact],
    metrics: Output[Metrics],
    options: dict = {},  # noqa: B006 (KFP default, never mutated)
):
    """Live quality: logged predictions joined with late labels, metrics per time window.

    Args:
        predictions: Logged request rows (serving/payload_log.py columns).
        labels: Ground truth: request_id [, row] and the target column; no rows: no labels
            yet, and the quality document is empty.
        task: classification or regression.
        target: The label column's name in `labels`.
        test_metrics: The model's test metrics (what live quality is compared with).
        quality: JSON: metric, reference, tolerance, matched / waiting / orphans counts,
            windows (start, model_version, rows, metrics), dropped, drop_reasons.
        metrics: The latest judged window's metrics (dashboard).
        options: QualityOptions: window, metric, tolerance, min_rows_per_window.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.components.quality import QualityOptions, assess_quality

    settings = QualityOptions.model_validate(options)
    result = assess_quality(
        pd.read_parquet(predictions.path),
        pd.read_parquet(labels.path),
        task,
        target,
        test_metrics,
        settings,
    )
    with open(quality.path, "w") as handle:
        json.dump(result, handle, indent=2)
    if not result:
        print("no labels yet: live quality not measured")
        return
    judged = [w for w in result["windows"] if w["rows"] >= settings.min_rows_per_window]
    for name, value in (judged[-1]["metrics"] if judged else {}).items():
        if value is not None:
            metrics.log_metric(name, value)
    print(
        f"labelled {result['matched']} row(s), {result['waiting']} waiting, "
        f"{result['orphans']} label(s) without a logged prediction; "
        + ("QUALITY DROP: " + "; ".join(result["drop_reasons"]) if result["dropped"] else "holds")
    )
