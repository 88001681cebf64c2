"""Evaluate: the task's metrics on held-out rows, logged where the Kubeflow dashboard draws them."""

from typing import Any

import numpy as np
import pandas as pd
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output
from sklearn import metrics as skm

from kfp_lifecycle.bundle import Bundle, Prediction
from kfp_lifecycle.component import component
from kfp_lifecycle.tasks import CLASSIFICATION

ROC_POINTS = 200  # the dashboard draws a curve; thousands of points only slow it down


def compute_metrics(task: str, y_true: list[Any], prediction: Prediction) -> dict[str, float]:
    """Every metric of tasks.METRICS for this task, by name."""
    if task != CLASSIFICATION:
        y_pred = np.asarray(prediction.labels, dtype=float)
        y = np.asarray(y_true, dtype=float)
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y, y_pred))),
            "mae": float(skm.mean_absolute_error(y, y_pred)),
            "r2": float(skm.r2_score(y, y_pred)),
        }
    classes = prediction.classes
    binary = len(classes) == 2
    average = "binary" if binary else "macro"
    options = {"pos_label": classes[1]} if binary else {}
    probabilities = prediction.probabilities
    if binary:
        roc_auc = skm.roc_auc_score(np.asarray(y_true) == classes[1], probabilities[:, 1])
    else:
        roc_auc = skm.roc_auc_score(y_true, probabilities, multi_class="ovr", labels=classes)
    return {
        "roc_auc": float(roc_auc),
        "accuracy": float(skm.accuracy_score(y_true, prediction.labels)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, prediction.labels)),
        "f1": float(skm.f1_score(y_true, prediction.labels, average=average, **options)),
        "precision": float(
            skm.precision_score(
                y_true, prediction.labels, average=average, zero_division=0, **options
            )
        ),
        "recall": float(skm.recall_score(y_true, prediction.labels, average=average, **options)),
        "log_loss": float(skm.log_loss(y_true, probabilities, labels=classes)),
    }


def roc_points(y_true: list[Any], scores: np.ndarray, positive: Any) -> dict[str, list[float]]:
    fpr, tpr, thresholds = skm.roc_curve(np.asarray(y_true) == positive, scores)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), ROC_POINTS)).astype(int))
    thresholds = np.clip(thresholds[keep], 0.0, 1.0)  # the first threshold is +inf
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist(), "thresholds": thresholds.tolist()}


def evaluate_bundle(bundle: Bundle, frame: pd.DataFrame) -> dict[str, Any]:
    """Metrics, and for classifiers the confusion matrix and (binary) ROC curve."""
    target = bundle.metadata["target"]
    task = bundle.metadata["task"]
    y_true = frame[target].tolist()
    prediction = bundle.predict(frame.drop(columns=[target]))
    result: dict[str, Any] = {
        "rows": len(frame),
        "metrics": compute_metrics(task, y_true, prediction),
    }
    if task == CLASSIFICATION:
        classes = prediction.classes
        matrix = skm.confusion_matrix(y_true, prediction.labels, labels=classes)
        result["confusion_matrix"] = {
            "labels": [str(c) for c in classes],
            "matrix": matrix.tolist(),
        }
        if len(classes) == 2:
            result["roc_curve"] = roc_points(y_true, prediction.probabilities[:, 1], classes[1])
    return result


@component
def evaluate(
    model: Input[Model],
    test: Input[Dataset],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    evaluation: Output[Artifact],
):
    """Score the champion on the held-out test rows.

    Args:
        model: The champion's bundle directory.
        test: Held-out rows that no earlier step has looked at.
        metrics: Scalar test metrics (shown in the run's dashboard).
        classification_metrics: Confusion matrix and ROC curve (classification only).
        evaluation: All of the above as JSON, read by the gate and the registry.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.bundle import load_bundle
    from kfp_lifecycle.components.evaluate import evaluate_bundle

    result = evaluate_bundle(load_bundle(model.path), pd.read_parquet(test.path))
    for name, value in result["metrics"].items():
        metrics.log_metric(name, value)
    if "confusion_matrix" in result:
        matrix = result["confusion_matrix"]
        classification_metrics.log_confusion_matrix(matrix["labels"], matrix["matrix"])
    if "roc_curve" in result:
        curve = result["roc_curve"]
        classification_metrics.log_roc_curve(curve["fpr"], curve["tpr"], curve["thresholds"])
    with open(evaluation.path, "w") as handle:
        json.dump(result, handle, indent=2)
    print("test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items()))
