"""ONNX export: the whole bundle as one ONNX model, run by onnxruntime, against the bundle.

Every family, both tasks and the preprocessing options (one-hot with rare grouping, target,
ordinal, date parts with and without cycles, clipping, missing indicators, feature
selection), on held-out rows and on rows the split rarely holds (all missing, unseen
categories, extremes, dates before 1970 and leap days).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from kfp_lifecycle.cli import main
from kfp_lifecycle.components.drift import reference_sample
from kfp_lifecycle.components.export import EXPORT_RESULT_FILE, export_registered
from kfp_lifecycle.components.features import FeaturesOptions, fit_feature_selector
from kfp_lifecycle.components.preprocess import PreprocessOptions, fit_preprocessor
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model
from kfp_lifecycle.core import schema as schema_module
from kfp_lifecycle.core.bundle import Bundle, write_bundle
from kfp_lifecycle.core.schema import CATEGORICAL, DATETIME, NUMERIC
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION
from kfp_lifecycle.core.transformers import DatetimeFeatures
from kfp_lifecycle.export import (
    ONNX_FILE,
    REPORT_JSON,
    REPORT_MD,
    TOLERANCE,
    ExportError,
    check_parity,
    convert_bundle,
    export_bundle,
    onnx_feed,
)
from kfp_lifecycle.onnx_steps import infinite_as_missing, register_converters

SMALL = {
    "random_forest": {"n_estimators": 15, "max_depth": 6, "n_jobs": 1},
    "hist_gradient_boosting": {"max_iter": 30},
    "xgboost": {"n_estimators": 40, "early_stopping_rounds": 5, "n_jobs": 1},
    "linear": {},
    "lightgbm": {"n_estimators": 30, "verbose": -1, "n_jobs": 1},
}
TARGETS = {
    "churn": ("churned", CLASSIFICATION),
    "multiclass": ("species", CLASSIFICATION),
    "regression": ("price", REGRESSION),
}
ALL_PARTS = ["year", "month", "weekday", "hour", "dayofyear"]

# family x task, each with other preprocessing options, so every option meets a family.
CASES = {
    "binary-linear-onehot-rare-clip-mostfrequent-selected": (
        "churn", "linear",
        PreprocessOptions(
            encoding="onehot", rare_category_share=0.05, outliers="iqr_clip",
            categorical_imputation="most_frequent", scaling="minmax", datetime_parts=ALL_PARTS,
        ),
    ),
    "binary-forest-ordinal-noncyclic": (
        "churn", "random_forest",
        PreprocessOptions(encoding="ordinal", datetime_cyclical=False, scaling="none"),
    ),
    "binary-hgb-target-robust-noindicators": (
        "churn", "hist_gradient_boosting",
        PreprocessOptions(encoding="target", scaling="robust", missing_indicators=False),
    ),
    "binary-xgboost-defaults": ("churn", "xgboost", PreprocessOptions()),
    "binary-lightgbm-defaults-allparts": (
        "churn", "lightgbm", PreprocessOptions(datetime_parts=ALL_PARTS),
    ),
    "multiclass-linear-defaults": ("multiclass", "linear", PreprocessOptions()),
    "multiclass-forest-onehot": ("multiclass", "random_forest", PreprocessOptions()),
    "multiclass-hgb-target": (
        "multiclass", "hist_gradient_boosting", PreprocessOptions(encoding="target"),
    ),
    "multiclass-xgboost-ordinal": (
        "multiclass", "xgboost", PreprocessOptions(encoding="ordinal"),
    ),
    "multiclass-lightgbm-target": (
        "multiclass", "lightgbm", PreprocessOptions(encoding="target"),
    ),
    "regression-linear-clip-mean": (
        "regression", "linear",
        PreprocessOptions(outliers="iqr_clip", numeric_imputation="mean"),
    ),
    "regression-forest-target": (
        "regression", "random_forest", PreprocessOptions(encoding="target"),
    ),
    "regression-hgb-defaults": ("regression", "hist_gradient_boosting", PreprocessOptions()),
    "regression-xgboost-ordinal-constant": (
        "regression", "xgboost",
        PreprocessOptions(encoding="ordinal", numeric_imputation="constant"),
    ),
    "regression-lightgbm-onehot": ("regression", "lightgbm", PreprocessOptions()),
}  # fmt: skip


def _with_gaps(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """A yes/no column, and missing values in every feature column (rows made identical by
    them dropped)."""
    rng = np.random.default_rng(4)
    frame = frame.copy()
    frame.insert(0, "flag", pd.array(rng.random(len(frame)) < 0.3, dtype="boolean"))
    for name in frame.columns.drop(target):
        frame.loc[rng.random(len(frame)) < 0.06, name] = None
    return frame.drop_duplicates(ignore_index=True)


def _trained(frame: pd.DataFrame, table: str, family: str, options: PreprocessOptions):
    """A bundle trained as the training step trains it, and its held-out rows (one thread:
    OpenMP's spinning threads crawl on a machine that other work shares)."""
    with threadpool_limits(1):
        return _train(frame, table, family, options)


def _train(frame: pd.DataFrame, table: str, family: str, options: PreprocessOptions):
    target, task = TARGETS[table]
    parts = split_table(frame, target, task, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, target, task, options)
    if family == "linear" and table == "churn":  # feature selection (KeepFeatures) too
        selection = FeaturesOptions(methods=["variance", "correlation"], max_features=8)
        fitted, _ = fit_feature_selector(fitted, parts.train, target, task, selection)
    if family == "lightgbm":
        pipeline, metadata = _lightgbm(parts.train, target, task, fitted, schema)
    else:
        trained = train_model(
            parts.train, parts.validation, target, task, family, fitted, schema,
            params=SMALL[family],
        )  # fmt: skip
        pipeline, metadata = trained.pipeline, trained.metadata
    metadata["reference"] = reference_sample(parts.train, target, rows=200)
    return Bundle(Path("."), pipeline, metadata), parts.test.drop(columns=[target])


def _lightgbm(train, target, task, fitted, schema):
    """LightGBM on the preprocessing's output (the families branch adds it as a family)."""
    lightgbm = pytest.importorskip("lightgbm", reason="lightgbm is not installed")
    matrix = np.asarray(fitted.transform(train.drop(columns=[target])), dtype=np.float64)
    labels = train[target]
    if task == CLASSIFICATION:
        model = lightgbm.LGBMClassifier(**SMALL["lightgbm"], random_state=0).fit(matrix, labels)
        extra = {"classes": model.classes_.tolist()}
    else:
        model = lightgbm.LGBMRegressor(**SMALL["lightgbm"], random_state=0).fit(matrix, labels)
        extra = {}
    metadata = {"task": task, "target": target, "family": "lightgbm", **extra}
    metadata["input_schema"] = schema.to_dict()
    return Pipeline([*fitted.steps, ("model", model)]), metadata


def edge_rows(bundle: Bundle, base: pd.Series) -> pd.DataFrame:
    """All missing, unseen categories, extreme numbers, dates before 1970 and leap days."""
    rows = [dict.fromkeys(base.index), base.to_dict(), base.to_dict(), base.to_dict()]
    dates = ["1969-07-20 20:17:40", "2024-02-29 23:59:59", "1900-03-01 00:00:00"]
    for column in bundle.schema.columns:
        if column.kind == CATEGORICAL:
            rows[1][column.name] = "never-seen-in-training"
        elif column.kind == NUMERIC:
            rows[2][column.name], rows[3][column.name] = 1e9, -1e9
        elif column.kind == DATETIME:
            rows[1][column.name], rows[2][column.name], rows[3][column.name] = dates
    return pd.DataFrame(rows, columns=base.index)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_family_task_and_option_exports_what_the_bundle_predicts(case, request):
    table, family, options = CASES[case]
    frame = _with_gaps(request.getfixturevalue(table), TARGETS[table][0])
    bundle, test_rows = _trained(frame, table, family, options)
    rows = pd.concat([test_rows, edge_rows(bundle, test_rows.iloc[0])], ignore_index=True)
    model = convert_bundle(bundle).SerializeToString()
    parity = check_parity(bundle, model, rows)
    assert parity.max_scaled_diff < TOLERANCE, parity
    assert parity.passed
    if bundle.metadata["task"] == CLASSIFICATION:  # probabilities: the absolute difference
        assert parity.max_abs_diff == parity.max_scaled_diff
    if bundle.metadata["task"] == CLASSIFICATION:
        assert parity.label_agreement == 1.0
    one = check_parity(bundle, model, rows.iloc[[len(rows) - 1]])  # a single row, too
    assert one.passed


def test_infinite_numbers_are_read_as_the_coercer_reads_them(churn, monkeypatch):
    bundle, test_rows = _trained(churn, "churn", "random_forest", PreprocessOptions())
    coercer = bundle.pipeline.steps[0][1]
    if not infinite_as_missing(coercer):  # a checkout before main's "infinities as missing"
        coerce_column = schema_module._coerce_column

        def as_main_does(series: pd.Series, kind: str) -> pd.Series:
            values = coerce_column(series, kind)
            return values.mask(np.isinf(values)) if kind == NUMERIC else values

        monkeypatch.setattr(schema_module, "_coerce_column", as_main_does)
    assert infinite_as_missing(coercer) == bundle.schema.of_kind(NUMERIC)
    rows = test_rows.head(6).copy()
    rows.loc[rows.index[:3], "monthly_charges"] = np.inf
    rows.loc[rows.index[3:], "age"] = -np.inf
    session = onnxruntime.InferenceSession(convert_bundle(bundle).SerializeToString())
    _, got = session.run(["label", "probabilities"], onnx_feed(rows, bundle.schema))
    expected = bundle.predict(rows).probabilities
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
    rows.loc[:, "age"] = np.nan  # read as missing: as if they were missing
    np.testing.assert_allclose(got[3:], bundle.predict(rows).probabilities[3:], atol=TOLERANCE)


def test_date_parts_match_pandas_from_1900_to_2100_and_missing_dates():
    rng = np.random.default_rng(0)
    seconds = rng.integers(-2_208_988_800, 4_102_444_800, size=4000)  # 1900..2100
    stamps = pd.Series(pd.to_datetime(seconds, unit="s")).astype("datetime64[ns]")
    stamps = pd.concat([stamps, pd.Series([pd.NaT, pd.Timestamp("2000-02-29 23:00")])])
    frame = pd.DataFrame({"t": stamps.to_numpy()})
    expand = DatetimeFeatures(tuple(ALL_PARTS), cyclical=True, missing_indicator=True).fit(frame)
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import Int64TensorType

    register_converters()
    model = convert_sklearn(
        Pipeline([("dates", expand)]), initial_types=[("t", Int64TensorType([None, 1]))]
    )
    session = onnxruntime.InferenceSession(model.SerializeToString())
    nanos = frame["t"].to_numpy(dtype="datetime64[ns]").astype(np.int64).reshape(-1, 1)
    (got,) = session.run(None, {"t": nanos})
    np.testing.assert_array_equal(got, expand.transform(frame).to_numpy())


class Doubler(TransformerMixin, BaseEstimator):
    """A step no converter knows."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.asarray(X) * 2.0


@pytest.fixture(scope="module")
def linear_bundle(churn) -> tuple[Bundle, pd.DataFrame]:
    return _trained(churn, "churn", "linear", PreprocessOptions())


def test_a_step_without_converter_fails_in_one_line_naming_it(linear_bundle, tmp_path):
    bundle, _ = linear_bundle
    steps = bundle.pipeline.steps
    odd = Pipeline([*steps[:-1], ("double", Doubler()), steps[-1]])
    with pytest.raises(ExportError) as caught:
        export_bundle(Bundle(bundle.path, odd, bundle.metadata), tmp_path / "out")
    message = str(caught.value)
    assert message == (
        "cannot export step 'double' (Doubler) to ONNX: no converter is registered for it"
    )
    assert not (tmp_path / "out" / ONNX_FILE).exists()
    report = json.loads((tmp_path / "out" / REPORT_JSON).read_text())
    assert (report["exported"], report["reason"]) == (False, message)
    assert message in (tmp_path / "out" / REPORT_MD).read_text()


def test_a_model_that_disagrees_is_not_written_and_the_report_says_why(
    linear_bundle, churn, tmp_path, monkeypatch
):
    bundle, _ = linear_bundle
    other, _ = _trained(churn, "churn", "linear", PreprocessOptions(scaling="none"))
    wrong = convert_bundle(other)  # a converter's mistake: another model's graph
    export_bundle(bundle, tmp_path)  # a good export first: its model.onnx must not stay
    assert (tmp_path / ONNX_FILE).exists()
    monkeypatch.setattr("kfp_lifecycle.export.convert_bundle", lambda _: wrong)
    with pytest.raises(ExportError, match=r"differs from the bundle by .* tolerance 0.0001"):
        export_bundle(bundle, tmp_path)
    assert not (tmp_path / ONNX_FILE).exists()
    report = json.loads((tmp_path / REPORT_JSON).read_text())
    assert report["parity"]["passed"] is False
    assert report["parity"]["max_scaled_diff"] > TOLERANCE
    assert "FAILED" in (tmp_path / REPORT_MD).read_text()


def test_cli_exports_a_bundle_and_plain_onnxruntime_runs_it(linear_bundle, tmp_path, capsys):
    bundle, test_rows = linear_bundle
    directory = tmp_path / "bundle"
    write_bundle(directory, bundle.pipeline, bundle.metadata)
    out = tmp_path / "onnx"
    assert (
        main(["export", "--model", str(directory), "--format", "onnx", "--output", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert f"wrote {out / ONNX_FILE}" in printed
    assert "rows (reference sample)" in printed
    report = json.loads((out / REPORT_JSON).read_text())
    assert report["parity"]["passed"] and report["parity"]["max_abs_diff"] < TOLERANCE
    assert report["parity"]["rows"] == 200
    assert set(report["inputs"]) == set(bundle.schema.names)
    # The edge story: onnxruntime alone, inputs built as the report documents them.
    session = onnxruntime.InferenceSession(str(out / ONNX_FILE))
    rows = test_rows.head(5)
    coerced = bundle.schema.coerce(rows)
    feed = {}
    for column in bundle.schema.columns:
        values = coerced[column.name]
        if column.kind == CATEGORICAL:
            array = np.array(["" if v is None else v for v in values], dtype=object)
        elif column.kind == DATETIME:
            array = values.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        else:
            array = values.to_numpy(dtype=np.float64)
        feed[column.name] = array.reshape(-1, 1)
    labels, probabilities = session.run(["label", "probabilities"], feed)
    expected = bundle.predict(rows)
    assert labels.tolist() == expected.labels
    np.testing.assert_allclose(probabilities, expected.probabilities, atol=TOLERANCE, rtol=0)


def test_cli_names_a_missing_bundle_in_one_line(tmp_path, capsys):
    code = main(["export", "--model", str(tmp_path / "nowhere"), "--output", str(tmp_path)])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    assert "nowhere" in error


def test_the_pipeline_step_exports_or_records_why_not(linear_bundle, tmp_path):
    bundle, test_rows = linear_bundle
    test_path = tmp_path / "test.parquet"
    test_rows.assign(churned="no").to_parquet(test_path)
    summary = {"model_uri": "registry/churned/versions/3", "model_version": 3}
    good = tmp_path / "good"
    write_bundle(good, bundle.pipeline, bundle.metadata)
    outcome = export_registered(good, test_path, summary, tmp_path / "onnx")
    assert outcome["exported"] is True and outcome["model_version"] == 3
    assert outcome["rows"] == len(test_rows) and outcome["max_difference"] < TOLERANCE
    assert (tmp_path / "onnx" / ONNX_FILE).is_file()
    report = json.loads((tmp_path / "onnx" / REPORT_JSON).read_text())
    assert report["rows_source"] == "test rows"
    assert json.loads((tmp_path / "onnx" / EXPORT_RESULT_FILE).read_text()) == outcome

    steps = bundle.pipeline.steps
    bad = tmp_path / "bad"
    odd = Pipeline([*steps[:-1], ("double", Doubler()), steps[-1]])
    write_bundle(bad, odd, bundle.metadata)
    outcome = export_registered(bad, test_path, summary, tmp_path / "none")
    assert outcome["exported"] is False
    assert outcome["reason"] == (
        "ExportError: cannot export step 'double' (Doubler) to ONNX: no converter is "
        "registered for it"
    )
    assert not (tmp_path / "none" / ONNX_FILE).exists()


def test_forests_read_features_rounded_to_float32_as_sklearn_does():
    """sklearn's trees compare float32(x) with double thresholds: a row whose value is a
    threshold itself rounds to a float32 on one side of it, and must go that way."""
    from sklearn.ensemble import RandomForestClassifier

    from kfp_lifecycle.onnx_trees import tree_model

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3))
    forest = RandomForestClassifier(n_estimators=20, random_state=0)
    forest.fit(x, (x[:, 0] + x[:, 1] > 0).astype(int))
    rows = []
    for tree in forest.estimators_:
        split = np.flatnonzero(tree.tree_.children_left != -1)
        for node in split[:5]:
            row = rng.normal(size=3)
            row[tree.tree_.feature[node]] = tree.tree_.threshold[node]
            rows.append(row)
    rows = np.asarray(rows)
    session = onnxruntime.InferenceSession(
        tree_model(forest, CLASSIFICATION, 3).SerializeToString()
    )
    (got,) = session.run(["probabilities"], {"features": rows})
    np.testing.assert_allclose(got, forest.predict_proba(rows), atol=1e-12, rtol=0)


def test_without_the_onnx_extra_the_cli_says_what_to_install(
    linear_bundle, tmp_path, capsys, monkeypatch
):
    bundle, _ = linear_bundle
    write_bundle(tmp_path / "bundle", bundle.pipeline, bundle.metadata)
    monkeypatch.setitem(sys.modules, "skl2onnx", None)  # an import of it now fails
    code = main(["export", "--model", str(tmp_path / "bundle"), "--output", str(tmp_path / "o")])
    assert code == 2
    # (a line before it warns that the local bundle is unsigned: only its sha256 is checked)
    assert capsys.readouterr().err.splitlines(keepends=True)[-1] == (
        "error: ONNX export needs skl2onnx: pip install 'kfp-lifecycle[onnx]'\n"
    )
    assert not (tmp_path / "o" / ONNX_FILE).exists()


def platt(probabilities: np.ndarray, calibration: dict) -> np.ndarray:
    """The bundle's calibration as main's kfp_lifecycle.core.bundle.calibrated defines it."""
    slopes = np.asarray(calibration["slopes"], dtype=float)
    intercepts = np.asarray(calibration["intercepts"], dtype=float)
    p = np.clip(probabilities, 1e-12, 1 - 1e-12)
    if p.shape[1] == 2:
        positive = 1 / (1 + np.exp(-(slopes[0] * np.log(p[:, 1] / p[:, 0]) + intercepts[0])))
        return np.column_stack([1 - positive, positive])
    scaled = 1 / (1 + np.exp(-(slopes * np.log(p / (1 - p)) + intercepts)))
    return scaled / scaled.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("table", ["churn", "multiclass"])
def test_the_calibration_kept_with_a_bundle_is_applied_and_labels_follow_it(table, request):
    bundle, test_rows = _trained(
        request.getfixturevalue(table), table, "linear", PreprocessOptions()
    )
    classes = bundle.metadata["classes"]
    slopes = [0.6, 1.3, 0.9][: 1 if len(classes) == 2 else len(classes)]
    calibration = {"slopes": slopes, "intercepts": [-0.4, 0.2, 0.1][: len(slopes)]}
    metadata = {**bundle.metadata, "calibration": calibration, "decision_threshold": 0.3}
    session = onnxruntime.InferenceSession(
        convert_bundle(Bundle(bundle.path, bundle.pipeline, metadata)).SerializeToString()
    )
    labels, got = session.run(["label", "probabilities"], onnx_feed(test_rows, bundle.schema))
    expected = platt(bundle.pipeline.predict_proba(bundle.schema.coerce(test_rows)), calibration)
    np.testing.assert_allclose(got, expected, atol=1e-12, rtol=0)
    if len(classes) == 2:
        wanted = [classes[int(p >= 0.3)] for p in expected[:, 1]]
    else:
        wanted = [classes[i] for i in expected.argmax(axis=1)]
    assert labels.tolist() == wanted
    assert not np.allclose(got, bundle.pipeline.predict_proba(bundle.schema.coerce(test_rows)))


def test_a_bundle_without_kept_rows_is_checked_on_the_rows_given(linear_bundle, tmp_path, capsys):
    bundle, test_rows = linear_bundle
    metadata = {k: v for k, v in bundle.metadata.items() if k != "reference"}
    write_bundle(tmp_path / "bundle", bundle.pipeline, metadata)
    command = ["export", "--model", str(tmp_path / "bundle"), "--output", str(tmp_path / "o")]
    assert main(command) == 2
    assert capsys.readouterr().err.splitlines(keepends=True)[-1] == (
        "error: the bundle keeps no rows to check the ONNX model against (no reference "
        "sample: it was not registered by the training pipeline); give some with --rows FILE\n"
    )
    rows = tmp_path / "rows.csv"
    test_rows.assign(churned="no").to_csv(rows, index=False)  # the target is left out
    assert main([*command, "--rows", str(rows)]) == 0
    report = json.loads((tmp_path / "o" / REPORT_JSON).read_text())
    assert report["rows_source"] == f"rows of {rows}"
    assert report["parity"]["rows"] == len(test_rows) and report["parity"]["passed"]
