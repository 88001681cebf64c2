"""Fit diagnosis: a model built to overfit and one built to underfit get the right verdict."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset, Model

from kfp_lifecycle.bundle import write_bundle
from kfp_lifecycle.components.diagnose import DiagnoseOptions, diagnose, diagnose_fit, skill
from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.report import _learning_section
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model
from kfp_lifecycle.errors import DataError
from kfp_lifecycle.tasks import CLASSIFICATION, REGRESSION


def _bundle(frame, target, task, family, params=None, seed=0):
    parts = split_table(frame, target, task, seed=seed)
    fitted, schema, _ = fit_preprocessor(parts.train, target, task)
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
    deep = {"min_samples_leaf": 1, "max_depth": None, "n_estimators": 100}
    bundle, parts = _bundle(_noisy(120, 1), "y", CLASSIFICATION, "random_forest", deep)
    result = diagnose_fit(bundle, parts.train, parts.validation, DiagnoseOptions())
    assert result["verdict"] == "overfitting", result["evidence"]
    assert result["learning_curve"]["train_scores"][-1] > 0.99  # it memorised its rows
    assert "min_samples_leaf" in result["suggestion"]


def test_a_crushed_linear_model_underfits(regression):
    bundle, parts = _bundle(regression, "price", REGRESSION, "linear", {"alpha": 1e7})
    result = diagnose_fit(bundle, parts.train, parts.validation, DiagnoseOptions())
    assert result["verdict"] == "underfitting", result["evidence"]
    assert "regularisation" in result["suggestion"]
    # the validation curve shows the way out: weaker regularisation scores better
    curve = result["validation_curve"]
    assert (
        curve["param"] == "alpha" and curve["validation_scores"][0] < curve["validation_scores"][-1]
    )


def test_a_sensible_model_fits_well(churn):
    bundle, parts = _bundle(churn, "churned", CLASSIFICATION, "linear")
    result = diagnose_fit(bundle, parts.train, parts.validation, DiagnoseOptions())
    assert result["verdict"] == "good fit", result["evidence"]
    sizes = result["learning_curve"]["train_sizes"]
    assert sizes == sorted(sizes) and sizes[-1] == len(parts.train)


def test_skill_is_zero_for_the_constant_predictor_and_one_for_perfect():
    assert skill(0.5, 0.5, "roc_auc") == 0 and skill(1.0, 0.5, "roc_auc") == 1
    assert skill(0.0, 10.0, "rmse") == 1 and skill(10.0, 10.0, "rmse") == 0


def test_component_writes_what_the_report_draws(tmp_path, churn):
    bundle, parts = _bundle(churn, "churned", CLASSIFICATION, "xgboost")
    write_bundle(tmp_path / "model", bundle.pipeline, bundle.metadata)
    parts.train.to_parquet(tmp_path / "train.parquet")
    parts.validation.to_parquet(tmp_path / "valid.parquet")
    diagnosis = Artifact(uri=str(tmp_path / "diagnosis.json"))
    diagnose.python_func(
        model=Model(uri=str(tmp_path / "model")),
        train=Dataset(uri=str(tmp_path / "train.parquet")),
        validation=Dataset(uri=str(tmp_path / "valid.parquet")),
        diagnosis=diagnosis,
        options={"sizes": [0.5, 1.0]},
    )
    written = json.loads(Path(diagnosis.path).read_text())
    assert written["validation_curve"]["param"] == "max_depth"
    section = "".join(_learning_section(written).parts)
    assert section.count("data:image/png;base64,") == 2 and written["verdict"] in section


def test_missing_target_is_named(churn):
    bundle, parts = _bundle(churn, "churned", CLASSIFICATION, "linear")
    with pytest.raises(DataError, match="the validation rows have no target column 'churned'"):
        diagnose_fit(bundle, parts.train, parts.validation.drop(columns=["churned"]),
                     DiagnoseOptions())  # fmt: skip
