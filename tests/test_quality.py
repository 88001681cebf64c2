"""Live quality: late labels joined by request id, metrics per window, drops detected."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from kfp_lifecycle.bundle import Prediction
from kfp_lifecycle.components.quality import (
    QualityOptions,
    assess_quality,
    join_ground_truth,
    windowed_quality,
)
from kfp_lifecycle.errors import DataError
from kfp_lifecycle.serving.payload_log import REQUEST_ID, ROW, log_rows

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


def test_window_metrics_are_sklearns_on_the_same_rows(two_days):
    log, labels = two_days
    joined, _ = join_ground_truth(log, labels, "churned")
    first = windowed_quality(joined, "classification")[0]
    rows = joined[joined[REQUEST_ID].str.startswith("day1")]
    assert first["rows"] == len(rows) == ROWS_PER_DAY
    assert first["metrics"]["roc_auc"] == pytest.approx(
        roc_auc_score(rows["label"] == "yes", rows["proba_yes"])
    )
    assert first["metrics"]["accuracy"] == pytest.approx(
        accuracy_score(rows["label"], rows["prediction"])
    )


def test_unmatched_rows_are_counted_both_ways(two_days):
    log, labels = two_days
    late = labels.iloc[10:]  # ten predictions still wait for their label
    orphan = pd.DataFrame({REQUEST_ID: ["never-logged"], "churned": ["no"]})
    _, counts = join_ground_truth(log, pd.concat([late, orphan]), "churned")
    assert counts == {"matched": 2 * ROWS_PER_DAY - 10, "waiting": 10, "orphans": 1}


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
        (pd.DataFrame({REQUEST_ID: ["day1-1", "day1-1"], "churned": ["no", "yes"]}),
         "name some requests twice: day1-1"),
        (pd.DataFrame({REQUEST_ID: ["day1-1"], "churned": ["maybe"]}),
         "label(s) 'maybe' are not classes of the model (no, yes)"),
    ],
)  # fmt: skip
def test_bad_labels_are_named(two_days, labels, message):
    log, _ = two_days
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        assess_quality(log, labels, "classification", "churned", TEST_METRICS, QualityOptions())


def test_regression_quality_uses_the_regression_metrics():
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
    log = log_rows(frame, Prediction([1.0, 2.0, 3.0, 5.0], None, None), "r", "price", "2")
    labels = pd.DataFrame({REQUEST_ID: ["r"] * 4, ROW: [0, 1, 2, 3], "price": [1, 2, 3, 4]})
    result = assess_quality(log, labels, "regression", "price", {"rmse": 0.1},
                            QualityOptions(min_rows_per_window=1))  # fmt: skip
    assert result["windows"][0]["metrics"]["rmse"] == pytest.approx(0.5)
    assert result["dropped"] is True  # 0.5 > 0.1 + 0.05
