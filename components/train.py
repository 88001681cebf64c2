"""Train: one model family on the preprocessed training rows, bundled with its preprocessing.

The pipeline runs this component once per family in parallel (dsl.ParallelFor). Tuning's
cross-validation folds are built here (`cross_validation_matrices`): the rules they follow
are in components/tune.py's docstring.
"""

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Model, Output
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from kfp_lifecycle.component import component
from kfp_lifecycle.components.balance import (
    BalanceOptions,
    balance_training_rows,
    split_balance_columns,
)
from kfp_lifecycle.components.evaluate import compute_metrics
from kfp_lifecycle.components.split import GROUP, TIME, SplitOptions, cross_validation_folds
from kfp_lifecycle.components.tune import (
    Fold,
    TuneOptions,
    fit_estimator,
    tune,
)
from kfp_lifecycle.core.bundle import Bundle
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import InputSchema
from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.core.transformers import KeepFeatures
from kfp_lifecycle.families import get_family

logger = logging.getLogger(__name__)


def make_estimator(family: str, task: str, seed: int = 42) -> Any:
    """The family's estimator for `task` with its defaults (kfp_lifecycle/families/)."""
    return get_family(family).estimator(task, seed=seed)


def class_labels(labels: pd.Series, positive: Any = None) -> list[Any]:
    """Sorted classes as plain Python values (JSON-safe); a model predicts their indices.

    Binary: the positive class last (index 1, the one thresholds and F1 are about):
    `positive`, or the minority class of `labels` (components/validate.py resolves it)."""
    from kfp_lifecycle.components.validate import resolve_positive_class

    classes = [v.item() if hasattr(v, "item") else v for v in sorted(labels.dropna().unique())]
    if len(classes) == 2:
        positive = resolve_positive_class(labels.dropna(), "") if positive is None else positive
        classes.sort(key=lambda label: label == positive)
    return classes


def _matrices(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    target: str,
    task: str,
    preprocessor: Pipeline,
    fitted_rows: pd.DataFrame | None,
    positive: Any = None,
) -> dict[str, Any]:
    """What a family is fitted and scored on: the training matrix (cross-fitted encodings,
    the balance step's weights and synthetic rows honoured), the validation matrix, and the
    labels as class indices for classifiers (the positive class of the real rows last)."""
    train, sample_weight, origins = split_balance_columns(train)
    real = train if fitted_rows is None else fitted_rows
    classes = class_labels(real[target], positive) if task == CLASSIFICATION else None
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
    }


def tune_family(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    target: str,
    task: str,
    family: str,
    preprocessor: Pipeline,
    metric: str,
    options: TuneOptions,
    seed: int = 42,
    fitted_rows: pd.DataFrame | None = None,
    split: SplitOptions | None = None,
    balance: BalanceOptions | None = None,
    positive: Any = None,
) -> dict[str, Any]:
    """The Optuna study of one family (components/tune.py) on the same matrices training uses.

    Objective cv builds its folds first (`cross_validation_matrices`), by the rules of
    `split` and replaying `balance`. `train_model(..., params=chosen_params(study))` then
    fits the best trial's model."""
    data = _matrices(train, validation, target, task, preprocessor, fitted_rows, positive)
    folds, cv = None, None
    if options.enabled and options.objective == "cv":
        started = time.monotonic()
        folds = cross_validation_matrices(
            train, validation, target, task, preprocessor, fitted_rows,
            options.cv_folds, options.seed, split, balance, positive,
        )  # fmt: skip
        cv = {
            "folds": len(folds),
            "scheme": _fold_scheme(task, split),
            "held_out_rows": [len(fold.held_out_rows) for fold in folds],
            "training_rows": [len(fold.train_origins) for fold in folds],
            "preparation_seconds": round(time.monotonic() - started, 2),
        }
    study = tune(
        make_estimator(family, task, seed),
        family,
        task,
        metric,
        data["x_train"],
        data["y_train"],
        data["x_valid"],
        data["y_valid"],
        data["classes"],
        options if folds is not None else options.model_copy(update={"objective": "validation"}),
        data["sample_weight"],
        folds,
    )
    if cv is not None:
        study["cv"] = cv
    return study


def _fold_scheme(task: str, split: SplitOptions | None) -> str:
    split = split or SplitOptions()
    if split.strategy == GROUP:
        return f"group k-fold on '{split.group_column}'"
    if split.strategy == TIME:
        return f"time-ordered folds on '{split.time_column}' (training rows precede held-out)"
    return "stratified k-fold" if task == CLASSIFICATION else "shuffled k-fold"


def cross_validation_matrices(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    target: str,
    task: str,
    preprocessor: Pipeline,
    fitted_rows: pd.DataFrame | None,
    folds: int,
    seed: int = 42,
    split: SplitOptions | None = None,
    balance: BalanceOptions | None = None,
    positive: Any = None,
) -> list[Fold]:
    """Each fold's matrices, made as if the fold's training rows were all there are.

    The real training rows are `fitted_rows` (the rows the preprocessor and the balance step
    saw; `train` itself when it was not resampled). Folds are cut over them by the split's
    rules; each fold refits the preprocessing on its training rows (`refit_preprocessor`)
    and replays the balance step on them with `balance`, so every copy or synthetic row is
    made from, and trained beside, that fold's training rows only.
    """
    rows, weights, origins = split_balance_columns(train)
    real = (rows if fitted_rows is None else fitted_rows).reset_index(drop=True)
    resampled = weights is not None or (
        origins is not None and not np.array_equal(origins, np.arange(len(real)))
    )
    if resampled and (balance is None or fitted_rows is None):
        raise DataError(
            "objective cv replays the balance step on each fold's training rows, and these "
            "rows were rebalanced: pass the balance options and the real rows (fitted_rows)"
        )
    classes = class_labels(real[target], positive) if task == CLASSIFICATION else None
    index = None if classes is None else {label: i for i, label in enumerate(classes)}

    def labels(frame: pd.DataFrame) -> np.ndarray:
        values = frame[target] if index is None else frame[target].map(index)
        return values.to_numpy()

    features_valid = validation.drop(columns=[target])
    built = []
    for number, (inside, held_out) in enumerate(
        cross_validation_folds(real, target, task, folds, split, seed), start=1
    ):
        inside_rows = real.iloc[inside].reset_index(drop=True)
        if classes is not None and inside_rows[target].nunique() < len(classes):
            absent = sorted(map(str, set(classes) - set(inside_rows[target])))
            raise DataError(
                f"cross-validation fold {number} has no training row of class(es) "
                f"{', '.join(absent)} of '{target}'; lower cv_folds or use objective validation"
            )
        fitted, honest = refit_preprocessor(preprocessor, inside_rows, target)
        trained, fold_weights, fold_origins = inside_rows, None, np.arange(len(inside_rows))
        if balance is not None:
            try:
                rebalanced, _ = balance_training_rows(inside_rows, target, task, balance)
            except DataError as error:
                raise DataError(f"cross-validation fold {number}: {error}") from None
            trained, fold_weights, fold_origins = split_balance_columns(rebalanced)
        held = real.iloc[held_out]
        built.append(
            Fold(
                x_train=_place_rows(honest, fitted, trained, target, fold_origins),
                y_train=labels(trained),
                sample_weight=None if fold_weights is None else np.asarray(fold_weights),
                x_held_out=_floats(fitted.transform(held.drop(columns=[target]))),
                y_held_out=labels(held),
                x_valid=_floats(fitted.transform(features_valid)),
                train_origins=np.where(fold_origins >= 0, inside[fold_origins], -1),
                held_out_rows=np.asarray(held_out),
                preprocessor=fitted,
            )
        )
    return built


def refit_preprocessor(
    preprocessor: Pipeline, rows: pd.DataFrame, target: str
) -> tuple[Pipeline, np.ndarray]:
    """The same preprocessing fitted on `rows` alone, and the rows' cross-fitted features.

    The steps (columns, encodings) are the fitted preprocessor's; what they learn from data
    is learnt again from `rows`. A feature selection step keeps the same features, by name:
    one these rows cannot produce (a category they lack) is left out."""
    *steps, (name, last) = preprocessor.steps
    selector = last if isinstance(last, KeepFeatures) else None
    unfitted = clone(Pipeline(steps if selector is not None else preprocessor.steps))
    # fit_transform: a target encoder's own rows get their cross-fitted encodings.
    matrix = _floats(unfitted.fit_transform(rows.drop(columns=[target]), rows[target]))
    if selector is None:
        return unfitted, matrix
    names = [str(feature) for feature in unfitted.get_feature_names_out()]
    produced = set(names)
    keep = KeepFeatures(names, [f for f in selector.keep if f in produced]).fit()
    if not keep.keep:
        raise DataError("none of the selected features can be made from a fold's training rows")
    return Pipeline([*unfitted.steps, (name, keep)]), keep.transform(matrix)


def _floats(matrix: Any) -> np.ndarray:
    return np.asarray(matrix, dtype="float64")


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
    positive: Any = None,
) -> Bundle:
    """Fit one family (its defaults, or `params` from tuning) on the fitted preprocessor's
    output; return an in-memory bundle.

    `train` may come from the balance step (its weight and origin columns are honoured);
    `fitted_rows` are the rows the preprocessor was fitted on (default: `train` itself).
    """
    spec = get_family(family)
    estimator = spec.estimator(task, params, seed)
    data = _matrices(train, validation, target, task, preprocessor, fitted_rows, positive)
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
    if spec.early_stopping is not None:
        metadata["params"]["best_iteration"] = spec.best_iteration(estimator)
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
    features, labels = fitted_rows.drop(columns=[target]), fitted_rows[target]
    honest = _floats(clone(preprocessor).fit_transform(features, labels))
    return _place_rows(honest, preprocessor, train, target, origins)


def _place_rows(
    honest: np.ndarray,
    preprocessor: Pipeline,
    train: pd.DataFrame,
    target: str,
    origins: np.ndarray | None,
) -> np.ndarray:
    """The balanced rows' features: a real row's (or its copy's) cross-fitted features from
    `honest` (one row per fitted row), a synthetic row's (origin -1) plain transform."""
    if origins is None:
        return honest
    matrix = np.empty((len(train), honest.shape[1]), dtype="float64")
    real = origins >= 0
    matrix[real] = honest[origins[real]]
    if (~real).any():
        synthetic = train.loc[~real].drop(columns=[target])
        matrix[~real] = _floats(preprocessor.transform(synthetic))
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
    tune: dict = {},  # noqa: B006 (KFP default, never mutated)
    split: dict = {},  # noqa: B006
    balance: dict = {},  # noqa: B006
    time_budget: float = 0.0,
    engine: str = "pandas",
    dask_options: dict = {},  # noqa: B006
    dask_scheduler: str = "",
):
    """Tune one model family's hyperparameters (Optuna), train it with the best, and bundle
    it with the fitted preprocessing.

    Args:
        train: Training rows, as the balance step left them (weights and synthetic rows).
        validation: Validation rows: the tuning objective (unless cv), early stopping (the
            families that stop early) and the leaderboard score.
        preprocessor: The transform fitted on the training rows.
        fitted_rows: The rows the transform was fitted on (for cross-fitted encodings).
        validation_report: The validate step's report: the resolved task and primary metric.
        target: Name of the column to predict.
        family: A registered model family (kfp_lifecycle/families/), e.g. xgboost.
        model: Bundle directory: model.joblib (one scikit-learn Pipeline) and metadata.json,
            whose tuning entry holds the best params, the default and best scores and the
            number of trials run.
        trials: JSON tuning history: family, metric, objective, budget, stopped_by,
            default_score, best_score, best_params, and every trial (number, params, value,
            state, is_default). The report step draws it.
        seed: Random seed of the estimator.
        tune: TuneOptions (empty: defaults): enabled, trials, timeout_seconds,
            objective (validation or cv), cv_folds, pruning, seed, early_stopping_rounds.
            The family's defaults are always trial 0; disabled: that trial only.
        split: The split step's SplitOptions: objective cv cuts its folds by the same
            strategy (group k-fold on group_column, time order on time_column).
        balance: The balance step's BalanceOptions: objective cv replays the balancing on
            each fold's training rows, so no copy or synthetic row reaches a held-out fold.
        time_budget: The run's total time budget in seconds (0: none); tuning's share of it
            (kfp_lifecycle/budget.py) caps timeout_seconds.
        engine: pandas, dask, or auto (dask from a size: kfp_lifecycle/dask_engine/engine.py).
            With dask, xgboost trains distributed on fitted_rows (no balancing) and stops
            early on the validation partitions; other families train on a stated sample.
        dask_options: DaskSettings (dask_engine/engine.py): scheduler_address (else a
            LocalCluster per step), n_workers, memory_per_worker, sample_rows.
        dask_scheduler: tcp://host:8786 of a running Dask scheduler, e.g. the training-dask
            pipeline's cluster step's output; overrides dask_options' scheduler_address.
            Empty: that, else the DASK_SCHEDULER_ADDRESS variable, else a LocalCluster.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.components.balance import BalanceOptions
    from kfp_lifecycle.components.preprocess import load_preprocessor
    from kfp_lifecycle.components.split import SplitOptions
    from kfp_lifecycle.components.train import logger, train_model, tune_family
    from kfp_lifecycle.components.tune import TuneOptions, chosen_params, within_budget
    from kfp_lifecycle.core.bundle import write_bundle

    options, cut = within_budget(TuneOptions.model_validate(tune), time_budget)
    split_options = SplitOptions.model_validate(split)
    balance_options = BalanceOptions.model_validate(balance)
    with open(validation_report.path) as handle:
        resolved = json.load(handle)
    task, primary_metric = resolved["task"], resolved["primary_metric"]
    from kfp_lifecycle.dask_engine.steps import uses_dask

    positive = resolved.get("positive_class")
    fitted, schema = load_preprocessor(preprocessor.path)
    if uses_dask(engine, fitted_rows.path):
        from kfp_lifecycle.dask_engine import steps

        bundle, study = steps.train(
            fitted_rows.path, validation.path, target, task, family, fitted, schema,
            primary_metric, options, seed, dask_options, dask_scheduler, positive,
            split=split_options,
        )  # fmt: skip
    else:
        rows = pd.read_parquet(train.path)
        held_out = pd.read_parquet(validation.path)
        fitted_on = pd.read_parquet(fitted_rows.path)
        study = tune_family(
            rows, held_out, target, task, family, fitted, primary_metric, options, seed,
            fitted_on, split_options, balance_options, positive,
        )  # fmt: skip
        bundle = train_model(
            rows, held_out, target, task, family, fitted, schema, seed, fitted_on,
            params=chosen_params(study), positive=positive,
        )  # fmt: skip
    study["budget_cut"] = cut
    with open(trials.path, "w") as handle:
        json.dump(study, handle, indent=2)
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
    logger.info(
        f"{family}: validation {primary_metric} = {score:.4f} (defaults: "
        f"{'failed' if default is None else f'{default:.4f}'}; {len(study['trials'])} "
        f"trial(s), stopped by {study['stopped_by']})"
    )
