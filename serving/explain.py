"""Per-prediction explanations: each transformed feature's contribution to one prediction.

Exact where the model makes it cheap, as its family declares (`Family.contributions`,
kfp_lifecycle/families/): tree SHAP values computed by XGBoost or LightGBM themselves, and
coefficient x feature value for linear models. Both are additive: the contributions plus the
bias give the model's raw score (log-odds, or the prediction for a regression).
"""

import numpy as np
import pandas as pd

from kfp_lifecycle.core.bundle import Bundle
from kfp_lifecycle.families import FAMILIES

TOP_FEATURES = 10


class NotExplainable(Exception):
    """The bundle's model family has no per-prediction explanation."""


def explain_rows(bundle: Bundle, frame: pd.DataFrame, top: int = TOP_FEATURES) -> list[dict]:
    """For each row: bias, raw score and the `top` largest contributions by magnitude."""
    transform = bundle.pipeline[:-1]
    features = transform.transform(frame)
    names = list(transform[-1].get_feature_names_out())  # the step that feeds the model
    contributions, bias = _contributions(bundle, np.asarray(features, dtype=float))
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


def _contributions(bundle: Bundle, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contributions (rows x features) and bias per row, for the positive class or the output;
    multiclass: for each row's top class (the largest raw score)."""
    estimator = bundle.pipeline[-1]
    family = FAMILIES.get(bundle.metadata.get("family", ""))
    if family is None or family.contributions is None:
        explained = ", ".join(name for name, f in FAMILIES.items() if f.contributions)
        raise NotExplainable(
            f"{type(estimator).__name__} has no per-prediction explanation in this runtime "
            f"(families {explained} do); see the bundle's global feature importance instead"
        )
    raw = np.asarray(family.contributions(estimator, features), dtype=float)
    if raw.ndim == 3:  # multiclass: rows x classes x (features + 1)
        top = raw.sum(axis=2).argmax(axis=1)
        raw = raw[np.arange(len(raw)), top]
    return raw[:, :-1], raw[:, -1]
