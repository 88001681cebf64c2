"""Every Prometheus metric the project exports, and the push of the monitoring gauges.

The one list: the alert rules and the Grafana dashboard under manifests/ and the canary
analysis (kfp_lifecycle/canary.py) may name only the series listed here
(tests/test_alerting.py checks).

- The model server exports its own metrics (serving/model.py, serving/payload_log.py); their
  names are read from those prometheus_client objects, never spelled twice.
- Drift and live quality are measured by the monitoring pipeline, a batch job, so it pushes
  them to a Prometheus Pushgateway, which Prometheus scrapes (honoring the pushed labels).
  Every gauge carries model_name and model_version.
"""

from __future__ import annotations

import http.client
import logging
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import prometheus_client

from kfp_lifecycle.core.tasks import METRICS

log = logging.getLogger(__name__)

PUSH_JOB = "kfp-lifecycle-monitoring"
IDS = ("model_name", "model_version")
COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
RUNTIME, MONITORING = "model server", "monitoring pipeline"


@dataclass(frozen=True)
class MetricInfo:
    name: str  # as PromQL names it (a counter with its _total)
    type: str  # counter, gauge or histogram
    help: str
    labels: tuple[str, ...]
    source: str  # who exports it: RUNTIME or MONITORING

    @property
    def series(self) -> tuple[str, ...]:
        """The series names a query can use: a histogram's _bucket, _count and _sum."""
        if self.type == HISTOGRAM:
            return tuple(self.name + suffix for suffix in HISTOGRAM_SUFFIXES)
        return (self.name,)


def _gauge(name: str, text: str, *extra: str) -> MetricInfo:
    return MetricInfo(name, GAUGE, text, (*IDS, *extra), MONITORING)


# What the monitoring pipeline pushes (kfp_lifecycle.components.retrain.retrain).
MONITORING_GAUGES: dict[str, MetricInfo] = {
    info.name: info
    for info in (
        _gauge("kfp_lifecycle_drift_share", "Share of input features that drifted in the window."),
        _gauge("kfp_lifecycle_dataset_drift", "1 when the window's inputs drifted as a whole."),
        _gauge(
            "kfp_lifecycle_feature_drift_score",
            "The drift test's statistic per input feature; `test` names it (a p-value: lower "
            "is more drift; a distance: higher is more drift).",
            "feature",
            "test",
        ),
        _gauge("kfp_lifecycle_feature_drifted", "1 when this input feature drifted.", "feature"),
        _gauge(
            "kfp_lifecycle_prediction_drift_score",
            "The drift test's statistic on the model's predictions; `test` names it.",
            "test",
        ),
        _gauge("kfp_lifecycle_prediction_drifted", "1 when the predictions' distribution drifted."),
        _gauge(
            "kfp_lifecycle_quality",
            "Live metric of this version's latest judged window (labels joined later).",
            "metric",
        ),
        _gauge(
            "kfp_lifecycle_quality_reference",
            "The test figure live quality is judged by.",
            "metric",
        ),
        _gauge(
            "kfp_lifecycle_quality_drop",
            "How much worse than the test figure the latest judged window is, in the metric's "
            "units (negative: better).",
            "metric",
        ),
        _gauge(
            "kfp_lifecycle_quality_dropped",
            "1 when a judged window fell short of the test figure by more than the tolerance.",
        ),
        _gauge("kfp_lifecycle_monitoring_last_run_timestamp_seconds", "When monitoring last ran."),
    )
}


@cache
def runtime_metrics() -> dict[str, MetricInfo]:
    """The model server's metrics, read from its prometheus_client objects."""
    from kfp_lifecycle.serving.limits import SLOW_CLIENTS
    from kfp_lifecycle.serving.model import (
        LATENCY,
        PREDICTED_LABELS,
        REJECTED,
        REQUESTS,
        UNSEEN_VALUES,
    )
    from kfp_lifecycle.serving.payload_log import LOGGED_ROWS

    found = {}
    runtime = (REQUESTS, REJECTED, LATENCY, PREDICTED_LABELS, UNSEEN_VALUES, LOGGED_ROWS)
    for metric in (*runtime, SLOW_CLIENTS):
        (family,) = metric.describe()
        name = f"{family.name}_total" if family.type == COUNTER else family.name
        labels = tuple(metric._labelnames)  # prometheus_client has no public accessor
        found[name] = MetricInfo(name, family.type, family.documentation, labels, RUNTIME)
    return found


def exported_metrics() -> dict[str, MetricInfo]:
    """Every metric of the project by name: the model server's and the pushed gauges."""
    return {**runtime_metrics(), **MONITORING_GAUGES}


def exported_series() -> dict[str, MetricInfo]:
    """Every series name a rule, dashboard or query may use, with the metric it belongs to."""
    return {series: info for info in exported_metrics().values() for series in info.series}


def _quality_by_version(quality: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model version: its latest judged window's value and whether any window dropped."""
    metric = quality["metric"]
    least = quality.get("min_rows_per_window", 1)
    found: dict[str, dict[str, Any]] = {}
    for window in quality["windows"]:  # oldest first
        value = window["metrics"].get(metric)
        judged = window.get("judged", window["rows"] >= least and value is not None)
        if not judged:
            continue
        seen = found.setdefault(window["model_version"], {"dropped": False})
        seen["value"] = value
        seen["dropped"] = seen["dropped"] or bool(window.get("dropped", False))
    return found


def monitoring_registry(
    model_name: str,
    model_version: str,
    drift: dict[str, Any] | None,
    quality: dict[str, Any] | None,
    now: float | None = None,
) -> prometheus_client.CollectorRegistry:
    """The gauges of one monitoring run, in a registry of their own (what gets pushed).

    `drift` is the drift step's verdict (DriftResult.to_dict()), `quality` the quality
    step's document (components/quality.py), None or empty when absent. Quality is labelled
    by the version that answered each window (a canary's rows are judged on their own)."""
    registry = prometheus_client.CollectorRegistry()
    gauges = {
        name: prometheus_client.Gauge(name, info.help, info.labels, registry=registry)
        for name, info in MONITORING_GAUGES.items()
    }

    def put(name: str, value: float, **labels: str) -> None:
        gauges[name].labels(model_name=model_name, **labels).set(value)

    ids = {"model_version": model_version}
    put("kfp_lifecycle_monitoring_last_run_timestamp_seconds", now or time.time(), **ids)
    if drift:
        put("kfp_lifecycle_drift_share", drift["drifted_share"], **ids)
        put("kfp_lifecycle_dataset_drift", int(drift["dataset_drift"]), **ids)
        for feature in drift["features"]:
            column = str(feature["column"])
            put("kfp_lifecycle_feature_drifted", int(feature["drifted"]), **ids, feature=column)
            if "statistic" in feature:
                put("kfp_lifecycle_feature_drift_score", feature["statistic"], **ids,
                    feature=column, test=feature.get("test", ""))  # fmt: skip
        prediction = drift.get("prediction")
        if prediction:
            put("kfp_lifecycle_prediction_drifted", int(prediction["drifted"]), **ids)
            if "statistic" in prediction:
                put("kfp_lifecycle_prediction_drift_score", prediction["statistic"], **ids,
                    test=prediction.get("test", ""))  # fmt: skip
    if quality:
        metric, reference = quality["metric"], quality.get("reference")
        greater = METRICS[metric].greater_is_better
        for version, seen in _quality_by_version(quality).items():
            at = {"model_version": version}
            put("kfp_lifecycle_quality", seen["value"], **at, metric=metric)
            put("kfp_lifecycle_quality_dropped", int(seen["dropped"]), **at)
            if reference is not None:
                put("kfp_lifecycle_quality_reference", reference, **at, metric=metric)
                drop = reference - seen["value"] if greater else seen["value"] - reference
                put("kfp_lifecycle_quality_drop", drop, **at, metric=metric)
    return registry


def push_monitoring_metrics(
    gateway_url: str,
    model_name: str,
    model_version: str,
    drift: dict[str, Any] | None,
    quality: dict[str, Any] | None,
    now: float | None = None,
    timeout: float = 10.0,
) -> bool:
    """Push one run's gauges to the Pushgateway; whether they were pushed.

    The group is (job kfp-lifecycle-monitoring, model_name): a push replaces the model's
    previous gauges, so a version no longer monitored disappears. No gateway_url: nothing
    is pushed. An unreachable or failing gateway is a logged warning, never an error: the
    monitoring run's decision stands without its dashboard."""
    if not gateway_url:
        return False
    registry = monitoring_registry(model_name, model_version, drift, quality, now)
    try:
        prometheus_client.push_to_gateway(
            gateway_url, job=PUSH_JOB, registry=registry,
            grouping_key={"model_name": model_name}, timeout=timeout,
        )  # fmt: skip
    except (OSError, ValueError, http.client.HTTPException) as error:
        log.warning("could not push monitoring metrics to %s: %s", gateway_url, error)
        return False
    log.info(
        "pushed monitoring metrics of %s version %s to %s", model_name, model_version, gateway_url
    )
    return True
