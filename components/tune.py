"""Tune: Optuna's TPE search over one model family's hyperparameters, within a budget.

The family's default parameters are always the first trial, so tuning can only keep or beat
them on the objective, and the report can show by how much. The objective is the primary
metric on the validation rows, or its mean over a k-fold cross-validation of the training
rows (objective cv). The median pruner stops a trial that lags the others at the same step:
after each fold (objective cv), or after each stage of a family that grows in stages, a
random forest's trees (objective validation; the family's `grow`). Boosted families are not
pruned stage by stage: a partly boosted model scores low whenever its learning rate is
small, so the pruner would bias the search against slow learners; they stop on their own.
Trials of a family with `early_stopping` (XGBoost, LightGBM) stop early on the validation
rows; the number of trees each one reached is recorded. What each family searches is its
own `search_space` (kfp_lifecycle/families/).

Cross-validation folds (built once by components/train.py, reused by every trial) follow
three rules, so a fold's score is what the pipeline would measure on rows it never saw:
- folds are cut over the real training rows by the split's own rules (components/split.py,
  cross_validation_folds: group k-fold on the group column, folds in time order on the
  timestamp column, stratified otherwise); each held-out row is a real row, scored once;
- the balance step is replayed on each fold's training rows: its copies and SMOTE's
  synthetic rows come from those rows alone and only ever sit on the training side;
- the preprocessing is refitted on each fold's training rows: imputation values, clipping
  bounds, scaling, category lists and target encodings come from those rows alone. What the
  preprocess and features steps decided once on all training rows stays: the columns
  dropped, each column's encoding, the outlier rows removed and the features kept. The first
  three use no labels. Feature selection may (mutual_information, importance): re-running it
  per fold would need its options here and would tune each fold on another feature set than
  the final model gets, so the tuned parameters would fit a model that is never trained. A
  feature a fold's rows cannot produce (a category absent from them) is left out of that fold.
"""

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import optuna
from pydantic import BaseModel, ConfigDict, Field
from sklearn.base import clone

from kfp_lifecycle.budget import share
from kfp_lifecycle.components.evaluate import compute_metrics
from kfp_lifecycle.components.select import TIE_BREAKER
from kfp_lifecycle.core.bundle import Prediction
from kfp_lifecycle.core.tasks import CLASSIFICATION, METRICS
from kfp_lifecycle.families import EARLY_STOPPING_ROUNDS, get_family

logger = logging.getLogger(__name__)


class TuneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Search hyperparameters; false: family defaults.")
    trials: int = Field(
        15, ge=1, le=10_000, description="Trials per family, the defaults' trial included."
    )
    timeout_seconds: float = Field(
        60,
        gt=0,
        le=86_400,
        description="Time budget per family, in seconds; the running trial finishes first.",
    )
    objective: Literal["validation", "cv"] = Field(
        "validation",
        description="validation: the primary metric on the validation rows; cv: its mean over "
        "cv_folds folds of the training rows, cut by the split's strategy (group, time or "
        "stratified), with the preprocessing refitted and the balancing replayed per fold.",
    )
    cv_folds: int = Field(
        3, ge=2, le=20, description="Folds of objective cv (the only cross-validation setting)."
    )
    pruning: bool = Field(
        True,
        description="Stop a trial that lags the median of earlier trials at the same step: "
        "after each fold (objective cv) or each stage of a random forest's trees.",
    )
    seed: int = Field(42, description="Seed of the TPE sampler (and of the folds).")
    early_stopping_rounds: int = Field(
        EARLY_STOPPING_ROUNDS,
        ge=1,
        le=1000,
        description="Families that stop early (xgboost, lightgbm): rounds without improvement "
        "on the validation rows before a fit stops, in every trial and in the final fit.",
    )


@dataclass
class Fold:
    """One cross-validation fold's matrices, built from its own training rows alone."""

    x_train: np.ndarray
    y_train: np.ndarray
    sample_weight: np.ndarray | None
    x_held_out: np.ndarray
    y_held_out: np.ndarray
    x_valid: np.ndarray  # the validation rows through this fold's preprocessing (early stopping)
    train_origins: np.ndarray  # each training row's real row; -1 for a synthetic row
    held_out_rows: np.ndarray  # the real rows scored
    preprocessor: Any = field(repr=False, default=None)  # the transform fitted for this fold


def defaults_of(estimator: Any, family: str, task: str) -> dict[str, Any]:
    """The estimator's current values of the parameters the search space tunes."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    space = get_family(family).search_space(probe, task)
    return {name: estimator.get_params()[name] for name in space}


def within_budget(options: TuneOptions, time_budget: float) -> tuple[TuneOptions, str]:
    """The options with timeout_seconds capped by tuning's share of the run's time budget,
    and what was cut ("" when nothing)."""
    limit = share(time_budget, "tuning")
    if limit is None or limit >= options.timeout_seconds:
        return options, ""
    cut = (
        f"tuning time cut from {options.timeout_seconds:g}s to {limit:.0f}s per family to fit "
        f"the run's time budget of {time_budget:g}s"
    )
    return options.model_copy(update={"timeout_seconds": limit}), cut


def fixed_params(family: str, options: TuneOptions) -> dict[str, Any]:
    """Parameters that every trial and the final fit share, set by the options, not searched."""
    stopping = get_family(family).early_stopping
    return {} if stopping is None else stopping.params(options.early_stopping_rounds)


def chosen_params(study: dict[str, Any]) -> dict[str, Any]:
    """What the final fit sets on the family's estimator: the best trial's parameters."""
    return {**study.get("fixed_params", {}), **study["best_params"]}


def fit_estimator(
    estimator: Any,
    family: str,
    x: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
) -> Any:
    """Fit as training does: the balance step's weights; a family with early stopping stops
    on (x_eval, y_eval)."""
    options = get_family(family).fit_options(x_eval, y_eval)
    if sample_weight is not None:
        options["sample_weight"] = sample_weight
    return estimator.fit(x, y, **options)


def score_model(
    estimator: Any, x: Any, y: np.ndarray, task: str, metric: str, classes: list | None
) -> float:
    """`metric` of a fitted estimator (or pipeline) on rows `x`; classifiers' `y` holds class
    indices into `classes`."""
    return score_metrics(estimator, x, y, task, classes)[metric]


def score_metrics(
    estimator: Any, x: Any, y: np.ndarray, task: str, classes: list | None
) -> dict[str, float]:
    """Every metric of the task (compute_metrics) of a fitted estimator on rows `x`."""
    if task == CLASSIFICATION:
        probabilities = estimator.predict_proba(x)
        labels = [classes[i] for i in probabilities.argmax(1)]
        truth = [classes[i] for i in y]
        prediction = Prediction(labels, probabilities, classes)
    else:
        truth, prediction = list(y), Prediction(list(estimator.predict(x)), None, None)
    return compute_metrics(task, truth, prediction)


def best_of(study: optuna.Study, metric: str, task: str) -> optuna.trial.FrozenTrial | None:
    """The best completed trial; among trials that tie with it exactly on `metric` (a
    saturated metric: a validation ROC-AUC of 1.0 for a whole range of C says nothing about
    which C is better), the best by the task's tie breaker (log loss for classifiers), then
    the earliest.

    Unlike `select`'s near ties between families, trials of one family within a hair of
    each other are not pooled: they are neighbouring settings of the same model, calibrate
    repairs the sharpness of their probabilities afterwards, and on quality_vs_hgb's
    breast_cancer the near-tie rule traded the best trial (a validation ROC-AUC one pair
    better) for a worse test ROC-AUC."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        return None
    best = study.best_trial
    breaker = TIE_BREAKER[task]
    tied = [
        t
        for t in done
        if math.isclose(t.value, best.value, rel_tol=1e-9, abs_tol=1e-12)
        and "tie_breaker" in t.user_attrs
    ]
    if breaker == metric or len(tied) < 2:
        return best
    sign = -1 if METRICS[breaker].greater_is_better else 1
    return min(tied, key=lambda t: (sign * t.user_attrs["tie_breaker"], t.number))


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
    options: TuneOptions,
    sample_weight: np.ndarray | None = None,
    folds: list[Fold] | None = None,
) -> dict[str, Any]:
    """Search the family's space; return the study document (trials, best, default score).

    `base` is the family's estimator with its defaults; every trial fits a clone of it with
    the trial's parameters, exactly as training fits the final model (`chosen_params`).
    Objective cv scores the trial on `folds` (see the module docstring)."""
    greater = METRICS[metric].greater_is_better
    objective_kind = options.objective
    if objective_kind == "cv" and not folds:
        raise ValueError("objective cv needs the folds (components/train.py builds them)")
    spec = get_family(family)
    fixed = fixed_params(family, options)
    base = clone(base).set_params(**fixed)
    defaults = defaults_of(base, family, task)
    trials_budget = options.trials if options.enabled else 1

    def score(estimator: Any, x: np.ndarray, y: np.ndarray) -> float:
        return score_model(estimator, x, y, task, metric, classes)

    def scored(trial: optuna.Trial, estimator: Any, x: np.ndarray, y: np.ndarray) -> float:
        """The primary metric; the tie breaker kept on the trial for best_of."""
        found = score_metrics(estimator, x, y, task, classes)
        trial.set_user_attr("tie_breaker", found[TIE_BREAKER[task]])
        return found[metric]

    def validation_objective(trial: optuna.Trial, estimator: Any) -> float:
        if spec.grow is not None and options.pruning:

            def report(value: float, step: int) -> None:
                trial.report(value, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()

            spec.grow(
                estimator, x_train, y_train, sample_weight,
                lambda model: score(model, x_valid, y_valid), report,
            )  # fmt: skip
            return scored(trial, estimator, x_valid, y_valid)
        fit_estimator(estimator, family, x_train, y_train, sample_weight, x_valid, y_valid)
        if spec.early_stopping is not None:
            trial.set_user_attr("best_iteration", spec.best_iteration(estimator))
        return scored(trial, estimator, x_valid, y_valid)

    def cv_objective(trial: optuna.Trial, params: dict[str, Any]) -> float:
        scores, iterations, ties = [], [], []
        for step, fold in enumerate(folds):
            estimator = clone(base).set_params(**params)
            # Early stopping uses the validation rows, as the final fit does: stopping on the
            # held-out fold would let that fold pick the trees it is scored on.
            fit_estimator(estimator, family, fold.x_train, fold.y_train, fold.sample_weight,
                          fold.x_valid, y_valid)  # fmt: skip
            if spec.early_stopping is not None:
                iterations.append(spec.best_iteration(estimator))
            scores.append(scored(trial, estimator, fold.x_held_out, fold.y_held_out))
            ties.append(trial.user_attrs["tie_breaker"])
            trial.report(float(np.mean(scores)), step)
            if options.pruning and trial.should_prune():
                raise optuna.TrialPruned()
        if iterations and None not in iterations:
            trial.set_user_attr("best_iteration", round(float(np.mean(iterations))))
        trial.set_user_attr("tie_breaker", float(np.mean(ties)))
        return float(np.mean(scores))

    def objective(trial: optuna.Trial) -> float:
        params = spec.search_space(trial, task)
        if objective_kind == "cv":
            return cv_objective(trial, params)
        return validation_objective(trial, clone(base).set_params(**params))

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
        if trial.state == optuna.trial.TrialState.COMPLETE:
            shown = f"{metric}={trial.value:.4f}"
        elif trial.state == optuna.trial.TrialState.PRUNED:
            shown = f"pruned at step {trial.last_step}"
        else:
            shown = trial.state.name.lower()
        best = study.best_value if _completed(study) else math.nan
        logger.info(
            f"{family}: trial {trial.number + 1}/{trials_budget} {shown} "
            f"(best {best:.4f}, {time.monotonic() - started:.0f}s of {options.timeout_seconds:g}s)"
        )
        # Optuna only stops starting trials once the timeout has passed, and the running one
        # finishes: a trial that would end past it (as long as the slowest so far) is not begun.
        slowest = max((t.duration.total_seconds() for t in study.trials if t.duration), default=0)
        if time.monotonic() - started + slowest > options.timeout_seconds:
            study.stop()

    study.optimize(
        objective,
        n_trials=trials_budget,
        timeout=options.timeout_seconds,
        callbacks=[progress],
        catch=(ValueError,),
    )
    elapsed = time.monotonic() - started
    stopped_by = "trials" if len(study.trials) >= trials_budget else "timeout"
    if stopped_by == "timeout":
        logger.info(
            f"{family}: the time budget ({options.timeout_seconds:g}s) stopped the search after "
            f"{len(study.trials)} of {trials_budget} trials"
        )
    default = study.trials[0]
    best = best_of(study, metric, task)
    return {
        "family": family,
        "metric": metric,
        "greater_is_better": greater,
        "objective": "maximize" if greater else "minimize",
        "objective_data": objective_kind,
        "tie_breaker": TIE_BREAKER[task],
        "default_params": _plain(defaults),
        "fixed_params": fixed,
        "default_score": default.value,
        "best_score": best.value if best else None,
        "best_params": _plain(best.params) if best else _plain(defaults),
        "best_iteration": best.user_attrs.get("best_iteration") if best else None,
        "budget": {"trials": trials_budget, "timeout_seconds": options.timeout_seconds},
        "stopped_by": stopped_by,
        "elapsed_seconds": round(elapsed, 2),
        "trials": [_trial_record(t) for t in study.trials],
    }


def _completed(study: optuna.Study) -> bool:
    return any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def _trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    record = {
        "number": trial.number,
        "params": _plain(trial.params),
        "value": trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None,
        "state": trial.state.name,
        "is_default": bool(trial.user_attrs.get("is_default")),
        "duration_seconds": None if trial.duration is None else trial.duration.total_seconds(),
    }
    for attribute in ("best_iteration", "tie_breaker"):
        if attribute in trial.user_attrs:
            record[attribute] = trial.user_attrs[attribute]
    return record


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
