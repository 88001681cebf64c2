"""Train: one model family on the preprocessed training rows, bundled with its preprocessing.

The pipeline runs this component once per family in parallel (dsl.ParallelFor).
"""

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Model, Output
from sklearn.base import clone
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier, XGBRegressor

from kfp_lifecycle.bundle import Bundle
from kfp_lifecycle.component import component
from kfp_lifecycle.components.balance import split_balance_columns
from kfp_lifecycle.components.evaluate import compute_metrics
from kfp_lifecycle.errors import DataError
from kfp_lifecycle.schema import InputSchema
from kfp_lifecycle.tasks import CLASSIFICATION

XGBOOST_EARLY_STOPPING_ROUNDS = 100


def _linear(task: str, seed: int) -> Any:
    if task == CLASSIFICATION:
        return LogisticRegression(max_iter=2000, random_state=seed)
    return Ridge(alpha=1.0)


def _random_forest(task: str, seed: int) -> Any:
    cls = RandomForestClassifier if task == CLASSIFICATION else RandomForestRegressor
    return cls(n_estimators=300, min_samples_leaf=2, n_jobs=-1, random_state=seed)


def _hist_gradient_boosting(task: str, seed: int) -> Any:
    cls = (
        HistGradientBoostingClassifier if task == CLASSIFICATION else HistGradientBoostingRegressor
    )
    return cls(max_iter=500, early_stopping=True, random_state=seed)


def _xgboost(task: str, seed: int) -> Any:
    # Many shallow-ish trees at a low learning rate; early stopping on the validation rows
    # picks the number of trees, so the defaults suit small and large tables alike.
    options = dict(
        n_estimators=3000,
        learning_rate=0.03,
        max_depth=6,
        min_child_weight=1,
        subsample=0.8,
        colsample_bytree=0.8,
        tree_method="hist",
        early_stopping_rounds=XGBOOST_EARLY_STOPPING_ROUNDS,
        n_jobs=2,
        random_state=seed,
    )
    if task == CLASSIFICATION:
        return XGBClassifier(**options)
    return XGBRegressor(**options)


FAMILIES: dict[str, Callable[[str, int], Any]] = {
    "linear": _linear,
    "random_forest": _random_forest,
    "hist_gradient_boosting": _hist_gradient_boosting,
    "xgboost": _xgboost,
}
DEFAULT_FAMILIES = ["linear", "random_forest", "xgboost"]


def make_estimator(family: str, task: str, seed: int = 42) -> Any:
    if family not in FAMILIES:
        raise DataError(f"unknown model family '{family}'; choose from: {', '.join(FAMILIES)}")
    return FAMILIES[family](task, seed)


def class_labels(labels: pd.Series) -> list[Any]:
    """Sorted classes as plain Python values (JSON-safe); a model predicts their indices."""
    return [v.item() if hasattr(v, "item") else v for v in sorted(labels.dropna().unique())]


def train_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    target: str,
    task: str,
    family: str,
    preprocessor: Pipeline,
    schema: InputSchema,
    seed: int = 42,
    fitted_rows: pd.DataFrame | None = None,
) -> Bundle:
    """Fit one family on the fitted preprocessor's output; return an in-memory bundle.

    `train` may come from the balance step (its weight and origin columns are honoured);
    `fitted_rows` are the rows the preprocessor was fitted on (default: `train` itself).
    """
    estimator = make_estimator(family, task, seed)
    train, sample_weight, origins = split_balance_columns(train)
    x_train = training_matrix(preprocessor, train, target, origins, fitted_rows)
    x_valid = preprocessor.transform(validation.drop(columns=[target]))
    classes = class_labels(train[target]) if task == CLASSIFICATION else None
    if classes is not None:
        index = {label: i for i, label in enumerate(classes)}
        y_train, y_valid = train[target].map(index), validation[target].map(index)
    else:
        y_train, y_valid = train[target], validation[target]

    fit_options: dict[str, Any] = {}
    if sample_weight is not None:
        fit_options["sample_weight"] = sample_weight
    if family == "xgboost":
        fit_options.update({"eval_set": [(x_valid, y_valid)], "verbose": False})
    estimator.fit(x_train, y_train, **fit_options)

    pipeline = Pipeline([*preprocessor.steps, ("model", estimator)])
    metadata: dict[str, Any] = {
        "task": task,
        "target": target,
        "family": family,
        "classes": classes,
        "input_schema": schema.to_dict(),
        "params": _plain_params(estimator),
        "training_rows": len(train),
    }
    if family == "xgboost":
        metadata["params"]["best_iteration"] = int(estimator.best_iteration)
    bundle = Bundle(path=None, pipeline=pipeline, metadata=metadata)
    prediction = bundle.predict(validation.drop(columns=[target]))
    metadata["metrics"] = {
        "validation": compute_metrics(task, validation[target].tolist(), prediction)
    }
    return bundle


def training_matrix(
    preprocessor: Pipeline,
    train: pd.DataFrame,
    target: str,
    origins: np.ndarray | None,
    fitted_rows: pd.DataFrame | None,
) -> np.ndarray:
    """Features for the training rows, with no row's own label in its encoding.

    A target encoder's transform() uses labels of all the rows it was fitted on, the row's
    own included: a model trained on that learns a leak. Refitting a copy on the same rows
    with fit_transform() gives the cross-fitted encodings (and the same fitted state).
    Rows the balance step synthesised were never fitted on: their plain transform is honest.
    """
    fitted_rows = train if fitted_rows is None else fitted_rows
    honest = clone(preprocessor).fit_transform(
        fitted_rows.drop(columns=[target]), fitted_rows[target]
    )
    honest = np.asarray(honest, dtype="float64")
    if origins is None:
        return honest
    matrix = np.empty((len(train), honest.shape[1]), dtype="float64")
    real = origins >= 0
    matrix[real] = honest[origins[real]]
    if (~real).any():
        synthetic = train.loc[~real].drop(columns=[target])
        matrix[~real] = np.asarray(preprocessor.transform(synthetic), dtype="float64")
    return matrix


def _plain_params(estimator: Any) -> dict[str, Any]:
    return {
        k: v
        for k, v in estimator.get_params().items()
        if v is None or isinstance(v, bool | int | float | str)
    }


@component
def train(
    train: Input[Dataset],
    validation: Input[Dataset],
    preprocessor: Input[Artifact],
    fitted_rows: Input[Dataset],
    validation_report: Input[Artifact],
    target: str,
    family: str,
    model: Output[Model],
    seed: int = 42,
):
    """Train one model family and bundle it with the fitted preprocessing.

    Args:
        train: Training rows, as the balance step left them (weights and synthetic rows).
        validation: Validation rows (early stopping and the leaderboard).
        preprocessor: The transform fitted on the training rows.
        fitted_rows: The rows the transform was fitted on (for cross-fitted encodings).
        target: Name of the column to predict.
        validation_report: The validate step's report: the resolved task and primary metric.
        family: linear, random_forest, hist_gradient_boosting or xgboost.
        model: Bundle directory: model.joblib (one scikit-learn Pipeline) and metadata.json.
        seed: Random seed.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.bundle import write_bundle
    from kfp_lifecycle.components.preprocess import load_preprocessor
    from kfp_lifecycle.components.train import train_model

    with open(validation_report.path) as handle:
        resolved = json.load(handle)
    task, primary_metric = resolved["task"], resolved["primary_metric"]
    fitted, schema = load_preprocessor(preprocessor.path)
    bundle = train_model(
        pd.read_parquet(train.path),
        pd.read_parquet(validation.path),
        target,
        task,
        family,
        fitted,
        schema,
        seed,
        fitted_rows=pd.read_parquet(fitted_rows.path),
    )
    bundle.metadata["primary_metric"] = primary_metric
    write_bundle(model.path, bundle.pipeline, bundle.metadata)
    score = bundle.metadata["metrics"]["validation"][primary_metric]
    model.metadata.update({"family": family, f"validation_{primary_metric}": score})
    print(f"{family}: validation {primary_metric} = {score:.4f}")
