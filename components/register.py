"""Register: assemble the bundle once, from the selected model and the documents the steps
after it wrote, and store it as a new immutable version; move `champion` only if blessed."""

import logging
import shutil
from pathlib import Path
from typing import Any

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from kfp_lifecycle.component import component
from kfp_lifecycle.components.validate import model_contract
from kfp_lifecycle.core.bundle import MODEL_FILE, read_metadata, verify_bundle, write_metadata
from kfp_lifecycle.core.documents import (
    Blessing,
    Calibration,
    Evaluation,
    Explanation,
    Leaderboard,
    assembled_metadata,
)
from kfp_lifecycle.core.schema import InputSchema
from kfp_lifecycle.registry import CHAMPION, offer_champion, open_registry

logger = logging.getLogger(__name__)


def assemble_bundle(
    model_dir: str | Path,
    output_dir: str | Path,
    leaderboard: Leaderboard,
    calibration: Calibration,
    explanation: Explanation,
    model_card: str,
) -> dict[str, Any]:
    """The registered bundle in `output_dir`: the selected model's file as it is (its
    recorded sha256 stays valid) and its metadata with the documents' keys; returns it."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(model_dir) / MODEL_FILE, output / MODEL_FILE)
    metadata = assembled_metadata(
        read_metadata(model_dir), leaderboard, calibration, explanation, model_card
    )
    write_metadata(output, metadata)
    verify_bundle(output)
    return metadata


def register_bundle(
    bundle_dir: str,
    registry_uri: str,
    model_name: str,
    evaluation: Evaluation,
    blessing: Blessing,
    lineage: dict[str, Any],
    contract: dict[str, Any] | None = None,
    reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Register the bundle with its test metrics, gate decision, data contract and drift
    reference; return the run summary."""
    metadata = read_metadata(bundle_dir)
    if contract is not None:
        contract = model_contract(contract, InputSchema.from_dict(metadata["input_schema"]).names)
    registry = open_registry(registry_uri)
    version = registry.register(
        model_name,
        bundle_dir,
        {
            "model_name": model_name,
            "metrics_test": evaluation.metrics,
            "gate": blessing.model_dump(),
            "lineage": lineage,
            "contract": contract,
            "reference": reference,
        },
    )
    # Under compare-and-swap: a champion that moved since the gate looked (a concurrent run)
    # is replaced only by a better test score.
    promoted = offer_champion(registry, model_name, version.version)
    return {
        "task": metadata["task"],
        "primary_metric": metadata["primary_metric"],
        "best_family": metadata["family"],
        # The same under its old name (it is not the registry's `champion` alias, which
        # champion_alias gives); deprecated, removed in the next release.
        "champion": metadata["family"],
        "metrics": evaluation.metrics,
        "leaderboard": metadata["leaderboard"],
        "blessed": blessing.blessed,
        "promoted": promoted,
        "reasons": blessing.reasons,
        "model_name": model_name,
        "model_version": version.version,
        "model_uri": version.uri,
        "champion_alias": registry.aliases(model_name).get(CHAMPION),
    }


@component
def register(
    model: Input[Model],
    leaderboard: Input[Artifact],
    calibration: Input[Artifact],
    explanation: Input[Artifact],
    model_card: Input[Markdown],
    evaluation: Input[Artifact],
    blessing: Input[Artifact],
    contract: Input[Artifact],
    reference: Input[Dataset],
    registry: str,
    model_name: str,
    data_source: str,
    data_sha256: str,
    run_id: str,
    bundle: Output[Model],
    summary: Output[Artifact],
):
    """Assemble the bundle from the selected model and its documents, store it in the model
    registry and summarise the run.

    The model travelled untouched from select; here, once, its metadata gets the
    leaderboard, calibration, explanation and model card. Every run gets its own immutable
    version; the `champion` alias moves to it only when the gate blessed it (the old
    champion stays reachable as `previous`).

    Args:
        model: The selected bundle, as select passed it on.
        leaderboard: select's ranking (core.documents.Leaderboard).
        calibration: The calibrate step's choice (core.documents.Calibration).
        explanation: explain's feature importance (core.documents.Explanation).
        model_card: report's model card (Markdown).
        evaluation: Its test-set evaluation (core.documents.Evaluation).
        blessing: The gate's decision (core.documents.Blessing).
        contract: The data contract inferred by validate, kept with the model.
        reference: The raw training rows; a seeded sample of their inputs is kept with the
            model as the reference that drift monitoring compares live traffic with.
        registry: Registry location: a directory, file:// or s3://bucket/prefix URI (S3
            settings from the environment: see kfp_lifecycle/storage.py).
        model_name: Registered model name (lowercase letters, digits, dashes).
        data_source: Where the training data came from (lineage).
        data_sha256: Hash of the training data file (lineage).
        run_id: The pipeline run's id (lineage).
        bundle: The assembled bundle, as registered (what serving loads).
        summary: JSON summary of the run: best_family, metrics, leaderboard, decision, model URI.
    """
    import json
    from pathlib import Path

    import pandas as pd

    from kfp_lifecycle.components.drift import reference_sample
    from kfp_lifecycle.components.register import assemble_bundle, logger, register_bundle
    from kfp_lifecycle.core.documents import (
        Blessing,
        Calibration,
        Evaluation,
        Explanation,
        Leaderboard,
        read_document,
    )

    assemble_bundle(
        model.path,
        bundle.path,
        read_document(leaderboard.path, Leaderboard),
        read_document(calibration.path, Calibration),
        read_document(explanation.path, Explanation),
        Path(model_card.path).read_text(),
    )
    with open(contract.path) as handle:
        data_contract = json.load(handle)
    lineage = {"data_source": data_source, "data_sha256": data_sha256, "run_id": run_id}
    kept = reference_sample(pd.read_parquet(reference.path), data_contract["target"])
    result = register_bundle(
        bundle.path,
        registry,
        model_name,
        read_document(evaluation.path, Evaluation),
        read_document(blessing.path, Blessing),
        lineage,
        data_contract,
        kept,
    )
    with open(summary.path, "w") as handle:
        json.dump(result, handle, indent=2)
    summary.metadata.update({"model_uri": result["model_uri"], "blessed": result["blessed"]})
    moved = "moved to it" if result["blessed"] else "left where it was (not blessed)"
    logger.info(
        f"registered {model_name} version {result['model_version']}; champion alias {moved}"
    )
