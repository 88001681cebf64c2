"""Tune: Optuna's TPE search over one model family's hyperparameters, within a budget.

The family's default parameters are always the first trial, so tuning can only keep or beat
them on the objective, and the report can show by how much. The objective is the primary
metric on the validation rows, or a stratified k-fold cross-validation over the training
rows (with the median pruner stopping a poor trial after its first folds). XGBoost trials
keep early stopping on the validation rows; the number of trees it found is recorded.
"""

import math
import time
from typing import Any, Literal

import numpy as np
import optuna
from pydantic import BaseModel, ConfigDict, Field
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold

from kfp_lifecycle.bundle import Prediction
from kfp_lifecycle.components.evaluate import compute_metrics
from kfp_lifecycle.tasks import CLASSIFICATION, METRICS


class TuningOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Search hyperparameters; false: family defaults.")
    trials: int = Field(15, ge=1, le=10_000, description="Trials per family, defaults included.")
    timeout_seconds: float = Field(
        60, gt=0, description="Time budget per family; the running trial finishes first."
    )
    objective: Literal["validation", "cv"] = Field(
        "validation",
        description="validation: the primary metric on the validation rows; cv: its mean over "
        "cv_folds folds of the training rows (falls back to validation when the balance step "
        "added synthetic rows, which must not reach a held-out fold).",
    )
    cv_folds: int = Field(3, ge=2, le=20, description="Folds for objective cv.")
    pruning: bool = Field(True, description="objective cv: stop a trial whose first folds lag.")
    seed: int = Field(42, description="Seed of the TPE sampler (and of the folds).")


def _space(trial: optuna.Trial, family: str, task: str) -> dict[str, Any]:
    """The parameters a trial tries; each family's main regularisation knobs."""
    if family == "linear":
        if task == CLASSIFICATION:
            return {"C": trial.suggest_float("C", 1e-3, 1e2, log=True)}
        return {"alpha": trial.suggest_float("alpha", 1e-3, 1e3, log=True)}
    if family == "random_forest":
        return {
            "n_estimators": trial.suggest_int("n_estimators", 100, 500, step=50),
            "max_depth": trial.suggest_categorical("max_depth", [None, 4, 8, 12, 16]),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
            "max_features": trial.suggest_categorical("max_features", ["sqrt", 0.5, 1.0]),
        }
    if family == "hist_gradient_boosting":
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 8, 64, log=True),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 5, 100, log=True),
            "l2_regularization": trial.suggest_float("l2_regularization", 0.0, 10.0),
        }
    if family == "xgboost":
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "max_depth": trial.suggest_int("max_depth", 2, 10),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
        }
    raise ValueError(f"no search space for family '{family}'")


def defaults_of(estimator: Any, family: str, task: str) -> dict[str, Any]:
    """The estimator's current values of the parameters the search space tunes."""
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    return {name: estimator.get_params()[name] for name in _space(probe, family, task)}


def fit_estimator(
    estimator: Any,
    family: str,
    x: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
) -> Any:
    """Fit as training does: the balance step's weights; XGBoost stops early on (x_eval, y_eval)."""
    options: dict[str, Any] = {}
    if sample_weight is not None:
        options["sample_weight"] = sample_weight
    if family == "xgboost":
        options.update({"eval_set": [(x_eval, y_eval)], "verbose": False})
    return estimator.fit(x, y, **options)


def score_model(
    estimator: Any, x: Any, y: np.ndarray, task: str, metric: str, classes: list | None
) -> float:
    """`metric` of a fitted estimator (or pipeline) on rows `x`; classifiers' `y` holds class
    indices into `classes`."""
    if task == CLASSIFICATION:
        probabilities = estimator.predict_proba(x)
        labels = [classes[i] for i in probabilities.argmax(1)]
        truth = [classes[i] for i in y]
        prediction = Prediction(labels, probabilities, classes)
    else:
        truth, prediction = list(y), Prediction(list(estimator.predict(x)), None, None)
    return compute_metrics(task, truth, prediction)[metric]


def tune(
    base: Any,
    family: str,
    task: str,
    metric: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    classes: list | None,
    options: TuningOptions,
    sample_weight: np.ndarray | None = None,
    has_synthetic_rows: bool = False,
) -> dict[str, Any]:
    """Search the family's space; return the study document (trials, best, default score)."""
    greater = METRICS[metric].greater_is_better
    objective_kind = options.objective
    note = ""
    if objective_kind == "cv" and has_synthetic_rows:
        objective_kind, note = "validation", "cv fell back to validation: synthetic rows"
    defaults = defaults_of(base, family, task)
    trials_budget = options.trials if options.enabled else 1

    def fit(params: dict[str, Any], x, y, weight, x_eval, y_eval) -> Any:
        estimator = clone(base).set_params(**params)
        return fit_estimator(estimator, family, x, y, weight, x_eval, y_eval)

    def objective(trial: optuna.Trial) -> float:
        params = _space(trial, family, task)
        if objective_kind == "validation":
            estimator = fit(params, x_train, y_train, sample_weight, x_valid, y_valid)
            if family == "xgboost":
                trial.set_user_attr("best_iteration", int(estimator.best_iteration))
            return score_model(estimator, x_valid, y_valid, task, metric, classes)
        splitter = (
            StratifiedKFold(options.cv_folds, shuffle=True, random_state=options.seed)
            if task == CLASSIFICATION
            else KFold(options.cv_folds, shuffle=True, random_state=options.seed)
        )
        scores = []
        for fold, (inside, held_out) in enumerate(splitter.split(x_train, y_train)):
            weight = None if sample_weight is None else sample_weight[inside]
            estimator = fit(
                params, x_train[inside], y_train[inside], weight,
                x_train[held_out], y_train[held_out],
            )  # fmt: skip
            scores.append(
                score_model(estimator, x_train[held_out], y_train[held_out], task, metric, classes)
            )
            trial.report(float(np.mean(scores)), fold)
            if options.pruning and trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(scores))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize" if greater else "minimize",
        sampler=optuna.samplers.TPESampler(seed=options.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
        if options.pruning
        else optuna.pruners.NopPruner(),
    )
    study.enqueue_trial(defaults, user_attrs={"is_default": True})
    started = time.monotonic()

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        shown = "pruned" if trial.value is None else f"{trial.value:.4f}"
        best = study.best_value if any(t.value is not None for t in study.trials) else math.nan
        print(
            f"{family}: trial {trial.number + 1}/{trials_budget} {metric}={shown} "
            f"(best {best:.4f}, {time.monotonic() - started:.0f}s)"
        )

    study.optimize(
        objective,
        n_trials=trials_budget,
        timeout=options.timeout_seconds,
        callbacks=[progress],
        catch=(ValueError,),
    )
    elapsed = time.monotonic() - started
    done = [t for t in study.trials if t.value is not None]
    default = study.trials[0]
    return {
        "family": family,
        "metric": metric,
        "greater_is_better": greater,
        "objective": "maximize" if greater else "minimize",
        "objective_data": objective_kind,
        "note": note,
        "default_params": _plain(defaults),
        "default_score": default.value,
        "best_score": study.best_value if done else None,
        "best_params": _plain(study.best_params) if done else _plain(defaults),
        "best_iteration": study.best_trial.user_attrs.get("best_iteration") if done else None,
        "budget": {"trials": trials_budget, "timeout_seconds": options.timeout_seconds},
        "stopped_by": "trials" if len(study.trials) >= trials_budget else "timeout",
        "elapsed_seconds": round(elapsed, 2),
        "trials": [
            {
                "number": t.number,
                "params": _plain(t.params),
                "value": t.value,
                "state": t.state.name,
                "is_default": bool(t.user_attrs.get("is_default")),
            }
            for t in study.trials
        ],
    }


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
