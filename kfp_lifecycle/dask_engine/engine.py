"""Which engine a step runs on (pandas, dask, or auto by size) and the Dask cluster settings."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kfp_lifecycle.core.errors import DataError

PANDAS, DASK, AUTO = "pandas", "dask", "auto"
ENGINES = (PANDAS, DASK, AUTO)
Engine = Literal["pandas", "dask", "auto"]

# auto picks Dask at or above either size. The pandas engine peaks near 3.7 GiB for a
# 1M x 30 table (bench/data_stage.py), so 2M rows or 512 MiB of files (about 2M such rows of
# CSV) is where one step starts to need more than a quarter of a 24 GiB machine.
AUTO_DASK_ROWS = 2_000_000
AUTO_DASK_BYTES = 512 * 2**20

# The one logger of the engine's progress (rows and partitions per step). Steps show it.
logger = logging.getLogger("kfp_lifecycle.dask_engine")


class DaskSettings(BaseModel):
    """Where the Dask work runs, and how much of a table statistics may sample."""

    model_config = ConfigDict(extra="forbid")

    scheduler_address: str | None = Field(
        None,
        description="tcp://host:8786 of a running Dask scheduler (e.g. the Dask Kubernetes "
        "Operator's DaskCluster); unset: each step starts and stops a LocalCluster.",
    )
    n_workers: int = Field(2, ge=1, description="LocalCluster: worker processes.")
    threads_per_worker: int = Field(1, ge=1, description="LocalCluster: threads per worker.")
    memory_per_worker: str = Field(
        "4GiB", description="LocalCluster: memory limit per worker (Dask spills, then pauses)."
    )
    processes: bool = Field(
        True, description="LocalCluster: workers in processes (false: threads of the step)."
    )
    partition_size: str = Field(
        "64MiB", description="Bytes of CSV read per partition (Parquet keeps its row groups)."
    )
    sample_rows: int = Field(
        200_000,
        ge=1_000,
        description="Rows sampled (seeded) where a statistic or a model cannot use every "
        "row: profile plots, category lists, families other than xgboost. Reports say so.",
    )


def log_to_step() -> None:
    """Show the engine's progress lines in a step's log (and so in the CLI)."""
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def resolve_engine(engine: str, data: str | Path) -> str:
    """pandas or dask: `auto` measures `data` (a file, directory or s3:// prefix)."""
    if engine not in ENGINES:
        raise DataError(f"unknown engine '{engine}'; choose one of: {', '.join(ENGINES)}")
    if engine != AUTO:
        return engine
    rows, size = measure(str(data))
    chosen = DASK if rows >= AUTO_DASK_ROWS or size >= AUTO_DASK_BYTES else PANDAS
    logger.info(
        "engine auto: %s (%s rows, %.0f MiB; dask from %d rows or %d MiB)",
        chosen, "?" if rows < 0 else f"{rows:,}", size / 2**20, AUTO_DASK_ROWS,
        AUTO_DASK_BYTES // 2**20,
    )  # fmt: skip
    return chosen


def measure(data: str) -> tuple[int, int]:
    """(rows, bytes) of a table's files: rows from Parquet footers, -1 when unknown (CSV)."""
    if data.startswith("s3://"):
        from kfp_lifecycle.storage import parse_s3_uri, s3_client

        bucket, prefix = parse_s3_uri(data)
        objects = s3_client().list_objects(bucket, prefix=prefix, recursive=True)
        return -1, sum(item.size or 0 for item in objects)
    path = Path(data.removeprefix("file://"))
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    size = sum(p.stat().st_size for p in files if p.exists())
    parquet = [p for p in files if p.suffix.lower() in (".parquet", ".pq")]
    if not parquet:
        return -1, size
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in parquet), size


def settings_from(options: dict | None, scheduler: str = "") -> DaskSettings:
    """Settings from the step's parameters, and the one place a scheduler address is chosen:
    `scheduler` (the dask_scheduler parameter, e.g. the training-dask pipeline's cluster
    step's output) when given, else options' scheduler_address, else the
    DASK_SCHEDULER_ADDRESS variable (how a cluster's pods are pointed at a scheduler), else
    none (open_client starts a LocalCluster)."""
    settings = DaskSettings.model_validate(options or {})
    address = scheduler or settings.scheduler_address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    return settings.model_copy(update={"scheduler_address": address or None})
