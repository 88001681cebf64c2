"""The EDA report: findings computed right, and the page rendered by a real browser."""

import numpy as np
import pandas as pd
import pytest
from html_pages import CHROMIUM, NO_CHROMIUM, chromium, sections_of
from kfp.dsl import HTML, Artifact, Dataset, Markdown

from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.profile import (
    ProfileOptions,
    profile,
    profile_table,
    render_html,
    render_markdown,
)
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION


@pytest.fixture(scope="module")
def planted(churn):
    """The churn table with a leak, an ID column and duplicated rows planted in it."""
    frame = churn.copy()
    frame["refund_issued"] = np.where(frame["churned"] == "yes", "refund", "none")
    frame["customer_id"] = [f"C{i:06d}" for i in range(len(frame))]
    return frame._append(frame.head(7), ignore_index=True)


def test_findings_name_the_leak_the_id_and_the_duplicates(planted):
    result = profile_table(planted, "churned", CLASSIFICATION)
    assert "refund_issued" in result.suspected_leaks
    assert set(result.id_like) == {"customer_id"}
    assert result.duplicates == 7
    assert result.target_balance["yes"] == pytest.approx((planted["churned"] == "yes").mean(), 1e-3)
    age = next(c for c in result.column_profiles if c.name == "age")
    assert age.missing_share == pytest.approx(planted["age"].isna().mean(), abs=1e-4)
    assert max(result.relations, key=result.relations.get) == "refund_issued"
    assert any("suspected leak: 'refund_issued'" in w for w in result.warnings)
    assert "refund_issued" in render_markdown(result)


def test_regression_and_multiclass_tables_profile(regression, multiclass):
    assert profile_table(regression, "price", REGRESSION).target_balance == {}
    result = profile_table(multiclass, "species", CLASSIFICATION)
    assert set(result.target_balance) == {"setosa", "versicolor", "virginica"}
    assert not result.suspected_leaks


# The sections (not the module's own list), each with the content it must show.
EXPECTED_SECTIONS = {
    "overview": {"tables": 1},
    "columns": {"tables": 1, "images": 6},  # per-column statistics and six distributions
    "missing": {"tables": 1},
    "correlations": {"images": 1},
    "target": {"tables": 1},  # target balance
    "relations": {"tables": 1},  # each feature's relation to the target
    "outliers": {"tables": 1},
    "duplicates": {},
    "leaks": {"tables": 1},  # suspected leaks and ID-like columns
}


def test_the_report_renders_in_headless_chromium(tmp_path, planted):
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    options = ProfileOptions(max_plots=6)
    page = render_html(profile_table(planted, "churned", CLASSIFICATION, options), planted, options)
    assert "http://" not in page and "https://" not in page  # nothing fetched at view time
    (tmp_path / "report.html").write_text(page)
    url = f"file://{tmp_path / 'report.html'}"
    sections = sections_of(chromium("--dump-dom", url, profile=tmp_path / "profile").stdout)
    for key, content in EXPECTED_SECTIONS.items():
        assert key in sections.text, f"section {key} missing from the rendered page"
        filled = sections.text[key].strip() or sections.images[key]
        assert filled, f"section {key} shows nothing under its heading"
        assert sections.tables[key] >= content.get("tables", 0), f"section {key}: no table"
        assert sections.images[key] >= content.get("images", 0), f"section {key}: no figure"
    # The findings are named where they belong, not merely somewhere on the page.
    leaks = sections.text["leaks"]
    assert "refund_issued" in leaks and "suspected leak" in leaks
    assert "customer_id" in leaks and "ID-like" in leaks
    assert "7 exact duplicate row(s)" in sections.text["duplicates"]
    assert "refund_issued" in sections.text["relations"]
    assert all(name in sections.text["missing"] for name in ("age", "region"))
    assert "yes" in sections.text["target"] and "no" in sections.text["target"]
    chromium(f"--screenshot={tmp_path / 'report.png'}", "--window-size=1280,4000", url,
             profile=tmp_path / "profile")  # fmt: skip
    assert (tmp_path / "report.png").stat().st_size > 20_000


def test_a_table_of_only_an_id_says_there_is_nothing_to_relate():
    """No feature left to relate to the target: the report says so instead of failing."""
    frame = pd.DataFrame({"id": [f"u{i}" for i in range(60)], "y": ["a", "b", "b"] * 20})
    result = profile_table(frame, "y", CLASSIFICATION)
    assert result.relations == {} and result.suspected_leaks == {}
    assert set(result.id_like) == {"id"}
    sections = sections_of(render_html(result, frame, ProfileOptions()))
    assert "No feature to relate to the target" in sections.text["relations"]
    assert "id" in sections.text["leaks"]


def test_profile_preprocessing_and_validate_share_one_id_rule(planted):
    """A 97%-distinct integer ID is flagged by the profile as preprocessing drops it."""
    frame = planted.assign(order_no=[*range(len(planted) - 30), *range(30)])
    assert frame["order_no"].nunique() / len(frame) > 0.95
    assert "order_no" in profile_table(frame, "churned", CLASSIFICATION).id_like
    _, schema, report = fit_preprocessor(frame, "churned", CLASSIFICATION)
    assert "order_no" not in schema.names and "order_no" in report.dropped_columns


def test_component_writes_report_summary_and_findings(tmp_path, churn):
    churn.to_parquet(tmp_path / "t.parquet")
    report = HTML(uri=str(tmp_path / "r.html"))
    profile.python_func(
        dataset=Dataset(uri=str(tmp_path / "t.parquet")),
        target="churned",
        task=CLASSIFICATION,
        report=report,
        summary=Markdown(uri=str(tmp_path / "s.md")),
        findings=Artifact(uri=str(tmp_path / "f.json")),
        options={"max_plots": 2},
    )
    assert '<section id="leaks">' in (tmp_path / "r.html").read_text()
    assert (tmp_path / "s.md").read_text().startswith("# Data profile: 1200 rows")
