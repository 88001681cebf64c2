import pytest

from kfp_lifecycle.components.gate import decide
from kfp_lifecycle.errors import LifecycleError
from kfp_lifecycle.tasks import CLASSIFICATION, REGRESSION

METRICS = {"roc_auc": 0.82, "recall": 0.4, "accuracy": 0.9}


def test_blessed_when_every_threshold_is_met():
    decision = decide(METRICS, {"roc_auc": 0.8, "recall": 0.4}, CLASSIFICATION)
    assert decision.blessed
    assert decision.reasons == [
        "pass: roc_auc = 0.8200 (required >= 0.8)",
        "pass: recall = 0.4000 (required >= 0.4)",
    ]


def test_one_failed_threshold_refuses_and_says_which():
    decision = decide(METRICS, {"roc_auc": 0.8, "recall": 0.5}, CLASSIFICATION)
    assert not decision.blessed
    assert "FAIL: recall = 0.4000 (required >= 0.5)" in decision.reasons


def test_error_metrics_are_ceilings():
    assert decide({"rmse": 9.0, "r2": 0.5}, {"rmse": 10.0}, REGRESSION).blessed
    assert not decide({"rmse": 11.0, "r2": 0.5}, {"rmse": 10.0}, REGRESSION).blessed


def test_no_threshold_means_no_blessing():
    decision = decide(METRICS, {}, CLASSIFICATION)
    assert not decision.blessed
    assert "no threshold configured" in decision.reasons[0]


def test_threshold_on_a_metric_of_another_task_is_an_error():
    with pytest.raises(LifecycleError, match="unknown metric"):
        decide(METRICS, {"rmse": 1.0}, CLASSIFICATION)
