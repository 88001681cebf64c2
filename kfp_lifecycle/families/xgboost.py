"""XGBoost: many shallow-ish trees at a low learning rate, early stopping on the validation
rows picks how many; explained by its own exact tree SHAP values."""

from typing import Any

import numpy as np

from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.families.spec import EARLY_STOPPING_ROUNDS, Diagnosis, EarlyStopping, Family


def _build(task: str, seed: int) -> Any:
    from xgboost import XGBClassifier, XGBRegressor

    # Early stopping on the validation rows picks the number of trees, so the defaults suit
    # small and large tables alike.
    options = dict(
        n_estimators=3000,
        learning_rate=0.03,
        max_depth=6,
        min_child_weight=1,
        subsample=0.8,
        colsample_bytree=0.8,
        reg_lambda=1.0,
        tree_method="hist",
        early_stopping_rounds=EARLY_STOPPING_ROUNDS,
        n_jobs=2,
        random_state=seed,
    )
    return XGBClassifier(**options) if task == CLASSIFICATION else XGBRegressor(**options)


def _space(trial: Any, task: str) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 10),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
    }


def _best_iteration(estimator: Any) -> int | None:
    best = getattr(estimator, "best_iteration", None)  # absent when it did not stop early
    return None if best is None else int(best)


def _contributions(estimator: Any, features: np.ndarray) -> np.ndarray:
    """Exact tree SHAP (pred_contribs) over the trees the predictions use (early stopping's
    best iteration), in margin units: rows x [classes x] (features + 1), bias last."""
    import xgboost

    best = _best_iteration(estimator)
    return estimator.get_booster().predict(
        xgboost.DMatrix(features),
        pred_contribs=True,
        iteration_range=(0, best + 1) if best is not None else (0, 0),
    )


FAMILY = Family(
    name="xgboost",
    summary="XGBoost gradient boosting (early stopping on the validation rows)",
    order=40,
    default=True,
    build=_build,
    space=_space,
    diagnosis=lambda task: Diagnosis(
        "max_depth",
        [1, 2, 3, 4, 6, 8, 10],
        overfitting="lower max_depth, raise min_child_weight or reg_lambda, or add rows",
        underfitting="deeper trees (max_depth), more rounds, less reg_lambda, or more "
        "informative features",
        stronger=-1,
    ),
    explainer="shap",
    needs_scaling=False,
    library="xgboost-cpu",
    early_stopping=EarlyStopping(
        rounds_param="early_stopping_rounds",
        fit_options=lambda x, y: {"eval_set": [(x, y)], "verbose": False},
        best_iteration=_best_iteration,
    ),
    contributions=_contributions,
)
