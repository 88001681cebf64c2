"""Quality: the served model's metrics once the labels arrive, window by window.

Predictions are logged when they are made (serving/payload_log.py, whose column names are
used here); the truth comes later. Joined by request id (and the row's index in the
request), each time window and model version gets the task's metrics, computed by the same
function the evaluate step uses, so live figures compare with the test figures kept in the
model's metadata. A window whose metric falls short of the test figure by more than the
tolerance is a quality drop.
"""

import logging
import math
from typing import Any

import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kfp_lifecycle.component import component
from kfp_lifecycle.components.evaluate import compute_metrics
from kfp_lifecycle.core.bundle import Prediction
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION, METRICS, PRIMARY_METRIC
from kfp_lifecycle.serving.payload_log import (
    MODEL_VERSION,
    PREDICTION,
    PROBABILITY_PREFIX,
    REQUEST_ID,
    ROW,
    TIMESTAMP,
)

logger = logging.getLogger(__name__)

LABEL = "label"  # the joined table's ground-truth column
SHOWN_IDS = 5  # an error names at most this many ids


class QualityOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: str = Field(
        "1D", description="Time window per row of metrics: a fixed pandas frequency (1D, 6h)."
    )
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

    @field_validator("window")
    @classmethod
    def _fixed_frequency(cls, window: str) -> str:
        try:
            pd.Timestamp("2026-01-01", tz="UTC").floor(window)
        except ValueError as error:
            raise ValueError(
                f"window '{window}' is not a fixed pandas frequency: {error}"
            ) from None
        return window


def _shown(ids: pd.Series) -> str:
    unique = ids.astype(str).unique()
    more = f" and {len(unique) - SHOWN_IDS} more" if len(unique) > SHOWN_IDS else ""
    return ", ".join(unique[:SHOWN_IDS]) + more


def _keys(frame: pd.DataFrame, keys: list[str], side: str) -> pd.DataFrame:
    """The join keys as text (request id) and integer (row), or an error naming the column."""
    keyed = frame.copy()
    keyed[REQUEST_ID] = keyed[REQUEST_ID].astype(str)
    if ROW in keys:
        rows = pd.to_numeric(keyed[ROW], errors="coerce")
        bad = keyed[rows.isna() | (rows != rows.round())]
        if len(bad):
            raise DataError(
                f"the {side}' column '{ROW}' holds values that are not row indices, for "
                f"request(s) {_shown(bad[REQUEST_ID])}"
            )
        keyed[ROW] = rows.astype("int64")
    repeated = keyed[keyed.duplicated(keys, keep=False)]
    if len(repeated):
        what = "request id and row" if ROW in keys else "request id"
        raise DataError(f"the {side} name the same {what} twice: {_shown(repeated[REQUEST_ID])}")
    return keyed


def join_ground_truth(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    label_column: str,
    id_column: str = REQUEST_ID,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Logged ids, versions and outputs with their label in LABEL; how many rows matched.

    `predictions` are request-log rows; `labels` hold `id_column`, optionally ROW (the row's
    index in its request: needed when a request predicted several rows) and `label_column`.
    A label left empty has not arrived. Counts: matched, waiting (predictions without a
    label yet) and orphans (labels without a logged prediction)."""
    for name in (REQUEST_ID, ROW, TIMESTAMP, MODEL_VERSION, PREDICTION):
        if name not in predictions.columns:
            raise DataError(f"the logged predictions lack column '{name}': are they a request "
                            "log written by the model server?")  # fmt: skip
    for name in (id_column, label_column):
        if name not in labels.columns:
            raise DataError(
                f"the labels lack column '{name}' (they need '{id_column}', '{label_column}' "
                f"and, for requests of several rows, '{ROW}')"
            )
    truth = pd.DataFrame({REQUEST_ID: labels[id_column].to_numpy()})
    if ROW in labels.columns and id_column != ROW:
        truth[ROW] = labels[ROW].to_numpy()
    truth[LABEL] = labels[label_column].to_numpy()
    keys = [c for c in truth.columns if c != LABEL]
    truth = truth.dropna(subset=[LABEL])
    # Only what quality needs from the log (an input column could be called "label").
    after = list(predictions.columns[predictions.columns.get_loc(PREDICTION) + 1 :])
    outputs = [PREDICTION, *(c for c in after if c.startswith(PROBABILITY_PREFIX))]
    predictions = predictions[[REQUEST_ID, ROW, TIMESTAMP, MODEL_VERSION, *outputs]]
    logged = _keys(predictions, [REQUEST_ID, ROW], "logged predictions")
    truth = _keys(truth, keys, "labels")
    if ROW not in keys:
        several = logged[logged.duplicated(REQUEST_ID, keep=False)]
        several = several[several[REQUEST_ID].isin(truth[REQUEST_ID])]
        if len(several):
            raise DataError(
                f"request(s) {_shown(several[REQUEST_ID])} predicted several rows: the labels "
                f"need a '{ROW}' column to say which row each is for"
            )
    joined = logged.merge(truth, on=keys, how="left", indicator=True)
    matched = joined[joined["_merge"] == "both"].drop(columns="_merge")
    counts = {
        "matched": len(matched),
        "waiting": int((joined["_merge"] == "left_only").sum()),
        "orphans": len(truth) - len(matched),
    }
    return matched.reset_index(drop=True), counts


def _class_text(values: pd.Series) -> list[str]:
    """Labels as the text of the class names (1.0 read from a CSV is class '1')."""
    return [
        str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in values.tolist()
    ]


def _prediction(rows: pd.DataFrame, task: str) -> tuple[list[Any], Prediction]:
    if task != CLASSIFICATION:
        truth = pd.to_numeric(rows[LABEL], errors="coerce")
        if truth.isna().any():
            bad = rows.loc[truth.isna(), LABEL].astype(str).unique()[:SHOWN_IDS]
            raise DataError(f"regression labels must be numbers, got {', '.join(map(repr, bad))}")
        return truth.tolist(), Prediction(rows[PREDICTION].astype(float).tolist(), None, None)
    columns = [c for c in rows.columns if c.startswith(PROBABILITY_PREFIX)]
    classes = [c.removeprefix(PROBABILITY_PREFIX) for c in columns]
    if not classes:
        raise DataError("the logged predictions have no probability columns "
                        f"({PROBABILITY_PREFIX}<class>): was the model a classifier?")  # fmt: skip
    truth = _class_text(rows[LABEL])
    unknown = sorted(set(truth) - set(classes))
    if unknown:
        raise DataError(
            f"label(s) {', '.join(map(repr, unknown))} are not classes of the model "
            f"({', '.join(classes)})"
        )
    probabilities = rows[columns].to_numpy(dtype=float)
    return truth, Prediction(_class_text(rows[PREDICTION]), probabilities, classes)


def windowed_quality(joined: pd.DataFrame, task: str, window: str = "1D") -> list[dict[str, Any]]:
    """The task's metrics per (time window, model version), oldest first, with row counts.

    A metric that a window cannot define (ROC AUC over one class) is None."""
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


def _bound(reference_metrics: dict[str, float], metric: str, tolerance: float) -> float:
    """The worst value a window may reach: the test figure minus (or plus) the tolerance."""
    if reference_metrics.get(metric) is None:
        raise DataError(f"the model's test metrics have no '{metric}' to compare with")
    if METRICS[metric].greater_is_better:
        return reference_metrics[metric] - tolerance
    return reference_metrics[metric] + tolerance


def window_dropped(window: dict[str, Any], metric: str, bound: float) -> bool:
    value = window["metrics"].get(metric)
    if value is None:
        return False
    return value < bound if METRICS[metric].greater_is_better else value > bound


def quality_drop(
    windows: list[dict[str, Any]],
    reference_metrics: dict[str, float],
    metric: str,
    tolerance: float,
    min_rows: int = 1,
) -> list[str]:
    """The verdict: one sentence per judged window (at least `min_rows` rows, the metric
    defined) whose metric is worse than the test figure by more than `tolerance`; no
    sentence, no drop."""
    bound = _bound(reference_metrics, metric, tolerance)
    side = "floor" if METRICS[metric].greater_is_better else "ceiling"
    return [
        f"window {w['window_start']} (version {w['model_version']}, {w['rows']} rows): "
        f"{metric} {w['metrics'][metric]:.4f}, test {reference_metrics[metric]:.4f}, "
        f"{side} {bound:.4f}"
        for w in windows
        if w["rows"] >= min_rows and window_dropped(w, metric, bound)
    ]


def assess_quality(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    task: str,
    target: str,
    reference: dict[str, float],
    options: QualityOptions,
) -> dict[str, Any]:
    """The quality document ({} without labels): the metric and its test figure, the join's
    counts, every window (judged or not, dropped or not) and the drop verdict."""
    if labels.empty:
        return {}
    metric = options.metric or PRIMARY_METRIC[task]
    if metric not in METRICS or METRICS[metric].task != task:
        raise DataError(f"metric '{metric}' does not apply to {task}")
    # The labels name the request id as the log does (request_id, row) and the truth as the
    # model's target: the monitor step joins them so for retraining too.
    label_column = target
    joined, counts = join_ground_truth(predictions, labels, label_column)
    windows = windowed_quality(joined, task, options.window)
    drops = quality_drop(windows, reference, metric, options.tolerance, options.min_rows_per_window)
    bound = _bound(reference, metric, options.tolerance)
    for window in windows:
        judged = window["rows"] >= options.min_rows_per_window
        window["judged"] = judged and window["metrics"].get(metric) is not None
        window["dropped"] = judged and window_dropped(window, metric, bound)
    return {
        "metric": metric,
        "reference": reference.get(metric),
        "tolerance": options.tolerance,
        "min_rows_per_window": options.min_rows_per_window,
        "label_column": label_column,
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

    from kfp_lifecycle.components.quality import QualityOptions, assess_quality, logger

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
        logger.info("no labels yet: live quality not measured")
        return
    judged = [w for w in result["windows"] if w["rows"] >= settings.min_rows_per_window]
    for name, value in (judged[-1]["metrics"] if judged else {}).items():
        if value is not None:
            metrics.log_metric(name, value)
    logger.info(
        f"labelled {result['matched']} row(s), {result['waiting']} waiting, "
        f"{result['orphans']} label(s) without a logged prediction; "
        + ("QUALITY DROP: " + "; ".join(result["drop_reasons"]) if result["dropped"] else "holds")
    )
