"""Ingest: read a CSV or Parquet file into the Parquet table every later step reads."""

import csv
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from kfp.dsl import Dataset, Output

from kfp_lifecycle.component import component
from kfp_lifecycle.core.bundle import sha256_file
from kfp_lifecycle.core.errors import DataError

CSV_SUFFIXES = (".csv", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
CANDIDATE_DELIMITERS = ",;\t|"


@contextmanager
def local_copy(source: str) -> Iterator[Path]:
    """The source as a local file: an s3:// object is downloaded to a temporary directory."""
    if not source.startswith("s3://"):
        yield Path(source.removeprefix("file://"))
        return
    from kfp_lifecycle.storage import download_file, parse_s3_uri, s3_client

    bucket, key = parse_s3_uri(source)
    with tempfile.TemporaryDirectory(prefix="kfp-lifecycle-ingest-") as directory:
        path = Path(directory) / (Path(key).name or "data")
        download_file(s3_client(), bucket, key, path)
        yield path


def read_table(source: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file (local or s3://); every failure names the file and the fault."""
    with local_copy(str(source)) as path:
        return _read_local(path)


def ingest_table(source: str, destination: str | Path) -> dict[str, Any]:
    """Read the source once, store it as Parquet; returns its size and the source's sha256."""
    with local_copy(source) as path:
        frame = _read_local(path)
        to_parquet(frame, destination)
        return {"rows": len(frame), "columns": frame.shape[1], "sha256": sha256_file(path)}


def _read_local(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty")
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        frame = pd.read_parquet(path)
    elif suffix in CSV_SUFFIXES:
        frame = _read_csv(path)
    else:
        raise DataError(f"cannot read {path}: expected a .csv or .parquet file")
    if frame.empty:
        raise DataError(f"data file {path} has a header but no rows")
    if frame.shape[1] == 1 and suffix in CSV_SUFFIXES:
        header = str(frame.columns[0])
        suspects = [c for c in ":; \t|," if c in header]
        if suspects:
            raise DataError(
                f"{path} reads as one column named {header!r}: the delimiter looks wrong "
                f"(found {suspects[0]!r} in the header; supported: , ; tab |)"
            )
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _read_csv(path: Path) -> pd.DataFrame:
    with open(path, "rb") as handle:
        head = handle.read(64 * 1024)
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4:  # not just a multi-byte character cut at the edge
            raise DataError(
                f"{path} is not UTF-8 text (byte {error.start} is "
                f"{head[error.start : error.start + 1]!r}); re-save it as UTF-8"
            ) from None
        text = head[: error.start].decode("utf-8-sig")
    try:
        delimiter = csv.Sniffer().sniff(text.splitlines()[0], CANDIDATE_DELIMITERS).delimiter
    except (csv.Error, IndexError):
        delimiter = ","
    try:
        return pd.read_csv(path, sep=delimiter, encoding="utf-8-sig", low_memory=False)
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error.reason}); re-save it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} has no columns") from None
    except pd.errors.ParserError as error:
        raise DataError(f"cannot parse {path} as CSV: {error}") from None


def to_parquet(frame: pd.DataFrame, destination: str | Path) -> None:
    """Write Parquet; object columns of mixed Python types are stored as text."""
    frame = frame.copy()
    for name in frame.select_dtypes(include="object").columns:
        frame[name] = frame[name].astype("string")
    frame.to_parquet(destination, index=False)


@component
def ingest(
    source: str,
    dataset: Output[Dataset],
    engine: str = "pandas",
    dask_options: dict = {},  # noqa: B006
) -> str:
    """Read the training data and store it as Parquet.

    Args:
        source: Path, file:// or s3:// URI of a CSV or Parquet file (S3 settings from the
            environment: see kfp_lifecycle/storage.py).
        dataset: The table as Parquet (with engine dask, a directory of Parquet partitions).
        engine: pandas, dask, or auto (dask from a size: kfp_lifecycle/dask_engine/engine.py).
        dask_options: DaskSettings (dask_engine/engine.py): scheduler_address (else a
            LocalCluster per step), n_workers, memory_per_worker, sample_rows.

    Returns:
        The sha256 of the source file, kept in the model's lineage.
    """
    from kfp_lifecycle.components.ingest import ingest_table
    from kfp_lifecycle.dask_engine.steps import uses_dask

    if uses_dask(engine, source):
        from kfp_lifecycle.dask_engine import steps

        stored = steps.ingest(source, dataset.path, dask_options)
    else:
        stored = ingest_table(source, dataset.path)
    dataset.metadata.update(
        {"rows": stored["rows"], "columns": stored["columns"], "source": source}
    )
    print(f"ingested {stored['rows']} rows x {stored['columns']} columns from {source}")
    return stored["sha256"]
