"""Ingest: read a CSV or Parquet file, or a database table or query, into the Parquet table
every later step reads. Database sources (a URL such as postgresql://host/db?table=events)
are read by kfp_lifecycle.sources.sql, in bounded chunks, optionally in incremental windows."""

import csv
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kfp.dsl import Dataset, Output

from kfp_lifecycle.component import component
from kfp_lifecycle.core.bundle import sha256_file
from kfp_lifecycle.core.errors import DataError

logger = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
CANDIDATE_DELIMITERS = ",;\t|"
# Read under a directory or prefix (.txt, which read_table also takes, is too often a note).
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def table_sources(location: str) -> list[str]:
    """The files `location` stands for: itself if it names a file, else every CSV and Parquet
    file under it (a directory or s3:// prefix, recursively, sorted). Paths with a part that
    starts with "_" or "." are skipped, as Spark and Hive do (_SUCCESS, _retraining/, .crc).
    A database URL stands for itself (kfp_lifecycle.sources.sql)."""
    from kfp_lifecycle.sources.sql import is_sql_source

    if is_sql_source(location):
        return [location]
    if location.startswith("s3://"):
        return _s3_sources(location)
    path = Path(location.removeprefix("file://"))
    if not path.is_dir():
        return [str(path)]  # read_table names it if it does not exist
    found = [
        str(p)
        for p in sorted(path.rglob("*"))
        if p.is_file() and _is_table(p.relative_to(path).as_posix())
    ]
    if not found:
        raise DataError(f"no CSV or Parquet file under {path}")
    return found


def _s3_sources(uri: str) -> list[str]:
    from kfp_lifecycle.storage import list_keys, parse_s3_uri, s3_client

    bucket, key = parse_s3_uri(uri)
    if key.lower().endswith(TABLE_SUFFIXES):
        return [uri]
    prefix = f"{key.rstrip('/')}/" if key.strip("/") else ""  # a folder, not a name's start
    keys = [k for k in list_keys(s3_client(), bucket, prefix) if _is_table(k[len(prefix) :])]
    if not keys:
        raise DataError(f"no CSV or Parquet file under s3://{bucket}/{prefix}")
    return [f"s3://{bucket}/{k}" for k in keys]


def _is_table(relative: str) -> bool:
    parts = PurePosixPath(relative).parts
    hidden = any(part.startswith(("_", ".")) for part in parts)
    return not hidden and relative.lower().endswith(TABLE_SUFFIXES)


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


def read_table(source: str | Path, sql_options: dict | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file (local or s3://) or a database source (see module docstring);
    every failure names the source and the fault."""
    from kfp_lifecycle.sources.sql import is_sql_source, read_sql

    if is_sql_source(str(source)):
        return read_sql(str(source), sql_options)
    with local_copy(str(source)) as path:
        return _read_local(path)


def read_source_chunks(
    source: str, chunk_rows: int = 100_000, sql_options: dict | None = None
) -> Iterator[pd.DataFrame]:
    """The source's rows in DataFrames of at most `chunk_rows` rows, for batch work (scoring).

    Database sources and Parquet files stream with memory bounded by a chunk; a CSV file is
    read whole, then handed out in slices.
    """
    from kfp_lifecycle.sources.sql import is_sql_source, read_sql_chunks

    if is_sql_source(source):
        yield from read_sql_chunks(source, {**(sql_options or {}), "chunk_rows": chunk_rows})
        return
    with local_copy(source) as path:
        if path.suffix.lower() in PARQUET_SUFFIXES and path.is_file():
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
            return
        frame = _read_local(path)
    for start in range(0, len(frame), chunk_rows):
        yield frame.iloc[start : start + chunk_rows].reset_index(drop=True)


def ingest_table(
    source: str,
    destination: str | Path,
    sql_options: dict | None = None,
    state_location: str | None = None,
) -> dict[str, Any]:
    """Read the source once, store it as Parquet; returns its size and the source's sha256
    (for a database, the stored Parquet's, and the window read)."""
    from kfp_lifecycle.sources.sql import ingest_sql, is_sql_source

    if is_sql_source(source):
        return ingest_sql(source, destination, sql_options, state_location)
    with local_copy(source) as path:
        frame = _read_local(path)
        to_parquet(frame, destination)
        return {"rows": len(frame), "columns": frame.shape[1], "sha256": sha256_file(path)}


def _read_local(path: Path) -> pd.DataFrame:
    suffix = _check_file(path)
    frame = pd.read_parquet(path) if suffix in PARQUET_SUFFIXES else _read_csv(path)
    if frame.empty:
        raise DataError(f"data file {path} has a header but no rows")
    return _checked_columns(frame, path)


def iter_chunks(
    path: Path,
    rows: int,
    text_columns: tuple[str, ...] = (),
    columns: tuple[str, ...] | None = None,
) -> Iterator[pd.DataFrame]:
    """A local CSV or Parquet file as frames of at most `rows` rows, never more in memory.

    Parquet is read batch by batch (pyarrow), CSV with pandas' chunked reader, with the same
    checks as read_table. A CSV's types are inferred per chunk; `text_columns` (keys) are
    read as text in every chunk so that they keep one type (and their leading zeros).
    `columns`, when given, are the only ones a Parquet file is read for (those of them it
    has): a wide table costs no more than the columns asked for. A CSV is parsed whole per
    chunk (its one-column check names a wrong delimiter, which a column filter would hide).
    """
    suffix = _check_file(path)
    wanted = None if columns is None else set(columns)
    if suffix in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as parquet:
            if parquet.metadata.num_rows == 0:
                raise DataError(f"data file {path} has a header but no rows")
            names = parquet.schema_arrow.names
            kept = names if wanted is None else [n for n in names if n.strip() in wanted]
            for batch in parquet.iter_batches(batch_size=rows, columns=kept):
                yield _checked_columns(batch.to_pandas(), path)
        return
    delimiter = _sniff_delimiter(path)
    dtype = dict.fromkeys(text_columns, "string")
    with _csv_errors(path):
        # round_trip: a number reads the same whether its chunk's column is numeric (the
        # C parser) or not (text, then pd.to_numeric), so chunking never moves a value.
        reader = pd.read_csv(
            path,
            sep=delimiter,
            encoding="utf-8-sig",
            chunksize=rows,
            dtype=dtype or None,
            float_precision="round_trip",
        )
        with reader:
            empty = True
            for frame in reader:
                empty = False
                yield _checked_columns(frame, path)
    if empty:
        raise DataError(f"data file {path} has a header but no rows")


def _check_file(path: Path) -> str:
    """The file's suffix, once it is known to exist, hold something and be a table."""
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty")
    suffix = path.suffix.lower()
    if suffix not in PARQUET_SUFFIXES + CSV_SUFFIXES:
        raise DataError(f"cannot read {path}: expected a .csv or .parquet file")
    return suffix


def _checked_columns(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    if frame.shape[1] == 1 and path.suffix.lower() in CSV_SUFFIXES:
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
    delimiter = _sniff_delimiter(path)
    with _csv_errors(path):
        return pd.read_csv(path, sep=delimiter, encoding="utf-8-sig", low_memory=False)


def _sniff_delimiter(path: Path) -> str:
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
        return csv.Sniffer().sniff(text.splitlines()[0], CANDIDATE_DELIMITERS).delimiter
    except (csv.Error, IndexError):
        return ","


@contextmanager
def _csv_errors(path: Path) -> Iterator[None]:
    """pandas' CSV failures as one line naming the file."""
    try:
        yield
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
    sql_options: dict = {},  # noqa: B006
    registry: str = "",
    model_name: str = "",
    engine: str = "pandas",
    dask_options: dict = {},  # noqa: B006
    dask_scheduler: str = "",
) -> str:
    """Read the training data and store it as Parquet.

    Args:
        source: Path, file:// or s3:// URI of a CSV or Parquet file (S3 settings from the
            environment: see kfp_lifecycle/storage.py), or a database URL without password
            (postgresql://host/db?table=events, sqlite:///file.db?table=t, any SQLAlchemy
            URL); its password comes from LIFECYCLE_DB_PASSWORD (the Secret kfp-lifecycle-db).
            With engine dask, also a directory or an s3:// prefix of CSV or Parquet files,
            read as partitions.
        dataset: The table as Parquet (with engine dask, a directory of Parquet partitions).
        sql_options: For a database: table or query, watermark, since/until, incremental,
            chunk_rows (kfp_lifecycle.sources.sql.SqlOptions).
        registry: With `incremental`, the state of the last window read is kept beside it.
        model_name: Names that state.
        engine: pandas, dask, or auto (dask from a size: kfp_lifecycle/dask_engine/engine.py).
        dask_options: DaskSettings (dask_engine/engine.py): scheduler_address (else a
            LocalCluster per step), n_workers, memory_per_worker, sample_rows.
        dask_scheduler: tcp://host:8786 of a running Dask scheduler, e.g. the training-dask
            pipeline's cluster step's output; overrides dask_options' scheduler_address.
            Empty: that, else the DASK_SCHEDULER_ADDRESS variable, else a LocalCluster.

    Returns:
        The sha256 of the source file (of the stored Parquet, for a database), kept in the
        model's lineage; the dataset's metadata records the window read.
    """
    from kfp_lifecycle.components.ingest import ingest_table, logger
    from kfp_lifecycle.dask_engine.steps import uses_dask
    from kfp_lifecycle.sources.sql import is_sql_source, mask_url, state_location

    state = sql_options.get("state") or (
        state_location(registry, model_name) if registry and model_name else None
    )
    if not is_sql_source(source) and uses_dask(engine, source):
        from kfp_lifecycle.dask_engine import steps

        stored = steps.ingest(source, dataset.path, dask_options, dask_scheduler)
    else:
        stored = ingest_table(source, dataset.path, sql_options, state)
    shown = mask_url(source)
    metadata = {"rows": stored["rows"], "columns": stored["columns"], "source": shown}
    if "window" in stored:
        metadata["window"] = stored["window"]
    dataset.metadata.update(metadata)
    logger.info(f"ingested {stored['rows']} rows x {stored['columns']} columns from {shown}")
    return stored["sha256"]
