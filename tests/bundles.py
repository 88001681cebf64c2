"""Real bundles for tests, built the way the training step builds them."""

from pathlib import Path

import pandas as pd

from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model
from kfp_lifecycle.core.bundle import write_bundle
from kfp_lifecycle.core.documents import Blessing, Evaluation
from kfp_lifecycle.core.tasks import CLASSIFICATION


def build_bundle(directory: Path, churn: pd.DataFrame, family: str = "linear") -> Path:
    """A registered-ready bundle of `family` trained on the churn table."""
    parts = split_table(churn, "churned", CLASSIFICATION, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, "churned", CLASSIFICATION)
    bundle = train_model(
        parts.train, parts.validation, "churned", CLASSIFICATION, family, fitted, schema
    )
    extra = {"primary_metric": "roc_auc", "leaderboard": {family: 0.8}}
    write_bundle(directory, bundle.pipeline, {**bundle.metadata, **extra})
    return directory


def register_churn(root: Path, training: pd.DataFrame) -> Path:
    """A registry under `root` holding churn version 1, the champion: a real bundle trained on
    `training` and registered with its drift reference sample and data contract, as the
    training pipeline registers it. Returns the registry's directory."""
    from kfp_lifecycle.components.drift import reference_sample
    from kfp_lifecycle.components.validate import infer_contract
    from kfp_lifecycle.registry import CHAMPION, LocalRegistry, set_alias

    bundle = build_bundle(root / "bundle", training)
    registry = LocalRegistry(root / "registry")
    kept = {
        "model_name": "churn",
        "reference": reference_sample(training, "churned"),
        "contract": infer_contract(training, "churned"),
    }
    registry.register("churn", bundle, kept)
    set_alias(registry, "churn", CHAMPION, 1)
    return root / "registry"


def churn_evaluation(roc_auc: float = 0.8) -> Evaluation:
    """A churn model's test evaluation, as the evaluate step writes it (metrics only)."""
    return Evaluation(
        rows=200, task=CLASSIFICATION, target="churned", primary_metric="roc_auc",
        metrics={"roc_auc": roc_auc},
    )  # fmt: skip


def gate_decision(blessed: bool, reasons: list[str] | None = None, **more) -> Blessing:
    """The gate's decision, as the gate step writes it."""
    return Blessing(blessed=blessed, reasons=reasons or [], **more)
