"""Tuning: seeded, within its budgets, defaults first and never beaten by the best it keeps."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset, Model
from pydantic import ValidationError

from kfp_lifecycle.components.balance import BalanceOptions, balance_training_rows
from kfp_lifecycle.components.features import fit_feature_selector
from kfp_lifecycle.components.preprocess import fit_preprocessor, save_preprocessor
from kfp_lifecycle.components.report import _tuning_section
from kfp_lifecycle.components.split import SplitOptions, split_table
from kfp_lifecycle.components.train import (
    cross_validation_matrices,
    make_estimator,
    train,
    train_model,
    tune_family,
)
from kfp_lifecycle.components.tune import TuneOptions, chosen_params
from kfp_lifecycle.core.bundle import read_metadata
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION
from kfp_lifecycle.families.random_forest import grow_forest

REPORTED_KEYS = {
    "family", "metric", "greater_is_better", "objective", "default_score", "best_score",
    "best_params", "budget", "stopped_by", "elapsed_seconds", "trials",
}  # fmt: skip
TRIAL_KEYS = {"number", "params", "value", "state", "is_default"}

UNBOUNDED_SECONDS = 3600


@pytest.fixture(scope="module")
def prepared(churn):
    parts = split_table(churn, "churned", CLASSIFICATION, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, "churned", CLASSIFICATION)
    return parts, fitted, schema


def _study(prepared, family="linear", **options):
    """A study bounded by its trial count: a busy machine must not turn the time budget into
    the reason a test sees fewer trials (the time budget has a test of its own)."""
    options.setdefault("timeout_seconds", UNBOUNDED_SECONDS)
    parts, fitted, _ = prepared
    return tune_family(parts.train, parts.validation, "churned", CLASSIFICATION, family, fitted,
                       "roc_auc", TuneOptions(**options))  # fmt: skip


def _refit(prepared, family, study):
    parts, fitted, schema = prepared
    return train_model(parts.train, parts.validation, "churned", CLASSIFICATION, family, fitted,
                       schema, params=chosen_params(study))  # fmt: skip


def _run_train_step(tmp_path, parts, fitted, schema, rows, family, **options):
    """The train component's own body on `rows` (the balance step's output, or the real
    training rows), the preprocessing fitted on parts.train; returns its model and trials."""
    save_preprocessor(tmp_path / "preprocessor", fitted, schema)
    rows.to_parquet(tmp_path / "rows.parquet")
    parts.train.to_parquet(tmp_path / "real.parquet")
    parts.validation.to_parquet(tmp_path / "validation.parquet")
    resolved = {"task": CLASSIFICATION, "primary_metric": "roc_auc"}
    (tmp_path / "validation.json").write_text(json.dumps(resolved))
    model = Model(uri=str(tmp_path / "model"))
    trials = Artifact(uri=str(tmp_path / "trials.json"))
    train.python_func(
        train=Dataset(uri=str(tmp_path / "rows.parquet")),
        validation=Dataset(uri=str(tmp_path / "validation.parquet")),
        preprocessor=Artifact(uri=str(tmp_path / "preprocessor")),
        fitted_rows=Dataset(uri=str(tmp_path / "real.parquet")),
        validation_report=Artifact(uri=str(tmp_path / "validation.json")),
        target="churned",
        family=family,
        model=model,
        trials=trials,
        **options,
    )
    return model, trials


def test_defaults_come_first_and_the_best_is_never_worse(prepared):
    study = _study(prepared, trials=8)
    assert set(study) >= REPORTED_KEYS and study["objective"] == "maximize"
    first = study["trials"][0]
    assert first["is_default"] and first["params"] == {"C": 1.0}
    assert not any(t["is_default"] for t in study["trials"][1:])
    assert all(set(t) >= TRIAL_KEYS for t in study["trials"])
    assert study["default_score"] == first["value"]
    assert study["best_score"] >= study["default_score"]
    assert study["budget"] == {"trials": 8, "timeout_seconds": UNBOUNDED_SECONDS}
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


def test_the_time_budget_stops_the_search_and_says_so(prepared, caplog):
    with caplog.at_level(logging.INFO, logger="kfp_lifecycle.components.tune"):
        study = _study(prepared, "random_forest", trials=500, timeout_seconds=1)
    assert study["stopped_by"] == "timeout" and 1 <= len(study["trials"]) < 500
    assert study["elapsed_seconds"] < 30  # the running trial finishes, then it stops
    assert "the time budget (1s) stopped the search" in caplog.text


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
                        "rmse", TuneOptions(trials=6))  # fmt: skip
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
        TuneOptions(**options)


def test_the_component_writes_the_history_the_report_draws(tmp_path, prepared, caplog):
    caplog.set_level(logging.INFO)  # the step logs its progress; the CLI decides who sees it
    parts, fitted, schema = prepared
    model, trials = _run_train_step(
        tmp_path, parts, fitted, schema, parts.train, "xgboost",
        tune={"trials": 3, "early_stopping_rounds": 10},
    )  # fmt: skip
    study = json.loads(Path(trials.path).read_text())
    assert set(study) >= REPORTED_KEYS and len(study["trials"]) == 3
    assert study["family"] == "xgboost" and study["budget"]["trials"] == 3
    metadata = read_metadata(model.path)
    assert metadata["params"]["early_stopping_rounds"] == 10
    tuning = metadata["tuning"]
    assert tuning["trials_run"] == 3 and tuning["best_params"] == study["best_params"]
    assert tuning["best_score"] == pytest.approx(metadata["metrics"]["validation"]["roc_auc"])
    assert tuning["default_score"] == study["default_score"] <= tuning["best_score"]
    out = caplog.text
    assert "xgboost: trial 3/3" in out and "stopped by trials" in out
    section = "".join(_tuning_section([study]).parts)
    assert "data:image/png;base64," in section and "3 of 3" in section


# --- objective cv: folds that leak nothing -------------------------------------------------


def _rows_of(matrix: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(matrix)}


@pytest.fixture(scope="module")
def selected(prepared):
    """The pipeline's preprocessor: the fitted transform with feature selection appended."""
    parts, fitted, _ = prepared
    pipeline, _ = fit_feature_selector(fitted, parts.train, "churned", CLASSIFICATION)
    return pipeline


@pytest.mark.parametrize("strategy", ["oversample", "smote"])
def test_cv_keeps_copies_and_synthetic_rows_on_the_training_side(prepared, selected, strategy):
    parts, _, _ = prepared
    real = parts.train.reset_index(drop=True)
    options = BalanceOptions(strategy=strategy)
    balanced, _ = balance_training_rows(parts.train, "churned", CLASSIFICATION, options)
    assert len(balanced) > len(real)  # 720 real rows grow to 1228
    folds = cross_validation_matrices(balanced, parts.validation, "churned", CLASSIFICATION,
                                      selected, parts.train, 3, 42, None, options)  # fmt: skip
    held = np.concatenate([fold.held_out_rows for fold in folds])
    assert sorted(held) == list(range(len(real)))  # real rows only, each scored once
    for fold in folds:
        inside = fold.train_origins[fold.train_origins >= 0]
        assert not set(inside) & set(fold.held_out_rows)
        assert len(fold.x_train) > len(set(inside))  # the fold's own copies / synthetic rows
        if strategy == "smote":
            assert (fold.train_origins == -1).any()
        else:
            assert (fold.train_origins >= 0).all()
        # The held-out matrix is exactly the fold's transform of its real rows ...
        rows = real.iloc[fold.held_out_rows].drop(columns=["churned"])
        assert np.allclose(fold.x_held_out, fold.preprocessor.transform(rows))
        # ... and no held-out row has a copy among the rows the fold trains on.
        assert not _rows_of(fold.x_held_out) & _rows_of(fold.x_train)
    study = tune_family(balanced, parts.validation, "churned", CLASSIFICATION, "linear",
                        selected, "roc_auc", TuneOptions(trials=2, objective="cv"), 42,
                        parts.train, None, options)  # fmt: skip
    assert study["objective_data"] == "cv" and sum(study["cv"]["held_out_rows"]) == len(real)


def test_cv_refuses_resampled_rows_it_cannot_replay(prepared, selected):
    parts, _, _ = prepared
    balanced, _ = balance_training_rows(
        parts.train, "churned", CLASSIFICATION, BalanceOptions(strategy="oversample")
    )
    with pytest.raises(DataError, match=r"replays the balance step.*pass the balance options"):
        tune_family(balanced, parts.validation, "churned", CLASSIFICATION, "linear", selected,
                    "roc_auc", TuneOptions(objective="cv"), 42, parts.train)  # fmt: skip


def test_each_fold_refits_the_preprocessing_on_its_own_training_rows(prepared, selected):
    parts, _, _ = prepared
    real = parts.train.reset_index(drop=True)
    folds = cross_validation_matrices(parts.train, parts.validation, "churned", CLASSIFICATION,
                                      selected, parts.train, 3)  # fmt: skip
    for fold in folds:
        names = list(fold.preprocessor.get_feature_names_out())
        tenure = fold.x_train[:, names.index("numeric__tenure_months")]
        # Standardised on the fold's training rows: mean 0 and unit variance there exactly.
        assert abs(tenure.mean()) < 1e-9 and tenure.std() == pytest.approx(1.0)
        rows = real.iloc[fold.held_out_rows].drop(columns=["churned"])
        assert not np.allclose(fold.x_held_out, selected.transform(rows))  # not the full fit
        assert "datetime__signup_date_year" not in names  # the selection still applies


@pytest.fixture(scope="module")
def customers(churn):
    """Churn rows of 150 customers, 8 rows each, split by customer."""
    frame = churn.assign(customer=[f"c{i % 150}" for i in range(len(churn))])
    options = SplitOptions(strategy="group", group_column="customer")
    parts = split_table(frame, "churned", CLASSIFICATION, options)
    fitted, schema, _ = fit_preprocessor(parts.train, "churned", CLASSIFICATION)
    return parts, fitted, schema, options


def test_group_split_cv_keeps_each_group_on_one_side(customers):
    parts, fitted, _, options = customers
    real = parts.train.reset_index(drop=True)
    folds = cross_validation_matrices(parts.train, parts.validation, "churned", CLASSIFICATION,
                                      fitted, parts.train, 3, 42, options)  # fmt: skip
    assert sorted(np.concatenate([f.held_out_rows for f in folds])) == list(range(len(real)))
    for fold in folds:
        trained = set(real["customer"].iloc[fold.train_origins])
        held_out = set(real["customer"].iloc[fold.held_out_rows])
        assert held_out and not trained & held_out
    study = tune_family(parts.train, parts.validation, "churned", CLASSIFICATION, "linear",
                        fitted, "roc_auc", TuneOptions(trials=2, objective="cv"), 42,
                        parts.train, options)  # fmt: skip
    assert study["cv"]["scheme"] == "group k-fold on 'customer'"


def test_time_split_cv_never_trains_on_later_rows(churn):
    options = SplitOptions(strategy="time", time_column="signup_date")
    parts = split_table(churn, "churned", CLASSIFICATION, options)
    fitted, _, _ = fit_preprocessor(parts.train, "churned", CLASSIFICATION)
    real = parts.train.reset_index(drop=True)
    times = pd.to_datetime(real["signup_date"])
    folds = cross_validation_matrices(parts.train, parts.validation, "churned", CLASSIFICATION,
                                      fitted, parts.train, 4, 42, options)  # fmt: skip
    assert len(folds) == 4
    for fold in folds:
        assert times.iloc[fold.train_origins].max() < times.iloc[fold.held_out_rows].min()
    held = np.concatenate([f.held_out_rows for f in folds])
    assert len(held) == len(set(held))  # each row scored at most once
    study = tune_family(parts.train, parts.validation, "churned", CLASSIFICATION, "linear",
                        fitted, "roc_auc", TuneOptions(trials=2, objective="cv", cv_folds=4),
                        42, parts.train, options)  # fmt: skip
    assert study["objective_data"] == "cv" and study["cv"]["folds"] == 4


def test_the_component_cuts_folds_by_the_split_and_replays_the_balancing(tmp_path, customers):
    parts, fitted, schema, options = customers
    balanced, _ = balance_training_rows(
        parts.train, "churned", CLASSIFICATION, BalanceOptions(strategy="oversample")
    )
    _, trials = _run_train_step(
        tmp_path, parts, fitted, schema, balanced, "linear",
        tune={"trials": 2, "objective": "cv"},
        split=options.model_dump(), balance={"strategy": "oversample"},
    )  # fmt: skip
    study = json.loads(Path(trials.path).read_text())
    assert study["objective_data"] == "cv"
    assert study["cv"]["scheme"] == "group k-fold on 'customer'"
    assert sum(study["cv"]["held_out_rows"]) == len(parts.train)  # real rows, once each
    assert read_metadata(tmp_path / "model")["tuning"]["objective_data"] == "cv"
