"""Fit diagnosis: a model built to overfit and one built to underfit get the right verdict."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset, Model
from pydantic import ValidationError

from kfp_lifecycle.components.balance import BalanceOptions, balance_training_rows
from kfp_lifecycle.components.diagnose import (
    DiagnoseOptions,
    _curve_hints,
    diagnose,
    diagnose_fit,
    nested_order,
    skill,
    suggest,
)
from kfp_lifecycle.components.features import fit_feature_selector
from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.report import _learning_section
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model
from kfp_lifecycle.core.bundle import write_bundle
from kfp_lifecycle.core.documents import Calibration, Diagnosis, read_document
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION
from kfp_lifecycle.families import FAMILIES

FEW_SIZES = DiagnoseOptions(sizes=[0.5, 1.0])


def _bundle(frame, target, task, family, params=None, select=False):
    parts = split_table(frame, target, task, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, target, task)
    if select:  # the pipeline's feature selection step, as the training pipeline appends it
        fitted, _ = fit_feature_selector(fitted, parts.train, target, task)
    bundle = train_model(parts.train, parts.validation, target, task, family, fitted, schema,
                         params=params)  # fmt: skip
    bundle.metadata["primary_metric"] = "roc_auc" if task == CLASSIFICATION else "rmse"
    return bundle, parts


def _noisy(rows: int, seed: int) -> pd.DataFrame:
    """A weak signal in one column and nine noise columns."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 10)), columns=[f"x{i}" for i in range(10)])
    frame["y"] = np.where(frame["x0"] + rng.normal(0, 1.5, rows) > 0, "yes", "no")
    return frame


def test_a_deep_forest_on_few_noisy_rows_overfits():
    deep = {"min_samples_leaf": 1, "max_depth": None, "n_estimators": 50}
    bundle, parts = _bundle(_noisy(100, 1), "y", CLASSIFICATION, "random_forest", deep)
    result = diagnose_fit(bundle, parts.train, parts.validation, DiagnoseOptions())
    assert result["verdict"] == "overfitting", result["evidence"]
    assert result["learning_curve"]["train_scores"][-1] > 0.99  # it memorised its rows
    assert result["skill"]["gap"] > DiagnoseOptions().gap_tolerance
    assert "min_samples_leaf" in result["suggestion"]
    # the same model with a tolerance above its gap is no longer called overfitting
    lenient = DiagnoseOptions(gap_tolerance=result["skill"]["gap"] + 0.01)
    assert diagnose_fit(bundle, parts.train, parts.validation, lenient)["verdict"] != "overfitting"


def test_a_crushed_linear_model_underfits(regression):
    bundle, parts = _bundle(regression, "price", REGRESSION, "linear", {"alpha": 1e7})
    result = diagnose_fit(bundle, parts.train, parts.validation, DiagnoseOptions())
    assert result["verdict"] == "underfitting", result["evidence"]
    assert result["skill"]["validation"] < 0.1 and abs(result["skill"]["gap"]) < 0.15
    assert "regularisation" in result["suggestion"]
    # the validation curve shows the way out: weaker regularisation scores better (lower rmse)
    curve = result["validation_curve"]
    assert curve["param"] == "alpha" and curve["current"] == 1e7
    assert curve["validation_scores"][0] < curve["validation_scores"][-1]
    assert "try alpha=" in result["suggestion"]


def test_a_sensible_model_fits_well(churn):
    bundle, parts = _bundle(churn, "churned", CLASSIFICATION, "linear")
    result = diagnose_fit(bundle, parts.train, parts.validation, FEW_SIZES)
    assert result["verdict"] == "good fit", result["evidence"]
    sizes = result["learning_curve"]["train_sizes"]
    assert sizes == [len(parts.train) // 2, len(parts.train)]
    # at the full size, the refit is the bundle's own model: the validation score it reports
    # is the one training recorded
    recorded = bundle.metadata["metrics"]["validation"]["roc_auc"]
    assert result["learning_curve"]["validation_scores"][-1] == pytest.approx(recorded, abs=1e-9)


def test_skill_is_zero_for_the_constant_predictor_and_one_for_perfect():
    assert skill(0.5, 0.5, "roc_auc") == 0 and skill(1.0, 0.5, "roc_auc") == 1
    assert skill(0.0, 10.0, "rmse") == 1 and skill(10.0, 10.0, "rmse") == 0
    assert skill(12.0, 10.0, "rmse") < 0  # worse than the constant


def test_learning_curve_subsets_are_nested_and_stratified():
    y = np.array([0] * 900 + [1] * 100)
    order = nested_order(y, stratify=True, seed=3)
    assert sorted(order) == list(range(1000))
    for count in (20, 50, 100, 250):
        assert (y[order[:count]] == 1).sum() == pytest.approx(count / 10, abs=1)
    plain = nested_order(y, stratify=False, seed=3)
    assert sorted(plain) == list(range(1000)) and not np.array_equal(plain, order)


def test_a_rare_category_missing_from_small_subsets_does_not_break_the_curve():
    """Refitting the preprocessing on 10% of the rows would lose the rare category and the
    selection step's columns; the bundle's fitted preprocessing is kept instead."""
    rng = np.random.default_rng(0)
    rows = 800
    frame = pd.DataFrame({"x": rng.normal(size=rows),
                          "colour": rng.choice(["red", "blue", "violet"], p=[0.6, 0.39, 0.01],
                                               size=rows)})  # fmt: skip
    frame["y"] = np.where(frame["x"] + rng.normal(size=rows) > 0, "a", "b")
    bundle, parts = _bundle(frame, "y", CLASSIFICATION, "linear", select=True)
    assert bundle.pipeline.steps[-2][0] == "select"
    result = diagnose_fit(bundle, parts.train, parts.validation, DiagnoseOptions(sizes=[0.05, 1]))
    assert result["learning_curve"]["train_sizes"] == [30, len(parts.train)]


def test_rows_from_the_balance_step_count_once_each():
    bundle, parts = _bundle(_noisy(300, 2), "y", CLASSIFICATION, "linear")
    options = BalanceOptions(strategy="oversample")
    balanced, report = balance_training_rows(parts.train, "y", CLASSIFICATION, options)
    assert report.rows_after > report.rows_before
    plain = diagnose_fit(bundle, parts.train, parts.validation, FEW_SIZES)
    from_balanced = diagnose_fit(bundle, balanced, parts.validation, FEW_SIZES)
    assert from_balanced["learning_curve"] == plain["learning_curve"]
    assert any("repeated row" in line for line in from_balanced["evidence"])


def test_component_writes_what_the_report_draws(tmp_path, churn):
    bundle, parts = _bundle(churn, "churned", CLASSIFICATION, "xgboost")
    write_bundle(tmp_path / "model", bundle.pipeline, bundle.metadata)
    parts.train.to_parquet(tmp_path / "train.parquet")
    parts.validation.to_parquet(tmp_path / "valid.parquet")
    (tmp_path / "calibration.json").write_text(Calibration().model_dump_json())
    diagnosis = Artifact(uri=str(tmp_path / "diagnosis.json"))
    diagnose.python_func(
        model=Model(uri=str(tmp_path / "model")),
        calibration=Artifact(uri=str(tmp_path / "calibration.json")),
        train=Dataset(uri=str(tmp_path / "train.parquet")),
        validation=Dataset(uri=str(tmp_path / "valid.parquet")),
        diagnosis=diagnosis,
        trials=[],
        options={"sizes": [0.5, 1.0]},
    )
    written = json.loads(Path(diagnosis.path).read_text())
    assert read_document(diagnosis.path, Diagnosis).verdict == written["verdict"]
    assert written["verdict"] in ("overfitting", "underfitting", "under-confident", "good fit")
    assert diagnosis.metadata["verdict"] == written["verdict"]
    curve = written["validation_curve"]
    assert curve["param"] == "max_depth" and curve["current"] == 6
    assert len(curve["train_scores"]) == len(curve["validation_scores"]) == len(curve["values"])
    section = "".join(_learning_section(written).parts)
    assert section.count("data:image/png;base64,") == 2 and written["verdict"] in section


def test_missing_target_and_unknown_classes_are_named():
    bundle, parts = _bundle(_noisy(200, 3), "y", CLASSIFICATION, "linear")
    with pytest.raises(DataError, match="the validation rows have no target column 'y'"):
        diagnose_fit(bundle, parts.train, parts.validation.drop(columns=["y"]), FEW_SIZES)
    odd = parts.validation.assign(y=parts.validation["y"].where(lambda s: s == "yes", "maybe"))
    with pytest.raises(DataError, match=r"class.*not trained on in 'y': maybe"):
        diagnose_fit(bundle, parts.train, odd, FEW_SIZES)
    with pytest.raises(DataError, match="no training rows"):
        diagnose_fit(bundle, parts.train.head(0), parts.validation, FEW_SIZES)


def test_options_are_checked():
    with pytest.raises(ValidationError, match="in \\(0, 1\\]"):
        DiagnoseOptions(sizes=[0.5, 1.5])
    with pytest.raises(ValidationError, match="Extra inputs"):
        DiagnoseOptions.model_validate({"gap": 0.2})
    assert DiagnoseOptions(sizes=[1.0, 0.5, 0.5]).sizes == [0.5, 1.0]


def _separable(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["a", "b", "c"])
    frame["y"] = np.where(frame["a"] + frame["b"] > 0, "yes", "no")
    return frame


def test_a_crushed_classifier_that_still_ranks_perfectly_is_under_confident():
    # C tiny: every probability near the prior, yet the ranking (ROC-AUC) stays near 1
    bundle, parts = _bundle(_separable(400, 2), "y", CLASSIFICATION, "linear", {"C": 1e-3})
    result = diagnose_fit(bundle, parts.train, parts.validation, FEW_SIZES)
    assert result["learning_curve"]["validation_scores"][-1] > 0.95
    assert result["verdict"] == "under-confident", result["evidence"]
    assert "calibrate" in result["suggestion"] and "raise C" in result["suggestion"]
    # the same data with sensible regularisation is sure of itself, and a good fit
    bundle, parts = _bundle(_separable(400, 2), "y", CLASSIFICATION, "linear")
    assert diagnose_fit(bundle, parts.train, parts.validation, FEW_SIZES)["verdict"] == "good fit"


def test_advice_follows_the_validation_curve():
    forest = FAMILIES["random_forest"].diagnosis(CLASSIFICATION)
    # overfitting, but the curve says the smallest min_samples_leaf (the model's own) is best
    curve = {"param": "min_samples_leaf", "values": [1, 2, 5, 10], "current": 1,
             "validation_scores": [0.80, 0.78, 0.75, 0.70]}  # fmt: skip
    advice = suggest("overfitting", forest, curve, skill(0.80, 0.5, "roc_auc"), 0.5,
                     "roc_auc")  # fmt: skip
    assert "raise min_samples_leaf" not in advice and "add rows" in advice
    # where a larger leaf does help, the family's advice stands
    curve["validation_scores"] = [0.70, 0.74, 0.80, 0.78]
    advice = suggest("overfitting", forest, curve, skill(0.70, 0.5, "roc_auc"), 0.5,
                     "roc_auc")  # fmt: skip
    assert "raise min_samples_leaf" in advice


def test_a_falling_rmse_curve_is_improving_not_rising():
    learning = {"train_sizes": [100, 200, 400], "validation_scores": [30.0, 25.0, 20.0]}
    curve = {"param": "alpha", "values": [1.0], "current": 1.0, "validation_scores": [20.0]}
    hints = _curve_hints(learning, curve, skill(20.0, 40.0, "rmse"), 40.0, "rmse")
    assert "still improving (rmse falling)" in hints[0][0] and "rising" not in hints[0][0]
