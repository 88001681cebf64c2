"""Explain: which input columns the model relies on, kept in the bundle for serving.

Permutation importance on the test rows, over the raw input columns (the bundle's pipeline
takes raw rows, so a column's encoding and its derived features are shuffled together):
how much the primary metric worsens when a column's values are shuffled (a drop for
roc_auc, a rise for rmse: positive always means the model relies on the column), with the
bundle's decision threshold applied as serving applies it. For a family whose explainer is
"shap" (XGBoost, LightGBM), also the model's own exact SHAP contributions (over the trees its
predictions use), mean |value| per transformed feature.
The result goes into the bundle's metadata["explanation"]; the model server returns it with
its per-row `:explain` answers.
"""

import shutil
import time
from typing import Any

import numpy as np
import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Model, Output
from pydantic import BaseModel, ConfigDict, Field
from sklearn.inspection import permutation_importance

from kfp_lifecycle.component import component
from kfp_lifecycle.components.evaluate import compute_metrics
from kfp_lifecycle.core.bundle import Bundle, read_metadata, verify_bundle, write_metadata
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import METRICS, PRIMARY_METRIC
from kfp_lifecycle.families import get_family

# Rows an explanation keeps at least, whatever the time budget.
EXPLAIN_MIN_ROWS = 200


class ExplainOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repeats: int = Field(
        5, ge=1, le=100, description="Shuffles per column (permutation importance's n_repeats)."
    )
    max_rows: int = Field(
        5000, ge=50, description="Test rows used at most (a seeded sample): bounds the cost."
    )
    seed: int = Field(0, description="Seed of the shuffles and of the sample.")


def explain_bundle(
    bundle: Bundle, test: pd.DataFrame, options: ExplainOptions, seconds: float | None = None
) -> dict[str, Any]:
    """Permutation importance per input column (+ mean |SHAP| per feature for the families
    explained by SHAP).

    `seconds` bounds the shuffles (None: no limit): one scoring of the rows is timed, and
    the repeats, then the rows, are cut until columns x repeats scorings fit; the result
    says what was cut (budget_cut)."""
    target, task = bundle.metadata["target"], bundle.metadata["task"]
    metric = bundle.metadata.get("primary_metric") or PRIMARY_METRIC[task]
    if target not in test.columns:
        raise DataError(f"the test rows have no target column '{target}'")
    if test.empty:
        raise DataError("no test rows to explain the model on")
    names = bundle.schema.names
    absent = [name for name in names if name not in test.columns]
    if absent:
        raise DataError(
            f"the test rows lack input column(s) the model was trained on: {', '.join(absent)}"
        )
    if test[target].isna().any():
        raise DataError(
            f"{int(test[target].isna().sum())} test row(s) have no value in the target "
            f"column '{target}'"
        )
    if len(test) > options.max_rows:
        test = test.sample(options.max_rows, random_state=options.seed)
    classes = bundle.classes
    x = test[names]
    if classes:
        known = set(classes)
        unknown = sorted({str(v) for v in test[target] if v not in known})
        if unknown:
            raise DataError(
                f"the test rows hold class(es) the model was not trained on in '{target}': "
                f"{', '.join(unknown[:5])} (model classes: {', '.join(map(str, classes))})"
            )
    y = test[target].to_numpy()
    sign = 1.0 if METRICS[metric].greater_is_better else -1.0

    def scorer(model: Any, rows: pd.DataFrame, truth: np.ndarray) -> float:
        """The metric as the served model would score (bundle's threshold), greater-better."""
        prediction = Bundle(None, model, bundle.metadata).predict(rows)
        return sign * compute_metrics(task, list(truth), prediction)[metric]

    repeats, cut = options.repeats, ""
    if seconds is not None:
        started = time.monotonic()
        scorer(bundle.pipeline, x, y)
        once = max(time.monotonic() - started, 1e-4)  # one scoring of every row
        columns = len(x.columns)
        repeats = int(min(options.repeats, max(1, seconds // (once * columns) - 1)))
        rows = len(x)
        if once * columns * (repeats + 1) > seconds:  # one repeat still too long: fewer rows
            rows = max(int(rows * seconds / (once * columns * 2)), min(rows, EXPLAIN_MIN_ROWS))
        if (repeats, rows) != (options.repeats, len(x)):
            cut = (
                f"{repeats} of {options.repeats} repeats on {rows} of {len(x)} rows, to fit "
                f"the explanation's {seconds:.0f}s of the run's time budget"
            )
            keep = x.sample(rows, random_state=options.seed).index if rows < len(x) else x.index
            x, y = x.loc[keep], test.loc[keep, target].to_numpy()
    found = permutation_importance(
        bundle.pipeline, x, y, scoring=scorer, n_repeats=repeats, random_state=options.seed,
    )  # fmt: skip
    result: dict[str, Any] = {
        "method": f"permutation importance on {len(x)} test rows ({metric}, {repeats} repeats)",
        "budget_cut": cut,
        "metric": metric,
        "permutation_importance": _by_column(x.columns, found.importances_mean),
        "permutation_importance_std": _by_column(x.columns, found.importances_std),
    }
    if get_family(bundle.metadata["family"]).explainer == "shap":
        result["shap_mean_abs"] = shap_mean_abs(bundle, x)
    return result


def _by_column(columns: pd.Index, values: np.ndarray) -> dict[str, float]:
    return {str(name): float(value) for name, value in zip(columns, values, strict=True)}


def model_contributions(bundle: Bundle, rows: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The family's own contributions (`Family.contributions`) for raw `rows`, and the
    transformed features' names: rows x features + 1 (the last column is the bias), or rows
    x classes x features + 1 for multiclass; in the model's raw (margin) units."""
    preprocess, estimator = bundle.pipeline[:-1], bundle.pipeline[-1]
    family = get_family(bundle.metadata["family"])
    if family.contributions is None:
        raise DataError(f"model family '{family.name}' computes no contributions of its own")
    features = np.asarray(preprocess.transform(rows), dtype="float64")
    contributions = family.contributions(estimator, features)
    try:
        names = [str(name) for name in preprocess.get_feature_names_out()]
    except (AttributeError, ValueError):
        names = [f"f{i}" for i in range(features.shape[1])]
    return contributions, names


def shap_mean_abs(bundle: Bundle, rows: pd.DataFrame) -> dict[str, float]:
    """Mean |SHAP value| per transformed feature (bias left out; multiclass: over classes)."""
    contributions, names = model_contributions(bundle, rows)
    without_bias = contributions[..., :-1]
    magnitude = np.abs(without_bias).reshape(-1, without_bias.shape[-1]).mean(0)
    return dict(zip(names, map(float, magnitude), strict=True))


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
    time_budget: float = 0.0,
):
    """Global feature importance of the selected model, kept in its bundle for serving.

    Args:
        model: The calibrated selected bundle (its pipeline takes raw input rows).
        test: Held-out test rows: every input column of the model's schema and the target.
        explanation: JSON: method, metric, permutation_importance and
            permutation_importance_std per raw input column (how much the metric worsens
            when the column is shuffled); shap_mean_abs per transformed feature (families
            explained by SHAP: XGBoost, LightGBM).
        explained: The same bundle (model.joblib untouched, its sha256 still valid) with the
            explanation in metadata["explanation"]; the model server's :explain answer
            carries it as global_importance.
        options: ExplainOptions (empty: defaults): repeats, max_rows, seed.
        time_budget: The run's total time budget in seconds (0: none); the explanation's
            share of it (kfp_lifecycle/budget.py) bounds the shuffles (budget_cut says how).
    """
    import json

    import pandas as pd

    from kfp_lifecycle.budget import share
    from kfp_lifecycle.components.explain import ExplainOptions, explain_bundle, explained_bundle
    from kfp_lifecycle.core.bundle import load_bundle

    result = explain_bundle(
        load_bundle(model.path),
        pd.read_parquet(test.path),
        ExplainOptions.model_validate(options),
        share(time_budget, "explanation"),
    )
    with open(explanation.path, "w") as handle:
        json.dump(result, handle, indent=2)
    explained_bundle(model.path, result, explained.path)
    ranked = sorted(result["permutation_importance"].items(), key=lambda kv: -kv[1])
    print("importance: " + ", ".join(f"{name} {value:.4f}" for name, value in ranked[:10]))
