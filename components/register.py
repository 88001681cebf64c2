"""Register: store the selected model as a new immutable version; move `champion` only if
blessed."""

from typing import Any

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from kfp_lifecycle.component import component
from kfp_lifecycle.components.validate import model_contract
from kfp_lifecycle.core.bundle import read_metadata
from kfp_lifecycle.core.schema import InputSchema
from kfp_lifecycle.registry import CHAMPION, offer_champion, open_registry


def register_bundle(
    bundle_dir: str,
    registry_uri: str,
    model_name: str,
    evaluation: dict[str, Any],
    blessing: dict[str, Any],
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
            "metrics_test": evaluation["metrics"],
            "gate": blessing,
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
        "metrics": evaluation["metrics"],
        "leaderboard": metadata["leaderboard"],
        "blessed": blessing["blessed"],
        "promoted": promoted,
        "reasons": blessing["reasons"],
        "model_name": model_name,
        "model_version": version.version,
        "model_uri": version.uri,
        "champion_alias": registry.aliases(model_name).get(CHAMPION),
    }


@component
def register(
    model: Input[Model],
    evaluation: Input[Artifact],
    blessing: Input[Artifact],
    contract: Input[Artifact],
    reference: Input[Dataset],
    registry: str,
    model_name: str,
    data_source: str,
    data_sha256: str,
    run_id: str,
    summary: Output[Artifact],
):
    """Store the selected model in the model registry and summarise the run.

    Every run gets its own immutable version; the `champion` alias moves to it only when
    the gate blessed it (the old champion stays reachable as `previous`).

    Args:
        model: The selected bundle.
        evaluation: Its test-set evaluation.
        blessing: The gate's decision.
        contract: The data contract inferred by validate, kept with the model.
        reference: The raw training rows; a seeded sample of their inputs is kept with the
            model as the reference that drift monitoring compares live traffic with.
        registry: Registry location: a directory, file:// or s3://bucket/prefix URI (S3
            settings from the environment: see kfp_lifecycle/storage.py).
        model_name: Registered model name (lowercase letters, digits, dashes).
        data_source: Where the training data came from (lineage).
        data_sha256: Hash of the training data file (lineage).
        run_id: The pipeline run's id (lineage).
        summary: JSON summary of the run: best_family, metrics, leaderboard, decision, model URI.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.components.drift import reference_sample
    from kfp_lifecycle.components.register import register_bundle

    with open(evaluation.path) as handle:
        test_evaluation = json.load(handle)
    with open(blessing.path) as handle:
        decision = json.load(handle)
    with open(contract.path) as handle:
        data_contract = json.load(handle)
    lineage = {"data_source": data_source, "data_sha256": data_sha256, "run_id": run_id}
    kept = reference_sample(pd.read_parquet(reference.path), data_contract["target"])
    result = register_bundle(
        model.path,
        registry,
        model_name,
        test_evaluation,
        decision,
        lineage,
        data_contract,
        kept,
    )
    with open(summary.path, "w") as handle:
        json.dump(result, handle, indent=2)
    summary.metadata.update({"model_uri": result["model_uri"], "blessed": result["blessed"]})
    moved = "moved to it" if result["blessed"] else "left where it was (not blessed)"
    print(f"registered {model_name} version {result['model_version']}; champion alias {moved}")
