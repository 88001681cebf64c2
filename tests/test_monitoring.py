"""The monitoring loop, locally and for real: serve a model with the request log on, send
traffic that shifts, run the monitoring pipeline, see it retrain and register a new version."""

import json
import os
import signal
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest
from server_process import Server, free_port, server_command, wait_until_ready

from kfp_lifecycle import cli
from kfp_lifecycle.components.monitor import labelled_rows, window_bounds
from kfp_lifecycle.config import parse_config
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.demo import make_churn_dataset
from kfp_lifecycle.local_run import run_monitoring, run_training
from kfp_lifecycle.registry import CHAMPION, LocalRegistry
from kfp_lifecycle.serving.payload_log import REQUEST_ID, ROW


def utc_today() -> str:
    return datetime.now(UTC).date().isoformat()


def test_window_bounds_fill_blanks_from_today_and_name_bad_input():
    today = date(2026, 11, 23)
    assert window_bounds("", "", 1, today) == ("2026-11-23", "2026-11-23")
    assert window_bounds("", "2026-11-10", 7, today) == ("2026-11-04", "2026-11-10")
    with pytest.raises(DataError, match="YYYY-MM-DD"):
        window_bounds("23/11/2026", "", 1, today)
    with pytest.raises(DataError, match="starts \\(2026-11-24\\) after it ends"):
        window_bounds("2026-11-24", "", 1, today)


def test_labels_join_the_logged_inputs_by_request_and_row():
    log = pd.DataFrame({REQUEST_ID: ["a", "a", "b"], ROW: [0, 1, 0], "x": [1.0, 2.0, 3.0]})
    labels = pd.DataFrame({REQUEST_ID: ["a", "b"], ROW: [1, 0], "y": ["no", "yes"]})
    table = labelled_rows(log, labels, "y", ["x"])
    assert table.to_dict("records") == [{"x": 2.0, "y": "no"}, {"x": 3.0, "y": "yes"}]
    with pytest.raises(DataError, match="the labels lack column 'y'"):
        labelled_rows(log, labels.drop(columns=["y"]), "y", ["x"])


def test_monitor_refuses_a_model_without_champion_in_one_line(tmp_path, capsys):
    argv = ["monitor", "--registry", str(tmp_path / "registry"), "--model-name", "churn",
            "--log", str(tmp_path / "log"), "--output", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: model 'churn' has no champion in {tmp_path / 'registry'}: "
                   "nothing to monitor"]  # fmt: skip


@pytest.fixture(scope="module")
def served_and_shifted(tmp_path_factory):
    """A trained champion, served with the request log on, that then sees shifted traffic.

    Also returns the window that holds the traffic: the UTC days when it began and when the
    server had written it (the same day, unless the run crosses midnight)."""
    root = tmp_path_factory.mktemp("monitoring")
    data = root / "train.csv"
    make_churn_dataset(2000, seed=1).to_csv(data, index=False)
    common = {
        "registry": str(root / "registry"),
        "model_name": "churn",
        "models": {"families": ["linear"]},
        "gate": {"thresholds": {"roc_auc": 0.6}},
    }
    first = run_training(
        parse_config({**common, "data": {"source": str(data), "target": "churned"},
                      "output": str(root / "train")})
    )  # fmt: skip
    log = root / "log"
    port = free_port()
    server = Server(port, "churn", root / "server.log")
    env = {**os.environ, "LIFECYCLE_PAYLOAD_LOG_URI": str(log)}
    with open(server.log, "wb") as sink:
        process = subprocess.Popen(
            [*server_command(Path(first["model_uri"]), port), "--name", "churn"],
            stdout=sink, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    # Customers now stay far longer and call support far more than in training.
    shifted = make_churn_dataset(600, seed=9)
    shifted["tenure_months"] += 48
    shifted["support_calls"] += 3
    labels = []
    first_day = utc_today()
    try:
        wait_until_ready(process, server)
        for n, start in enumerate(range(0, len(shifted), 20)):
            chunk = shifted.iloc[start : start + 20]
            rows = json.loads(chunk.drop(columns=["churned"]).to_json(orient="records"))
            response = httpx.post(
                f"{server.url}/v1/models/churn:predict",
                json={"instances": rows},
                headers={"x-request-id": f"req-{n}"},
                timeout=10,
            )
            assert response.status_code == 200, response.text
            labels += [{REQUEST_ID: f"req-{n}", ROW: i, "churned": y}
                       for i, y in enumerate(chunk["churned"])]  # fmt: skip
    finally:
        process.send_signal(signal.SIGTERM)  # a graceful stop writes the queued log rows
        process.wait(timeout=30)
    pd.DataFrame(labels).to_csv(root / "labels.csv", index=False)
    return root, common, first, (first_day, utc_today())


def test_shifted_traffic_is_detected_and_a_new_version_is_trained(served_and_shifted):
    root, common, first, (start, end) = served_and_shifted
    monitoring = {
        "log_uri": str(root / "log"),
        "labels_uri": str(root / "labels.csv"),
        "drift": {"drift_share": 0.2},
    }
    summary = run_monitoring(
        parse_config({**common, "output": str(root / "monitor"), "monitoring": monitoring}),
        start,
        end,
    )
    assert summary["rows"] == 600 and summary["retrain"] is True
    assert summary["reasons"][0].startswith("retrain: data drift: 22% of features drifted")
    assert "tenure_months" in summary["reasons"][0] and "support_calls" in summary["reasons"][0]
    registry = LocalRegistry(root / "registry")
    assert summary["new_versions"] == [first["model_version"] + 1]
    retrained = registry.metadata("churn", summary["new_versions"][0])
    # trained on the window's labelled rows: the logged inputs joined with their labels
    source = retrained["lineage"]["data_source"]
    assert source.startswith(str(root / "monitor"))
    assert source.endswith(f"churn-{start}--{end}.parquet")
    assert registry.alias("churn", CHAMPION).version == summary["champion"]
    written = json.loads((root / "monitor" / "monitoring-summary.json").read_text())
    assert written == summary


def test_without_enough_drift_the_model_is_kept(served_and_shifted):
    root, common, _, (start, end) = served_and_shifted
    registry = LocalRegistry(root / "registry")
    before = registry.versions("churn")
    drift = {"drift_share": 0.9, "max_psi": 0, "max_new_category_rows": 1}
    monitoring = {"log_uri": str(root / "log"), "drift": drift}
    summary = run_monitoring(
        parse_config({**common, "output": str(root / "keep"), "monitoring": monitoring}),
        start,
        end,
    )
    assert summary["retrain"] is False and summary["new_versions"] == []
    assert "no labels joined yet: live quality unknown" in summary["reasons"]
    assert registry.versions("churn") == before
