"""What a model family is, in one place: the `Family` spec every family module declares.

A family module (kfp_lifecycle/families/<name>.py) defines `FAMILY = Family(...)`; the
package finds it (kfp_lifecycle/families/__init__.py). Training, tuning, the fit diagnosis,
the explanation step and the model server read a family only through this spec, so adding a
family is one new module. Nothing here imports kfp: the model server uses a family's
`contributions` to explain a prediction. Libraries a family needs (xgboost, lightgbm) are
imported inside its functions, so loading the registry stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import optuna

# Patience of the families that stop early: rounds without improvement on the validation rows
# before a fit stops. The tuning option's default too, so the defaults' trial is training's.
EARLY_STOPPING_ROUNDS = 20

# How a family explains itself. shap: the model's own exact tree SHAP values (per prediction
# and, averaged, globally); coefficients: coefficient x feature value (per prediction);
# permutation: permutation importance only (every family gets that, globally).
Explainer = Literal["shap", "coefficients", "permutation"]
EXPLAINERS: tuple[str, ...] = ("shap", "coefficients", "permutation")


@dataclass(frozen=True)
class EarlyStopping:
    """Stopping on the validation rows: how a family turns it on, feeds it and reads it.

    `rounds_param` is the estimator parameter holding the patience (None turns it off);
    `trees_param` the one holding the number of trees a refit without stopping grows."""

    rounds_param: str
    fit_options: Callable[[np.ndarray, np.ndarray], dict[str, Any]]  # (x_eval, y_eval)
    # 0-based index of the last tree kept (the model predicts with trees 0..best), or None.
    best_iteration: Callable[[Any], int | None]
    trees_param: str = "n_estimators"

    def params(self, rounds: int) -> dict[str, Any]:
        """The parameters that turn stopping on with a patience of `rounds`."""
        return {self.rounds_param: rounds}

    def fixed_trees(self, best_iteration: int | None, estimator: Any) -> dict[str, Any]:
        """Parameters for a refit that grows the trees stopping kept, and does not stop."""
        trees = (
            best_iteration + 1
            if best_iteration is not None
            else estimator.get_params()[self.trees_param]
        )
        return {self.rounds_param: None, self.trees_param: trees}


@dataclass(frozen=True)
class Diagnosis:
    """The regularisation knob the fit diagnosis sweeps, and what to try on each verdict."""

    param: str
    grid: list[Any]
    overfitting: str  # advice when the model overfits
    underfitting: str  # advice when it underfits
    stronger: int = 1  # +1: a higher value regularises more (min_samples_leaf); -1: less (C)

    def advice(self, verdict: str) -> str:
        return {"overfitting": self.overfitting, "underfitting": self.underfitting}[verdict]


# grow(estimator, x, y, sample_weight, score(model) -> float, report(score, step)) -> score:
# fits in stages, scoring after each, so a tuning trial can be pruned midway.
Grow = Callable[
    [Any, np.ndarray, np.ndarray, "np.ndarray | None", Callable[[Any], float],
     Callable[[float, int], None]],
    float,
]  # fmt: skip


@dataclass(frozen=True)
class Family:
    """One model family: everything the lifecycle needs to train, tune, diagnose, explain and
    serve it. Estimators are scikit-learn compatible (fit, predict, predict_proba for
    classifiers, get_params/set_params, clone)."""

    name: str
    summary: str  # one line, for help texts
    order: int  # listing order (simple to complex); defaults train in this order
    default: bool  # trained unless the configuration names the families
    build: Callable[[str, int], Any]  # (task, seed) -> the estimator with the family's defaults
    space: Callable[[optuna.Trial, str], dict[str, Any]]  # (trial, task) -> a trial's params
    diagnosis: Callable[[str], Diagnosis]  # task -> the knob the validation curve walks
    explainer: Explainer
    needs_scaling: bool  # its fit depends on the features' scale (preprocessing's scaling)
    library: str = "scikit-learn"  # the distribution the estimator comes from
    early_stopping: EarlyStopping | None = None  # stops on the validation rows
    grow: Grow | None = None  # staged fit (tuning prunes between stages)
    # (fitted estimator, transformed features) -> contributions in raw score units, bias last:
    # rows x (features + 1), or rows x classes x (features + 1) for a multiclass model.
    contributions: Callable[[Any, np.ndarray], np.ndarray] | None = None

    def estimator(self, task: str, params: dict[str, Any] | None = None, seed: int = 42) -> Any:
        """A fresh estimator for `task`: the family's defaults, with `params` on top."""
        return self.build(task, seed).set_params(**(params or {}))

    def search_space(self, trial: optuna.Trial, task: str) -> dict[str, Any]:
        """The parameters a tuning trial tries."""
        return self.space(trial, task)

    def fit_options(self, x_eval: np.ndarray, y_eval: np.ndarray) -> dict[str, Any]:
        """Extra fit() arguments: the validation rows, for a family that stops early on them."""
        stopping = self.early_stopping
        return {} if stopping is None else stopping.fit_options(x_eval, y_eval)

    def best_iteration(self, estimator: Any) -> int | None:
        """The last tree early stopping kept (0-based), or None."""
        stopping = self.early_stopping
        return None if stopping is None else stopping.best_iteration(estimator)
