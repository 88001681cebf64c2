"""Diagnose: is the chosen model under- or overfitting? Learning and validation curves.

The bundle's whole pipeline (preprocessing + estimator) is refitted on growing shares of the
training rows (learning curve) and over a grid of the family's main regularisation parameter
(validation curve), each scored on the training rows it saw and on the validation rows.

Scores are compared as skill: 0 for a constant predictor (the training rows' prior or mean,
scored the same way), 1 for a perfect one. The verdict:
- overfitting: training skill exceeds validation skill by more than `gap_tolerance`;
- underfitting: validation skill below `min_skill`, and training skill not much higher
  (the model cannot fit even the rows it sees);
- good fit otherwise.
"""

from typing import Any

import numpy as np
import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Model, Output
from pydantic import BaseModel, ConfigDict, Field
from sklearn.base import clone
from sklearn.dummy import DummyClassifier, DummyRegressor

from kfp_lifecycle.bundle import Bundle
from kfp_lifecycle.component import component
from kfp_lifecycle.components.balance import split_balance_columns
from kfp_lifecycle.components.tune import score_model
from kfp_lifecycle.errors import DataError
from kfp_lifecycle.tasks import CLASSIFICATION, METRICS

# Metrics whose best value is 0 (errors); the others are best at 1.
PERFECT_AT_ZERO = {"rmse", "mae", "mape", "log_loss", "brier", "calibration_error"}
# The family's main regularisation parameter and the grid the validation curve walks.
VALIDATION_GRIDS: dict[str, dict[str, tuple[str, list[Any]]]] = {
    CLASSIFICATION: {"linear": ("C", [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0])},
    "regression": {"linear": ("alpha", [1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4])},
}
FAMILY_GRIDS: dict[str, tuple[str, list[Any]]] = {
    "random_forest": ("min_samples_leaf", [1, 2, 5, 10, 20, 50]),
    "hist_gradient_boosting": ("max_leaf_nodes", [4, 8, 16, 31, 64]),
    "xgboost": ("max_depth", [1, 2, 3, 4, 6, 8, 10]),
}
SUGGESTIONS = {
    ("overfitting", "linear"): "lower C / raise alpha (stronger regularisation), or add rows",
    ("overfitting", "random_forest"): "raise min_samples_leaf or cap max_depth, or add rows",
    ("overfitting", "hist_gradient_boosting"): "fewer max_leaf_nodes, more l2_regularization",
    ("overfitting", "xgboost"): "lower max_depth, raise min_child_weight or reg_lambda",
    ("underfitting", "linear"): "weaker regularisation, or a non-linear family (xgboost)",
    ("underfitting", "random_forest"): "lower min_samples_leaf, allow deeper trees",
    ("underfitting", "hist_gradient_boosting"): "more max_leaf_nodes, a higher learning rate",
    ("underfitting", "xgboost"): "deeper trees (max_depth), more rounds, less regularisation",
}


class DiagnoseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gap_tolerance: float = Field(
        0.15, gt=0, description="Overfitting above this train-validation skill gap."
    )
    min_skill: float = Field(
        0.1, description="Underfitting below this validation skill (0: a constant predictor)."
    )
    sizes: list[float] = Field(
        [0.1, 0.25, 0.5, 0.75, 1.0], description="Shares of the training rows (learning curve)."
    )
    max_rows: int = Field(20_000, ge=100, description="Training rows used at most (sampled).")
    seed: int = Field(0, description="Seed of the subsamples.")


def skill(score: float, baseline: float, metric: str) -> float:
    """0 for the constant predictor's score, 1 for a perfect score."""
    perfect = 0.0 if metric in PERFECT_AT_ZERO else 1.0
    span = perfect - baseline
    return float((score - baseline) / span) if span else 0.0


def _refit(bundle: Bundle, rows: pd.DataFrame, y: np.ndarray, param: tuple | None = None):
    pipeline = clone(bundle.pipeline)
    if bundle.metadata["family"] == "xgboost":  # no validation set here: the trees it found
        trees = bundle.metadata["params"].get("best_iteration", 100) + 1
        pipeline.set_params(model__early_stopping_rounds=None, model__n_estimators=trees)
    if param is not None:
        pipeline.set_params(**{f"model__{param[0]}": param[1]})
    return pipeline.fit(rows, y)


def diagnose_fit(
    bundle: Bundle, train: pd.DataFrame, validation: pd.DataFrame, options: DiagnoseOptions
) -> dict[str, Any]:
    """The learning curve, the validation curve and the verdict, with evidence."""
    task, target = bundle.metadata["task"], bundle.metadata["target"]
    family = bundle.metadata["family"]
    metric = bundle.metadata.get("primary_metric") or next(
        name for name, spec in METRICS.items() if spec.task == task
    )
    for name, frame in (("training", train), ("validation", validation)):
        if target not in frame.columns:
            raise DataError(f"the {name} rows have no target column '{target}'")
        if frame.empty:
            raise DataError(f"no {name} rows to diagnose the fit on")
    train, _, _ = split_balance_columns(train)
    if len(train) > options.max_rows:
        train = train.sample(options.max_rows, random_state=options.seed)
    classes = bundle.classes
    encode = (lambda s: s.map({c: i for i, c in enumerate(classes)}).to_numpy()) if classes else (
        lambda s: s.to_numpy(dtype=float)
    )  # fmt: skip
    x_train, y_train = train.drop(columns=[target]), encode(train[target])
    x_valid, y_valid = validation.drop(columns=[target]), encode(validation[target])

    def scores(model, x_seen: pd.DataFrame, y_seen: np.ndarray) -> tuple[float, float]:
        """The score on the training rows the model saw, and on the validation rows."""
        return (
            score_model(model, x_seen, y_seen, task, metric, classes),
            score_model(model, x_valid, y_valid, task, metric, classes),
        )

    dummy = (DummyClassifier(strategy="prior") if classes else DummyRegressor()).fit(
        x_train, y_train
    )
    baseline = score_model(dummy, x_valid, y_valid, task, metric, classes)

    order = np.random.default_rng(options.seed).permutation(len(train))
    learning = {"train_sizes": [], "train_scores": [], "validation_scores": []}
    for share in sorted(set(options.sizes)):
        count = max(round(share * len(train)), 10)
        chosen = order[:count]
        if classes and len(set(y_train[chosen])) < len(classes):
            continue  # too few rows to hold every class
        x_seen, y_seen = x_train.iloc[chosen], y_train[chosen]
        seen, held = scores(_refit(bundle, x_seen, y_seen), x_seen, y_seen)
        learning["train_sizes"].append(int(count))
        learning["train_scores"].append(seen)
        learning["validation_scores"].append(held)

    param, values = FAMILY_GRIDS.get(family) or VALIDATION_GRIDS[task][family]
    validation_curve = {"param": param, "values": values, "train_scores": [],
                        "validation_scores": []}  # fmt: skip
    for value in values:
        seen, held = scores(_refit(bundle, x_train, y_train, (param, value)), x_train, y_train)
        validation_curve["train_scores"].append(seen)
        validation_curve["validation_scores"].append(held)

    verdict, evidence = _verdict(
        learning["train_scores"][-1], learning["validation_scores"][-1], baseline, metric, options
    )
    evidence.append(_curve_evidence(learning, metric))
    return {
        "verdict": verdict,
        "evidence": evidence,
        "suggestion": SUGGESTIONS.get((verdict, family), "nothing to change"),
        "metric": metric,
        "baseline_score": baseline,
        "learning_curve": learning,
        "validation_curve": validation_curve,
    }


def _verdict(
    train_score: float, valid_score: float, baseline: float, metric: str, options: DiagnoseOptions
) -> tuple[str, list[str]]:
    seen, held = skill(train_score, baseline, metric), skill(valid_score, baseline, metric)
    evidence = [
        f"on all training rows: training {metric} {train_score:.4f}, validation "
        f"{valid_score:.4f}; a constant predictor scores {baseline:.4f}",
        f"skill (0: constant predictor, 1: perfect): training {seen:.2f}, validation "
        f"{held:.2f}, gap {seen - held:.2f} (overfitting above {options.gap_tolerance})",
    ]
    if seen - held > options.gap_tolerance:
        return "overfitting", evidence
    if held < options.min_skill:
        evidence.append(f"validation skill {held:.2f} is below {options.min_skill}")
        return "underfitting", evidence
    return "good fit", evidence


def _curve_evidence(learning: dict[str, list], metric: str) -> str:
    sizes, held = learning["train_sizes"], learning["validation_scores"]
    if len(sizes) < 2:
        return "too few rows for a learning curve"
    return (
        f"validation {metric} from {held[0]:.4f} at {sizes[0]} rows to {held[-1]:.4f} at "
        f"{sizes[-1]} rows"
    )


@component
def diagnose(
    model: Input[Model],
    train: Input[Dataset],
    validation: Input[Dataset],
    diagnosis: Output[Artifact],
    options: dict = {},  # noqa: B006 (KFP default, never mutated)
):
    """Learning curve, validation curve and an under/overfitting verdict for the champion.

    Args:
        model: The selected bundle (its pipeline is refitted on shares of the rows).
        train: The training rows the preprocessing was fitted on (raw columns).
        validation: Validation rows (the test rows stay untouched).
        diagnosis: JSON: verdict (underfitting, overfitting, good fit), evidence, suggestion,
            metric, baseline_score, learning_curve, validation_curve.
        options: DiagnoseOptions: gap_tolerance, min_skill, sizes, max_rows, seed.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.bundle import load_bundle
    from kfp_lifecycle.components.diagnose import DiagnoseOptions, diagnose_fit

    result = diagnose_fit(
        load_bundle(model.path),
        pd.read_parquet(train.path),
        pd.read_parquet(validation.path),
        DiagnoseOptions.model_validate(options),
    )
    with open(diagnosis.path, "w") as handle:
        json.dump(result, handle, indent=2)
    diagnosis.metadata["verdict"] = result["verdict"]
    print(f"fit: {result['verdict']}\n  " + "\n  ".join(result["evidence"]))
