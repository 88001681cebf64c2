"""Balance: counter class imbalance in the training rows, and only there.

Validation and test rows never pass through this step, so every score is still measured on
the class mix the model will meet. SMOTE's family needs complete numeric input, but training
rows are raw (text categories, date strings, holes): synthetic rows are made on an imputed,
encoded, standardised copy and turned back into raw rows of the same column types; original
rows are kept exactly as they were.
"""

import logging
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE, SMOTEN, SMOTENC, RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler
from kfp.dsl import Artifact, Dataset, Input, Output
from pydantic import BaseModel, ConfigDict, Field

from kfp_lifecycle.component import component
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import BOOLEAN, CATEGORICAL, DATETIME, infer_kind
from kfp_lifecycle.core.tasks import CLASSIFICATION

logger = logging.getLogger(__name__)

# The training step passes this column as `sample_weight` and never as a feature.
SAMPLE_WEIGHT_COLUMN = "__sample_weight__"
# Each balanced row's position among the input rows (-1 for a synthetic row): the training
# step needs it to give real rows their cross-fitted encodings (see components/train.py).
ORIGIN_COLUMN = "__origin_row__"

AUTO, NONE, SMOTE_FAMILY = "auto", "none", "smote"
OVERSAMPLE, UNDERSAMPLE, CLASS_WEIGHT = "oversample", "undersample", "class_weight"
EPOCH = pd.Timestamp("1970-01-01")


class BalanceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: Literal["auto", "none", "smote", "oversample", "undersample", "class_weight"] = Field(
        AUTO,
        description="auto: smote when the rarest class is below minority_share_threshold, "
        "else none. smote uses SMOTE-NC with categorical columns (SMOTEN when all are). "
        "Regression: auto or none only.",
    )
    # 0.1, not 0.2: on the demo table (minority 0.15) SMOTE-NC lifted recall but left ROC-AUC
    # within noise and worsened log loss (shifted probabilities); the decision threshold is a
    # cheaper way to trade precision for recall. Resample by default only when it is severe.
    minority_share_threshold: float = Field(
        0.1, gt=0, le=0.5, description="auto balances when the rarest class's share is below this."
    )
    k_neighbors: int = Field(
        5, ge=1, description="SMOTE neighbours (lowered when the rarest class has fewer rows)."
    )
    seed: int = Field(42, description="Random seed for resampling.")
    sampling_strategy: (
        Literal["auto", "minority", "not minority", "not majority", "all"]
        | Annotated[float, Field(gt=0, le=1)]
    ) = Field(
        "auto",
        description="imbalanced-learn's sampling_strategy: a class selection, or (binary "
        "only) the minority/majority ratio wanted after resampling, in (0, 1].",
    )


@dataclass
class BalanceReport:
    requested: str
    applied: str  # none, smote, smote_nc, smoten, oversample, undersample, class_weight
    minority_share: float | None
    rows_before: int
    rows_after: int
    synthetic_rows: int = 0
    class_counts_before: dict[str, int] = field(default_factory=dict)
    class_counts_after: dict[str, int] = field(default_factory=dict)
    class_weights: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def balance_training_rows(
    train: pd.DataFrame, target: str, task: str, options: BalanceOptions | None = None
) -> tuple[pd.DataFrame, BalanceReport]:
    """Return the training rows rebalanced (originals first, untouched) and what was done."""
    options = options or BalanceOptions()
    if target not in train.columns:
        raise DataError(f"target column '{target}' not found in the training rows")
    if SAMPLE_WEIGHT_COLUMN in train.columns:
        raise DataError(f"the training rows already have a '{SAMPLE_WEIGHT_COLUMN}' column")
    if train[target].isna().any():
        raise DataError(
            f"{int(train[target].isna().sum())} training row(s) have no '{target}'; "
            "clean the table before balancing"
        )
    train = train.reset_index(drop=True)
    if task != CLASSIFICATION:
        if options.strategy not in (AUTO, NONE):
            raise DataError(
                f"balance strategy '{options.strategy}' needs classes; for {task} use "
                "'none' or 'auto'"
            )
        unchanged = train.assign(**{ORIGIN_COLUMN: np.arange(len(train))})
        return unchanged, BalanceReport(options.strategy, NONE, None, len(train), len(train))

    counts = train[target].value_counts()
    if len(counts) < 2:
        raise DataError(f"the training rows hold one class of '{target}'; nothing to balance")
    report = BalanceReport(
        requested=options.strategy,
        applied=options.strategy,
        minority_share=round(float(counts.min() / len(train)), 4),
        rows_before=len(train),
        rows_after=len(train),
        class_counts_before=_plain_counts(counts),
    )
    strategy = options.strategy
    if strategy == AUTO:
        strategy = (
            SMOTE_FAMILY if report.minority_share < options.minority_share_threshold else NONE
        )
        report.notes.append(
            f"auto: rarest class share {report.minority_share} is "
            f"{'below' if strategy != NONE else 'at or above'} the threshold "
            f"{options.minority_share_threshold}"
        )
        if strategy == SMOTE_FAMILY and counts.min() < 2:
            strategy = OVERSAMPLE
            report.notes.append("auto: a class has one row, too few for SMOTE; oversampling")

    origins = np.arange(len(train))
    if strategy == NONE:
        balanced = train
    elif strategy == CLASS_WEIGHT:
        weights = len(train) / (len(counts) * counts)
        balanced = train.assign(**{SAMPLE_WEIGHT_COLUMN: train[target].map(weights)})
        report.class_weights = {str(label): round(float(w), 6) for label, w in weights.items()}
    elif strategy in (OVERSAMPLE, UNDERSAMPLE):
        balanced, origins = _resample_rows(train, target, strategy, options)
    else:
        balanced, strategy = _smote(train, target, counts, options, report)
        origins = np.concatenate([origins, np.full(len(balanced) - len(train), -1)])
    balanced = balanced.assign(**{ORIGIN_COLUMN: origins})
    report.applied = strategy
    report.rows_after = len(balanced)
    report.synthetic_rows = len(balanced) - len(train) if strategy.startswith("smote") else 0
    report.class_counts_after = _plain_counts(balanced[target].value_counts())
    return balanced, report


def _plain_counts(counts: pd.Series) -> dict[str, int]:
    return {str(label): int(n) for label, n in counts.sort_index().items()}


def _resample_rows(
    train: pd.DataFrame, target: str, strategy: str, options: BalanceOptions
) -> tuple[pd.DataFrame, np.ndarray]:
    """Random over/under-sampling picks whole raw rows, so no value is ever altered."""
    sampler_class = RandomOverSampler if strategy == OVERSAMPLE else RandomUnderSampler
    # imbalanced-learn's "auto" is "not majority" when over-sampling and "not minority" when
    # under-sampling: either way every class ends as large as the majority or the minority.
    sampler = sampler_class(sampling_strategy=options.sampling_strategy, random_state=options.seed)
    positions = np.arange(len(train)).reshape(-1, 1)
    _call(sampler.fit_resample, positions, train[target].to_numpy())
    rows = sampler.sample_indices_
    if strategy == UNDERSAMPLE:
        rows = np.sort(rows)
    return train.iloc[rows].reset_index(drop=True), rows


def _call(fit_resample: Any, features: np.ndarray, labels: np.ndarray) -> Any:
    """imbalanced-learn refuses bad settings (e.g. a ratio for three classes) with ValueError."""
    try:
        return fit_resample(features, labels)
    except ValueError as error:
        raise DataError(f"cannot resample the training rows: {error}") from None


def _smote(
    train: pd.DataFrame,
    target: str,
    counts: pd.Series,
    options: BalanceOptions,
    report: BalanceReport,
) -> tuple[pd.DataFrame, str]:
    smallest = int(counts.min())
    if smallest < 2:
        raise DataError(
            f"class {counts.idxmin()!r} of '{target}' has {smallest} training row; SMOTE needs "
            "at least 2 (use strategy 'oversample')"
        )
    k_neighbors = min(options.k_neighbors, smallest - 1)
    if k_neighbors < options.k_neighbors:
        report.notes.append(
            f"k_neighbors lowered from {options.k_neighbors} to {k_neighbors}: class "
            f"{counts.idxmin()!r} has {smallest} training rows"
        )
    features = train.drop(columns=[target])
    codec = _Codec(features)
    common = {
        "sampling_strategy": options.sampling_strategy,
        "random_state": options.seed,
        "k_neighbors": k_neighbors,
    }
    if not codec.categorical:
        sampler, name = SMOTE(**common), "smote"
    elif not codec.continuous:
        sampler, name = SMOTEN(**common), "smoten"
    else:
        sampler, name = SMOTENC(categorical_features=codec.categorical, **common), "smote_nc"
    encoded, labels = _call(sampler.fit_resample, codec.encode(), train[target].to_numpy())
    synthetic = codec.decode(np.asarray(encoded[len(train) :], dtype=float))
    synthetic.insert(train.columns.get_loc(target), target, labels[len(train) :])
    synthetic = synthetic.astype(train.dtypes.to_dict())
    return pd.concat([train, synthetic], ignore_index=True), name


class _Codec:
    """Raw feature columns <-> a complete float matrix SMOTE can interpolate in.

    Numbers and date-times (as epoch seconds) are median-imputed and standardised, so no
    column dominates the neighbour distance; categories and booleans become integer codes
    with one code for "missing", which decodes back to a missing value.
    """

    def __init__(self, features: pd.DataFrame):
        self.features = features
        self.kinds = {name: infer_kind(features[name]) for name in features.columns}
        self.categorical = [
            i
            for i, name in enumerate(features.columns)
            if self.kinds[name] in (CATEGORICAL, BOOLEAN)
        ]
        self.continuous = [i for i in range(features.shape[1]) if i not in self.categorical]
        self.levels: dict[str, pd.Index] = {}
        self.scale: dict[str, tuple[float, float]] = {}

    def encode(self) -> np.ndarray:
        columns = []
        for name, series in self.features.items():
            if self.kinds[name] in (CATEGORICAL, BOOLEAN):
                codes, self.levels[name] = pd.factorize(series)
                columns.append(np.where(codes < 0, len(self.levels[name]), codes).astype(float))
                continue
            values = _epoch_seconds(series) if self.kinds[name] == DATETIME else series
            values = pd.to_numeric(values, errors="coerce").astype(float)
            median = values.median()
            values = values.fillna(0.0 if np.isnan(median) else median)
            spread = values.std(ddof=0)
            self.scale[name] = (float(values.mean()), float(spread) if spread > 0 else 1.0)
            columns.append(((values - self.scale[name][0]) / self.scale[name][1]).to_numpy())
        return np.column_stack(columns)

    def decode(self, matrix: np.ndarray) -> pd.DataFrame:
        decoded = {}
        for position, (name, series) in enumerate(self.features.items()):
            column = matrix[:, position]
            if name in self.levels:
                levels = self.levels[name]
                codes = np.rint(column).astype(int)
                values = [levels[c] if c < len(levels) else None for c in codes]
                decoded[name] = pd.Series(values, dtype=object)
                continue
            mean, spread = self.scale[name]
            values = pd.Series(column * spread + mean)
            if series.isna().all():  # nothing to interpolate between: stay missing
                values[:] = np.nan
            if self.kinds[name] == DATETIME:
                decoded[name] = _from_epoch_seconds(values, series)
            elif _holds_integers(series):
                decoded[name] = values.round()
            else:
                decoded[name] = values
        return pd.DataFrame(decoded)


def _epoch_seconds(series: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        values = series
    else:
        values = pd.to_datetime(series, errors="coerce", format="mixed")
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return (values - EPOCH) / pd.Timedelta(seconds=1)


def _from_epoch_seconds(seconds: pd.Series, original: pd.Series) -> pd.Series:
    """Date-time columns come back as date-times; date strings as ISO 8601 strings."""
    stamps = EPOCH + pd.to_timedelta(seconds.round(), unit="s")
    if pd.api.types.is_datetime64_any_dtype(original):
        tz = getattr(original.dt, "tz", None)
        return stamps.dt.tz_localize("UTC").dt.tz_convert(tz) if tz is not None else stamps
    return stamps.dt.strftime("%Y-%m-%dT%H:%M:%S").astype(object)


def _holds_integers(series: pd.Series) -> bool:
    values = series.dropna()
    return pd.api.types.is_integer_dtype(series) or bool(
        len(values) and (values == values.round()).all()
    )


def split_balance_columns(
    frame: pd.DataFrame,
) -> tuple[pd.DataFrame, np.ndarray | None, np.ndarray | None]:
    """The rows without the balance step's columns, its weights and the rows' origins
    (None for what it did not add)."""
    extra = [c for c in (SAMPLE_WEIGHT_COLUMN, ORIGIN_COLUMN) if c in frame.columns]
    weights = frame[SAMPLE_WEIGHT_COLUMN].to_numpy() if SAMPLE_WEIGHT_COLUMN in extra else None
    origins = frame[ORIGIN_COLUMN].to_numpy() if ORIGIN_COLUMN in extra else None
    return frame.drop(columns=extra), weights, origins


@component
def balance(
    train: Input[Dataset],
    target: str,
    task: str,
    balanced: Output[Dataset],
    report: Output[Artifact],
    options: dict = {},  # noqa: B006
    engine: str = "pandas",
    dask_options: dict = {},  # noqa: B006
):
    """Rebalance the classes of the training rows (never validation or test rows).

    Args:
        train: The split step's training rows.
        target: Name of the column to predict.
        task: classification or regression (regression rows pass through unchanged).
        balanced: The training rows: originals untouched, then any synthetic or repeated
            rows; with class weights, a __sample_weight__ column the train step uses as
            sample_weight.
        report: JSON: strategy requested and applied, minority share, class counts before
            and after, synthetic rows, class weights, notes.
        options: BalanceOptions: strategy (auto, none, smote, oversample, undersample,
            class_weight), minority_share_threshold, k_neighbors, seed, sampling_strategy.
        engine: pandas, dask, or auto. With dask, a seeded sample of dask_options'
            sample_rows training rows is balanced (the dask engine's
            training uses the real rows instead; kfp_lifecycle/dask_engine/tables.py).
        dask_options: DaskSettings (kfp_lifecycle/dask_engine/engine.py).
    """
    import json

    from kfp_lifecycle.components.balance import BalanceOptions, balance_training_rows, logger
    from kfp_lifecycle.components.ingest import to_parquet
    from kfp_lifecycle.dask_engine.steps import read_training_rows

    rows, result = balance_training_rows(
        read_training_rows(train.path, engine, dask_options),
        target,
        task,
        BalanceOptions.model_validate(options),
    )
    to_parquet(rows, balanced.path)
    with open(report.path, "w") as handle:
        json.dump(result.to_dict(), handle, indent=2)
    balanced.metadata.update({"rows": result.rows_after, "balancing": result.applied})
    logger.info(
        f"balance ({result.applied}): {result.rows_before} -> {result.rows_after} training rows, "
        f"classes {result.class_counts_after or 'n/a'}"
    )
