import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from kfp_lifecycle.components.evaluate import evaluate_bundle
from kfp_lifecycle.components.preprocess import PreprocessOptions, fit_preprocessor
from kfp_lifecycle.components.select import leaderboard, rank_candidates
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import make_estimator, train_model, training_matrix
from kfp_lifecycle.core.bundle import load_bundle, write_bundle
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION, metrics_for
from kfp_lifecycle.families import FAMILIES

# fixture, target, task, and a floor well above chance for the data's real signal
CASES = {
    "binary": ("churn", "churned", CLASSIFICATION, 0.65),
    "multiclass": ("multiclass", "species", CLASSIFICATION, 0.85),
    "regression": ("regression", "price", REGRESSION, 0.8),
}


def _train(frame, target, task, family):
    parts = split_table(frame, target, task, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, target, task)
    return train_model(parts.train, parts.validation, target, task, family, fitted, schema), parts


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_family_learns_every_task(request, case, family):
    fixture, target, task, floor = CASES[case]
    bundle, parts = _train(request.getfixturevalue(fixture), target, task, family)
    validation = bundle.metadata["metrics"]["validation"]
    assert sorted(validation) == sorted(metrics_for(task))
    if task == CLASSIFICATION:
        assert validation["roc_auc"] > floor, validation
        prediction = bundle.predict(parts.test.drop(columns=[target]))
        assert set(prediction.labels) <= set(bundle.classes)
        assert np.allclose(prediction.probabilities.sum(axis=1), 1.0)
    else:
        assert validation["r2"] > floor, validation


def test_xgboost_stops_early_on_validation_rows(churn):
    bundle, _ = _train(churn, "churned", CLASSIFICATION, "xgboost")
    best = bundle.metadata["params"]["best_iteration"]
    assert 0 < best < bundle.metadata["params"]["n_estimators"] - 1


def test_unknown_family_is_refused(churn):
    with pytest.raises(DataError, match="unknown model family 'svm'; choose from: linear"):
        _train(churn, "churned", CLASSIFICATION, "svm")


def test_evaluation_holds_confusion_matrix_and_roc_for_binary(tmp_path, churn):
    bundle, parts = _train(churn, "churned", CLASSIFICATION, "linear")
    write_bundle(tmp_path, bundle.pipeline, bundle.metadata)
    result = evaluate_bundle(load_bundle(tmp_path), parts.test)
    matrix = np.asarray(result["confusion_matrix"]["matrix"])
    assert result["confusion_matrix"]["labels"] == ["no", "yes"]
    assert matrix.sum() == len(parts.test) == result["rows"]
    assert matrix[1].sum() == (parts.test["churned"] == "yes").sum()
    curve = result["roc_curve"]
    assert curve["fpr"][0] == 0.0 and curve["tpr"][-1] == 1.0
    assert len(curve["fpr"]) <= 200
    assert all(0.0 <= t <= 1.0 for t in curve["thresholds"])


def test_regression_evaluation_has_no_classification_parts(tmp_path, regression):
    bundle, parts = _train(regression, "price", REGRESSION, "linear")
    write_bundle(tmp_path, bundle.pipeline, bundle.metadata)
    result = evaluate_bundle(load_bundle(tmp_path), parts.test)
    assert set(result["metrics"]) == {"rmse", "mae", "r2", "mape"}
    assert "confusion_matrix" not in result and "roc_curve" not in result


def test_ranking_follows_the_metric_direction():
    candidates = [
        {"family": "a", "metrics": {"validation": {"rmse": 3.0, "roc_auc": 0.7}}},
        {"family": "b", "metrics": {"validation": {"rmse": 1.0, "roc_auc": 0.9}}},
        {"family": "c", "metrics": {"validation": {"rmse": 2.0, "roc_auc": 0.8}}},
    ]
    assert [c["family"] for c in rank_candidates(candidates, "rmse")] == ["b", "c", "a"]
    ranked = rank_candidates(candidates, "roc_auc")
    assert list(leaderboard(ranked, "roc_auc")) == ["b", "c", "a"]


def test_target_encoded_training_rows_do_not_see_their_own_labels():
    """A 600-value category of pure noise, target-encoded: with the encoder's plain
    transform the forest memorises the noise; with cross-fitted encodings it does not."""
    rng = np.random.default_rng(0)
    rows = 3000
    signal = rng.normal(size=rows)
    frame = pd.DataFrame(
        {
            "signal": signal,
            "noise_id": rng.integers(0, 600, size=rows).astype(str),
            "y": np.where(signal + rng.normal(scale=1.0, size=rows) > 0, "a", "b"),
        }
    )
    parts = split_table(frame, "y", CLASSIFICATION, seed=0)
    options = PreprocessOptions(encoding="target", drop_id_like=False)
    fitted, schema, _ = fit_preprocessor(parts.train, "y", CLASSIFICATION, options)
    honest = train_model(
        parts.train, parts.validation, "y", CLASSIFICATION, "random_forest", fitted, schema
    )
    leaky_matrix = fitted.transform(parts.train.drop(columns=["y"]))
    assert not np.allclose(leaky_matrix, training_matrix(fitted, parts.train, "y", None, None))
    forest = make_estimator("random_forest", CLASSIFICATION)
    forest.fit(leaky_matrix, parts.train["y"] == "b")
    x_valid = fitted.transform(parts.validation.drop(columns=["y"]))
    leaky_auc = roc_auc_score(parts.validation["y"] == "b", forest.predict_proba(x_valid)[:, 1])
    honest_auc = honest.metadata["metrics"]["validation"]["roc_auc"]
    assert honest_auc > leaky_auc + 0.03, (honest_auc, leaky_auc)
