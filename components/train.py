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
from kfp_lifecycle.components.tune import (
    EARLY_STOPPING_ROUNDS,
    TuningOptions,
    fit_estimator,
    tune,
)
from kfp_lifecycle.errors import DataError
from kfp_lifecycle.schema import InputSchema
from kfp_lifecycle.tasks import CLASSIFICATION

# The family default is the tuning default, so the defaults' trial is training's defaults.
XGBOOST_EARLY_STOPPING_ROUNDS = EARLY_STOPPING_ROUNDS


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
        reg_lambda=1.0,
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
DEFAULT_FAMILIES = ["linear", "random_forest", "hist_gradient_boosting", "xgboost"]


def make_estimator(family: str, task: str, seed: int = 42) -> Any:
    if family not in FAMILIES:
        raise DataError(f"unknown model family '{family}'; choose from: {', '.join(FAMILIES)}")
    return FAMILIES[family](task, seed)


def class_labels(labels: pd.Series) -> list[Any]:
    """Sorted classes as plain Python values (JSON-safe); a model predicts their indices."""
    return [v.item() if hasattr(v, "item") else v for v in sorted(labels.dropna().unique())]


def _matrices(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    target: str,
    task: str,
    preprocessor: Pipeline,
    fitted_rows: pd.DataFrame | None,
) -> dict[str, Any]:
    """What a family is fitted and scored on: the training matrix (cross-fitted encodings,
    the balance step's weights and synthetic rows honoured), the validation matrix, and the
    labels as class indices for classifiers."""
    train, sample_weight, origins = split_balance_columns(train)
    classes = class_labels(train[target]) if task == CLASSIFICATION else None
    if classes is not None:
        index = {label: i for i, label in enumerate(classes)}
        y_train, y_valid = train[target].map(index), validation[target].map(index)
    else:
        y_train, y_valid = train[target], validation[target]
    return {
        "rows": len(train),
        "x_train": training_matrix(preprocessor, train, target, origins, fitted_rows),
        "y_train": y_train.to_numpy(),
        "x_valid": np.asarray(
            preprocessor.transform(validation.drop(columns=[target])), dtype="float64"
        ),
        "y_valid": y_valid.to_numpy(),
        "classes": classes,
        "sample_weight": None if sample_weight is None else np.asarray(sample_weight),
        "synthetic": origins is not None and bool((origins < 0).any()),
    }


def tune_family(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    target: str,
    task: str,
    family: str,
    preprocessor: Pipeline,
    metric: str,
    options: TuningOptions,
    seed: int = 42,
    fitted_rows: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The Optuna study of one family (components/tune.py) on the same matrices training uses.

    `train_model(..., params=chosen_params(study))` then fits the best trial's model."""
    data = _matrices(train, validation, target, task, preprocessor, fitted_rows)
    return tune(
        make_estimator(family, task, seed),
        family,
        task,
        metric,
        data["x_train"],
        data["y_train"],
        data["x_valid"],
        data["y_valid"],
        data["classes"],
        options,
        data["sample_weight"],
        data["synthetic"],
    )


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
    params: dict[str, Any] | None = None,
) -> Bundle:
    """Fit one family (its defaults, or `params` from tuning) on the fitted preprocessor's
    output; return an in-memory bundle.

    `train` may come from the balance step (its weight and origin columns are honoured);
    `fitted_rows` are the rows the preprocessor was fitted on (default: `train` itself).
    """
    estimator = make_estimator(family, task, seed).set_params(**(params or {}))
    data = _matrices(train, validation, target, task, preprocessor, fitted_rows)
    fit_estimator(
        estimator, family, data["x_train"], data["y_train"], data["sample_weight"],
        data["x_valid"], data["y_valid"],
    )  # fmt: skip

    pipeline = Pipeline([*preprocessor.steps, ("model", estimator)])
    metadata: dict[str, Any] = {
        "task": task,
        "target": target,
        "family": family,
        "classes": data["classes"],
        "input_schema": schema.to_dict(),
        "params": _plain_params(estimator),
        "training_rows": data["rows"],
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
    trials: Output[Artifact],
    seed: int = 42,
    tuning: dict = {},  # noqa: B006 (KFP default, never mutated)
):
    """Tune one model family's hyperparameters (Optuna), train it with the best, and bundle
    it with the fitted preprocessing.

    Args:
        train: Training rows, as the balance step left them (weights and synthetic rows).
        validation: Validation rows: the tuning objective (unless cv), XGBoost's early
            stopping and the leaderboard score.
        preprocessor: The transform fitted on the training rows.
        fitted_rows: The rows the transform was fitted on (for cross-fitted encodings).
        validation_report: The validate step's report: the resolved task and primary metric.
        target: Name of the column to predict.
        family: linear, random_forest, hist_gradient_boosting or xgboost.
        model: Bundle directory: model.joblib (one scikit-learn Pipeline) and metadata.json,
            whose tuning entry holds the best params, the default and best scores and the
            number of trials run.
        trials: JSON tuning history: family, metric, objective, budget, stopped_by,
            default_score, best_score, best_params, and every trial (number, params, value,
            state, is_default). The report step draws it.
        seed: Random seed of the estimator.
        tuning: TuningOptions (empty: defaults): enabled, trials, timeout_seconds,
            objective (validation or cv), cv_folds, pruning, seed, early_stopping_rounds.
            The family's defaults are always trial 0; disabled: that trial only.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.bundle import write_bundle
    from kfp_lifecycle.components.preprocess import load_preprocessor
    from kfp_lifecycle.components.train import train_model, tune_family
    from kfp_lifecycle.components.tune import TuningOptions, chosen_params

    options = TuningOptions.model_validate(tuning)
    with open(validation_report.path) as handle:
        resolved = json.load(handle)
    task, primary_metric = resolved["task"], resolved["primary_metric"]
    fitted, schema = load_preprocessor(preprocessor.path)
    rows = pd.read_parquet(train.path)
    held_out = pd.read_parquet(validation.path)
    fitted_on = pd.read_parquet(fitted_rows.path)
    study = tune_family(
        rows, held_out, target, task, family, fitted, primary_metric, options, seed, fitted_on
    )
    with open(trials.path, "w") as handle:
        json.dump(study, handle, indent=2)
    bundle = train_model(
        rows, held_out, target, task, family, fitted, schema, seed, fitted_on,
        params=chosen_params(study),
    )  # fmt: skip
    bundle.metadata["primary_metric"] = primary_metric
    bundle.metadata["tuning"] = {
        key: study[key]
        for key in ("objective_data", "default_score", "best_score", "best_params", "stopped_by")
    }
    bundle.metadata["tuning"]["trials_run"] = len(study["trials"])
    write_bundle(model.path, bundle.pipeline, bundle.metadata)
    score = bundle.metadata["metrics"]["validation"][primary_metric]
    model.metadata.update({"family": family, f"validation_{primary_metric}": score})
    default = study["default_score"]
    print(
        f"{family}: validation {primary_metric} = {score:.4f} (defaults: "
        f"{'failed' if default is None else f'{default:.4f}'}; {len(study['trials'])} "
        f"trial(s), stopped by {study['stopped_by']})"
    )
