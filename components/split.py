"""Split: train/validation/test partitions that never share a row, a group or a future.

Four strategies: stratified on the target (classification; regression falls back to random),
random, by group (no group on two sides) and by time (train before validation before test).
After every split a guard hashes each row (features and target) and fails when the same row
sits in two partitions, which would grade the model on rows it was trained on.
"""

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Output
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    StratifiedKFold,
    TimeSeriesSplit,
    train_test_split,
)

from kfp_lifecycle.component import component
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION

logger = logging.getLogger(__name__)

STRATIFIED, RANDOM, GROUP, TIME = "stratified", "random", "group", "time"
PARTITIONS = ("train", "validation", "test")
MAX_EXAMPLES = 5
# Training needs the sum of the held-out shares to leave at least this much.
MIN_TRAIN_FRACTION = 0.1


class SplitOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: Literal["stratified", "random", "group", "time"] = Field(
        STRATIFIED,
        description="stratified on the target (random for regression), random, group (needs "
        "group_column) or time (needs time_column).",
    )
    validation_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of rows (of groups, for a group split) for validation."
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of rows (of groups, for a group split) for test."
    )
    seed: int = Field(42, description="Random seed, so a rerun gives the same split.")
    group_column: str | None = Field(
        None, description="Column whose values (e.g. customer id) never span two partitions."
    )
    time_column: str | None = Field(
        None, description="Timestamp column: train is oldest, test newest."
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_options(cls, data: Any) -> Any:
        if isinstance(data, dict) and "cv_folds" in data:
            raise ValueError(
                "cv_folds is a tuning option now: set models.tune.cv_folds (TuneOptions), "
                "not split.cv_folds; tuning's cross-validation follows this split's strategy"
            )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "SplitOptions":
        if self.validation_fraction + self.test_fraction > 1 - MIN_TRAIN_FRACTION:
            raise ValueError(
                f"validation_fraction ({self.validation_fraction}) + test_fraction "
                f"({self.test_fraction}) leave too little for training; keep their sum at most "
                f"{1 - MIN_TRAIN_FRACTION}"
            )
        if self.strategy == GROUP and not self.group_column:
            raise ValueError("strategy 'group' needs group_column")
        if self.strategy == TIME and not self.time_column:
            raise ValueError("strategy 'time' needs time_column")
        return self


@dataclass
class SplitReport:
    strategy: str  # the one applied: stratified falls back to random for regression
    rows: dict[str, int]
    shares: dict[str, float]
    dropped_missing_target: int = 0
    class_shares: dict[str, dict[str, float]] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    boundaries: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    report: SplitReport

    def partitions(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in PARTITIONS}


def split_table(
    frame: pd.DataFrame,
    target: str,
    task: str,
    options: SplitOptions | None = None,
    **overrides: Any,
) -> Splits:
    """Rows without a target are dropped; each row lands in exactly one partition.

    Keyword overrides (``seed=3``, ``test_fraction=0.3``) are SplitOptions fields, validated
    like the options themselves.
    """
    options = options or SplitOptions()
    if overrides:
        options = SplitOptions.model_validate({**options.model_dump(), **overrides})
    if target not in frame.columns:
        raise DataError(f"target column '{target}' not found in the table to split")
    labelled = frame[frame[target].notna()].reset_index(drop=True)
    strategy = options.strategy
    if strategy == STRATIFIED and task != CLASSIFICATION:
        strategy = RANDOM

    boundaries: dict[str, str] = {}
    if strategy == GROUP:
        train, validation, test = _group_split(labelled, options)
    elif strategy == TIME:
        train, validation, test, boundaries = _time_split(labelled, options)
    else:
        train, validation, test = _shuffled_split(labelled, target, strategy, options)

    splits = Splits(
        train,
        validation,
        test,
        SplitReport(strategy=strategy, rows={}, shares={}, boundaries=boundaries),
    )
    guard_against_leaks(splits, target, options.group_column if strategy == GROUP else None)
    _describe(splits, target, task, options, len(frame) - len(labelled))
    return splits


def _shuffled_split(
    frame: pd.DataFrame, target: str, strategy: str, options: SplitOptions
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    stratify = frame[target] if strategy == STRATIFIED else None
    try:
        rest, test = train_test_split(
            frame, test_size=options.test_fraction, random_state=options.seed, stratify=stratify
        )
        train, validation = train_test_split(
            rest,
            test_size=options.validation_fraction / (1 - options.test_fraction),
            random_state=options.seed,
            stratify=rest[target] if strategy == STRATIFIED else None,
        )
    except ValueError as error:
        raise DataError(f"cannot split {len(frame)} rows on '{target}': {error}") from None
    return train, validation, test


def _group_split(
    frame: pd.DataFrame, options: SplitOptions
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    groups = _required_column(frame, options.group_column, "group_column")
    if groups.isna().any():
        raise DataError(
            f"group_column '{options.group_column}' is missing in {int(groups.isna().sum())} "
            f"row(s) (e.g. row {int(groups.isna().idxmax())}); every row needs a group"
        )
    if groups.nunique() < 3:
        raise DataError(
            f"group_column '{options.group_column}' has {groups.nunique()} distinct value(s); "
            "a group split needs at least 3 (one per partition)"
        )
    first = GroupShuffleSplit(
        n_splits=1, test_size=options.test_fraction, random_state=options.seed
    )
    rest_rows, test_rows = next(first.split(frame, groups=groups))
    rest = frame.iloc[rest_rows]
    second = GroupShuffleSplit(
        n_splits=1,
        test_size=options.validation_fraction / (1 - options.test_fraction),
        random_state=options.seed,
    )
    try:
        train_rows, validation_rows = next(second.split(rest, groups=groups.iloc[rest_rows]))
    except ValueError as error:
        raise DataError(
            f"cannot split the groups of '{options.group_column}' three ways: {error}"
        ) from None
    return rest.iloc[train_rows], rest.iloc[validation_rows], frame.iloc[test_rows]


def _time_split(
    frame: pd.DataFrame, options: SplitOptions
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Oldest rows train, newest test; rows sharing a timestamp stay on one side."""
    name = options.time_column
    times = _as_time(_required_column(frame, name, "time_column"), name)
    order = times.sort_values(kind="stable").index
    frame, times = frame.loc[order], times.loc[order]
    n = len(frame)
    validation_start = times.iloc[
        round(n * (1 - options.validation_fraction - options.test_fraction))
    ]
    test_start = times.iloc[min(round(n * (1 - options.test_fraction)), n - 1)]
    train = frame[times < validation_start]
    validation = frame[(times >= validation_start) & (times < test_start)]
    test = frame[times >= test_start]
    if train.empty or validation.empty:
        raise DataError(
            f"time_column '{name}' has too few distinct times to make three partitions "
            f"({times.nunique()} distinct value(s) in {n} rows)"
        )
    boundaries = {
        "train_end": str(times.loc[train.index].max()),
        "validation_start": str(times.loc[validation.index].min()),
        "validation_end": str(times.loc[validation.index].max()),
        "test_start": str(times.loc[test.index].min()),
    }
    return train, validation, test, boundaries


def _required_column(frame: pd.DataFrame, name: str | None, option: str) -> pd.Series:
    if name not in frame.columns:
        raise DataError(
            f"{option} '{name}' is not a column; columns are: {', '.join(map(str, frame.columns))}"
        )
    return frame[name]


def _as_time(values: pd.Series, name: str) -> pd.Series:
    """Numbers (epochs, years) order as they are; anything else must parse as a date-time."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        parsed = pd.to_datetime(values, errors="coerce", format="mixed", utc=True)
    bad = parsed.isna()
    if bad.any():
        row = int(bad.idxmax())
        raise DataError(
            f"time_column '{name}' has {int(bad.sum())} missing or unreadable value(s), "
            f"e.g. row {row}: {values.loc[row]!r}"
        )
    return parsed


def guard_against_leaks(splits: Splits, target: str, group_column: str | None = None) -> None:
    """Fail when one row (all features and the target equal) or one group is in two partitions."""
    parts = splits.partitions()
    columns = list(splits.train.columns)
    hashes = {
        name: pd.util.hash_pandas_object(part[columns], index=False) for name, part in parts.items()
    }
    for index, left in enumerate(PARTITIONS):
        for right in PARTITIONS[index + 1 :]:
            shared = hashes[left].isin(set(hashes[right]))
            if shared.any():
                examples = ", ".join(str(row) for row in parts[left].index[shared][:MAX_EXAMPLES])
                raise DataError(
                    f"{int(shared.sum())} row(s) of {left} also appear in {right} (identical "
                    f"features and '{target}'), e.g. row(s) {examples} of the table being split; "
                    "the model would be graded on rows it saw in training. Enable duplicate "
                    "removal in the clean step (clean options: drop_duplicates: true)"
                )
            if group_column is not None:
                overlap = set(parts[left][group_column]) & set(parts[right][group_column])
                if overlap:
                    listed = ", ".join(map(repr, sorted(overlap, key=str)[:MAX_EXAMPLES]))
                    raise DataError(
                        f"{len(overlap)} group(s) of '{group_column}' are in both {left} and "
                        f"{right}, e.g. {listed}"
                    )


def _describe(splits: Splits, target: str, task: str, options: SplitOptions, dropped: int) -> None:
    report = splits.report
    parts = splits.partitions()
    total = sum(len(part) for part in parts.values())
    report.rows = {name: len(part) for name, part in parts.items()}
    report.shares = {name: round(len(part) / total, 4) for name, part in parts.items()}
    report.dropped_missing_target = dropped
    if report.strategy == GROUP:
        report.groups = {
            name: int(part[options.group_column].nunique()) for name, part in parts.items()
        }
    if task != CLASSIFICATION:
        return
    describe_classes(
        report,
        target,
        {name: part[target].astype(str).value_counts() for name, part in parts.items()},
    )


def describe_classes(report: SplitReport, target: str, counts: dict[str, pd.Series]) -> None:
    """Class shares per partition from its rows per class (label as text -> rows); fails
    when a class has no training rows, warns when validation or test lack one."""
    classes = sorted(counts["train"][counts["train"] > 0].index.tolist())
    all_classes = set()
    for name, count in counts.items():
        present = count[count > 0]
        shares = present / max(present.sum(), 1)
        report.class_shares[name] = {
            label: round(float(shares.get(label, 0.0)), 4) for label in classes
        }
        all_classes |= set(present.index)
    missing_in_train = sorted(all_classes - set(classes))
    if missing_in_train:
        raise DataError(
            f"class(es) {', '.join(missing_in_train)} of '{target}' have no training rows "
            f"after the {report.strategy} split; the model could never predict them"
        )
    for name in ("validation", "test"):
        absent = [label for label in classes if report.class_shares[name][label] == 0]
        if absent:
            report.warnings.append(
                f"{name} has no rows of class(es) {', '.join(absent)}; its metrics ignore them"
            )


def cv_splitter(
    task: str, folds: int, options: SplitOptions | None = None, seed: int = 42
) -> StratifiedKFold | KFold | GroupKFold | TimeSeriesSplit:
    """The cross-validation that follows the same rules as the train/validation/test split.

    Time: TimeSeriesSplit (each fold trains on the past only; `cross_validation_folds` feeds
    it the distinct timestamps in order). Group: GroupKFold (pass the groups to its split()).
    Otherwise stratified folds for classification, plain shuffled folds for regression.
    """
    options = options or SplitOptions()
    if options.strategy == TIME:
        return TimeSeriesSplit(n_splits=folds)
    if options.strategy == GROUP:
        return GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    if task == CLASSIFICATION:
        return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return KFold(n_splits=folds, shuffle=True, random_state=seed)


def cross_validation_folds(
    frame: pd.DataFrame,
    target: str,
    task: str,
    folds: int,
    options: SplitOptions | None = None,
    seed: int = 42,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training positions, held-out positions) of each fold over the rows of `frame`.

    Every row is held out at most once (a time split never holds out its oldest stretch).
    Group: no group on both sides of a fold. Time: folds are cut between distinct timestamps,
    so every training row of a fold is older than each of its held-out rows.
    """
    options = options or SplitOptions()
    splitter = cv_splitter(task, folds, options, seed)
    positions = np.arange(len(frame))
    if options.strategy == TIME:
        times = _as_time(_required_column(frame, options.time_column, "time_column"),
                         options.time_column).reset_index(drop=True)  # fmt: skip
        distinct = pd.Index(times.unique()).sort_values()
        if len(distinct) <= folds:
            raise DataError(
                f"time_column '{options.time_column}' has {len(distinct)} distinct time(s) "
                f"in the training rows; cv_folds={folds} folds need at least {folds + 1}"
            )
        return [
            (positions[times.isin(distinct[before]).to_numpy()],
             positions[times.isin(distinct[after]).to_numpy()])
            for before, after in splitter.split(distinct)
        ]  # fmt: skip
    groups = None
    if options.strategy == GROUP:
        groups = _required_column(frame, options.group_column, "group_column")
        if groups.isna().any():
            raise DataError(f"group_column '{options.group_column}' is missing in "
                            f"{int(groups.isna().sum())} training row(s)")  # fmt: skip
        if groups.nunique() < folds:
            raise DataError(
                f"group_column '{options.group_column}' has {groups.nunique()} distinct "
                f"group(s) in the training rows; cv_folds={folds} folds need at least {folds}"
            )
    try:
        return list(splitter.split(positions, frame[target], groups))
    except ValueError as error:
        raise DataError(f"cannot make {folds} cross-validation folds: {error}") from None


@component
def split(
    dataset: Input[Dataset],
    target: str,
    task: str,
    train: Output[Dataset],
    validation: Output[Dataset],
    test: Output[Dataset],
    report: Output[Artifact],
    options: dict = {},  # noqa: B006
    engine: str = "pandas",
    dask_options: dict = {},  # noqa: B006
    dask_scheduler: str = "",
):
    """Split the table into train, validation and test partitions that share no row.

    Args:
        dataset: The cleaned table.
        target: Name of the column to predict.
        task: classification or regression (a stratified split needs classes).
        train: Rows used to fit preprocessing, balancing and models (time order for a time
            split).
        validation: Rows used to select the best family and stop boosting early.
        test: Rows held out for the final, honest evaluation.
        report: JSON: strategy applied, rows and shares, class shares per partition, groups
            per partition (group split), time boundaries (time split), warnings.
        options: SplitOptions: strategy (stratified, random, group, time),
            validation_fraction, test_fraction, seed, group_column, time_column.
        engine: pandas, dask, or auto (dask from a size: kfp_lifecycle/dask_engine/engine.py).
        dask_options: DaskSettings (dask_engine/engine.py): scheduler_address (else a
            LocalCluster per step), n_workers, memory_per_worker, sample_rows.
        dask_scheduler: tcp://host:8786 of a running Dask scheduler, e.g. the training-dask
            pipeline's cluster step's output; overrides dask_options' scheduler_address.
            Empty: that, else the DASK_SCHEDULER_ADDRESS variable, else a LocalCluster.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.components.ingest import to_parquet
    from kfp_lifecycle.components.split import SplitOptions, logger, split_table
    from kfp_lifecycle.dask_engine.steps import uses_dask

    settings = SplitOptions.model_validate(options)
    outputs = {"train": train, "validation": validation, "test": test}
    if uses_dask(engine, dataset.path):
        from kfp_lifecycle.dask_engine import steps

        destinations = {name: artifact.path for name, artifact in outputs.items()}
        found = steps.split(
            dataset.path, target, task, destinations, settings, dask_options, dask_scheduler
        )
    else:
        parts = split_table(pd.read_parquet(dataset.path), target, task, settings)
        for name, artifact in outputs.items():
            to_parquet(getattr(parts, name), artifact.path)
        found = parts.report
    for name, artifact in outputs.items():
        artifact.metadata["rows"] = found.rows[name]
    with open(report.path, "w") as handle:
        json.dump(found.to_dict(), handle, indent=2)
    for warning in found.warnings:
        logger.warning(warning)
    rows = found.rows
    logger.info(
        f"split ({found.strategy}): {rows['train']} train, {rows['validation']} "
        f"validation, {rows['test']} test"
    )
