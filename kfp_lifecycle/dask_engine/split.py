"""Split with Dask: deterministic and leak-free at any size, by a seeded hash.

- stratified / random: each row's 64-bit hash (all columns, seeded with `seed`) orders the
  rows; up to EXACT_SPLIT_ROWS rows the hashes meet on the client (8 bytes a row) and the
  partitions get exactly the sizes (and, stratified, the per-class sizes) the pandas
  engine's train_test_split gives; above it each row's place comes from where its hash
  falls in [0, 2^64), on the worker, with the shares right in expectation.
- group: the hash of the group value decides for the whole group, so no group spans two
  partitions (shares of groups right in expectation).
- time: boundaries at the same positions of the ordered timestamps as the pandas engine
  (exact up to EXACT_SPLIT_ROWS, approximate quantiles above); equal times stay together.

Identical rows hash alike, so a duplicate can never sit on two sides: the leak guard of the
pandas engine holds by construction, with no pass comparing the partitions.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kfp_lifecycle.components.split import (
    GROUP,
    PARTITIONS,
    RANDOM,
    STRATIFIED,
    TIME,
    SplitOptions,
    SplitReport,
    _as_time,
    describe_classes,
)
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.dask_engine.engine import logger
from kfp_lifecycle.dask_engine.tables import write_partitions

# Up to this many rows the split's sizes are exact (the client holds 8-9 bytes a row).
EXACT_SPLIT_ROWS = 100_000_000
TRAIN, VALIDATION, TEST = 0, 1, 2
SPAN = float(2**64)


def split_table(
    frame: Any, target: str, task: str, destinations: dict[str, str | Path], options: SplitOptions
) -> SplitReport:
    """Write train, validation and test (partitioned Parquet) to `destinations`; the report."""
    import dask

    if target not in frame.columns:
        raise DataError(f"target column '{target}' not found in the table to split")
    strategy = options.strategy
    if strategy == STRATIFIED and task != CLASSIFICATION:
        strategy = RANDOM
    for column, needed in ((options.group_column, GROUP), (options.time_column, TIME)):
        if strategy == needed and column not in frame.columns:
            raise DataError(f"{needed}_column '{column}' is not a column")
    classes = None
    if task == CLASSIFICATION:  # labels travel as small codes into this list
        labels_seen = frame[target].dropna().astype(str).unique().compute()
        classes = sorted(labels_seen.tolist())
    parts = frame.to_delayed()
    keys = dask.compute(
        *[dask.delayed(_keys)(p, target, strategy, options, classes) for p in parts]
    )
    labelled = sum(len(k) for k, _ in keys)
    rows_in = int(frame.map_partitions(len).sum().compute())
    boundaries: dict[str, str] = {}
    if strategy == TIME:
        assignment, boundaries = _time_assignment(keys, options)
    elif strategy == GROUP:
        assignment = [_by_hash_space(k, options) for k, _ in keys]
    elif labelled <= EXACT_SPLIT_ROWS:
        assignment = _exact_assignment(keys, options, stratify=strategy == STRATIFIED)
    else:
        assignment = [_by_hash_space(k, options) for k, _ in keys]
    codes = np.concatenate([lab for _, lab in keys]) if keys else np.empty(0, dtype=np.int16)
    where = np.concatenate(assignment) if assignment else np.empty(0, dtype=np.int8)

    report = SplitReport(strategy=strategy, rows={}, shares={}, boundaries=boundaries)
    for code, name in enumerate(PARTITIONS):
        chosen = [
            dask.delayed(_select)(part, target, assignment[i], code) for i, part in enumerate(parts)
        ]
        import dask.dataframe as dd

        kept = dd.from_delayed(chosen, meta=frame._meta, verify_meta=False)
        report.rows[name] = sum(write_partitions(kept, destinations[name], f"split {name}"))
    total = sum(report.rows.values())
    if not report.rows["train"] or not report.rows["validation"]:
        raise DataError(f"the {strategy} split left train or validation empty ({report.rows})")
    report.shares = {name: round(n / total, 4) for name, n in report.rows.items()}
    report.dropped_missing_target = rows_in - labelled
    if strategy == GROUP:
        report.groups = _groups(options.group_column, parts, assignment)
    if classes is not None:
        describe_classes(report, target, _class_counts(classes, codes, where))
    logger.info("split (%s): %s", strategy, ", ".join(f"{n:,} {k}" for k, n in report.rows.items()))
    return report


def _hash_key(seed: int) -> str:
    return hashlib.sha256(str(seed).encode()).hexdigest()[:16]


def _keys(
    part: pd.DataFrame, target: str, strategy: str, options: SplitOptions, classes: list | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per labelled row: its ordering key (a hash, or a time in ns) and its class's code."""
    part = part[part[target].notna()]
    labels = np.zeros(len(part), dtype=np.int16)
    if classes is not None:
        codes = pd.Categorical(part[target].astype(str), categories=classes).codes
        labels = codes.astype(np.int16)
    if strategy == TIME:
        times = _as_time(part[options.time_column].reset_index(drop=True), options.time_column)
        if pd.api.types.is_datetime64_any_dtype(times):
            times = times.dt.tz_localize(None) if times.dt.tz is not None else times
            return times.astype("int64").to_numpy(), labels
        return times.to_numpy(dtype="float64"), labels
    if strategy == GROUP:
        values = part[[options.group_column]]
        if values[options.group_column].isna().any():
            raise DataError(f"group_column '{options.group_column}' is missing in some rows")
    else:
        values = part
    key = _hash_key(options.seed)
    return pd.util.hash_pandas_object(values, index=False, hash_key=key).to_numpy(), labels


def _by_hash_space(hashes: np.ndarray, options: SplitOptions) -> np.ndarray:
    place = hashes / SPAN
    return np.select(
        [
            place < options.test_fraction,
            place < options.test_fraction + options.validation_fraction,
        ],
        [TEST, VALIDATION],
        TRAIN,
    ).astype(np.int8)


def _allocate(total: int, counts: np.ndarray) -> np.ndarray:
    """Split `total` over classes in proportion to `counts` (largest remainders)."""
    exact = counts * total / counts.sum()
    share = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - share), kind="stable")[: total - share.sum()]:
        share[index] += 1
    return share


def _exact_assignment(
    keys: tuple[tuple[np.ndarray, np.ndarray], ...], options: SplitOptions, stratify: bool
) -> list[np.ndarray]:
    """The sizes of train_test_split (test first, then validation out of the rest)."""
    hashes = np.concatenate([k for k, _ in keys])
    labels = np.concatenate([lab for _, lab in keys])
    n = len(hashes)
    n_test = math.ceil(options.test_fraction * n)
    rest = n - n_test
    n_valid = math.ceil(options.validation_fraction / (1 - options.test_fraction) * rest)
    codes = labels.astype(np.int64) if stratify else np.zeros(n, dtype=np.int64)
    counts = np.bincount(codes)
    test_per = _allocate(n_test, counts)
    valid_per = _allocate(n_valid, counts - test_per)
    order = np.lexsort((np.arange(n), hashes, codes))  # by class, then hash
    rank = np.empty(n, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    rank[order] = np.arange(n) - np.repeat(starts[:-1], counts)
    where = np.full(n, TRAIN, dtype=np.int8)
    where[rank < test_per[codes]] = TEST
    where[(rank >= test_per[codes]) & (rank < test_per[codes] + valid_per[codes])] = VALIDATION
    bounds = np.cumsum([0, *(len(k) for k, _ in keys)])
    return [where[bounds[i] : bounds[i + 1]] for i in range(len(keys))]


def _time_assignment(
    keys: tuple[tuple[np.ndarray, np.ndarray], ...], options: SplitOptions
) -> tuple[list[np.ndarray], dict[str, str]]:
    times = np.concatenate([k for k, _ in keys])
    n = len(times)
    ordered = np.sort(times) if n <= EXACT_SPLIT_ROWS else None
    at = (round(n * (1 - options.validation_fraction - options.test_fraction)),
          min(round(n * (1 - options.test_fraction)), n - 1))  # fmt: skip
    if ordered is not None:
        validation_start, test_start = ordered[at[0]], ordered[at[1]]
    else:
        validation_start, test_start = np.quantile(times, [at[0] / n, at[1] / n])
    assignment = [
        np.select([k >= test_start, k >= validation_start], [TEST, VALIDATION], TRAIN).astype(
            np.int8
        )
        for k, _ in keys
    ]
    where = np.concatenate(assignment)
    if not (where == TRAIN).any() or not (where == VALIDATION).any():
        raise DataError(
            f"time_column '{options.time_column}' has too few distinct times to make three "
            f"partitions ({len(np.unique(times))} distinct value(s) in {n} rows)"
        )

    def shown(values: np.ndarray, pick: Any) -> str:
        value = pick(values)
        is_ns = np.issubdtype(times.dtype, np.integer)
        return str(pd.Timestamp(int(value), tz="UTC")) if is_ns else str(value)

    boundaries = {
        "train_end": shown(times[where == TRAIN], np.max),
        "validation_start": shown(times[where == VALIDATION], np.min),
        "validation_end": shown(times[where == VALIDATION], np.max),
        "test_start": shown(times[where == TEST], np.min) if (where == TEST).any() else "",
    }
    return assignment, boundaries


def _select(part: pd.DataFrame, target: str, where: np.ndarray, code: int) -> pd.DataFrame:
    return part[part[target].notna()][where == code]


def _groups(column: str, parts: list, assignment: list[np.ndarray]) -> dict[str, int]:
    import dask

    def named(part: pd.DataFrame, where: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"group": part[column].to_numpy(), "where": where})

    pieces = [dask.delayed(named)(p, w) for p, w in zip(parts, assignment, strict=True)]
    pairs = pd.concat(dask.compute(*pieces))
    distinct = pairs.drop_duplicates().groupby("where")["group"].nunique()
    return {name: int(distinct.get(code, 0)) for code, name in enumerate(PARTITIONS)}


def _class_counts(classes: list, codes: np.ndarray, where: np.ndarray) -> dict[str, pd.Series]:
    """Rows per class (by its text) in each partition, from the codes in memory."""
    names = np.asarray(classes, dtype=object)
    return {
        name: pd.Series(np.bincount(codes[where == code], minlength=len(classes)), index=names)
        for code, name in enumerate(PARTITIONS)
    }
