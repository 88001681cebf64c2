import json

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset
from pydantic import ValidationError

from kfp_lifecycle.components.balance import (
    ORIGIN_COLUMN,
    SAMPLE_WEIGHT_COLUMN,
    BalanceOptions,
    balance,
    balance_training_rows,
    split_balance_columns,
)
from kfp_lifecycle.components.split import Splits, guard_against_leaks, split_table
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import infer_schema
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION


@pytest.fixture(scope="module")
def parts(churn) -> Splits:
    """Churn (15% 'yes') with a boolean and a true datetime column next to the date strings."""
    frame = churn.assign(
        paperless=np.arange(len(churn)) % 3 == 0,
        last_contact=pd.Timestamp("2025-06-01")
        + pd.to_timedelta(np.arange(len(churn)) * 7919 % 500_000, unit="min"),
    )
    return split_table(frame, "churned", CLASSIFICATION, seed=4)


def _row_hashes(frame: pd.DataFrame) -> set:
    return set(pd.util.hash_pandas_object(frame, index=False))


# The churn fixture's minority share is about 0.15: over the 0.1 default, under this.
BALANCE_CHURN = BalanceOptions(minority_share_threshold=0.2)


def rows_only(balanced: pd.DataFrame) -> pd.DataFrame:
    return split_balance_columns(balanced)[0]


def test_auto_uses_smote_nc_below_the_threshold_and_evens_the_classes(parts):
    balanced, report = balance_training_rows(parts.train, "churned", CLASSIFICATION, BALANCE_CHURN)
    origins = balanced[ORIGIN_COLUMN]
    assert (origins[: len(parts.train)] == range(len(parts.train))).all()
    assert (origins[len(parts.train) :] == -1).all()
    balanced = rows_only(balanced)
    counts = balanced["churned"].value_counts()
    assert report.applied == "smote_nc" and report.minority_share < 0.2
    assert counts["yes"] == counts["no"] == (parts.train["churned"] == "no").sum()
    assert report.synthetic_rows == len(balanced) - len(parts.train) > 0
    original = balanced.iloc[: len(parts.train)]
    pd.testing.assert_frame_equal(original, parts.train.reset_index(drop=True))


def test_auto_leaves_balanced_enough_classes_alone(parts):
    balanced, report = balance_training_rows(parts.train, "churned", CLASSIFICATION)
    assert report.applied == "none" and len(balanced) == len(parts.train)


def test_synthetic_rows_look_like_raw_training_rows(parts):
    balanced, _ = balance_training_rows(parts.train, "churned", CLASSIFICATION, BALANCE_CHURN)
    balanced = rows_only(balanced)
    synthetic = balanced.iloc[len(parts.train) :]
    raw_kinds = {c.name: c.kind for c in infer_schema(parts.train, "churned").columns}
    assert {c.name: c.kind for c in infer_schema(synthetic, "churned").columns} == raw_kinds
    assert (synthetic.dtypes == parts.train.dtypes).all()
    for name in ("plan", "contract", "payment_method"):
        assert set(synthetic[name]) <= set(parts.train[name])
    for name in ("age", "tenure_months", "support_calls"):  # whole numbers stay whole
        assert (synthetic[name] == synthetic[name].round()).all()
    for name in ("monthly_charges", "tenure_months", "last_contact"):
        assert synthetic[name].between(parts.train[name].min(), parts.train[name].max()).all()
    dates = pd.to_datetime(synthetic["signup_date"], format="ISO8601")
    assert dates.notna().all()
    assert dates.min() >= pd.to_datetime(parts.train["signup_date"]).min()
    assert set(synthetic["churned"]) == {"yes"}


def test_resampled_rows_never_reach_validation_or_test(parts):
    validation, test = parts.validation.copy(), parts.test.copy()
    balanced, _ = balance_training_rows(parts.train, "churned", CLASSIFICATION, BALANCE_CHURN)
    balanced = rows_only(balanced)
    synthetic = balanced.iloc[len(parts.train) :]
    assert len(synthetic) > 0
    held_out = _row_hashes(validation) | _row_hashes(test)
    assert not _row_hashes(synthetic) & held_out
    assert not _row_hashes(synthetic) & _row_hashes(parts.train)  # new rows, not copies
    guard_against_leaks(Splits(balanced, parts.validation, parts.test, parts.report), "churned")
    pd.testing.assert_frame_equal(parts.validation, validation)
    pd.testing.assert_frame_equal(parts.test, test)
    # The step's only table input is the training partition.
    assert {"train"} == {
        name for name, spec in balance.component_spec.inputs.items() if "Dataset" in str(spec)
    }


@pytest.mark.parametrize(
    ("columns", "applied"),
    [(["x1", "x2"], "smote"), (["colour"], "smoten"), (["x1", "x2", "colour"], "smote_nc")],
)
def test_smote_variant_follows_the_column_kinds(multiclass, columns, applied):
    train = multiclass[[*columns, "species"]]
    balanced, report = balance_training_rows(
        train, "species", CLASSIFICATION, BalanceOptions(strategy="smote")
    )
    assert report.applied == applied
    assert balanced["species"].value_counts().nunique() == 1  # three classes, equal counts
    assert balanced.iloc[len(train) :][columns].notna().all().all()


def test_random_sampling_only_repeats_or_drops_real_rows(parts):
    train = parts.train
    counts = train["churned"].value_counts()
    over, _ = balance_training_rows(
        train, "churned", CLASSIFICATION, BalanceOptions(strategy="oversample")
    )
    under, _ = balance_training_rows(
        train, "churned", CLASSIFICATION, BalanceOptions(strategy="undersample")
    )
    assert over["churned"].value_counts().tolist() == [counts.max()] * 2
    assert under["churned"].value_counts().tolist() == [counts.min()] * 2
    assert (train.iloc[over[ORIGIN_COLUMN]]["churned"].to_numpy() == over["churned"]).all()
    assert _row_hashes(rows_only(over)) == _row_hashes(train)
    assert _row_hashes(rows_only(under)) <= _row_hashes(train)


def test_a_ratio_sampling_strategy_stops_short_of_parity(parts):
    balanced, _ = balance_training_rows(
        parts.train,
        "churned",
        CLASSIFICATION,
        BalanceOptions(strategy="smote", sampling_strategy=0.5),
    )
    counts = balanced["churned"].value_counts()
    assert counts["yes"] == int(0.5 * counts["no"])


def test_class_weights_balance_the_total_weight_of_each_class(parts):
    balanced, report = balance_training_rows(
        parts.train, "churned", CLASSIFICATION, BalanceOptions(strategy="class_weight")
    )
    weights = balanced.groupby("churned")[SAMPLE_WEIGHT_COLUMN].sum()
    assert weights["yes"] == pytest.approx(weights["no"])
    assert weights.sum() == pytest.approx(len(parts.train))
    assert report.class_weights["yes"] > 1 > report.class_weights["no"]
    features, sample_weight, origins = split_balance_columns(balanced)
    assert SAMPLE_WEIGHT_COLUMN not in features and ORIGIN_COLUMN not in features
    assert len(sample_weight) == len(features)
    assert (origins == range(len(parts.train))).all()
    assert split_balance_columns(parts.train)[1:] == (None, None)


def test_a_tiny_class_lowers_k_or_falls_back_to_oversampling(multiclass):
    rare = multiclass[multiclass["species"] != "setosa"].copy()
    rare.loc[rare.index[:3], "species"] = "setosa"  # 3 rows: at most 2 neighbours
    _, report = balance_training_rows(
        rare, "species", CLASSIFICATION, BalanceOptions(strategy="smote")
    )
    assert "k_neighbors lowered from 5 to 2" in report.notes[0]
    single = rare.drop(index=rare.index[1:3])
    with pytest.raises(DataError, match=r"'setosa'.*1 training row.*oversample"):
        balance_training_rows(single, "species", CLASSIFICATION, BalanceOptions(strategy="smote"))
    _, report = balance_training_rows(single, "species", CLASSIFICATION)
    assert report.applied == "oversample"


def test_regression_passes_through_and_refuses_class_strategies(regression):
    balanced, report = balance_training_rows(regression, "price", REGRESSION)
    assert report.applied == "none" and len(balanced) == len(regression)
    with pytest.raises(DataError, match="'smote' needs classes; for regression"):
        balance_training_rows(regression, "price", REGRESSION, BalanceOptions(strategy="smote"))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"strategy": "adasyn"}, "strategy"),
        ({"minority_share_threshold": 0.7}, "minority_share_threshold"),
        ({"k_neighbors": 0}, "k_neighbors"),
        ({"sampling_strategy": 1.5}, "sampling_strategy"),
        ({"sampling_strategy": "everything"}, "sampling_strategy"),
        ({"seeed": 1}, "seeed"),
    ],
)
def test_bad_options_are_named(options, field):
    with pytest.raises(ValidationError, match=field):
        BalanceOptions.model_validate(options)


def test_a_ratio_with_three_classes_is_refused_by_name(multiclass):
    options = BalanceOptions(strategy="oversample", sampling_strategy=0.5)
    with pytest.raises(DataError, match="sampling_strategy"):
        balance_training_rows(multiclass, "species", CLASSIFICATION, options)


def test_component_writes_the_balanced_rows_and_the_report(tmp_path, parts):
    source = tmp_path / "train.parquet"
    parts.train.to_parquet(source, index=False)
    balanced = Dataset(uri=str(tmp_path / "balanced.parquet"))
    balance.python_func(
        train=Dataset(uri=str(source)),
        target="churned",
        task=CLASSIFICATION,
        balanced=balanced,
        report=Artifact(uri=str(tmp_path / "report.json")),
        options={"strategy": "auto", "minority_share_threshold": 0.2},
    )
    written = pd.read_parquet(balanced.path)
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["applied"] == balanced.metadata["balancing"] == "smote_nc"
    assert len(written) == document["rows_after"] > len(parts.train)
    assert document["class_counts_after"]["yes"] == document["class_counts_after"]["no"]
