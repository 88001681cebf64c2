"""The EDA report: findings computed right, and the page rendered by a real browser."""

import shutil
import subprocess

import numpy as np
import pytest
from kfp.dsl import HTML, Artifact, Dataset, Markdown

from kfp_lifecycle.components.profile import (
    SECTIONS,
    ProfileOptions,
    profile,
    profile_table,
    render_html,
    render_markdown,
)
from kfp_lifecycle.tasks import CLASSIFICATION, REGRESSION

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)


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


def test_the_report_renders_in_headless_chromium(tmp_path, planted):
    if CHROMIUM is None:
        pytest.skip("headless Chromium not installed: apt-get install chromium (make system-deps)")
    options = ProfileOptions(max_plots=6)
    page = render_html(profile_table(planted, "churned", CLASSIFICATION, options), planted, options)
    assert "http://" not in page and "https://" not in page  # nothing fetched at view time
    (tmp_path / "report.html").write_text(page)
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]  # fmt: skip
    url = f"file://{tmp_path / 'report.html'}"
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    for section in SECTIONS:
        assert f'<section id="{section}">' in dom, section
    assert dom.count("<img") >= 7  # six distributions and the correlation matrix
    assert "customer_id" in dom and "refund_issued" in dom
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={tmp_path / 'report.png'}", "--window-size=1280,4000",
         url],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert (tmp_path / "report.png").stat().st_size > 20_000


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
