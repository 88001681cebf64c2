"""The retraining loop on an ordinary table: an ID column training drops, a date, and traffic
with a category training never saw. Train, serve with the request log on, label the logged
requests, monitor, retrain: the champion's contract must not require the dropped ID."""

import json
import os
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
from google.protobuf import json_format
from server_process import Server, free_port, server_command, wait_until_ready

from kfp_lifecycle.config import parse_config
from kfp_lifecycle.demo import make_churn_dataset
from kfp_lifecycle.local_run import MONITORING_SUMMARY_FILE, run_monitoring, run_training
from kfp_lifecycle.registry import LocalRegistry
from kfp_lifecycle.serving.payload_log import REQUEST_ID, ROW


def _with_id(frame: pd.DataFrame, first_id: int) -> pd.DataFrame:
    return frame.assign(customer_id=range(first_id, first_id + len(frame)))[
        ["customer_id", *frame.columns]
    ]


def test_train_serve_log_label_monitor_retrain_on_a_table_with_an_id(tmp_path):
    data = tmp_path / "train.csv"
    _with_id(make_churn_dataset(500, seed=1), 1000).to_csv(data, index=False)
    common = {
        "registry": str(tmp_path / "registry"),
        "model_name": "churn",
        "models": {"families": ["linear"], "tune": {"enabled": False}},
        "gate": {"thresholds": {"roc_auc": 0.5}},
        "diagnose": {"sizes": [1.0]},
        "explain": {"repeats": 1},
    }
    first = run_training(
        parse_config({**common, "data": {"source": str(data), "target": "churned"},
                      "output": str(tmp_path / "train")})
    )  # fmt: skip
    registry = LocalRegistry(tmp_path / "registry")
    contract = registry.metadata("churn", first["model_version"])["contract"]
    assert contract["columns"]["customer_id"] == {"kind": "numeric", "required": False}
    assert contract["columns"]["signup_date"]["required"] is True

    log = tmp_path / "log"
    port = free_port()
    server = Server(port, "churn", tmp_path / "server.log")
    with open(server.log, "wb") as sink:
        process = subprocess.Popen(
            [*server_command(Path(first["model_uri"]), port), "--name", "churn"],
            stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, "LIFECYCLE_PAYLOAD_LOG_URI": str(log)},
        )  # fmt: skip
    traffic = _with_id(make_churn_dataset(300, seed=9), 5000)
    traffic.loc[traffic.index[-40:], "plan"] = "enterprise"  # a plan training never saw
    labels, refused = [], []
    day = datetime.now(UTC).date().isoformat()
    try:
        wait_until_ready(process, server)
        for n, start in enumerate(range(0, len(traffic), 20)):
            chunk = traffic.iloc[start : start + 20]
            # what a client sends: the model's inputs (the ID and the label stay client-side)
            rows = json.loads(chunk.drop(columns=["churned", "customer_id"]).to_json(
                orient="records"))  # fmt: skip
            response = httpx.post(
                f"{server.url}/v1/models/churn:predict", json={"instances": rows},
                headers={"x-request-id": f"req-{n}"}, timeout=10,
            )  # fmt: skip
            if response.status_code != 200:
                refused.append(response.text)
                continue
            labels += [{REQUEST_ID: f"req-{n}", ROW: i, "churned": y}
                       for i, y in enumerate(chunk["churned"])]  # fmt: skip
    finally:
        process.send_signal(signal.SIGTERM)  # a graceful stop writes the queued log rows
        process.wait(timeout=30)
    # a category training never saw is served (with a warning) and logged as sent
    assert refused == []
    pd.DataFrame(labels).to_csv(tmp_path / "labels.csv", index=False)

    monitoring = {"log_uri": str(log), "labels_uri": str(tmp_path / "labels.csv"),
                  "retrain": {"always": True, "min_rows": 10}}  # fmt: skip
    output = tmp_path / "monitor"
    summary = run_monitoring(
        parse_config({**common, "output": str(output), "monitoring": monitoring}), day, day
    )
    assert summary["retrain"] is True and summary["error"] is None
    assert summary["new_versions"] == [first["model_version"] + 1]
    retrained = registry.metadata("churn", summary["new_versions"][0])
    source = Path(retrained["lineage"]["data_source"])
    assert source.is_relative_to(output) and source.suffix == ".parquet"
    table = pd.read_parquet(source)
    assert len(table) == len(labels) and "customer_id" not in table.columns
    assert "signup_date" in table.columns
    assert "enterprise" in set(table["plan"])  # the retraining sees the new category
    assert not any("_retraining" in str(p) for p in log.rglob("*"))  # the log is left alone
    written = json.loads((output / MONITORING_SUMMARY_FILE).read_text())
    assert written == summary


def test_a_failed_monitoring_run_still_writes_its_summary(tmp_path):
    from kfp_lifecycle.core.errors import LifecycleError

    output = tmp_path / "out"
    config = parse_config(
        {
            "registry": str(tmp_path / "registry"),
            "model_name": "churn",
            "output": str(output),
            "monitoring": {"log_uri": str(tmp_path)},
        }
    )
    try:
        run_monitoring(config, "2026-11-01", "2026-11-01")
    except LifecycleError as error:
        message = str(error)
    written = json.loads((output / MONITORING_SUMMARY_FILE).read_text())
    assert written["error"] == message and "has no champion" in message


def test_a_retraining_keeps_the_champions_positive_class():
    from kfp_lifecycle.components.monitor import positive_class_of
    from kfp_lifecycle.pipelines.monitoring import monitoring_pipeline

    assert positive_class_of({"task": "classification", "classes": ["good", "bad"]}) == "bad"
    assert positive_class_of({"task": "classification", "classes": [0, 1, 2]}) == ""
    assert positive_class_of({"task": "regression", "classes": None}) == ""
    # the retraining's validate step takes it from the window
    spec = monitoring_pipeline.pipeline_spec
    retrain = json_format.MessageToDict(spec)["components"]["comp-condition-1"]["dag"]["tasks"]
    argument = retrain["training"]["inputs"]["parameters"]["positive_class"]
    assert argument["componentInputParameter"].endswith("positive_class")
