"""Ingest with Dask: CSV/Parquet files, directories and s3:// prefixes read as partitions in
parallel, stored as partitioned Parquet (one file per partition)."""

from __future__ import annotations

import csv
import hashlib
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from kfp_lifecycle.components.ingest import (
    CANDIDATE_DELIMITERS,
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    _read_local,
)
from kfp_lifecycle.core.bundle import sha256_file
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.dask_engine.engine import DaskSettings, logger
from kfp_lifecycle.dask_engine.tables import write_partitions

SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES


def source_files(source: str) -> list[Path]:
    """The data files of a local source: the file itself, or every CSV/Parquet file of a
    directory (sorted, hidden files skipped). All must be of one format."""
    path = Path(source.removeprefix("file://"))
    if not path.exists():
        raise DataError(f"data source {path} does not exist")
    if path.is_file():
        files = [path]
    else:
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith((".", "_"))
        )  # fmt: skip
        if not files:
            raise DataError(f"directory {path} holds no .csv or .parquet file")
    _one_format([p.name for p in files], str(path))
    return files


def _one_format(names: list[str], where: str) -> str:
    kinds = {"parquet" if Path(n).suffix.lower() in PARQUET_SUFFIXES else "csv" for n in names}
    unknown = [n for n in names if Path(n).suffix.lower() not in SUFFIXES]
    if unknown:
        raise DataError(f"cannot read {unknown[0]}: expected a .csv or .parquet file")
    if len(kinds) > 1:
        raise DataError(f"{where} mixes CSV and Parquet files; keep one format per table")
    return kinds.pop()


def read_source(source: str, settings: DaskSettings) -> tuple[Any, str]:
    """The source as a Dask DataFrame (not yet computed) and the sha256 of what was read.

    Local CSV is cut into `partition_size` blocks; Parquet keeps its files' row groups; each
    object under an s3:// prefix becomes one partition, downloaded by the worker reading it.
    """
    import dask.dataframe as dd

    if source.startswith("s3://"):
        return _read_s3(source)
    files = source_files(source)
    empty = [p for p in files if p.stat().st_size == 0]
    if empty:
        raise DataError(f"data file {empty[0]} is empty")
    if files[0].suffix.lower() in PARQUET_SUFFIXES:
        frame = dd.read_parquet([str(p) for p in files])
    else:
        frame = dd.read_csv(
            [str(p) for p in files],
            sep=_delimiter(files[0]),
            blocksize=settings.partition_size,
            assume_missing=True,  # an int column may have missing values past the first block
            encoding="utf-8-sig",
            sample=1_000_000,
        )
    frame = _tidy(frame, str(files[0]) if len(files) == 1 else source)
    return frame, _files_sha256(files)


def _delimiter(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(64 * 1024).decode("utf-8-sig", errors="ignore")
    try:
        return csv.Sniffer().sniff(head.splitlines()[0], CANDIDATE_DELIMITERS).delimiter
    except (csv.Error, IndexError):
        return ","


def _tidy(frame: Any, where: str) -> Any:
    names = [str(c).strip() for c in frame.columns]
    if len(names) == 1 and any(c in names[0] for c in ":; \t|,"):
        raise DataError(
            f"{where} reads as one column named {names[0]!r}: the delimiter looks wrong "
            "(supported: , ; tab |)"
        )
    return frame.rename(columns=dict(zip(frame.columns, names, strict=True)))


def _files_sha256(files: list[Path]) -> str:
    """One file: its sha256 (as the pandas engine records). Several: the sha256 of the list
    of (name, sha256) lines, so a changed, added or removed file changes it."""
    if len(files) == 1:
        return sha256_file(files[0])
    listing = "".join(f"{p.name}\t{sha256_file(p)}\n" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def _read_s3(source: str) -> tuple[Any, str]:
    import dask
    import dask.dataframe as dd

    from kfp_lifecycle.storage import parse_s3_uri, s3_client

    bucket, prefix = parse_s3_uri(source)
    objects = [
        item for item in s3_client().list_objects(bucket, prefix=prefix, recursive=True)
        if not item.is_dir and Path(item.object_name).suffix.lower() in SUFFIXES
    ]  # fmt: skip
    if not objects:
        raise DataError(f"no .csv or .parquet object under {source}")
    _one_format([item.object_name for item in objects], source)
    keys = sorted(item.object_name for item in objects)
    first = _read_s3_object(bucket, keys[0])
    parts = [dask.delayed(_read_s3_object)(bucket, key, first.dtypes) for key in keys]
    listing = "".join(f"{item.object_name}\t{item.etag}\t{item.size}\n" for item in objects)
    frame = dd.from_delayed(parts, meta=first.iloc[:0], verify_meta=False)
    return _tidy(frame, source), hashlib.sha256(listing.encode()).hexdigest()


def _read_s3_object(bucket: str, key: str, dtypes: pd.Series | None = None) -> pd.DataFrame:
    """One object, downloaded to a temporary file and read as the pandas engine reads it."""
    from kfp_lifecycle.storage import download_file, s3_client

    with tempfile.TemporaryDirectory(prefix="kfp-lifecycle-dask-ingest-") as directory:
        path = Path(directory) / Path(key).name
        download_file(s3_client(), bucket, key, path)
        frame = _read_local(path)
    if dtypes is not None:
        if list(frame.columns) != list(dtypes.index):
            raise DataError(f"s3://{bucket}/{key} has other columns than the first object")
        frame = frame.astype(dtypes.to_dict(), errors="ignore")
    return frame


def ingest_table(source: str, destination: str | Path, settings: DaskSettings) -> dict[str, Any]:
    """Read the source as partitions and store them as partitioned Parquet under
    `destination`; returns rows, columns, partitions and the source's sha256."""
    frame, sha256 = read_source(source, settings)
    logger.info("ingest: %s as %d partition(s)", source, frame.npartitions)
    rows = write_partitions(frame, destination, "ingest")
    if sum(rows) == 0:
        raise DataError(f"data source {source} has a header but no rows")
    return {
        "rows": sum(rows),
        "columns": len(frame.columns),
        "partitions": len(rows),
        "sha256": sha256,
    }


PREVIEW_ROWS = 10_000


def preview(source: str, rows: int = PREVIEW_ROWS) -> pd.DataFrame:
    """The first rows of the source's first file (for checks before a run starts)."""
    if source.startswith("s3://"):
        frame, _ = _read_s3(source)
        return frame.head(rows, npartitions=1, compute=True)
    first = source_files(source)[0]
    if first.suffix.lower() in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(first).iter_batches(batch_size=rows), None)
        if batch is None:
            raise DataError(f"data file {first} has no rows")
        frame = batch.to_pandas()
    else:
        frame = pd.read_csv(first, sep=_delimiter(first), nrows=rows, encoding="utf-8-sig")
    if frame.empty:
        raise DataError(f"data file {first} has a header but no rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame
