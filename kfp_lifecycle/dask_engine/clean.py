"""Clean with Dask: exact duplicate rows and rows without a target removed across partitions.

Each worker hashes its partition's rows (64-bit, pandas' hash_pandas_object); the hashes
alone (8 bytes a row) meet on the client, which marks every repeat of an earlier row in
partition order, as pandas' duplicated(keep='first') would over the whole table. The
partitions are then filtered where they are and written again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kfp_lifecycle.components.clean import MAX_EXAMPLES, CleanOptions, CleanReport
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.dask_engine.tables import write_partitions


def clean_table(
    frame: Any, target: str, destination: str | Path, options: CleanOptions | None = None
) -> CleanReport:
    """Write the rows worth training on (input order kept) to `destination`; what went."""
    import dask
    import dask.dataframe as dd

    options = options or CleanOptions()
    columns = list(frame.columns)
    if target not in columns:
        raise DataError(f"target column '{target}' not found; columns are: {', '.join(columns)}")
    subset = options.duplicate_subset or columns
    unknown = [name for name in subset if name not in columns]
    if unknown:
        raise DataError(f"duplicate_subset names column(s) not in the table: {', '.join(unknown)}")

    parts = frame.to_delayed()
    summaries = dask.compute(*[dask.delayed(_summarise)(p, subset, target) for p in parts])
    sizes = np.array([len(missing) for _, missing in summaries])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    missing = np.concatenate([m for _, m in summaries]) if len(summaries) else np.empty(0, bool)
    duplicate = np.zeros(len(missing), dtype=bool)
    examples: list[tuple[int, int]] = []
    if options.drop_duplicates:
        hashes = pd.Series(np.concatenate([h for h, _ in summaries]))
        duplicate = hashes.duplicated(keep="first").to_numpy()
        examples = _examples(hashes, duplicate)
    keep = ~duplicate & ~missing
    if not keep.any():
        raise DataError(
            f"no rows left after cleaning: {int(missing.sum())} of {len(keep)} row(s) have no "
            f"'{target}' and {int(duplicate.sum())} repeat an earlier row"
        )
    kept_parts = [
        dask.delayed(_keep)(part, keep[offsets[i] : offsets[i + 1]]) for i, part in enumerate(parts)
    ]
    kept = dd.from_delayed(kept_parts, meta=frame._meta, verify_meta=False)
    rows_out = sum(write_partitions(kept, destination, "clean"))
    return CleanReport(
        rows_in=len(keep),
        rows_out=rows_out,
        duplicate_rows=int(duplicate.sum()),
        duplicate_examples=examples,
        missing_target_rows=int(missing.sum()),
        missing_target_examples=np.flatnonzero(missing)[:MAX_EXAMPLES].tolist(),
    )


def _summarise(part: pd.DataFrame, subset: list[str], target: str) -> tuple[np.ndarray, Any]:
    hashes = pd.util.hash_pandas_object(part[subset], index=False).to_numpy()
    return hashes, part[target].isna().to_numpy()


def _keep(part: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    return part[keep]


def _examples(hashes: pd.Series, duplicate: np.ndarray) -> list[tuple[int, int]]:
    """The first few dropped rows, each with the earlier row it repeats (global row numbers)."""
    dropped = np.flatnonzero(duplicate)[:MAX_EXAMPLES]
    if not len(dropped):
        return []
    wanted = set(hashes.iloc[dropped])
    first = {}
    for row in np.flatnonzero(~duplicate & hashes.isin(wanted).to_numpy()):
        first[hashes.iloc[row]] = int(row)
    return [(int(row), first[hashes.iloc[row]]) for row in dropped]
