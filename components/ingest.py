"""Ingest: read a CSV or Parquet file into the Parquet table every later step reads."""

import csv
from pathlib import Path

import pandas as pd
from kfp.dsl import Dataset, Output

from kfp_lifecycle.component import component
from kfp_lifecycle.errors import DataError

CSV_SUFFIXES = (".csv", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
CANDIDATE_DELIMITERS = ",;\t|"


def read_table(source: str | Path) -> pd.DataFrame:
    """Read a local CSV or Parquet file; every failure names the file and what is wrong."""
    path = Path(str(source).removeprefix("file://"))
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
def ingest(source: str, dataset: Output[Dataset]) -> str:
    """Read the training data and store it as Parquet.

    Args:
        source: Path (or file:// URI) of a CSV or Parquet file.
        dataset: The table as Parquet.

    Returns:
        The sha256 of the source file, kept in the model's lineage.
    """
    from kfp_lifecycle.bundle import sha256_file
    from kfp_lifecycle.components.ingest import read_table, to_parquet

    frame = read_table(source)
    to_parquet(frame, dataset.path)
    dataset.metadata.update({"rows": len(frame), "columns": frame.shape[1], "source": source})
    print(f"ingested {len(frame)} rows x {frame.shape[1]} columns from {source}")
    return sha256_file(source.removeprefix("file://"))
