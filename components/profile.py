"""Profile: the exploratory data analysis report, as a self-contained HTML page and a summary.

What a reviewer asks of a new table before trusting a model trained on it: its shape, each
column's distribution, what is missing, what correlates, how the target is balanced and what
relates to it, outliers, duplicates, and the columns that look too good to be true (a leak)
or that are only identifiers.
"""

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output
from pydantic import BaseModel, ConfigDict, Field
from sklearn.feature_selection import mutual_info_classif, mutual_info_regression
from sklearn.model_selection import cross_val_score
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from kfp_lifecycle.component import component
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import (
    BOOLEAN,
    CATEGORICAL,
    DATETIME,
    ID_LIKE,
    NUMERIC,
    infer_kind,
    infinite_as_missing,
    infinite_counts,
    unusable_column,
)
from kfp_lifecycle.core.tasks import CLASSIFICATION

logger = logging.getLogger(__name__)

SECTIONS = (
    "overview", "columns", "missing", "correlations", "target", "relations", "outliers",
    "duplicates", "leaks",
)  # fmt: skip


class ProfileOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_rows: int = Field(50_000, ge=100, description="Rows sampled (seeded) for plots/stats.")
    leak_score: float = Field(
        0.98, gt=0.5, le=1, description="A single feature scoring this alone is a suspected leak."
    )
    max_plots: int = Field(40, ge=0, description="Distribution plots drawn at most.")
    seed: int = 42


@dataclass
class ColumnProfile:
    name: str
    kind: str
    missing_share: float
    distinct: int
    stats: dict[str, Any]
    outliers: int = 0


@dataclass
class Profile:
    rows: int
    columns: int
    sampled_rows: int
    target: str
    task: str
    column_profiles: list[ColumnProfile]
    duplicates: int
    target_balance: dict[str, float]
    relations: dict[str, float]
    correlations: dict[str, dict[str, float]]
    suspected_leaks: dict[str, str]
    id_like: dict[str, str]
    warnings: list[str] = field(default_factory=list)

    def findings(self) -> dict[str, Any]:
        return {
            "warnings": self.warnings,
            "suspected_leaks": self.suspected_leaks,
            "id_like": self.id_like,
            "duplicates": self.duplicates,
        }


def profile_table(
    frame: pd.DataFrame, target: str, task: str, options: ProfileOptions | None = None
) -> Profile:
    options = options or ProfileOptions()
    if target not in frame.columns:
        raise DataError(f"target column '{target}' not found; columns are: {', '.join(frame)}")
    if frame.empty:
        raise DataError("the table has no rows to profile")
    infinite = infinite_counts(frame)  # counted, then missing like any unmeasured value
    frame = frame.assign(**{name: infinite_as_missing(frame[name]) for name in infinite})
    sample = frame
    if len(frame) > options.sample_rows:
        sample = frame.sample(options.sample_rows, random_state=options.seed)
    features = [c for c in frame.columns if c != target]
    kinds = {c: infer_kind(frame[c]) for c in features}
    columns = [_column(sample[c], kinds[c], len(frame), frame[c]) for c in features]
    labels = sample[target]
    balance = (
        labels.astype(str).value_counts(normalize=True).round(4).to_dict()
        if task == CLASSIFICATION
        else {}
    )
    numeric = [c for c in features if kinds[c] == NUMERIC]
    correlations = sample[numeric].corr().round(3).fillna(0).to_dict() if len(numeric) > 1 else {}
    id_like = _id_like(frame, features, kinds)
    # An identifier's "relation" to the target is memorisation, not information.
    related = [c for c in features if c not in id_like]
    relations, leaks = _relations(sample, related, kinds, target, task, options)
    profile = Profile(
        rows=len(frame),
        columns=frame.shape[1],
        sampled_rows=len(sample),
        target=target,
        task=task,
        column_profiles=columns,
        duplicates=int(frame.duplicated().sum()),
        target_balance=balance,
        relations=relations,
        correlations=correlations,
        suspected_leaks=leaks,
        id_like=id_like,
    )
    for name, count in infinite.items():
        profile.warnings.append(
            f"'{name}' has {count} infinite value(s) (inf/-inf), counted as missing"
        )
    for name, reason in leaks.items():
        profile.warnings.append(f"suspected leak: '{name}' ({reason})")
    for name, reason in id_like.items():
        profile.warnings.append(f"ID-like column: '{name}' ({reason})")
    if profile.duplicates:
        profile.warnings.append(f"{profile.duplicates} duplicate row(s)")
    for column in columns:
        if column.missing_share > 0.3:
            profile.warnings.append(f"'{column.name}' is {column.missing_share:.0%} missing")
    if balance and min(balance.values()) < 0.1:
        profile.warnings.append(f"imbalanced target: rarest class {min(balance.values()):.1%}")
    return profile


def _column(sample: pd.Series, kind: str, rows: int, full: pd.Series) -> ColumnProfile:
    values = sample.dropna()
    stats: dict[str, Any] = {}
    outliers = 0
    if kind == NUMERIC and len(values):
        q1, q3 = values.quantile([0.25, 0.75])
        fence = 1.5 * (q3 - q1)
        outliers = int(((values < q1 - fence) | (values > q3 + fence)).sum())
        stats = {
            "mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "median": float(values.median()), "max": float(values.max()),
        }  # fmt: skip
    elif kind == DATETIME and len(values):
        times = pd.to_datetime(values, errors="coerce", format="mixed", utc=True).dropna()
        if len(times):
            stats = {"min": str(times.min().date()), "max": str(times.max().date())}
    elif len(values):
        top = values.astype(str).value_counts()
        stats = {"top": str(top.index[0]), "top_share": round(float(top.iloc[0] / len(values)), 4)}
    return ColumnProfile(
        str(sample.name), kind, round(float(full.isna().mean()), 4), int(full.nunique()), stats,
        outliers,
    )  # fmt: skip


def _id_like(frame: pd.DataFrame, features: list[str], kinds: dict[str, str]) -> dict[str, str]:
    """ID-like columns by the rule preprocessing drops them by (schema.unusable_column)."""
    found = {}
    for name in features:
        unusable = unusable_column(frame[name], kinds[name])
        if unusable is not None and unusable.rule == ID_LIKE:
            found[name] = unusable.detail
    return found


def _relations(sample, features, kinds, target, task, options):
    """Each feature's mutual information with the target, and a one-feature model's score."""
    labels = sample[target]
    known = labels.notna()
    encoded = pd.DataFrame(index=sample.index)
    for name in features:
        column = sample[name]
        if kinds[name] == NUMERIC:
            encoded[name] = column.astype(float).fillna(column.median())
        elif kinds[name] == DATETIME:
            times = pd.to_datetime(column, errors="coerce", format="mixed", utc=True)
            encoded[name] = times.astype("int64").where(times.notna()).fillna(0) / 1e9
        else:
            encoded[name] = column.astype(str).astype("category").cat.codes
    encoded, y = encoded[known].fillna(0), labels[known]
    if not features or len(y) < 20 or y.nunique() < 2:  # nothing to relate, or too little
        return {}, {}
    classify = task == CLASSIFICATION
    if classify:
        y = y.astype(str)
    scorer = mutual_info_classif if classify else mutual_info_regression
    discrete = [kinds[n] in (CATEGORICAL, BOOLEAN) for n in features]
    information = scorer(encoded, y, discrete_features=discrete, random_state=options.seed)
    relations = {n: round(float(v), 4) for n, v in zip(features, information, strict=True)}
    leaks = {}
    model = (
        DecisionTreeClassifier(max_depth=4, random_state=options.seed)
        if classify
        else DecisionTreeRegressor(max_depth=4, random_state=options.seed)
    )
    scoring = "roc_auc_ovr" if classify else "r2"
    for name in sorted(relations, key=relations.get, reverse=True)[:10]:
        score = float(cross_val_score(model, encoded[[name]], y, cv=3, scoring=scoring).mean())
        if score >= options.leak_score:
            leaks[name] = f"alone it scores {scoring} {score:.3f} on the target"
    return relations, leaks


def render_html(profile: Profile, frame: pd.DataFrame, options: ProfileOptions) -> str:
    import matplotlib.pyplot as plt

    from kfp_lifecycle.html_report import Section, figure_to_img, fragment, render_page, table

    infinite = infinite_counts(frame)  # counted, then missing like any unmeasured value
    frame = frame.assign(**{name: infinite_as_missing(frame[name]) for name in infinite})
    sample = frame
    if len(frame) > options.sample_rows:
        sample = frame.sample(options.sample_rows, random_state=options.seed)
    overview = Section("overview", "Overview").add(
        table(
            ["rows", "columns", "target", "task", "rows sampled for plots"],
            [[profile.rows, profile.columns, profile.target, profile.task, profile.sampled_rows]],
        )
    )
    for warning in profile.warnings:
        overview.text(warning, "warn")
    columns = Section("columns", "Columns").add(
        table(
            ["column", "kind", "missing", "distinct", "statistics"],
            [
                [
                    c.name,
                    c.kind,
                    c.missing_share,
                    c.distinct,
                    ", ".join(
                        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in c.stats.items()
                    ),
                ]
                for c in profile.column_profiles
            ],
        )
    )
    for column in profile.column_profiles[: options.max_plots]:
        figure, axis = plt.subplots(figsize=(3.2, 2.2))
        values = sample[column.name].dropna()
        if column.kind == NUMERIC:
            axis.hist(values, bins=30, color="#3e7cb1")
        elif column.kind == DATETIME:
            times = pd.to_datetime(values, errors="coerce", format="mixed", utc=True).dropna()
            axis.hist(times.dt.tz_localize(None), bins=30, color="#3e7cb1")
            axis.tick_params(axis="x", rotation=45)
        else:
            counts = values.astype(str).value_counts().head(10)
            axis.barh(counts.index[::-1], counts.to_numpy()[::-1], color="#3e7cb1")
        axis.set_title(column.name, fontsize=9)
        axis.tick_params(labelsize=7)
        columns.add(fragment("figure", figure_to_img(figure, f"distribution of {column.name}")))
    missing = Section("missing", "Missing values").add(
        table(
            ["column", "missing share"],
            [[c.name, c.missing_share] for c in profile.column_profiles if c.missing_share],
        )
    )
    if not any(c.missing_share for c in profile.column_profiles):
        missing.text("No missing values.")
    correlations = Section("correlations", "Correlations (numeric columns)")
    if profile.correlations:
        names = list(profile.correlations)
        matrix = np.array([[profile.correlations[a][b] for b in names] for a in names])
        figure, axis = plt.subplots(figsize=(0.5 * len(names) + 2, 0.5 * len(names) + 1.5))
        image = axis.imshow(matrix, vmin=-1, vmax=1, cmap="coolwarm")
        axis.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        axis.set_yticks(range(len(names)), names, fontsize=7)
        figure.colorbar(image)
        correlations.add(figure_to_img(figure, "correlation matrix"))
    else:
        correlations.text("Fewer than two numeric columns.")
    target = Section("target", f"Target: {profile.target}")
    if profile.target_balance:
        target.add(table(["class", "share"], list(profile.target_balance.items())))
    else:
        target.add(table(["statistic", "value"], list(sample[profile.target].describe().items())))
    relations = Section("relations", "Each feature's relation to the target")
    if profile.relations:
        relations.add(
            table(
                ["feature", "mutual information"],
                sorted(profile.relations.items(), key=lambda item: -item[1]),
            )
        )
    elif all(c.name in profile.id_like for c in profile.column_profiles):
        relations.text("No feature to relate to the target: every other column is ID-like.")
    else:
        relations.text(
            "Too few labelled rows (fewer than 20, or one target value) to relate the "
            "features to the target."
        )
    outliers = Section("outliers", "Outliers (1.5 x IQR rule, numeric columns)").add(
        table(
            ["column", "rows outside the fences"],
            [[c.name, c.outliers] for c in profile.column_profiles if c.kind == NUMERIC],
        )
    )
    duplicates = Section("duplicates", "Duplicates").text(
        f"{profile.duplicates} exact duplicate row(s) of {profile.rows}."
    )
    leaks = Section("leaks", "Suspected leaks and ID-like columns")
    flagged = [[n, "suspected leak", r] for n, r in profile.suspected_leaks.items()]
    flagged += [[n, "ID-like", r] for n, r in profile.id_like.items()]
    if flagged:
        leaks.add(table(["column", "finding", "why"], flagged))
    else:
        leaks.text("No column predicts the target alone, and none looks like an identifier.")
    sections = [overview, columns, missing, correlations, target, relations, outliers,
                duplicates, leaks]  # fmt: skip
    return render_page(
        "Exploratory data analysis",
        f"{profile.rows} rows x {profile.columns} columns",
        sections,
    )


def render_markdown(profile: Profile) -> str:
    """The short Markdown summary (kfp_lifecycle/templates/profile_summary.md.j2)."""
    from kfp_lifecycle.html_report import environment

    top = sorted(profile.relations.items(), key=lambda item: -item[1])[:5]
    return (
        environment()
        .get_template("profile_summary.md.j2")
        .render(
            profile=profile,
            shares=", ".join(f"{k}: {v:.1%}" for k, v in profile.target_balance.items()),
            top=[name for name, _ in top],
        )
    )


@component
def profile(
    dataset: Input[Dataset],
    target: str,
    task: str,
    report: Output[HTML],
    summary: Output[Markdown],
    findings: Output[Artifact],
    options: dict = {},  # noqa: B006 (KFP default, never mutated)
    engine: str = "pandas",
    dask_options: dict = {},  # noqa: B006
    dask_scheduler: str = "",
):
    """Write the exploratory data analysis report of the table.

    Args:
        dataset: The ingested table.
        target: Name of the column to predict.
        task: classification or regression.
        report: Self-contained HTML (images inline): overview, columns, missing values,
            correlations, target, relations to the target, outliers, duplicates, leaks.
        summary: A short Markdown summary of the findings.
        findings: JSON: warnings, suspected leaks, ID-like columns, duplicate count.
        options: ProfileOptions: sample_rows, leak_score, max_plots, seed.
        engine: pandas, dask, or auto (dask from a size: kfp_lifecycle/dask_engine/engine.py).
        dask_options: DaskSettings (dask_engine/engine.py): scheduler_address (else a
            LocalCluster per step), n_workers, memory_per_worker, sample_rows.
        dask_scheduler: tcp://host:8786 of a running Dask scheduler, e.g. the training-dask
            pipeline's cluster step's output; overrides dask_options' scheduler_address.
            Empty: that, else the DASK_SCHEDULER_ADDRESS variable, else a LocalCluster.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.components.profile import (
        ProfileOptions,
        logger,
        profile_table,
        render_html,
        render_markdown,
    )
    from kfp_lifecycle.dask_engine.steps import uses_dask

    settings = ProfileOptions.model_validate(options)
    if uses_dask(engine, dataset.path):
        from kfp_lifecycle.dask_engine import steps

        result, frame = steps.profile(
            dataset.path, target, task, settings, dask_options, dask_scheduler
        )
    else:
        frame = pd.read_parquet(dataset.path)
        result = profile_table(frame, target, task, settings)
    with open(report.path, "w") as handle:
        handle.write(render_html(result, frame, settings))
    with open(summary.path, "w") as handle:
        handle.write(render_markdown(result))
    with open(findings.path, "w") as handle:
        json.dump(result.findings(), handle, indent=2)
    for warning in result.warnings:
        logger.warning(warning)
