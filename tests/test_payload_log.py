"""The request log: batched Parquet by date, read back by window, never in a prediction's way."""

import json
import os
import signal
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime

import httpx
import numpy as np
import pandas as pd
import pytest
from bundles import build_bundle
from prometheus_client.parser import text_string_to_metric_families
from s3_server import MotoS3, new_bucket, running_moto
from server_process import Server, free_port, server_command, wait_until_ready

from kfp_lifecycle.core.bundle import Prediction, load_bundle
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import CATEGORICAL, DATETIME, NUMERIC
from kfp_lifecycle.serving.model import INPUT_DATATYPE
from kfp_lifecycle.serving.payload_log import (
    LOGGED_ROWS,
    MODEL_VERSION,
    PREDICTION,
    REQUEST_ID,
    ROW,
    TIMESTAMP,
    LogSettings,
    PayloadLogger,
    log_rows,
    read_payload_log,
)

TODAY = datetime.now(UTC).date().isoformat()


def _rows(count: int, request_id: str, when: datetime | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({"age": np.arange(count, dtype=float), "plan": ["basic"] * count})
    prediction = Prediction(["no"] * count, np.tile([0.8, 0.2], (count, 1)), ["no", "yes"])
    return log_rows(frame, prediction, request_id, "churn", "3", now=when)


def _counted(outcome: str) -> float:
    return LOGGED_ROWS.labels("churn", outcome)._value.get()


def test_rows_carry_ids_time_version_inputs_and_outputs():
    rows = _rows(2, "req-1")
    assert list(rows.columns) == [
        REQUEST_ID, ROW, TIMESTAMP, "model_name", MODEL_VERSION, "age", "plan", PREDICTION,
        "proba_no", "proba_yes",
    ]  # fmt: skip
    assert rows[ROW].tolist() == [0, 1] and rows[REQUEST_ID].tolist() == ["req-1", "req-1"]
    assert str(rows[TIMESTAMP].dt.tz) == "UTC" and rows["proba_yes"].tolist() == [0.2, 0.2]


def test_batches_become_few_files_partitioned_by_day(tmp_path):
    logger = PayloadLogger(LogSettings(str(tmp_path), batch_rows=1000, flush_seconds=60), "churn")
    for n in range(20):
        assert logger.log(_rows(3, f"req-{n}"))
    assert logger.log(_rows(2, "yesterday", datetime(2026, 1, 1, 23, 59, tzinfo=UTC)))
    logger.close()  # a graceful stop writes what is queued

    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert [f.rsplit("/", 1)[0] for f in files] == ["churn/date=2026-01-01", f"churn/date={TODAY}"]
    window = read_payload_log(str(tmp_path), "churn", TODAY, TODAY)
    assert len(window) == 60 and window[REQUEST_ID].nunique() == 20
    assert len(read_payload_log(str(tmp_path), "churn", "2026-01-01", "2026-01-01")) == 2
    assert read_payload_log(str(tmp_path), "churn", "2025-01-01", "2025-01-02").empty


def test_a_partial_batch_is_written_after_the_flush_interval(tmp_path):
    logger = PayloadLogger(LogSettings(str(tmp_path), batch_rows=1000, flush_seconds=0.2), "churn")
    logger.log(_rows(3, "req"))
    deadline = time.monotonic() + 10
    while not list(tmp_path.rglob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(read_payload_log(str(tmp_path), "churn", TODAY, TODAY)) == 3  # before close
    logger.close()


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path):
    logger = PayloadLogger(LogSettings(str(tmp_path), queue_rows=4, flush_seconds=60), "churn")
    dropped = _counted("dropped")
    started = time.perf_counter()
    assert logger.log(_rows(5, "too-big")) is False
    assert time.perf_counter() - started < 0.05
    assert _counted("dropped") == dropped + 5
    logger.close()


def test_an_unreachable_store_fails_the_writes_not_the_caller(monkeypatch):
    moto = MotoS3()
    moto.stop()  # nothing listens there now
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    logger = PayloadLogger(LogSettings("s3://nowhere/log", flush_seconds=0.1), "churn")
    failed = _counted("failed")
    started = time.perf_counter()
    assert logger.log(_rows(3, "req"))
    assert time.perf_counter() - started < 0.05
    logger.close()
    assert _counted("failed") == failed + 3


def test_settings_come_from_the_environment():
    assert LogSettings.from_env({}) is None
    settings = LogSettings.from_env(
        {"LIFECYCLE_PAYLOAD_LOG_URI": "s3://b/p", "LIFECYCLE_PAYLOAD_LOG_BATCH_ROWS": "50"}
    )
    assert (settings.uri, settings.batch_rows, settings.flush_seconds) == ("s3://b/p", 50, 10.0)
    with pytest.raises(DataError, match="request log settings"):
        LogSettings.from_env(
            {"LIFECYCLE_PAYLOAD_LOG_URI": "x", "LIFECYCLE_PAYLOAD_LOG_QUEUE_ROWS": "many"}
        )
    with pytest.raises(DataError, match="LIFECYCLE_PAYLOAD_LOG_FLUSH_SECONDS must be above 0"):
        LogSettings.from_env(
            {"LIFECYCLE_PAYLOAD_LOG_URI": "x", "LIFECYCLE_PAYLOAD_LOG_FLUSH_SECONDS": "0"}
        )


def test_a_store_that_never_answers_blocks_neither_the_caller_nor_the_stop(monkeypatch):
    """The endpoint accepts connections and never replies: the writer hangs, nothing else."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes the handshakes; nobody ever reads or replies
    monkeypatch.setenv("S3_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    failed = _counted("failed")
    logger = PayloadLogger(LogSettings("s3://silent/log", flush_seconds=0.05), "churn")
    try:
        for n in range(50):  # the writer is stuck in its first write meanwhile
            started = time.perf_counter()
            assert logger.log(_rows(2, f"req-{n}"))
            assert time.perf_counter() - started < 1.0  # a blocked call would wait 30 s
            time.sleep(0.01)
        started = time.perf_counter()
        logger.close(timeout=0.5)  # a stop waits at most its timeout
        assert time.perf_counter() - started < 5.0
    finally:
        silent.close()  # resets the hung connection, so the writer fails and ends
    logger._thread.join(30)
    assert not logger._thread.is_alive()
    assert _counted("failed") == failed + 100


def test_a_stop_waits_its_grace_period_then_counts_and_logs_what_is_unwritten(
    tmp_path, monkeypatch, caplog
):
    release = threading.Event()
    logger = PayloadLogger(LogSettings(str(tmp_path), batch_rows=2, flush_seconds=60), "churn")
    monkeypatch.setattr(logger, "_writer", lambda key, data: release.wait(30))  # a stuck store
    unflushed = _counted("unflushed")
    assert logger.log(_rows(2, "first")) and logger.log(_rows(3, "second"))
    started = time.perf_counter()
    with caplog.at_level("WARNING", logger="kfp_lifecycle.serving.payload_log"):
        assert logger.close(timeout=0.5) == 5
    assert time.perf_counter() - started < 3.0
    assert _counted("unflushed") == unflushed + 5
    assert "5 row(s) not written within the 0.5s grace period" in caplog.text
    release.set()
    logger._thread.join(30)  # its late writes must not land in another test's counts


def test_the_writer_outlives_a_batch_that_cannot_be_written(tmp_path):
    logger = PayloadLogger(LogSettings(str(tmp_path), batch_rows=1, flush_seconds=60), "churn")
    failed, written = _counted("failed"), _counted("written")
    bad = _rows(1, "bad").assign(age=[object()])  # no Parquet type for this
    assert logger.log(bad)
    assert logger.log(_rows(2, "good"))
    logger.close()
    assert _counted("failed") == failed + 1 and _counted("written") == written + 2
    assert read_payload_log(str(tmp_path), "churn", TODAY, TODAY)[REQUEST_ID].tolist() == [
        "good",
        "good",
    ]
    with pytest.raises(DataError, match="YYYY-MM-DD"):
        read_payload_log(str(tmp_path), "churn", "yesterday", TODAY)


@pytest.fixture(scope="module")
def moto():
    with running_moto() as server:
        yield server


@pytest.mark.serving
def test_the_model_server_logs_v1_and_v2_requests_to_s3(tmp_path, churn, moto):
    bucket = new_bucket(moto.client())
    bundle = build_bundle(tmp_path / "bundle", churn)
    port = free_port()
    server = Server(port, "bundle", tmp_path / "server.log")
    env = {
        **os.environ,
        **moto.env(),
        "LIFECYCLE_PAYLOAD_LOG_URI": f"s3://{bucket}/requests",
        "LIFECYCLE_PAYLOAD_LOG_FLUSH_SECONDS": "60",  # only the graceful stop writes
    }
    with open(server.log, "wb") as sink:
        process = subprocess.Popen(
            server_command(bundle, port), stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_until_ready(process, server)
        features = churn.dropna().drop(columns=["churned"]).head(3)
        rows = json.loads(features.to_json(orient="records"))
        v1 = httpx.post(
            f"{server.url}/v1/models/bundle:predict",
            json={"instances": rows},
            headers={"x-request-id": "client-42"},
            timeout=10,
        )
        assert v1.status_code == 200 and v1.json()["request_id"] == "client-42"
        assert v1.headers["x-request-id"] == "client-42"
        inputs = [
            {"name": c.name, "shape": [1], "datatype": INPUT_DATATYPE[c.kind],
             "data": [rows[0][c.name]]}
            for c in load_bundle(bundle).schema.columns
        ]  # fmt: skip
        v2 = httpx.post(
            f"{server.url}/v2/models/bundle/infer",
            json={"id": "v2-req", "inputs": inputs},
            timeout=10,
        )
        bad = httpx.post(
            f"{server.url}/v1/models/bundle:predict", json={"instances": [{"x": 1}]}, timeout=10
        )
        assert bad.status_code == 400  # a refused request is not logged
        anonymous = httpx.post(
            f"{server.url}/v1/models/bundle:predict", json={"instances": rows[:1]}, timeout=10
        )
        generated = anonymous.json()["request_id"]  # a new id, in the body and the header
        assert anonymous.headers["x-request-id"] == generated and generated != "client-42"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

    for name, value in moto.env().items():
        os.environ.setdefault(name, value)
    logged = read_payload_log(f"s3://{bucket}/requests", "bundle", TODAY, TODAY)
    ids = logged[REQUEST_ID].tolist()
    assert ids[:3] == ["client-42"] * 3, server.log.read_text()[-3000:]
    assert logged[ROW].tolist()[:3] == [0, 1, 2]
    assert set(logged[MODEL_VERSION]) == {logged[MODEL_VERSION].iloc[0]}
    assert logged["plan"].tolist()[:3] == [r["plan"] for r in rows]
    assert set(logged[PREDICTION]) <= {"no", "yes"} and "proba_yes" in logged.columns
    assert v2.status_code == 200 and v2.json()["id"] == "v2-req"
    assert ids.count("v2-req") == 1 and ids.count(generated) == 1 and len(ids) == 5
    schema = load_bundle(bundle).schema
    kinds = {NUMERIC: "float64", CATEGORICAL: "object", DATETIME: "datetime64[ns]"}
    for column in schema.columns:  # typed as the bundle's schema says
        if column.kind in kinds:
            assert str(logged[column.name].dtype) == kinds[column.kind], column.name
    assert str(logged[TIMESTAMP].dt.tz) == "UTC"
    keys = [o.object_name for o in moto.client().list_objects(bucket, recursive=True)]
    assert len(keys) == 1, keys  # three requests, one file: written in a batch at the stop
    assert keys[0].startswith(f"requests/bundle/date={TODAY}/") and keys[0].endswith(".parquet")


def _metric(url: str, outcome: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kfp_lifecycle_payload_log_rows_total" and sample.labels == {
                "model_name": "bundle",
                "outcome": outcome,
            }:
                return sample.value
    return 0.0


@pytest.mark.serving
def test_a_missing_bucket_fails_the_log_but_never_a_prediction(tmp_path, churn, moto):
    bundle = build_bundle(tmp_path / "bundle", churn)
    port = free_port()
    server = Server(port, "bundle", tmp_path / "server.log")
    env = {
        **os.environ,
        **moto.env(),
        "LIFECYCLE_PAYLOAD_LOG_URI": "s3://no-such-bucket-here/requests",
        "LIFECYCLE_PAYLOAD_LOG_FLUSH_SECONDS": "0.1",
    }
    with open(server.log, "wb") as sink:
        process = subprocess.Popen(
            server_command(bundle, port), stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_until_ready(process, server)
        rows = json.loads(
            churn.dropna().drop(columns=["churned"]).head(2).to_json(orient="records")
        )
        for _ in range(5):  # writes fail meanwhile, between retries and after them
            response = httpx.post(
                f"{server.url}/v1/models/bundle:predict", json={"instances": rows}, timeout=10
            )
            assert response.status_code == 200, response.text
            assert len(response.json()["predictions"]) == 2
            time.sleep(0.1)
        deadline = time.monotonic() + 20
        while _metric(server.url, "failed") < 10 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _metric(server.url, "failed") == 10, server.log.read_text()[-3000:]
        assert _metric(server.url, "written") == 0
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) is not None
    output = server.log.read_text()
    assert "NoSuchBucket" in output and moto.env()["AWS_SECRET_ACCESS_KEY"] not in output
