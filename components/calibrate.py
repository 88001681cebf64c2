"""Calibrate: a classifier's probabilities (Platt scaling, kept when it helps) and a binary
classifier's decision threshold, both chosen on validation rows (never test rows) and handed
on as a document of their own (core.documents.Calibration); register puts them into the
bundle's metadata, where Bundle.predict and so serving read them. The model is not rewritten.
"""

import logging
from typing import Any, Literal

import numpy as np
import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Model, Output
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kfp_lifecycle.component import component
from kfp_lifecycle.components.evaluate import ROC_POINTS, calibration, proper_scores, thin_to
from kfp_lifecycle.core.bundle import DEFAULT_DECISION_THRESHOLD, Bundle, Prediction, calibrated
from kfp_lifecycle.core.documents import Calibration, PlattScaling
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION

logger = logging.getLogger(__name__)


class CalibrateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: Literal["f1", "balanced_accuracy", "cost", "fixed"] = Field(
        "f1",
        description="f1: the threshold with the best F1 of the positive class (the minority "
        "class unless data.positive_class says otherwise, so predicting one class never "
        "wins) on validation rows; balanced_accuracy: the best mean recall of the two "
        "classes; cost: the lowest total cost of errors (cost_false_positive, "
        "cost_false_negative); fixed: fixed_threshold as given. A chosen threshold is kept "
        "only when choosing it beats the prior default (the positive share) under 5-fold "
        "cross-validation over the validation rows. Binary classifiers only.",
    )
    min_rows_per_class: int = Field(
        30,
        ge=1,
        description="With fewer validation rows of either class, no threshold is fitted to "
        "them (it would follow their noise): the prior default is kept, the positive "
        "class's share of the validation rows, which for calibrated probabilities "
        "balances the two classes' recall.",
    )
    calibrate: bool = Field(
        True,
        description="Calibrate the probabilities (Platt scaling fitted on the validation "
        "rows, kept in the bundle and applied by serving) when that lowers the "
        "cross-validated log loss on the validation rows; class weights and resampling "
        "distort probabilities, and this puts them back.",
    )
    cost_false_positive: float = Field(
        1.0, ge=0, description="Cost of labelling a negative row positive (strategy cost)."
    )
    cost_false_negative: float = Field(
        1.0, ge=0, description="Cost of missing a positive row (strategy cost)."
    )
    fixed_threshold: float = Field(
        DEFAULT_DECISION_THRESHOLD,
        ge=0,
        le=1,
        description="The threshold for strategy fixed: a row is positive when its "
        "positive-class probability is at least this.",
    )

    @model_validator(mode="after")
    def _costs_weigh_something(self) -> "CalibrateOptions":
        if self.strategy == "cost" and self.cost_false_positive + self.cost_false_negative == 0:
            raise ValueError(
                "cost_false_positive and cost_false_negative are both 0: strategy 'cost' "
                "needs at least one positive cost"
            )
        return self


STRATEGIES = ("f1", "balanced_accuracy", "cost", "fixed")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def choose_threshold(
    y_true: list[Any] | np.ndarray,
    scores: np.ndarray,
    positive: Any,
    strategy: str = "f1",
    costs: dict[str, float] | None = None,
    fixed: float = DEFAULT_DECISION_THRESHOLD,
) -> tuple[float, dict[str, Any]]:
    """The threshold on positive-class scores (a row is positive when score >= threshold).

    Candidates lie midway between consecutive distinct scores (plus 0, 1 and 0.5), so the
    chosen one does not sit on a validation row's own score. Ties go to the candidate
    nearest 0.5. `costs`: {"false_positive": c, "false_negative": c} (default 1 each, i.e.
    the number of errors). The evidence holds the outcome at the threshold and at 0.5, and
    a thinned curve of precision, recall, F1 and cost.
    """
    if strategy not in STRATEGIES:
        raise DataError(
            f"unknown threshold strategy '{strategy}'; choose one of: {', '.join(STRATEGIES)}"
        )
    scores = np.asarray(scores, dtype=float)
    is_positive = np.asarray(y_true) == positive
    if len(scores) != len(is_positive) or not len(scores):
        raise DataError(f"{len(is_positive)} label(s) but {len(scores)} score(s)")
    if not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
        raise DataError("threshold scores must be probabilities in [0, 1]")
    positives = int(is_positive.sum())
    if positives in (0, len(is_positive)):
        raise DataError(
            f"the validation rows hold {'no' if positives == 0 else 'only'} '{positive}' "
            "rows: a threshold needs both classes"
        )
    costs = {"false_positive": 1.0, "false_negative": 1.0, **(costs or {})}
    distinct = np.unique(scores)
    candidates = np.unique(
        np.concatenate(
            [[0.0, 1.0, DEFAULT_DECISION_THRESHOLD, fixed], distinct[:-1] + np.diff(distinct) / 2]
        )
    )
    outcome = _outcomes(candidates, scores[is_positive], scores[~is_positive], costs)
    if strategy == "fixed":
        chosen = int(np.flatnonzero(candidates == fixed)[0])
    else:
        objective = -outcome["cost"] if strategy == "cost" else outcome[strategy]
        best = np.flatnonzero(objective == objective.max())
        chosen = int(best[np.argmin(np.abs(candidates[best] - DEFAULT_DECISION_THRESHOLD))])
    default = int(np.flatnonzero(candidates == DEFAULT_DECISION_THRESHOLD)[0])
    threshold = float(candidates[chosen])
    keep = thin_to(len(candidates), ROC_POINTS)
    evidence = {
        "strategy": strategy,
        "threshold": threshold,
        "positive_class": _plain(positive),
        "rows": len(scores),
        "positives": positives,
        "costs": costs,
        "at_threshold": {k: _plain(v[chosen]) for k, v in outcome.items()},
        "at_default": {
            "threshold": DEFAULT_DECISION_THRESHOLD,
            **{k: _plain(v[default]) for k, v in outcome.items()},
        },
        "curve": {"thresholds": candidates[keep].tolist()}
        | {k: v[keep].tolist() for k, v in outcome.items()},
    }
    return threshold, evidence


def _outcomes(
    thresholds: np.ndarray, positive_scores: np.ndarray, negative_scores: np.ndarray, costs: dict
) -> dict[str, np.ndarray]:
    """Counts and rates at every threshold at once (rows with score >= threshold are positive)."""
    positives, negatives = len(positive_scores), len(negative_scores)
    true_positives = positives - np.searchsorted(np.sort(positive_scores), thresholds, "left")
    false_positives = negatives - np.searchsorted(np.sort(negative_scores), thresholds, "left")
    false_negatives = positives - true_positives
    flagged = true_positives + false_positives
    precision = np.divide(true_positives, flagged, out=np.zeros(len(thresholds)), where=flagged > 0)
    return {
        "precision": precision,
        "recall": true_positives / positives,
        "f1": 2 * true_positives / (2 * true_positives + false_positives + false_negatives),
        "balanced_accuracy": (
            true_positives / positives + (negatives - false_positives) / negatives
        )
        / 2,
        "false_positives": false_positives,
        "false_negatives": false_negatives,
        "cost": costs["false_positive"] * false_positives
        + costs["false_negative"] * false_negatives,
    }


# Platt scaling is fitted on the validation rows; it is kept when its log loss, measured by
# cross-validation over those rows (fit on k-1 folds, scored on the k-th), is lower than the
# raw probabilities' by at least this share.
CALIBRATION_FOLDS = 5
CALIBRATION_GAIN = 0.01


def _logits(probabilities: np.ndarray) -> np.ndarray:
    """Log-odds per class; binary: the positive class's alone (one column)."""
    p = np.clip(np.asarray(probabilities, dtype=float), 1e-12, 1 - 1e-12)
    if p.shape[1] == 2:
        return np.log(p[:, 1] / p[:, 0])[:, None]
    return np.log(p / (1 - p))


def fit_platt(y_true: np.ndarray, probabilities: np.ndarray, classes: list[Any]) -> dict[str, Any]:
    """Slope and intercept per class (binary: the positive class's) of a logistic
    regression of the class's outcome on its log-odds: what bundle.calibrated applies."""
    from sklearn.linear_model import LogisticRegression

    logits = _logits(probabilities)
    targets = [classes[1]] if len(classes) == 2 else classes
    slopes, intercepts = [], []
    for column, label in enumerate(targets):
        outcome = np.asarray(y_true) == label
        if outcome.all() or not outcome.any():  # nothing to learn: keep the class as it is
            slopes.append(1.0)
            intercepts.append(0.0)
            continue
        fitted = LogisticRegression(C=1e4).fit(logits[:, [column]], outcome)
        slopes.append(float(fitted.coef_[0, 0]))
        intercepts.append(float(fitted.intercept_[0]))
    return {"method": "sigmoid", "slopes": slopes, "intercepts": intercepts}


def choose_calibration(
    y_true: np.ndarray, probabilities: np.ndarray, classes: list[Any], seed: int = 0
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(calibration or None, evidence): Platt scaling when its cross-validated log loss on
    these rows beats the raw probabilities' (by CALIBRATION_GAIN)."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y_true)
    fewest = min(int((y == label).sum()) for label in classes)
    raw = _calibration_scores(y, probabilities, classes)
    if fewest < CALIBRATION_FOLDS:
        return None, {
            "applied": False,
            "reason": f"{fewest} validation row(s) of a class: too few to calibrate on",
            "before": raw,
        }
    folds = StratifiedKFold(CALIBRATION_FOLDS, shuffle=True, random_state=seed)
    held_out = np.empty_like(np.asarray(probabilities, dtype=float))
    for inside, outside in folds.split(probabilities, y):
        fitted = fit_platt(y[inside], probabilities[inside], classes)
        held_out[outside] = calibrated(probabilities[outside], fitted)
    after = _calibration_scores(y, held_out, classes)
    applied = after["log_loss"] < raw["log_loss"] * (1 - CALIBRATION_GAIN)
    evidence = {
        "applied": bool(applied),
        "method": "sigmoid",
        "before": raw,
        "after_cross_validated": after,
        "reason": (
            f"Platt scaling lowers the validation log loss from {raw['log_loss']:.4f} to "
            f"{after['log_loss']:.4f} ({CALIBRATION_FOLDS}-fold cross-validated)"
            if applied
            else f"Platt scaling would not lower the validation log loss enough "
            f"({raw['log_loss']:.4f} -> {after['log_loss']:.4f}, cross-validated): kept raw"
        ),
    }
    return (fit_platt(y, probabilities, classes) if applied else None), evidence


def _calibration_scores(
    y: np.ndarray, probabilities: np.ndarray, classes: list[Any]
) -> dict[str, float]:
    prediction = Prediction(list(y), probabilities, classes)
    return {
        "log_loss": proper_scores(y, probabilities, classes)["log_loss"],
        "calibration_error": calibration(list(y), prediction)["expected_calibration_error"],
    }


def calibrate_bundle(
    bundle: Bundle, validation: pd.DataFrame, options: CalibrateOptions
) -> tuple[Calibration, dict[str, Any]]:
    """(the calibration, its evidence): a classifier's probabilities calibrated when that
    helps, a binary classifier's decision threshold chosen, both on the validation rows;
    other tasks get an empty calibration. The bundle is not changed: `register` puts the
    calibration into the registered bundle's metadata, and the steps that judge the served
    model apply it in memory (core.documents.served)."""
    task, target, classes = bundle.metadata["task"], bundle.metadata["target"], bundle.classes
    if task != CLASSIFICATION:
        return Calibration(), {
            "applied": False,
            "reason": f"a decision threshold applies to binary classification only; this is "
            f"{task}: nothing to calibrate",
        }
    if target not in validation.columns:
        raise DataError(f"target column '{target}' not found in the validation rows")
    unknown = validation.loc[~validation[target].isin(classes), target]
    if len(unknown):
        raise DataError(
            f"validation row {unknown.index[0]} has '{target}' = {unknown.iloc[0]!r}, not one "
            f"of the model's classes ({', '.join(map(str, classes))})"
        )
    y = validation[target].to_numpy()
    raw = bundle.pipeline.predict_proba(validation.drop(columns=[target]))
    scaling, result = None, {}
    if options.calibrate:
        fitted, result["calibration"] = choose_calibration(y, raw, classes)
        scaling = PlattScaling.model_validate(fitted) if fitted is not None else None
    probabilities = calibrated(raw, scaling.model_dump() if scaling else None)
    if len(classes) != 2:
        return Calibration(scaling=scaling), {
            **result,
            "applied": False,
            "reason": f"a decision threshold applies to binary classification only; this is "
            f"{len(classes)}-class classification",
        }
    threshold, evidence = threshold_for(y, probabilities[:, 1], classes[1], options)
    summary = {k: v for k, v in evidence.items() if k != "curve"}
    chosen = Calibration(scaling=scaling, decision_threshold=threshold, threshold_selection=summary)
    return chosen, {**result, "applied": True, **evidence}


# A threshold chosen on the validation rows is kept only when choosing it holds out of fold:
# on each of THRESHOLD_FOLDS folds it is chosen on the other folds and applied to this one,
# and the pooled result must beat the prior default's on the same rows.
THRESHOLD_FOLDS = 5


def threshold_for(
    y: np.ndarray, scores: np.ndarray, positive: Any, options: CalibrateOptions
) -> tuple[float, dict[str, Any]]:
    """choose_threshold by the options, when that choice holds under cross-validation;
    otherwise (or with fewer than min_rows_per_class validation rows of a class) the prior
    default, the positive share, saying why."""
    costs = {
        "false_positive": options.cost_false_positive,
        "false_negative": options.cost_false_negative,
    }
    is_positive = np.asarray(y) == positive
    fewest = int(min(is_positive.sum(), (~is_positive).sum()))
    prior = round(float(is_positive.mean()), 4)
    if options.strategy == "fixed":
        return choose_threshold(y, scores, positive, "fixed", costs, options.fixed_threshold)
    if fewest >= options.min_rows_per_class:
        threshold, evidence = choose_threshold(y, scores, positive, options.strategy, costs)
        held_out = _cross_validated(y, scores, positive, options.strategy, costs, prior)
        if held_out is None:
            return threshold, evidence
        evidence["cross_validation"] = held_out
        if held_out["chosen"] > held_out["default"]:
            evidence["reason"] = (
                f"the {options.strategy} threshold holds out of fold: "
                f"{held_out['chosen']:.4g} against {held_out['default']:.4g} at the prior "
                f"default {prior:g} ({held_out['folds']}-fold cross-validated)"
            )
            return threshold, evidence
        reason = (
            f"a {options.strategy} threshold chosen on these rows does not beat the prior "
            f"default out of fold ({held_out['chosen']:.4g} against {held_out['default']:.4g}, "
            f"{held_out['folds']}-fold cross-validated), so the prior default {prior:g} (the "
            f"share of '{positive}') is kept"
        )
    else:
        held_out = None
        reason = (
            f"only {fewest} validation row(s) of a class, fewer than "
            f"{options.min_rows_per_class}: too few to choose a threshold on, so the prior "
            f"default {prior:g} (the share of '{positive}') is kept"
        )
    threshold, evidence = choose_threshold(y, scores, positive, "fixed", costs, prior)
    evidence["strategy"] = "prior"
    evidence["reason"] = reason
    if held_out is not None:
        evidence["cross_validation"] = held_out
    return threshold, evidence


def _cross_validated(
    y: np.ndarray,
    scores: np.ndarray,
    positive: Any,
    strategy: str,
    costs: dict[str, float],
    default: float,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The strategy's objective (higher is better; cost negated) of thresholds chosen out of
    fold, pooled over the folds, and of the default threshold on the same rows; None when a
    class has fewer than two rows."""
    from sklearn.model_selection import StratifiedKFold

    y, scores = np.asarray(y), np.asarray(scores, dtype=float)
    is_positive = y == positive
    folds = min(THRESHOLD_FOLDS, int(is_positive.sum()), int((~is_positive).sum()))
    if folds < 2:
        return None
    # a row is positive when its score reaches its own fold's threshold: shifting every
    # score by (0.5 - that threshold) lets _outcomes judge all folds at one threshold, 0.5
    shifted, chosen = np.empty_like(scores), []
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for inside, outside in splitter.split(scores, is_positive):
        if len(np.unique(is_positive[inside])) < 2:
            return None
        threshold, _ = choose_threshold(y[inside], scores[inside], positive, strategy, costs)
        shifted[outside] = scores[outside] - threshold + DEFAULT_DECISION_THRESHOLD
        chosen.append(round(threshold, 4))

    def objective(values: np.ndarray, at: float) -> float:
        outcome = _outcomes(np.array([at]), values[is_positive], values[~is_positive], costs)
        value = -outcome["cost"][0] if strategy == "cost" else outcome[strategy][0]
        return float(value)

    return {
        "folds": folds,
        "objective": "-cost" if strategy == "cost" else strategy,
        "chosen": objective(shifted, DEFAULT_DECISION_THRESHOLD),
        "default": objective(scores, default),
        "default_threshold": default,
        "fold_thresholds": chosen,
    }


@component
def calibrate(
    model: Input[Model],
    validation: Input[Dataset],
    calibration: Output[Artifact],
    report: Output[Artifact],
    options: dict = {},  # noqa: B006
):
    """Calibrate a classifier's probabilities and choose a binary classifier's decision
    threshold on validation rows; the model itself is left as it is.

    Args:
        model: The selected bundle (read, never rewritten).
        validation: Validation rows (the test rows stay untouched for evaluation).
        calibration: JSON (core.documents.Calibration): scaling (Platt slopes and
            intercepts, when calibrating helps), decision_threshold (binary
            classification) and threshold_selection (the evidence without the curve).
            Evaluate, gate, diagnose, explain and report apply it to judge the model as it
            will be served; register puts it into the registered bundle, where serving
            applies it.
        report: JSON: calibration (applied, log loss and calibration error before and
            after), strategy (prior when too few rows to choose), threshold,
            precision/recall/F1/cost at it and at 0.5, and the curve the choice was made on.
        options: CalibrateOptions: strategy (f1, balanced_accuracy, cost, fixed),
            min_rows_per_class, calibrate, cost_false_positive, cost_false_negative,
            fixed_threshold.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.components.calibrate import CalibrateOptions, calibrate_bundle, logger
    from kfp_lifecycle.core.bundle import load_bundle
    from kfp_lifecycle.core.documents import write_document

    chosen, result = calibrate_bundle(
        load_bundle(model.path),
        pd.read_parquet(validation.path),
        CalibrateOptions.model_validate(options),
    )
    write_document(calibration.path, chosen)
    with open(report.path, "w") as handle:
        json.dump(result, handle, indent=2)
    if "calibration" in result:
        logger.info(f"probabilities: {result['calibration']['reason']}")
    if not result["applied"]:
        logger.info(result["reason"])
        return
    calibration.metadata["decision_threshold"] = result["threshold"]
    chosen, default = result["at_threshold"], result["at_default"]
    if "reason" in result:
        logger.info(result["reason"])
    logger.info(
        f"decision threshold {result['threshold']:.4f} ({result['strategy']}): validation F1 "
        f"{chosen['f1']:.4f}, cost {chosen['cost']:.4g} (at 0.5: F1 {default['f1']:.4f}, "
        f"cost {default['cost']:.4g})"
    )
