"""Tuning: seeded, within its budgets, defaults first and never beaten by the best it keeps."""

import json
from pathlib import Path

import numpy as np
import pytest
from kfp.dsl import Artifact, Dataset, Model
from pydantic import ValidationError

from kfp_lifecycle.bundle import read_metadata
from kfp_lifecycle.components.preprocess import fit_preprocessor, save_preprocessor
from kfp_lifecycle.components.report import _tuning_section
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import make_estimator, train, train_model, tune_family
from kfp_lifecycle.components.tune import TuningOptions, chosen_params, grow_forest
from kfp_lifecycle.tasks import CLASSIFICATION, REGRESSION

REPORTED_KEYS = {
    "family", "metric", "greater_is_better", "objective", "default_score", "best_score",
    "best_params", "budget", "stopped_by", "elapsed_seconds", "trials",
}  # fmt: skip
TRIAL_KEYS = {"number", "params", "value", "state", "is_default"}


@pytest.fixture(scope="module")
def prepared(churn):
    parts = split_table(churn, "churned", CLASSIFICATION, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, "churned", CLASSIFICATION)
    return parts, fitted, schema


def _study(prepared, family="linear", **options):
    parts, fitted, _ = prepared
    return tune_family(parts.train, parts.validation, "churned", CLASSIFICATION, family, fitted,
                       "roc_auc", TuningOptions(**options))  # fmt: skip


def _refit(prepared, family, study):
    parts, fitted, schema = prepared
    return train_model(parts.train, parts.validation, "churned", CLASSIFICATION, family, fitted,
                       schema, params=chosen_params(study))  # fmt: skip


def test_defaults_come_first_and_the_best_is_never_worse(prepared):
    study = _study(prepared, trials=8)
    assert set(study) >= REPORTED_KEYS and study["objective"] == "maximize"
    first = study["trials"][0]
    assert first["is_default"] and first["params"] == {"C": 1.0}
    assert not any(t["is_default"] for t in study["trials"][1:])
    assert all(set(t) >= TRIAL_KEYS for t in study["trials"])
    assert study["default_score"] == first["value"]
    assert study["best_score"] >= study["default_score"]
    assert study["budget"] == {"trials": 8, "timeout_seconds": 60}
    assert len(study["trials"]) == 8 and study["stopped_by"] == "trials"


def test_the_final_fit_scores_what_the_best_trial_scored(prepared):
    study = _study(prepared, trials=4)
    bundle = _refit(prepared, "linear", study)
    assert bundle.metadata["metrics"]["validation"]["roc_auc"] == pytest.approx(study["best_score"])


def test_xgboost_stops_early_and_records_the_trees_it_kept(prepared):
    study = _study(prepared, "xgboost", trials=3, early_stopping_rounds=5)
    assert study["fixed_params"] == {"early_stopping_rounds": 5}
    assert all(isinstance(t["best_iteration"], int) for t in study["trials"])
    bundle = _refit(prepared, "xgboost", study)
    params = bundle.metadata["params"]
    assert params["early_stopping_rounds"] == 5
    assert params["best_iteration"] == study["best_iteration"]
    assert bundle.metadata["metrics"]["validation"]["roc_auc"] == pytest.approx(study["best_score"])


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
    assert first["best_params"] == again["best_params"]
    other = _study(prepared, trials=5, seed=7)
    assert [t["params"] for t in other["trials"]] != [t["params"] for t in first["trials"]]


def test_the_time_budget_stops_the_search_and_says_so(prepared, capsys):
    study = _study(prepared, "random_forest", trials=500, timeout_seconds=1)
    assert study["stopped_by"] == "timeout" and 1 <= len(study["trials"]) < 500
    assert study["elapsed_seconds"] < 30  # the running trial finishes, then it stops
    assert "the time budget (1s) stopped the search" in capsys.readouterr().out


def test_a_growing_forest_is_the_forest_a_single_fit_gives(prepared):
    parts, fitted, _ = prepared
    x = fitted.transform(parts.train.drop(columns=["churned"]))
    y = parts.train["churned"].to_numpy()
    single = make_estimator("random_forest", CLASSIFICATION).set_params(n_estimators=250)
    single.fit(x, y)
    grown = make_estimator("random_forest", CLASSIFICATION).set_params(n_estimators=250)
    steps = []
    grow_forest(grown, x, y, None, lambda forest: len(forest.estimators_),
                lambda value, trees: steps.append((value, trees)))  # fmt: skip
    assert steps == [(100, 100), (200, 200), (250, 250)] and not grown.warm_start
    assert np.allclose(single.predict_proba(x), grown.predict_proba(x))


def test_forest_trials_are_pruned_by_stage_and_the_survivor_refits_alike(prepared):
    study = _study(prepared, "random_forest", trials=8)
    states = [t["state"] for t in study["trials"]]
    assert set(states) == {"COMPLETE", "PRUNED"} and states[0] == "COMPLETE"
    bundle = _refit(prepared, "random_forest", study)
    assert bundle.metadata["metrics"]["validation"]["roc_auc"] == pytest.approx(study["best_score"])


def test_cross_validation_objective_prunes_lagging_trials(prepared):
    study = _study(prepared, "hist_gradient_boosting", trials=8, objective="cv", cv_folds=3)
    assert study["objective_data"] == "cv"
    states = [t["state"] for t in study["trials"]]
    assert set(states) == {"COMPLETE", "PRUNED"} and states[0] == "COMPLETE"
    assert study["best_score"] >= study["default_score"]


def test_disabled_tuning_evaluates_the_defaults_only(prepared):
    study = _study(prepared, "xgboost", enabled=False, trials=50)
    assert len(study["trials"]) == 1 and study["trials"][0]["is_default"]
    assert study["best_params"] == study["default_params"]
    assert study["budget"]["trials"] == 1 and study["stopped_by"] == "trials"
    assert study["best_score"] == study["default_score"]


def test_regression_minimises_its_error(regression):
    parts = split_table(regression, "price", REGRESSION, seed=0)
    fitted, _, _ = fit_preprocessor(parts.train, "price", REGRESSION)
    study = tune_family(parts.train, parts.validation, "price", REGRESSION, "linear", fitted,
                        "rmse", TuningOptions(trials=6))  # fmt: skip
    assert study["objective"] == "minimize" and study["greater_is_better"] is False
    assert study["best_score"] <= study["default_score"]


@pytest.mark.parametrize(
    "options, field",
    [
        ({"objective": "holdout"}, "objective"),
        ({"trials": 0}, "trials"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"cv_folds": 1}, "cv_folds"),
        ({"early_stopping_rounds": 0}, "early_stopping_rounds"),
        ({"trails": 5}, "trails"),
    ],
)
def test_bad_options_are_named(options, field):
    with pytest.raises(ValidationError, match=field):
        TuningOptions(**options)


def test_the_component_writes_the_history_the_report_draws(tmp_path, prepared, capsys):
    parts, fitted, schema = prepared
    save_preprocessor(tmp_path / "preprocessor", fitted, schema)
    parts.train.to_parquet(tmp_path / "train.parquet")
    parts.validation.to_parquet(tmp_path / "validation.parquet")
    resolved = {"task": CLASSIFICATION, "primary_metric": "roc_auc"}
    (tmp_path / "validation.json").write_text(json.dumps(resolved))
    trials = Artifact(uri=str(tmp_path / "trials.json"))
    model = Model(uri=str(tmp_path / "model"))
    train.python_func(
        train=Dataset(uri=str(tmp_path / "train.parquet")),
        validation=Dataset(uri=str(tmp_path / "validation.parquet")),
        preprocessor=Artifact(uri=str(tmp_path / "preprocessor")),
        fitted_rows=Dataset(uri=str(tmp_path / "train.parquet")),
        validation_report=Artifact(uri=str(tmp_path / "validation.json")),
        target="churned",
        family="xgboost",
        model=model,
        trials=trials,
        tuning={"trials": 3, "early_stopping_rounds": 10},
    )
    study = json.loads(Path(trials.path).read_text())
    assert set(study) >= REPORTED_KEYS and len(study["trials"]) == 3
    assert study["family"] == "xgboost" and study["budget"]["trials"] == 3
    metadata = read_metadata(model.path)
    assert metadata["params"]["early_stopping_rounds"] == 10
    tuning = metadata["tuning"]
    assert tuning["trials_run"] == 3 and tuning["best_params"] == study["best_params"]
    assert tuning["best_score"] == pytest.approx(metadata["metrics"]["validation"]["roc_auc"])
    assert tuning["default_score"] == study["default_score"] <= tuning["best_score"]
    out = capsys.readouterr().out
    assert "xgboost: trial 3/3" in out and "stopped by trials" in out
    section = "".join(_tuning_section([study]).parts)
    assert "data:image/png;base64," in section and "3 of 3" in section
