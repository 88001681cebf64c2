"""Report: the evaluation report (one self-contained HTML page) and the model card.

The report gathers what the model stage measured: test metrics, ROC and precision-recall
curves, the confusion matrix, calibration, learning curves with the fit verdict, the
features kept and dropped (with the reasons), feature importance, the tuning history and
metrics per slice of a categorical column. Every section
is always present; one without data says why. The model card (Markdown) is an artifact of its
own; register puts it into the registered bundle as metadata["model_card"] (a bundle
directory holds only model.joblib and metadata.json, because KServe loads one model file per
directory).
"""

import logging
import math
import warnings
from typing import Any

import matplotlib.pyplot as plt  # the Agg backend is chosen by html_report before any figure
import numpy as np
import pandas as pd
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from pydantic import BaseModel, ConfigDict, Field

from kfp_lifecycle.component import component
from kfp_lifecycle.components.evaluate import compute_metrics
from kfp_lifecycle.core.bundle import Bundle, Prediction
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import CATEGORICAL, InputSchema
from kfp_lifecycle.core.tasks import CLASSIFICATION, METRICS, PRIMARY_METRIC
from kfp_lifecycle.html_report import (
    Section,
    environment,
    figure_to_img,
    metric_cell,
    metric_columns_table,
    metric_rows,
    metrics_table,
    readable_feature,
    render_page,
    table,
)

logger = logging.getLogger(__name__)

MISSING = "(missing)"
OTHER = "(other)"
# Below this many rows a slice's metrics are flagged: one row more or less moves them a lot.
FEW_ROWS = 30
TOP_FEATURES = 20
# Shown per slice besides the primary metric (all are computed and kept in the JSON).
SLICE_METRICS = {
    CLASSIFICATION: ["roc_auc", "accuracy", "precision", "recall", "f1"],
    "regression": ["rmse", "mae", "r2", "mape"],
}


class ReportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slice_column: str = Field(
        "",
        description="Categorical input column whose values split the test rows for "
        "metrics per slice. Empty: the categorical input column with the fewest "
        "categories (at least two).",
    )
    max_slices: int = Field(
        20, ge=2, description="The most frequent values get a slice each; the rest form (other)."
    )


def pick_slice_column(schema: InputSchema) -> str | None:
    """The categorical input column with the fewest categories, at least two."""
    candidates = [c for c in schema.columns if c.kind == CATEGORICAL and len(c.categories) >= 2]
    if not candidates:
        return None
    return min(candidates, key=lambda c: len(c.categories)).name


def metrics_by_slice(
    bundle: Bundle, test: pd.DataFrame, column: str, max_slices: int = 20
) -> dict[str, Any]:
    """The task's metrics on the test rows of each value of `column` (missing values are a
    slice of their own), beside the metrics on all rows. A metric a slice cannot define
    (ROC-AUC on a slice of one class) is NaN."""
    schema = bundle.schema
    kinds = {c.name: c.kind for c in schema.columns}
    categorical = schema.of_kind(CATEGORICAL)
    if column not in kinds:
        raise DataError(
            f"slice column '{column}' is not an input column of the model; categorical "
            f"input columns: {', '.join(categorical) or 'none'}"
        )
    if kinds[column] != CATEGORICAL:
        raise DataError(
            f"slice column '{column}' is {kinds[column]}; slices need a categorical column: "
            f"{', '.join(categorical) or 'none'}"
        )
    target, task = bundle.metadata["target"], bundle.metadata["task"]
    if column not in test.columns or target not in test.columns:
        absent = column if column not in test.columns else target
        raise DataError(f"column '{absent}' not found in the test rows")
    keys = test[column].map(lambda v: MISSING if pd.isna(v) else str(v)).reset_index(drop=True)
    counts = keys.value_counts()
    if len(counts) > max_slices:
        keys = keys.where(keys.isin(counts.index[: max_slices - 1]), OTHER)
        counts = keys.value_counts()
    y_true = test[target].reset_index(drop=True)
    prediction = bundle.predict(test.drop(columns=[target]))
    labels = np.asarray(prediction.labels, dtype=object)
    slices = []
    for value, rows in counts.items():
        mask = (keys == value).to_numpy()
        part = Prediction(
            labels[mask].tolist(),
            None if prediction.probabilities is None else prediction.probabilities[mask],
            prediction.classes,
        )
        slices.append(
            {
                "value": value,
                "rows": int(rows),
                "few_rows": bool(rows < FEW_ROWS),
                "metrics": _quiet_metrics(task, y_true[mask].tolist(), part),
            }
        )
    return {
        "column": column,
        "primary_metric": bundle.metadata.get("primary_metric", PRIMARY_METRIC[task]),
        "overall": _quiet_metrics(task, y_true.tolist(), prediction),
        "slices": slices,
    }


def _quiet_metrics(task: str, y_true: list[Any], prediction: Prediction) -> dict[str, float]:
    # A small slice may lack predicted or true rows of a class: scikit-learn warns and
    # scores 0 there, which the table shows next to the slice's row count.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compute_metrics(task, y_true, prediction)


# --- the HTML report ------------------------------------------------------------------------


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _threshold_choice(selection: dict[str, Any] | None) -> str:
    """How the decision threshold was chosen, from calibrate's summary."""
    if not selection:
        return "the default"
    held_out = selection.get("cross_validation")
    checked = f" (and it held under {held_out['folds']}-fold cross-validation)" if held_out else ""
    if selection["strategy"] == "prior":
        why = (
            "a threshold chosen on the validation rows did not beat it under "
            f"{held_out['folds']}-fold cross-validation"
            if held_out
            else "too few validation rows of a class to choose one on"
        )
        return f"kept at the prior default (the share of '{selection['positive_class']}'): {why}"
    if selection["strategy"] == "f1":
        return (
            f"chosen to maximise F1 of '{selection['positive_class']}' on validation rows{checked}"
        )
    if selection["strategy"] == "balanced_accuracy":
        return f"chosen to maximise balanced accuracy on validation rows{checked}"
    if selection["strategy"] == "cost":
        costs = selection["costs"]
        return (
            "chosen to minimise the cost of errors on validation rows (false positive "
            f"{costs['false_positive']:g}, false negative {costs['false_negative']:g})"
            f"{checked}"
        )
    return "fixed by configuration"


def _binary_operating_point(evaluation: dict[str, Any]) -> dict[str, float] | None:
    """Where the decision threshold puts the model on the ROC and PR curves (test rows)."""
    matrix = evaluation.get("confusion_matrix", {}).get("matrix")
    if not matrix or len(matrix) != 2:
        return None
    (tn, fp), (fn, tp) = matrix
    return {
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
    }


def _curves(evaluation: dict[str, Any], single: str, per_class: str) -> dict[str, dict]:
    """Binary: the positive class's curve; multiclass: one-vs-rest curves by class."""
    if single in evaluation:
        positive = evaluation["confusion_matrix"]["labels"][1]
        return {positive: evaluation[single]}
    return evaluation.get(per_class, {})


def _not_classification(section: Section, evaluation: dict[str, Any], what: str) -> bool:
    if evaluation.get("task") == CLASSIFICATION:
        return False
    section.text(f"{what} apply to classifiers; this is a {evaluation.get('task')} model.", "muted")
    return True


def _metrics_section(
    evaluation: dict[str, Any], metadata: dict[str, Any], blessing: dict[str, Any] | None
) -> Section:
    section = Section("metrics", "Test metrics")
    primary = evaluation.get("primary_metric", metadata.get("primary_metric", ""))
    facts = [f"{evaluation.get('rows', '?')} test rows, never used for training or selection"]
    if "decision_threshold" in evaluation:
        how = _threshold_choice(metadata.get("threshold_selection"))
        facts.append(f"decision threshold {_number(evaluation['decision_threshold'])}, {how}")
    if metadata.get("calibration"):
        facts.append("probabilities calibrated (Platt scaling fitted on the validation rows)")
    section.text("; ".join(facts) + ".")
    baseline = (blessing or {}).get("baseline") or {}
    section.add(
        metrics_table(
            evaluation.get("metrics", {}),
            primary,
            champion=baseline.get("metrics"),
            champion_label=f"champion v{baseline.get('version')}",
        )
    )
    if evaluation.get("notes"):
        section.bullets(evaluation["notes"])
    scatter = evaluation.get("predicted_vs_actual")
    if scatter:
        figure, axes = plt.subplots(figsize=(5.5, 4.5))
        axes.scatter(scatter["actual"], scatter["predicted"], s=10, alpha=0.5)
        low = min(min(scatter["actual"]), min(scatter["predicted"]))
        high = max(max(scatter["actual"]), max(scatter["predicted"]))
        axes.plot([low, high], [low, high], color="grey", linestyle="--", label="perfect")
        axes.set(xlabel="actual", ylabel="predicted", title="Predicted against actual (test)")
        axes.legend()
        section.add(figure_to_img(figure, "predicted against actual values"))
        section.add(figure_to_img(residual_figure(scatter), "residuals against predicted values"))
        section.text(
            "Residuals (actual - predicted) should scatter evenly around 0 at every predicted "
            "value; a funnel or a curve means the error depends on the prediction."
        )
    return section


def residual_figure(scatter: dict[str, list[float]]) -> Figure:
    """Residuals against predictions: the regression counterpart of a confusion matrix."""
    predicted = np.asarray(scatter["predicted"], dtype=float)
    residuals = np.asarray(scatter["actual"], dtype=float) - predicted
    figure, axes = plt.subplots(figsize=(5.5, 4.5))
    axes.scatter(predicted, residuals, s=10, alpha=0.5)
    axes.axhline(0, color="grey", linestyle="--")
    axes.set(xlabel="predicted", ylabel="residual (actual - predicted)", title="Residuals (test)")
    return figure


def _gate_section(blessing: dict[str, Any] | None) -> Section:
    section = Section("gate", "Gate decision")
    if not blessing:
        return section.text("No gate decision was given to the report.", "muted")
    if blessing.get("overridden"):
        verdict, css = "BLESSED BY OVERRIDE: " + blessing.get("override_reason", ""), "warn"
    elif blessing.get("blessed"):
        verdict, css = "BLESSED: every check passed.", "ok"
    else:
        verdict, css = "NOT BLESSED: do not deploy this version without a review.", "error"
    section.text(verdict, css, strong=True)
    section.bullets(blessing.get("reasons", []))
    checks = blessing.get("checks", [])
    if checks:
        rows = [
            [
                c["name"],
                metric_cell(c["value"]),
                metric_cell(c["bound"]),
                "pass" if c["passed"] else "FAIL",
            ]
            for c in checks
        ]
        section.add(table(["check", "value", "bound", "result"], rows))
    return section


def _roc_section(evaluation: dict[str, Any]) -> Section:
    section = Section("roc", "ROC curves")
    if _not_classification(section, evaluation, "ROC curves"):
        return section
    curves = _curves(evaluation, "roc_curve", "roc_curves")
    if not curves:
        return section.text("The evaluation holds no ROC curve.", "muted")
    figure, axes = plt.subplots(figsize=(5.5, 4.5))
    for label, curve in curves.items():
        auc = f" (AUC {curve['auc']:.3f})" if "auc" in curve else ""
        axes.plot(curve["fpr"], curve["tpr"], label=f"{label}{auc}")
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="chance")
    point = _binary_operating_point(evaluation)
    if point and "roc_curve" in evaluation:
        threshold = _number(evaluation.get("decision_threshold"), 3)
        axes.plot(point["fpr"], point["recall"], "o", color="black", label=f"at {threshold}")
    kind = "one-vs-rest per class" if "roc_curves" in evaluation else "positive class"
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC ({kind})")
    axes.legend(loc="lower right", fontsize="small")
    section.add(figure_to_img(figure, "ROC curves"))
    if point:
        section.text("Dot: where the decision threshold puts the model on the test rows.")
    return section


def _pr_section(evaluation: dict[str, Any]) -> Section:
    section = Section("pr", "Precision-recall curves")
    if _not_classification(section, evaluation, "Precision-recall curves"):
        return section
    curves = _curves(evaluation, "pr_curve", "pr_curves")
    if not curves:
        return section.text("The evaluation holds no precision-recall curve.", "muted")
    section.add(figure_to_img(pr_figure(evaluation, curves), "precision-recall curves"))
    section.text("Dotted: the class's share of the test rows, a random ranking's precision.")
    return section


def pr_figure(evaluation: dict[str, Any], curves: dict[str, dict]) -> Figure:
    """The PR curves, the legend beside the axes: precision is high exactly where a legend
    inside would sit (upper right), so it covered the curve."""
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    for label, curve in curves.items():
        ap = curve.get("average_precision")
        name = f"{label} (AP {ap:.3f}, base rate {curve['prevalence']:.2f})" if ap else label
        lines = axes.plot(curve["recall"], curve["precision"], label=name)
        axes.axhline(curve["prevalence"], color=lines[0].get_color(), linestyle=":", lw=1)
    point = _binary_operating_point(evaluation)
    if point and "pr_curve" in evaluation:
        threshold = _number(evaluation.get("decision_threshold"), 3)
        axes.plot(point["recall"], point["precision"], "o", color="black", label=f"at {threshold}")
    axes.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02), title="Precision-recall")
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize="small")
    return figure


def _confusion_section(evaluation: dict[str, Any]) -> Section:
    section = Section("confusion", "Confusion matrix")
    if _not_classification(section, evaluation, "Confusion matrices"):
        return section
    confusion = evaluation.get("confusion_matrix")
    if not confusion:
        return section.text("The evaluation holds no confusion matrix.", "muted")
    labels, matrix = confusion["labels"], np.asarray(confusion["matrix"])
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    size = min(2.5 + 0.6 * len(labels), 12)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if len(labels) <= 20:
        for (row, col), count in np.ndenumerate(matrix):
            colour = "white" if shares[row, col] > 0.6 else "black"
            text = f"{count}\n{shares[row, col]:.0%}"
            axes.text(col, row, text, ha="center", va="center", color=colour, fontsize=9)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set(xlabel="predicted", ylabel="actual", title="Counts; colour: share of the actual row")
    figure.colorbar(image, ax=axes, fraction=0.046)
    section.add(figure_to_img(figure, "confusion matrix"))
    rows = [[f"actual {label}", *map(int, row)] for label, row in zip(labels, matrix, strict=True)]
    section.add(table(["", *[f"predicted {label}" for label in labels]], rows))
    return section


def _calibration_section(evaluation: dict[str, Any]) -> Section:
    section = Section("calibration", "Calibration")
    if _not_classification(section, evaluation, "Calibration curves"):
        return section
    curve = evaluation.get("calibration")
    if not curve or not curve.get("count"):
        return section.text("The evaluation holds no calibration curve.", "muted")
    figure, (axes, counts) = plt.subplots(
        2, 1, figsize=(5.5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    axes.plot(curve["mean_predicted"], curve["observed"], "o-", label="model")
    axes.set(ylabel="observed frequency", title=f"Reliability: {curve.get('kind', '')}")
    axes.legend(loc="upper left", fontsize="small")
    widths = np.subtract(curve["bin_upper"], curve["bin_lower"])
    counts.bar(curve["bin_lower"], curve["count"], width=widths, align="edge", edgecolor="white")
    counts.set(xlabel="predicted probability", ylabel="rows", xlim=(0, 1))
    section.add(figure_to_img(figure, "calibration curve"))
    error = curve["expected_calibration_error"]
    brier = evaluation.get("metrics", {}).get("brier")
    section.text(
        f"Expected calibration error {error:.4f} (mean gap between predicted probability and "
        f"observed frequency, weighted by rows); Brier score {_number(brier)}."
    )
    return section


def _learning_section(diagnosis: dict[str, Any] | None) -> Section:
    section = Section("learning", "Learning curves and fit")
    if not diagnosis:
        return section.text("No fit diagnosis was produced for this run.", "muted")
    verdict = diagnosis.get("verdict", "unknown")
    css = "ok" if verdict == "good fit" else "warn"
    section.text(f"Verdict: {verdict}", css, strong=True)
    if diagnosis.get("evidence"):
        section.bullets(diagnosis["evidence"])
    if diagnosis.get("suggestion"):
        section.text(f"Suggestion: {diagnosis['suggestion']}")
    metric = diagnosis.get("metric", "score")
    learning = diagnosis.get("learning_curve")
    if learning and learning.get("train_sizes"):
        figure, axes = plt.subplots(figsize=(5.5, 4))
        axes.plot(learning["train_sizes"], learning["train_scores"], "o-", label="training")
        axes.plot(learning["train_sizes"], learning["validation_scores"], "o-", label="validation")
        axes.set(xlabel="training rows", ylabel=metric, title="Learning curve")
        axes.legend()
        section.add(figure_to_img(figure, "learning curve"))
    validation = diagnosis.get("validation_curve")
    if validation and validation.get("values"):
        figure, axes = plt.subplots(figsize=(5.5, 4))
        values = validation["values"]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        x = values if numeric else list(range(len(values)))
        if validation["train_scores"]:  # none when read from the tuning history
            axes.plot(x, validation["train_scores"], "o-", label="training")
        axes.plot(x, validation["validation_scores"], "o-", label="validation")
        if numeric and min(values) > 0 and max(values) / min(values) >= 100:
            axes.set_xscale("log")
        if not numeric:
            axes.set_xticks(x, [str(v) for v in values], rotation=30)
        axes.set(xlabel=validation.get("param", ""), ylabel=metric, title="Validation curve")
        axes.legend()
        section.add(figure_to_img(figure, "validation curve"))
    return section


def _importance_section(explanation: dict[str, Any] | None, columns: list[str] = ()) -> Section:
    section = Section("importance", "Feature importance")
    importance = (explanation or {}).get("permutation_importance")
    if not importance:
        return section.text("No feature importance was computed for this run.", "muted")
    spread = explanation.get("permutation_importance_std", {})
    ranked = sorted(importance.items(), key=lambda item: item[1], reverse=True)
    section.text(
        f"Method: {explanation.get('method', 'permutation importance')}. Drop in the score "
        "when a column's values are shuffled (mean ± standard deviation over repeats)."
    )
    if explanation.get("budget_cut"):
        section.text(f"Cut to fit the run's time budget: {explanation['budget_cut']}.")
    section.add(_bar_chart(ranked[:TOP_FEATURES], spread, "Permutation importance (test)"))
    rows = [[name, float(value), float(spread.get(name, 0.0))] for name, value in ranked]
    section.add(table(["input column", "importance", "std"], rows))
    shap = explanation.get("shap_mean_abs")
    if shap:
        readable = {readable_feature(name, columns): value for name, value in shap.items()}
        ranked_shap = sorted(readable.items(), key=lambda item: item[1], reverse=True)
        section.add(_bar_chart(ranked_shap[:TOP_FEATURES], {}, "Mean |SHAP value| per feature"))
    return section


def _bar_chart(ranked: list[tuple[str, float]], spread: dict[str, float], title: str) -> str:
    names = [name for name, _ in ranked][::-1]
    values = [value for _, value in ranked][::-1]
    errors = [spread.get(name, 0.0) for name in names]
    figure, axes = plt.subplots(figsize=(6.5, 0.9 + 0.3 * len(names)))
    axes.barh(names, values, xerr=errors if spread else None, color="#3b82c4")
    axes.axvline(0, color="grey", lw=0.8)
    axes.set(title=title)
    return figure_to_img(figure, title)


def _gain(study: dict[str, Any]) -> float | None:
    """How much the best trial beat the defaults on the objective (positive: better)."""
    default, best = study.get("default_score"), study.get("best_score")
    if not (_finite(default) and _finite(best)):
        return None
    return (best - default) if study.get("greater_is_better", True) else (default - best)


def _objective_data(study: dict[str, Any]) -> str:
    cv = study.get("cv")
    if study.get("objective_data") == "cv" and cv:
        return f"cv: {cv.get('scheme', 'k-fold')}, {cv.get('folds')} folds"
    return study.get("objective_data", "validation")


def _tuning_section(trials: list[dict[str, Any]], champion: str | None = None) -> Section:
    section = Section("tuning", "Tuning history")
    if not trials:
        return section.text("No hyperparameter tuning ran for this model.", "muted")
    chosen = next((study for study in trials if study.get("family") == champion), None)
    if chosen is not None:
        budget = chosen.get("budget", {})
        gain = _gain(chosen)
        change = "n/a" if gain is None else f"{gain:+.4f}"
        section.text(
            f"Champion ({champion}): tuning took {chosen.get('metric', 'the score')} on "
            f"{_objective_data(chosen)} from {_number(chosen.get('default_score'))} with the "
            f"family's defaults to {_number(chosen.get('best_score'))} ({change}), in "
            f"{len(chosen.get('trials', []))} of {budget.get('trials', '?')} trials and "
            f"{_number(chosen.get('elapsed_seconds'), 1)} s of the "
            f"{_number(budget.get('timeout_seconds'), 0)} s budget "
            f"(stopped by {chosen.get('stopped_by', '?')})."
        )
        if chosen.get("budget_cut"):
            section.text(f"Cut to fit the run's time budget: {chosen['budget_cut']}.")
    rows = []
    for study in trials:
        budget = study.get("budget", {})
        ran = len(study.get("trials", []))
        family = study.get("family", "?")
        rows.append(
            [
                f"{family} (champion)" if family == champion else family,
                study.get("metric", "?"),
                _objective_data(study),
                f"{ran} of {budget.get('trials', '?')} (timeout {budget.get('timeout_seconds')}s)",
                _number(study.get("default_score")),
                _number(study.get("best_score")),
                _number(_gain(study)),
                ", ".join(f"{k}={v}" for k, v in (study.get("best_params") or {}).items()),
            ]
        )
    headers = [
        "family", "metric", "objective on", "trials run", "default score", "best score",
        "gain", "best params",
    ]  # fmt: skip
    section.add(table(headers, rows, css_id="tuning-table"))
    figure, axes = plt.subplots(figsize=(7, 4))
    for study in trials:
        done = [t for t in study.get("trials", []) if _finite(t.get("value"))]
        if not done:
            continue
        numbers = [t["number"] for t in done]
        values = [t["value"] for t in done]
        pick = np.maximum if study.get("greater_is_better", True) else np.minimum
        points = axes.plot(numbers, values, "o", alpha=0.5, label=study.get("family", "?"))
        axes.step(numbers, pick.accumulate(values), where="post", color=points[0].get_color())
        defaults = [t for t in done if t.get("is_default")]
        if defaults:
            axes.plot(
                [t["number"] for t in defaults],
                [t["value"] for t in defaults],
                "*",
                markersize=14,
                color=points[0].get_color(),
            )
    metric = trials[0].get("metric", "score")
    axes.set(xlabel="trial", ylabel=metric, title="Trials (line: best so far; star: defaults)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(fontsize="small")
    section.add(figure_to_img(figure, "tuning history"))
    failed = sum(1 for s in trials for t in s.get("trials", []) if not _finite(t.get("value")))
    if failed:
        section.text(f"{failed} trial(s) were pruned or failed and have no score.", "muted")
    return section


def _features_section(
    preprocessing: dict[str, Any] | None, selection: dict[str, Any] | None
) -> Section:
    """Input columns the preprocessing dropped, and the features selection kept or dropped,
    each with the reason the step recorded."""
    section = Section("features", "Features")
    if not preprocessing and not selection:
        return section.text("No preprocessing or feature selection report was given.", "muted")
    if preprocessing:
        used, dropped = (
            preprocessing.get("input_columns", []),
            preprocessing.get("dropped_columns", {}),
        )
        section.text(
            f"Preprocessing: {len(used)} input column(s) used, {len(dropped)} dropped; "
            f"they make {len(preprocessing.get('features', []))} feature(s)."
        )
        if dropped:
            rows = [[name, reason] for name, reason in dropped.items()]
            section.add(table(["dropped input column", "reason"], rows, css_id="dropped-columns"))
    columns = (preprocessing or {}).get("input_columns", [])
    named = {
        feature: readable_feature(feature, columns)
        for feature in [*(selection or {}).get("kept", []), *(selection or {}).get("dropped", {})]
    }
    if selection:
        kept, dropped = selection.get("kept", []), selection.get("dropped", {})
        methods = ", ".join(selection.get("methods", [])) or "none (every feature kept)"
        section.text(
            f"Feature selection ({methods}): {len(kept)} feature(s) kept, {len(dropped)} dropped."
        )
        scores = selection.get("scores", {})
        rows = [[named[name], *[metric_cell(scores[m].get(name)) for m in scores]] for name in kept]
        section.add(table(["kept feature", *scores], rows, css_id="kept-features"))
        if dropped:
            rows = [
                [named[name], _name_features(reason, named)] for name, reason in dropped.items()
            ]
            section.add(table(["dropped feature", "reason"], rows, css_id="dropped-features"))
    return section


def _name_features(text: str, named: dict[str, str]) -> str:
    """`text` with each model feature name in it said readably (longest names first)."""
    for feature in sorted(named, key=len, reverse=True):
        text = text.replace(feature, named[feature])
    return text


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _slices_section(slices: dict[str, Any] | None, task: str) -> Section:
    section = Section("slices", "Metrics per slice")
    if not slices:
        return section.text(
            "No slice column: the model has no categorical input column with two or more "
            "categories, and none was configured (slice_column).",
            "muted",
        )
    primary = slices["primary_metric"]
    shown = [primary, *[m for m in SLICE_METRICS.get(task, []) if m != primary]]
    section.text(
        f"Test rows split by '{slices['column']}'. Slices under {FEW_ROWS} rows are marked: "
        "their metrics move a lot with a single row. n/a: undefined on the slice (e.g. "
        "ROC-AUC when the slice holds one class)."
    )
    everything = sum(part["rows"] for part in slices["slices"])
    rows = [(["all rows", everything, ""], slices["overall"])]
    for part in slices["slices"]:
        flag = "few rows" if part["few_rows"] else ""
        rows.append(([part["value"], part["rows"], flag], part["metrics"]))
    leading = [slices["column"], "rows", ""]
    section.add(metric_columns_table(leading, shown, rows, css_id="slice-table"))
    values = [p["metrics"].get(primary, float("nan")) for p in slices["slices"]]
    figure, axes = plt.subplots(figsize=(6.5, 0.9 + 0.35 * len(values)))
    axes.barh([p["value"] for p in slices["slices"]][::-1], values[::-1], color="#3b82c4")
    axes.axvline(slices["overall"][primary], color="black", linestyle="--", label="all rows")
    axes.set(xlabel=primary, title=f"{primary} by {slices['column']}")
    axes.legend(fontsize="small")
    section.add(figure_to_img(figure, f"{primary} per slice"))
    return section


def render_evaluation_report(
    evaluation: dict[str, Any],
    diagnosis: dict[str, Any] | None,
    explanation: dict[str, Any] | None,
    trials: list[dict[str, Any]],
    slices: dict[str, Any] | None,
    metadata: dict[str, Any],
    blessing: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
    selection: dict[str, Any] | None = None,
) -> str:
    """One HTML page with no external reference: inline CSS, figures as base64 PNG.

    `preprocessing` and `selection` are the preprocess and features steps' reports."""
    task = evaluation.get("task", metadata.get("task", ""))
    name = metadata.get("model_name") or metadata.get("target", "model")
    subtitle = (
        f"{metadata.get('family', '?')} model predicting '{metadata.get('target', '?')}' "
        f"({task}); primary metric {evaluation.get('primary_metric', '?')}"
    )
    classifier = []  # sections with nothing to show for a regression model are left out
    if task == CLASSIFICATION:
        classifier = [
            _roc_section(evaluation),
            _pr_section(evaluation),
            _confusion_section(evaluation),
            _calibration_section(evaluation),
        ]
    columns = [c["name"] for c in metadata.get("input_schema", {}).get("columns", [])]
    sections = [
        _metrics_section(evaluation, metadata, blessing),
        _gate_section(blessing),
        *classifier,
        _learning_section(diagnosis),
        _features_section(preprocessing, selection),
        _importance_section(explanation, columns),
        _tuning_section(trials, metadata.get("family")),
        _slices_section(slices, task),
    ]
    return render_page(f"Evaluation report: {name}", subtitle, sections)


# --- the model card -------------------------------------------------------------------------


def render_model_card(
    metadata: dict[str, Any],
    evaluation: dict[str, Any],
    blessing: dict[str, Any] | None,
    diagnosis: dict[str, Any] | None = None,
    slices: dict[str, Any] | None = None,
) -> str:
    """Intended use, training data, metrics, gate decision and limitations, in Markdown
    (the layout is kfp_lifecycle/templates/model_card.md.j2)."""
    task, target = metadata["task"], metadata["target"]
    schema = InputSchema.from_dict(metadata["input_schema"])
    classes = metadata.get("classes") or []
    primary = evaluation.get("primary_metric", metadata.get("primary_metric", ""))
    if task == CLASSIFICATION:
        output = f"the class of `{target}` ({', '.join(f'`{c}`' for c in classes)}) and the "
        output += "probability of each class"
    else:
        output = f"a number, `{target}`"
    threshold_rule = None
    if "decision_threshold" in metadata and len(classes) == 2:
        threshold_rule = (
            f"A row is labelled `{classes[1]}` when its probability is at least "
            f"{metadata['decision_threshold']:.4f}, "
            f"{_threshold_choice(metadata.get('threshold_selection'))}."
        )
    facts = [
        f"Target: `{target}` ({task})",
        f"Training rows: {metadata.get('training_rows', 'unknown')}",
    ]
    lineage = metadata.get("lineage", {})
    if lineage.get("data_source"):
        facts.append(f"Source: {lineage['data_source']} (sha256 {lineage.get('data_sha256')})")
    facts.append(f"Model family: {metadata.get('family', 'unknown')}")
    libraries = metadata.get("libraries", {})
    if libraries:
        facts.append("Libraries: " + ", ".join(f"{k} {v}" for k, v in libraries.items()))
    baseline = (blessing or {}).get("baseline") or {}
    champion = baseline.get("metrics") or {}
    headers = ["metric", "value", "better"]
    if champion:
        headers.append(f"champion v{baseline.get('version')} on the same rows")
    cells = []
    for row in metric_rows(evaluation.get("metrics", {}), champion=champion):
        shown = [row.name, _number(row.value), row.better]
        cells.append([*shown, _number(row.champion)] if champion else shown)
    board = metadata.get("leaderboard")
    leaderboard = None
    if board:
        scores = ", ".join(f"{family} {_number(score)}" for family, score in board.items())
        leaderboard = f"Validation {primary} of the families trained: {scores}."
    decision = None
    if blessing and blessing.get("overridden"):
        decision = f"**Blessed by operator override**: {blessing.get('override_reason')}"
    elif blessing:
        decision = "**Blessed**" if blessing.get("blessed") else "**Not blessed**"
    card = (
        environment()
        .get_template("model_card.md.j2")
        .render(
            name=metadata.get("model_name") or target,
            intended_use=(
                f"Predicts {output} for rows with the {len(schema.columns)} input columns below, "
                "drawn from the same population as the training table. It was validated only as "
                "this card describes: any other population, period or purpose needs its own "
                "evaluation first."
            ),
            threshold_rule=threshold_rule,
            inputs=[
                [c.name, c.kind, ", ".join(c.categories[:10]) + (" ..." * (len(c.categories) > 10))]
                for c in schema.columns
            ],
            training_facts=facts,
            rows=evaluation.get("rows", "?"),
            primary=primary,
            metric_headers=headers,
            metric_cells=cells,
            leaderboard=leaderboard,
            decision=decision,
            reasons=(blessing or {}).get("reasons", []),
            limitations=_limitations(metadata, evaluation, blessing, diagnosis, slices),
        )
    )
    return card.rstrip() + "\n"


def _limitations(
    metadata: dict[str, Any],
    evaluation: dict[str, Any],
    blessing: dict[str, Any] | None,
    diagnosis: dict[str, Any] | None,
    slices: dict[str, Any] | None,
) -> list[str]:
    """What a reader should know before relying on the model, from what was measured."""
    items = []
    if blessing is not None and not blessing.get("blessed"):
        items.append("The gate did not bless this version: do not deploy it without a review.")
    rows = evaluation.get("rows", 0)
    items.append(
        f"Measured on {rows} test rows from the same table as the training rows: the scores "
        "hold for data like it, not for data that has drifted since."
    )
    categorical = InputSchema.from_dict(metadata["input_schema"]).of_kind(CATEGORICAL)
    if categorical:
        items.append(
            "Categories never seen in training are refused when serving (columns: "
            f"{', '.join(categorical)})."
        )
    calibration = evaluation.get("calibration")
    if calibration:
        error = calibration["expected_calibration_error"]
        if error > 0.05:
            items.append(
                f"Probabilities are off by {error:.3f} on average (expected calibration error): "
                "do not read them as frequencies without recalibrating."
            )
    curve = evaluation.get("pr_curve")
    if curve and curve["prevalence"] < 0.2:
        items.append(
            f"The positive class is {curve['prevalence']:.0%} of the test rows: accuracy is "
            "dominated by the other class; judge by recall, precision and PR-AUC."
        )
    if diagnosis and diagnosis.get("verdict") not in (None, "good fit"):
        suggestion = diagnosis.get("suggestion", "")
        items.append(f"Fit diagnosis: {diagnosis['verdict']}. {suggestion}".strip())
    if slices:
        primary = slices["primary_metric"]
        greater = METRICS[primary].greater_is_better
        scored = [s for s in slices["slices"] if _finite(s["metrics"].get(primary))]
        if scored:
            worst = (min if greater else max)(scored, key=lambda s: s["metrics"][primary])
            items.append(
                f"Weakest slice of '{slices['column']}': '{worst['value']}' ({worst['rows']} "
                f"rows) with {primary} {worst['metrics'][primary]:.4f} against "
                f"{slices['overall'][primary]:.4f} on all rows."
            )
    return items


# --- the component --------------------------------------------------------------------------


def build_report(
    bundle: Bundle,
    test: pd.DataFrame,
    evaluation: dict[str, Any],
    blessing: dict[str, Any] | None,
    diagnosis: dict[str, Any] | None,
    explanation: dict[str, Any] | None,
    trials: list[dict[str, Any]],
    options: ReportOptions,
    preprocessing: dict[str, Any] | None = None,
    selection: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """The HTML report and the Markdown model card for one evaluated bundle."""
    column = options.slice_column or pick_slice_column(bundle.schema)
    slices = metrics_by_slice(bundle, test, column, options.max_slices) if column else None
    page = render_evaluation_report(
        evaluation, diagnosis, explanation, trials, slices, bundle.metadata, blessing,
        preprocessing, selection,
    )  # fmt: skip
    card = render_model_card(bundle.metadata, evaluation, blessing, diagnosis, slices)
    return page, card


@component
def report(
    model: Input[Model],
    calibration: Input[Artifact],
    leaderboard: Input[Artifact],
    test: Input[Dataset],
    evaluation: Input[Artifact],
    blessing: Input[Artifact],
    diagnosis: Input[Artifact],
    explanation: Input[Artifact],
    trials: Input[list[Artifact]],
    preprocessing: Input[Artifact],
    features: Input[Artifact],
    report: Output[HTML],
    model_card: Output[Markdown],
    options: dict = {},  # noqa: B006
):
    """Write the evaluation report and the model card (register puts the card into the
    registered bundle).

    Args:
        model: The evaluated (and gated) bundle, read as it will be served.
        calibration: Its calibration (core.documents.Calibration).
        leaderboard: select's ranking of the families (core.documents.Leaderboard).
        test: The test rows it was evaluated on (for metrics per slice).
        evaluation: The evaluate step's JSON (metrics, curves, confusion matrix, calibration).
        blessing: The gate's decision JSON.
        diagnosis: The fit diagnosis JSON (verdict, evidence, learning and validation curves).
        explanation: The feature importance JSON (permutation importance, optional SHAP).
        trials: One tuning history JSON per model family.
        preprocessing: The preprocess step's report JSON (input columns dropped and why).
        features: The features step's report JSON (features kept, dropped and why).
        report: Self-contained HTML page (no network needed to view it).
        model_card: The model card as Markdown: intended use, training data, metrics, gate
            decision, limitations; register keeps it as metadata["model_card"].
        options: ReportOptions: slice_column (empty: the categorical input column with the
            fewest categories), max_slices.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.components.report import ReportOptions, build_report, logger
    from kfp_lifecycle.core.bundle import load_bundle
    from kfp_lifecycle.core.documents import (
        Blessing,
        Calibration,
        Diagnosis,
        Evaluation,
        Explanation,
        Leaderboard,
        as_dict,
        parse_document,
        read_document,
        served,
    )

    def read(path, kind=None):
        """The JSON at `path`, checked against `kind` when given; empty: not produced."""
        with open(path) as handle:
            data = json.load(handle) or None
        return as_dict(parse_document(data, kind, path)) if data and kind else data

    settings = ReportOptions.model_validate(options)
    bundle = served(
        load_bundle(model.path),
        read_document(calibration.path, Calibration),
        read_document(leaderboard.path, Leaderboard),
    )
    page, card = build_report(
        bundle,
        pd.read_parquet(test.path),
        read(evaluation.path, Evaluation),
        read(blessing.path, Blessing),
        read(diagnosis.path, Diagnosis),
        read(explanation.path, Explanation),
        [study for study in (read(t.path) for t in trials) if study],
        settings,
        read(preprocessing.path),
        read(features.path),
    )
    with open(report.path, "w") as handle:
        handle.write(page)
    with open(model_card.path, "w") as handle:
        handle.write(card)
    logger.info(f"evaluation report: {len(page) // 1024} KiB; model card: {len(card)} characters")
