"""Random forests: grown in stages while tuning, so a lagging trial is pruned midway."""

from collections.abc import Callable
from typing import Any

import numpy as np

from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.families.spec import Diagnosis, Family

# A tuning trial grows this many trees at a time and is scored after each stage.
STAGE_TREES = 100


def _build(task: str, seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if task == CLASSIFICATION else RandomForestRegressor
    return cls(n_estimators=300, min_samples_leaf=2, n_jobs=-1, random_state=seed)


def _space(trial: Any, task: str) -> dict[str, Any]:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 100, 500, step=50),
        "max_depth": trial.suggest_categorical("max_depth", [None, 4, 8, 12, 16]),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
        "max_features": trial.suggest_categorical("max_features", ["sqrt", 0.5, 1.0]),
    }


def grow_forest(
    forest: Any,
    x: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None,
    score: Callable[[Any], float],
    report: Callable[[float, int], None],
) -> float:
    """Fit a random forest STAGE_TREES trees at a time; `report(score, trees)` after each
    stage (it may raise optuna.TrialPruned). Warm start draws each tree's seed exactly as a
    single fit does, so the grown forest is the one a single fit gives. Returns the score
    of the whole forest."""
    total = forest.n_estimators
    options = {} if sample_weight is None else {"sample_weight": sample_weight}
    forest.set_params(warm_start=True)
    try:
        for trees in [*range(STAGE_TREES, total, STAGE_TREES), total]:
            forest.set_params(n_estimators=trees).fit(x, y, **options)
            value = score(forest)
            report(value, trees)
    finally:
        forest.set_params(warm_start=False)
    return value


FAMILY = Family(
    name="random_forest",
    summary="scikit-learn random forest",
    order=20,
    default=True,
    build=_build,
    space=_space,
    diagnosis=lambda task: Diagnosis(
        "min_samples_leaf",
        [1, 2, 5, 10, 20, 50],
        overfitting="raise min_samples_leaf or cap max_depth, or add rows",
        underfitting="lower min_samples_leaf, allow deeper trees (max_depth), or more "
        "informative features",
    ),
    explainer="permutation",
    needs_scaling=False,
    grow=grow_forest,
)
