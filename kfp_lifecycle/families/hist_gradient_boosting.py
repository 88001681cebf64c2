"""scikit-learn's histogram gradient boosting (it stops early on its own held-out share)."""

from typing import Any

from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.families.spec import Diagnosis, Family


def _build(task: str, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = (
        HistGradientBoostingClassifier if task == CLASSIFICATION else HistGradientBoostingRegressor
    )
    return cls(max_iter=500, early_stopping=True, random_state=seed)


def _space(trial: Any, task: str) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 8, 64, log=True),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 5, 100, log=True),
        "l2_regularization": trial.suggest_float("l2_regularization", 0.0, 10.0),
    }


FAMILY = Family(
    name="hist_gradient_boosting",
    summary="scikit-learn histogram gradient boosting",
    order=30,
    default=True,
    build=_build,
    space=_space,
    diagnosis=lambda task: Diagnosis(
        "max_leaf_nodes",
        [4, 8, 16, 31, 64],
        overfitting="fewer max_leaf_nodes, more l2_regularization, or add rows",
        underfitting="more max_leaf_nodes, a higher learning_rate, less l2_regularization, "
        "or more informative features",
        stronger=-1,
    ),
    explainer="permutation",
    needs_scaling=False,
)
