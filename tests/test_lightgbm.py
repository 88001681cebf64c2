"""LightGBM, the fifth family, added as one module: trained, tuned, diagnosed, explained and
served like the others."""

import json

import httpx
import numpy as np
import pytest
from bundles import build_bundle

from kfp_lifecycle.components.diagnose import DiagnoseOptions, diagnose_fit
from kfp_lifecycle.components.explain import ExplainOptions, explain_bundle, model_contributions
from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model, tune_family
from kfp_lifecycle.components.tune import TuneOptions, chosen_params
from kfp_lifecycle.core.bundle import load_bundle
from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.serving.explain import explain_rows
from kfp_lifecycle.serving.server import served_name

TARGET = "churned"


@pytest.fixture(scope="module")
def prepared(churn):
    parts = split_table(churn, TARGET, CLASSIFICATION, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, TARGET, CLASSIFICATION)
    return parts, fitted, schema


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, churn):
    return build_bundle(tmp_path_factory.mktemp("lightgbm"), churn, "lightgbm")


def test_it_stops_early_on_the_validation_rows(bundle_dir):
    bundle = load_bundle(bundle_dir)
    estimator = bundle.pipeline[-1]
    params = bundle.metadata["params"]
    assert type(estimator).__name__ == "LGBMClassifier"
    assert params["early_stopping_round"] == 20
    # it scored the validation rows each round and stopped 20 rounds after the best, long
    # before its 3000 trees; the model keeps (and predicts with) the trees up to the best
    (scores,) = estimator.evals_result_.values()
    assert estimator.best_iteration_ == params["best_iteration"] + 1
    assert len(scores["binary_logloss"]) == estimator.best_iteration_ + 20 < 3000
    assert estimator.booster_.num_trees() == estimator.best_iteration_
    assert bundle.metadata["metrics"]["validation"]["roc_auc"] > 0.65


def test_tuning_searches_its_space_and_the_final_fit_keeps_the_best(prepared):
    parts, fitted, schema = prepared
    options = TuneOptions(trials=3, early_stopping_rounds=5, timeout_seconds=3600)
    study = tune_family(parts.train, parts.validation, TARGET, CLASSIFICATION, "lightgbm",
                        fitted, "roc_auc", options)  # fmt: skip
    assert study["fixed_params"] == {"early_stopping_round": 5}
    assert len(study["trials"]) == 3 and study["trials"][0]["is_default"]
    assert set(study["trials"][1]["params"]) == {
        "learning_rate", "num_leaves", "min_child_samples", "subsample", "colsample_bytree",
        "reg_lambda",
    }  # fmt: skip
    assert all(isinstance(t["best_iteration"], int) for t in study["trials"])
    assert study["best_score"] >= study["default_score"]
    bundle = train_model(parts.train, parts.validation, TARGET, CLASSIFICATION, "lightgbm",
                         fitted, schema, params=chosen_params(study))  # fmt: skip
    assert bundle.metadata["params"]["early_stopping_round"] == 5
    assert bundle.metadata["params"]["best_iteration"] == study["best_iteration"]
    assert bundle.metadata["metrics"]["validation"]["roc_auc"] == pytest.approx(study["best_score"])


def test_cross_validation_tuning_stops_early_on_the_validation_rows(prepared):
    parts, fitted, _ = prepared
    options = TuneOptions(trials=2, objective="cv", cv_folds=2, timeout_seconds=3600)
    study = tune_family(parts.train, parts.validation, TARGET, CLASSIFICATION, "lightgbm",
                        fitted, "roc_auc", options)  # fmt: skip
    assert study["objective_data"] == "cv" and study["cv"]["folds"] == 2
    assert all(isinstance(t["best_iteration"], int) for t in study["trials"])


def test_diagnosis_sweeps_num_leaves_with_the_trees_early_stopping_kept(prepared, bundle_dir):
    parts, _, _ = prepared
    bundle = load_bundle(bundle_dir)
    result = diagnose_fit(bundle, parts.train, parts.validation, DiagnoseOptions(sizes=[0.5, 1]))
    curve = result["validation_curve"]
    assert curve["param"] == "num_leaves" and curve["current"] == 31
    assert curve["values"] == [2, 4, 8, 16, 31, 64, 128]
    assert len(curve["validation_scores"]) == len(curve["values"])
    # more leaves fit the rows seen better: the knob really reaches the model
    assert curve["train_scores"][-1] > curve["train_scores"][0]
    # at the full size the refit (no early stopping, the kept trees) is the bundle's model
    recorded = bundle.metadata["metrics"]["validation"]["roc_auc"]
    assert result["learning_curve"]["validation_scores"][-1] == pytest.approx(recorded, abs=1e-9)
    assert result["verdict"] in {"good fit", "overfitting", "underfitting"}


def test_global_explanation_has_shap_from_lightgbm_itself(prepared, bundle_dir):
    parts, _, _ = prepared
    bundle = load_bundle(bundle_dir)
    result = explain_bundle(bundle, parts.test, ExplainOptions(repeats=2))
    assert set(result["permutation_importance"]) == set(bundle.schema.names)
    shap = result["shap_mean_abs"]
    names = list(bundle.pipeline[:-1].get_feature_names_out())
    assert list(shap) == names and all(value >= 0 for value in shap.values())
    assert max(shap.values()) > 0


def test_contributions_add_up_to_the_raw_score(bundle_dir, churn):
    bundle = load_bundle(bundle_dir)
    rows = churn.drop(columns=[TARGET]).head(8)
    features = bundle.pipeline[:-1].transform(rows)
    raw = bundle.pipeline[-1].predict(features, raw_score=True)
    contributions, names = model_contributions(bundle, rows)
    assert contributions.shape == (8, len(names) + 1)
    np.testing.assert_allclose(contributions.sum(axis=1), raw, rtol=1e-6, atol=1e-6)
    for explanation, expected in zip(explain_rows(bundle, rows, top=10_000), raw, strict=True):
        total = explanation["bias"] + sum(explanation["contributions"].values())
        assert total == pytest.approx(float(expected), abs=1e-6)


def test_multiclass_contributions_explain_the_predicted_class(multiclass, tmp_path):
    parts = split_table(multiclass, "species", CLASSIFICATION, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, "species", CLASSIFICATION)
    bundle = train_model(parts.train, parts.validation, "species", CLASSIFICATION, "lightgbm",
                         fitted, schema)  # fmt: skip
    rows = parts.test.drop(columns=["species"]).head(6)
    raw = bundle.pipeline[-1].predict(bundle.pipeline[:-1].transform(rows), raw_score=True)
    contributions, names = model_contributions(bundle, rows)
    assert contributions.shape == (6, 3, len(names) + 1)
    np.testing.assert_allclose(contributions.sum(axis=2), raw, rtol=1e-6, atol=1e-6)
    explained = explain_rows(bundle, rows, top=10_000)
    for explanation, scores in zip(explained, raw, strict=True):
        assert explanation["raw_score"] == pytest.approx(float(scores.max()), abs=1e-6)


@pytest.mark.serving
def test_the_model_server_predicts_and_explains_a_lightgbm_bundle(bundle_dir, churn, start_server):
    bundle = load_bundle(bundle_dir)
    frame = churn.drop(columns=[TARGET]).head(3)
    rows = json.loads(frame.to_json(orient="records"))
    server = start_server(bundle_dir, served_name(bundle_dir))
    base = f"{server.url}/v1/models/{server.name}"
    predicted = httpx.post(f"{base}:predict", json={"instances": rows}, timeout=30)
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["predictions"] == bundle.predict(frame).labels
    explained = httpx.post(f"{base}:explain", json={"instances": rows}, timeout=30)
    assert explained.status_code == 200, explained.text
    body = explained.json()
    expected = explain_rows(bundle, frame)
    assert len(body["explanations"]) == 3
    for got, want in zip(body["explanations"], expected, strict=True):
        assert got["raw_score"] == pytest.approx(want["raw_score"], abs=1e-9)
        assert got["contributions"] == pytest.approx(want["contributions"], abs=1e-9)
