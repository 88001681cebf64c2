"""Alert rules and the dashboard: valid objects, real promtool checks and unit tests, and only
series the project exports (kfp_lifecycle/monitoring_metrics.py)."""

import json
import re
import shutil
import subprocess

import prometheus_client
import pytest
import yaml
from test_manifests import render

from kfp_lifecycle.monitoring_metrics import (
    MONITORING_GAUGES,
    exported_series,
    monitoring_registry,
    push_monitoring_metrics,
)

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (sudo make system-deps installs Prometheus)"
)
# PromQL words that are not series names.
PROMQL_WORDS = {
    "sum", "by", "rate", "histogram_quantile", "max", "time", "ignoring", "group_left", "le",
    "outcome", "model_name", "model_version", "label", "and", "or", "on", "bool",
}  # fmt: skip


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return render("cloud", tmp_path_factory.mktemp("cloud"))


@pytest.fixture(scope="module")
def rules(rendered):
    (rule,) = [o for o in rendered if o["kind"] == "PrometheusRule"]
    return rule["spec"]


@pytest.fixture(scope="module")
def dashboard(rendered):
    (config_map,) = [o for o in rendered if o["metadata"]["name"] == "kfp-lifecycle-dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    return json.loads(config_map["data"]["kfp-lifecycle.json"])


def series_in(expression: str) -> set[str]:
    """Identifiers that name series: not inside {...} or [...], not a PromQL word."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expression)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare))
    return {w for w in words if w not in PROMQL_WORDS and not w.startswith("$")}


def test_every_alert_names_only_exported_series(rules):
    names = [rule["alert"] for group in rules["groups"] for rule in group["rules"]]
    assert {"ModelHighErrorRate", "ModelHighLatency", "ModelDataDrift", "ModelQualityDrop"} <= set(
        names
    )
    for group in rules["groups"]:
        for rule in group["rules"]:
            used = series_in(rule["expr"])
            assert used and used <= exported_series(), (rule["alert"], used - exported_series())
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_dashboard_shows_the_required_panels_from_exported_series(dashboard):
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("request rate", "latency", "errors", "prediction distribution", "drift"):
        assert topic in titles, topic
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert "model_version" in target["expr"] or "payload_log" in target["expr"]
            used |= series_in(target["expr"])
    assert used <= exported_series(), used - exported_series()
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"model", "version"} <= variables


def test_the_exported_list_follows_the_runtime():
    series = exported_series()
    assert {
        "kfp_lifecycle_requests_total",
        "kfp_lifecycle_request_seconds_bucket",
        "kfp_lifecycle_predictions_total",
        "kfp_lifecycle_payload_log_rows_total",
    } <= series
    assert set(MONITORING_GAUGES) <= series  # fmt: skip


@needs_promtool
def test_promtool_accepts_the_rules(rules, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


UNIT_TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # version 2 (a canary) fails 10% of requests; version 1 fails 1%
      - series: 'kfp_lifecycle_requests_total{model_name="m",model_version="2",outcome="error"}'
        values: '0+10x30'
      - series: 'kfp_lifecycle_requests_total{model_name="m",model_version="2",outcome="ok"}'
        values: '0+90x30'
      - series: 'kfp_lifecycle_requests_total{model_name="m",model_version="1",outcome="error"}'
        values: '0+1x30'
      - series: 'kfp_lifecycle_requests_total{model_name="m",model_version="1",outcome="ok"}'
        values: '0+99x30'
      # version 2 answers in ~1 s, version 1 in ~10 ms
      - series: 'kfp_lifecycle_request_seconds_bucket{model_name="m",model_version="2",le="0.01"}'
        values: '0+0x30'
      - series: 'kfp_lifecycle_request_seconds_bucket{model_name="m",model_version="2",le="2.5"}'
        values: '0+100x30'
      - series: 'kfp_lifecycle_request_seconds_bucket{model_name="m",model_version="2",le="+Inf"}'
        values: '0+100x30'
      - series: 'kfp_lifecycle_request_seconds_bucket{model_name="m",model_version="1",le="0.01"}'
        values: '0+100x30'
      - series: 'kfp_lifecycle_request_seconds_bucket{model_name="m",model_version="1",le="2.5"}'
        values: '0+100x30'
      - series: 'kfp_lifecycle_request_seconds_bucket{model_name="m",model_version="1",le="+Inf"}'
        values: '0+100x30'
      - series: 'kfp_lifecycle_drift_share{model_name="m",model_version="1"}'
        values: '0.1x10 0.5x20'
      - series: 'kfp_lifecycle_quality_dropped{model_name="m",model_version="1"}'
        values: '0x20 1x10'
    alert_rule_test:
      - {eval_time: 3m, alertname: ModelHighErrorRate, exp_alerts: []}
      - eval_time: 15m
        alertname: ModelHighErrorRate
        exp_alerts:
          - exp_labels: {severity: critical, model_name: m, model_version: "2"}
      - {eval_time: 5m, alertname: ModelHighLatency, exp_alerts: []}
      - eval_time: 20m
        alertname: ModelHighLatency
        exp_alerts:
          - exp_labels: {severity: warning, model_name: m, model_version: "2"}
      - {eval_time: 5m, alertname: ModelDataDrift, exp_alerts: []}
      - eval_time: 15m
        alertname: ModelDataDrift
        exp_alerts:
          - exp_labels: {severity: warning, model_name: m, model_version: "1"}
      - {eval_time: 10m, alertname: ModelQualityDrop, exp_alerts: []}
      - eval_time: 25m
        alertname: ModelQualityDrop
        exp_alerts:
          - exp_labels: {severity: critical, model_name: m, model_version: "1"}
"""


@needs_promtool
def test_alerts_fire_on_the_right_version_and_only_then(rules, tmp_path):
    # Expressions, `for` and labels are under test; the annotation texts are checked above.
    bare = {"groups": [
        {**group, "rules": [{k: v for k, v in rule.items() if k != "annotations"}
                            for rule in group["rules"]]}
        for group in rules["groups"]
    ]}  # fmt: skip
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(bare))
    (tmp_path / "tests.yaml").write_text(UNIT_TESTS)
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


DRIFT = {
    "drifted_share": 0.5,
    "dataset_drift": True,
    "features": [{"column": "age", "drifted": True}, {"column": "plan", "drifted": False}],
    "prediction": {"drifted": False},
}
QUALITY = {
    "metric": "roc_auc",
    "reference": 0.8,
    "dropped": True,
    "windows": [{"metrics": {"roc_auc": 0.7}}, {"metrics": {"roc_auc": 0.6}}],
}


def test_the_monitoring_gauges_carry_model_and_version():
    text = prometheus_client.generate_latest(
        monitoring_registry("churn", "3", DRIFT, QUALITY)
    ).decode()
    assert 'kfp_lifecycle_drift_share{model_name="churn",model_version="3"} 0.5' in text
    assert (
        'kfp_lifecycle_feature_drifted{feature="age",model_name="churn",model_version="3"} 1.0'
        in text
    )
    assert (
        'kfp_lifecycle_quality{metric="roc_auc",model_name="churn",model_version="3"} 0.6' in text
    )
    assert 'kfp_lifecycle_quality_dropped{model_name="churn",model_version="3"} 1.0' in text


def test_push_sends_the_gauges_to_the_gateway_and_survives_its_absence(capsys):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self):  # push_to_gateway replaces the group with PUT
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body.decode()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.handle_request)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    assert push_monitoring_metrics(url, "churn", "3", DRIFT, None) is True
    thread.join(5)
    server.server_close()
    ((path, body),) = received
    assert path == "/metrics/job/kfp-lifecycle-monitoring/model_name/churn"
    assert 'kfp_lifecycle_dataset_drift{model_name="churn",model_version="3"} 1.0' in body

    assert push_monitoring_metrics(url, "churn", "3", DRIFT, None) is False  # nobody listens
    assert "could not push monitoring metrics" in capsys.readouterr().out
    assert push_monitoring_metrics("", "churn", "3", DRIFT, None) is False  # not configured
