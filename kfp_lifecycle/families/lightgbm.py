"""LightGBM: leaf-wise boosted trees, early stopping on the validation rows; explained by its
own exact tree SHAP values (pred_contrib). Not a default family: name it in models.families
or --families."""

from typing import Any

import numpy as np

from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.families.spec import EARLY_STOPPING_ROUNDS, Diagnosis, EarlyStopping, Family


def _build(task: str, seed: int) -> Any:
    from lightgbm import LGBMClassifier, LGBMRegressor

    # As XGBoost's defaults: a low learning rate and early stopping picking the trees.
    options = dict(
        n_estimators=3000,
        learning_rate=0.03,
        num_leaves=31,
        min_child_samples=20,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        reg_lambda=1.0,
        early_stopping_round=EARLY_STOPPING_ROUNDS,
        n_jobs=2,
        random_state=seed,
        verbosity=-1,
    )
    return LGBMClassifier(**options) if task == CLASSIFICATION else LGBMRegressor(**options)


def _space(trial: Any, task: str) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 128, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 100, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
    }


def _best_iteration(estimator: Any) -> int | None:
    """LightGBM counts iterations from 1 (0: it did not stop early); 0-based here."""
    best = getattr(estimator, "best_iteration_", 0) or 0
    return int(best) - 1 if best > 0 else None


def _contributions(estimator: Any, features: np.ndarray) -> np.ndarray:
    """Exact tree SHAP (pred_contrib) over the trees the predictions use, in raw score units:
    rows x (features + 1), or rows x classes x (features + 1), bias last."""
    raw = np.asarray(estimator.predict(features, pred_contrib=True))
    classes = getattr(estimator, "n_classes_", 2)
    if classes > 2:  # LightGBM lays the classes side by side
        raw = raw.reshape(len(features), classes, features.shape[1] + 1)
    return raw


FAMILY = Family(
    name="lightgbm",
    summary="LightGBM gradient boosting (early stopping on the validation rows)",
    order=50,
    default=False,
    build=_build,
    space=_space,
    diagnosis=lambda task: Diagnosis(
        "num_leaves",
        [2, 4, 8, 16, 31, 64, 128],
        overfitting="fewer num_leaves, raise min_child_samples or reg_lambda, or add rows",
        underfitting="more num_leaves, a higher learning_rate, less reg_lambda, or more "
        "informative features",
        stronger=-1,
    ),
    explainer="shap",
    needs_scaling=False,
    library="lightgbm",
    early_stopping=EarlyStopping(
        rounds_param="early_stopping_round",
        fit_options=lambda x, y: {"eval_X": (x,), "eval_y": (y,)},  # 4.7: eval_set deprecated
        best_iteration=_best_iteration,
    ),
    contributions=_contributions,
)
