"""Features: keep the preprocessor's output features worth a model's time, judged on training rows.

Methods run in a fixed order, each on the features the previous ones kept: variance (drop
features that barely vary), correlation (drop the later of two near-duplicates), mutual
information and model-based importance (keep the most informative). The decision becomes a
step appended to the preprocessing Pipeline, so serving applies exactly the same subset.
"""

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Output
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.feature_selection import mutual_info_classif, mutual_info_regression
from sklearn.pipeline import Pipeline

from kfp_lifecycle.component import component
from kfp_lifecycle.components.preprocess import check_training_rows
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.core.transformers import KeepFeatures

logger = logging.getLogger(__name__)

METHODS = ("variance", "correlation", "mutual_information", "importance")
# Correlation, mutual information and importance are estimated on at most this many
# training rows (a seeded sample): enough for stable rankings, bounded time on big tables.
SCORING_ROWS = 20_000
RANDOM_STATE = 0
IMPORTANCE_TREES = 100


def _share_or_count(value: int | float) -> int | float:
    if isinstance(value, float) and not 0 < value <= 1:
        raise ValueError(f"a share must be in (0, 1], got {value}; give a whole number for a count")
    if isinstance(value, int) and value < 1:
        raise ValueError(f"a count must be at least 1, got {value}")
    return value


ShareOrCount = Annotated[int | float, AfterValidator(_share_or_count)]


class FeaturesOptions(BaseModel):
    """Which selection methods run and how much each keeps; defaults drop only dead weight."""

    model_config = ConfigDict(extra="forbid")

    methods: list[Literal["variance", "correlation", "mutual_information", "importance"]] = Field(
        default_factory=lambda: ["variance", "correlation"],
        description="Selection methods; they run in the order variance, correlation, "
        "mutual_information, importance whatever the order given. Empty: keep every feature.",
    )
    variance_threshold: float = Field(
        0.0, ge=0, description="variance: drop features whose training variance is at most this."
    )
    correlation_threshold: float = Field(
        0.95,
        gt=0,
        le=1,
        description="correlation: of two features with |Pearson r| above this, drop the later.",
    )
    mutual_information_keep: ShareOrCount = Field(
        0.5,
        description="mutual_information: keep this share (0-1] or count (whole number) of "
        "the features, highest mutual information with the target first.",
    )
    importance_keep: ShareOrCount = Field(
        0.5,
        description="importance: keep this share (0-1] or count (whole number) of the "
        "features, by a random forest's impurity importance.",
    )
    max_features: int | None = Field(
        None,
        ge=1,
        description="At most this many features in the end, ranked by the last score computed "
        "(importance, else mutual information, computed for the purpose if need be).",
    )


@dataclass
class SelectionReport:
    """Kept features in output order, and each dropped feature with the reason."""

    methods: list[str]
    kept: list[str]
    dropped: dict[str, str]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> feature
    scoring_rows: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_feature_selector(
    preprocessor: Pipeline,
    train: pd.DataFrame,
    target: str,
    task: str,
    options: FeaturesOptions | None = None,
) -> tuple[Pipeline, SelectionReport]:
    """Append a KeepFeatures step chosen on training rows; no methods: the preprocessor as is.

    Features are scored as a model sees them while training: a clone of the preprocessor is
    fitted on the same rows, so target encodings are the cross-fitted ones, not the full-fit
    encodings that would let a column look more predictive than it will be on new rows.
    """
    options = options or FeaturesOptions()
    check_training_rows(train, target, task)
    names = [str(name) for name in preprocessor.get_feature_names_out()]
    if not options.methods:
        report = SelectionReport([], names, {}, options=options.model_dump())
        return preprocessor, report

    labels = train[target]
    features = np.asarray(
        clone(preprocessor).fit_transform(train.drop(columns=[target]), labels), dtype="float64"
    )
    sample = _scoring_sample(len(train))
    selection = _Selection(names, features[sample], labels.to_numpy()[sample], task)
    if "variance" in options.methods:
        selection.by_variance(features, options.variance_threshold)
    if "correlation" in options.methods:
        selection.by_correlation(options.correlation_threshold)
    if "mutual_information" in options.methods:
        selection.by_ranking("mutual_information", options.mutual_information_keep)
    if "importance" in options.methods:
        selection.by_ranking("importance", options.importance_keep)
    if options.max_features is not None:
        last = "importance" if "importance" in selection.scores else "mutual_information"
        selection.by_ranking(last, options.max_features, cap=True)

    kept = [names[i] for i in selection.kept]
    selector = KeepFeatures(names, kept).fit()
    report = SelectionReport(
        methods=[m for m in METHODS if m in options.methods],
        kept=kept,
        dropped=selection.dropped,
        scores=selection.scores,
        scoring_rows=len(sample),
        options=options.model_dump(),
    )
    return Pipeline([*preprocessor.steps, ("select", selector)]), report


def _scoring_sample(rows: int) -> np.ndarray:
    if rows <= SCORING_ROWS:
        return np.arange(rows)
    return np.sort(np.random.default_rng(RANDOM_STATE).choice(rows, SCORING_ROWS, replace=False))


class _Selection:
    """The features still kept (positions, in output order) and why each other one went."""

    def __init__(self, names: list[str], features: np.ndarray, labels: np.ndarray, task: str):
        self.names = names
        self.features = features
        self.labels = labels
        self.task = task
        self.kept = list(range(len(names)))
        self.dropped: dict[str, str] = {}
        self.scores: dict[str, dict[str, float]] = {}

    def _drop(self, position: int, reason: str) -> None:
        self.kept.remove(position)
        self.dropped[self.names[position]] = reason

    def by_variance(self, all_rows: np.ndarray, threshold: float) -> None:
        variances = np.nanvar(all_rows[:, self.kept], axis=0)
        low = [(p, v) for p, v in zip(list(self.kept), variances, strict=True) if v <= threshold]
        if len(low) == len(self.kept):
            raise DataError(
                f"every feature has a training variance at most {threshold}; "
                "lower variance_threshold"
            )
        for position, variance in low:
            self._drop(position, f"variance: {variance:.4g} <= {threshold}")

    def by_correlation(self, threshold: float) -> None:
        """Greedy, in output order: a feature goes if it nearly duplicates one already kept."""
        with np.errstate(invalid="ignore", divide="ignore"):  # constant columns: r undefined
            correlation = np.nan_to_num(np.corrcoef(self.features[:, self.kept], rowvar=False))
        correlation = np.atleast_2d(correlation)
        positions = list(self.kept)
        survivors: list[int] = []
        for j, position in enumerate(positions):
            partner = next((i for i in survivors if abs(correlation[j, i]) > threshold), None)
            if partner is None:
                survivors.append(j)
                continue
            self._drop(
                position,
                f"correlation: r = {correlation[j, partner]:+.3f} with "
                f"{self.names[positions[partner]]} (|r| > {threshold})",
            )

    def by_ranking(self, method: str, keep: int | float, cap: bool = False) -> None:
        """Keep the top `keep` (count, or share of the kept features) by the method's score.

        Scores computed by an earlier call are reused: the cap ranks what a method kept.
        """
        if method not in self.scores:
            self.scores[method] = self._score(method)
        count = keep if isinstance(keep, int) else math.ceil(keep * len(self.kept))
        if count >= len(self.kept):
            return
        scores = self.scores[method]
        ranked = sorted(self.kept, key=lambda p: -scores[self.names[p]])
        for rank, position in enumerate(ranked[count:], start=count + 1):
            name = self.names[position]
            limit = f"max_features = {count}" if cap else f"keeping the top {count}"
            self._drop(
                position,
                f"{method}: {scores[name]:.4g} ranks {rank} of {len(ranked)}; {limit}",
            )

    def _score(self, method: str) -> dict[str, float]:
        values = self.features[:, self.kept]
        classification = self.task == CLASSIFICATION
        if method == "mutual_information":
            # Two-valued features (one-hot, scaled indicators) are discrete, coded 0/1.
            values = values.copy()
            discrete = np.zeros(values.shape[1], dtype=bool)
            for k, column in enumerate(values.T):
                distinct, codes = np.unique(column, return_inverse=True)
                if len(distinct) <= 2:
                    discrete[k], values[:, k] = True, codes
            score = mutual_info_classif if classification else mutual_info_regression
            result = score(
                values, self.labels, discrete_features=discrete, random_state=RANDOM_STATE
            )
        else:
            forest = RandomForestClassifier if classification else RandomForestRegressor
            model = forest(
                n_estimators=IMPORTANCE_TREES,
                min_samples_leaf=2,
                n_jobs=-1,
                random_state=RANDOM_STATE,
            )
            result = model.fit(values, self.labels).feature_importances_
        return {self.names[p]: float(s) for p, s in zip(self.kept, result, strict=True)}


@component
def features(
    train: Input[Dataset],
    preprocessor: Input[Artifact],
    target: str,
    task: str,
    selected: Output[Artifact],
    report: Output[Artifact],
    options: dict = {},  # noqa: B006 (KFP default, never mutated)
    engine: str = "pandas",
    dask_options: dict = {},  # noqa: B006
):
    """Choose the features a model trains on, using the training rows only.

    Args:
        train: Training rows the preprocessor was fitted on (the preprocess step's
            train_clean).
        preprocessor: The preprocess step's directory: fitted transform and input schema.
        target: Name of the column to predict.
        task: classification or regression (the validate step's resolved task).
        selected: Preprocessor directory in the same format, with the selection appended
            as its last step (the preprocessor itself when no method is configured).
        report: JSON: kept features, and each dropped feature with the reason.
        options: FeaturesOptions (components/features.py): methods (variance, correlation,
            mutual_information, importance), variance_threshold, correlation_threshold,
            mutual_information_keep, importance_keep (a share 0-1 or a count),
            max_features.
        engine: pandas, dask, or auto. With dask, a seeded sample of dask_options'
            sample_rows training rows is read (kfp_lifecycle/dask_engine/tables.py).
        dask_options: DaskSettings (kfp_lifecycle/dask_engine/engine.py).
    """
    import json

    from kfp_lifecycle.components.features import FeaturesOptions, fit_feature_selector, logger
    from kfp_lifecycle.components.preprocess import load_preprocessor, save_preprocessor

    settings = FeaturesOptions.model_validate(options)
    fitted, schema = load_preprocessor(preprocessor.path)
    from kfp_lifecycle.dask_engine.steps import read_training_rows

    pipeline, found = fit_feature_selector(
        fitted, read_training_rows(train.path, engine, dask_options), target, task, settings
    )
    save_preprocessor(selected.path, pipeline, schema)
    with open(report.path, "w") as handle:
        json.dump(found.to_dict(), handle, indent=2)
    selected.metadata.update({"inputs": schema.names, "features": len(found.kept)})
    report.metadata.update({"kept": len(found.kept), "dropped": len(found.dropped)})
    logger.info(
        f"features: kept {len(found.kept)}, dropped {len(found.dropped)} "
        f"({', '.join(found.methods) or 'no methods'})"
    )
