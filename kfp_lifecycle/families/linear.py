"""Linear models: logistic regression (classification) and ridge regression."""

from typing import Any

import numpy as np

from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.families.spec import Diagnosis, Family


def _build(task: str, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression, Ridge

    if task == CLASSIFICATION:
        return LogisticRegression(max_iter=2000, random_state=seed)
    return Ridge(alpha=1.0)


def _space(trial: Any, task: str) -> dict[str, Any]:
    if task == CLASSIFICATION:
        return {"C": trial.suggest_float("C", 1e-3, 1e2, log=True)}
    return {"alpha": trial.suggest_float("alpha", 1e-3, 1e3, log=True)}


OVERFITTING = "lower C / raise alpha (stronger regularisation), or add rows"
UNDERFITTING = (
    "weaker regularisation (raise C / lower alpha), more informative features, or a "
    "non-linear family (xgboost, hist_gradient_boosting)"
)


def _diagnosis(task: str) -> Diagnosis:
    if task == CLASSIFICATION:
        return Diagnosis(
            "C", [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0], OVERFITTING, UNDERFITTING, stronger=-1
        )
    return Diagnosis("alpha", [1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4], OVERFITTING, UNDERFITTING)


def _contributions(estimator: Any, features: np.ndarray) -> np.ndarray:
    """coefficient x feature value, the intercept last: they add up to the decision function
    (log-odds, or the prediction of a regression); multiclass: one block per class."""
    coefficients = np.atleast_2d(estimator.coef_)
    intercepts = np.atleast_1d(estimator.intercept_)
    per_class = features[:, None, :] * coefficients[None, :, :]
    bias = np.broadcast_to(intercepts, (len(features), len(intercepts)))[..., None]
    raw = np.concatenate([per_class, bias], axis=2)
    return raw[:, 0, :] if coefficients.shape[0] == 1 else raw


FAMILY = Family(
    name="linear",
    summary="logistic regression / ridge",
    order=10,
    default=True,
    build=_build,
    space=_space,
    diagnosis=_diagnosis,
    explainer="coefficients",
    needs_scaling=True,
    contributions=_contributions,
)
