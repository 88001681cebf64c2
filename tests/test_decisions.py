"""Decisions that hold on small or skewed data: the positive class, ties, calibration and the
decision threshold."""

import numpy as np
import optuna
import pandas as pd
import pytest

from kfp_lifecycle.components.balance import BalanceOptions, balance_training_rows
from kfp_lifecycle.components.calibrate import CalibrateOptions, calibrate_bundle, threshold_for
from kfp_lifecycle.components.evaluate import evaluate_bundle
from kfp_lifecycle.components.gate import GateOptions, decide
from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.select import rank_candidates
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model
from kfp_lifecycle.components.tune import best_of
from kfp_lifecycle.components.validate import validate_table
from kfp_lifecycle.core.bundle import load_bundle, write_bundle
from kfp_lifecycle.core.documents import served
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION


def credit_table(rows: int = 4000, seed: int = 0) -> pd.DataFrame:
    """95% 'good', 5% 'bad' loans ('bad' sorts first: the old rule made 'good' positive)."""
    rng = np.random.default_rng(seed)
    income, debt = rng.normal(size=rows), rng.normal(size=rows)
    purpose = rng.choice(["car", "home", "study"], size=rows)
    logit = -5.6 - 2.0 * income + 2.0 * debt + 0.5 * (purpose == "study")
    bad = rng.random(rows) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {"income": income, "debt": debt, "purpose": purpose,
         "risk": np.where(bad, "bad", "good")}
    )  # fmt: skip


def test_the_minority_class_is_positive_unless_configured():
    table = credit_table(400)
    assert validate_table(table, "risk").positive_class == "bad"
    assert validate_table(table, "risk", positive_class="good").positive_class == "good"
    with pytest.raises(DataError, match="positive_class 'ok' is not a class of 'risk'"):
        validate_table(table, "risk", positive_class="ok")


def test_a_95_5_table_gets_minority_recall_and_calibrated_probabilities(tmp_path):
    table = credit_table()
    parts = split_table(table, "risk", CLASSIFICATION, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, "risk", CLASSIFICATION)
    # class weights, which push the probabilities of 'bad' far up
    weighted, _ = balance_training_rows(
        parts.train, "risk", CLASSIFICATION, BalanceOptions(strategy="class_weight")
    )
    bundle = train_model(
        weighted, parts.validation, "risk", CLASSIFICATION, "linear", fitted, schema,
        fitted_rows=parts.train,
    )  # fmt: skip
    assert bundle.classes == ["good", "bad"]  # the positive class last
    write_bundle(
        tmp_path / "raw", bundle.pipeline, {**bundle.metadata, "primary_metric": "roc_auc"}
    )
    before = evaluate_bundle(load_bundle(tmp_path / "raw"), parts.test)["metrics"]
    raw = load_bundle(tmp_path / "raw")
    calibration, report = calibrate_bundle(raw, parts.validation, CalibrateOptions())
    assert report["calibration"]["applied"] is True
    tuned = served(raw, calibration)
    result = evaluate_bundle(tuned, parts.test)
    metrics = result["metrics"]
    labels, counts = result["confusion_matrix"]["labels"], result["confusion_matrix"]["matrix"]
    assert labels == ["good", "bad"]
    recall_bad = counts[1][1] / sum(counts[1])
    assert recall_bad >= 0.5 and metrics["recall"] == pytest.approx(recall_bad)
    assert metrics["balanced_accuracy"] >= 0.7
    assert metrics["calibration_error"] <= 0.04 < before["calibration_error"]
    # the gate bounds calibration error (a ceiling): the raw model fails it, the calibrated passes
    bound = GateOptions(thresholds={"roc_auc": 0.8, "calibration_error": 0.05})
    assert decide(metrics, CLASSIFICATION, bound).blessed
    refused = decide(before, CLASSIFICATION, bound)
    assert not refused.blessed and any("calibration_error" in r for r in refused.reasons)
    # served probabilities are the calibrated ones
    probabilities = tuned.predict(parts.test.drop(columns=["risk"])).probabilities[:, 1]
    assert abs(probabilities.mean() - (parts.test["risk"] == "bad").mean()) < 0.02


def test_too_few_validation_rows_of_a_class_keep_the_prior_default():
    y = np.array(["bad"] * 6 + ["good"] * 94)
    scores = np.linspace(0, 1, 100)[::-1]
    threshold, evidence = threshold_for(y, scores, "bad", CalibrateOptions())
    assert evidence["strategy"] == "prior" and threshold == 0.06
    assert "only 6 validation row(s) of a class, fewer than 30" in evidence["reason"]
    threshold, evidence = threshold_for(y, scores, "bad", CalibrateOptions(min_rows_per_class=5))
    assert evidence["strategy"] == "f1" and threshold != 0.06


def test_a_threshold_is_kept_only_when_it_holds_out_of_fold():
    # calibrated scores, a false negative costing 20 false positives: the cost-optimal
    # threshold (~1/21) is far below the prior default and holds on held-out folds
    rng = np.random.default_rng(1)
    scores = rng.beta(1, 4, 300)
    y = np.where(rng.random(300) < scores, "yes", "no")
    options = CalibrateOptions(strategy="cost", cost_false_negative=20)
    threshold, evidence = threshold_for(y, scores, "yes", options)
    held_out = evidence["cross_validation"]
    assert evidence["strategy"] == "cost" and threshold < 0.1 < held_out["default_threshold"]
    assert held_out["folds"] == 5 and held_out["chosen"] > held_out["default"]
    assert "holds out of fold" in evidence["reason"]
    # scores that carry no signal: a balanced-accuracy threshold chosen on the rows is
    # noise, and out of fold it mostly loses to the prior default, which is then kept
    kept = 0
    for seed in range(20):
        noise = np.random.default_rng(seed).uniform(0, 1, 120)
        labels = np.where(np.arange(120) % 3 == 0, "yes", "no")
        threshold, evidence = threshold_for(
            labels, noise, "yes", CalibrateOptions(strategy="balanced_accuracy")
        )
        if evidence["strategy"] == "prior":
            kept += 1
            assert threshold == 0.3333 and "does not beat the prior" in evidence["reason"]
    assert kept >= 12


def _candidate(family: str, roc_auc: float, log_loss: float) -> dict:
    return {"family": family, "metrics": {"validation": {"roc_auc": roc_auc, "log_loss": log_loss}}}


def test_near_ties_on_the_primary_metric_go_to_the_better_log_loss():
    squashed = _candidate("linear", 1.0, 0.45)
    sharp = _candidate("random_forest", 0.998, 0.08)
    worse = _candidate("xgboost", 0.97, 0.01)
    ranked = rank_candidates([squashed, sharp, worse], "roc_auc")
    assert [c["family"] for c in ranked] == ["random_forest", "linear", "xgboost"]


def _study(trials: list[tuple[float, float, float]]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    distributions = {"C": optuna.distributions.FloatDistribution(1e-3, 1e2, log=True)}
    for c, auc, loss in trials:
        study.add_trial(
            optuna.trial.create_trial(params={"C": c}, distributions=distributions, value=auc,
                                      user_attrs={"tie_breaker": loss})
        )  # fmt: skip
    return study


def test_tuning_breaks_exact_ties_by_log_loss():
    # wine: a whole range of C reaches ROC-AUC 1.0; the first found squashes probabilities
    study = _study([(0.006, 1.0, 0.55), (1.0, 1.0, 0.10), (10.0, 0.99, 0.05)])
    assert study.best_trial.params["C"] == 0.006
    assert best_of(study, "roc_auc", CLASSIFICATION).params["C"] == 1.0


def test_tuning_keeps_the_best_trial_over_a_near_tie():
    # breast cancer: one validation pair apart is not a tie between neighbouring settings
    study = _study([(3.17, 0.99803, 0.059), (0.62, 0.99836, 0.067)])
    assert best_of(study, "roc_auc", CLASSIFICATION).params["C"] == 0.62
