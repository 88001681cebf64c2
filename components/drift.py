"""Drift: has the data the model sees moved away from the data it was trained on?

Per feature, the test suited to its kind and the sample size: for small samples a
two-sample test with a p-value (Kolmogorov-Smirnov for numbers, chi-square for categories),
for large ones a distance with a threshold (Wasserstein distance in units of the reference's
standard deviation, Jensen-Shannon distance: the square root of the divergence), where
any p-value would flag negligible shifts. Population stability index on request, for
numbers (the reference's quantile bins) and categories (each category's share). Categories
never seen in the reference and a changed share of missing values are findings of their own.
The dataset drifts when any of its rules holds (each can be turned off; the reasons say
which held): the share of drifted features reaches `drift_share`; one of the `top_features`
most important features drifted (importance: the model bundle's permutation importance;
without it the rule does not apply); a feature's PSI exceeds `max_psi`; more than
`max_new_category_rows` of the current rows carry a category the reference never had.

`p_value` is the level of each feature's test: on two samples of one distribution, a
feature's test fires with probability at most `p_value`. The distance thresholds keep each
feature's false alarms within that level too, from the default `small_sample` (1000 rows)
up; on fewer rows they fire far more often (about a quarter of features at 300 rows), so
lowering `small_sample` well below 1000 trades false alarms for speed. tests/test_drift.py
checks both regimes. The dataset verdict needs a `drift_share` of the features flagged at
once, so it alarms far more rarely than any one feature. The top-features rule judges each
of its k features' p-value tests at p_value / k (Bonferroni), so it too stays within the
level; PSI above 0.25 (the usual "significant shift") is out of reach of sampling noise
from a few hundred rows a side up.
"""

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats
from scipy.spatial.distance import jensenshannon

from kfp_lifecycle.component import component
from kfp_lifecycle.components.validate import check_new_data
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import (
    BOOLEAN,
    CATEGORICAL,
    DATETIME,
    NUMERIC,
    InputSchema,
    infer_schema,
)

MISSING = "__missing__"
# The reference kept in the bundle's metadata: a seeded sample of the raw training rows
# (the same space as logged requests), enough for the tests above to have power.
REFERENCE_ROWS = 2000
# The report draws at most this many features, drifted ones first.
PLOTTED_FEATURES = 30
# PSI takes the log of each bin's share: an empty bin (a category one side never had)
# counts as this share instead of zero, so that the index stays finite.
PSI_EPSILON = 1e-6


class DriftOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    small_sample: int = Field(
        1000, ge=10, description="Up to this many rows (the smaller side): p-value tests."
    )
    p_value: float = Field(0.05, gt=0, lt=1, description="Small samples: drift when p < this.")
    wasserstein_threshold: float = Field(
        0.1, gt=0, description="Large samples, numbers: Wasserstein / reference std above this."
    )
    jensen_shannon_threshold: float = Field(
        0.1, gt=0, le=1, description="Large samples, categories: JS distance (base 2) above this."
    )
    psi: bool = Field(
        False, description="Also compute the population stability index (numbers, categories)."
    )
    psi_threshold: float = Field(0.2, gt=0, description="PSI above this is drift (when psi).")
    psi_bins: int = Field(10, ge=2, description="Quantile bins of the reference for PSI.")
    new_category_share: float = Field(
        0.01, ge=0, lt=1, description="Rows with categories the reference never had: drift above."
    )
    null_rate_change: float = Field(
        0.05, ge=0, lt=1, description="Absolute change in the share of missing values: drift above."
    )
    drift_share: float = Field(
        0.5, gt=0, le=1, description="The dataset drifts when this share of features drift."
    )
    top_features: int = Field(
        3,
        ge=0,
        description="The dataset drifts when any of this many most important features (the "
        "model's permutation importance) drifts; 0: no such rule.",
    )
    # "Off" is a number, not null: KFP passes no null inside a dict parameter.
    max_psi: float = Field(
        0.25,
        ge=0,
        description="The dataset drifts when any feature's PSI exceeds this (PSI is then "
        "computed for every feature); 0: no such rule.",
    )
    max_new_category_rows: float = Field(
        0.1,
        ge=0,
        le=1,
        description="The dataset drifts when more than this share of current rows carry a "
        "category the reference never had; 1: no such rule.",
    )


@dataclass
class FeatureDrift:
    column: str
    kind: str
    test: str
    statistic: float
    threshold: float
    drifted: bool
    reasons: list[str] = field(default_factory=list)
    psi: float | None = None  # computed only when DriftOptions.psi asks for it


@dataclass
class DriftResult:
    features: list[FeatureDrift]
    drifted_share: float
    dataset_drift: bool
    reference_rows: int
    current_rows: int
    prediction: FeatureDrift | None = None  # the model's outputs; not counted in the share
    # The current data against the model's training data contract (components/validate.py):
    # {severity, column, check, message} per finding; reported, never counted as drift.
    contract: list[dict[str, str]] = field(default_factory=list)
    # Which dataset rules held, in words (empty: no dataset drift).
    dataset_reasons: list[str] = field(default_factory=list)
    new_category_rows: float = 0.0  # share of current rows with a category never seen

    @property
    def drifted(self) -> list[str]:
        return [f.column for f in self.features if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted_features": self.drifted}


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    options: DriftOptions | None = None,
    schema: InputSchema | None = None,
    prediction_column: str = "",
    contract: dict | None = None,
    importance: dict[str, float] | None = None,
) -> DriftResult:
    """Compare every schema column of `current` with `reference` (schema: inferred if absent).

    `prediction_column`, when both sides have it, is the model's output: its drift is
    reported on its own (prediction drift), not counted among the features. `contract`, the
    model's data contract, is checked against the current inputs too (findings reported).
    `importance` ({column: importance}, e.g. the bundle's permutation importance) lets the
    top-features rule apply.
    """

    options = options or DriftOptions()
    prediction = None
    if prediction_column:
        for side, frame in (("reference", reference), ("current", current)):
            if prediction_column not in frame.columns:
                raise DataError(f"the {side} data has no prediction column '{prediction_column}'")
        small = min(len(reference), len(current)) <= options.small_sample
        outputs = reference[prediction_column]
        kind = NUMERIC if pd.api.types.is_float_dtype(outputs) else CATEGORICAL
        prediction = _column_drift(outputs, current[prediction_column], kind, small, options)
        reference = reference.drop(columns=[prediction_column])
        current = current.drop(columns=[prediction_column])
    schema = schema or infer_schema(reference, target="")
    missing = [name for name in schema.names if name not in current.columns]
    if missing:
        raise DataError(f"current data lacks column(s) the reference has: {', '.join(missing)}")
    if reference.empty or current.empty:
        raise DataError("drift needs rows on both sides: the reference or current data is empty")
    findings = [asdict(f) for f in check_new_data(current, contract, schema.names)]
    reference, current = schema.coerce(reference), schema.coerce(current)
    small = min(len(reference), len(current)) <= options.small_sample
    features = [
        _column_drift(reference[c.name], current[c.name], c.kind, small, options)
        for c in schema.columns
    ]
    share = sum(f.drifted for f in features) / len(features)
    categorical = [c.name for c in schema.columns if c.kind in (CATEGORICAL, BOOLEAN)]
    new_rows = new_category_rows(reference[categorical], current[categorical])
    reasons = dataset_rules(features, share, new_rows, options, importance)
    return DriftResult(
        features,
        round(share, 4),
        bool(reasons),
        len(reference),
        len(current),
        prediction,
        findings,
        reasons,
        round(new_rows, 4),
    )


def new_category_rows(reference: pd.DataFrame, current: pd.DataFrame) -> float:
    """The share of current rows with at least one category its column's reference lacks."""
    if current.empty or not len(current.columns):
        return 0.0
    unseen = pd.Series(False, index=current.index)
    for name in current.columns:
        labels = _labels(current[name])
        unseen |= current[name].notna() & ~labels.isin(set(_labels(reference[name])))
    return float(unseen.mean())


def dataset_rules(
    features: list[FeatureDrift],
    share: float,
    new_rows: float,
    options: DriftOptions,
    importance: dict[str, float] | None,
) -> list[str]:
    """The dataset rules that hold, each as a reason; none: no dataset drift."""
    reasons = []
    if share >= options.drift_share:
        reasons.append(
            f"{share:.0%} of features drifted (rule: drift_share {options.drift_share:g})"
        )
    if importance and options.top_features:
        ranked = sorted(
            (f for f in features if f.column in importance),
            key=lambda f: -abs(importance[f.column]),
        )[: options.top_features]
        level = options.p_value / len(ranked) if ranked else options.p_value
        hit = [f.column for f in ranked if _clearly_drifted(f, level)]
        if hit:
            top = ", ".join(f.column for f in ranked)
            reasons.append(
                f"important feature(s) drifted: {', '.join(hit)} "
                f"(rule: top_features {options.top_features}: {top})"
            )
    if options.max_psi:
        high = [f for f in features if f.psi is not None and f.psi > options.max_psi]
        if high:
            shown = ", ".join(f"{f.column} {_round(f.psi)}" for f in high)
            reasons.append(f"PSI above {options.max_psi:g}: {shown} (rule: max_psi)")
    if new_rows > options.max_new_category_rows:
        reasons.append(
            f"{new_rows:.1%} of rows carry a category never seen in the reference "
            f"(rule: max_new_category_rows {options.max_new_category_rows:g})"
        )
    return reasons


def _clearly_drifted(finding: FeatureDrift, level: float) -> bool:
    """Drifted with its own test at `level` (p-value tests), or by its other findings."""
    if not finding.drifted:
        return False
    if finding.test.endswith("p-value") and not finding.statistic < level:
        return any(not reason.startswith(finding.test) for reason in finding.reasons)
    return True


def _round(value: float) -> str:
    """Figures for people: 3 significant digits, no float noise (50.830000000000005)."""
    return f"{value:.3g}"


def _column_drift(
    reference: pd.Series, current: pd.Series, kind: str, small: bool, options: DriftOptions
) -> FeatureDrift:
    reasons = []
    null_change = current.isna().mean() - reference.isna().mean()
    if abs(null_change) > options.null_rate_change:
        reasons.append(
            f"missing values {reference.isna().mean():.1%} -> {current.isna().mean():.1%}"
        )
    if kind in (CATEGORICAL, BOOLEAN):
        found = _categorical(reference, current, small, options, reasons)
    else:
        if kind == DATETIME:
            reference, current = _epoch(reference), _epoch(current)
        found = _numeric(reference.dropna(), current.dropna(), small, options)
    test, statistic, threshold, drifted = found
    if drifted:
        reasons.insert(0, f"{test} {statistic:.4g} (threshold {threshold:g})")
    index = None
    if options.psi or options.max_psi:  # the max_psi rule needs every feature's
        if kind in (CATEGORICAL, BOOLEAN):
            index = category_psi(reference, current)
        else:
            index = psi(reference.dropna(), current.dropna(), options.psi_bins)
        if options.psi and index > options.psi_threshold:
            reasons.append(f"PSI {index:.3f} (threshold {options.psi_threshold:g})")
    name = str(reference.name)
    return FeatureDrift(
        name, kind, test, float(statistic), threshold, bool(reasons), reasons, psi=index
    )


def _numeric(
    reference: pd.Series, current: pd.Series, small: bool, options: DriftOptions
) -> tuple[str, float, float, bool]:
    if reference.empty or current.empty:
        return "no values", 0.0, 0.0, False
    if small:
        p = float(stats.ks_2samp(reference, current).pvalue)
        return "KS p-value", p, options.p_value, p < options.p_value
    scale = float(reference.std()) or 1.0
    distance = float(stats.wasserstein_distance(reference, current)) / scale
    return (
        "Wasserstein/std",
        distance,
        options.wasserstein_threshold,
        (distance > options.wasserstein_threshold),
    )


def _categorical(
    reference: pd.Series,
    current: pd.Series,
    small: bool,
    options: DriftOptions,
    reasons: list[str],
) -> tuple[str, float, float, bool]:
    ref, cur = _labels(reference), _labels(current)
    new = sorted(set(cur) - set(ref))
    new_share = float(cur.isin(new).mean()) if new else 0.0
    if new and new_share > options.new_category_share:
        shown = ", ".join(repr(v) for v in new[:5])
        reasons.append(f"categories never seen in the reference ({new_share:.1%} of rows): {shown}")
    categories = sorted(set(ref) | set(cur))
    ref_counts = ref.value_counts().reindex(categories, fill_value=0).to_numpy()
    cur_counts = cur.value_counts().reindex(categories, fill_value=0).to_numpy()
    if small:
        if len(categories) < 2:
            return "chi-square p-value", 1.0, options.p_value, False
        table = np.vstack([ref_counts, cur_counts]) + 0.5  # no empty cell
        p = float(stats.chi2_contingency(table).pvalue)
        return "chi-square p-value", p, options.p_value, p < options.p_value
    # The distance (square root of the divergence): a 0.1 threshold on the divergence itself
    # missed a fifth of the rows moving between categories (bench/drift_vs_evidently.py).
    distance = float(
        jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum(), base=2)
    )
    threshold = options.jensen_shannon_threshold
    return "Jensen-Shannon distance", distance, threshold, distance > threshold


def psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """Population stability index of numbers over the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(reference, edges)[0] / len(reference)
    actual = np.histogram(current, edges)[0] / len(current)
    return _stability_index(expected, actual)


def category_psi(reference: pd.Series, current: pd.Series) -> float:
    """Population stability index of categories: one bin per category either side has.

    Missing values are a category of their own, as in the chi-square and Jensen-Shannon
    tests; a category only one side has counts there as PSI_EPSILON of the rows."""
    ref, cur = _labels(reference), _labels(current)
    if ref.empty or cur.empty:
        return 0.0
    categories = sorted(set(ref) | set(cur))
    expected = ref.value_counts(normalize=True).reindex(categories, fill_value=0).to_numpy()
    actual = cur.value_counts(normalize=True).reindex(categories, fill_value=0).to_numpy()
    return _stability_index(expected, actual)


def _stability_index(expected: np.ndarray, actual: np.ndarray) -> float:
    expected = np.clip(expected, PSI_EPSILON, None)
    actual = np.clip(actual, PSI_EPSILON, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _labels(values: pd.Series) -> pd.Series:
    """Category values as text, missing ones as the MISSING category."""
    return values.astype(object).fillna(MISSING).astype(str)


def _epoch(values: pd.Series) -> pd.Series:
    return pd.Series(
        values.astype("datetime64[ns]").astype("int64").where(values.notna()) / 86400e9,
        name=values.name,
    )


def render_report(
    result: DriftResult, reference: pd.DataFrame | None = None, current: pd.DataFrame | None = None
) -> str:
    """Verdict, one row per feature, and (given the data) each feature's distributions."""
    from kfp_lifecycle.html_report import Section, render_page, table

    verdict = "DRIFT" if result.dataset_drift else "no dataset drift"
    overview = Section("overview", "Verdict").text(
        f"{verdict}: {len(result.drifted)} of {len(result.features)} features drifted "
        f"({result.drifted_share:.0%}); reference {result.reference_rows} rows, "
        f"current {result.current_rows} rows."
    )
    if result.dataset_reasons:
        overview.text("Dataset rules that held: " + "; ".join(result.dataset_reasons) + ".")
    if result.prediction is not None:
        said = "drifted" if result.prediction.drifted else "did not drift"
        overview.text(
            f"Predictions {said}: {result.prediction.test} {result.prediction.statistic:.4g} "
            f"(threshold {result.prediction.threshold:g}). " + "; ".join(result.prediction.reasons)
        )
    ordered = sorted(result.features, key=lambda f: not f.drifted)
    with_psi = any(f.psi is not None for f in ordered)
    rows = [
        [f.column, f.kind, f.test, f.statistic, f.threshold, *([f.psi] if with_psi else []),
         "yes" if f.drifted else "no", "; ".join(f.reasons)]
        for f in ordered
    ]  # fmt: skip
    headers = ["feature", "kind", "test", "statistic", "threshold", *(["PSI"] if with_psi else [])]
    features = Section("features", "Per feature").add(table([*headers, "drifted", "why"], rows))
    contract = Section("contract", "Data contract")
    if result.contract:
        contract.text(
            "The current inputs against the data contract kept with the model at training "
            "time (types, ranges, categories, null rates, uniqueness):"
        ).add(
            table(
                ["severity", "column", "check", "finding"],
                [[f["severity"], f["column"], f["check"], f["message"]] for f in result.contract],
            )
        )
    else:
        contract.text("The current inputs meet the data contract kept with the model.")
    sections = [overview, features, contract]
    if reference is not None and current is not None:
        sections.append(_distributions(ordered, reference, current))
    return render_page("Drift report", verdict, sections)


def _distributions(
    ordered: list[FeatureDrift], reference: pd.DataFrame, current: pd.DataFrame
) -> "Section":  # noqa: F821 (imported lazily with the plotting stack)
    from kfp_lifecycle.html_report import Section, figure_to_img

    section = Section("distributions", "Distributions: reference vs current")
    shown = ordered[:PLOTTED_FEATURES]
    if len(ordered) > len(shown):
        section.text(f"The first {len(shown)} of {len(ordered)} features, drifted ones first.")
    for finding in shown:
        figure = distribution_figure(finding, reference[finding.column], current[finding.column])
        section.add(figure_to_img(figure, f"{finding.column}: reference vs current"))
    return section


def distribution_figure(finding: FeatureDrift, ref: pd.Series, cur: pd.Series) -> Any:
    """One feature's reference and current distributions; dates on a date axis."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 2.6))
    if finding.kind in (CATEGORICAL, BOOLEAN):
        ref_share = _labels(ref).value_counts(normalize=True)
        cur_share = _labels(cur).value_counts(normalize=True)
        shares = pd.concat([ref_share, cur_share], axis=1, keys=["reference", "current"])
        shares = shares.fillna(0).sort_values("reference", ascending=False).head(15)
        shares.plot.bar(ax=axes, color=["#3b82c4", "#e07b39"], rot=30)
        axes.set(ylabel="share of rows")
    else:
        if finding.kind == DATETIME:  # matplotlib's date numbers, shown as dates
            ref, cur = (
                pd.Series(mdates.date2num(v.dropna().astype("datetime64[ns]"))) for v in (ref, cur)
            )
            locator = mdates.AutoDateLocator()
            axes.xaxis.set_major_locator(locator)
            axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ref, cur = ref.dropna().astype(float), cur.dropna().astype(float)
        both = pd.concat([ref, cur])
        bins = np.histogram_bin_edges(both, bins=30) if len(both) else 10
        axes.hist(ref, bins=bins, density=True, alpha=0.55, label="reference", color="#3b82c4")
        axes.hist(cur, bins=bins, density=True, alpha=0.55, label="current", color="#e07b39")
        axes.set(ylabel="density")
        axes.legend(fontsize="small")
    flag = "DRIFTED: " if finding.drifted else ""
    axes.set_title(f"{flag}{finding.column}", fontsize="medium")
    return figure


def reference_sample(frame: pd.DataFrame, target: str, rows: int = REFERENCE_ROWS) -> dict:
    """A seeded sample of the training rows' inputs as JSON (orient=split): the reference a
    deployed model's traffic is later compared with, kept in the bundle's metadata."""
    features = frame.drop(columns=[target], errors="ignore")
    sample = features.sample(n=min(rows, len(features)), random_state=0).sort_index()
    return {
        "rows_sampled": len(sample),
        "rows_total": len(features),
        "table": json.loads(sample.to_json(orient="split", index=False, date_format="iso")),
    }


def importance_of(metadata: dict[str, Any]) -> dict[str, float] | None:
    """The permutation importance kept with a bundle (explain step), for top_features."""
    return (metadata.get("explanation") or {}).get("permutation_importance")


def reference_frame(metadata: dict[str, Any]) -> pd.DataFrame:
    """The reference sample kept with a bundle, typed by the bundle's input schema."""
    kept = metadata.get("reference")
    if not kept:
        raise DataError(
            "the model bundle keeps no reference sample (it predates drift monitoring): "
            "retrain it, or give the reference data explicitly"
        )
    table = kept["table"]
    frame = pd.DataFrame(table["data"], columns=table["columns"])
    return InputSchema.from_dict(metadata["input_schema"]).coerce(frame)


@component
def drift(
    reference: Input[Dataset],
    current: Input[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
    verdict: Output[Artifact],
    options: dict = {},  # noqa: B006 (KFP default, never mutated)
    prediction_column: str = "",
    contract: Input[Artifact] = None,
    importance: Input[Artifact] = None,
) -> bool:
    """Compare current data with the training reference, feature by feature.

    Args:
        reference: Rows the model was trained on (or a sample of them).
        current: Rows the model sees now (a file, an S3 prefix read by ingest, logged requests).
        metrics: Drifted share and one drift statistic per feature (dashboard).
        report: Self-contained HTML: verdict and a table of every feature's test.
        verdict: JSON: dataset_drift, drifted_features, and every feature's finding.
        options: DriftOptions: small_sample, p_value, wasserstein_threshold,
            jensen_shannon_threshold, psi, psi_threshold, new_category_share,
            null_rate_change, and the dataset rules drift_share, top_features (needs
            `importance`), max_psi, max_new_category_rows.
        prediction_column: The model's output column, present on both sides: its drift
            (prediction drift) is reported on its own. Empty: inputs only.
        contract: JSON data contract kept with the model at training time; the current
            inputs are checked against it too (findings in the report and the verdict).
        importance: JSON {column: importance} of the model (its permutation importance),
            for the top_features rule; absent or null: that rule has nothing to rank.

    Returns:
        Whether the dataset drifted.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.components.drift import DriftOptions, detect_drift, render_report

    reference_rows, current_rows = pd.read_parquet(reference.path), pd.read_parquet(current.path)
    kept_contract = None
    if contract is not None:
        with open(contract.path) as handle:
            kept_contract = json.load(handle)
    ranked = None
    if importance is not None:
        with open(importance.path) as handle:
            ranked = json.load(handle)
    result = detect_drift(
        reference_rows,
        current_rows,
        DriftOptions.model_validate(options),
        prediction_column=prediction_column,
        contract=kept_contract,
        importance=ranked,
    )
    metrics.log_metric("drifted_share", result.drifted_share)
    if result.prediction is not None:
        metrics.log_metric("prediction_drift", result.prediction.statistic)
    for finding in result.features:
        metrics.log_metric(f"drift_{finding.column}", finding.statistic)
        if finding.psi is not None:
            metrics.log_metric(f"psi_{finding.column}", finding.psi)
    with open(report.path, "w") as handle:
        handle.write(render_report(result, reference_rows, current_rows))
    with open(verdict.path, "w") as handle:
        json.dump(result.to_dict(), handle, indent=2)
    for finding in result.contract:
        print(f"contract {finding['severity']}: '{finding['column']}' {finding['check']}: "
              f"{finding['message']}")  # fmt: skip
    print(f"drifted features: {', '.join(result.drifted) or 'none'}")
    return result.dataset_drift
