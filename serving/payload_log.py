"""The request log: every predicted row, written in batches as Parquet, partitioned by date.

    <LIFECYCLE_PAYLOAD_LOG_URI>/<model>/date=YYYY-MM-DD/<HHMMSS>-<id>.parquet

One row per predicted input row: request id, the row's index in the request, timestamp
(UTC), model name and version, the input columns (typed as the bundle's schema), the
prediction and, for classifiers, one probability column per class. The monitoring pipeline
reads it back with `read_payload_log`.

A prediction never waits for the log and never fails because of it: the request thread only
puts the batch on a bounded queue (a full queue drops it, counted); a background thread
writes files, retries a failed write a few times, then drops it (counted). Configured by
environment variables (unset URI: no logging):

    LIFECYCLE_PAYLOAD_LOG_URI            a directory, file:// or s3://bucket/prefix
    LIFECYCLE_PAYLOAD_LOG_BATCH_ROWS     rows per file at most (default 1000)
    LIFECYCLE_PAYLOAD_LOG_FLUSH_SECONDS  a partial batch is written after this (default 10)
    LIFECYCLE_PAYLOAD_LOG_QUEUE_ROWS     rows waiting at most before new ones drop (100000)
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import prometheus_client

from kfp_lifecycle.core.bundle import Prediction
from kfp_lifecycle.core.errors import DataError

logger = logging.getLogger(__name__)

URI_ENV = "LIFECYCLE_PAYLOAD_LOG_URI"
BATCH_ROWS_ENV = "LIFECYCLE_PAYLOAD_LOG_BATCH_ROWS"
FLUSH_SECONDS_ENV = "LIFECYCLE_PAYLOAD_LOG_FLUSH_SECONDS"
QUEUE_ROWS_ENV = "LIFECYCLE_PAYLOAD_LOG_QUEUE_ROWS"

# The log's columns besides the model's inputs (one source of truth for writer and readers).
REQUEST_ID = "request_id"
ROW = "row"
TIMESTAMP = "timestamp"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
PREDICTION = "prediction"
PROBABILITY_PREFIX = "proba_"
DATE_PARTITION = "date="
WRITE_ATTEMPTS = 3

LOGGED_ROWS = prometheus_client.Counter(
    "kfp_lifecycle_payload_log_rows_total",
    "Predicted rows for the request log by outcome: written, dropped (queue full), "
    "failed (the write failed after retries) or unflushed (still unwritten when a stop's "
    "grace period ran out).",
    ["model_name", "outcome"],
)


def probability_column(label: Any) -> str:
    return f"{PROBABILITY_PREFIX}{label}"


def log_rows(
    frame: pd.DataFrame,
    prediction: Prediction,
    request_id: str,
    model_name: str,
    model_version: str,
    now: datetime | None = None,
) -> pd.DataFrame:
    """The log rows of one request: ids and time first, the inputs, then the outputs."""
    rows = frame.reset_index(drop=True).copy()
    rows.insert(0, REQUEST_ID, request_id)
    rows.insert(1, ROW, range(len(rows)))
    rows.insert(2, TIMESTAMP, pd.Timestamp(now or datetime.now(UTC)))
    rows.insert(3, MODEL_NAME, model_name)
    rows.insert(4, MODEL_VERSION, model_version)
    rows[PREDICTION] = list(prediction.labels)
    if prediction.probabilities is not None:
        for index, label in enumerate(prediction.classes):
            rows[probability_column(label)] = prediction.probabilities[:, index]
    return rows


@dataclass
class LogSettings:
    uri: str
    batch_rows: int = 1000
    flush_seconds: float = 10.0
    queue_rows: int = 100_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LogSettings | None:
        env = os.environ if env is None else env
        uri = env.get(URI_ENV, "").strip()
        if not uri:
            return None
        try:
            settings = cls(
                uri,
                int(env.get(BATCH_ROWS_ENV, cls.batch_rows)),
                float(env.get(FLUSH_SECONDS_ENV, cls.flush_seconds)),
                int(env.get(QUEUE_ROWS_ENV, cls.queue_rows)),
            )
        except ValueError as error:
            raise DataError(f"request log settings: {error}") from None
        for name, value in (
            (BATCH_ROWS_ENV, settings.batch_rows),
            (FLUSH_SECONDS_ENV, settings.flush_seconds),
            (QUEUE_ROWS_ENV, settings.queue_rows),
        ):
            if not value > 0:  # a zero flush interval would spin the writer thread
                raise DataError(f"request log settings: {name} must be above 0, got {value}")
        return settings


class PayloadLogger:
    """Batches request rows in memory and writes them from a background thread."""

    def __init__(self, settings: LogSettings, model_name: str):
        self.settings = settings
        self.model_name = model_name
        self._queue: queue.Queue[pd.DataFrame | None] = queue.Queue()
        self._queued_rows = 0
        self._unwritten = 0  # accepted rows not yet written or given up on
        self._lock = threading.Lock()
        self._writer = _writer_for(settings.uri)
        self._thread = threading.Thread(target=self._run, name="payload-log", daemon=True)
        self._closed = False
        self._thread.start()

    def log(self, rows: pd.DataFrame) -> bool:
        """Queue one request's rows; False (and counted) when the queue is full. Never raises."""
        with self._lock:
            if self._closed or self._queued_rows + len(rows) > self.settings.queue_rows:
                LOGGED_ROWS.labels(self.model_name, "dropped").inc(len(rows))
                return False
            self._queued_rows += len(rows)
            self._unwritten += len(rows)
        self._queue.put_nowait(rows)
        return True

    def close(self, timeout: float = 20.0) -> int:
        """Write what is queued, waiting at most `timeout` seconds (a stop's grace period);
        returns the rows left unwritten, which are counted and logged, never lost silently."""
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
        self._queue.put_nowait(None)
        self._thread.join(timeout)
        with self._lock:
            left = self._unwritten if self._thread.is_alive() else 0
        if left:
            LOGGED_ROWS.labels(self.model_name, "unflushed").inc(left)
            logger.warning(
                "request log: %d row(s) not written within the %gs grace period; dropped",
                left,
                timeout,
            )
        return left

    def _settled(self, rows: int) -> None:
        with self._lock:
            self._unwritten -= rows

    def _run(self) -> None:
        batch: list[pd.DataFrame] = []
        rows = 0
        deadline = time.monotonic() + self.settings.flush_seconds
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                item = ...
            if isinstance(item, pd.DataFrame):
                batch.append(item)
                rows += len(item)
                with self._lock:
                    self._queued_rows -= len(item)
            due = item is None or item is ... or rows >= self.settings.batch_rows
            if due and batch:
                try:
                    self._write(pd.concat(batch, ignore_index=True))
                except Exception as error:  # the thread must outlive any bad batch
                    LOGGED_ROWS.labels(self.model_name, "failed").inc(rows)
                    logger.warning("request log: dropped %d row(s): %s", rows, error)
                self._settled(rows)
                batch, rows = [], 0
            if item is None:
                return
            if due:
                deadline = time.monotonic() + self.settings.flush_seconds

    def _write(self, rows: pd.DataFrame) -> None:
        for day, part in rows.groupby(rows[TIMESTAMP].dt.date):
            name = f"{datetime.now(UTC):%H%M%S}-{uuid.uuid4().hex[:12]}.parquet"
            key = f"{self.model_name}/{DATE_PARTITION}{day.isoformat()}/{name}"
            for attempt in range(WRITE_ATTEMPTS):
                try:
                    self._writer(key, _parquet_bytes(part))
                    LOGGED_ROWS.labels(self.model_name, "written").inc(len(part))
                    break
                except Exception as error:  # the log must never take the server down
                    if attempt == WRITE_ATTEMPTS - 1:
                        LOGGED_ROWS.labels(self.model_name, "failed").inc(len(part))
                        logger.warning(
                            "request log: dropped %d row(s) for %s: %s", len(part), key, error
                        )
                    else:
                        time.sleep(0.2 * 2**attempt)


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _writer_for(uri: str):
    """A function (key, data) -> None writing under the log's root, local or S3."""
    if uri.startswith("s3://"):
        from kfp_lifecycle.storage import S3Config, parse_s3_uri, s3_client, s3_errors

        bucket, prefix = parse_s3_uri(uri)
        # The logger retries whole writes itself; one client retry keeps a failure short.
        client = s3_client(S3Config.from_env(retries=1, connect_timeout=3.0, read_timeout=30.0))

        def put(key: str, data: bytes) -> None:
            full = f"{prefix.rstrip('/')}/{key}" if prefix else key
            with s3_errors(f"writing s3://{bucket}/{full}"):  # one line, no credentials
                client.put_object(bucket, full, io.BytesIO(data), len(data))

        return put
    root = Path(uri.removeprefix("file://"))

    def write(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(data)
        temporary.rename(path)  # readers never see half a file

    return write


def _day(value: str | date) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise DataError(f"request log window: a day is YYYY-MM-DD, not {value!r}") from None


def _days(start: str | date, end: str | date) -> list[str]:
    first, last = _day(start), _day(end)
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def read_payload_log(uri: str, model_name: str, start: str | date, end: str | date) -> pd.DataFrame:
    """Every logged row of `model_name` from day `start` to day `end` (inclusive, UTC days,
    YYYY-MM-DD or dates), oldest first; an empty window gives an empty frame."""
    frames = []
    for day in _days(start, end):
        partition = f"{model_name}/{DATE_PARTITION}{day}/"
        frames += [pd.read_parquet(io.BytesIO(data)) for data in _read_partition(uri, partition)]
    if not frames:
        return pd.DataFrame(columns=[REQUEST_ID, ROW, TIMESTAMP, MODEL_NAME, MODEL_VERSION])
    return pd.concat(frames, ignore_index=True).sort_values([TIMESTAMP, ROW], kind="stable")


def _read_partition(uri: str, partition: str) -> list[bytes]:
    if uri.startswith("s3://"):
        from kfp_lifecycle.storage import list_keys, parse_s3_uri, read_bytes, s3_client

        bucket, prefix = parse_s3_uri(uri)
        client = s3_client()
        base = f"{prefix.rstrip('/')}/{partition}" if prefix else partition
        keys = [k for k in list_keys(client, bucket, base) if k.endswith(".parquet")]
        return [read_bytes(client, bucket, key)[0] for key in sorted(keys)]
    directory = Path(uri.removeprefix("file://")) / partition
    return [path.read_bytes() for path in sorted(directory.glob("*.parquet"))]


def request_id_from(headers: Mapping[str, str] | None) -> str:
    """The caller's id (x-request-id, or the CloudEvent id KServe's logger uses), else new."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    return headers.get("x-request-id") or headers.get("ce-id") or str(uuid.uuid4())
