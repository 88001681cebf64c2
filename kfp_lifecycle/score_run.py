"""`lifecycle score`: batch-score a table with a registered model on this machine.

By default the scoring pipeline runs through kfp.local, step for step what a cluster runs
(the step in its own process, the manifest as its output artifact). `in_process` calls the
step's function directly: the same code and output, without the pipeline machinery (no
extra process, no pipeline root), for quick runs and notebooks.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from kfp_lifecycle.components.ingest import table_sources
from kfp_lifecycle.components.score import ScoreOptions, check_output, score_batch
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.registry import bundle_metadata, resolve_reference


def _absolute(location: str) -> str:
    """Local paths made absolute (the step may run elsewhere); s3:// URIs as they are."""
    if location.startswith("s3://"):
        return location
    return str(Path(location.removeprefix("file://")).absolute())


def score_options(**values: Any) -> ScoreOptions:
    """ScoreOptions from flags; a value out of range is one line naming the option."""
    from pydantic import ValidationError

    try:
        return ScoreOptions(**values)
    except ValidationError as error:
        first = error.errors()[0]
        name = ".".join(map(str, first["loc"]))
        raise LifecycleError(f"scoring option {name}: {first['msg']}") from None


def scoring_arguments(model: str, data: str, output: str, options: ScoreOptions) -> dict:
    """The pipeline's arguments, checked here first so that a bad model reference, input or
    output fails in a second with one line, before any step starts."""
    model, data, output = _absolute(model), _absolute(data), _absolute(output)
    bundle_metadata(resolve_reference(model))
    table_sources(data)
    check_output(output)
    return {
        "model": model,
        "data": data,
        "output": output,
        "options": options.model_dump(mode="json"),
    }


def run_scoring(
    model: str, data: str, output: str, options: ScoreOptions, in_process: bool = False
) -> dict[str, Any]:
    """Score `data` into `output`; return the run manifest (scoring-summary.json)."""
    arguments = scoring_arguments(model, data, output, options)
    if in_process:
        return score_batch(arguments["model"], arguments["data"], arguments["output"], options)
    from kfp_lifecycle.local_run import run_local
    from kfp_lifecycle.pipelines.scoring import scoring_pipeline

    with tempfile.TemporaryDirectory(prefix="kfp-lifecycle-scoring-") as root:
        task = run_local(scoring_pipeline, arguments, Path(root))
        return json.loads(Path(task.output.path).read_text())


def print_summary(summary: dict[str, Any]) -> None:
    rows, drift = summary["rows"], summary["drift"]
    print(
        f"scored {rows['scored']} of {rows['read']} rows with {summary['model']['name']} "
        f"version {summary['model']['version']} in {summary['timings_seconds']['total']:.1f} s"
    )
    if rows["quarantined"]:
        print(
            f"quarantined {rows['quarantined']} rows ({rows['quarantined_share']:.2%}): "
            f"{summary['output']}/{summary['quarantine']}"
        )
    if drift.get("checked"):
        verdict = "DRIFT" if drift["dataset_drift"] else "no dataset drift"
        drifted = ", ".join(drift["drifted_features"]) or "none"
        print(f"{verdict}: drifted features {drifted} (on {drift['sample_rows']} rows)")
    else:
        print(f"drift not checked: {drift['why']}")
    for finding in summary["contract_breaches"]:
        print(f"contract {finding['severity']}: '{finding['column']}' {finding['check']}: "
              f"{finding['message']}")  # fmt: skip
    print(f"predictions: {summary['output']}/predictions/")
    print(f"manifest: {summary['output']}/scoring-summary.json")
