"""Drift detection: known shifts are found and named; same-distribution samples rarely alarm."""

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import HTML, Artifact, Dataset, Metrics

from kfp_lifecycle.components.drift import (
    DriftOptions,
    detect_drift,
    drift,
    psi,
    reference_frame,
    reference_sample,
)
from kfp_lifecycle.demo import make_churn_dataset
from kfp_lifecycle.errors import DataError
from kfp_lifecycle.schema import infer_schema

FEATURES = ["age", "tenure_months", "monthly_charges", "support_calls", "plan", "region"]


def sample(rows: int, seed: int) -> pd.DataFrame:
    return make_churn_dataset(rows=rows, seed=seed)[FEATURES]


@pytest.mark.parametrize("rows", [500, 5000], ids=["small: p-value tests", "large: distances"])
def test_each_injected_shift_is_found_and_named(rows):
    reference, current = sample(rows, 1), sample(rows, 2)
    current["monthly_charges"] = current["monthly_charges"] + 15  # mean shift
    current["plan"] = np.where(np.arange(rows) % 2 == 0, "pro", current["plan"])  # mix change
    current.loc[current.index[: rows // 10], "region"] = "antarctica"  # a new category
    current.loc[current.index[: rows // 4], "tenure_months"] = np.nan  # null rate change
    result = detect_drift(reference, current)
    assert set(result.drifted) == {"monthly_charges", "plan", "region", "tenure_months"}
    reasons = {f.column: " ".join(f.reasons) for f in result.features}
    assert (
        "never seen in the reference" in reasons["region"] and "'antarctica'" in reasons["region"]
    )
    assert "missing values" in reasons["tenure_months"]
    assert result.drifted_share == pytest.approx(4 / 6, abs=1e-3) and result.dataset_drift


def test_false_alarm_rate_stays_at_the_configured_level():
    """Small samples from one distribution: per-feature alarms at about p_value, not above."""
    options = DriftOptions(p_value=0.05)
    alarms, checks, dataset_alarms = 0, 0, 0
    for trial in range(40):
        result = detect_drift(sample(400, 100 + trial), sample(400, 200 + trial), options)
        alarms += len(result.drifted)
        checks += len(result.features)
        dataset_alarms += result.dataset_drift
    assert alarms / checks <= 0.05 + 0.03  # sampling error over 240 tests
    assert dataset_alarms == 0


def test_large_samples_from_one_distribution_do_not_drift():
    result = detect_drift(sample(20000, 3), sample(20000, 4))
    assert result.drifted == []


def test_psi_flags_a_shift_when_asked():
    reference, current = sample(5000, 5), sample(5000, 6)
    assert psi(reference["age"].dropna(), current["age"].dropna()) < 0.05
    current["age"] = current["age"] * 1.3
    result = detect_drift(reference, current, DriftOptions(psi=True))
    (age,) = [f for f in result.features if f.column == "age"]
    assert any(r.startswith("PSI") for r in age.reasons)


def test_bad_inputs_are_named():
    with pytest.raises(DataError, match="lacks column"):
        detect_drift(sample(100, 1), sample(100, 2).drop(columns=["plan"]))
    with pytest.raises(DataError, match="needs rows on both sides"):
        detect_drift(sample(100, 1), sample(100, 2).head(0))


def test_component_writes_metrics_report_and_verdict(tmp_path):
    reference, current = sample(800, 1), sample(800, 2)
    current["age"] = current["age"] + 20
    reference.to_parquet(tmp_path / "ref.parquet")
    current.to_parquet(tmp_path / "cur.parquet")
    verdict = Artifact(uri=str(tmp_path / "verdict.json"))
    report = HTML(uri=str(tmp_path / "report.html"))
    metrics = Metrics(uri=str(tmp_path / "metrics"))
    drifted = drift.python_func(
        reference=Dataset(uri=str(tmp_path / "ref.parquet")),
        current=Dataset(uri=str(tmp_path / "cur.parquet")),
        metrics=metrics,
        report=report,
        verdict=verdict,
        options={},
    )
    assert drifted is False  # one feature of six
    written = pd.read_json(tmp_path / "verdict.json", typ="series")
    assert written["drifted_features"] == ["age"]
    assert metrics.metadata["drift_age"] < 0.05
    html = (tmp_path / "report.html").read_text()
    assert "1 of 6 features drifted" in html and "http" not in html
    # One inline image per feature: reference against current, the drifted one first.
    assert html.count('src="data:image/png;base64,') == len(FEATURES)
    assert html.index("age: reference vs current") < html.index("region: reference vs current")


@pytest.mark.parametrize(("shift", "drifted"), [(False, False), (True, True)])
def test_prediction_drift_is_reported_apart_from_the_features(shift, drifted):
    reference, current = sample(800, 1), sample(800, 2)
    reference["prediction"] = np.where(reference["support_calls"] > 1, "yes", "no")
    current["prediction"] = np.where(current["support_calls"] > (-1 if shift else 1), "yes", "no")
    result = detect_drift(reference, current, prediction_column="prediction")
    assert result.prediction.column == "prediction" and result.prediction.drifted is drifted
    assert "prediction" not in [f.column for f in result.features]
    with pytest.raises(DataError, match="no prediction column 'score'"):
        detect_drift(reference, current, prediction_column="score")


def test_reference_sample_round_trips_through_the_bundle_metadata():
    training = make_churn_dataset(rows=3000, seed=3)
    kept = reference_sample(training, "churned", rows=500)
    assert (kept["rows_sampled"], kept["rows_total"]) == (500, 3000)
    schema = infer_schema(training, target="churned")
    metadata = {"reference": kept, "input_schema": schema.to_dict()}
    frame = reference_frame(metadata)
    assert list(frame.columns) == schema.names and len(frame) == 500
    again = reference_frame({**metadata, "reference": reference_sample(training, "churned", 500)})
    pd.testing.assert_frame_equal(frame, again)  # seeded: the same rows every time
    # The sample is a fair one: no drift against the table it came from.
    assert not detect_drift(schema.coerce(training), frame, schema=schema).dataset_drift
    with pytest.raises(DataError, match="keeps no reference sample"):
        reference_frame({"input_schema": schema.to_dict()})
