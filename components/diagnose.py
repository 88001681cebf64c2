"""Diagnose: is the chosen model under- or overfitting? Learning and validation curves.

What is refitted: the bundle's estimator (a clone, same hyperparameters), on the features the
bundle's fitted preprocessing gives, exactly as the training step builds them
(components/train.py `training_matrix`: cross-fitted encodings of the training rows).
The preprocessing is not refitted per subset: on a small share of the rows an encoder sees
fewer categories, the feature set changes and the bundle's feature selection no longer
applies. A family that stops early (XGBoost, LightGBM) keeps the number of trees early
stopping chose for the bundle.

- Learning curve: the estimator refitted on nested, class-stratified shares of the training
  rows (`sizes`), scored with the primary metric on the rows it saw and on validation rows.
- Validation curve: the estimator refitted on all the (sampled) training rows for each value
  of its family's main regularisation parameter (the family's `diagnosis`, in
  kfp_lifecycle/families/), scored the same way.

Scores become skill so that one tolerance serves every metric: 0 is the score of a constant
predictor (the training rows' class prior or mean, scored on the validation rows), 1 a
perfect score, whether the metric is better high (roc_auc, r2) or low (rmse, log_loss).
The verdict is read at the full training size, in this order:
1. overfitting: training skill exceeds validation skill by more than `gap_tolerance`;
2. underfitting: the gap is within `gap_tolerance` and validation skill is below
   `min_skill`, so the training skill is low too (the model cannot fit even the rows it sees);
3. good fit otherwise.
The evidence lists the numbers behind the verdict and what the curves add (the best value on
the validation curve; whether the validation score still rises with more rows).

Training rows: the preprocessed, unbalanced training rows (the pipeline passes the
preprocess step's `train_clean`, the rows the preprocessing was fitted on). If rows from the
balance step come instead, its weight column is honoured as `sample_weight`, its synthetic
rows and repeated copies are dropped (each real row once, in its original order).
"""

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Model, Output
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sklearn.base import clone
from sklearn.dummy import DummyClassifier, DummyRegressor

from kfp_lifecycle.component import component
from kfp_lifecycle.components.balance import ORIGIN_COLUMN, split_balance_columns
from kfp_lifecycle.components.train import training_matrix
from kfp_lifecycle.components.tune import score_model
from kfp_lifecycle.core.bundle import Bundle
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import METRICS, PRIMARY_METRIC, REGRESSION
from kfp_lifecycle.families import FAMILIES, Diagnosis

logger = logging.getLogger(__name__)

OVERFITTING, UNDERFITTING, GOOD_FIT = "overfitting", "underfitting", "good fit"
UNDERCONFIDENT = "under-confident"
# Metrics whose best value is 0 (errors); the others are best at 1.
PERFECT_AT_ZERO = {"rmse", "mae", "mape", "log_loss", "brier", "calibration_error"}
# A curve point counts as better than the model only by at least this much skill.
NOTABLE_SKILL = 0.02
# Which way each grid parameter regularises more: +1 higher values, -1 lower values.


class DiagnoseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gap_tolerance: float = Field(
        0.15,
        gt=0,
        description="Overfitting when training skill exceeds validation skill by more than "
        "this, at the full training size (skill: 0 constant predictor, 1 perfect).",
    )
    min_skill: float = Field(
        0.1,
        description="Underfitting when validation skill is below this and the gap is within "
        "gap_tolerance (0: no better than a constant predictor).",
    )
    sizes: list[float] = Field(
        [0.1, 0.25, 0.5, 0.75, 1.0],
        min_length=1,
        description="Shares of the training rows for the learning curve, each in (0, 1]; the "
        "verdict reads the largest.",
    )
    min_rows: int = Field(
        30, ge=2, description="Smallest learning-curve subset (per class: 10 rows at least)."
    )
    max_rows: int = Field(
        10_000,
        ge=100,
        description="Training rows used at most, and validation rows likewise (seeded "
        "samples): bounds the cost of the refits.",
    )
    seed: int = Field(0, description="Seed of the samples and of the learning-curve order.")
    max_confidence_gap: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Classifiers: under-confident when the validation accuracy exceeds the "
        "mean probability of the predicted class by more than this (the ranking can be "
        "perfect while every probability hugs the prior).",
    )

    @field_validator("sizes")
    @classmethod
    def _shares(cls, sizes: list[float]) -> list[float]:
        wrong = [share for share in sizes if not 0 < share <= 1]
        if wrong:
            raise ValueError(f"sizes are shares of the training rows, in (0, 1]; got {wrong}")
        return sorted(set(sizes))


def skill(score: float, baseline: float, metric: str) -> float:
    """0 for the constant predictor's score, 1 for a perfect score."""
    perfect = 0.0 if metric in PERFECT_AT_ZERO else 1.0
    span = perfect - baseline
    return float((score - baseline) / span) if abs(span) > 1e-12 else 0.0


def nested_order(y: np.ndarray, stratify: bool, seed: int) -> np.ndarray:
    """A permutation of the rows whose every prefix holds the classes in their overall
    proportions (stratify) or is a plain random sample: the learning curve's subsets are its
    prefixes, so each subset contains the smaller ones."""
    rng = np.random.default_rng(seed)
    if not stratify:
        return rng.permutation(len(y))
    # Each row's place within its class, as a share of the class: 0.0, 1/n, 2/n, ... shuffled
    # and jittered. Sorting by it interleaves the classes evenly.
    place = np.empty(len(y), dtype="float64")
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        place[members] = (rng.permutation(len(members)) + rng.random(len(members))) / len(members)
    return np.argsort(place, kind="stable")


def _real_rows(train: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray | None, list[str]]:
    """The balance step's output back to real rows, once each; its weights if it set any."""
    rows, weights, origins = split_balance_columns(train)
    notes = []
    if origins is not None:
        keep = pd.Series(origins).where(lambda o: o >= 0).dropna().drop_duplicates()
        keep = keep.sort_values()
        dropped = len(rows) - len(keep)
        rows = rows.iloc[keep.index].reset_index(drop=True)
        weights = None if weights is None else weights[keep.index.to_numpy()]
        if dropped:
            notes.append(
                f"{dropped} synthetic or repeated row(s) from the balance step ({ORIGIN_COLUMN}) "
                "left out: each real training row counts once"
            )
    if weights is not None:
        notes.append("the balance step's sample weights are honoured in every refit")
    return rows, weights, notes


def _labels(frame: pd.DataFrame, target: str, classes: list | None, name: str) -> np.ndarray:
    if frame[target].isna().any():
        raise DataError(
            f"{int(frame[target].isna().sum())} {name} row(s) have no value in the target "
            f"column '{target}'"
        )
    if not classes:
        return frame[target].to_numpy(dtype="float64")
    index = {label: i for i, label in enumerate(classes)}
    unknown = sorted({str(v) for v in frame[target] if v not in index})
    if unknown:
        raise DataError(
            f"the {name} rows hold class(es) the model was not trained on in '{target}': "
            f"{', '.join(unknown[:5])} (model classes: {', '.join(map(str, classes))})"
        )
    return frame[target].map(index).to_numpy(dtype=int)


def _features(bundle: Bundle, rows: pd.DataFrame, target: str) -> tuple[np.ndarray, list[str]]:
    """The training rows as the bundle's estimator was fitted on them (cross-fitted
    encodings); the fitted preprocessing's plain transform if a refit on these rows gives
    another feature set (rows other than those the preprocessing was fitted on)."""
    preprocessor = bundle.pipeline[:-1]
    width = len(preprocessor.get_feature_names_out())
    try:
        honest = training_matrix(preprocessor, rows, target, None, None)
    except ValueError:  # e.g. the selection step cannot find its features in a refit
        honest = None
    if honest is not None and honest.shape[1] == width:
        return honest, []
    plain = np.asarray(preprocessor.transform(rows.drop(columns=[target])), dtype="float64")
    return plain, [
        "the training rows are not those the preprocessing was fitted on (a refit gives "
        "another feature set): they are transformed as fitted, without cross-fitted encodings"
    ]


def _refit(
    bundle: Bundle,
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None,
    param: tuple[str, Any] | None = None,
) -> Any:
    estimator = clone(bundle.pipeline[-1])
    stopping = FAMILIES[bundle.metadata["family"]].early_stopping
    if stopping is not None:  # no early stopping here: the trees it found
        best = bundle.metadata.get("params", {}).get("best_iteration")
        estimator.set_params(**stopping.fixed_trees(best, estimator))
    if param is not None:
        estimator.set_params(**{param[0]: param[1]})
    if weights is None:
        return estimator.fit(x, y)
    return estimator.fit(x, y, sample_weight=weights)


def diagnose_fit(
    bundle: Bundle,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    options: DiagnoseOptions,
    seconds: float | None = None,
    history: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The learning curve, the validation curve and the verdict, with evidence.

    `seconds`: the time the refits may take (None: no limit). The full-size refit (the
    verdict's) always runs and is timed; the other learning-curve sizes (largest first) and
    the validation curve's values (nearest the model's own first) run while their estimated
    cost fits; what was left out is said in the evidence. `history`: the tuning study of the
    bundle's family; a validation curve that does not fit is read from its trials instead
    (the best validation score tuning saw near each grid value)."""
    started = time.monotonic()
    task, target = bundle.metadata["task"], bundle.metadata["target"]
    family = bundle.metadata["family"]
    metric = bundle.metadata.get("primary_metric") or PRIMARY_METRIC[task]
    if family not in FAMILIES:
        raise DataError(
            f"no fit diagnosis for model family '{family}'; known: {', '.join(FAMILIES)}"
        )
    knob = FAMILIES[family].diagnosis(task)
    for name, frame in (("training", train), ("validation", validation)):
        if target not in frame.columns:
            raise DataError(f"the {name} rows have no target column '{target}'")
        if frame.empty:
            raise DataError(f"no {name} rows to diagnose the fit on")
    classes = bundle.classes
    rows, weights, notes = _real_rows(train)
    y_all = _labels(rows, target, classes, "training")
    y_valid = _labels(validation, target, classes, "validation")
    x_all, more_notes = _features(bundle, rows, target)
    notes += more_notes

    rng = np.random.default_rng(options.seed)
    if len(rows) > options.max_rows:
        chosen = np.sort(rng.choice(len(rows), options.max_rows, replace=False))
        notes.append(f"a seeded sample of {options.max_rows} of the {len(rows)} training rows")
        x_all, y_all = x_all[chosen], y_all[chosen]
        weights = None if weights is None else weights[chosen]
    if len(validation) > options.max_rows:
        validation = validation.sample(options.max_rows, random_state=options.seed)
        y_valid = _labels(validation, target, classes, "validation")
    x_valid = np.asarray(
        bundle.pipeline[:-1].transform(validation.drop(columns=[target])), dtype="float64"
    )

    def scores(model: Any, x_seen: np.ndarray, y_seen: np.ndarray) -> tuple[float, float]:
        """The score on the training rows the model saw, and on the validation rows."""
        return (
            score_model(model, x_seen, y_seen, task, metric, classes),
            score_model(model, x_valid, y_valid, task, metric, classes),
        )

    constant = DummyClassifier(strategy="prior") if classes else DummyRegressor()
    baseline = score_model(constant.fit(x_all, y_all), x_valid, y_valid, task, metric, classes)

    # Learning curve: nested prefixes of one (stratified) order; the full size first (timed).
    order = nested_order(y_all, bool(classes), options.seed)
    floor = max(options.min_rows, 10 * len(classes or []))
    counts = sorted({min(len(order), max(round(s * len(order)), floor)) for s in options.sizes})
    points: dict[int, tuple[float, float]] = {}
    full_cost = 0.0  # seconds of the full-size refit, measured first
    # A regression bundle's estimator was fitted on exactly these rows (no balancing applies
    # to regression; none were sampled away): the full-size point is the model itself, and a
    # refit's cost is what a tuning trial took.
    trial_cost = _trial_seconds(history)
    own_model = (
        task == REGRESSION and weights is None and len(rows) <= options.max_rows
        and trial_cost is not None
    )  # fmt: skip
    for count in sorted(counts, reverse=True):
        if count == counts[-1] and own_model:
            points[count] = scores(bundle.pipeline[-1], x_all, y_all)
            full_cost = trial_cost
            notes.append(
                f"the full-size point is the bundle's own model (no refit); a refit's cost is "
                f"taken from the tuning history ({trial_cost:.1f}s a trial)"
            )
            continue
        if count != counts[-1] and seconds is not None:
            cost = full_cost * count / counts[-1]
            if time.monotonic() - started + cost > seconds:
                notes.append(
                    f"time budget: learning-curve size {count} left out (about {cost:.0f}s "
                    f"of refits past the diagnosis's {seconds:.0f}s)"
                )
                continue
        chosen = np.sort(order[:count])  # the rows, in their own order
        if classes and len(np.unique(y_all[chosen])) < len(classes):
            notes.append(f"learning curve: {count} rows do not hold every class; size skipped")
            continue
        part = None if weights is None else weights[chosen]
        fitted_at = time.monotonic()
        model = _refit(bundle, x_all[chosen], y_all[chosen], part)
        points[count] = scores(model, x_all[chosen], y_all[chosen])
        if count == counts[-1]:
            full_cost = time.monotonic() - fitted_at
    if not points:
        raise DataError(
            f"too few training rows ({len(order)}) to fit the model for a learning curve"
        )
    sizes = sorted(points)
    learning: dict[str, list] = {
        "train_sizes": [int(count) for count in sizes],
        "train_scores": [points[count][0] for count in sizes],
        "validation_scores": [points[count][1] for count in sizes],
    }

    param, values = knob.param, knob.grid
    current = bundle.pipeline[-1].get_params().get(param)
    validation_curve = _validation_curve(
        bundle, param, values, current, scores, (x_all, y_all, weights),
        None if seconds is None else seconds - (time.monotonic() - started), full_cost,
        history, notes,
    )  # fmt: skip

    train_score, valid_score = learning["train_scores"][-1], learning["validation_scores"][-1]
    train_skill = skill(train_score, baseline, metric)
    valid_skill = skill(valid_score, baseline, metric)
    verdict, evidence = _verdict(
        train_score, valid_score, train_skill, valid_skill, baseline, metric,
        learning["train_sizes"][-1], options,
    )  # fmt: skip
    if verdict == GOOD_FIT and classes:
        verdict, evidence = _confidence(bundle, validation, target, options, verdict, evidence)
    hints = _curve_hints(learning, validation_curve, valid_skill, baseline, metric)
    evidence += [hint for hint, _ in hints] + notes
    suggestion = suggest(verdict, knob, validation_curve, valid_skill, baseline, metric)
    concrete = [advice for _, advice in hints if advice]
    if concrete:
        joiner = "; worth a try: " if verdict == GOOD_FIT else "; "
        suggestion += joiner + "; ".join(concrete)
    return {
        "verdict": verdict,
        "evidence": evidence,
        "suggestion": suggestion,
        "metric": metric,
        "greater_is_better": METRICS[metric].greater_is_better,
        "baseline_score": baseline,
        "skill": {
            "train": train_skill,
            "validation": valid_skill,
            "gap": train_skill - valid_skill,
        },
        "rules": {"gap_tolerance": options.gap_tolerance, "min_skill": options.min_skill},
        "learning_curve": learning,
        "validation_curve": validation_curve,
    }


def _validation_curve(
    bundle: Bundle,
    param: str,
    values: list[Any],
    current: Any,
    scores: Any,
    data: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    seconds: float | None,
    cost: float,
    history: dict[str, Any] | None,
    notes: list[str],
) -> dict[str, Any]:
    """Refit over the grid while it fits in `seconds` (each refit about `cost`); the grid
    values nearest the model's own go first. A grid that cannot be refitted whole is read
    from the tuning history when that has trials over the parameter."""
    x_all, y_all, weights = data
    curve: dict[str, Any] = {
        "param": param, "values": values, "train_scores": [], "validation_scores": [],
        "current": current,
    }  # fmt: skip
    fits = len(values) if seconds is None else int(max(seconds, 0) // max(cost, 1e-3))
    if fits < len(values):
        from_history = _curve_from_history(history, param, values)
        if from_history is not None:
            notes.append(
                f"time budget: the validation curve over {param} is read from the tuning "
                f"history ({from_history['trials']} trials; the best validation score near "
                "each value, other parameters varying), not refitted"
            )
            return {**curve, **from_history}
    keep = set(range(len(values)))
    if fits < len(values):
        near = _index_near(values, current)
        keep = set(sorted(range(len(values)), key=lambda i: abs(i - near))[: max(fits, 1)])
        left = [values[i] for i in range(len(values)) if i not in keep]
        notes.append(
            f"time budget: validation curve over {param} without {left} (about {cost:.1f}s "
            f"a refit; {max(seconds or 0, 0):.0f}s left)"
        )
    kept_values = [values[i] for i in sorted(keep)]
    for value in kept_values:
        seen, held = scores(_refit(bundle, x_all, y_all, weights, (param, value)), x_all, y_all)
        curve["train_scores"].append(seen)
        curve["validation_scores"].append(held)
    curve["values"] = kept_values
    return curve


def _trial_seconds(history: dict[str, Any] | None) -> float | None:
    """The median duration of the tuning history's completed trials (None: none)."""
    durations = [
        t["duration_seconds"]
        for t in (history or {}).get("trials", [])
        if t.get("value") is not None and t.get("duration_seconds")
    ]
    return float(np.median(durations)) if durations else None


def _index_near(values: list[Any], current: Any) -> int:
    """The grid index nearest `current` (the middle when it is not a number)."""
    if not isinstance(current, int | float) or isinstance(current, bool):
        return len(values) // 2
    return int(np.argmin([abs(np.log1p(abs(v)) - np.log1p(abs(current))) for v in values]))


def _curve_from_history(
    history: dict[str, Any] | None, param: str, values: list[Any]
) -> dict[str, Any] | None:
    """{values, validation_scores, train_scores: [], trials} from the tuning trials: each
    trial counts for the grid value nearest its own value of `param` (on a log scale), and
    each value keeps the best score among its trials; None when tuning did not search it."""
    if not history or history.get("objective_data") != "validation":
        return None
    greater = history.get("greater_is_better", True)
    best: dict[int, float] = {}
    used = 0
    for trial in history.get("trials", []):
        value, score = trial.get("params", {}).get(param), trial.get("value")
        if not isinstance(value, int | float) or score is None or not np.isfinite(score):
            continue
        used += 1
        index = _index_near(values, value)
        if index not in best or (score > best[index] if greater else score < best[index]):
            best[index] = float(score)
    if len(best) < 2:
        return None
    indices = sorted(best)
    return {
        "values": [values[i] for i in indices],
        "validation_scores": [best[i] for i in indices],
        "train_scores": [],
        "source": "tuning history",
        "trials": used,
    }


def _verdict(
    train_score: float,
    valid_score: float,
    train_skill: float,
    valid_skill: float,
    baseline: float,
    metric: str,
    rows: int,
    options: DiagnoseOptions,
) -> tuple[str, list[str]]:
    gap = train_skill - valid_skill
    evidence = [
        f"fitted on {rows} training rows: training {metric} {train_score:.4f}, validation "
        f"{valid_score:.4f}; a constant predictor scores {baseline:.4f} on the validation rows",
        f"skill (0: constant predictor, 1: perfect): training {train_skill:.2f}, validation "
        f"{valid_skill:.2f}, gap {gap:.2f}",
    ]
    if gap > options.gap_tolerance:
        evidence.append(
            f"overfitting: the gap {gap:.2f} exceeds the tolerance {options.gap_tolerance}; "
            "the model fits the rows it saw much better than new rows"
        )
        return OVERFITTING, evidence
    if valid_skill < options.min_skill:
        evidence.append(
            f"underfitting: validation skill {valid_skill:.2f} is below {options.min_skill} and "
            f"the gap {gap:.2f} is within {options.gap_tolerance}: the model does little better "
            "than a constant even on the rows it saw"
        )
        return UNDERFITTING, evidence
    evidence.append(
        f"good fit: the gap {gap:.2f} is within {options.gap_tolerance} and validation skill "
        f"{valid_skill:.2f} reaches {options.min_skill}"
    )
    return GOOD_FIT, evidence


def _confidence(
    bundle: Bundle,
    validation: pd.DataFrame,
    target: str,
    options: DiagnoseOptions,
    verdict: str,
    evidence: list[str],
) -> tuple[str, list[str]]:
    """A classifier whose probabilities are far less sure than it is right is
    under-confident (the bundle's own probabilities, calibrated if it is)."""
    prediction = bundle.predict(validation.drop(columns=[target]))
    accuracy = float(np.mean(np.asarray(prediction.labels) == validation[target].to_numpy()))
    confidence = float(prediction.probabilities.max(axis=1).mean())
    said = (
        f"right on {accuracy:.0%} of the validation rows with a mean probability of "
        f"{confidence:.2f} for the class it predicts"
    )
    if accuracy - confidence > options.max_confidence_gap:
        gap = options.max_confidence_gap
        evidence.append(f"under-confident: {said} (more than {gap} apart)")
        return UNDERCONFIDENT, evidence
    evidence.append(f"confidence matches accuracy: {said}")
    return verdict, evidence


def suggest(
    verdict: str,
    knob: Diagnosis,
    validation_curve: dict[str, Any],
    valid_skill: float,
    baseline: float,
    metric: str,
) -> str:
    """The family's advice for the verdict, unless the validation curve contradicts it: an
    overfitting model whose curve shows no stronger setting doing better is not told to
    regularise more (nor an underfitting one to regularise less)."""
    if verdict == GOOD_FIT:
        return "nothing to change for the fit"
    param, values = validation_curve["param"], validation_curve["values"]
    skills = [skill(s, baseline, metric) for s in validation_curve["validation_scores"]]
    current = validation_curve.get("current")
    direction = knob.stronger * (1 if verdict == OVERFITTING else -1)
    if isinstance(current, int | float) and not isinstance(current, bool):
        wanted = [i for i, v in enumerate(values) if (v - current) * direction > 0]
    else:  # no comparable current value: any grid value may point the way
        wanted = list(range(len(values)))
    helps = any(skills[i] - valid_skill >= NOTABLE_SKILL for i in wanted)
    generic = knob.advice(OVERFITTING if verdict == OVERFITTING else UNDERFITTING)
    if verdict == UNDERCONFIDENT:  # a ranking metric's curve cannot show confidence
        return f"calibrate the probabilities (calibrate.calibrate), or {generic}"
    if helps or not skills:
        return generic
    best = values[int(np.argmax(skills))]
    way = "stronger" if verdict == OVERFITTING else "weaker"
    alternative = (
        "add rows or drop noisy features"
        if verdict == OVERFITTING
        else "calibrate the probabilities, add more informative features or try another family"
    )
    return (
        f"the validation curve shows no gain from {way} regularisation ({param} best at "
        f"{best}, the model has {current}): {alternative}"
    )


def _curve_hints(
    learning: dict[str, list],
    validation_curve: dict[str, Any],
    valid_skill: float,
    baseline: float,
    metric: str,
) -> list[tuple[str, str]]:
    """Sentences on what the curves show, each with concrete advice or ''."""
    hints = []
    sizes, held = learning["train_sizes"], learning["validation_scores"]
    if len(sizes) >= 2:
        rise = skill(held[-1], baseline, metric) - skill(held[-2], baseline, metric)
        sentence = (
            f"learning curve: validation {metric} {held[0]:.4f} at {sizes[0]} rows, "
            f"{held[-2]:.4f} at {sizes[-2]}, {held[-1]:.4f} at {sizes[-1]}"
        )
        if rise >= NOTABLE_SKILL:
            moving = "falling" if metric in PERFECT_AT_ZERO else "rising"
            hints.append((f"{sentence}: still improving ({metric} {moving})",
                          "more training rows should help"))  # fmt: skip
        else:
            hints.append((f"{sentence}: levelling off", ""))
    else:
        hints.append(("learning curve: a single size; too few rows for a curve", ""))

    param, values = validation_curve["param"], validation_curve["values"]
    curve = validation_curve["validation_scores"]
    skills = [skill(score, baseline, metric) for score in curve]
    best = int(np.argmax(skills))
    current = validation_curve.get("current")
    sentence = (
        f"validation curve over {param}: best validation {metric} {curve[best]:.4f} at "
        f"{param}={values[best]} (the model has {param}={current}: {held[-1]:.4f})"
    )
    if skills[best] - valid_skill >= NOTABLE_SKILL and values[best] != current:
        hints.append((sentence, f"try {param}={values[best]}"))
    else:
        hints.append((sentence, ""))
    return hints


@component
def diagnose(
    model: Input[Model],
    calibration: Input[Artifact],
    train: Input[Dataset],
    validation: Input[Dataset],
    diagnosis: Output[Artifact],
    trials: Input[list[Artifact]],
    options: dict = {},  # noqa: B006 (KFP default, never mutated)
    time_budget: float = 0.0,
):
    """Learning curve, validation curve and an under/overfitting verdict for the selected model.

    Args:
        model: The selected bundle: its estimator is refitted (same hyperparameters) on
            shares of the training rows and over its family's regularisation grid.
        calibration: Its calibration (core.documents.Calibration): the confidence check
            judges the probabilities as they will be served.
        train: The training rows the bundle's preprocessing was fitted on (the preprocess
            step's train_clean, raw columns and the target). Rows from the balance step also
            work: synthetic and repeated rows are left out, sample weights honoured.
        validation: Validation rows with the target (the test rows stay untouched).
        diagnosis: JSON (core.documents.Diagnosis): verdict (underfitting, overfitting or
            good fit), evidence (sentences with the numbers), suggestion, metric,
            baseline_score, skill, learning_curve (train_sizes, train_scores,
            validation_scores) and validation_curve (param, values, train_scores,
            validation_scores, current).
        trials: The tuning studies of every family (the train steps' trials): the
            selected family's is the validation curve's fallback when refits do not fit the time.
        options: DiagnoseOptions (empty: defaults): gap_tolerance, min_skill, sizes,
            min_rows, max_rows, seed, max_confidence_gap.
        time_budget: The run's total time budget in seconds (0: none); the diagnosis's
            share of it (kfp_lifecycle/budget.py) bounds the refits, and the evidence says
            what was left out.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.budget import share
    from kfp_lifecycle.components.diagnose import DiagnoseOptions, diagnose_fit, logger
    from kfp_lifecycle.core.bundle import load_bundle
    from kfp_lifecycle.core.documents import (
        Calibration,
        Diagnosis,
        read_document,
        served,
        write_document,
    )

    settings = DiagnoseOptions.model_validate(options)
    bundle = served(load_bundle(model.path), read_document(calibration.path, Calibration))
    studies = []
    for study in trials:
        with open(study.path) as handle:
            studies.append(json.load(handle))
    history = next((s for s in studies if s.get("family") == bundle.metadata["family"]), None)
    result = diagnose_fit(
        bundle,
        pd.read_parquet(train.path),
        pd.read_parquet(validation.path),
        settings,
        share(time_budget, "diagnosis"),
        history,
    )
    write_document(diagnosis.path, Diagnosis.model_validate(result))
    diagnosis.metadata["verdict"] = result["verdict"]
    logger.info(f"fit: {result['verdict']}\n  " + "\n  ".join(result["evidence"]))
    logger.info(f"suggestion: {result['suggestion']}")
