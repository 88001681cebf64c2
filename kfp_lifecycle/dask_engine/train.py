"""Train with Dask: XGBoost distributed (`xgboost.dask`), the other families on a sample.

XGBoost fits on every training row, across the workers, and stops early on the validation
partitions; tuning's trials (components/tune.py, unchanged: same search space, TPE, the
defaults as trial 0) each run such a distributed fit, so the trials run on the cluster.
The fitted booster is loaded into a plain xgboost.XGBClassifier/XGBRegressor behind the
fitted preprocessing: the bundle holds the same kind of scikit-learn Pipeline as with the
pandas engine.

Families that do not scale out (linear, random_forest, hist_gradient_boosting) train with
the pandas engine's code on a seeded sample of `sample_rows` training rows and as many
validation rows; the bundle's metadata (`training_sample`) and the step's log state it.

The distributed fit uses the real training rows (the preprocess step's `train_clean`): the
balance step's resampling is not replayed across partitions (the decision threshold step
still trades precision for recall). When the preprocessor has a target encoder and was
fitted on a sample, the sampled rows are left out of the fit, so no row's own label is in
its encoding (the pandas engine cross-fits instead); below `sample_rows` rows the pandas
engine's cross-fitted matrix is used.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier, XGBRegressor

from kfp_lifecycle.components.evaluate import compute_metrics
from kfp_lifecycle.components.train import (
    class_labels,
    train_model,
    training_matrix,
    tune_family,
)
from kfp_lifecycle.components.tune import TuneOptions, chosen_params, tune
from kfp_lifecycle.components.validate import positive_class_for
from kfp_lifecycle.core.bundle import Bundle, Prediction
from kfp_lifecycle.core.schema import InputSchema
from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.dask_engine.engine import DaskSettings, logger
from kfp_lifecycle.dask_engine.tables import in_sample, sample_frame
from kfp_lifecycle.families import EARLY_STOPPING_ROUNDS

DISTRIBUTED = ("xgboost",)


class Matrix:
    """Features and labels of a partitioned table, ready for xgboost.dask: `x` (a Dask
    DataFrame of float32 features), `y` (Dask labels) and `y_local` (labels, in memory)."""

    def __init__(self, x: Any, y: Any, classification: bool):
        self.x, self.y = x, y
        labels = y.compute().to_numpy()
        self.y_local = labels.astype(np.int64) if classification else labels.astype("float64")
        self.rows = len(labels)


class DaskXGBoost(BaseEstimator):
    """xgboost.dask's estimator behind the interface components/tune.py fits and scores:
    fit(x, y, eval_set=[(x_valid, y_valid)]) on Matrix objects; predict and predict_proba
    return in-memory arrays. Its parameters are the xgboost family's (components/train.py)."""

    def __init__(
        self,
        task: str = CLASSIFICATION,
        n_estimators: int = 3000,
        learning_rate: float = 0.03,
        max_depth: int = 6,
        min_child_weight: float = 1,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        early_stopping_rounds: int = EARLY_STOPPING_ROUNDS,
        random_state: int = 42,
    ):
        self.task = task
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state

    def _xgb_params(self) -> dict[str, Any]:
        params = self.get_params()
        params.pop("task")
        return {**params, "tree_method": "hist"}

    def fit(self, x: Matrix, y: Any = None, eval_set: Any = None, **_: Any) -> DaskXGBoost:
        from xgboost import dask as dxgb

        model_class = (
            dxgb.DaskXGBClassifier if self.task == CLASSIFICATION else dxgb.DaskXGBRegressor
        )
        self.model_ = model_class(**self._xgb_params())
        evals = [(m.x, m.y) for m, _ in eval_set or []]
        self.model_.fit(x.x, x.y, eval_set=evals or None, verbose=False)
        self.best_iteration = int(getattr(self.model_, "best_iteration", self.n_estimators - 1))
        return self

    def predict_proba(self, x: Matrix) -> np.ndarray:
        return np.asarray(self.model_.predict_proba(x.x).compute())

    def predict(self, x: Matrix) -> np.ndarray:
        return np.asarray(self.model_.predict(x.x).compute())

    def local_model(self) -> XGBClassifier | XGBRegressor:
        """The fitted booster in a plain scikit-learn estimator (no Dask needed to predict)."""
        local = XGBClassifier() if self.task == CLASSIFICATION else XGBRegressor()
        with tempfile.TemporaryDirectory(prefix="kfp-lifecycle-xgb-") as directory:
            path = Path(directory) / "model.json"
            self.model_.save_model(path)
            local.load_model(path)
        return local


def _features(
    part: pd.DataFrame, preprocessor: Pipeline, target: str, names: list[str], leave_out: Any
) -> pd.DataFrame:
    part = _kept(part, target, leave_out)
    matrix = preprocessor.transform(part.drop(columns=[target]))
    return pd.DataFrame(np.asarray(matrix, dtype="float32"), columns=names)


def _labels(part: pd.DataFrame, target: str, index: dict | None, leave_out: Any) -> pd.Series:
    values = _kept(part, target, leave_out)[target]
    values = values if index is None else values.astype(str).map(index)
    return values.astype("float32").reset_index(drop=True)


def _kept(part: pd.DataFrame, target: str, leave_out: Any) -> pd.DataFrame:
    """A partition without the rows the target encoder was fitted on (leave_out: the
    sample's (share, seed)), when those must not train the model."""
    if leave_out is None:
        return part
    return part[~in_sample(part, *leave_out)]


def make_matrix(
    frame: Any, target: str, preprocessor: Pipeline, classes: list | None, leave_out: Any = None
) -> Matrix:
    names = [str(n) for n in preprocessor.get_feature_names_out()]
    index = None if classes is None else {str(c): i for i, c in enumerate(classes)}
    meta_x = pd.DataFrame({n: pd.Series(dtype="float32") for n in names})
    x = frame.map_partitions(_features, preprocessor, target, names, leave_out, meta=meta_x)
    y = frame.map_partitions(_labels, target, index, leave_out, meta=pd.Series(dtype="float32"))
    x, y = x.persist(), y.persist()
    return Matrix(x, y, classes is not None)


def _has_target_encoder(preprocessor: Pipeline) -> bool:
    columns = preprocessor.named_steps["columns"]
    return any(name == "target" for name, _, _ in columns.transformers_)


def train_distributed(
    train: Any,
    validation: Any,
    target: str,
    task: str,
    preprocessor: Pipeline,
    schema: InputSchema,
    metric: str,
    options: TuneOptions,
    settings: DaskSettings,
    seed: int = 42,
    base_params: dict[str, Any] | None = None,
    positive: Any = None,
) -> tuple[Bundle, dict[str, Any]]:
    """Tune and fit XGBoost across the cluster; the bundle (in memory) and the study.
    `base_params` replace the family's defaults (a benchmark's fixed number of trees);
    `positive` is a binary task's positive class (None: the minority, counted here)."""
    rows = int(train.map_partitions(len).sum().compute())
    classes = None
    if task == CLASSIFICATION:
        counts = train[target].dropna().value_counts().compute()
        if positive is None:
            positive = positive_class_for(task, counts, target)
        classes = class_labels(pd.Series(counts.index), positive)
    leave_out, note = None, "every training row"
    if _has_target_encoder(preprocessor) and rows > settings.sample_rows:
        leave_out = (settings.sample_rows / rows, seed)
        note = f"training rows minus the ~{settings.sample_rows:,} the target encoder was fitted on"
    if _has_target_encoder(preprocessor) and rows <= settings.sample_rows:
        matrix_train = _cross_fitted(train.compute(), target, preprocessor, classes)
    else:
        matrix_train = make_matrix(train, target, preprocessor, classes, leave_out)
    matrix_valid = make_matrix(validation, target, preprocessor, classes)
    logger.info(
        "train xgboost (dask): %s training rows (%s), %s validation rows, %d partitions",
        f"{matrix_train.rows:,}", note, f"{matrix_valid.rows:,}", train.npartitions,
    )  # fmt: skip
    base = DaskXGBoost(task=task, random_state=seed).set_params(**(base_params or {}))
    study = tune(
        base, "xgboost", task, metric, matrix_train, matrix_train.y_local, matrix_valid,
        matrix_valid.y_local, classes, options.model_copy(update={"objective": "validation"}),
    )  # fmt: skip
    if options.objective == "cv":
        study["note"] = "objective cv is not available with engine dask: validation was used"
    fitted = base.set_params(**chosen_params(study)).fit(
        matrix_train, eval_set=[(matrix_valid, None)]
    )
    estimator = fitted.local_model()
    pipeline = Pipeline([*preprocessor.steps, ("model", estimator)])
    metadata: dict[str, Any] = {
        "task": task,
        "target": target,
        "family": "xgboost",
        "classes": classes,
        "input_schema": schema.to_dict(),
        "params": {**fitted._xgb_params(), "best_iteration": fitted.best_iteration},
        "training_rows": matrix_train.rows,
        "engine": "dask",
    }
    truth = matrix_valid.y_local
    if task == CLASSIFICATION:
        probabilities = fitted.predict_proba(matrix_valid)
        labels = [classes[i] for i in probabilities.argmax(1)]
        prediction = Prediction(labels, probabilities, classes)
        truth = [classes[int(i)] for i in truth]
    else:
        prediction = Prediction(fitted.predict(matrix_valid).tolist(), None, None)
        truth = truth.tolist()
    metadata["metrics"] = {"validation": compute_metrics(task, truth, prediction)}
    logger.info(
        "train xgboost (dask): %d trees, validation %s = %.4f", fitted.best_iteration + 1,
        metric, metadata["metrics"]["validation"][metric],
    )  # fmt: skip
    return Bundle(path=None, pipeline=pipeline, metadata=metadata), study


def _cross_fitted(
    train: pd.DataFrame, target: str, preprocessor: Pipeline, classes: list | None
) -> Matrix:
    """A small table's training matrix as the pandas engine makes it (cross-fitted target
    encodings), handed to the cluster as one partition."""
    import dask.dataframe as dd

    names = [str(n) for n in preprocessor.get_feature_names_out()]
    matrix = training_matrix(preprocessor, train, target, None, None)
    x = pd.DataFrame(matrix.astype("float32"), columns=names)
    index = None if classes is None else {str(c): i for i, c in enumerate(classes)}
    y = _labels(train, target, index, None)
    return Matrix(dd.from_pandas(x, npartitions=1), dd.from_pandas(y, npartitions=1), True)


def train_on_sample(
    train: Any,
    validation: Any,
    target: str,
    task: str,
    family: str,
    preprocessor: Pipeline,
    schema: InputSchema,
    metric: str,
    options: TuneOptions,
    settings: DaskSettings,
    seed: int = 42,
    positive: Any = None,
    **pandas_options: Any,
) -> tuple[Bundle, dict[str, Any]]:
    """A family that does not scale out: the pandas engine's tuning and training on a
    seeded sample of the training and validation rows (stated in the metadata)."""
    total = int(train.map_partitions(len).sum().compute())
    total_valid = int(validation.map_partitions(len).sum().compute())
    rows = sample_frame(train, settings.sample_rows, total, seed)
    held_out = sample_frame(validation, settings.sample_rows, total_valid, seed)
    logger.info(
        "train %s (dask engine, sampled): %s of %s training rows, %s of %s validation rows",
        family, f"{len(rows):,}", f"{total:,}", f"{len(held_out):,}", f"{total_valid:,}",
    )  # fmt: skip
    study = tune_family(
        rows, held_out, target, task, family, preprocessor, metric, options, seed, rows,
        positive=positive, **pandas_options,
    )  # fmt: skip
    bundle = train_model(
        rows, held_out, target, task, family, preprocessor, schema, seed, rows,
        params=chosen_params(study), positive=positive,
    )  # fmt: skip
    bundle.metadata["engine"] = "dask"
    if len(rows) < total or len(held_out) < total_valid:
        bundle.metadata["training_sample"] = {
            "training_rows": len(rows), "of_training_rows": total,
            "validation_rows": len(held_out), "of_validation_rows": total_valid,
            "reason": f"{family} does not train distributed; seeded sample of sample_rows",
        }  # fmt: skip
    return bundle, study
