"""Score: the champion predicts a table of any size, chunk by chunk, with lineage and drift.

The input is a CSV or Parquet file, or every such file under a directory or s3:// prefix
(ingest.table_sources: `_SUCCESS`-style files skipped). It is read in chunks of
`chunk_rows` rows (Parquet batch by batch, CSV with a chunked reader), so memory stays
bounded by the chunk, not the table. Per chunk: rows that break the model's input schema
go to quarantine with the reason (schema.InputSchema.check_rows), the rest are scored by
predict_chunk, and the chunk is written as one Parquet part. A uniform sample of the rows
read (at most `drift_sample_rows`) is kept for the drift tests and the data contract
checks, the same ones `lifecycle drift` runs (components/drift.py), against the reference
sample and contract kept with the model.

Output (OUTPUT a directory or an s3:// prefix):

    OUTPUT/predictions/part-00000.parquet ...   key column(s) or `row`, prediction,
                                                 proba_<class>..., model_name,
                                                 model_version, scored_at
    OUTPUT/quarantine.parquet                    key column(s) or `row`, the model's input
                                                 columns as text, reason (only when rows
                                                 were quarantined)
    OUTPUT/scoring-summary.json                  the manifest, written last

Nothing half-written looks complete:
- Local: everything is written into a hidden staging directory beside OUTPUT
  (`.NAME.staging-<id>`), manifest included, which is then renamed to OUTPUT in one atomic
  rename. OUTPUT either does not exist or holds a whole run. A killed run leaves only the
  hidden staging directory (safe to delete).
- S3 has no rename. Parts are uploaded under `OUTPUT/_staging-<id>/` (a `_` prefix, which
  Spark, Hive and table_sources skip), copied server-side into place once every chunk has
  been scored, and `scoring-summary.json` is written last: it is the commit marker. A run
  is complete if and only if OUTPUT/scoring-summary.json exists; it lists every part with
  its row count, so a reader can also check that it sees exactly those parts.
"""

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kfp.dsl import Artifact, Metrics, Output
from pydantic import BaseModel, ConfigDict, Field

from kfp_lifecycle.component import component
from kfp_lifecycle.components.drift import DriftOptions, detect_drift, reference_frame
from kfp_lifecycle.components.ingest import iter_chunks, local_copy, table_sources
from kfp_lifecycle.core.bundle import Bundle, sha256_file
from kfp_lifecycle.core.errors import DataError, LifecycleError

logger = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"
QUARANTINE_FILE = "quarantine.parquet"
SUMMARY_FILE = "scoring-summary.json"
ROW_COLUMN = "row"
REASON_COLUMN = "reason"
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "proba_"
# Progress is logged at most this often (and once at the end).
PROGRESS_SECONDS = 10.0


class ScoreOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key_columns: list[str] = Field(
        default_factory=list,
        description="Input columns copied to every output row; none: a `row` number instead.",
    )
    chunk_rows: int = Field(100_000, ge=1, description="Rows read, scored and written at once.")
    max_quarantine_share: float = Field(
        0.01, ge=0, le=1, description="Fail when more than this share of rows is quarantined."
    )
    fail_on_drift: bool = Field(False, description="Fail (publish nothing) on dataset drift.")
    drift_sample_rows: int = Field(
        20_000, ge=100, description="Uniform sample of the rows read, for drift and contract."
    )
    drift: DriftOptions = Field(default_factory=DriftOptions)


class ScoringFailed(LifecycleError):
    """The batch was scored but must not be published (too many bad rows, or drift)."""


def predict_chunk(bundle: Bundle, frame: pd.DataFrame) -> pd.DataFrame:
    """The one place batch predictions happen: `prediction` and one `proba_<class>` column
    per class (classification). `frame` holds rows coerced by InputSchema.check_rows, so its
    columns are what the server's request parsing yields: the compiled fast path predicts
    them (identical to the sklearn pipeline, which stays the fallback)."""
    prediction = bundle.predict_checked(frame)
    columns: dict[str, Any] = {PREDICTION_COLUMN: prediction.labels}
    if prediction.probabilities is not None:
        for index, label in enumerate(prediction.classes):
            columns[f"{PROBABILITY_PREFIX}{label}"] = prediction.probabilities[:, index]
    return pd.DataFrame(columns, index=frame.index)


# --- where the output goes ---------------------------------------------------------------


def check_output(output: str) -> None:
    """Refuse an output that already holds a run: each run publishes a new one, never
    over (or into) an earlier one. Checked again, atomically, when publishing locally."""
    refused = "each scoring run publishes a new one; choose another output"
    if not output.startswith("s3://"):
        path = Path(output.removeprefix("file://")).absolute()
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise DataError(
                f"output {path} already exists and is not an empty directory: {refused}"
            )
        return
    from kfp_lifecycle.storage import exists, list_keys, parse_s3_uri, s3_client

    client = s3_client()
    bucket, prefix = parse_s3_uri(output)
    prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    if exists(client, bucket, prefix + SUMMARY_FILE) or list_keys(
        client, bucket, f"{prefix}{PREDICTIONS_DIR}/"
    ):
        raise DataError(f"output {output} already holds scoring output: {refused}")


class _LocalSink:
    """Write into a hidden staging directory beside OUTPUT; publish = one rename."""

    def __init__(self, output: str):
        self.output = Path(output.removeprefix("file://")).absolute()
        check_output(output)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(
            tempfile.mkdtemp(prefix=f".{self.output.name}.staging-", dir=self.output.parent)
        )
        (self.staging / PREDICTIONS_DIR).mkdir()

    @property
    def location(self) -> str:
        return str(self.output)

    def local_path(self, name: str) -> Path:
        return self.staging / name

    def stored(self, name: str) -> None:
        """The file at local_path(name) is complete (nothing to do: it is in place)."""

    def publish(self, summary: dict[str, Any]) -> None:
        (self.staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        os.chmod(self.staging, 0o755)  # mkdtemp makes it 0700
        try:
            os.rename(self.staging, self.output)  # onto an empty directory too
        except OSError as error:
            raise DataError(f"cannot publish to {self.output}: {error.strerror}") from None

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


class _S3Sink:
    """Upload parts under OUTPUT/_staging-<id>/; publish = copy into place, manifest last."""

    def __init__(self, output: str):
        from kfp_lifecycle.storage import parse_s3_uri, s3_client

        check_output(output)
        self.client = s3_client()
        self.bucket, prefix = parse_s3_uri(output)
        self.prefix = prefix.strip("/")
        self.staging = f"_staging-{uuid.uuid4().hex[:12]}"
        self.scratch = Path(tempfile.mkdtemp(prefix="kfp-lifecycle-score-"))
        self.uploaded: list[str] = []

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def local_path(self, name: str) -> Path:
        path = self.scratch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def stored(self, name: str) -> None:
        """Upload the finished file at local_path(name) to the staging prefix, then drop it."""
        from kfp_lifecycle.storage import upload_file

        path = self.scratch / name
        upload_file(self.client, path, self.bucket, self._key(f"{self.staging}/{name}"))
        self.uploaded.append(name)
        path.unlink()

    def publish(self, summary: dict[str, Any]) -> None:
        from kfp_lifecycle.storage import copy_key, put_bytes

        for name in self.uploaded:
            copy_key(self.client, self.bucket, self._key(f"{self.staging}/{name}"), self._key(name))
        data = (json.dumps(summary, indent=2) + "\n").encode()
        put_bytes(self.client, self.bucket, self._key(SUMMARY_FILE), data)  # the commit marker
        self.discard()

    def discard(self) -> None:
        from kfp_lifecycle.storage import remove_keys

        shutil.rmtree(self.scratch, ignore_errors=True)
        try:
            staged = [self._key(f"{self.staging}/{name}") for name in self.uploaded]
            remove_keys(self.client, self.bucket, staged)
        except LifecycleError as error:  # the staging prefix is hidden: a leftover is harmless
            logger.warning("could not remove %s: %s", self.staging, error)


def _sink(output: str) -> _LocalSink | _S3Sink:
    return _S3Sink(output) if output.startswith("s3://") else _LocalSink(output)


# --- the run -----------------------------------------------------------------------------


@dataclass
class _Sample:
    """A uniform random sample of at most `size` rows of everything added (reservoir by
    random keys: the rows with the `size` smallest keys)."""

    size: int
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    frame: pd.DataFrame | None = None
    keys: np.ndarray = field(default_factory=lambda: np.empty(0))

    def add(self, frame: pd.DataFrame) -> None:
        keys = self.rng.random(len(frame))
        if self.frame is not None and len(self.frame) >= self.size:
            keep = keys < self.keys.max()
            frame, keys = frame[keep], keys[keep]
        if frame.empty:
            return
        both = frame if self.frame is None else pd.concat([self.frame, frame], ignore_index=True)
        keys = np.concatenate([self.keys, keys])
        if len(both) > self.size:
            kept = np.sort(np.argpartition(keys, self.size)[: self.size])
            both, keys = both.iloc[kept].reset_index(drop=True), keys[kept]
        elif self.frame is None:  # the sample is numbered from 0, whatever `frame` was
            both = both.reset_index(drop=True)
        self.frame, self.keys = both, keys


@dataclass
class _Progress:
    """Rows scored, rate and ETA in the log, at most every PROGRESS_SECONDS."""

    files: int
    started: float = field(default_factory=time.perf_counter)
    last: float = 0.0

    def update(self, rows: int, file_index: int, file_fraction: float, final: bool = False):
        now = time.perf_counter()
        if not final and now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        elapsed = now - self.started
        rate = rows / elapsed if elapsed > 0 else 0.0
        done = min((file_index + file_fraction) / self.files, 1.0)
        eta = f", ETA {elapsed * (1 - done) / done:.0f} s" if 0 < done < 1 else ""
        logger.info("scored %d rows (%.0f rows/s, %.0f%% of the input%s)", rows, rate,
                    100 * done, eta)  # fmt: skip


def _expected_rows(path: Path) -> int:
    """Rows in a file, for the ETA: exact for Parquet, estimated from a CSV's first MiB."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as handle:
        head = handle.read(1 << 20)
    return max(1, round(path.stat().st_size * max(head.count(b"\n"), 1) / max(len(head), 1)))


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - since
        return now


def score_batch(
    model: str, data: str, output: str, options: ScoreOptions | None = None
) -> dict[str, Any]:
    """Score every row of `data` with `model` (a bundle directory, s3:// version URI or
    REGISTRY/MODEL@ALIAS or @VERSION) and publish the predictions to `output` (a new or
    empty directory, or an s3:// prefix without scoring output); returns the manifest.

    Raises ScoringFailed, publishing nothing, when more than `max_quarantine_share` of the
    rows break the model's input schema, or on dataset drift with `fail_on_drift`."""
    from kfp_lifecycle.registry import load_version, model_version_of, resolve_reference

    options = options or ScoreOptions()
    timer, clock, began = _Timer(), time.perf_counter(), time.perf_counter()
    started_at = datetime.now(UTC)
    uri = resolve_reference(model)
    sources = table_sources(data)
    sink = _sink(output)
    run = None
    try:
        with tempfile.TemporaryDirectory(prefix="kfp-lifecycle-model-") as workdir:
            bundle = load_version(uri, workdir)
        metadata = bundle.metadata
        clock = timer.add("load_model", clock)
        run = _Run(bundle, options, sink, started_at, len(sources), timer)
        for index, source in enumerate(sources):
            run.score_file(source, index)
        summary = run.finish(model, uri, model_version_of(metadata), data, began)
        sink.publish(summary)
    except BaseException:
        if run is not None:
            run.writer.shutdown(wait=True, cancel_futures=True)  # before its files go
        sink.discard()
        raise
    logger.info(
        "published %d scored rows (%d quarantined) to %s",
        summary["rows"]["scored"],
        summary["rows"]["quarantined"],
        sink.location,
    )
    return summary


class _Run:
    """The state of one scoring run: counters, the output parts, the drift sample."""

    def __init__(
        self,
        bundle: Bundle,
        options: ScoreOptions,
        sink: _LocalSink | _S3Sink,
        started_at: datetime,
        files: int,
        timer: _Timer,
    ):
        self.bundle, self.options, self.sink, self.timer = bundle, options, sink, timer
        self.schema = bundle.schema
        metadata = bundle.metadata
        self.model_name = str(metadata.get("model_name") or metadata["family"])
        from kfp_lifecycle.registry import model_version_of

        self.model_version = model_version_of(metadata)
        self.scored_at = pd.Timestamp(started_at)
        self.rows_read = self.rows_scored = self.rows_quarantined = 0
        self.inputs: list[dict[str, Any]] = []
        self.parts: list[dict[str, Any]] = []
        self.part_schema: Any = None
        self.quarantine: Any = None  # a pyarrow ParquetWriter, opened on the first bad row
        self.examples: dict[str, int] = {}  # a few distinct reasons, for the failure message
        self.sample = _Sample(options.drift_sample_rows)
        self.progress = _Progress(files)
        # Parts are encoded and stored in a thread while the next chunk is scored (pyarrow
        # and the S3 upload release the GIL).
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-writer")
        self.pending: Future | None = None

    def score_file(self, source: str, index: int) -> None:
        clock = time.perf_counter()
        keys = tuple(self.options.key_columns)
        with local_copy(source) as path:
            record = {"uri": source, "bytes": path.stat().st_size if path.is_file() else 0}
            record["sha256"] = sha256_file(path) if path.is_file() else ""
            expected = _expected_rows(path) if path.is_file() else 1
            clock = self.timer.add("read", clock)
            rows_before = self.rows_read
            wanted = (*keys, *self.schema.names)  # other columns are never read
            chunks = iter_chunks(path, self.options.chunk_rows, keys, columns=wanted)
            # Read in this thread: reading ahead in another one was slower (measured at 1M
            # rows, Parquet and CSV): pandas' text columns hold the GIL while they are built,
            # and the vectorised checks and predictions wait for it.
            for chunk in chunks:
                clock = self.timer.add("read", clock)
                self._score_chunk(source, chunk)
                clock = time.perf_counter()
                done = (self.rows_read - rows_before) / expected
                self.progress.update(self.rows_scored, index, min(done, 1.0))
            record["rows"] = self.rows_read - rows_before
        self.inputs.append(record)

    def _score_chunk(self, source: str, chunk: pd.DataFrame) -> None:
        clock = time.perf_counter()
        absent = [name for name in self.schema.names if name not in chunk.columns]
        if absent:
            raise DataError(f"{source} lacks the model's input column(s): {', '.join(absent)}")
        absent = [name for name in self.options.key_columns if name not in chunk.columns]
        if absent:
            raise DataError(f"{source} lacks the key column(s): {', '.join(absent)}")
        chunk.index = pd.RangeIndex(self.rows_read, self.rows_read + len(chunk))
        if self.options.key_columns:
            keys = chunk[self.options.key_columns]
        else:
            keys = pd.DataFrame({ROW_COLUMN: chunk.index.to_numpy(dtype="int64")}, chunk.index)
        features, reasons = self.schema.check_rows(chunk)
        self.rows_read += len(chunk)
        self.sample.add(features)  # copies only the rows it keeps
        bad = (reasons != "").to_numpy()
        clock = self.timer.add("check", clock)
        if bad.any():
            self._quarantine(keys[bad], chunk.loc[bad, self.schema.names], reasons[bad])
            features, keys = features[~bad], keys[~bad]
        clock = self.timer.add("quarantine", clock)
        if features.empty:
            return
        predicted = predict_chunk(self.bundle, features)
        clock = self.timer.add("predict", clock)
        self._write_part(keys, predicted)
        self.rows_scored += len(features)
        self.timer.add("write", clock)

    def _write_part(self, keys: pd.DataFrame, predicted: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = pd.concat([keys, predicted], axis=1)
        out["model_name"] = self.model_name
        out["model_version"] = self.model_version
        out["scored_at"] = self.scored_at
        table = pa.Table.from_pandas(out, preserve_index=False)
        if self.part_schema is None:
            self.part_schema = table.schema
        elif table.schema != self.part_schema:
            try:
                table = table.cast(self.part_schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise DataError(
                    f"the key column(s) {', '.join(self.options.key_columns)} change type "
                    f"between chunks ({error}); give them one type in every file"
                ) from None
        name = f"{PREDICTIONS_DIR}/part-{len(self.parts):05d}.parquet"
        self.wait_for_writes()  # at most one part in flight: memory stays bounded

        def write() -> None:
            pq.write_table(table, self.sink.local_path(name))
            self.sink.stored(name)

        self.pending = self.writer.submit(write)
        self.parts.append({"file": name, "rows": len(out)})

    def wait_for_writes(self) -> None:
        """The part being written is complete (and uploaded); its error is raised here."""
        if self.pending is not None:
            self.pending.result()
            self.pending = None

    def _quarantine(self, keys: pd.DataFrame, raw: pd.DataFrame, reasons: pd.Series) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.rows_quarantined += len(reasons)
        for reason in reasons.head(20):
            if len(self.examples) < 3:
                self.examples[reason] = self.examples.get(reason, 0) + 1
        text = raw.astype("string")  # one type for every chunk, whatever each one held
        if self.options.key_columns:
            keys = keys.astype("string")
        frame = pd.concat([keys, text], axis=1)
        frame = frame.loc[:, ~frame.columns.duplicated()]  # a key that is also an input
        frame[REASON_COLUMN] = reasons.astype("string")
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.quarantine is None:
            schema = pa.schema(
                [
                    pa.field(f.name, pa.int64() if f.name == ROW_COLUMN else pa.string())
                    for f in table.schema
                ]
            )
            path = self.sink.local_path(QUARANTINE_FILE)
            self.quarantine = pq.ParquetWriter(path, schema)
        self.quarantine.write_table(table.cast(self.quarantine.schema))

    def finish(self, model: str, uri: str, version: str, data: str, began: float) -> dict[str, Any]:
        """Close the quarantine, run the drift and contract checks, enforce the limits and
        return the manifest (publishing is the caller's)."""
        self.wait_for_writes()
        self.writer.shutdown()
        if self.quarantine is not None:
            self.quarantine.close()
            self.sink.stored(QUARANTINE_FILE)
        self.progress.update(self.rows_scored, self.progress.files, 0.0, final=True)
        share = self.rows_quarantined / self.rows_read if self.rows_read else 0.0
        if share > self.options.max_quarantine_share:
            shown = "; ".join(self.examples)
            raise ScoringFailed(
                f"{self.rows_quarantined} of {self.rows_read} rows ({share:.2%}) break the "
                f"model's input schema, above the allowed {self.options.max_quarantine_share:.2%}"
                f" (max_quarantine_share); nothing was published. For example: {shown}"
            )
        clock = time.perf_counter()
        drift = self._drift()
        self.timer.add("drift", clock)
        if self.options.fail_on_drift and drift.get("dataset_drift"):
            raise ScoringFailed(
                f"the batch drifted from the model's training reference "
                f"({', '.join(drift['drifted_features'])}: {drift['drifted_share']:.0%} of the "
                "features) and fail_on_drift is set; nothing was published"
            )
        contract = drift.pop("contract", [])
        metadata = self.bundle.metadata
        return {
            "model": {
                "reference": model,
                "uri": uri,
                "sha256": metadata["sha256"],
                "name": self.model_name,
                "version": version,
            },
            "data": data,
            "inputs": self.inputs,
            "output": self.sink.location,
            "predictions": self.parts,
            "quarantine": QUARANTINE_FILE if self.quarantine is not None else None,
            "key_columns": self.options.key_columns or [ROW_COLUMN],
            "rows": {
                "read": self.rows_read,
                "scored": self.rows_scored,
                "quarantined": self.rows_quarantined,
                "quarantined_share": round(share, 6),
            },
            "drift": drift,
            "contract_breaches": contract,
            "options": self.options.model_dump(mode="json"),
            "scored_at": self.scored_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "timings_seconds": {
                **{k: round(v, 3) for k, v in self.timer.seconds.items()},
                "total": round(time.perf_counter() - began, 3),
            },
        }

    def _drift(self) -> dict[str, Any]:
        """The drift verdict and contract findings on the sample, as `lifecycle drift` would
        give them on the same rows; a bundle without a reference sample is said so."""
        metadata = self.bundle.metadata
        if self.sample.frame is None:
            return {"checked": False, "why": "no rows were read"}
        try:
            reference = reference_frame(metadata)
        except DataError as error:
            if self.options.fail_on_drift:
                raise
            return {"checked": False, "why": str(error)}
        result = detect_drift(
            reference,
            self.sample.frame,
            self.options.drift,
            schema=self.schema,
            contract=metadata.get("contract"),
        )
        return {"checked": True, "sample_rows": len(self.sample.frame), **result.to_dict()}


def scored_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The figures the dashboard shows for a scoring run."""
    rows, drift = summary["rows"], summary["drift"]
    figures = {
        "rows_read": rows["read"],
        "rows_scored": rows["scored"],
        "rows_quarantined": rows["quarantined"],
        "quarantined_share": rows["quarantined_share"],
        "contract_breaches": len(summary["contract_breaches"]),
    }
    if drift.get("checked"):
        figures["drifted_share"] = drift["drifted_share"]
        figures["dataset_drift"] = float(drift["dataset_drift"])
    return figures


def run_output(output: str, run_name: str, run_folder: bool) -> str:
    """OUTPUT, or OUTPUT/<run name> when each (scheduled) run gets a folder of its own."""
    return f"{output.rstrip('/')}/{run_name}" if run_folder and run_name else output


@component
def score(
    model: str,
    data: str,
    output: str,
    metrics: Output[Metrics],
    summary: Output[Artifact],
    options: dict = {},  # noqa: B006 (KFP default, never mutated)
    run_name: str = "",
    run_folder: bool = False,
) -> str:
    """Score a table of any size with a registered model, in chunks, with drift checks.

    Args:
        model: REGISTRY/MODEL@champion, REGISTRY/MODEL@VERSION, or a version's s3:// URI.
        data: CSV or Parquet file, or a directory or s3:// prefix of them (partitions
            included; `_SUCCESS`-style files skipped).
        output: New directory or s3:// prefix: predictions/part-*.parquet,
            quarantine.parquet and scoring-summary.json (written last: the commit marker).
        metrics: Rows read, scored and quarantined, quarantined share, drifted share.
        summary: The run manifest (scoring-summary.json): model URI and sha256, input
            files with sizes and sha256, row counts, timings, drift verdict, contract.
        options: ScoreOptions: key_columns, chunk_rows, max_quarantine_share,
            fail_on_drift, drift_sample_rows, drift (DriftOptions).
        run_name: The KFP run's name (set by the pipeline).
        run_folder: Write under OUTPUT/<run name>/, so that each scheduled run has its own.

    Returns:
        Where the predictions were published.
    """
    import json
    import logging

    from kfp_lifecycle.components.score import (
        ScoreOptions,
        logger,
        run_output,
        score_batch,
        scored_metrics,
    )

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    result = score_batch(
        model, data, run_output(output, run_name, run_folder), ScoreOptions.model_validate(options)
    )
    for name, value in scored_metrics(result).items():
        metrics.log_metric(name, value)
    with open(summary.path, "w") as handle:
        json.dump(result, handle, indent=2)
    drift = result["drift"]
    if drift.get("checked"):
        logger.info(f"drifted features: {', '.join(drift['drifted_features']) or 'none'}")
    for finding in result["contract_breaches"]:
        logger.info(
            "contract %s: '%s' %s: %s",
            finding["severity"], finding["column"], finding["check"], finding["message"],
        )  # fmt: skip
    return result["output"]
