"""Live quality: late labels joined by request id, metrics per window, drops detected."""

import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.metrics import accuracy_score, f1_score, log_loss, mean_absolute_error, roc_auc_score

from kfp_lifecycle.components.quality import (
    LABEL,
    QualityOptions,
    assess_quality,
    join_ground_truth,
    quality_drop,
    windowed_quality,
)
from kfp_lifecycle.core.bundle import Prediction
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.serving.payload_log import MODEL_VERSION, REQUEST_ID, ROW, log_rows

ROWS_PER_DAY = 400
TEST_METRICS = {"roc_auc": 0.90, "accuracy": 0.85}


def _day(day: int, skill: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A day of logged binary predictions whose scores track the truth with `skill`."""
    rng = np.random.default_rng(seed)
    truth = rng.random(ROWS_PER_DAY) < 0.3
    score = np.clip(skill * truth + (1 - skill) * rng.random(ROWS_PER_DAY), 0, 1)
    prediction = Prediction(
        np.where(score >= 0.5, "yes", "no").tolist(),
        np.column_stack([1 - score, score]),
        ["no", "yes"],
    )
    when = datetime(2026, 11, day, 12, tzinfo=UTC)
    frame = pd.DataFrame({"age": rng.normal(40, 5, ROWS_PER_DAY)})
    log = log_rows(frame, prediction, f"day{day}", "churn", "1", now=when)
    log[REQUEST_ID] = [f"day{day}-{i}" for i in range(ROWS_PER_DAY)]  # one row per request
    log[ROW] = 0
    labels = pd.DataFrame({REQUEST_ID: log[REQUEST_ID], "churned": np.where(truth, "yes", "no")})
    return log, labels


@pytest.fixture(scope="module")
def two_days():
    good_log, good_labels = _day(1, skill=0.8, seed=1)
    bad_log, bad_labels = _day(2, skill=0.1, seed=2)
    return pd.concat([good_log, bad_log]), pd.concat([good_labels, bad_labels])


def test_a_degraded_day_is_the_only_drop(two_days):
    log, labels = two_days
    result = assess_quality(log, labels, "classification", "churned", TEST_METRICS,
                            QualityOptions())  # fmt: skip
    assert [w["window_start"][:10] for w in result["windows"]] == ["2026-11-01", "2026-11-02"]
    assert result["dropped"] is True and len(result["drop_reasons"]) == 1
    assert result["drop_reasons"][0].startswith("window 2026-11-02")
    assert result["windows"][0]["metrics"]["roc_auc"] > 0.85
    assert [(w["judged"], w["dropped"]) for w in result["windows"]] == [(True, False), (True, True)]
    assert result["windows"][1]["metrics"]["roc_auc"] < 0.85 - 0.05


def test_the_verdict_compares_with_the_test_figure_in_the_metrics_direction():
    windows = [
        {"window_start": "d1", "model_version": "1", "rows": 100, "metrics": {"log_loss": 0.30}},
        {"window_start": "d2", "model_version": "1", "rows": 100, "metrics": {"log_loss": 0.50}},
        {"window_start": "d3", "model_version": "1", "rows": 9, "metrics": {"log_loss": 0.90}},
        {"window_start": "d4", "model_version": "1", "rows": 100, "metrics": {"log_loss": None}},
    ]
    (reason,) = quality_drop(windows, {"log_loss": 0.35}, "log_loss", 0.1, min_rows=10)
    assert reason == "window d2 (version 1, 100 rows): log_loss 0.5000, test 0.3500, ceiling 0.4500"
    assert quality_drop(windows[:1], {"log_loss": 0.35}, "log_loss", 0.1) == []
    with pytest.raises(DataError, match="the model's test metrics have no 'log_loss'"):
        quality_drop(windows, {"roc_auc": 0.9}, "log_loss", 0.1)


def test_window_metrics_are_sklearns_on_the_same_rows(two_days):
    log, labels = two_days
    joined, _ = join_ground_truth(log, labels, "churned")
    first, second = windowed_quality(joined, "classification")
    for window, day in ((first, "day1"), (second, "day2")):
        rows = joined[joined[REQUEST_ID].str.startswith(day)]
        assert window["rows"] == len(rows) == ROWS_PER_DAY
        truth, proba = rows[LABEL], rows[["proba_no", "proba_yes"]].to_numpy()
        expected = {
            "roc_auc": roc_auc_score(truth == "yes", rows["proba_yes"]),
            "accuracy": accuracy_score(truth, rows["prediction"]),
            "f1": f1_score(truth, rows["prediction"], pos_label="yes"),
            "log_loss": log_loss(truth, proba, labels=["no", "yes"]),
        }
        for name, value in expected.items():
            assert window["metrics"][name] == pytest.approx(value), (day, name)


def test_unmatched_rows_are_counted_both_ways(two_days):
    log, labels = two_days
    late = labels.iloc[10:]  # ten predictions still wait for their label
    orphan = pd.DataFrame({REQUEST_ID: ["never-logged"], "churned": ["no"]})
    _, counts = join_ground_truth(log, pd.concat([late, orphan]), "churned")
    assert counts == {"matched": 2 * ROWS_PER_DAY - 10, "waiting": 10, "orphans": 1}
    empty = labels.assign(churned=labels["churned"].where(labels.index >= 5))  # not arrived
    _, counts = join_ground_truth(log, empty, "churned")
    assert counts == {"matched": 2 * ROWS_PER_DAY - 10, "waiting": 10, "orphans": 0}


def test_the_join_takes_other_column_names():
    frame = pd.DataFrame({"label": [5.0, 6.0, 7.0]})  # an input named like the joined column
    log = log_rows(frame, Prediction([0, 1, 1], np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]]),
                                     [0, 1]), "r", "m", "1")  # fmt: skip
    labels = pd.DataFrame({"rid": ["r", "r", "r"], ROW: [2, 0, 1], "actual": [0.0, 0.0, 1.0]})
    joined, counts = join_ground_truth(log, labels, "actual", id_column="rid")
    assert counts["matched"] == 3
    # labels 0.0 / 1.0 read back from a CSV are classes 0 and 1; row 2 (class 0) was wrong
    (window,) = windowed_quality(joined, "classification")
    assert window["metrics"]["accuracy"] == pytest.approx(2 / 3)


def test_every_version_gets_its_own_windows(two_days):
    log, labels = two_days
    canary = log.copy()
    canary.loc[canary[REQUEST_ID].str.endswith(("0", "2", "4")), MODEL_VERSION] = "2"
    joined, _ = join_ground_truth(canary, labels, "churned")
    windows = windowed_quality(joined, "classification")
    assert [(w["window_start"][:10], w["model_version"]) for w in windows] == [
        ("2026-11-01", "1"), ("2026-11-01", "2"), ("2026-11-02", "1"), ("2026-11-02", "2")
    ]  # fmt: skip
    assert sum(w["rows"] for w in windows) == 2 * ROWS_PER_DAY


def test_small_windows_are_shown_but_not_judged(two_days):
    log, labels = two_days
    options = QualityOptions(min_rows_per_window=ROWS_PER_DAY + 1)
    result = assess_quality(log, labels, "classification", "churned", TEST_METRICS, options)
    assert result["dropped"] is False and len(result["windows"]) == 2


def test_no_labels_is_an_empty_document(two_days):
    log, _ = two_days
    assert assess_quality(log, pd.DataFrame(), "classification", "churned", TEST_METRICS,
                          QualityOptions()) == {}  # fmt: skip


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (pd.DataFrame({"id": ["a"], "churned": ["no"]}), "the labels lack column 'request_id'"),
        (pd.DataFrame({REQUEST_ID: ["a"], "outcome": ["no"]}), "the labels lack column 'churned'"),
        (pd.DataFrame({REQUEST_ID: ["day1-1", "day1-1", "day2-7", "day2-7"],
                       "churned": ["no", "yes", "no", "no"]}),
         "the labels name the same request id twice: day1-1, day2-7"),
        (pd.DataFrame({REQUEST_ID: ["day1-1"], ROW: ["first"], "churned": ["no"]}),
         "the labels' column 'row' holds values that are not row indices, for request(s) day1-1"),
        (pd.DataFrame({REQUEST_ID: ["day1-1"], "churned": ["maybe"]}),
         "label(s) 'maybe' are not classes of the model (no, yes)"),
    ],
)  # fmt: skip
def test_bad_labels_are_named(two_days, labels, message):
    log, _ = two_days
    with pytest.raises(DataError, match=re.escape(message)):
        assess_quality(log, labels, "classification", "churned", TEST_METRICS, QualityOptions())


def test_bad_logs_are_named(two_days):
    log, labels = two_days
    twice = pd.concat([log, log[log[REQUEST_ID].isin(["day1-3", "day2-9"])]])
    with pytest.raises(DataError, match="logged predictions name the same request id and row "
                                        "twice: day1-3, day2-9"):  # fmt: skip
        join_ground_truth(twice, labels, "churned")
    with pytest.raises(DataError, match="the logged predictions lack column 'request_id'"):
        join_ground_truth(log.drop(columns=[REQUEST_ID]), labels, "churned")
    several = log.assign(**{REQUEST_ID: "one", ROW: range(len(log))})
    with pytest.raises(DataError, match="request\\(s\\) one predicted several rows: the labels "
                                        "need a 'row' column"):  # fmt: skip
        join_ground_truth(several, pd.DataFrame({REQUEST_ID: ["one"], "churned": ["no"]}),
                          "churned")  # fmt: skip


def test_bad_options_are_named(two_days):
    log, labels = two_days
    with pytest.raises(ValidationError, match="window 'monthly' is not a fixed pandas frequency"):
        QualityOptions.model_validate({"window": "monthly"})
    with pytest.raises(ValidationError, match="window"):
        QualityOptions.model_validate({"window": "MS"})  # months differ in length
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        QualityOptions.model_validate({"windows": "1D"})
    with pytest.raises(DataError, match="metric 'rmse' does not apply to classification"):
        assess_quality(log, labels, "classification", "churned", TEST_METRICS,
                       QualityOptions(metric="rmse"))  # fmt: skip
    assert QualityOptions(window="6h").window == "6h"


def test_regression_quality_uses_the_regression_metrics():
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
    log = log_rows(frame, Prediction([1.0, 2.0, 3.0, 5.0], None, None), "r", "price", "2")
    labels = pd.DataFrame({REQUEST_ID: ["r"] * 4, ROW: [0, 1, 2, 3], "price": [1, 2, 3, 4]})
    result = assess_quality(log, labels, "regression", "price", {"rmse": 0.1},
                            QualityOptions(min_rows_per_window=1))  # fmt: skip
    assert result["windows"][0]["metrics"]["rmse"] == pytest.approx(0.5)
    assert result["windows"][0]["metrics"]["mae"] == pytest.approx(
        mean_absolute_error([1, 2, 3, 4], [1.0, 2.0, 3.0, 5.0])
    )
    assert result["dropped"] is True  # 0.5 > 0.1 + 0.05


def test_the_component_writes_the_quality_document_and_the_latest_judged_metrics(
    two_days, tmp_path
):
    import json

    from kfp.dsl import Artifact, Dataset, Metrics

    from kfp_lifecycle.components.quality import quality

    log, labels = two_days
    log.to_parquet(tmp_path / "log.parquet")
    labels.to_parquet(tmp_path / "labels.parquet")
    document, metrics = Artifact(uri=str(tmp_path / "quality.json")), Metrics(uri=str(tmp_path))
    quality.python_func(
        predictions=Dataset(uri=str(tmp_path / "log.parquet")),
        labels=Dataset(uri=str(tmp_path / "labels.parquet")),
        task="classification",
        target="churned",
        test_metrics=TEST_METRICS,
        quality=document,
        metrics=metrics,
        options={"window": "1D", "tolerance": 0.05},
    )
    written = json.loads((tmp_path / "quality.json").read_text())
    assert {k: written[k] for k in ("metric", "reference", "matched", "waiting", "orphans")} == {
        "metric": "roc_auc", "reference": 0.9, "matched": 800, "waiting": 0, "orphans": 0
    }  # fmt: skip
    assert written["dropped"] is True and [w["dropped"] for w in written["windows"]] == [
        False,
        True,
    ]
    assert metrics.metadata["roc_auc"] == written["windows"][1]["metrics"]["roc_auc"]
