"""Clean: drop exact duplicate rows and rows without a target, before anything is split.

A duplicate that lands on both sides of the split lets the model be graded on rows it was
trained on; removing duplicates here is what keeps the split step's leak guard quiet.
"""

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Output
from pydantic import BaseModel, ConfigDict, Field

from kfp_lifecycle.component import component
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import infinite_as_missing, infinite_counts

logger = logging.getLogger(__name__)

# Enough row numbers for a user to find the pattern in their file, few enough to read.
MAX_EXAMPLES = 5


class CleanOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    drop_duplicates: bool = Field(
        True, description="Remove rows that repeat an earlier row (the first one is kept)."
    )
    duplicate_subset: list[str] | None = Field(
        None,
        min_length=1,
        description="Columns that define a duplicate (e.g. an id); all columns when unset.",
    )


@dataclass
class CleanReport:
    rows_in: int
    rows_out: int
    duplicate_rows: int
    # (dropped row, the earlier row it repeats), as 0-based row numbers of the input table.
    duplicate_examples: list[tuple[int, int]] = field(default_factory=list)
    missing_target_rows: int = 0
    missing_target_examples: list[int] = field(default_factory=list)
    # {column: inf/-inf values}, made missing (NaN) like any value never measured.
    infinite_values: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clean_table(
    frame: pd.DataFrame, target: str, options: CleanOptions | None = None
) -> tuple[pd.DataFrame, CleanReport]:
    """Return the rows worth training on (input order kept, index renumbered) and what went."""
    options = options or CleanOptions()
    if target not in frame.columns:
        raise DataError(
            f"target column '{target}' not found; columns are: {', '.join(map(str, frame.columns))}"
        )
    frame = frame.reset_index(drop=True)
    infinite = infinite_counts(frame)
    if infinite:
        frame = frame.assign(**{name: infinite_as_missing(frame[name]) for name in infinite})

    duplicate = pd.Series(False, index=frame.index)
    examples: list[tuple[int, int]] = []
    if options.drop_duplicates:
        subset = options.duplicate_subset or list(frame.columns)
        unknown = [name for name in subset if name not in frame.columns]
        if unknown:
            raise DataError(
                f"duplicate_subset names column(s) not in the table: {', '.join(unknown)}"
            )
        duplicate = frame.duplicated(subset=subset, keep="first")
        examples = _duplicate_examples(frame[subset], duplicate)

    missing_target = frame[target].isna()
    kept = frame[~duplicate & ~missing_target].reset_index(drop=True)
    if kept.empty:
        raise DataError(
            f"no rows left after cleaning: {int(missing_target.sum())} of {len(frame)} row(s) "
            f"have no '{target}' and {int(duplicate.sum())} repeat an earlier row"
        )
    report = CleanReport(
        rows_in=len(frame),
        rows_out=len(kept),
        duplicate_rows=int(duplicate.sum()),
        duplicate_examples=examples,
        missing_target_rows=int(missing_target.sum()),
        missing_target_examples=frame.index[missing_target][:MAX_EXAMPLES].tolist(),
        infinite_values=infinite,
    )
    return kept, report


def _duplicate_examples(columns: pd.DataFrame, duplicate: pd.Series) -> list[tuple[int, int]]:
    """Pair the first few dropped rows with the earlier row each repeats."""
    dropped = duplicate[duplicate].index[:MAX_EXAMPLES]
    if dropped.empty:
        return []
    hashes = pd.util.hash_pandas_object(columns, index=False)
    first_row = {value: row for row, value in hashes[~duplicate].items()}
    return [(int(row), int(first_row[hashes[row]])) for row in dropped]


@component
def clean(
    dataset: Input[Dataset],
    target: str,
    cleaned: Output[Dataset],
    report: Output[Artifact],
    options: dict = {},  # noqa: B006
    engine: str = "pandas",
    dask_options: dict = {},  # noqa: B006
    dask_scheduler: str = "",
):
    """Remove exact duplicate rows and rows whose target is missing; inf/-inf become missing.

    Args:
        dataset: The ingested table.
        target: Name of the column to predict; rows without it cannot train or test a model.
        cleaned: The remaining rows, in input order.
        report: JSON: rows in and out, duplicates and rows without a target, each with a few
            example row numbers (0-based, in the input table), and the inf/-inf values per
            column that were made missing.
        options: CleanOptions: drop_duplicates (default true) and duplicate_subset (columns
            that define a duplicate; default all).
        engine: pandas, dask, or auto (dask from a size: kfp_lifecycle/dask_engine/engine.py).
        dask_options: DaskSettings (dask_engine/engine.py): scheduler_address (else a
            LocalCluster per step), n_workers, memory_per_worker, sample_rows.
        dask_scheduler: tcp://host:8786 of a running Dask scheduler, e.g. the training-dask
            pipeline's cluster step's output; overrides dask_options' scheduler_address.
            Empty: that, else the DASK_SCHEDULER_ADDRESS variable, else a LocalCluster.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.components.clean import CleanOptions, clean_table, logger
    from kfp_lifecycle.components.ingest import to_parquet
    from kfp_lifecycle.dask_engine.steps import uses_dask

    settings = CleanOptions.model_validate(options)
    if uses_dask(engine, dataset.path):
        from kfp_lifecycle.dask_engine import steps

        result = steps.clean(
            dataset.path, target, cleaned.path, settings, dask_options, dask_scheduler
        )
    else:
        kept, result = clean_table(pd.read_parquet(dataset.path), target, settings)
        to_parquet(kept, cleaned.path)
    with open(report.path, "w") as handle:
        json.dump(result.to_dict(), handle, indent=2)
    cleaned.metadata.update({"rows": result.rows_out})
    logger.info(
        f"clean: {result.rows_in} rows in, {result.duplicate_rows} duplicate(s) and "
        f"{result.missing_target_rows} without '{target}' removed, {result.rows_out} kept"
        + "".join(
            f"; {count} infinite value(s) in '{name}' made missing"
            for name, count in result.infinite_values.items()
        )
    )
