import json

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset
from pydantic import ValidationError
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold, TimeSeriesSplit

from kfp_lifecycle.components.clean import clean_table
from kfp_lifecycle.components.split import (
    SplitOptions,
    Splits,
    cross_validation_folds,
    cv_splitter,
    guard_against_leaks,
    split,
    split_table,
)
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION


@pytest.fixture(scope="module")
def customers(churn) -> pd.DataFrame:
    """Churn rows belonging to 150 customers, 8 rows each."""
    return churn.assign(customer=[f"c{i % 150}" for i in range(len(churn))])


def _row_ids(parts: Splits) -> list[set]:
    return [set(p["row_id"]) for p in (parts.train, parts.validation, parts.test)]


def test_partitions_are_disjoint_and_cover_the_labelled_rows(churn):
    frame = churn.copy()
    frame.loc[:9, "churned"] = None
    frame["row_id"] = range(len(frame))
    parts = split_table(frame, "churned", CLASSIFICATION, validation_fraction=0.2, seed=1)
    ids = _row_ids(parts)
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert set.union(*ids) == set(frame["row_id"][10:])
    assert len(parts.test) == pytest.approx(0.2 * (len(frame) - 10), abs=1)
    assert parts.report.dropped_missing_target == 10
    assert parts.report.rows == {name: len(p) for name, p in parts.partitions().items()}


def test_stratified_on_the_target(churn):
    parts = split_table(churn, "churned", CLASSIFICATION)
    overall = (churn["churned"] == "yes").mean()
    for name, part in parts.partitions().items():
        assert (part["churned"] == "yes").mean() == pytest.approx(overall, abs=0.01)
        assert parts.report.class_shares[name]["yes"] == pytest.approx(overall, abs=0.01)
    assert parts.report.strategy == "stratified"


def test_stratified_falls_back_to_random_for_regression(regression):
    parts = split_table(regression, "price", REGRESSION)
    assert parts.report.strategy == "random" and parts.report.class_shares == {}


def test_same_seed_same_split_other_seed_other_split(regression):
    first = split_table(regression, "price", REGRESSION, seed=7)
    again = split_table(regression, "price", REGRESSION, seed=7)
    other = split_table(regression, "price", REGRESSION, SplitOptions(seed=8))
    assert first.test.index.tolist() == again.test.index.tolist()
    assert first.test.index.tolist() != other.test.index.tolist()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"validation_fraction": 0.0}, "validation_fraction"),
        ({"test_fraction": 1.2}, "test_fraction"),
        ({"validation_fraction": 0.5, "test_fraction": 0.45}, "validation_fraction"),
        ({"strategy": "chronological"}, "strategy"),
        ({"strategy": "group"}, "group_column"),
        ({"strategy": "time"}, "time_column"),
        ({"folds": 3}, "folds"),
    ],
)
def test_bad_options_are_named(regression, options, field):
    with pytest.raises(ValidationError, match=field):
        SplitOptions.model_validate(options)
    with pytest.raises(ValidationError, match=field):
        split_table(regression, "price", REGRESSION, **options)


def test_the_guard_fails_on_a_row_on_both_sides_and_clean_fixes_it(churn):
    planted = pd.concat([churn, churn.iloc[[0] * 20]], ignore_index=True)
    with pytest.raises(DataError, match=r"row\(s\) of train also appear in .*drop_duplicates"):
        split_table(planted, "churned", CLASSIFICATION)
    cleaned, _ = clean_table(planted, "churned")
    parts = split_table(cleaned, "churned", CLASSIFICATION)
    assert sum(len(p) for p in parts.partitions().values()) == len(churn)


def test_the_guard_fails_on_a_group_on_both_sides(customers):
    parts = split_table(customers, "churned", CLASSIFICATION, seed=2)  # stratified: groups mix
    with pytest.raises(DataError, match=r"group.*'customer' are in both"):
        guard_against_leaks(parts, "churned", group_column="customer")


def test_group_split_keeps_each_group_on_one_side(customers):
    parts = split_table(
        customers, "churned", CLASSIFICATION, strategy="group", group_column="customer"
    )
    by_partition = {n: set(p["customer"]) for n, p in parts.partitions().items()}
    groups = list(by_partition.values())
    assert not groups[0] & groups[1] and not groups[0] & groups[2] and not groups[1] & groups[2]
    assert set.union(*groups) == set(customers["customer"])
    assert parts.report.groups == {n: len(g) for n, g in by_partition.items()}
    assert parts.report.groups["test"] == pytest.approx(0.2 * 150, abs=1)


def test_group_split_needs_a_complete_existing_group_column(customers):
    with pytest.raises(DataError, match="group_column 'client' is not a column"):
        split_table(customers, "churned", CLASSIFICATION, strategy="group", group_column="client")
    holes = customers.assign(customer=customers["customer"].where(customers.index != 4))
    with pytest.raises(DataError, match=r"'customer' is missing in 1 row.*row 4"):
        split_table(holes, "churned", CLASSIFICATION, strategy="group", group_column="customer")


def test_time_split_orders_train_before_validation_before_test(churn):
    parts = split_table(
        churn, "churned", CLASSIFICATION, strategy="time", time_column="signup_date"
    )
    times = {n: pd.to_datetime(p["signup_date"]) for n, p in parts.partitions().items()}
    assert times["train"].max() < times["validation"].min()
    assert times["validation"].max() < times["test"].min()
    assert times["train"].is_monotonic_increasing  # TimeSeriesSplit folds rely on it
    assert pd.Timestamp(parts.report.boundaries["test_start"]).tz_localize(None) == (
        times["test"].min()
    )


def test_time_split_keeps_equal_timestamps_together(regression):
    days = pd.date_range("2025-01-01", periods=30, freq="D").repeat(30).astype(str)
    frame = regression.assign(day=np.random.default_rng(0).permutation(days))
    parts = split_table(frame, "price", REGRESSION, strategy="time", time_column="day")
    days_in = [set(p["day"]) for p in parts.partitions().values()]
    assert not days_in[0] & days_in[1] and not days_in[1] & days_in[2]
    assert max(days_in[0]) < min(days_in[1]) and max(days_in[1]) < min(days_in[2])


def test_time_split_refuses_unreadable_times(churn):
    frame = churn.copy()
    frame.loc[7, "signup_date"] = "last spring"
    with pytest.raises(DataError, match=r"time_column 'signup_date'.*row 7: 'last spring'"):
        split_table(frame, "churned", CLASSIFICATION, strategy="time", time_column="signup_date")


def test_cv_folds_are_a_tuning_option_and_the_old_key_says_where_it_went():
    with pytest.raises(ValidationError, match=r"set models\.tune\.cv_folds"):
        SplitOptions.model_validate({"cv_folds": 5})


@pytest.mark.parametrize(
    ("task", "options", "expected"),
    [
        (CLASSIFICATION, {}, StratifiedKFold),
        (CLASSIFICATION, {"strategy": "random"}, StratifiedKFold),
        (REGRESSION, {}, KFold),
        (REGRESSION, {"strategy": "stratified"}, KFold),
        (CLASSIFICATION, {"strategy": "group", "group_column": "customer"}, GroupKFold),
        (CLASSIFICATION, {"strategy": "time", "time_column": "signup_date"}, TimeSeriesSplit),
    ],
)
def test_cv_splitter_follows_the_split_rules(task, options, expected):
    splitter = cv_splitter(task, 4, SplitOptions(**options))
    assert type(splitter) is expected and splitter.get_n_splits() == 4


def test_cv_folds_need_a_group_per_fold(customers):
    options = SplitOptions(strategy="group", group_column="customer")
    few = customers[customers["customer"].isin(["c1", "c2", "c3"])]
    with pytest.raises(DataError, match=r"3 distinct group.*cv_folds=5 folds need at least 5"):
        cross_validation_folds(few, "churned", CLASSIFICATION, 5, options)


def test_group_cv_folds_keep_each_group_on_one_side(customers):
    options = SplitOptions(strategy="group", group_column="customer")
    folds = cross_validation_folds(customers, "churned", CLASSIFICATION, 4, options, seed=3)
    assert len(folds) == 4
    for inside, held_out in folds:
        trained = set(customers["customer"].iloc[inside])
        assert not trained & set(customers["customer"].iloc[held_out])
    held = np.concatenate([held_out for _, held_out in folds])
    assert sorted(held) == list(range(len(customers)))


def test_time_cv_folds_train_on_the_past_and_keep_equal_timestamps_together(regression):
    days = pd.date_range("2025-01-01", periods=30, freq="D").repeat(30).astype(str)
    frame = regression.assign(day=np.random.default_rng(1).permutation(days))
    options = SplitOptions(strategy="time", time_column="day")
    folds = cross_validation_folds(frame, "price", REGRESSION, 5, options)
    assert len(folds) == 5
    for inside, held_out in folds:
        assert frame["day"].iloc[inside].max() < frame["day"].iloc[held_out].min()
    with pytest.raises(DataError, match=r"'day' has 30 distinct time.*at least 31"):
        cross_validation_folds(frame, "price", REGRESSION, 30, options)


def test_component_writes_three_partitions_and_a_report(tmp_path, customers):
    source = tmp_path / "in.parquet"
    customers.to_parquet(source, index=False)
    outputs = {
        n: Dataset(uri=str(tmp_path / f"{n}.parquet")) for n in ("train", "validation", "test")
    }
    report = Artifact(uri=str(tmp_path / "report.json"))
    split.python_func(
        dataset=Dataset(uri=str(source)),
        target="churned",
        task=CLASSIFICATION,
        report=report,
        options={"strategy": "group", "group_column": "customer", "seed": 5},
        **outputs,
    )
    written = {n: pd.read_parquet(a.path) for n, a in outputs.items()}
    assert sum(len(f) for f in written.values()) == len(customers)
    assert not set(written["train"]["customer"]) & set(written["test"]["customer"])
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["strategy"] == "group"
    assert document["rows"] == {n: len(f) for n, f in written.items()}
