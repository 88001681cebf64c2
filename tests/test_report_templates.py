"""The report templates: values from the data are escaped, and every report that shows metrics
uses the one metrics table, whose names, direction and meaning come from core.tasks.METRICS."""

import numpy as np
import pandas as pd
import pytest
from html_pages import Tables, sections_of

from kfp_lifecycle.components.profile import ProfileOptions, profile_table, render_html
from kfp_lifecycle.components.report import render_evaluation_report, render_model_card
from kfp_lifecycle.core.tasks import CLASSIFICATION, METRICS, REGRESSION, metrics_for
from kfp_lifecycle.html_report import Section, metric_rows, metrics_table, render_page, table

HOSTILE = "<script>alert('x')</script>"
ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"


def _hostile_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = 60
    return pd.DataFrame(
        {
            "plan": rng.choice([HOSTILE, "basic", "pro"], size=rows, p=[0.6, 0.2, 0.2]),
            "age": rng.integers(18, 80, size=rows).astype(float),
            "churned": rng.choice([HOSTILE, "no"], size=rows),
        }
    )


def _metadata(categories: list[str]) -> dict:
    return {
        "task": CLASSIFICATION,
        "target": "churned",
        "family": "logistic_regression",
        "model_name": "churn",
        "classes": ["no", "yes"],
        "primary_metric": "roc_auc",
        "input_schema": {
            "columns": [
                {
                    "name": "plan",
                    "kind": "categorical",
                    "dtype": "object",
                    "nullable": False,
                    "categories": categories,
                },
                {"name": "age", "kind": "numeric", "dtype": "float64", "nullable": True},
            ]
        },
    }


def _evaluation(metrics: dict) -> dict:
    return {"task": CLASSIFICATION, "primary_metric": "roc_auc", "rows": 60, "metrics": metrics}


def test_a_category_from_the_data_is_escaped_in_the_eda_report():
    frame = _hostile_table()
    options = ProfileOptions(max_plots=0)
    page = render_html(profile_table(frame, "churned", CLASSIFICATION, options), frame, options)
    assert HOSTILE not in page
    assert "<script" not in page
    sections = sections_of(page)
    for key in ("columns", "target"):  # the top category, a class of the target
        assert HOSTILE in sections.text[key]  # shown to the reader as text


def test_a_category_from_the_data_is_escaped_in_the_evaluation_report():
    metrics = {"roc_auc": 0.8, "accuracy": 0.75}
    slices = {
        "column": "plan",
        "primary_metric": "roc_auc",
        "overall": metrics,
        "slices": [
            {"value": HOSTILE, "rows": 20, "few_rows": True, "metrics": metrics},
            {"value": "basic", "rows": 40, "few_rows": False, "metrics": metrics},
        ],
    }
    blessing = {"blessed": False, "reasons": [f"slice '{HOSTILE}' under the bound"], "checks": []}
    preprocessing = {"input_columns": ["plan", "age"], "dropped_columns": {HOSTILE: "constant"}}
    page = render_evaluation_report(
        _evaluation(metrics), None, None, [], slices, _metadata([HOSTILE, "basic"]), blessing,
        preprocessing,
    )  # fmt: skip
    assert HOSTILE not in page and "<script" not in page
    assert page.count(ESCAPED) >= 3  # the slice row, the gate's reason, the dropped column
    sections = sections_of(page)
    for key in ("slices", "gate", "features"):
        assert HOSTILE in sections.text[key]


def test_every_metric_row_takes_name_direction_and_meaning_from_metrics():
    for task in (CLASSIFICATION, REGRESSION):
        values = {name: 0.5 for name in metrics_for(task)}
        rows = metric_rows(values, primary=metrics_for(task)[0], champion={})
        assert [r.name for r in rows] == list(values)
        for row in rows:
            spec = METRICS[row.name]
            assert row.better == ("higher" if spec.greater_is_better else "lower")
            assert row.description == spec.description
        assert rows[0].label.endswith("(primary)") and not rows[1].label.endswith("(primary)")


def test_the_evaluation_report_and_the_model_card_show_the_same_metric_rows():
    metrics = {"roc_auc": 0.81234, "log_loss": float("nan"), "brier": 0.1}
    champion = {"roc_auc": 0.79, "log_loss": 0.5}
    blessing = {"blessed": True, "reasons": [], "baseline": {"version": 3, "metrics": champion}}
    metadata = _metadata(["basic", "pro"])
    page = render_evaluation_report(_evaluation(metrics), None, None, [], None, metadata, blessing)
    card = render_model_card(metadata, _evaluation(metrics), blessing)
    html_rows = _body_rows(page, "metric-table")
    assert html_rows == [
        ["roc_auc (primary)", "0.8123", "0.79", "higher", METRICS["roc_auc"].description],
        ["log_loss", "n/a", "0.5", "lower", METRICS["log_loss"].description],
        ["brier", "0.1", "n/a", "lower", METRICS["brier"].description],
    ]
    assert "| roc_auc | 0.8123 | higher | 0.7900 |" in card
    assert "| log_loss | n/a | lower | 0.5000 |" in card
    assert "| brier | 0.1000 | lower | n/a |" in card
    assert "champion v3 on the same rows" in card


def test_a_metrics_table_without_a_champion_has_no_champion_column():
    page = render_page("t", "s", [Section("m", "M").add(metrics_table({"rmse": 2.5}))])
    assert "champion" not in page
    assert _body_rows(page, "metric-table") == [
        ["rmse", "2.5", "lower", METRICS["rmse"].description]
    ]


@pytest.mark.parametrize(
    ("value", "shown", "numeric"),
    [
        (50.830000000000005, "50.83", True),
        (7, "7", True),
        (True, "True", False),
        ("a&b", "a&b", False),
    ],
)
def test_table_cells_format_numbers_and_escape_text(value, shown, numeric):
    fragment = table(["x"], [[value]])
    assert _body_rows(str(fragment), None) == [[shown]]
    assert ('class="num"' in fragment) is numeric
    if value == "a&b":
        assert "a&amp;b" in fragment


def _body_rows(page: str, table_id: str | None) -> list[list[str]]:
    tables = Tables()
    tables.feed(page)
    return tables.rows[table_id]
