import json

import joblib
import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset
from pydantic import ValidationError

from kfp_lifecycle.components.features import FeaturesOptions, features, fit_feature_selector
from kfp_lifecycle.components.preprocess import (
    PreprocessOptions,
    fit_preprocessor,
    load_preprocessor,
    save_preprocessor,
)
from kfp_lifecycle.components.train import train_model
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION
from kfp_lifecycle.core.transformers import KeepFeatures


@pytest.fixture(scope="module")
def signals() -> pd.DataFrame:
    """Two informative numbers, their near-copy, a constant, pure noise, and a noise category
    with so many values that a full-fit target encoding would look informative."""
    rng = np.random.default_rng(7)
    rows = 900
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=rows),
            "x2": rng.normal(size=rows),
            "n1": rng.normal(size=rows),
            "n2": rng.normal(size=rows),
            "n3": rng.normal(size=rows),
            "flat": 1.0,
            "shop": [f"shop-{i}" for i in rng.integers(0, 300, size=rows)],
        }
    )
    frame["x1_copy"] = 2 * frame["x1"] + rng.normal(0, 0.01, size=rows)
    frame["y"] = np.where(frame["x1"] + frame["x2"] + rng.normal(0, 0.5, rows) > 0, "up", "down")
    return frame


@pytest.fixture(scope="module")
def prepared(signals):
    train, held_out = signals.iloc[:600], signals.iloc[600:]
    options = PreprocessOptions(drop_constant=False, drop_id_like=False, missing_indicators=False)
    fitted, schema, _ = fit_preprocessor(train, "y", CLASSIFICATION, options)
    return fitted, schema, train, held_out


def _select(prepared, **options):
    fitted, _, train, _ = prepared
    return fit_feature_selector(fitted, train, "y", CLASSIFICATION, FeaturesOptions(**options))


def test_no_methods_passes_the_preprocessor_through(prepared):
    fitted = prepared[0]
    pipeline, report = _select(prepared, methods=[])
    assert pipeline is fitted
    assert report.kept == list(fitted.get_feature_names_out()) and report.dropped == {}


def test_variance_drops_constant_features_with_the_reason(prepared):
    _, report = _select(prepared, methods=["variance"])
    assert list(report.dropped) == ["numeric__flat"]
    assert report.dropped["numeric__flat"] == "variance: 0 <= 0.0"
    assert "numeric__flat" not in report.kept
    with pytest.raises(DataError, match="every feature has a training variance at most 5"):
        _select(prepared, methods=["variance"], variance_threshold=5)


def test_correlation_drops_the_later_of_two_near_duplicates(prepared):
    _, report = _select(prepared, methods=["correlation"])
    assert list(report.dropped) == ["numeric__x1_copy"]
    assert report.dropped["numeric__x1_copy"].startswith("correlation: r = +1.000 with numeric__x1")
    _, loose = _select(prepared, methods=["correlation"], correlation_threshold=1.0)
    assert loose.dropped == {}


@pytest.mark.parametrize("method", ["mutual_information", "importance"])
def test_ranking_methods_keep_the_informative_features(prepared, method):
    _, report = _select(
        prepared, methods=["variance", "correlation", method], **{f"{method}_keep": 2}
    )
    assert report.kept == ["numeric__x1", "numeric__x2"]
    assert all(
        reason.startswith(f"{method}: ")
        for name, reason in report.dropped.items()
        if name not in ("numeric__flat", "numeric__x1_copy")
    )
    scores = report.scores[method]
    assert min(scores["numeric__x1"], scores["numeric__x2"]) > max(
        scores["numeric__n1"], scores["numeric__n2"], scores["numeric__n3"]
    )


def test_a_share_keeps_that_share_rounded_up(prepared):
    _, report = _select(prepared, methods=["mutual_information"], mutual_information_keep=0.25)
    total = len(report.kept) + len(report.dropped)
    assert len(report.kept) == int(np.ceil(0.25 * total))


def test_max_features_caps_what_the_methods_keep(prepared):
    _, report = _select(prepared, methods=["correlation"], max_features=1)
    assert len(report.kept) == 1 and report.kept[0] in ("numeric__x1", "numeric__x2")
    assert report.dropped["numeric__n1"].endswith("; max_features = 1")
    assert "mutual_information" in report.scores  # computed for the purpose


def test_target_encoded_noise_is_scored_as_the_model_sees_it(prepared):
    """Cross-fitted encodings: a 300-value noise category does not pass for a signal."""
    fitted, _, train, _ = prepared
    assert "target__shop" in fitted.get_feature_names_out()
    _, report = _select(prepared, methods=["mutual_information"], mutual_information_keep=3)
    assert "target__shop" in report.dropped
    full_fit = fitted.transform(train.drop(columns=["y"]))
    names = list(fitted.get_feature_names_out())
    leaky = abs(np.corrcoef(full_fit[:, names.index("target__shop")], train["y"] == "up")[0, 1])
    assert leaky > 0.5  # what a selector scoring the full-fit encoding would have seen


def test_selector_choices_come_from_training_rows_only(prepared):
    held_out = prepared[3]
    methods = ["variance", "correlation", "mutual_information", "importance"]
    pipeline, report = _select(prepared, methods=methods, importance_keep=0.5)
    before = joblib.hash(pipeline)
    scrambled = held_out.assign(n1=held_out["x1"] * 10, x1=0.0)
    pipeline.transform(scrambled.drop(columns=["y"]))
    assert joblib.hash(pipeline) == before
    _, again = _select(prepared, methods=methods, importance_keep=0.5)
    assert again.kept == report.kept and again.scores == report.scores


def test_selected_pipeline_trains_serves_and_round_trips(tmp_path, prepared):
    _, schema, train, held_out = prepared
    pipeline, report = _select(prepared, methods=["variance", "correlation"])
    assert list(pipeline.get_feature_names_out()) == report.kept
    validation, test = held_out.iloc[:150], held_out.iloc[150:]
    bundle = train_model(train, validation, "y", CLASSIFICATION, "linear", pipeline, schema)
    assert bundle.pipeline[-1].coef_.shape[1] == len(report.kept)
    assert bundle.metadata["metrics"]["validation"]["roc_auc"] > 0.85
    rows = test.drop(columns=["y"]).head(3).assign(shop=["shop-new", None, "shop-1"])
    rows.loc[rows.index[0], "x2"] = np.nan
    assert np.allclose(bundle.predict(rows).probabilities.sum(axis=1), 1.0)

    save_preprocessor(tmp_path, pipeline, schema)
    loaded, _ = load_preprocessor(tmp_path)
    assert np.array_equal(loaded.transform(rows), pipeline.transform(rows))


def test_regression_selection(regression):
    train = regression.iloc[:600].assign(noise=np.random.default_rng(0).normal(size=600))
    fitted, _, _ = fit_preprocessor(train, "price", REGRESSION)
    _, report = fit_feature_selector(
        fitted,
        train,
        "price",
        REGRESSION,
        FeaturesOptions(methods=["importance"], importance_keep=2),
    )
    assert len(report.kept) == 2 and "numeric__size_m2" in report.kept
    assert report.dropped["numeric__noise"].startswith("importance: ")


def test_keep_features_refuses_unknown_names_and_wrong_widths():
    with pytest.raises(ValueError, match="not in the input: c"):
        KeepFeatures(["a", "b"], ["a", "c"]).fit()
    selector = KeepFeatures(["a", "b", "c"], ["c", "a"]).fit()
    assert selector.transform(np.array([[1.0, 2.0, 3.0]])).tolist() == [[3.0, 1.0]]
    with pytest.raises(ValueError, match="expected 3 input features, got 2"):
        selector.transform(np.array([[1.0, 2.0]]))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"method": ["variance"]}, "method"),
        ({"methods": ["lasso"]}, "methods"),
        ({"mutual_information_keep": 1.5}, "mutual_information_keep"),
        ({"importance_keep": 0}, "importance_keep"),
        ({"correlation_threshold": 0}, "correlation_threshold"),
        ({"max_features": 0}, "max_features"),
    ],
)
def test_bad_options_are_named(options, field):
    with pytest.raises(ValidationError, match=field):
        FeaturesOptions.model_validate(options)


def test_component_writes_a_preprocessor_train_can_load(tmp_path, prepared):
    fitted, schema, train, _ = prepared
    save_preprocessor(tmp_path / "preprocessor", fitted, schema)
    source = tmp_path / "train.parquet"
    train.to_parquet(source, index=False)
    selected = Artifact(uri=str(tmp_path / "selected"))
    report = Artifact(uri=str(tmp_path / "report.json"))
    features.python_func(
        train=Dataset(uri=str(source)),
        preprocessor=Artifact(uri=str(tmp_path / "preprocessor")),
        target="y",
        task=CLASSIFICATION,
        selected=selected,
        report=report,
        options={"methods": ["variance", "correlation"]},
    )
    document = json.loads((tmp_path / "report.json").read_text())
    assert set(document["dropped"]) == {"numeric__flat", "numeric__x1_copy"}
    loaded, loaded_schema = load_preprocessor(tmp_path / "selected")
    assert loaded_schema == schema
    assert list(loaded.get_feature_names_out()) == document["kept"]
