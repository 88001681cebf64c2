"""Run the training pipeline on this machine through kfp.local, with no cluster."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from kfp_lifecycle.components.gate import check_thresholds
from kfp_lifecycle.components.ingest import read_table
from kfp_lifecycle.components.train import make_estimator
from kfp_lifecycle.components.validate import validate_table
from kfp_lifecycle.config import LifecycleConfig
from kfp_lifecycle.errors import LifecycleError
from kfp_lifecycle.registry import model_name_from

SUMMARY_FILE = "summary.json"
MONITORING_SUMMARY_FILE = "monitoring-summary.json"


def pipeline_arguments(config: LifecycleConfig) -> dict[str, Any]:
    """Check the inputs in-process first (same functions the components use), so a bad
    column name or threshold fails in a second with a one-line reason, not mid-pipeline."""
    data, target = config.data.source, config.data.target
    if not data:
        raise LifecycleError("no data source: pass --data or set data.source in the config")
    if not target:
        raise LifecycleError("no target column: pass --target or set data.target in the config")
    if not data.startswith("s3://"):
        data = str(Path(data.removeprefix("file://")).absolute())
    checked = validate_table(read_table(data), target, config.data.task, config.data.metric)
    for family in config.models.families:
        make_estimator(family, checked.task)
    check_thresholds(config.gate.thresholds, checked.task)
    output = Path(config.output).absolute()
    return {
        "data": data,
        "target": target,
        "registry": config.registry or str(output / "registry"),
        "model_name": config.model_name or model_name_from(target),
        "task": checked.task,
        "metric": checked.primary_metric,
        "families": config.models.families,
        "tuning_options": config.models.tuning.model_dump(mode="json"),
        "threshold_options": config.decision_threshold.model_dump(mode="json"),
        "diagnose_options": config.diagnosis.model_dump(mode="json"),
        "explain_options": config.explanation.model_dump(mode="json"),
        "report_options": config.report.model_dump(mode="json"),
        "gate_options": config.gate.model_dump(mode="json", exclude_none=True),
        "profile_options": config.profile.model_dump(mode="json", exclude_none=True),
        "clean_options": config.cleaning.model_dump(mode="json", exclude_none=True),
        "split_options": config.split.model_dump(mode="json", exclude_none=True),
        "preprocess_options": config.preprocessing.model_dump(mode="json", exclude_none=True),
        "features_options": config.features.model_dump(mode="json", exclude_none=True),
        "balance_options": config.imbalance.model_dump(mode="json", exclude_none=True),
    }


def _start_local(output: Path) -> None:
    from kfp import local

    output.mkdir(parents=True, exist_ok=True)
    # Locally, each step runs in this environment, which is the project image's own: kfp's
    # warning that the step's image may differ does not apply.
    warnings.filterwarnings(
        "ignore", message=".*custom or non-Python base image", category=RuntimeWarning
    )
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(output / "pipeline-root"),
        raise_on_error=True,
    )


def run_training(config: LifecycleConfig) -> dict[str, Any]:
    """Run the pipeline with kfp.local; write and return <output>/summary.json."""
    from kfp_lifecycle.pipelines.training import training_pipeline

    arguments = pipeline_arguments(config)
    output = Path(config.output).absolute()
    _start_local(output)
    task = training_pipeline(**arguments)
    summary = json.loads(Path(task.output.path).read_text())
    (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def monitoring_arguments(config: LifecycleConfig, start: str = "", end: str = "") -> dict:
    """The monitoring pipeline's arguments, checked before any step starts."""
    from kfp_lifecycle.components.monitor import window_bounds
    from kfp_lifecycle.registry import CHAMPION, open_registry

    monitoring = config.monitoring
    if not monitoring.log_uri:
        raise LifecycleError("no request log: pass --log or set monitoring.log_uri")
    if not config.registry or not config.model_name:
        raise LifecycleError("monitoring needs --registry and --model-name (or the config's)")
    if open_registry(config.registry).alias(config.model_name, CHAMPION) is None:
        raise LifecycleError(
            f"model '{config.model_name}' has no champion in {config.registry}: nothing to monitor"
        )
    if monitoring.deploy and not monitoring.service_name:
        raise LifecycleError("monitoring.deploy needs monitoring.service_name")
    start, end = window_bounds(start, end, monitoring.window_days)
    return {
        "registry": config.registry,
        "model_name": config.model_name,
        "log_uri": monitoring.log_uri,
        "start": start,
        "end": end,
        "labels_uri": monitoring.labels_uri,
        "drift_options": monitoring.drift.model_dump(mode="json"),
        "quality_options": monitoring.quality.model_dump(mode="json"),
        "rule": monitoring.retrain.model_dump(mode="json"),
        "pushgateway": monitoring.pushgateway,
        "families": config.models.families,
        "tuning_options": config.models.tuning.model_dump(mode="json"),
        "gate_options": config.gate.model_dump(mode="json", exclude_none=True),
        "deploy": monitoring.deploy,
        "service_name": monitoring.service_name,
    }


def run_monitoring(config: LifecycleConfig, start: str = "", end: str = "") -> dict[str, Any]:
    """Run the monitoring pipeline with kfp.local; return and write its decision."""
    from kfp_lifecycle.pipelines.monitoring import monitoring_pipeline
    from kfp_lifecycle.registry import open_registry

    arguments = monitoring_arguments(config, start, end)
    registry = open_registry(config.registry)
    before = set(registry.versions(config.model_name))
    output = Path(config.output).absolute()
    _start_local(output)
    task = monitoring_pipeline(**arguments)
    decision = json.loads(Path(task.output.path).read_text())
    new = sorted(set(registry.versions(config.model_name)) - before)
    summary = {
        "window": [arguments["start"], arguments["end"]],
        **decision,
        "new_versions": new,
        "champion": registry.aliases(config.model_name).get("champion"),
    }
    (output / MONITORING_SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary
