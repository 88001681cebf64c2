"""Monitor: gather a window of logged requests and what the monitoring steps compare it with.

From the request log (written by the model server, partitioned by date) it takes the rows of
one time window; from the registry, the champion's reference sample (kept at training time)
with the champion's own predictions on it, so that drift in the model's outputs is measured
against what the same model said about its training data. Labels that arrived later are
joined by request id into the table a retraining run trains on.
"""

import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
from kfp.dsl import Artifact, Dataset, Output

from kfp_lifecycle.component import component
from kfp_lifecycle.core.errors import DataError

logger = logging.getLogger(__name__)

PREDICTION_COLUMN = "prediction"


def window_frames(
    log: pd.DataFrame, bundle: Any, version: str
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(reference, current, note): the bundle's inputs plus its prediction on both sides.

    Rows logged by other versions (a canary) are left out of `current` when the champion's
    own version answered some of the window: its predictions are the ones to compare."""
    from kfp_lifecycle.components.drift import reference_frame
    from kfp_lifecycle.serving.payload_log import MODEL_VERSION, PREDICTION

    if log.empty:
        raise DataError("the request log has no rows in this window: nothing to monitor")
    schema = bundle.schema
    missing = [name for name in schema.names if name not in log.columns]
    if missing:
        raise DataError(
            f"the request log lacks the model's input column(s) {', '.join(missing)}: was it "
            "written by another model?"
        )
    note = f"all {len(log)} logged rows"
    own = log[log[MODEL_VERSION].astype(str) == version]
    if 0 < len(own) < len(log):
        note = f"{len(own)} of {len(log)} logged rows (those answered by version {version})"
        log = own
    current = schema.coerce(log)
    current[PREDICTION_COLUMN] = log[PREDICTION].to_numpy()
    reference = reference_frame(bundle.metadata)
    reference[PREDICTION_COLUMN] = bundle.predict(reference).labels
    if bundle.metadata["task"] != "regression":  # labels compare as categories on both sides
        for frame in (reference, current):
            frame[PREDICTION_COLUMN] = frame[PREDICTION_COLUMN].astype(str)
    return reference, current, note


def window_bounds(start: str, end: str, days: int, today: date | None = None) -> tuple[str, str]:
    """The window's first and last day (inclusive, YYYY-MM-DD); blanks are filled from today."""
    try:
        last = date.fromisoformat(end) if end else (today or datetime.now(UTC).date())
        first = date.fromisoformat(start) if start else last - timedelta(days=days - 1)
    except ValueError as error:
        raise DataError(f"window bounds must be YYYY-MM-DD: {error}") from None
    if days < 1:
        raise DataError(f"window_days must be at least 1, got {days}")
    if first > last:
        raise DataError(f"the window starts ({first}) after it ends ({last})")
    return first.isoformat(), last.isoformat()


def labelled_rows(
    log: pd.DataFrame, labels: pd.DataFrame, target: str, input_columns: list[str]
) -> pd.DataFrame:
    """The logged inputs with their late-arriving labels: a table the training pipeline reads."""
    from kfp_lifecycle.serving.payload_log import REQUEST_ID, ROW

    keys = [REQUEST_ID, ROW] if ROW in labels.columns else [REQUEST_ID]
    for name in [*keys, target]:
        if name not in labels.columns:
            raise DataError(
                f"the labels lack column '{name}'; they need {', '.join(keys)} and '{target}'"
            )
    joined = log[[*keys, *input_columns]].merge(labels[[*keys, target]], on=keys, how="inner")
    return joined.drop(columns=keys)


@component
def monitor(
    registry: str,
    model_name: str,
    log_uri: str,
    reference: Output[Dataset],
    current: Output[Dataset],
    predictions: Output[Dataset],
    labels: Output[Dataset],
    contract: Output[Artifact],
    training_rows: Output[Dataset],
    importance: Output[Artifact],
    start: str = "",
    end: str = "",
    window_days: int = 1,
    labels_uri: str = "",
    training_data_uri: str = "",
) -> NamedTuple(
    "WindowOutputs",
    task=str,
    target=str,
    model_version=str,
    test_metrics=dict,
    training_data=str,
    rows=int,
    positive_class=str,
):
    """Read one window of logged requests and the champion's reference to compare it with.

    Args:
        registry: Registry location (a directory, file:// or s3:// URI).
        model_name: Registered model name; its `champion` is the model being monitored.
        log_uri: Where the model server writes its request log (a directory or s3:// prefix).
        start: First day of the window, YYYY-MM-DD (UTC), inclusive; empty: end minus
            window_days - 1 (so a recurring run watches the latest days).
        end: Last day of the window, YYYY-MM-DD (UTC), inclusive; empty: today.
        window_days: The window's length in days when start is empty.
        reference: The champion's reference sample of training inputs, with its predictions.
        current: The window's logged inputs, with the predictions served.
        predictions: The window's log rows as written (ids, version, inputs, outputs).
        labels: Ground truth for logged requests (request_id [, row], target), or no rows.
        contract: JSON: the data contract kept with the champion (null for a model
            registered without one); the drift step checks the window's inputs against it.
        training_rows: Directory holding the window's labelled rows as
            <model>-<start>--<end>.parquet (the model's input columns and the target: what
            the champion's contract requires); empty without labels.
        importance: JSON {column: permutation importance} kept with the champion (null
            when it was registered without an explanation): the drift step's top_features
            rule reads it.
        labels_uri: CSV or Parquet of labels that arrived later; empty: none yet.
        training_data_uri: Where a retraining run reads the labelled rows from (a path or
            s3:// URI ending in .parquet; they are written there too); empty: the
            training_rows artifact's own path, which steps share on kfp.local (on a cluster,
            where each step has its own disk, give an s3:// URI). Never beside the log.

    Returns:
        task: The champion's task. target: its target column. model_version: its version.
        test_metrics: its metrics on its test rows (what live quality is compared with).
        training_data: URI of the labelled rows written for retraining ("" without labels).
        rows: Logged rows in the window.
        positive_class: A binary champion's positive class, as text (a retraining keeps
            it); "" otherwise.
    """
    import json
    import tempfile
    from pathlib import Path

    import pandas as pd

    from kfp_lifecycle.components.drift import importance_of
    from kfp_lifecycle.components.ingest import read_table
    from kfp_lifecycle.components.monitor import (
        labelled_rows,
        logger,
        positive_class_of,
        window_bounds,
        window_frames,
        write_table,
    )
    from kfp_lifecycle.core.errors import DataError
    from kfp_lifecycle.registry import CHAMPION, load_version, model_version_of, open_registry
    from kfp_lifecycle.serving.payload_log import read_payload_log

    start, end = window_bounds(start, end, window_days)
    champion = open_registry(registry).alias(model_name, CHAMPION)
    if champion is None:
        raise DataError(f"model '{model_name}' has no champion in {registry}: nothing to monitor")
    with tempfile.TemporaryDirectory() as workdir:
        bundle = load_version(champion.uri, workdir)
    version = model_version_of(bundle.metadata)
    log = read_payload_log(log_uri, model_name, start, end)
    ref, cur, note = window_frames(log, bundle, version)
    logger.info(f"window {start} .. {end}: {note}; reference {len(ref)} training rows")
    ref.to_parquet(reference.path)
    cur.to_parquet(current.path)
    log.to_parquet(predictions.path)
    with open(contract.path, "w") as handle:
        json.dump(bundle.metadata.get("contract"), handle)
    with open(importance.path, "w") as handle:
        json.dump(importance_of(bundle.metadata), handle)
    target = bundle.metadata["target"]
    truth = read_table(labels_uri) if labels_uri else pd.DataFrame()
    truth.to_parquet(labels.path)
    training_data = ""
    Path(training_rows.path).mkdir(parents=True, exist_ok=True)
    if not truth.empty:
        rows = labelled_rows(log, truth, target, bundle.schema.names)
        kept = str(Path(training_rows.path) / f"{model_name}-{start}--{end}.parquet")
        write_table(rows, kept)
        training_data = training_data_uri or kept
        if training_data_uri:
            write_table(rows, training_data_uri)
        logger.info(f"{len(rows)} labelled row(s) for retraining: {training_data}")
    return (
        bundle.metadata["task"],
        target,
        version,
        bundle.metadata.get("metrics_test", {}),
        training_data,
        len(log),
        positive_class_of(bundle.metadata),
    )


def positive_class_of(metadata: dict[str, Any]) -> str:
    """A binary classifier's positive class (its second class) as text; "" otherwise."""
    classes = metadata.get("classes") or []
    return str(classes[1]) if metadata.get("task") == "classification" and len(classes) == 2 else ""


def write_table(frame: pd.DataFrame, destination: str) -> None:
    """Parquet at a local path or an s3:// URI (uploaded from a temporary file)."""
    from kfp_lifecycle.components.ingest import to_parquet

    if not destination.startswith("s3://"):
        path = Path(destination.removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        to_parquet(frame, path)
        return
    import tempfile

    from kfp_lifecycle.storage import parse_s3_uri, s3_client, upload_file

    bucket, key = parse_s3_uri(destination)
    with tempfile.TemporaryDirectory() as directory:
        local = Path(directory) / "table.parquet"
        to_parquet(frame, local)
        upload_file(s3_client(), local, bucket, key)
