"""Retrain: decide from the monitoring evidence whether the model should be retrained.

The rule is explicit and configured: data drift, prediction drift and a drop in live
quality can each trigger retraining; too few logged rows never do (the evidence is thin).
The decision is an artifact with every reason, whether or not it says retrain, so that a
person reading the run sees why a retraining started or why none did.
"""

import logging
from dataclasses import asdict, dataclass
from typing import Any

from kfp.dsl import Artifact, Input, Output
from pydantic import BaseModel, ConfigDict, Field

from kfp_lifecycle.component import component

logger = logging.getLogger(__name__)


class RetrainRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on_data_drift: bool = Field(
        True, description="Retrain when the dataset drifts (drift.drift_share of features)."
    )
    on_prediction_drift: bool = Field(
        False, description="Retrain when the distribution of predictions drifts."
    )
    on_quality_drop: bool = Field(
        True, description="Retrain when live quality (labels joined later) drops."
    )
    min_rows: int = Field(
        200, ge=1, description="With fewer logged rows in the window, never retrain."
    )
    always: bool = Field(
        False, description="Retrain whatever the evidence (a scheduled periodic refresh)."
    )


@dataclass
class RetrainDecision:
    retrain: bool
    reasons: list[str]
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_retraining(
    drift: dict[str, Any],
    quality: dict[str, Any] | None,
    rule: RetrainRule,
    training_data: str = "-",
) -> RetrainDecision:
    """Apply the rule to the drift verdict and the quality summary (None: no labels yet).

    `training_data` is what a retraining run would train on; empty: nothing (no labels
    arrived), and then no evidence can start one."""
    decision = _apply(drift, quality, rule)
    if decision.retrain and not training_data:
        due = "keep: retraining is due but no labelled rows exist to train on (give labels_uri)"
        return RetrainDecision(False, [due, *decision.reasons], decision.rows)
    return decision


def _apply(
    drift: dict[str, Any], quality: dict[str, Any] | None, rule: RetrainRule
) -> RetrainDecision:
    rows = int(drift["current_rows"])
    if rule.always:
        return RetrainDecision(True, ["retrain: the rule says always (periodic refresh)"], rows)
    if rows < rule.min_rows:
        return RetrainDecision(
            False, [f"keep: {rows} logged row(s) in the window, fewer than {rule.min_rows}"], rows
        )
    triggers, notes = [], []
    drifted = ", ".join(drift["drifted_features"]) or "none"
    share = f"{drift['drifted_share']:.0%} of features drifted ({drifted})"
    if drift["dataset_drift"]:
        (triggers if rule.on_data_drift else notes).append(f"data drift: {share}")
    else:
        notes.append(f"no data drift: {share}")
    prediction = drift.get("prediction")
    if prediction:
        said = f"{prediction['test']} {prediction['statistic']:.4g}"
        if prediction["drifted"]:
            (triggers if rule.on_prediction_drift else notes).append(f"prediction drift: {said}")
        else:
            notes.append(f"no prediction drift: {said}")
    if quality is None:
        notes.append("no labels joined yet: live quality unknown")
    elif quality["dropped"]:
        found = "; ".join(quality["drop_reasons"])
        (triggers if rule.on_quality_drop else notes).append(f"quality drop: {found}")
    else:
        notes.append("live quality holds")
    if triggers:
        return RetrainDecision(True, [f"retrain: {t}" for t in triggers] + notes, rows)
    return RetrainDecision(False, ["keep: nothing the rule retrains on", *notes], rows)


@component
def retrain(
    drift_verdict: Input[Artifact],
    quality: Input[Artifact],
    decision: Output[Artifact],
    training_data: str,
    model_name: str,
    model_version: str,
    rule: dict = {},  # noqa: B006 (KFP default, never mutated)
    pushgateway: str = "",
) -> bool:
    """Decide whether to retrain, from the drift verdict and the live quality; publish both.

    Args:
        drift_verdict: The drift step's JSON verdict (dataset drift, drifted features,
            prediction drift).
        quality: The quality step's JSON (an empty document when no labels were given).
        decision: JSON: retrain (bool), rows, and every reason, written either way.
        training_data: The labelled rows a retraining run would read ("": none, no retrain).
        model_name: The monitored model (a label on the published metrics).
        model_version: The champion's version (a label on the published metrics).
        rule: RetrainRule: on_data_drift, on_prediction_drift, on_quality_drop, min_rows,
            always.
        pushgateway: Prometheus Pushgateway URL for the drift and quality gauges (alerts
            and the dashboard read them); empty: not published.

    Returns:
        Whether to retrain.
    """
    import json

    from kfp_lifecycle.components.retrain import RetrainRule, decide_retraining, logger
    from kfp_lifecycle.monitoring_metrics import push_monitoring_metrics

    with open(drift_verdict.path) as handle:
        verdict = json.load(handle)
    with open(quality.path) as handle:
        live = json.load(handle) or None
    push_monitoring_metrics(pushgateway, model_name, model_version, verdict, live)
    result = decide_retraining(verdict, live, RetrainRule.model_validate(rule), training_data)
    with open(decision.path, "w") as handle:
        json.dump(result.to_dict(), handle, indent=2)
    decision.metadata["retrain"] = result.retrain
    logger.info(("RETRAIN" if result.retrain else "KEEP") + "\n  " + "\n  ".join(result.reasons))
    return result.retrain
