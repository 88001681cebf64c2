"""Evaluate: the task's metrics on held-out rows, logged where the Kubeflow dashboard draws them.

The decision threshold and the probability calibration the metrics are computed with are
chosen on validation rows by the calibrate step (components/calibrate.py).
"""

import logging
from typing import Any

import numpy as np
import pandas as pd
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output
from sklearn import metrics as skm

from kfp_lifecycle.component import component
from kfp_lifecycle.core.bundle import DEFAULT_DECISION_THRESHOLD, Bundle, Prediction
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION, PRIMARY_METRIC

logger = logging.getLogger(__name__)

ROC_POINTS = 200  # the dashboard draws a curve; thousands of points only slow it down
CALIBRATION_BINS = 10
SCATTER_POINTS = 500  # regression: predicted against actual, for the report's plot


def compute_metrics(task: str, y_true: list[Any], prediction: Prediction) -> dict[str, float]:
    """Every metric of tasks.METRICS for this task, by name."""
    if task != CLASSIFICATION:
        y = np.asarray(y_true, dtype=float)
        y_pred = np.asarray(prediction.labels, dtype=float)
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y, y_pred))),
            "mae": float(skm.mean_absolute_error(y, y_pred)),
            "r2": float(skm.r2_score(y, y_pred)),
            "mape": mean_absolute_percentage_error(y, y_pred),
        }
    classes = prediction.classes
    probabilities = prediction.probabilities
    labels = prediction.labels
    binary = len(classes) == 2
    roc_auc = pr_auc = float("nan")  # undefined unless every class has a row (a slice may not)
    if set(classes) <= set(y_true):
        if binary:
            is_positive = np.asarray(y_true) == classes[1]
            roc_auc = skm.roc_auc_score(is_positive, probabilities[:, 1])
            pr_auc = skm.average_precision_score(is_positive, probabilities[:, 1])
        else:
            roc_auc = skm.roc_auc_score(y_true, probabilities, multi_class="ovr", labels=classes)
            pr_auc = skm.average_precision_score(
                one_hot(y_true, classes), probabilities, average="macro"
            )
    average = "binary" if binary else "macro"
    options = {"average": average, "zero_division": 0}
    if binary:
        options["pos_label"] = classes[1]
    return {
        "roc_auc": float(roc_auc),
        "accuracy": float(skm.accuracy_score(y_true, labels)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, labels)),
        "f1": float(skm.f1_score(y_true, labels, **options)),
        "f1_macro": float(skm.f1_score(y_true, labels, average="macro", zero_division=0)),
        "f1_weighted": float(skm.f1_score(y_true, labels, average="weighted", zero_division=0)),
        "precision": float(skm.precision_score(y_true, labels, **options)),
        "recall": float(skm.recall_score(y_true, labels, **options)),
        "pr_auc": float(pr_auc),
        **proper_scores(y_true, probabilities, classes),
        "calibration_error": calibration(y_true, prediction)["expected_calibration_error"],
    }


def proper_scores(
    y_true: list[Any] | np.ndarray, probabilities: np.ndarray, classes: list[Any]
) -> dict[str, float]:
    """Log loss and Brier score. scikit-learn reads the probability columns in sorted label
    order, and a binary model's classes put the positive class last whatever its sort
    order: the columns are put in sorted order first."""
    order = sorted(range(len(classes)), key=lambda i: classes[i])
    labels = [classes[i] for i in order]
    ordered = np.asarray(probabilities)[:, order]
    return {
        "log_loss": float(skm.log_loss(y_true, ordered, labels=labels)),
        # scikit-learn halves the binary score (0..1) and keeps the multi-class one (0..2).
        "brier": float(skm.brier_score_loss(y_true, ordered, labels=labels)),
    }


def mean_absolute_percentage_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """MAPE over the rows whose target is not zero, as a fraction.

    A zero target has no percentage error; scikit-learn divides by machine epsilon there, so
    one such row turns the mean into ~1e15. Those rows are left out (RMSE and MAE still see
    them); with no row left the result is NaN, which fails any gate bound on it.
    """
    nonzero = y_true != 0
    if not nonzero.any():
        return float("nan")
    return float(np.mean(np.abs((y_pred[nonzero] - y_true[nonzero]) / y_true[nonzero])))


def one_hot(y_true: list[Any], classes: list[Any]) -> np.ndarray:
    y = np.asarray(y_true)
    return np.column_stack([y == c for c in classes]).astype(int)


def reliability_curve(
    outcomes: np.ndarray, confidence: np.ndarray, bins: int = CALIBRATION_BINS
) -> dict[str, Any]:
    """Observed frequency against mean predicted probability per equal-width bin.

    The expected calibration error is the row-weighted mean gap between the two; empty bins
    are left out of the curve.
    """
    outcomes = np.asarray(outcomes, dtype=float)
    confidence = np.asarray(confidence, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1).round(12)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    filled = count > 0
    mean_predicted = np.bincount(index, confidence, bins)[filled] / count[filled]
    observed = np.bincount(index, outcomes, bins)[filled] / count[filled]
    gap = float(np.sum(count[filled] * np.abs(observed - mean_predicted)) / len(confidence))
    return {
        "bin_lower": edges[:-1][filled].tolist(),
        "bin_upper": edges[1:][filled].tolist(),
        "mean_predicted": mean_predicted.tolist(),
        "observed": observed.tolist(),
        "count": count[filled].tolist(),
        "expected_calibration_error": gap,
    }


def calibration(y_true: list[Any], prediction: Prediction) -> dict[str, Any]:
    """Binary: the positive class's probability; multiclass: the top class's (confidence)."""
    classes, probabilities = prediction.classes, prediction.probabilities
    y = np.asarray(y_true)
    if len(classes) == 2:
        curve = reliability_curve(y == classes[1], probabilities[:, 1])
        return {"kind": f"probability of '{classes[1]}'", **curve}
    top = probabilities.argmax(axis=1)
    correct = y == np.asarray(classes, dtype=object)[top]
    return {"kind": "top-class probability", **reliability_curve(correct, probabilities.max(1))}


def thin_to(count: int, most: int) -> np.ndarray:
    """At most `most` indices spread evenly over `count` points, both ends included."""
    return np.unique(np.linspace(0, count - 1, min(count, most)).astype(int))


def roc_points(y_true: list[Any], scores: np.ndarray, positive: Any) -> dict[str, list[float]]:
    fpr, tpr, thresholds = skm.roc_curve(np.asarray(y_true) == positive, scores)
    keep = thin_to(len(fpr), ROC_POINTS)
    thresholds = np.clip(thresholds[keep], 0.0, 1.0)  # the first threshold is +inf
    return {
        "fpr": fpr[keep].tolist(),
        "tpr": tpr[keep].tolist(),
        "thresholds": thresholds.tolist(),
        "auc": float(skm.auc(fpr, tpr)),
    }


def pr_points(y_true: list[Any], scores: np.ndarray, positive: Any) -> dict[str, Any]:
    is_positive = np.asarray(y_true) == positive
    precision, recall, thresholds = skm.precision_recall_curve(is_positive, scores)
    thresholds = np.append(thresholds, 1.0)  # the last point (recall 0) has no threshold
    keep = thin_to(len(precision), ROC_POINTS)
    return {
        "precision": precision[keep].tolist(),
        "recall": recall[keep].tolist(),
        "thresholds": np.clip(thresholds[keep], 0.0, 1.0).tolist(),
        "prevalence": float(is_positive.mean()),
        "average_precision": float(skm.average_precision_score(is_positive, scores)),
    }


def evaluate_bundle(bundle: Bundle, frame: pd.DataFrame) -> dict[str, Any]:
    """Metrics; for classifiers also the confusion matrix, ROC and precision-recall curves
    (one-vs-rest per class for multiclass) and the reliability (calibration) curve."""
    target = bundle.metadata["target"]
    task = bundle.metadata["task"]
    if target not in frame.columns:
        raise DataError(f"target column '{target}' not found in the evaluation rows")
    if frame.empty:
        raise DataError("no rows to evaluate on")
    y_true = frame[target].tolist()
    prediction = bundle.predict(frame.drop(columns=[target]))
    result: dict[str, Any] = {
        "rows": len(frame),
        "task": task,
        "target": target,
        "primary_metric": bundle.metadata.get("primary_metric", PRIMARY_METRIC[task]),
        "metrics": compute_metrics(task, y_true, prediction),
        "notes": [],
    }
    if task != CLASSIFICATION:
        zero_targets = int((frame[target] == 0).sum())
        if zero_targets:
            result["notes"].append(f"mape leaves out {zero_targets} row(s) whose target is 0")
        sample = thin_to(len(frame), SCATTER_POINTS)
        result["predicted_vs_actual"] = {
            "actual": np.asarray(y_true, dtype=float)[sample].tolist(),
            "predicted": np.asarray(prediction.labels, dtype=float)[sample].tolist(),
        }
        return result
    classes = prediction.classes
    matrix = skm.confusion_matrix(y_true, prediction.labels, labels=classes)
    result["confusion_matrix"] = {"labels": [str(c) for c in classes], "matrix": matrix.tolist()}
    result["calibration"] = calibration(y_true, prediction)
    probabilities = prediction.probabilities
    if len(classes) == 2:
        threshold = bundle.metadata.get("decision_threshold", DEFAULT_DECISION_THRESHOLD)
        result["decision_threshold"] = threshold
        result["roc_curve"] = roc_points(y_true, probabilities[:, 1], classes[1])
        result["pr_curve"] = pr_points(y_true, probabilities[:, 1], classes[1])
        return result
    present = set(y_true)
    result["roc_curves"], result["pr_curves"] = {}, {}
    for index, label in enumerate(classes):
        if label not in present:  # no positive row: the class has no curve on these rows
            result["notes"].append(f"class '{label}' has no test row: no curve for it")
            continue
        result["roc_curves"][str(label)] = roc_points(y_true, probabilities[:, index], label)
        result["pr_curves"][str(label)] = pr_points(y_true, probabilities[:, index], label)
    return result


@component
def evaluate(
    model: Input[Model],
    calibration: Input[Artifact],
    test: Input[Dataset],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    evaluation: Output[Artifact],
):
    """Score the champion on the held-out test rows.

    Args:
        model: The selected bundle.
        calibration: The calibrate step's Calibration, applied as serving will apply it.
        test: Held-out rows that no earlier step has looked at.
        metrics: Scalar test metrics (shown in the run's dashboard).
        classification_metrics: Confusion matrix (classifiers) and ROC curve (binary only:
            KFP draws one ROC; multiclass one-vs-rest curves are in the evaluation report).
        evaluation: JSON read by the gate, the report and the registry: rows, task, target,
            primary_metric, metrics, notes; for classifiers confusion_matrix and
            calibration (reliability curve); binary: decision_threshold, roc_curve,
            pr_curve; multiclass: roc_curves and pr_curves per class (one-vs-rest)
            (core.documents.Evaluation).
    """
    import math

    import pandas as pd

    from kfp_lifecycle.components.evaluate import evaluate_bundle, logger
    from kfp_lifecycle.core.bundle import load_bundle
    from kfp_lifecycle.core.documents import (
        Calibration,
        Evaluation,
        read_document,
        served,
        write_document,
    )

    bundle = served(load_bundle(model.path), read_document(calibration.path, Calibration))
    result = evaluate_bundle(bundle, pd.read_parquet(test.path))
    for name, value in result["metrics"].items():
        if math.isfinite(value):  # the dashboard's metadata store refuses NaN
            metrics.log_metric(name, value)
    if "confusion_matrix" in result:
        matrix = result["confusion_matrix"]
        classification_metrics.log_confusion_matrix(matrix["labels"], matrix["matrix"])
    if "roc_curve" in result:
        curve = result["roc_curve"]
        classification_metrics.log_roc_curve(curve["fpr"], curve["tpr"], curve["thresholds"])
    write_document(evaluation.path, Evaluation.model_validate(result))
    logger.info("test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items()))
    for note in result["notes"]:
        logger.info(f"note: {note}")
