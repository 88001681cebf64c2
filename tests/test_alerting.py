"""Alert rules and the dashboard: valid objects, the real promtool's checks and unit tests, and
only series the project exports (the one list: kfp_lifecycle/monitoring_metrics.py)."""

import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import prometheus_client
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_manifests import CRD_SCHEMAS, CRDS, render

from kfp_lifecycle.monitoring_metrics import (
    HISTOGRAM,
    HISTOGRAM_SUFFIXES,
    MONITORING_GAUGES,
    PUSH_JOB,
    exported_metrics,
    exported_series,
    monitoring_registry,
    push_monitoring_metrics,
)

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (sudo make system-deps installs Prometheus)"
)
# PromQL words that can stand where a series name could; function and aggregation names are
# recognised by the parenthesis that follows them, label lists by the clause that opens them.
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                   "and", "or", "unless", "offset", "inf", "nan"}  # fmt: skip
# Grafana's variables, replaced by values so that promtool can parse the panels' queries.
GRAFANA_VALUES = {"$__rate_interval": "5m", "$__interval": "1m", "$model": "m", "$version": ".*"}


def series_in(expression: str) -> set[str]:
    """The series names a PromQL expression selects."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # strings: label values, $variables
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)  # label matchers, ranges and subqueries
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"\b[a-zA-Z_][a-zA-Z0-9_]*\s*\(", "(", bare)  # function names
    words = re.findall(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", bare)
    return {w for w in words if w.lower() not in PROMQL_KEYWORDS}


def test_series_are_told_from_functions_labels_and_keywords():
    expression = (
        'sum by (model_version, le) (rate(a_bucket{x="y{z}", le=~"$le"}[$__rate_interval]))'
        " / ignoring(label) group_left sum without (outcome) (b_total offset 5m) > bool 1e3"
        " and on (model_name) time() - max(c) by (model_name) > 2 * 86400 or vector(0)"
    )
    assert series_in(expression) == {"a_bucket", "b_total", "c"}


def assert_exported(used: set[str], where: str) -> None:
    """Every name is in the one list; a histogram's parts belong to a histogram there."""
    known = exported_series()
    assert used, f"{where}: names no series"
    assert used <= set(known), f"{where} names series the project does not export: " + ", ".join(
        sorted(used - set(known))
    )
    for name in used:
        if name.endswith(HISTOGRAM_SUFFIXES):
            assert known[name].type == HISTOGRAM, f"{where}: {name} is not part of a histogram"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return render("cloud", tmp_path_factory.mktemp("cloud"))


@pytest.fixture(scope="module")
def rules(rendered):
    (rule,) = [o for o in rendered if o["kind"] == "PrometheusRule"]
    return rule


@pytest.fixture(scope="module")
def dashboard(rendered):
    (config_map,) = [o for o in rendered if o["metadata"]["name"] == "kfp-lifecycle-dashboard"]
    assert config_map["kind"] == "ConfigMap"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"  # the sidecar's label
    (document,) = config_map["data"].values()
    return json.loads(document)


def test_the_rules_validate_against_the_prometheus_operator_schema(rules):
    key = (rules["apiVersion"], rules["kind"])
    schema = json.loads((CRDS / key[0].split("/")[0] / CRD_SCHEMAS[key]).read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(rules)


def test_monitoring_ships_only_where_the_prometheus_operator_is(tmp_path):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render("cloud", tmp_path / "cloud")}
    assert {
        ("PrometheusRule", "kfp-lifecycle-models"), ("ConfigMap", "kfp-lifecycle-dashboard"),
        ("Deployment", "pushgateway"), ("Service", "pushgateway"),
        ("ServiceMonitor", "pushgateway"), ("PodMonitor", "kfp-lifecycle-models"),
    } <= kinds  # fmt: skip
    kind_cluster = render("kind", tmp_path / "kind")  # no operator there: none of it
    assert not [o for o in kind_cluster if o["apiVersion"].startswith("monitoring.coreos.com")]
    assert not [o for o in kind_cluster if "pushgateway" in o["metadata"]["name"]]


def test_every_alert_names_only_exported_series_and_says_what_to_do(rules):
    alerts = {rule["alert"]: rule for group in rules["spec"]["groups"] for rule in group["rules"]}
    assert {"ModelHighErrorRate", "ModelHighLatency", "ModelDataDrift", "ModelQualityDrop"} <= set(
        alerts
    )
    for name, rule in alerts.items():
        assert_exported(series_in(rule["expr"]), f"alert {name}")
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        summary, description = rule["annotations"]["summary"], rule["annotations"]["description"]
        assert "$labels.model_name" in summary and len(description) > 80, name
        if "model_version" in rule["expr"]:  # a per-version alert says which version
            assert "$labels.model_version" in summary, name
    for name in ("ModelHighErrorRate", "ModelHighLatency"):  # transient spikes do not page
        assert alerts[name]["for"]


def test_the_dashboard_shows_every_required_panel_from_exported_series(dashboard):
    panels = {panel["title"].lower(): panel for panel in dashboard["panels"]}
    titles = " | ".join(panels)
    for topic in ("request rate", "latency p50 / p95", "errors", "prediction distribution",
                  "share of features drifted", "drift score per feature", "quality"):  # fmt: skip
        assert topic in titles, topic
    exprs = {panel["title"]: [t["expr"] for t in panel["targets"]] for panel in panels.values()}
    (latency,) = [e for title, e in exprs.items() if "Latency" in title]
    assert any("histogram_quantile(0.5," in e for e in latency)
    assert any("histogram_quantile(0.95," in e for e in latency)
    (labels,) = [e for title, e in exprs.items() if "Prediction distribution" in title]
    assert "by (model_version, label)" in labels[0]
    (scores,) = [e for title, e in exprs.items() if "per feature" in title]
    assert "kfp_lifecycle_feature_drift_score" in scores[0]
    for title, targets in exprs.items():
        for expr in targets:
            assert "$model" in expr, title
            assert "$version" in expr or "payload_log" in expr, title  # the log has no version
            assert_exported(series_in(expr), f"panel {title!r}")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "model_version)" in variables["version"]["query"]["query"]
    assert variables["version"]["includeAll"] and variables["version"]["multi"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_the_canary_analysis_queries_only_exported_series(monkeypatch):
    from kfp_lifecycle import canary

    asked, by_label = [], []
    monkeypatch.setattr(canary, "query", lambda url, promql: asked.append(promql) or 1.0)
    monkeypatch.setattr(
        canary, "query_by", lambda url, promql, label: by_label.append(promql) or {"yes": 1.0}
    )
    canary.revision_stats("http://prometheus:9090", "churn", "2", "5m")
    assert len(asked) == 4 and by_label == []  # the prediction-shift rule is off by default
    canary.revision_stats("http://prometheus:9090", "churn", "2", "5m", labels=True)
    assert len(by_label) == 1 and "kfp_lifecycle_predictions_total" in by_label[0]
    for promql in asked + by_label:
        assert_exported(series_in(promql), "canary analysis")


def test_the_one_list_follows_the_runtime():
    from kfp_lifecycle.serving.model import LATENCY
    from kfp_lifecycle.serving.payload_log import LOGGED_ROWS

    metrics = exported_metrics()
    assert metrics["kfp_lifecycle_request_seconds"].type == HISTOGRAM
    assert metrics["kfp_lifecycle_request_seconds"].labels == ("model_name", "model_version")
    assert metrics["kfp_lifecycle_requests_total"].labels == (
        "model_name", "model_version", "outcome"
    )  # fmt: skip
    assert metrics["kfp_lifecycle_predictions_total"].type == "counter"
    assert metrics["kfp_lifecycle_payload_log_rows_total"].labels == ("model_name", "outcome")
    # the series a scrape of the runtime really shows (a histogram's parts, a counter's _total)
    LATENCY.labels("probe", "0").observe(0.01)
    LOGGED_ROWS.labels("probe", "written").inc(0)
    scraped = {
        sample.name
        for family in text_string_to_metric_families(prometheus_client.generate_latest().decode())
        for sample in family.samples
        if sample.name.startswith("kfp_lifecycle_") and not sample.name.endswith("_created")
    }
    assert scraped <= set(exported_series())
    assert {"kfp_lifecycle_request_seconds_bucket", "kfp_lifecycle_payload_log_rows_total"} <= (
        scraped
    )
    for name, info in MONITORING_GAUGES.items():
        assert info.type == "gauge" and info.labels[:2] == ("model_name", "model_version"), name
        assert name in metrics


@needs_promtool
def test_promtool_accepts_the_rules(rules, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules["spec"]))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


@needs_promtool
def test_promtool_parses_every_dashboard_query(dashboard, tmp_path):
    """Each panel's query, its Grafana variables given values, as a recording rule."""
    records = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VALUES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, expr
            records.append({"record": f"dashboard:panel{panel['id']}_{target['refId']}",
                            "expr": expr})  # fmt: skip
    path = tmp_path / "dashboard.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
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
      # pushed gauges: version 1's drift share rises at 10m, its quality drops at 20m;
      # version 2's drift stays low and its quality holds
      - series: 'kfp_lifecycle_drift_share{model_name="m",model_version="1"}'
        values: '0.1x10 0.5x20'
      - series: 'kfp_lifecycle_drift_share{model_name="m",model_version="2"}'
        values: '0.1x30'
      - series: 'kfp_lifecycle_quality_dropped{model_name="m",model_version="1"}'
        values: '0x20 1x10'
      - series: 'kfp_lifecycle_quality_dropped{model_name="m",model_version="2"}'
        values: '0x30'
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
      # nothing above touches the request log or the monitoring timestamp
      - {eval_time: 25m, alertname: ModelRequestLogDropping, exp_alerts: []}
      - {eval_time: 25m, alertname: ModelMonitoringStale, exp_alerts: []}

  - interval: 1m
    input_series:
      # model m's request log drops rows for 20 minutes, then recovers; n never drops
      - series: 'kfp_lifecycle_payload_log_rows_total{model_name="m",outcome="dropped"}'
        values: '0+5x20 100x40'
      - series: 'kfp_lifecycle_payload_log_rows_total{model_name="m",outcome="written"}'
        values: '0+100x60'
      - series: 'kfp_lifecycle_payload_log_rows_total{model_name="n",outcome="written"}'
        values: '0+100x60'
    alert_rule_test:
      - {eval_time: 10m, alertname: ModelRequestLogDropping, exp_alerts: []}
      - eval_time: 25m
        alertname: ModelRequestLogDropping
        exp_alerts:
          - exp_labels: {severity: warning, model_name: m}
      - {eval_time: 55m, alertname: ModelRequestLogDropping, exp_alerts: []}

  - interval: 1h
    input_series:
      # m's monitoring last ran at time 0; n's runs every hour
      - series: 'kfp_lifecycle_monitoring_last_run_timestamp_seconds{model_name="m",
          model_version="1"}'
        values: '0x60'
      - series: 'kfp_lifecycle_monitoring_last_run_timestamp_seconds{model_name="n",
          model_version="1"}'
        values: '0+3600x60'
    alert_rule_test:
      - {eval_time: 47h, alertname: ModelMonitoringStale, exp_alerts: []}
      - eval_time: 49h
        alertname: ModelMonitoringStale
        exp_alerts:
          - exp_labels: {severity: warning, model_name: m}
"""


def run_promtool_tests(groups: list[dict], tests: str, directory) -> None:
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    (directory / "tests.yaml").write_text(tests)
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=directory
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_alert_fires_on_the_right_model_and_version_and_only_then(rules, tmp_path):
    # Expressions, `for` and labels are under test here; annotations in the next test.
    bare = [
        {**group, "rules": [{k: v for k, v in rule.items() if k != "annotations"}
                            for rule in group["rules"]]}
        for group in rules["spec"]["groups"]
    ]  # fmt: skip
    tested = set(re.findall(r"alertname: (\w+)", UNIT_TESTS))
    assert tested == {rule["alert"] for group in bare for rule in group["rules"]}
    run_promtool_tests(bare, UNIT_TESTS, tmp_path)


@needs_promtool
def test_an_alert_names_the_version_and_its_value(rules, tmp_path):
    (rule,) = [r for g in rules["spec"]["groups"] for r in g["rules"]
               if r["alert"] == "ModelHighErrorRate"]  # fmt: skip
    description = json.dumps(rule["annotations"]["description"])
    tests = f"""
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'kfp_lifecycle_requests_total{{model_name="churn",model_version="7",
          outcome="error"}}'
        values: '0+10x30'
      - series: 'kfp_lifecycle_requests_total{{model_name="churn",model_version="7",
          outcome="ok"}}'
        values: '0+90x30'
    alert_rule_test:
      - eval_time: 15m
        alertname: ModelHighErrorRate
        exp_alerts:
          - exp_labels: {{severity: critical, model_name: churn, model_version: "7"}}
            exp_annotations:
              summary: "churn version 7: 10% of requests fail"
              description: {description}
"""
    run_promtool_tests([{"name": "one", "rules": [rule]}], tests, tmp_path)


DRIFT = {
    "drifted_share": 0.5,
    "dataset_drift": True,
    "features": [
        {"column": "age", "drifted": True, "test": "Wasserstein/std", "statistic": 0.4},
        {"column": "plan", "drifted": False, "test": "Jensen-Shannon distance", "statistic": 0.02},
    ],
    "prediction": {"drifted": False, "test": "Jensen-Shannon distance", "statistic": 0.05},
}
QUALITY = {  # the quality step's document: version 3's second day dropped; 4 is a canary
    "metric": "roc_auc",
    "reference": 0.8,
    "min_rows_per_window": 50,
    "dropped": True,
    "windows": [
        {"model_version": "3", "rows": 500, "metrics": {"roc_auc": 0.79}, "dropped": False},
        {"model_version": "3", "rows": 500, "metrics": {"roc_auc": 0.6}, "dropped": True},
        {"model_version": "4", "rows": 300, "metrics": {"roc_auc": 0.85}, "dropped": False},
        {"model_version": "4", "rows": 10, "metrics": {"roc_auc": 0.5}, "dropped": False},
    ],
}
EXPECTED = {  # (series, labels beyond model_name="churn") -> value
    ("kfp_lifecycle_monitoring_last_run_timestamp_seconds", (("model_version", "3"),)): 1e9,
    ("kfp_lifecycle_drift_share", (("model_version", "3"),)): 0.5,
    ("kfp_lifecycle_dataset_drift", (("model_version", "3"),)): 1.0,
    ("kfp_lifecycle_feature_drifted", (("feature", "age"), ("model_version", "3"))): 1.0,
    ("kfp_lifecycle_feature_drifted", (("feature", "plan"), ("model_version", "3"))): 0.0,
    ("kfp_lifecycle_feature_drift_score",
     (("feature", "age"), ("model_version", "3"), ("test", "Wasserstein/std"))): 0.4,
    ("kfp_lifecycle_feature_drift_score",
     (("feature", "plan"), ("model_version", "3"), ("test", "Jensen-Shannon distance"))): 0.02,
    ("kfp_lifecycle_prediction_drifted", (("model_version", "3"),)): 0.0,
    ("kfp_lifecycle_prediction_drift_score",
     (("model_version", "3"), ("test", "Jensen-Shannon distance"))): 0.05,
    ("kfp_lifecycle_quality", (("metric", "roc_auc"), ("model_version", "3"))): 0.6,
    ("kfp_lifecycle_quality", (("metric", "roc_auc"), ("model_version", "4"))): 0.85,
    ("kfp_lifecycle_quality_reference", (("metric", "roc_auc"), ("model_version", "3"))): 0.8,
    ("kfp_lifecycle_quality_reference", (("metric", "roc_auc"), ("model_version", "4"))): 0.8,
    ("kfp_lifecycle_quality_drop", (("metric", "roc_auc"), ("model_version", "3"))): 0.2,
    ("kfp_lifecycle_quality_drop", (("metric", "roc_auc"), ("model_version", "4"))): -0.05,
    ("kfp_lifecycle_quality_dropped", (("model_version", "3"),)): 1.0,
    ("kfp_lifecycle_quality_dropped", (("model_version", "4"),)): 0.0,
}  # fmt: skip


def samples(text: str) -> dict:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            assert labels.pop("model_name") == "churn", sample
            found[sample.name, tuple(sorted(labels.items()))] = sample.value
    return found


def test_the_gauges_say_model_version_and_quality_per_version():
    text = prometheus_client.generate_latest(
        monitoring_registry("churn", "3", DRIFT, QUALITY, now=1e9)
    ).decode()
    assert samples(text) == pytest.approx(EXPECTED)
    only_drift = samples(
        prometheus_client.generate_latest(monitoring_registry("churn", "3", DRIFT, None)).decode()
    )
    assert not [key for key in only_drift if "quality" in key[0]]


@needs_promtool
def test_promtool_lints_the_pushed_metrics():
    text = prometheus_client.generate_latest(
        monitoring_registry("churn", "3", DRIFT, QUALITY, now=1e9)
    ).decode()
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


class Gateway:
    """A stand-in Pushgateway on localhost that records each request and answers `status`."""

    def __init__(self, status: int = 200):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def _record(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.command, self.path, dict(self.headers), body.decode()))
                self.send_response(status)
                self.end_headers()

            do_PUT = do_POST = _record

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_push_replaces_the_models_group_on_the_gateway():
    with Gateway() as gateway:
        pushed = push_monitoring_metrics(gateway.url, "churn", "3", DRIFT, QUALITY, now=1e9)
    assert pushed is True
    ((method, path, headers, body),) = gateway.received
    assert method == "PUT"  # replaces the group: gauges of a version gone stop being served
    assert path == f"/metrics/job/{PUSH_JOB}/model_name/churn"
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert samples(body) == pytest.approx(EXPECTED)


def test_push_accepts_a_gateway_without_scheme():
    with Gateway() as gateway:
        address = gateway.url.removeprefix("http://")
        assert push_monitoring_metrics(address, "churn", "3", None, None, now=1e9) is True
    ((_, path, _, body),) = gateway.received
    assert path == f"/metrics/job/{PUSH_JOB}/model_name/churn"
    assert samples(body) == {
        ("kfp_lifecycle_monitoring_last_run_timestamp_seconds", (("model_version", "3"),)): 1e9
    }


def test_push_never_fails_the_run(caplog):
    def warned() -> list[str]:
        lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        caplog.clear()
        return lines

    with Gateway(status=500) as gateway:
        assert push_monitoring_metrics(gateway.url, "churn", "3", DRIFT, None) is False
    assert len(gateway.received) == 1
    assert "could not push monitoring metrics" in " ".join(warned())
    # nobody listens any more at that address
    assert push_monitoring_metrics(gateway.url, "churn", "3", DRIFT, None, timeout=2) is False
    assert f"could not push monitoring metrics to {gateway.url}" in " ".join(warned())
    assert push_monitoring_metrics("http://bad host:x", "churn", "3", DRIFT, None) is False
    assert "could not push" in " ".join(warned())
    assert push_monitoring_metrics("", "churn", "3", DRIFT, None) is False  # not configured
    assert caplog.records == []
