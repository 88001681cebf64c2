"""Every Prometheus metric the project exports, and the push of the monitoring gauges.

The model server exports its metrics itself (serving/model.py, serving/payload_log.py).
Drift and live quality are measured by the monitoring pipeline, a batch job, so it pushes
them to a Prometheus Pushgateway, which Prometheus scrapes. The alert rules and the Grafana
dashboard under manifests/ may name only the series listed here (tests/test_alerting.py).
"""

from __future__ import annotations

import time
from typing import Any

import prometheus_client

PUSH_JOB = "kfp-lifecycle-monitoring"

# The monitoring gauges: name -> (help, extra labels). All carry model_name and model_version.
MONITORING_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "kfp_lifecycle_drift_share": ("Share of input features that drifted in the window.", ()),
    "kfp_lifecycle_dataset_drift": ("1 when the window's inputs drifted as a whole.", ()),
    "kfp_lifecycle_feature_drifted": ("1 when this input feature drifted.", ("feature",)),
    "kfp_lifecycle_prediction_drifted": ("1 when the predictions' distribution drifted.", ()),
    "kfp_lifecycle_quality": ("Live metric of the latest judged window.", ("metric",)),
    "kfp_lifecycle_quality_reference": ("The model's test metric, for comparison.", ("metric",)),
    "kfp_lifecycle_quality_dropped": ("1 when live quality dropped below the test figure.", ()),
    "kfp_lifecycle_monitoring_last_run_timestamp_seconds": ("When monitoring last ran.", ()),
}


def runtime_series() -> set[str]:
    """The series names the model server exports (counters with _total, histograms' parts)."""
    from kfp_lifecycle.serving.model import LATENCY, PREDICTED_LABELS, REQUESTS
    from kfp_lifecycle.serving.payload_log import LOGGED_ROWS

    names = set()
    for metric in (REQUESTS, LATENCY, PREDICTED_LABELS, LOGGED_ROWS):
        base = metric._name  # prometheus_client keeps the name without the _total suffix
        if metric._type == "counter":
            names.add(f"{base}_total")
        elif metric._type == "histogram":
            names |= {f"{base}_bucket", f"{base}_count", f"{base}_sum"}
    return names


def exported_series() -> set[str]:
    """Every series name a rule or dashboard of this project may use."""
    return runtime_series() | set(MONITORING_GAUGES)


def monitoring_registry(
    model_name: str,
    model_version: str,
    drift: dict[str, Any] | None,
    quality: dict[str, Any] | None,
) -> prometheus_client.CollectorRegistry:
    """The gauges of one monitoring run, in a registry of their own (what gets pushed)."""
    registry = prometheus_client.CollectorRegistry()
    gauges = {
        name: prometheus_client.Gauge(
            name, text, ["model_name", "model_version", *extra], registry=registry
        )
        for name, (text, extra) in MONITORING_GAUGES.items()
    }
    ids = {"model_name": model_name, "model_version": model_version}
    gauges["kfp_lifecycle_monitoring_last_run_timestamp_seconds"].labels(**ids).set(time.time())
    if drift:
        gauges["kfp_lifecycle_drift_share"].labels(**ids).set(drift["drifted_share"])
        gauges["kfp_lifecycle_dataset_drift"].labels(**ids).set(int(drift["dataset_drift"]))
        for feature in drift["features"]:
            gauges["kfp_lifecycle_feature_drifted"].labels(**ids, feature=feature["column"]).set(
                int(feature["drifted"])
            )
        if drift.get("prediction"):
            gauges["kfp_lifecycle_prediction_drifted"].labels(**ids).set(
                int(drift["prediction"]["drifted"])
            )
    if quality:
        metric = quality["metric"]
        judged = [w for w in quality["windows"] if w["metrics"].get(metric) is not None]
        if judged:
            value = judged[-1]["metrics"][metric]
            gauges["kfp_lifecycle_quality"].labels(**ids, metric=metric).set(value)
        if quality.get("reference") is not None:
            gauges["kfp_lifecycle_quality_reference"].labels(**ids, metric=metric).set(
                quality["reference"]
            )
        gauges["kfp_lifecycle_quality_dropped"].labels(**ids).set(int(quality["dropped"]))
    return registry


def push_monitoring_metrics(
    gateway: str,
    model_name: str,
    model_version: str,
    drift: dict[str, Any] | None,
    quality: dict[str, Any] | None,
) -> bool:
    """Push the run's gauges (replacing the model's previous ones); no gateway: nothing.

    An unreachable gateway is a warning, not a failure: monitoring's decision stands."""
    if not gateway:
        return False
    registry = monitoring_registry(model_name, model_version, drift, quality)
    try:
        prometheus_client.push_to_gateway(
            gateway, job=PUSH_JOB, registry=registry, grouping_key={"model_name": model_name},
            timeout=10,
        )  # fmt: skip
    except OSError as error:
        print(f"WARNING: could not push monitoring metrics to {gateway}: {error}")
        return False
    return True
