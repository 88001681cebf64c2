import json

import joblib
import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset
from pydantic import ValidationError

from kfp_lifecycle.components.preprocess import (
    MISSING_CATEGORY,
    PreprocessOptions,
    drop_outlier_rows,
    fit_preprocessor,
    load_preprocessor,
    preprocess,
    save_preprocessor,
)
from kfp_lifecycle.components.train import train_model
from kfp_lifecycle.core.errors import DataError, SchemaError
from kfp_lifecycle.core.schema import CATEGORICAL, DATETIME, NUMERIC
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION
from kfp_lifecycle.core.transformers import DatetimeFeatures


def _split(frame: pd.DataFrame, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """60% training rows, 40% held-out rows, shuffled with a seed."""
    order = np.random.default_rng(seed).permutation(len(frame))
    cut = int(len(frame) * 0.6)
    return frame.iloc[order[:cut]], frame.iloc[order[cut:]]


def _fit(train: pd.DataFrame, target: str = "churned", task: str = CLASSIFICATION, **options):
    return fit_preprocessor(train, target, task, PreprocessOptions(**options))


def _branch(fitted, name):
    return fitted.named_steps["columns"].named_transformers_[name]


def _features(fitted, rows: pd.DataFrame) -> pd.DataFrame:
    names = fitted.get_feature_names_out()
    return pd.DataFrame(fitted.transform(rows), columns=names, index=rows.index)


@pytest.fixture(scope="module")
def parts(churn):
    return _split(churn)


@pytest.fixture(scope="module")
def wide(churn) -> pd.DataFrame:
    """Churn plus what real tables also carry: an ID, a constant, a high-cardinality city."""
    rng = np.random.default_rng(1)
    cities = np.array([f"city-{i:03d}" for i in range(120)])
    return churn.assign(
        customer_id=np.arange(100_000, 100_000 + len(churn)),
        account_ref=[f"acct-{i:06x}" for i in rng.permutation(len(churn))],
        source_system="crm",
        city=cities[rng.integers(0, len(cities), size=len(churn))],
    )


def test_schema_kinds_and_categories_come_from_training_rows(parts):
    train, _ = parts
    _, schema, _ = _fit(train)
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds["signup_date"] == DATETIME
    assert kinds["age"] == NUMERIC and kinds["plan"] == CATEGORICAL
    assert "churned" not in kinds
    region = next(c for c in schema.columns if c.name == "region")
    assert region.categories == sorted(train["region"].dropna().unique())
    assert region.nullable


def test_fitted_statistics_are_the_training_rows_own(churn):
    """No leak: held-out rows that differ wildly leave every fitted number where training put it."""
    train, held_out = _split(churn)
    held_out = held_out.assign(age=held_out["age"] + 1000.0, tenure_months=-50.0)
    fitted, _, report = _fit(train, outliers="iqr_clip", iqr_factor=1.5)
    numeric = _branch(fitted, "numeric")
    columns = list(numeric.feature_names_in_)
    age = columns.index("age")
    assert numeric.named_steps["simpleimputer"].statistics_[age] == train["age"].median()
    q1, q3 = train["tenure_months"].quantile([0.25, 0.75])
    assert report.clip_bounds["tenure_months"] == [
        pytest.approx(q1 - 1.5 * (q3 - q1)),
        pytest.approx(q3 + 1.5 * (q3 - q1)),
    ]
    clipped_age = train["age"].clip(*report.clip_bounds["age"])
    expected_mean = clipped_age.fillna(train["age"].median()).mean()
    assert numeric.named_steps["standardscaler"].mean_[age] == pytest.approx(expected_mean)

    before = joblib.hash(fitted)
    _features(fitted, held_out)
    assert joblib.hash(fitted) == before  # transforming other rows changes nothing fitted
    refitted, _, _ = _fit(train, outliers="iqr_clip", iqr_factor=1.5)
    assert joblib.hash(refitted) == before  # and the fit depends on the training rows alone


def test_target_encoding_learns_from_training_rows_only(wide):
    """Each city's encoding follows its training labels, even where held-out labels disagree."""
    train, held_out = _split(wide)
    flipped = held_out.assign(churned=np.where(held_out["churned"] == "yes", "no", "yes"))
    fitted, _, report = _fit(train, drop_id_like=True)
    assert report.encodings["city"] == "target"
    assert report.encodings["plan"] == "onehot"
    encoder = _branch(fitted, "target").named_steps["targetencoder"]
    churn_rate = train.groupby("city")["churned"].apply(lambda s: (s == "yes").mean())
    encoded = pd.Series(encoder.encodings_[0], index=encoder.categories_[0])
    # Smoothing pulls each toward the mean, but the order follows the training rates.
    assert np.corrcoef(encoded[churn_rate.index], churn_rate)[0, 1] > 0.9
    before = joblib.hash(fitted)
    _features(fitted, flipped)
    assert joblib.hash(fitted) == before


def test_constant_and_id_like_columns_are_dropped_and_reported(wide):
    train, held_out = _split(wide)
    fitted, schema, report = _fit(train)
    assert set(report.dropped_columns) == {"customer_id", "account_ref", "source_system"}
    assert report.dropped_columns["source_system"].startswith("constant")
    assert report.dropped_columns["customer_id"].startswith("ID-like")
    assert report.dropped_columns["account_ref"].startswith("ID-like")
    assert not set(report.dropped_columns) & set(schema.names)
    # A client need not send dropped columns; sending them changes nothing.
    rows = held_out.drop(columns=["churned"])
    assert np.allclose(
        fitted.transform(rows), fitted.transform(rows.drop(columns=list(report.dropped_columns)))
    )

    _, schema, report = _fit(train, drop_constant=False, drop_id_like=False)
    assert report.dropped_columns == {}
    assert {"customer_id", "account_ref", "source_system"} <= set(schema.names)


def test_no_usable_column_is_an_error_naming_the_reasons():
    frame = pd.DataFrame({"id": range(100), "const": 1.0, "y": [0, 1] * 50})
    with pytest.raises(DataError, match=r"no usable feature.*id: ID-like.*const: constant"):
        fit_preprocessor(frame, "y", CLASSIFICATION)


@pytest.mark.parametrize(
    ("strategy", "statistic"),
    [("median", pd.Series.median), ("mean", pd.Series.mean), ("constant", lambda s: 0.0)],
)
def test_numeric_imputation(parts, strategy, statistic):
    train, held_out = parts
    fitted, _, _ = _fit(train, numeric_imputation=strategy, scaling="none")
    rows = held_out.drop(columns=["churned"]).head(2).assign(age=[np.nan, 30.0])
    features = _features(fitted, rows)
    assert features["numeric__age"].tolist() == pytest.approx([statistic(train["age"]), 30.0])
    assert features["numeric__missingindicator_age"].tolist() == [1.0, 0.0]


def test_missing_indicators_can_be_turned_off(parts):
    _, _, report = _fit(parts[0], missing_indicators=False, categorical_imputation="constant")
    assert not [name for name in report.features if "missingindicator" in name]
    assert "onehot__region_" + MISSING_CATEGORY in report.features  # its own category still


def test_categorical_imputation(parts):
    train, held_out = parts
    rows = held_out.drop(columns=["churned"]).head(2).assign(region=[None, "east"])

    fitted, _, report = _fit(train, categorical_imputation="constant")
    features = _features(fitted, rows)
    assert features[f"onehot__region_{MISSING_CATEGORY}"].tolist() == [1.0, 0.0]
    assert not [name for name in report.features if name.startswith("categorical_missing")]

    fitted, _, report = _fit(train, categorical_imputation="most_frequent")
    features = _features(fitted, rows)
    mode = train["region"].mode()[0]
    assert features[f"onehot__region_{mode}"].iloc[0] == 1.0
    assert features["categorical_missing__missingindicator_region"].tolist() == [1.0, 0.0]
    assert f"onehot__region_{MISSING_CATEGORY}" not in report.features


def test_iqr_clipping_bounds_extremes_but_not_zero_iqr_columns():
    rng = np.random.default_rng(0)
    rows = 400
    frame = pd.DataFrame(
        {
            "x": rng.normal(0, 1, rows),
            "mostly_zero": np.where(rng.random(rows) < 0.9, 0.0, rng.integers(1, 9, rows)),
            "y": rng.normal(size=rows),
        }
    )
    fitted, _, report = fit_preprocessor(
        frame, "y", REGRESSION, PreprocessOptions(outliers="iqr_clip", scaling="none")
    )
    low, high = report.clip_bounds["x"]
    assert report.clip_bounds["mostly_zero"] == [None, None]  # IQR 0: left as is
    out = _features(fitted, pd.DataFrame({"x": [50.0, -50.0, 0.5], "mostly_zero": [7.0] * 3}))
    assert out["numeric__x"].tolist() == pytest.approx([high, low, 0.5])
    assert out["numeric__mostly_zero"].tolist() == [7.0] * 3


def test_isolation_forest_removes_planted_outliers_before_fitting():
    rng = np.random.default_rng(2)
    rows = 500
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows)})
    frame["y"] = frame["a"] + rng.normal(0, 0.1, rows)
    planted = [10, 200, 450]
    frame.loc[planted, ["a", "b"]] = [[40.0, -40.0], [-35.0, 30.0], [45.0, 45.0]]
    options = PreprocessOptions(outliers="isolation_forest", isolation_contamination=0.01)
    fitted, _, report = fit_preprocessor(frame, "y", REGRESSION, options)
    assert set(planted) <= set(report.outlier_rows)
    assert len(report.outlier_rows) == pytest.approx(0.01 * rows, abs=1)
    kept = drop_outlier_rows(frame, report)
    assert len(kept) == report.fitted_rows == rows - len(report.outlier_rows)
    assert not set(planted) & set(kept.index)
    scaler = _branch(fitted, "numeric").named_steps["standardscaler"]
    assert scaler.mean_[0] == pytest.approx(kept["a"].mean())  # fitted on the kept rows

    _, _, untouched = fit_preprocessor(frame, "y", REGRESSION)
    assert untouched.outlier_rows == [] and len(drop_outlier_rows(frame, untouched)) == rows


@pytest.mark.parametrize("encoding", ["onehot", "ordinal", "target"])
def test_forced_encodings(wide, encoding):
    train, held_out = _split(wide)
    fitted, _, report = _fit(train, encoding=encoding)
    assert set(report.encodings.values()) == {encoding}
    rows = held_out.drop(columns=["churned"]).head(3).assign(plan=["pro", "platinum", None])
    features = _features(fitted, rows)
    plan = [name for name in features.columns if name.startswith(f"{encoding}__plan")]
    values = features[plan].to_numpy()
    if encoding == "onehot":
        assert len([n for n in features.columns if "__city_" in n]) <= 30  # high_cardinality
        assert values[0].sum() == 1.0 and values[1].sum() == 0.0  # unseen plan: no column
    elif encoding == "ordinal":
        assert values[:, 0].tolist() == [1.0, -1.0, -1.0]  # basic, pro, standard; unseen: -1
    else:
        assert len(plan) == 1 and np.isfinite(values).all()
        assert values[1, 0] == values[2, 0] != values[0, 0]  # unseen ones: the prior


def test_rare_categories_are_grouped_and_take_unseen_ones():
    rng = np.random.default_rng(4)
    colour = np.where(rng.random(1000) < 0.005, "teal", rng.choice(["red", "blue"], 1000))
    frame = pd.DataFrame({"colour": colour, "y": rng.integers(0, 2, 1000)})
    fitted, _, report = fit_preprocessor(
        frame, "y", CLASSIFICATION, PreprocessOptions(rare_category_share=0.02)
    )
    assert report.features == [
        "onehot__colour_blue",
        "onehot__colour_red",
        "onehot__colour_infrequent_sklearn",
    ]
    out = fitted.transform(pd.DataFrame({"colour": ["teal", "mauve", "red"]}))
    assert out[:, 2].tolist() == [1.0, 1.0, 0.0]

    _, _, apart = fit_preprocessor(
        frame, "y", CLASSIFICATION, PreprocessOptions(rare_category_share=0)
    )
    assert "onehot__colour_teal" in apart.features


def test_auto_encoding_switches_at_high_cardinality(wide):
    train, _ = _split(wide)
    distinct = train["city"].nunique()
    _, _, report = _fit(train, high_cardinality=distinct)
    assert report.encodings["city"] == "onehot"
    assert report.distinct_values["city"] == distinct
    _, _, report = _fit(train, high_cardinality=distinct - 1)
    assert report.encodings["city"] == "target"


@pytest.mark.parametrize(
    ("scaling", "check"),
    [
        ("standard", lambda v, raw: abs(v.mean()) < 1e-9 and abs(v.std() - 1) < 1e-9),
        ("minmax", lambda v, raw: v.min() == 0.0 and v.max() == 1.0),
        ("robust", lambda v, raw: abs(np.median(v)) < 1e-9),
        ("none", lambda v, raw: np.allclose(v, raw)),
    ],
)
def test_scaling(parts, scaling, check):
    train, _ = parts
    fitted, _, _ = _fit(train, scaling=scaling)
    features = _features(fitted, train)
    assert check(features["numeric__tenure_months"].to_numpy(), train["tenure_months"].to_numpy())
    assert set(np.unique(features["onehot__plan_basic"])) == {0.0, 1.0}  # one-hot left alone


def test_datetime_parts_and_cycles():
    expander = DatetimeFeatures(("year", "month", "weekday", "hour", "dayofyear"), cyclical=True)
    stamps = pd.DataFrame({"t": ["2024-12-31 23:00:00", "2025-01-01 00:30:00", None]})
    expander.fit(stamps)
    out = expander.transform(stamps)
    assert list(out.columns) == list(expander.get_feature_names_out())
    assert out.loc[0, ["t_year", "t_month", "t_weekday", "t_hour", "t_dayofyear"]].tolist() == [
        2024.0,
        12.0,
        1.0,
        23.0,
        366.0,
    ]
    # December and January are neighbours on the circle, far apart as plain numbers.
    december = out.loc[0, ["t_month_sin", "t_month_cos"]].to_numpy()
    january = out.loc[1, ["t_month_sin", "t_month_cos"]].to_numpy()
    assert np.linalg.norm(december - january) < 0.6
    assert out.loc[2].isna().all()

    flagged = DatetimeFeatures(("year",), cyclical=False, missing_indicator=True).fit(stamps)
    assert list(flagged.get_feature_names_out()) == ["t_year", "t_missing"]
    assert flagged.transform(stamps)["t_missing"].tolist() == [0.0, 0.0, 1.0]


def test_datetime_options_reach_the_pipeline(parts):
    train, _ = parts
    _, _, report = _fit(train, datetime_parts=["dayofyear"], datetime_cyclical=False)
    assert [f for f in report.features if f.startswith("datetime__")] == [
        "datetime__signup_date_dayofyear"
    ]
    _, schema, report = _fit(train, datetime_parts=[])
    assert "signup_date" in report.dropped_columns and "signup_date" not in schema.names


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"scaler": "standard"}, "scaler"),
        ({"scaling": "zscore"}, "scaling"),
        ({"outliers": "winsorize"}, "outliers"),
        ({"iqr_factor": 0}, "iqr_factor"),
        ({"isolation_contamination": 0.7}, "isolation_contamination"),
        ({"rare_category_share": 1.5}, "rare_category_share"),
        ({"datetime_parts": ["minute"]}, "datetime_parts"),
        ({"datetime_parts": ["year", "year"]}, "datetime_parts"),
    ],
)
def test_bad_options_are_named(options, field):
    with pytest.raises(ValidationError, match=field):
        PreprocessOptions.model_validate(options)


def test_bad_training_rows_are_named(parts):
    train, _ = parts
    with pytest.raises(DataError, match="target column 'nope' not found"):
        fit_preprocessor(train, "nope", CLASSIFICATION)
    with pytest.raises(DataError, match="unknown task 'ranking'"):
        fit_preprocessor(train, "churned", "ranking")
    unlabelled = train.assign(churned=train["churned"].where(train["age"] > 30))
    with pytest.raises(DataError, match=r"target 'churned' is missing in \d+ training row"):
        fit_preprocessor(unlabelled, "churned", CLASSIFICATION)


def test_missing_column_at_transform_time_is_named(parts):
    train, held_out = parts
    fitted, _, _ = _fit(train)
    with pytest.raises(SchemaError, match="missing column"):
        fitted.transform(held_out.drop(columns=["churned", "plan"]))


@pytest.mark.parametrize(
    ("fixture", "target", "task"),
    [("churn", "churned", CLASSIFICATION), ("multiclass", "species", CLASSIFICATION)],
)
def test_bundle_predicts_raw_rows_with_unseen_categories_and_missing_values(
    request, fixture, target, task
):
    train, held_out = _split(request.getfixturevalue(fixture))
    validation, test = held_out.iloc[: len(held_out) // 2], held_out.iloc[len(held_out) // 2 :]
    options = {"encoding": "target", "outliers": "iqr_clip", "scaling": "robust"}
    fitted, schema, _ = _fit(train, target, task, **options)
    bundle = train_model(train, validation, target, task, "linear", fitted, schema)
    rows = test.drop(columns=[target]).head(4).copy()
    categorical = schema.of_kind(CATEGORICAL)[0]
    numeric = schema.of_kind(NUMERIC)[0]
    rows[categorical] = ["never-seen", None, rows[categorical].iloc[2], "also-new"]
    rows[numeric] = [np.nan, np.nan, 1.0, np.nan]
    prediction = bundle.predict(rows)
    assert np.allclose(prediction.probabilities.sum(axis=1), 1.0)
    assert set(prediction.labels) <= set(bundle.classes)


def test_regression_target_encoding_is_continuous(regression):
    train, _ = _split(regression)
    fitted, _, report = fit_preprocessor(
        train, "price", REGRESSION, PreprocessOptions(encoding="target", scaling="none")
    )
    encoder = _branch(fitted, "target").named_steps["targetencoder"]
    assert encoder.target_type_ == "continuous"
    means = train.groupby("district")["price"].mean()
    encoded = pd.Series(encoder.encodings_[0], index=encoder.categories_[0])
    assert list(encoded.sort_values().index) == list(means.sort_values().index)
    assert report.features == [
        "numeric__size_m2",
        "numeric__rooms",
        "numeric__missingindicator_size_m2",
        "target__district",
    ]


def test_joblib_round_trip_gives_identical_output(tmp_path, wide):
    train, held_out = _split(wide)
    fitted, schema, _ = _fit(
        train, outliers="iqr_clip", categorical_imputation="most_frequent", scaling="minmax"
    )
    save_preprocessor(tmp_path, fitted, schema)
    loaded, loaded_schema = load_preprocessor(tmp_path)
    rows = held_out.drop(columns=["churned"])
    assert loaded_schema == schema
    assert np.array_equal(loaded.transform(rows), fitted.transform(rows))


def test_component_writes_preprocessor_clean_rows_and_report(tmp_path, parts):
    train, _ = parts
    source = tmp_path / "train.parquet"
    train.to_parquet(source, index=False)
    outputs = {
        "preprocessor": Artifact(uri=str(tmp_path / "preprocessor")),
        "train_clean": Dataset(uri=str(tmp_path / "train_clean.parquet")),
        "report": Artifact(uri=str(tmp_path / "report.json")),
    }
    preprocess.python_func(
        train=Dataset(uri=str(source)),
        target="churned",
        task=CLASSIFICATION,
        options={"outliers": "isolation_forest", "isolation_contamination": 0.02},
        **outputs,
    )
    document = json.loads((tmp_path / "report.json").read_text())
    clean = pd.read_parquet(tmp_path / "train_clean.parquet")
    assert len(clean) == len(train) - len(document["outlier_rows"]) == document["fitted_rows"]
    assert document["options"]["outliers"] == "isolation_forest"
    fitted, schema = load_preprocessor(tmp_path / "preprocessor")
    assert list(fitted.get_feature_names_out()) == document["features"]
    assert schema.names == document["input_columns"]

    with pytest.raises(ValidationError, match="scaling"):
        preprocess.python_func(
            train=Dataset(uri=str(source)),
            target="churned",
            task=CLASSIFICATION,
            options={"scaling": "zscore"},
            **outputs,
        )


def test_a_bad_date_in_a_request_names_its_row(parts):
    train, held_out = parts
    _, schema, _ = _fit(train)
    records = held_out.drop(columns=["churned"]).head(3).to_dict(orient="records")
    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in records]
    records[2]["signup_date"] = "yesterday-ish"
    with pytest.raises(SchemaError, match="record 2, field 'signup_date': expected an ISO 8601"):
        schema.records_to_frame(records)
    records[2]["signup_date"] = "2025-02-03T04:05:06Z"
    assert schema.records_to_frame(records)["signup_date"].iloc[2] == pd.Timestamp(
        "2025-02-03 04:05:06"
    )
