"""Run the training pipeline on this machine through kfp.local, with no cluster."""

from __future__ import annotations

import builtins
import json
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfp_lifecycle.components.gate import check_thresholds
from kfp_lifecycle.components.ingest import read_table
from kfp_lifecycle.components.preprocess import drop_unusable
from kfp_lifecycle.components.train import make_estimator
from kfp_lifecycle.components.validate import champion_contract, enforce_contract, validate_table
from kfp_lifecycle.config import LifecycleConfig
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.core.schema import infer_schema
from kfp_lifecycle.errors import STEP_FAILURE_FILE, StepCrashed, StepFailed
from kfp_lifecycle.registry import model_name_from

SUMMARY_FILE = "summary.json"
MONITORING_SUMMARY_FILE = "monitoring-summary.json"


def pipeline_arguments(config: LifecycleConfig) -> dict[str, Any]:
    """Check the inputs in-process first (same functions the components use), so a bad
    column name, threshold or registry fails in seconds with a one-line reason, before any
    step starts: the table's validation, the champion's data contract, and whether any
    feature column survives preprocessing's rule for constant and ID-like columns."""
    data, target = config.data.source, config.data.target
    if not data:
        raise LifecycleError("no data source: pass --data or set data.source in the config")
    if not target:
        raise LifecycleError("no target column: pass --target or set data.target in the config")
    if not data.startswith("s3://"):
        data = str(Path(data.removeprefix("file://")).absolute())
    frame = preview_table(data, config.engine)
    checked = validate_table(frame, target, config.data.task, config.data.metric)
    drop_unusable(frame, infer_schema(frame, target), config.preprocessing)
    for family in config.models.families:
        make_estimator(family, checked.task)
    check_thresholds(config.gate.thresholds, checked.task)
    output = Path(config.output).absolute()
    registry = config.registry or str(output / "registry")
    model_name = config.model_name or model_name_from(target)
    try:  # opens the registry (on S3, with its credentials) and reads its champion, if any
        contract = champion_contract(registry, model_name)
    except LifecycleError as error:
        raise LifecycleError(f"registry {registry}: {error}") from None
    enforce_contract(frame, contract)
    return {
        "data": data,
        "target": target,
        "registry": registry,
        "model_name": model_name,
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
        "engine": config.engine,
        "dask_options": config.dask.model_dump(mode="json", exclude_none=True),
    }


def preview_table(data: str, engine: str) -> Any:
    """The table the checks run on: all of it with pandas; with Dask (a large table, or a
    directory or prefix of files) the first rows of its first file."""
    from kfp_lifecycle.dask_engine.engine import DASK, resolve_engine

    if resolve_engine(engine, data) != DASK:
        return read_table(data)
    from kfp_lifecycle.dask_engine.ingest import preview

    return preview(data)


def run_local(pipeline: Callable[..., Any], arguments: dict[str, Any], output: Path) -> Any:
    """Run a pipeline through kfp.local, its artifacts under <output>/pipeline-root.

    A failed step becomes one line naming the step and why: StepFailed for a LifecycleError
    (bad input, missing credentials), StepCrashed for anything else (a bug).
    """
    from kfp import local

    output.mkdir(parents=True, exist_ok=True)
    root = output / "pipeline-root"
    # Locally, each step runs in this environment, which is the project image's own: kfp's
    # warning that the step's image may differ does not apply.
    warnings.filterwarnings(
        "ignore", message=".*custom or non-Python base image", category=RuntimeWarning
    )
    # Display names (and other dashboard-only settings) mean nothing to kfp.local.
    warnings.filterwarnings(
        "ignore", message=".*have no effect in the current local runner", category=UserWarning
    )
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True
    )
    started = time.time()
    # kfp.local indents a step's log by swapping builtins.print for the step's duration; the
    # steps of a dsl.ParallelFor run in threads, whose swaps can interleave and leave print
    # indented for good (kfp 2.17, logging_utils.indented_print). Put it back afterwards.
    print_before = builtins.print
    try:
        return pipeline(**arguments)
    except RuntimeError as error:
        if "finished with status" not in str(error):
            raise
        raise step_failure(root, started, str(error)) from None
    finally:
        builtins.print = print_before


def step_failure(root: Path, since: float, kfp_message: str) -> StepFailed | StepCrashed:
    """The first step failure recorded under the pipeline root since `since`.

    kfp.local goes on running steps that do not depend on a failed one, so several may have
    failed; the first is the cause. Without a record (the step died before it could write
    one), the step named in kfp's own message is reported.
    """
    records = []
    for path in root.rglob(STEP_FAILURE_FILE):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("time", 0) >= since:
            records.append(record)
    if not records:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", kfp_message)
        found = re.search(r"Inner task failed: '([^']+)'", plain)
        step = found.group(1) if found else "?"
        return StepCrashed(f"step '{step}' failed; its log is above")
    first = min(records, key=lambda record: record["time"])
    step, message = first["step"], "; ".join(str(first["message"]).splitlines())
    if first.get("user_error"):
        return StepFailed(f"step '{step}' failed: {message}")
    return StepCrashed(
        f"step '{step}' failed with {first['error']}: {message} "
        "(a bug: its traceback is in the log above)"
    )


def run_training(config: LifecycleConfig) -> dict[str, Any]:
    """Run the pipeline with kfp.local; write and return <output>/summary.json."""
    from kfp_lifecycle.pipelines.training import training_pipeline

    arguments = pipeline_arguments(config)
    output = Path(config.output).absolute()
    task = run_local(training_pipeline, arguments, output)
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
    task = run_local(monitoring_pipeline, arguments, output)
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
