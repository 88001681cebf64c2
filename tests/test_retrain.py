"""The retraining rule: each trigger retrains only when the rule enables it."""

import json
from pathlib import Path

import pytest
from kfp.dsl import Artifact

from kfp_lifecycle.components.retrain import RetrainRule, decide_retraining, retrain


def _drift(dataset_drift=False, prediction_drift=False, rows=500):
    return {
        "current_rows": rows,
        "dataset_drift": dataset_drift,
        "drifted_share": 0.5 if dataset_drift else 0.0,
        "drifted_features": ["age", "plan"] if dataset_drift else [],
        "prediction": {"test": "chi-square p-value", "statistic": 0.001, "drifted": True}
        if prediction_drift
        else {"test": "chi-square p-value", "statistic": 0.6, "drifted": False},
    }


DROPPED = {"dropped": True, "drop_reasons": ["window 2026-11-02: roc_auc 0.61 < 0.74 - 0.05"]}
HOLDS = {"dropped": False, "drop_reasons": []}


@pytest.mark.parametrize(
    ("drift", "quality", "rule", "retrain", "first_reason"),
    [
        (_drift(), HOLDS, {}, False, "keep: nothing the rule retrains on"),
        (_drift(dataset_drift=True), None, {}, True, "retrain: data drift: 50% of features"),
        (_drift(dataset_drift=True), None, {"on_data_drift": False}, False, "keep"),
        (_drift(prediction_drift=True), HOLDS, {}, False, "keep"),
        (_drift(prediction_drift=True), HOLDS, {"on_prediction_drift": True}, True,
         "retrain: prediction drift: chi-square p-value 0.001"),
        (_drift(), DROPPED, {}, True, "retrain: quality drop: window 2026-11-02"),
        (_drift(), DROPPED, {"on_quality_drop": False}, False, "keep"),
        (_drift(dataset_drift=True, rows=50), DROPPED, {}, False,
         "keep: 50 logged row(s) in the window, fewer than 200"),
        (_drift(), HOLDS, {"always": True}, True, "retrain: the rule says always"),
    ],
)  # fmt: skip
def test_each_trigger_retrains_only_when_enabled(drift, quality, rule, retrain, first_reason):
    decision = decide_retraining(drift, quality, RetrainRule.model_validate(rule))
    assert decision.retrain is retrain
    assert decision.reasons[0].startswith(first_reason), decision.reasons


def test_the_reasons_say_what_did_not_trigger_too():
    decision = decide_retraining(_drift(dataset_drift=True), None, RetrainRule())
    assert decision.reasons[1:] == [
        "no prediction drift: chi-square p-value 0.6",
        "no labels joined yet: live quality unknown",
    ]


def test_no_labelled_rows_means_no_retraining_whatever_the_evidence():
    decision = decide_retraining(_drift(dataset_drift=True), None, RetrainRule(), "")
    assert decision.retrain is False
    assert decision.reasons[0].startswith("keep: retraining is due but no labelled rows")
    assert decision.reasons[1].startswith("retrain: data drift")  # the evidence stays visible


def test_unknown_rule_keys_are_named():
    with pytest.raises(ValueError, match="on_drift"):
        RetrainRule.model_validate({"on_drift": True})


def test_component_writes_the_decision_either_way(tmp_path):
    verdict = tmp_path / "verdict.json"
    verdict.write_text(json.dumps(_drift()))
    quality = tmp_path / "quality.json"
    quality.write_text("{}")  # no labels: an empty document
    decision = Artifact(uri=str(tmp_path / "decision.json"))
    decided = retrain.python_func(
        drift_verdict=Artifact(uri=str(verdict)),
        quality=Artifact(uri=str(quality)),
        decision=decision,
        training_data="",
        model_name="churn",
        model_version="1",
        rule={},
    )
    assert decided is False
    written = json.loads(Path(decision.path).read_text())
    assert written["retrain"] is False and written["rows"] == 500
    assert "no labels joined yet: live quality unknown" in written["reasons"]
