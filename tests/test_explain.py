"""Global explanations: permutation importance finds the columns that matter, XGBoost's SHAP
agrees, and the importance travels in the bundle to the model server."""

import asyncio
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bundles import build_bundle
from kfp.dsl import Artifact, Dataset, Model

from kfp_lifecycle.components.explain import (
    ExplainOptions,
    explain,
    explain_bundle,
    model_contributions,
)
from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.report import _importance_section
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model
from kfp_lifecycle.core.bundle import load_bundle, write_bundle
from kfp_lifecycle.core.documents import Calibration, Explanation, assembled_metadata, read_document
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION
from kfp_lifecycle.serving.model import BundleModel


def _planted(rows: int = 1500, seed: int = 0) -> pd.DataFrame:
    """The label depends on `signal` strongly, on `weak` a little, on `noise` not at all."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"signal": rng.normal(size=rows), "weak": rng.normal(size=rows),
                          "noise": rng.normal(size=rows)})  # fmt: skip
    logit = 3 * frame["signal"] + 0.7 * frame["weak"]
    frame["y"] = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return frame


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    frame = _planted()
    parts = split_table(frame, "y", CLASSIFICATION, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, "y", CLASSIFICATION)
    bundle = train_model(parts.train, parts.validation, "y", CLASSIFICATION, "xgboost", fitted,
                         schema)  # fmt: skip
    bundle.metadata["primary_metric"] = "roc_auc"
    directory = tmp_path_factory.mktemp("planted") / "model"
    write_bundle(directory, bundle.pipeline, bundle.metadata)
    return load_bundle(directory), parts.test


def test_importance_ranks_the_planted_columns(planted):
    bundle, test = planted
    result = explain_bundle(bundle, test, ExplainOptions())
    importance = result["permutation_importance"]
    assert importance["signal"] > importance["weak"] > importance["noise"]
    assert abs(importance["noise"]) < 0.02
    shap = result["shap_mean_abs"]
    by_column = {c: sum(v for k, v in shap.items() if c in k) for c in ("signal", "weak", "noise")}
    assert by_column["signal"] > by_column["weak"] > by_column["noise"]


def test_component_writes_the_explanation_and_leaves_the_model(planted, tmp_path):
    bundle, test = planted
    before = {p.name: p.read_bytes() for p in Path(bundle.path).iterdir()}
    test.to_parquet(tmp_path / "test.parquet")
    (tmp_path / "calibration.json").write_text(Calibration().model_dump_json())
    explanation = Artifact(uri=str(tmp_path / "explanation.json"))
    explain.python_func(
        model=Model(uri=str(bundle.path)),
        calibration=Artifact(uri=str(tmp_path / "calibration.json")),
        test=Dataset(uri=str(tmp_path / "test.parquet")),
        explanation=explanation,
        options={"repeats": 2},
    )
    assert {p.name: p.read_bytes() for p in Path(bundle.path).iterdir()} == before
    written = json.loads(Path(explanation.path).read_text())
    document = read_document(explanation.path, Explanation)
    assert document.shap_mean_abs and written["metric"] == document.metric
    # what register keeps in the bundle's metadata for the model server
    assert assembled_metadata(bundle.metadata, explanation=document)["explanation"] == written
    section = "".join(_importance_section(written).parts)
    assert section.count("data:image/png;base64,") == 2  # permutation and SHAP charts


def test_the_server_returns_the_kept_importance_with_each_explanation(planted, tmp_path):
    bundle, test = planted
    kept = explain_bundle(bundle, test, ExplainOptions(repeats=2))
    write_bundle(tmp_path / "served", bundle.pipeline, {**bundle.metadata, "explanation": kept})
    model = BundleModel("planted", str(tmp_path / "served"))
    model.load()
    rows = json.loads(test.drop(columns=["y"]).head(2).to_json(orient="records"))
    answer = asyncio.run(model.explain({"instances": rows}))
    assert len(answer["explanations"]) == 2
    assert answer["global_importance"]["permutation_importance"] == kept["permutation_importance"]


def test_other_families_get_permutation_importance_only(churn, tmp_path):
    bundle = load_bundle(build_bundle(tmp_path / "linear", churn))
    parts = split_table(churn, "churned", CLASSIFICATION, seed=0)
    result = explain_bundle(bundle, parts.test, ExplainOptions(repeats=2))
    assert set(result["permutation_importance"]) == set(bundle.schema.names)
    assert "shap_mean_abs" not in result


def test_shap_values_add_up_to_the_served_models_raw_score(planted):
    """Over the trees early stopping kept, not every tree the booster grew."""
    bundle, test = planted
    estimator = bundle.pipeline[-1]
    assert estimator.best_iteration + 1 < estimator.get_booster().num_boosted_rounds()
    rows = test.drop(columns=["y"]).head(20)
    contributions, names = model_contributions(bundle, rows)
    assert contributions.shape == (20, len(names) + 1)
    features = bundle.pipeline[:-1].transform(rows)
    margin = estimator.predict(features, output_margin=True)
    np.testing.assert_allclose(contributions.sum(axis=1), margin, rtol=1e-4, atol=1e-4)


def test_regression_importance_is_the_rise_in_error(regression, tmp_path):
    parts = split_table(regression, "price", REGRESSION, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, "price", REGRESSION)
    bundle = train_model(parts.train, parts.validation, "price", REGRESSION, "linear", fitted,
                         schema)  # fmt: skip
    assert "primary_metric" not in bundle.metadata  # the task's primary metric: rmse
    result = explain_bundle(bundle, parts.test, ExplainOptions(repeats=3))
    importance = result["permutation_importance"]
    assert result["metric"] == "rmse"
    # price is mostly 2 x size_m2: shuffling it adds far more error than shuffling rooms
    assert importance["size_m2"] > importance["rooms"] > 0


def test_bad_test_rows_are_named(planted):
    bundle, test = planted
    with pytest.raises(DataError, match="the test rows have no target column 'y'"):
        explain_bundle(bundle, test.drop(columns=["y"]), ExplainOptions())
    with pytest.raises(DataError, match=r"lack input column.*: weak"):
        explain_bundle(bundle, test.drop(columns=["weak"]), ExplainOptions())
    with pytest.raises(DataError, match="no test rows"):
        explain_bundle(bundle, test.head(0), ExplainOptions())
    odd = test.assign(y=test["y"].where(test["y"] == "yes", "maybe"))
    with pytest.raises(DataError, match="not trained on in 'y': maybe"):
        explain_bundle(bundle, odd, ExplainOptions())
