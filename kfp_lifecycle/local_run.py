"""Run the training pipeline on this machine through kfp.local, with no cluster."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfp_lifecycle.components.gate import check_thresholds
from kfp_lifecycle.components.ingest import read_table
from kfp_lifecycle.components.train import DEFAULT_FAMILIES, make_estimator
from kfp_lifecycle.components.validate import validate_table
from kfp_lifecycle.registry import model_name_from
from kfp_lifecycle.tasks import DEFAULT_THRESHOLDS

SUMMARY_FILE = "summary.json"


@dataclass
class TrainingOptions:
    data: str
    target: str
    output: str = "lifecycle-output"
    task: str = "auto"
    metric: str = "auto"
    families: list[str] = field(default_factory=lambda: list(DEFAULT_FAMILIES))
    thresholds: dict[str, float] | None = None  # None: the task's defaults
    primary_threshold: float | None = None
    registry: str | None = None  # default: <output>/registry
    model_name: str | None = None  # default: derived from the target
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 42


def pipeline_arguments(options: TrainingOptions) -> dict[str, Any]:
    """Check the inputs in-process first (same functions the components use), so a bad
    column name or threshold fails in a second with a one-line reason, not mid-pipeline."""
    data = options.data
    if not data.startswith("s3://"):
        data = str(Path(data.removeprefix("file://")).absolute())
    checked = validate_table(read_table(data), options.target, options.task, options.metric)
    for family in options.families:
        make_estimator(family, checked.task)
    thresholds = dict(
        DEFAULT_THRESHOLDS[checked.task] if options.thresholds is None else options.thresholds
    )
    if options.primary_threshold is not None:
        thresholds[checked.primary_metric] = options.primary_threshold
    check_thresholds(thresholds, checked.task)
    output = Path(options.output).absolute()
    return {
        "data": data,
        "target": options.target,
        "registry": options.registry or str(output / "registry"),
        "model_name": options.model_name or model_name_from(options.target),
        "task": checked.task,
        "metric": checked.primary_metric,
        "families": options.families,
        "thresholds": thresholds,
        "validation_fraction": options.validation_fraction,
        "test_fraction": options.test_fraction,
        "seed": options.seed,
    }


def run_training(options: TrainingOptions) -> dict[str, Any]:
    """Run the pipeline with kfp.local; write and return <output>/summary.json."""
    from kfp import local

    from kfp_lifecycle.pipelines.training import training_pipeline

    arguments = pipeline_arguments(options)
    output = Path(options.output).absolute()
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
    task = training_pipeline(**arguments)
    summary = json.loads(Path(task.output.path).read_text())
    summary["thresholds"] = arguments["thresholds"]
    (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary
