import json

import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset
from pydantic import ValidationError

from kfp_lifecycle.components.clean import CleanOptions, clean, clean_table
from kfp_lifecycle.core.errors import DataError


@pytest.fixture
def with_duplicates(churn) -> pd.DataFrame:
    """The churn table with rows 5 and 7 repeated further down (rows 1200, 1201, 1202)."""
    return pd.concat([churn, churn.iloc[[5, 7, 5]]], ignore_index=True)


def test_duplicates_go_the_first_copy_stays_and_the_report_points_at_both(with_duplicates):
    kept, report = clean_table(with_duplicates, "churned")
    assert report.duplicate_rows == 3
    assert report.duplicate_examples == [(1200, 5), (1201, 7), (1202, 5)]
    assert report.rows_in == len(with_duplicates) and report.rows_out == len(kept)
    assert not kept.duplicated().any()
    pd.testing.assert_frame_equal(kept, with_duplicates.iloc[: len(kept)])


def test_rows_without_a_target_are_removed_and_reported(churn):
    frame = churn.copy()
    frame.loc[[3, 40, 41], "churned"] = None
    kept, report = clean_table(frame, "churned")
    assert report.missing_target_rows == 3 and report.missing_target_examples == [3, 40, 41]
    assert kept["churned"].notna().all() and len(kept) == len(frame) - 3


def test_a_subset_defines_duplicates_and_must_name_real_columns(churn):
    frame = churn.copy()
    frame["customer_id"] = [f"c{i // 2}" for i in range(len(frame))]  # two rows per customer
    kept, report = clean_table(frame, "churned", CleanOptions(duplicate_subset=["customer_id"]))
    assert report.duplicate_rows == len(frame) // 2
    assert kept["customer_id"].is_unique
    with pytest.raises(DataError, match=r"duplicate_subset.*customer_key"):
        clean_table(frame, "churned", CleanOptions(duplicate_subset=["customer_key"]))


def test_duplicates_can_be_kept_on_purpose(with_duplicates):
    kept, report = clean_table(with_duplicates, "churned", CleanOptions(drop_duplicates=False))
    assert len(kept) == len(with_duplicates) and report.duplicate_rows == 0


def test_nothing_left_is_an_error_not_an_empty_table(churn):
    frame = churn.head(20).assign(churned=None)
    with pytest.raises(DataError, match=r"no rows left.*20 of 20 row"):
        clean_table(frame, "churned")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"drop_duplicate": True}, "drop_duplicate"),
        ({"drop_duplicates": "sometimes"}, "drop_duplicates"),
        ({"duplicate_subset": []}, "duplicate_subset"),
    ],
)
def test_bad_options_are_named(options, field):
    with pytest.raises(ValidationError, match=field):
        CleanOptions.model_validate(options)


def test_component_writes_the_cleaned_table_and_the_report(tmp_path, with_duplicates):
    source = tmp_path / "in.parquet"
    with_duplicates.to_parquet(source, index=False)
    cleaned = Dataset(uri=str(tmp_path / "cleaned.parquet"))
    report = Artifact(uri=str(tmp_path / "report.json"))
    clean.python_func(
        dataset=Dataset(uri=str(source)),
        target="churned",
        cleaned=cleaned,
        report=report,
        options={"drop_duplicates": True},
    )
    written = pd.read_parquet(cleaned.path)
    assert len(written) == len(with_duplicates) - 3 == cleaned.metadata["rows"]
    assert json.loads((tmp_path / "report.json").read_text())["duplicate_rows"] == 3
