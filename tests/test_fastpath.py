"""The compiled prediction path against the sklearn pipeline it replaces, on held-out rows.

Every family, every task and every preprocessing option the pipeline can choose: the fast
path must give the estimator the same matrix, so labels and probabilities come out equal
(exactly, here: the compiled steps do the same float operations in the same order).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from kfp_lifecycle.components.features import FeaturesOptions, fit_feature_selector
from kfp_lifecycle.components.preprocess import PreprocessOptions, fit_preprocessor
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model
from kfp_lifecycle.core.bundle import Bundle, load_bundle
from kfp_lifecycle.core.errors import SchemaError
from kfp_lifecycle.core.fastpath import compile_pipeline
from kfp_lifecycle.core.schema import columns_frame
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bundles-0.1.0"
SMALL = {
    "random_forest": {"n_estimators": 15, "max_depth": 6, "n_jobs": 1},
    "hist_gradient_boosting": {"max_iter": 30},
    "xgboost": {"n_estimators": 40, "early_stopping_rounds": 5},
    "linear": {},
}


def records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a JSON client sends them: None for missing, ISO text for date-times."""
    out = []
    for row in rows.to_dict("records"):
        record = {}
        for key, value in row.items():
            if isinstance(value, pd.Timestamp):
                value = value.isoformat()
            elif value is None or (not isinstance(value, str) and pd.isna(value)):
                value = None
            elif isinstance(value, np.generic):
                value = value.item()
            record[key] = value
        out.append(record)
    return out


def edge_rows(bundle: Bundle, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows the held-out split rarely holds: all missing, unseen categories, extremes."""
    nothing = dict.fromkeys(base)
    unseen = {**base}
    extreme = {**base}
    for column in bundle.schema.columns:
        if column.kind == "categorical":
            unseen[column.name] = "never-seen-in-training"
        elif column.kind == "numeric":
            extreme[column.name] = 1e9
        elif column.kind == "datetime":
            extreme[column.name] = "1999-12-31 23:59:59"
    return [nothing, unseen, extreme]


def assert_same_predictions(bundle: Bundle, rows: list[dict[str, Any]]) -> None:
    assert bundle.compiled is not None, "the bundle's pipeline should compile"
    columns, _ = bundle.schema.records_to_columns(rows)
    reference = bundle.predict(columns_frame(columns))
    fast = bundle.predict_columns(columns)
    matrix = bundle.compiled.transform(columns)
    expected = Pipeline(bundle.pipeline.steps[:-1]).transform(columns_frame(columns))
    np.testing.assert_array_equal(matrix, np.asarray(expected, dtype=np.float64))
    assert fast.labels == reference.labels
    if reference.probabilities is None:
        assert fast.probabilities is None
    else:
        np.testing.assert_array_equal(fast.probabilities, reference.probabilities)
    for single in rows[:3]:  # one row at a time, as most requests come
        one, _ = bundle.schema.records_to_columns([single])
        np.testing.assert_array_equal(
            bundle.compiled.transform(one),
            np.asarray(Pipeline(bundle.pipeline.steps[:-1]).transform(columns_frame(one))),
        )


@pytest.mark.parametrize("case", sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()))
def test_the_0_1_0_bundles_compile_and_predict_what_they_predicted(case):
    directory = FIXTURES / case
    bundle = load_bundle(directory / "bundle")
    rows = records(pd.read_parquet(directory / "rows.parquet"))
    assert_same_predictions(bundle, rows + edge_rows(bundle, rows[0]))
    expected = json.loads((directory / "expected.json").read_text())
    columns, _ = bundle.schema.records_to_columns(rows)
    assert bundle.predict_columns(columns).labels == expected["labels"]


def _churn_with_gaps(churn: pd.DataFrame) -> pd.DataFrame:
    frame = churn.copy()
    rng = np.random.default_rng(4)
    frame.loc[rng.random(len(frame)) < 0.08, "age"] = np.nan
    frame.loc[rng.random(len(frame)) < 0.05, "signup_date"] = None
    frame.loc[rng.random(len(frame)) < 0.05, "plan"] = None
    frame.loc[rng.random(len(frame)) < 0.02, "region"] = "far-north"
    return frame


# family x task, each with different preprocessing options, so every option meets a family.
CASES = {
    "binary-linear-onehot-rare-clip-mostfrequent": (
        "churn", "linear",
        PreprocessOptions(
            encoding="onehot", rare_category_share=0.05, outliers="iqr_clip",
            categorical_imputation="most_frequent", scaling="minmax",
            datetime_parts=["year", "month", "weekday", "hour", "dayofyear"],
        ),
    ),
    "binary-xgboost-target": ("churn", "xgboost", PreprocessOptions(encoding="target")),
    "binary-hgb-ordinal-noindicators": (
        "churn", "hist_gradient_boosting",
        PreprocessOptions(encoding="ordinal", missing_indicators=False, scaling="robust"),
    ),
    "binary-forest-defaults-noncyclic": (
        "churn", "random_forest", PreprocessOptions(datetime_cyclical=False, scaling="none"),
    ),
    "multiclass-xgboost-target": ("multiclass", "xgboost", PreprocessOptions(encoding="target")),
    "multiclass-hgb-onehot": ("multiclass", "hist_gradient_boosting", PreprocessOptions()),
    "multiclass-forest-ordinal": (
        "multiclass", "random_forest", PreprocessOptions(encoding="ordinal"),
    ),
    "regression-linear-onehot-clip": (
        "regression", "linear", PreprocessOptions(outliers="iqr_clip", numeric_imputation="mean"),
    ),
    "regression-xgboost-ordinal": (
        "regression", "xgboost",
        PreprocessOptions(encoding="ordinal", numeric_imputation="constant"),
    ),
    "regression-forest-target": (
        "regression", "random_forest", PreprocessOptions(encoding="target"),
    ),
    "regression-hgb-defaults": ("regression", "hist_gradient_boosting", PreprocessOptions()),
}  # fmt: skip
TARGETS = {"churn": ("churned", CLASSIFICATION), "multiclass": ("species", CLASSIFICATION),
           "regression": ("price", REGRESSION)}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_family_task_and_option_predicts_as_the_sklearn_pipeline(case, request):
    table, family, options = CASES[case]
    frame = request.getfixturevalue(table)
    if table == "churn":
        frame = _churn_with_gaps(frame)
    target, task = TARGETS[table]
    parts = split_table(frame, target, task, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, target, task, options)
    if family == "linear":  # feature selection (KeepFeatures) too
        selection = FeaturesOptions(methods=["variance", "correlation"], max_features=8)
        fitted, _ = fit_feature_selector(fitted, parts.train, target, task, selection)
    trained = train_model(
        parts.train, parts.validation, target, task, family, fitted, schema,
        params=SMALL[family],
    )  # fmt: skip
    bundle = Bundle(Path("."), trained.pipeline, trained.metadata)
    rows = records(parts.test.drop(columns=[target]).reset_index(drop=True))
    assert_same_predictions(bundle, rows + edge_rows(bundle, rows[0]))


def test_a_step_it_does_not_know_falls_back_to_sklearn_and_says_so(caplog):
    bundle = load_bundle(FIXTURES / "multiclass_linear" / "bundle")
    steps = bundle.pipeline.steps
    odd = Pipeline([*steps[:-1], ("odd", FunctionTransformer(np.negative)), steps[-1]])
    with caplog.at_level(logging.WARNING, logger="kfp_lifecycle.core.fastpath"):
        assert compile_pipeline(odd, bundle.schema) is None
    assert "FunctionTransformer" in caplog.text
    fallback = Bundle(bundle.path, odd, bundle.metadata)
    rows = records(pd.read_parquet(FIXTURES / "multiclass_linear" / "rows.parquet"))
    columns, _ = fallback.schema.records_to_columns(rows)
    np.testing.assert_array_equal(
        fallback.predict_columns(columns).probabilities,
        odd.predict_proba(columns_frame(columns)),
    )


def test_the_fast_path_can_be_turned_off_per_call():
    bundle = load_bundle(FIXTURES / "binary_linear" / "bundle")
    rows = records(pd.read_parquet(FIXTURES / "binary_linear" / "rows.parquet"))
    columns, _ = bundle.schema.records_to_columns(rows)
    slow = bundle.predict_columns(columns, fast=False)
    np.testing.assert_array_equal(slow.probabilities, bundle.predict_columns(columns).probabilities)


def test_columns_hold_what_the_coerced_frame_held_and_date_times_parse_alike():
    bundle = load_bundle(FIXTURES / "binary_linear" / "bundle")
    rows = records(pd.read_parquet(FIXTURES / "binary_linear" / "rows.parquet"))[:4]
    layouts = ["2024-02-29", "2024-02-29 13:45", "2024-02-29T13:45:10.123456", None]
    zoned = ["2024-02-29T13:45:00+02:00", "2024-02-29T13:45:00Z", "29 Feb 2024", None]
    for values in (layouts, zoned):
        batch = [{**row, "signup_date": v} for row, v in zip(rows, values, strict=True)]
        columns, _ = bundle.schema.records_to_columns(batch)
        pd.testing.assert_frame_equal(
            columns_frame(columns), bundle.schema.coerce(pd.DataFrame.from_records(batch))
        )
    with pytest.raises(SchemaError, match=r"record 0, field 'signup_date': expected an ISO"):
        bundle.schema.records_to_columns([{**rows[0], "signup_date": "2024-02-30"}])


def test_unseen_categories_are_reported_and_strict_refuses_them():
    bundle = load_bundle(FIXTURES / "multiclass_linear" / "bundle")
    row = {"x1": 0.1, "x2": None, "colour": "red"}
    columns, unseen = bundle.schema.records_to_columns([row, {**row, "colour": "ultraviolet"}])
    assert [(u.row, u.field, u.value) for u in unseen] == [(1, "colour", "ultraviolet")]
    assert list(columns["colour"]) == ["red", "ultraviolet"]  # the raw value, for the log
    with pytest.raises(SchemaError, match="record 1, field 'colour': category 'ultraviolet'"):
        bundle.schema.records_to_columns([row, {**row, "colour": "ultraviolet"}], strict=True)


def test_a_huge_bad_value_is_quoted_cut_with_its_length():
    bundle = load_bundle(FIXTURES / "multiclass_linear" / "bundle")
    with pytest.raises(SchemaError) as caught:
        bundle.schema.records_to_columns([{"x1": "x" * 5_000_000, "x2": 1.0, "colour": "red"}])
    message = str(caught.value)
    assert len(message) < 300
    assert "(5000002 characters)" in message
