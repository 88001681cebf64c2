"""A CSV with inf / -inf in numeric columns: counted and reported by the data stage, then
handled like missing values by preprocessing and by the served model's coercion step."""

import numpy as np
import pytest

from kfp_lifecycle.components.clean import clean_table
from kfp_lifecycle.components.ingest import read_table
from kfp_lifecycle.components.preprocess import PreprocessOptions, fit_preprocessor
from kfp_lifecycle.components.profile import ProfileOptions, profile_table, render_html
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.validate import validate_table
from kfp_lifecycle.core.schema import infer_schema
from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.core.transformers import SchemaCoercer


@pytest.fixture(scope="module")
def with_infinities(tmp_path_factory, churn):
    frame = churn.copy()
    frame.loc[[3, 50, 400], "monthly_charges"] = [np.inf, -np.inf, np.inf]
    frame.loc[[7, 8], "tenure_months"] = -np.inf
    path = tmp_path_factory.mktemp("inf") / "churn.csv"
    frame.to_csv(path, index=False)  # written as "inf" / "-inf", as users' files have them
    table = read_table(path)
    assert np.isinf(table["monthly_charges"]).sum() == 3  # pandas reads them as infinities
    return table


def test_the_data_stage_counts_and_reports_infinities(with_infinities):
    checked = validate_table(with_infinities, "churned")
    assert (
        "column 'monthly_charges' has 3 infinite value(s) (inf/-inf): treated as missing"
        in checked.warnings
    )
    assert "column 'tenure_months' has 2 infinite value(s) (inf/-inf): treated as missing" in (
        checked.warnings
    )
    profile = profile_table(with_infinities, "churned", CLASSIFICATION)
    assert "'monthly_charges' has 3 infinite value(s) (inf/-inf), counted as missing" in (
        profile.warnings
    )
    (charges,) = [c for c in profile.column_profiles if c.name == "monthly_charges"]
    missing = with_infinities["monthly_charges"].isna().sum() + 3
    assert charges.missing_share == round(missing / len(with_infinities), 4)
    assert "inf" not in str(charges.stats)
    assert "3 infinite value(s)" in render_html(profile, with_infinities, ProfileOptions())

    cleaned, report = clean_table(with_infinities, "churned")
    assert report.infinite_values == {"monthly_charges": 3, "tenure_months": 2}
    assert not np.isinf(cleaned.select_dtypes("number").to_numpy()).any()
    assert cleaned["monthly_charges"].isna().sum() == missing


def test_preprocessing_and_serving_treat_infinities_as_missing(with_infinities):
    """Before: IQRClipper raised `Input X contains infinity` in the preprocess step."""
    # The in-process run checks and the split see the raw table (the clean step's NaNs are
    # tested above); preprocessing must cope with infinities on its own too.
    splits = split_table(with_infinities, "churned", CLASSIFICATION, seed=3)
    train = with_infinities.iloc[:900]
    options = PreprocessOptions(outliers="iqr_clip")  # the step that refused infinity
    preprocessor, _, report = fit_preprocessor(train, "churned", CLASSIFICATION, options)
    assert all(np.isfinite(b).all() for b in report.clip_bounds["monthly_charges"])
    features = preprocessor.transform(with_infinities.drop(columns=["churned"]))
    assert np.isfinite(np.asarray(features, dtype=float)).all()
    assert len(splits.train) + len(splits.validation) + len(splits.test) == len(with_infinities)

    # The served model's first step: a request row with an infinity is a missing value.
    coercer = SchemaCoercer(infer_schema(train, "churned").to_dict())
    rows = with_infinities.drop(columns=["churned"]).iloc[[3, 7]]
    coerced = coercer.transform(rows)
    assert coerced["monthly_charges"].isna().tolist() == [True, False]
    assert coerced["tenure_months"].isna().tolist() == [False, True]
