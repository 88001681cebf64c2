"""Export: the registered version as one ONNX model, an artifact beside its registered version.

On by default (the training pipeline's `onnx_export` switch). A model that cannot be exported, or
whose export disagrees with it, never fails the training run: the step records why, and the
registered version is served from its bundle as always.
"""

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from kfp_lifecycle.component import component

logger = logging.getLogger(__name__)
EXPORT_RESULT_FILE = "export.json"


def export_registered(
    bundle_dir: str | Path, test_path: str | Path, summary: dict[str, Any], output: str | Path
) -> dict[str, Any]:
    """Export the bundle to `output`, checked on the test rows; the outcome as a dict.

    `exported` is False (with the reason) when conversion or the check fails; the reason is
    also written to `output`/export.json, beside the ONNX report when there is one.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    outcome: dict[str, Any] = {
        "model_uri": summary.get("model_uri"),
        "model_version": summary.get("model_version"),
    }
    try:
        from kfp_lifecycle.core.bundle import load_bundle
        from kfp_lifecycle.export import export_bundle

        bundle = load_bundle(bundle_dir)
        rows = pd.read_parquet(test_path).drop(columns=[bundle.metadata["target"]])
        result = export_bundle(bundle, output, summary.get("model_uri", ""), rows, "test rows")
    except Exception as error:  # recorded, never raised: training stands without an export
        logger.warning("ONNX export skipped: %s", error, exc_info=not _expected(error))
        outcome.update(exported=False, reason=f"{type(error).__name__}: {error}")
    else:
        parity = result.parity
        outcome.update(
            exported=True,
            onnx_file=result.onnx_file,
            max_difference=parity.max_scaled_diff,
            measure=parity.measure,
            rows=parity.rows,
        )
    (output / EXPORT_RESULT_FILE).write_text(json.dumps(outcome, indent=2) + "\n")
    return outcome


def _expected(error: Exception) -> bool:
    from kfp_lifecycle.core.errors import LifecycleError

    return isinstance(error, LifecycleError | ImportError)


@component
def export(
    model: Input[Model],
    test: Input[Dataset],
    summary: Input[Artifact],
    onnx: Output[Model],
):
    """Export the registered version as one ONNX model (preprocessing and estimator).

    The model is checked with ONNX Runtime against the bundle on the test rows and kept
    only within tolerance (1e-4). A model that cannot be exported does not fail the run:
    export.json records why.

    Args:
        model: The bundle that was registered.
        test: The held-out test rows the ONNX model is checked on.
        summary: The register step's summary (the registered version's URI).
        onnx: model.onnx, onnx-report.json and .md, and export.json (outcome, reason).
    """
    import json

    from kfp_lifecycle.components.export import export_registered, logger

    with open(summary.path) as handle:
        registered = json.load(handle)
    outcome = export_registered(model.path, test.path, registered, onnx.path)
    onnx.metadata.update(outcome)
    if outcome["exported"]:
        logger.info(
            f"ONNX model of version {outcome['model_version']}: {outcome['max_difference']:.3g}"
        )
    else:
        logger.info(f"no ONNX model for version {outcome['model_version']}: {outcome['reason']}")
