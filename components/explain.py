"""Explain: which input columns the model relies on, kept in the bundle for serving.

Permutation importance on the test rows, over the raw input columns (the bundle's pipeline
takes raw rows, so a column's encoding and its derived features are shuffled together):
how much the primary metric worsens when a column's values are shuffled. For XGBoost, also
the model's own SHAP contributions (pred_contribs), mean |value| per transformed feature.
The result goes into the bundle's metadata["explanation"]; the model server returns it with
its per-row `:explain` answers.
"""

import shutil
from typing import Any

import numpy as np
import pandas as pd
import xgboost
from kfp.dsl import Artifact, Dataset, Input, Model, Output
from pydantic import BaseModel, ConfigDict, Field
from sklearn.inspection import permutation_importance

from kfp_lifecycle.bundle import Bundle, read_metadata, verify_bundle, write_metadata
from kfp_lifecycle.component import component
from kfp_lifecycle.components.tune import score_model
from kfp_lifecycle.errors import DataError
from kfp_lifecycle.tasks import METRICS


class ExplainOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repeats: int = Field(5, ge=1, description="Shuffles per column (permutation importance).")
    max_rows: int = Field(5000, ge=50, description="Test rows used at most (sampled).")
    seed: int = Field(0, description="Seed of the shuffles and the sample.")


def explain_bundle(bundle: Bundle, test: pd.DataFrame, options: ExplainOptions) -> dict[str, Any]:
    """Permutation importance per input column (+ mean |SHAP| per feature for XGBoost)."""
    target, task = bundle.metadata["target"], bundle.metadata["task"]
    metric = bundle.metadata.get("primary_metric") or "roc_auc"
    if target not in test.columns:
        raise DataError(f"the test rows have no target column '{target}'")
    if test.empty:
        raise DataError("no test rows to explain the model on")
    if len(test) > options.max_rows:
        test = test.sample(options.max_rows, random_state=options.seed)
    classes = bundle.classes
    x = test.drop(columns=[target])[bundle.schema.names]
    y = (
        test[target].map({c: i for i, c in enumerate(classes)}).to_numpy()
        if classes
        else test[target].to_numpy(dtype=float)
    )
    sign = 1.0 if METRICS[metric].greater_is_better else -1.0

    def scorer(model: Any, rows: pd.DataFrame, truth: np.ndarray) -> float:
        return sign * score_model(model, rows, truth, task, metric, classes)

    found = permutation_importance(
        bundle.pipeline, x, y, scoring=scorer, n_repeats=options.repeats,
        random_state=options.seed,
    )  # fmt: skip
    result: dict[str, Any] = {
        "method": f"permutation importance on {len(x)} test rows ({metric}, "
        f"{options.repeats} repeats)",
        "metric": metric,
        "permutation_importance": _by_column(x.columns, found.importances_mean),
        "permutation_importance_std": _by_column(x.columns, found.importances_std),
    }
    if bundle.metadata["family"] == "xgboost":
        result["shap_mean_abs"] = xgboost_shap(bundle, x)
    return result


def _by_column(columns: pd.Index, values: np.ndarray) -> dict[str, float]:
    return {str(name): float(value) for name, value in zip(columns, values, strict=True)}


def xgboost_shap(bundle: Bundle, rows: pd.DataFrame) -> dict[str, float]:
    """XGBoost's exact tree SHAP: mean |contribution| per transformed feature (bias left out)."""
    preprocess, estimator = bundle.pipeline[:-1], bundle.pipeline[-1]
    features = np.asarray(preprocess.transform(rows), dtype="float64")
    contributions = estimator.get_booster().predict(xgboost.DMatrix(features), pred_contribs=True)
    without_bias = contributions[..., :-1]
    magnitude = np.abs(without_bias).reshape(-1, without_bias.shape[-1]).mean(0)
    try:
        names = list(preprocess.get_feature_names_out())
    except (AttributeError, ValueError):
        names = [f"f{i}" for i in range(features.shape[1])]
    return dict(zip(map(str, names), map(float, magnitude), strict=True))


def explained_bundle(bundle_dir: str, explanation: dict[str, Any], output_dir: str) -> None:
    """Copy the bundle with the explanation in its metadata; model.joblib is untouched, so
    its recorded sha256 stays valid."""
    shutil.copytree(bundle_dir, output_dir, dirs_exist_ok=True)
    write_metadata(output_dir, {**read_metadata(bundle_dir), "explanation": explanation})
    verify_bundle(output_dir)


@component
def explain(
    model: Input[Model],
    test: Input[Dataset],
    explanation: Output[Artifact],
    explained: Output[Model],
    options: dict = {},  # noqa: B006 (KFP default, never mutated)
):
    """Global feature importance of the champion, kept in its bundle for serving.

    Args:
        model: The calibrated champion bundle.
        test: Held-out test rows (with the target).
        explanation: JSON: method, metric, permutation_importance and its std per input
            column; shap_mean_abs per transformed feature for XGBoost.
        explained: The same bundle with metadata["explanation"] (served with :explain).
        options: ExplainOptions: repeats, max_rows, seed.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.bundle import load_bundle
    from kfp_lifecycle.components.explain import ExplainOptions, explain_bundle, explained_bundle

    result = explain_bundle(
        load_bundle(model.path),
        pd.read_parquet(test.path),
        ExplainOptions.model_validate(options),
    )
    with open(explanation.path, "w") as handle:
        json.dump(result, handle, indent=2)
    explained_bundle(model.path, result, explained.path)
    ranked = sorted(result["permutation_importance"].items(), key=lambda kv: -kv[1])
    print("importance: " + ", ".join(f"{name} {value:.4f}" for name, value in ranked[:10]))
