"""Validate with Dask: the checks and the data contract of components/validate.py, with every
count, null rate, range and category list computed exactly over all partitions in one pass.

What only a sample can say is taken from a seeded sample (`sample_rows`), and the report
says so with its size: the task detection, each column's kind and uniqueness, the column
warnings, and the check of the table against the champion's contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from kfp_lifecycle.components.validate import (
    MAX_CONTRACT_CATEGORIES,
    ValidationResult,
    check_class_counts,
    column_warnings,
    enforce_contract,
    infer_contract,
    positive_class_for,
)
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import CATEGORICAL, NUMERIC, infer_kind
from kfp_lifecycle.core.tasks import CLASSIFICATION, resolve_metric, resolve_task
from kfp_lifecycle.dask_engine.engine import logger
from kfp_lifecycle.dask_engine.tables import sample_frame


@dataclass
class TableStatistics:
    """Exact over every row, except `sample` (seeded, at most `sample_rows` rows)."""

    rows: int
    partitions: int
    nulls: dict[str, int]
    minimum: dict[str, float]
    maximum: dict[str, float]
    categories: dict[str, pd.Series]  # column -> value counts (kept when few enough)
    labels: pd.Series | None  # the target's rows per value, as typed (None: too many values)
    distinct_estimate: dict[str, int]  # categorical columns with too many values (HyperLogLog)
    kinds: dict[str, str]
    sample: pd.DataFrame = field(repr=False)

    def sampling(self) -> dict[str, Any]:
        """What a report says about the sample its sampled statistics come from."""
        return {
            "rows": self.rows,
            "partitions": self.partitions,
            "sampled_rows": len(self.sample),
            "exact": "row count, null counts, numeric ranges, category lists and counts",
            "sampled": "column kinds, uniqueness, column warnings, task detection",
        }


def table_statistics(frame: Any, target: str, sample_rows: int, seed: int = 42) -> TableStatistics:
    """One pass over the partitions for the exact statistics, after a sample for the kinds."""
    import dask

    partition_rows = frame.map_partitions(len)
    total = int(partition_rows.sum().compute())
    if total == 0:
        raise DataError("the table has no rows")
    sample = sample_frame(frame, sample_rows, total, seed)
    kinds = {str(c): infer_kind(sample[c]) for c in sample.columns}
    numeric = [c for c in sample.columns if kinds[c] == NUMERIC and c != target]
    categorical = [c for c in sample.columns if kinds[c] == CATEGORICAL or c == target]
    few = [c for c in categorical if sample[c].nunique() <= MAX_CONTRACT_CATEGORIES]
    many = [c for c in categorical if c not in few]
    work = {
        "nulls": frame.isna().sum(),
        "minimum": frame[numeric].min() if numeric else None,
        "maximum": frame[numeric].max() if numeric else None,
        "counts": {c: frame[c].dropna().astype(str).value_counts() for c in few},
        "labels": frame[target].dropna().value_counts() if target in few else None,
        "distinct": {c: frame[c].nunique_approx() for c in many},
    }
    (done,) = dask.compute(work)
    logger.info("validate: %s rows in %d partitions, sample of %d", f"{total:,}",
                frame.npartitions, len(sample))  # fmt: skip
    return TableStatistics(
        rows=total,
        partitions=frame.npartitions,
        nulls={str(k): int(v) for k, v in done["nulls"].items()},
        minimum={} if done["minimum"] is None else done["minimum"].astype(float).to_dict(),
        maximum={} if done["maximum"] is None else done["maximum"].astype(float).to_dict(),
        categories=done["counts"],
        labels=done["labels"],
        distinct_estimate={c: int(v) for c, v in done["distinct"].items()},
        kinds=kinds,
        sample=sample,
    )


def validate_statistics(
    stats: TableStatistics,
    target: str,
    task: str = "auto",
    metric: str = "auto",
    positive_class: str = "",
) -> ValidationResult:
    """components/validate.validate_table's checks on the exact statistics; the positive
    class from the exact rows per class, as with pandas."""
    columns = list(stats.nulls)
    if target not in columns:
        raise DataError(f"target column '{target}' not found; columns are: {', '.join(columns)}")
    if len(columns) < 2:
        raise DataError(
            f"the table has only the target column '{target}'; no features to learn from"
        )
    empty = [c for c, n in stats.nulls.items() if n == stats.rows]
    if empty:
        raise DataError(f"column(s) entirely null: {', '.join(empty)}")
    warnings = []
    missing_labels = stats.nulls[target]
    if missing_labels:
        warnings.append(
            f"target '{target}' is missing in {missing_labels} row(s); "
            "they are left out of training"
        )
    labels = stats.sample[target].dropna()
    counts = stats.labels
    distinct = len(counts) if counts is not None else stats.distinct_estimate.get(target, 2)
    if distinct < 2 and labels.nunique() < 2:
        raise DataError(
            f"target '{target}' is constant ({labels.iloc[0]!r}); a model needs at least two values"
        )
    resolved = resolve_task(task, labels)
    if resolved == CLASSIFICATION and counts is not None:
        check_class_counts(counts, pd.api.types.is_numeric_dtype(labels), target)
    # too many values to count (never binary): the sample's counts say as much
    per_class = counts if counts is not None else labels.value_counts()
    positive = positive_class_for(resolved, per_class, target, positive_class)
    warnings += column_warnings(stats.sample, target)
    warnings.append(
        f"validated with the dask engine: counts, null rates, ranges and categories over all "
        f"{stats.rows:,} rows; column kinds and warnings from a sample of {len(stats.sample):,}"
    )
    return ValidationResult(resolved, resolve_metric(metric, resolved), warnings, positive)


def contract_from(stats: TableStatistics, target: str) -> dict:
    """infer_contract's contract, its kinds and uniqueness from the sample and the rest exact."""
    contract = infer_contract(stats.sample, target)
    contract["rows"] = stats.rows
    for name, spec in contract["columns"].items():
        spec["null_rate"] = round(stats.nulls[name] / stats.rows, 6)
        if "min" in spec and name in stats.minimum:
            spec.update(min=stats.minimum[name], max=stats.maximum[name])
        if spec["kind"] == CATEGORICAL:
            counts = stats.categories.get(name)
            if counts is not None and len(counts) <= MAX_CONTRACT_CATEGORIES:
                spec.pop("distinct", None)
                spec["categories"] = sorted(str(v) for v in counts.index)
            elif counts is not None or name in stats.distinct_estimate:
                spec.pop("categories", None)
                spec["distinct"] = len(counts) if counts is not None else (
                    stats.distinct_estimate[name]
                )  # fmt: skip
    contract["sampled"] = stats.sampling()
    return contract


def enforce_on_sample(stats: TableStatistics, contract: dict | None) -> list:
    """The champion's contract checked on the sample: errors stop the run, as with pandas."""
    return enforce_contract(stats.sample, contract)
