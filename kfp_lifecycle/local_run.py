"""Run the training pipeline on this machine through kfp.local, with no cluster."""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import re
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.errors import STEP_FAILURE_FILE, StepCrashed, StepFailed

if TYPE_CHECKING:
    from kfp_lifecycle.config import LifecycleConfig

SUMMARY_FILE = "summary.json"
MONITORING_SUMMARY_FILE = "monitoring-summary.json"


def pipeline_arguments(config: LifecycleConfig) -> dict[str, Any]:
    """Check the inputs in-process first (same functions the components use), so a bad
    column name, threshold or registry fails in seconds with a one-line reason, before any
    step starts: the table's validation, the champion's data contract, and whether any
    feature column survives preprocessing's rule for constant and ID-like columns."""
    # Imported here, not with the module: run_local serves every pipeline, and a scoring
    # run should not wait for the training steps' libraries to load.
    from kfp_lifecycle.components.gate import check_thresholds
    from kfp_lifecycle.components.preprocess import drop_unusable
    from kfp_lifecycle.components.validate import (
        champion_contract,
        enforce_contract,
        validate_table,
    )
    from kfp_lifecycle.core.schema import infer_schema
    from kfp_lifecycle.families import get_family
    from kfp_lifecycle.registry import model_name_from, open_registry
    from kfp_lifecycle.sources.sql import (
        absolute_sqlite,
        check_source,
        is_sql_source,
        state_location,
    )

    data, target = config.data.source, config.data.target
    if not data:
        raise LifecycleError("no data source: pass --data or set data.source in the config")
    if not target:
        raise LifecycleError("no target column: pass --target or set data.target in the config")
    output = Path(config.output).absolute()
    registry = config.registry or str(output / "registry")
    model_name = config.model_name or model_name_from(target)
    sql_options = config.data.sql.model_dump(mode="json", exclude_none=True)
    if is_sql_source(data):
        # The first chunk of the window: unreachable host, refused credentials, a missing
        # table or no rows fail here, in one line, before any step starts (nothing is written).
        data = absolute_sqlite(data)
        frame = check_source(data, config.data.sql, state_location(registry, model_name))
    else:
        if not data.startswith("s3://"):
            data = str(Path(data.removeprefix("file://")).absolute())
        frame = preview_table(data, config.engine)
    checked = validate_table(
        frame, target, config.data.task, config.data.metric, config.data.positive_class
    )
    drop_unusable(frame, infer_schema(frame, target), config.preprocess)
    for family in config.models.families:
        get_family(family).estimator(checked.task)
    check_thresholds(config.gate.thresholds, checked.task)
    try:  # reachable and writable (a probe write), then the champion's contract, if any
        open_registry(registry).check_writable()
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
        "positive_class": config.data.positive_class,
        "time_budget": config.time_budget,
        "families": config.models.families,
        "tune_options": config.models.tune.model_dump(mode="json"),
        "calibrate_options": config.calibrate.model_dump(mode="json"),
        "diagnose_options": config.diagnose.model_dump(mode="json"),
        "explain_options": config.explain.model_dump(mode="json"),
        "report_options": config.report.model_dump(mode="json"),
        "gate_options": config.gate.model_dump(mode="json", exclude_none=True),
        "profile_options": config.profile.model_dump(mode="json", exclude_none=True),
        "clean_options": config.clean.model_dump(mode="json", exclude_none=True),
        "split_options": config.split.model_dump(mode="json", exclude_none=True),
        "preprocess_options": config.preprocess.model_dump(mode="json", exclude_none=True),
        "features_options": config.features.model_dump(mode="json", exclude_none=True),
        "balance_options": config.balance.model_dump(mode="json", exclude_none=True),
        "sql_options": sql_options,
        "onnx_export": config.onnx_export,
        "engine": config.engine,
        "dask_options": config.dask.model_dump(mode="json", exclude_none=True),
    }


def preview_table(data: str, engine: str) -> Any:
    """The table the checks run on: all of it with pandas; with Dask (a large table, or a
    directory or prefix of files) the first rows of its first file."""
    from kfp_lifecycle.components.ingest import read_table
    from kfp_lifecycle.dask_engine.engine import DASK, resolve_engine

    if resolve_engine(engine, data) != DASK:
        return read_table(data)
    from kfp_lifecycle.dask_engine.ingest import preview

    return preview(data)


StepCallback = Callable[[str, str, float], None]
PIPELINE_LOG = "pipeline.log"
REPORTS_DIR = "reports"
# A report's file name under <output>/reports, by the step that wrote it; other steps' HTML
# outputs are named <step>-<output>.html.
REPORT_NAMES = {
    ("profile", "report"): "eda-report.html",
    ("report", "report"): "evaluation-report.html",
    ("report", "model_card"): "model-card.md",
    ("drift", "report"): "drift-report.html",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '(.+)'$")
_FINISHED = re.compile(r"Task '(.+)' finished with status (\w+)")


class _StepWatcher(logging.Filter):
    """Turns kfp.local's own log records into one (step, status, seconds) call per step.

    It sits on the root logger (kfp.local logs there and swaps its handlers, not its
    filters); ParallelFor steps run in threads, so start times are kept per thread."""

    def __init__(self, on_step: StepCallback) -> None:
        super().__init__()
        self.on_step = on_step
        self.started: dict[tuple[int, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = _ANSI.sub("", str(record.msg))
        thread = threading.get_ident()
        if found := _STARTED.search(message):
            self.started[(thread, found.group(1))] = record.created
        elif found := _FINISHED.search(message):
            step, status = found.groups()
            began = self.started.pop((thread, step), record.created)
            self.on_step(step, status, record.created - began)
        return True


def run_local(
    pipeline: Callable[..., Any],
    arguments: dict[str, Any],
    output: Path,
    log_file: Path | None = None,
    on_step: StepCallback | None = None,
) -> Any:
    """Run a pipeline through kfp.local, its artifacts under <output>/pipeline-root.

    kfp.local's own output (executor inputs, every step's log) goes to stdout, or, with
    `log_file`, to that file only; `on_step(step, status, seconds)` hears of each step's end.
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
    watcher = _StepWatcher(on_step) if on_step else None
    with contextlib.ExitStack() as stack:
        if watcher:
            logging.getLogger().addFilter(watcher)
            stack.callback(logging.getLogger().removeFilter, watcher)
        if log_file:  # kfp.local logs to sys.stdout as it is when the run starts
            log_file.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(log_file.open("a"))))
        try:
            return pipeline(**arguments)
        except RuntimeError as error:
            if "finished with status" not in str(error):
                raise
            raise step_failure(root, started, str(error), log_file) from None
        finally:
            builtins.print = print_before


def step_failure(
    root: Path, since: float, kfp_message: str, log_file: Path | None = None
) -> StepFailed | StepCrashed:
    """The first step failure recorded under the pipeline root since `since`.

    kfp.local goes on running steps that do not depend on a failed one, so several may have
    failed; the first is the cause. Without a record (the step died before it could write
    one), the step named in kfp's own message is reported.
    """
    where = f"in {log_file}" if log_file else "in the log above"
    records = []
    for path in root.rglob(STEP_FAILURE_FILE):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("time", 0) >= since:
            records.append(record)
    if not records:
        plain = _ANSI.sub("", kfp_message)
        found = re.search(r"Inner task failed: '([^']+)'", plain)
        step = found.group(1) if found else "?"
        log = f"its log: {log_file}" if log_file else "its log is above"
        return StepCrashed(f"step '{step}' failed; {log}")
    first = min(records, key=lambda record: record["time"])
    step, message = first["step"], "; ".join(str(first["message"]).splitlines())
    if first.get("user_error"):
        return StepFailed(f"step '{step}' failed: {message}")
    return StepCrashed(
        f"step '{step}' failed with {first['error']}: {message} (a bug: its traceback is {where})"
    )


def publish_reports(task_output: str, output: Path) -> dict[str, str]:
    """Copy the run's HTML reports and model card out of KFP's extension-less artifacts to
    named files under <output>/reports; {file stem: path}, for summary.json and the CLI.

    The run is the pipeline-root directory holding the pipeline's own output."""
    root = output / "pipeline-root"
    run = root / Path(task_output).resolve().relative_to(root.resolve()).parts[0]
    published: dict[str, str] = {}
    target = output / REPORTS_DIR
    for path in sorted(run.rglob("*")):
        if not path.is_file() or path.suffix:
            continue
        step, name = path.parent.name, path.name
        known = REPORT_NAMES.get((step, name))
        if known is None:
            with path.open("rb") as handle:
                if not handle.read(64).lstrip().lower().startswith((b"<!doctype html", b"<html")):
                    continue
            known = f"{step}-{name}.html"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / known)
        published[Path(known).stem] = str(target / known)
    return published


def run_training(
    config: LifecycleConfig, quiet: bool = False, on_step: StepCallback | None = None
) -> dict[str, Any]:
    """Run the pipeline with kfp.local; write and return <output>/summary.json, which names
    the run's reports (copied to <output>/reports as .html). `quiet`: kfp.local's own output
    goes to <output>/pipeline.log instead of stdout."""
    from kfp_lifecycle.pipelines.training import training_pipeline

    arguments = pipeline_arguments(config)
    output = Path(config.output).absolute()
    log_file = output / PIPELINE_LOG if quiet else None
    task = run_local(training_pipeline, arguments, output, log_file, on_step)
    summary = json.loads(Path(task.output.path).read_text())
    summary["reports"] = publish_reports(task.output.path, output)
    if log_file:
        summary["log"] = str(log_file)
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
        "retrain_options": monitoring.retrain.model_dump(mode="json"),
        "pushgateway": monitoring.pushgateway,
        "families": config.models.families,
        "tune_options": config.models.tune.model_dump(mode="json"),
        "gate_options": config.gate.model_dump(mode="json", exclude_none=True),
        "deploy": monitoring.deploy,
        "service_name": monitoring.service_name,
    }


def run_monitoring(
    config: LifecycleConfig,
    start: str = "",
    end: str = "",
    quiet: bool = False,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Run the monitoring pipeline with kfp.local; return and write its decision (with the
    paths of its reports, as run_training)."""
    from kfp_lifecycle.pipelines.monitoring import monitoring_pipeline
    from kfp_lifecycle.registry import open_registry

    output = Path(config.output).absolute()
    log_file = output / PIPELINE_LOG if quiet else None
    summary: dict[str, Any] = {"window": [start, end], "error": None}
    try:
        arguments = monitoring_arguments(config, start, end)
        summary["window"] = [arguments["start"], arguments["end"]]
        registry = open_registry(config.registry)
        before = set(registry.versions(config.model_name))
        task = run_local(monitoring_pipeline, arguments, output, log_file, on_step)
        decision = json.loads(Path(task.output.path).read_text())
        summary.update(decision)
        summary["new_versions"] = sorted(set(registry.versions(config.model_name)) - before)
        summary["champion"] = registry.aliases(config.model_name).get("champion")
        summary["reports"] = publish_reports(task.output.path, output)
    except Exception as error:  # the summary says why the run stopped, then the error is raised
        summary["error"] = str(error)
        raise
    finally:
        if log_file:
            summary["log"] = str(log_file)
        output.mkdir(parents=True, exist_ok=True)
        (output / MONITORING_SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary
