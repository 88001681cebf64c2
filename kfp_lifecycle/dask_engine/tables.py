"""Partitioned Parquet in and out, samples, and the progress lines every Dask step logs."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.dask_engine.engine import logger

PART = "part-{:05d}.parquet"


def read_dataset(path: str | Path) -> Any:
    """A step's Parquet input (one file or a directory of partitions) as a Dask DataFrame."""
    import dask.dataframe as dd

    path = Path(path)
    if not path.exists():
        raise DataError(f"table {path} does not exist")
    return dd.read_parquet(str(path))


def write_partitions(frame: Any, directory: str | Path, step: str) -> list[int]:
    """Write each partition as its own Parquet file under `directory`; rows per partition.

    Partitions are written on the workers as they finish (each is cast to the frame's
    dtypes, so every file has the same Parquet schema); progress is logged along the way.
    """
    import dask
    from distributed import as_completed, get_client

    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory) if directory.is_dir() else directory.unlink()
    directory.mkdir(parents=True)
    dtypes = frame._meta.dtypes.to_dict()
    parts = frame.to_delayed()
    writes = [
        dask.delayed(_write_part)(part, str(directory / PART.format(i)), dtypes)
        for i, part in enumerate(parts)
    ]
    futures = get_client().compute(writes)
    position = {future.key: i for i, future in enumerate(futures)}
    rows = [0] * len(futures)
    tracker = Progress(step, len(futures))
    for future in as_completed(futures):
        rows[position[future.key]] = future.result()
        tracker.done(rows[position[future.key]])
    tracker.finish()
    return rows


def _write_part(part: pd.DataFrame, path: str, dtypes: dict[str, Any]) -> int:
    part.astype(dtypes).to_parquet(path, index=False)
    return len(part)


def copy_table(source: str | Path, destination: str | Path) -> None:
    """An output identical to an input table (a file or a directory of partitions)."""
    source, destination = Path(source), Path(destination)
    if source.is_dir():
        shutil.copytree(source, destination, dirs_exist_ok=True)
    else:
        shutil.copyfile(source, destination)


def sample_frame(frame: Any, rows: int, total: int, seed: int = 42) -> pd.DataFrame:
    """About `rows` rows chosen by a seeded hash of each row (every row when the table has
    no more), so a later step can tell which rows a statistic was fitted on (`in_sample`)."""
    if total <= rows:
        return frame.compute().reset_index(drop=True)
    fraction = rows / total
    chosen = frame.map_partitions(lambda part: part[in_sample(part, fraction, seed)])
    return chosen.compute().reset_index(drop=True)


def in_sample(part: pd.DataFrame, fraction: float, seed: int = 42) -> np.ndarray:
    """Whether each row is in sample_frame's sample of this share of the rows."""
    key = hashlib.sha256(f"sample-{seed}".encode()).hexdigest()[:16]
    hashes = pd.util.hash_pandas_object(part, index=False, hash_key=key).to_numpy()
    return hashes / float(2**64) < fraction


class Progress:
    """Logs `step: k/n partitions, r rows` about every tenth of the partitions."""

    def __init__(self, step: str, partitions: int):
        self.step, self.partitions = step, partitions
        self.finished, self.rows = 0, 0
        self.started = time.monotonic()
        self.every = max(1, partitions // 10)

    def done(self, rows: int) -> None:
        self.finished += 1
        self.rows += rows
        if self.finished % self.every == 0 and self.finished < self.partitions:
            logger.info(
                "%s: %d/%d partitions, %s rows", self.step, self.finished, self.partitions,
                f"{self.rows:,}",
            )  # fmt: skip

    def finish(self) -> None:
        logger.info(
            "%s: %d/%d partitions, %s rows (%.1f s)", self.step, self.finished,
            self.partitions, f"{self.rows:,}", time.monotonic() - self.started,
        )  # fmt: skip


def partition_rows(frame: Any) -> list[int]:
    """Rows of each partition (one pass over the data)."""
    return [int(n) for n in frame.map_partitions(len).compute()]


def read_sample(path: str | Path, rows: int, seed: int = 42) -> pd.DataFrame:
    """sample_frame's rows of a Parquet table, read one partition at a time with no cluster
    (for steps that only need a sample: feature selection, balancing's statistics)."""
    import pyarrow.parquet as pq

    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    total = sum(pq.read_metadata(file).num_rows for file in files)
    if total <= rows:
        return pd.read_parquet(path)
    fraction = rows / total
    parts = []
    for file in files:
        part = pd.read_parquet(file)
        parts.append(part[in_sample(part, fraction, seed)])
    logger.info("read a sample of %s of %s rows from %d partitions", f"{sum(map(len, parts)):,}",
                f"{total:,}", len(files))  # fmt: skip
    return pd.concat(parts, ignore_index=True)
