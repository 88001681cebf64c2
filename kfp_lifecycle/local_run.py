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
        "threshold_options": config.decision_threshold.model_dump(mode="json"),
        "gate_options": config.gate.model_dump(mode="json", exclude_none=True),
        "profile_options": config.profile.model_dump(mode="json", exclude_none=True),
        "clean_options": config.cleaning.model_dump(mode="json", exclude_none=True),
        "split_options": config.split.model_dump(mode="json", exclude_none=True),
        "preprocess_options": config.preprocessing.model_dump(mode="json", exclude_none=True),
        "features_options": config.features.model_dump(mode="json", exclude_none=True),
        "balance_options": config.imbalance.model_dump(mode="json", exclude_none=True),
    }


def run_training(config: LifecycleConfig) -> dict[str, Any]:
    """Run the pipeline with kfp.local; write and return <output>/summary.json."""
    from kfp import local

    from kfp_lifecycle.pipelines.training import training_pipeline

    arguments = pipeline_arguments(config)
    output = Path(config.output).absolute()
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
    (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary
