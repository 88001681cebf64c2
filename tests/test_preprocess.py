import numpy as np
import pandas as pd
import pytest

from kfp_lifecycle.components.preprocess import (
    fit_preprocessor,
    load_preprocessor,
    save_preprocessor,
)
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.errors import SchemaError
from kfp_lifecycle.schema import CATEGORICAL, DATETIME, NUMERIC
from kfp_lifecycle.tasks import CLASSIFICATION


@pytest.fixture(scope="module")
def parts(churn):
    return split_table(churn, "churned", CLASSIFICATION, seed=3)


def test_schema_kinds_and_categories_come_from_training_rows(parts):
    _, schema = fit_preprocessor(parts.train, "churned")
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds["signup_date"] == DATETIME
    assert kinds["age"] == NUMERIC and kinds["plan"] == CATEGORICAL
    assert "churned" not in kinds
    region = next(c for c in schema.columns if c.name == "region")
    assert region.categories == sorted(parts.train["region"].dropna().unique())
    assert region.nullable


def test_statistics_are_fitted_on_training_rows_only(parts):
    """No leak: the imputer's median is the training median, not the whole table's."""
    train = parts.train.copy()
    train["age"] = train["age"].fillna(train["age"].median()) + 1000.0
    fitted, _ = fit_preprocessor(train, "churned")
    columns = fitted.named_steps["columns"]
    imputer = columns.named_transformers_["numeric"].named_steps["simpleimputer"]
    age_index = columns.transformers_[0][2].index("age")
    assert imputer.statistics_[age_index] == pytest.approx(train["age"].median())
    scaler = columns.named_transformers_["numeric"].named_steps["standardscaler"]
    assert scaler.mean_[age_index] == pytest.approx(train["age"].mean())


def test_transforms_raw_rows_with_unseen_categories_and_missing_values(parts):
    fitted, _ = fit_preprocessor(parts.train, "churned")
    rows = parts.test.drop(columns=["churned"]).head(3).copy()
    rows["plan"] = ["platinum", None, "basic"]
    rows["age"] = [np.nan, 30.0, 50.0]
    features = fitted.transform(rows)
    assert features.shape[0] == 3
    assert np.isfinite(np.asarray(features, dtype=float)).all()
    names = fitted.named_steps["columns"].get_feature_names_out()
    assert "datetime__signup_date_month" in names


def test_missing_column_at_transform_time_is_named(parts):
    fitted, _ = fit_preprocessor(parts.train, "churned")
    with pytest.raises(SchemaError, match="missing column"):
        fitted.transform(parts.test.drop(columns=["churned", "plan"]))


def test_round_trip_through_files(tmp_path, parts):
    fitted, schema = fit_preprocessor(parts.train, "churned")
    save_preprocessor(tmp_path, fitted, schema)
    loaded, loaded_schema = load_preprocessor(tmp_path)
    rows = parts.test.drop(columns=["churned"])
    assert loaded_schema == schema
    assert np.allclose(loaded.transform(rows), fitted.transform(rows))


def test_datetime_strings_are_expanded(parts):
    fitted, _ = fit_preprocessor(parts.train, "churned")
    expander = fitted.named_steps["columns"].named_transformers_["datetime"].steps[0][1]
    parts_frame = expander.transform(pd.DataFrame({"signup_date": ["2024-03-05 17:30:00"]}))
    assert parts_frame.iloc[0].tolist() == [2024.0, 3.0, 1.0, 17.0]


def test_a_bad_date_in_a_request_names_its_row(parts):
    _, schema = fit_preprocessor(parts.train, "churned")
    records = parts.test.drop(columns=["churned"]).head(3).to_dict(orient="records")
    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in records]
    records[2]["signup_date"] = "yesterday-ish"
    with pytest.raises(SchemaError, match="record 2, field 'signup_date': expected an ISO 8601"):
        schema.records_to_frame(records)
    records[2]["signup_date"] = "2025-02-03T04:05:06Z"
    assert schema.records_to_frame(records)["signup_date"].iloc[2] == pd.Timestamp(
        "2025-02-03 04:05:06"
    )
