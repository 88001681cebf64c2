"""Tuning: seeded, within its budgets, defaults first and never beaten by the best it keeps."""

import json

import pytest
from pydantic import ValidationError

from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.report import _tuning_section
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model, tune_family
from kfp_lifecycle.components.tune import TuningOptions
from kfp_lifecycle.tasks import CLASSIFICATION, REGRESSION


@pytest.fixture(scope="module")
def prepared(churn):
    parts = split_table(churn, "churned", CLASSIFICATION, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, "churned", CLASSIFICATION)
    return parts, fitted, schema


def _study(prepared, family="linear", **options):
    parts, fitted, _ = prepared
    return tune_family(parts.train, parts.validation, "churned", CLASSIFICATION, family, fitted,
                       "roc_auc", TuningOptions(**options))  # fmt: skip


def test_defaults_come_first_and_the_best_is_never_worse(prepared):
    study = _study(prepared, trials=8)
    first = study["trials"][0]
    assert first["is_default"] and first["params"] == {"C": 1.0}
    assert study["default_score"] == first["value"]
    assert study["best_score"] >= study["default_score"]
    assert len(study["trials"]) == 8 and study["stopped_by"] == "trials"


def test_the_default_trial_scores_what_training_with_defaults_scores(prepared):
    parts, fitted, schema = prepared
    study = _study(prepared, "xgboost", trials=1)
    bundle = train_model(parts.train, parts.validation, "churned", CLASSIFICATION, "xgboost",
                         fitted, schema)  # fmt: skip
    assert study["default_score"] == pytest.approx(
        bundle.metadata["metrics"]["validation"]["roc_auc"]
    )
    assert study["best_iteration"] == bundle.metadata["params"]["best_iteration"]


def test_the_same_seed_gives_the_same_search(prepared):
    first, again = _study(prepared, trials=5), _study(prepared, trials=5)
    assert [t["params"] for t in first["trials"]] == [t["params"] for t in again["trials"]]
    other = _study(prepared, trials=5, seed=7)
    assert [t["params"] for t in other["trials"]] != [t["params"] for t in first["trials"]]


def test_the_time_budget_stops_the_search(prepared):
    study = _study(prepared, "random_forest", trials=500, timeout_seconds=2)
    assert study["stopped_by"] == "timeout" and 1 <= len(study["trials"]) < 500
    assert study["elapsed_seconds"] < 30  # the running trial finishes, then it stops


def test_cross_validation_objective_prunes_lagging_trials(prepared):
    study = _study(prepared, "hist_gradient_boosting", trials=10, objective="cv", cv_folds=3)
    assert study["objective_data"] == "cv"
    states = {t["state"] for t in study["trials"]}
    assert states <= {"COMPLETE", "PRUNED"} and "COMPLETE" in states


def test_disabled_tuning_evaluates_the_defaults_only(prepared):
    study = _study(prepared, "xgboost", enabled=False)
    assert len(study["trials"]) == 1 and study["best_params"] == study["default_params"]


def test_regression_minimises_its_error(regression):
    parts = split_table(regression, "price", REGRESSION, seed=0)
    fitted, _, _ = fit_preprocessor(parts.train, "price", REGRESSION)
    study = tune_family(parts.train, parts.validation, "price", REGRESSION, "linear", fitted,
                        "rmse", TuningOptions(trials=6))  # fmt: skip
    assert study["objective"] == "minimize" and study["best_score"] <= study["default_score"]


def test_bad_options_are_named():
    with pytest.raises(ValidationError, match="objective"):
        TuningOptions(objective="holdout")
    with pytest.raises(ValidationError, match="trials"):
        TuningOptions(trials=0)


def test_the_report_draws_the_history(prepared):
    study = json.loads(json.dumps(_study(prepared, trials=4)))  # as the artifact holds it
    section = "".join(_tuning_section([study]).parts)
    assert "data:image/png;base64," in section and "4 of 4" in section
