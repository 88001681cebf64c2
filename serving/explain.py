"""Per-prediction explanations: each transformed feature's contribution to one prediction.

Exact where the model makes it cheap: XGBoost's own SHAP values (`pred_contribs`), and for
linear models coefficient x feature value. Both are additive: the contributions plus the
bias give the model's raw score (log-odds, or the prediction for a regression).
"""

from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model._base import LinearClassifierMixin, LinearModel

from kfp_lifecycle.core.bundle import Bundle

TOP_FEATURES = 10


class NotExplainable(Exception):
    """The bundle's model family has no per-prediction explanation."""


def explain_rows(bundle: Bundle, frame: pd.DataFrame, top: int = TOP_FEATURES) -> list[dict]:
    """For each row: bias, raw score and the `top` largest contributions by magnitude."""
    transform = bundle.pipeline[:-1]
    features = transform.transform(frame)
    names = list(transform[-1].get_feature_names_out())  # the step that feeds the model
    estimator = bundle.pipeline[-1]
    contributions, bias = _contributions(estimator, np.asarray(features, dtype=float))
    explanations = []
    for row_contributions, row_bias in zip(contributions, bias, strict=True):
        order = np.argsort(-np.abs(row_contributions))[:top]
        explanations.append(
            {
                "bias": float(row_bias),
                "raw_score": float(row_bias + row_contributions.sum()),
                "contributions": {names[i]: float(row_contributions[i]) for i in order},
            }
        )
    return explanations


def _contributions(estimator: Any, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contributions (rows x features) and bias per row, for the positive class or the output."""
    if type(estimator).__name__.startswith("XGB"):
        import xgboost

        raw = estimator.get_booster().predict(
            xgboost.DMatrix(features), pred_contribs=True, iteration_range=_best(estimator)
        )
        if raw.ndim == 3:  # multiclass: rows x classes x (features + 1); explain the top class
            top = raw.sum(axis=2).argmax(axis=1)
            raw = raw[np.arange(len(raw)), top]
        return raw[:, :-1], raw[:, -1]
    if isinstance(estimator, LinearModel | LinearClassifierMixin):
        coefficients = np.atleast_2d(estimator.coef_)
        intercepts = np.atleast_1d(estimator.intercept_)
        if coefficients.shape[0] > 1:  # multiclass: the predicted class's own weights
            scores = features @ coefficients.T + intercepts
            chosen = scores.argmax(axis=1)
            return features * coefficients[chosen], intercepts[chosen]
        return features * coefficients[0], np.repeat(intercepts[0], len(features))
    raise NotExplainable(
        f"{type(estimator).__name__} has no per-prediction explanation in this runtime "
        "(XGBoost and linear models do); see the bundle's global feature importance instead"
    )


def _best(estimator: Any) -> tuple[int, int]:
    best = getattr(estimator, "best_iteration", None)
    return (0, best + 1) if best is not None else (0, 0)
