"""Drift detection: known shifts are found and named; same-distribution samples rarely alarm."""

import json
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from bundles import build_bundle, register_churn
from kfp.dsl import HTML, Artifact, Dataset, Metrics
from s3_server import new_bucket, running_moto

from kfp_lifecycle import cli
from kfp_lifecycle.components.drift import (
    PSI_EPSILON,
    DriftOptions,
    FeatureDrift,
    category_psi,
    detect_drift,
    distribution_figure,
    drift,
    psi,
    reference_frame,
    reference_sample,
    render_report,
)
from kfp_lifecycle.components.validate import infer_contract
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import infer_schema
from kfp_lifecycle.demo import make_churn_dataset
from kfp_lifecycle.drift_run import DRIFT_EXIT_CODE, table_sources
from kfp_lifecycle.registry import LocalRegistry
from kfp_lifecycle.storage import upload_file

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


def false_alarms(rows: int, trials: int, options: DriftOptions) -> dict[str, Any]:
    """Rates over `trials` pairs of independent samples of one distribution (fixed seeds).

    test: a feature's own test fired (p < p_value, or a distance above its threshold);
    feature: a feature was flagged for any reason (that test, new categories, missing values);
    dataset: the dataset verdict (a drift_share of the features flagged at once).
    """
    fired = flagged = datasets = checks = 0
    tests = set()
    for trial in range(trials):
        reference, current = sample(rows, 1000 + 2 * trial), sample(rows, 1001 + 2 * trial)
        result = detect_drift(reference, current, options)
        for finding in result.features:
            tests.add(finding.test)
            fired += alarmed(finding)
            flagged += finding.drifted
        checks += len(result.features)
        datasets += result.dataset_drift
    rates = {"test": fired / checks, "feature": flagged / checks, "dataset": datasets / trials}
    return {**rates, "tests": sorted(tests)}


def alarmed(finding: FeatureDrift) -> bool:
    if finding.test.endswith("p-value"):
        return finding.statistic < finding.threshold
    return finding.statistic > finding.threshold


def test_false_alarm_rate_of_small_samples_stays_at_the_configured_level():
    """Same distribution, 400 rows a side (the p-value tests): at most p_value false alarms.

    `p_value` is the level of each feature's test, so it bounds the share of per-feature
    findings (1,200 of them: 200 trials x 6 features), both of the test alone and of the
    feature's whole verdict (which also counts new categories and missing values). Were the
    true rate 0.08, 0.05 would sit 3.8 standard errors below it: the bound has teeth. The
    rate is above a quarter of the level, so the bound does not hold because nothing fires.
    The dataset verdict (drift_share = 0.5: three features at once) is held to the same
    level, and in fact alarms far more rarely.
    """
    options = DriftOptions(p_value=0.05)
    rates = false_alarms(400, 200, options)
    assert rates["tests"] == ["KS p-value", "chi-square p-value"]
    assert options.p_value / 4 < rates["test"] <= rates["feature"] <= options.p_value
    assert rates["dataset"] <= options.p_value


def test_false_alarm_rate_of_large_samples_stays_at_the_configured_level():
    """Same distribution, just above `small_sample` (1,100 rows a side: the distances).

    The distances have no p-value; their thresholds are meant to keep each feature's false
    alarms within the same configured level, `p_value`, where noise is largest: just past
    the switch (the distances shrink as samples grow). 100 trials x 6 features.
    """
    options = DriftOptions()
    rates = false_alarms(options.small_sample + 100, 100, options)
    assert rates["tests"] == ["Jensen-Shannon distance", "Wasserstein/std"]
    assert rates["test"] <= rates["feature"] <= options.p_value
    assert rates["dataset"] <= options.p_value


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
    # Without `psi`, PSI is no feature finding; it is computed for the max_psi rule alone.
    (age,) = [f for f in detect_drift(reference, current).features if f.column == "age"]
    assert age.psi > 0.25 and not any(r.startswith("PSI") for r in age.reasons)
    unruled = detect_drift(reference, current, DriftOptions(max_psi=0))
    assert unruled.features[0].psi is None


def test_category_psi_is_the_index_over_category_shares():
    reference = pd.Series(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    current = pd.Series(["a"] * 20 + ["b"] * 30 + ["c"] * 40 + [None] * 10)
    # By hand: sum of (actual - expected) * ln(actual / expected) over a, b, c and missing,
    # missing being absent from the reference (its share taken as PSI_EPSILON, not zero).
    expected = (
        (0.2 - 0.5) * np.log(0.2 / 0.5)
        + 0.0
        + (0.4 - 0.2) * np.log(0.4 / 0.2)
        + (0.1 - PSI_EPSILON) * np.log(0.1 / PSI_EPSILON)
    )
    assert category_psi(reference, current) == pytest.approx(expected)
    assert category_psi(reference, reference.sample(frac=1, random_state=0)) == 0.0


def test_psi_on_request_flags_a_changed_category_mix():
    reference, current = sample(5000, 5), sample(5000, 6)
    # a fifth of the rows move from basic to pro: PSI about 0.3 (threshold 0.2); the
    # same-distribution side of the pair stays far below it
    basic = current.index[current["plan"] == "basic"]
    current.loc[basic[: len(current) // 5], "plan"] = "pro"
    result = detect_drift(reference, current, DriftOptions(psi=True, psi_threshold=0.2))
    found = {f.column: f for f in result.features}
    assert found["plan"].psi > 0.2 and any(r.startswith("PSI") for r in found["plan"].reasons)
    assert found["region"].psi < 0.01 and not found["region"].drifted
    # the threshold alone decides the PSI finding, whatever the other test said
    loose = detect_drift(reference, current, DriftOptions(psi=True, psi_threshold=5.0))
    plan = next(f for f in loose.features if f.column == "plan")
    assert plan.psi == pytest.approx(found["plan"].psi) and not any(
        r.startswith("PSI") for r in plan.reasons
    )


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
    (tmp_path / "contract.json").write_text(json.dumps(infer_contract(reference, target="")))
    drifted = drift.python_func(
        reference=Dataset(uri=str(tmp_path / "ref.parquet")),
        current=Dataset(uri=str(tmp_path / "cur.parquet")),
        metrics=metrics,
        report=report,
        verdict=verdict,
        options={"max_psi": 0},  # the share rule alone: one feature of six
        contract=Artifact(uri=str(tmp_path / "contract.json")),
    )
    assert drifted is False
    written = pd.read_json(tmp_path / "verdict.json", typ="series")
    assert written["drifted_features"] == ["age"]
    assert [(f["column"], f["check"]) for f in written["contract"]] == [
        ("age", "outside the training range")
    ]
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


# `lifecycle drift`: a file or an S3 prefix against a registered model's kept reference.


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> str:
    """REGISTRY/churn@1: a real bundle registered with its reference sample, as training does."""
    root = tmp_path_factory.mktemp("drift-cli")
    register_churn(root, make_churn_dataset(rows=1500, seed=21))
    return f"{root / 'registry'}/churn@1"


def drifted_rows(rows: int, seed: int) -> pd.DataFrame:
    """Fresh churn rows (target included) with five of the nine inputs moved."""
    frame = make_churn_dataset(rows=rows, seed=seed)
    frame["tenure_months"] += 36
    frame["monthly_charges"] *= 1.5
    frame["support_calls"] += 3
    frame["contract"] = "month-to-month"
    frame["payment_method"] = np.where(np.arange(rows) % 3 == 0, "crypto", frame["payment_method"])
    return frame


MOVED = {"tenure_months", "monthly_charges", "support_calls", "contract", "payment_method"}


def printed_verdicts(out: str, names: list[str]) -> dict[str, str]:
    """The printed per-feature table: feature name -> its "drifted" cell (yes / no)."""
    rows = {}
    for line in out.splitlines():
        words = line.split()
        if words and words[0] in names and words[-1] in ("yes", "no"):
            rows[words[0]] = words[-1]
    return rows


def test_drift_command_on_a_file_gates_on_the_dataset_verdict(registered, tmp_path, capsys):
    current = tmp_path / "current.csv"
    drifted_rows(800, seed=5).to_csv(current, index=False)
    out = tmp_path / "out"
    argv = ["drift", "--model", registered, "--current", str(current), "--output", str(out)]
    assert cli.main(argv) == DRIFT_EXIT_CODE == 3
    verdict = json.loads((out / "drift-verdict.json").read_text())
    assert verdict["dataset_drift"] is True and set(verdict["drifted_features"]) >= MOVED
    assert verdict["files"] == [str(current)] and verdict["current_rows"] == 800
    assert verdict["model"].endswith("churn/versions/1") and verdict["model_version"] == "1"
    html = (out / "drift-report.html").read_text()
    assert "features drifted" in html and "http" not in html
    printed = capsys.readouterr().out
    columns = [f["column"] for f in verdict["features"]]
    assert len(columns) == 9  # every input column of the model, each on one row
    assert printed_verdicts(printed, columns) == {
        f["column"]: "yes" if f["drifted"] else "no" for f in verdict["features"]
    }
    assert "payment_method: categories never seen in the reference" in printed
    assert "DRIFT: " in printed and f"current 800 rows from {current}" in printed
    # the training data contract, checked on the new rows too (inputs only: no target there)
    broken = {(f["column"], f["check"]) for f in verdict["contract"]}
    assert ("payment_method", "categories training never saw") in broken
    assert ("tenure_months", "outside the training range") in broken
    assert "churned" not in {column for column, _ in broken}
    assert "contract warning: 'payment_method' categories training never saw" in printed
    assert '<section id="contract"' in html and "crypto" in html

    # Another sample of the training distribution: no dataset drift, exit 0; --psi adds PSI.
    make_churn_dataset(rows=800, seed=6).to_parquet(tmp_path / "same.parquet")
    argv = ["drift", "--model", registered, "--current", str(tmp_path / "same.parquet"),
            "--output", str(out), "--psi"]  # fmt: skip
    assert cli.main(argv) == 0
    verdict = json.loads((out / "drift-verdict.json").read_text())
    assert verdict["dataset_drift"] is False and verdict["options"]["psi"] is True
    assert not [f for f in verdict["contract"] if f["check"] == "categories training never saw"]
    assert all(f["psi"] is not None for f in verdict["features"])  # categories included
    assert "no dataset drift" in capsys.readouterr().out


def test_drift_command_names_a_missing_file_or_column_in_one_line(registered, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["drift", "--model", registered, "--output", str(out), "--current"]
    assert cli.main([*argv, str(tmp_path / "nope.csv")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: data file {tmp_path / 'nope.csv'} does not exist"
    )
    short = tmp_path / "short.csv"
    make_churn_dataset(rows=50, seed=1).drop(columns=["plan", "region"]).to_csv(short, index=False)
    assert cli.main([*argv, str(short)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {short} lacks the model's input column(s): plan, region"
    )
    (tmp_path / "empty").mkdir()
    assert cli.main([*argv, str(tmp_path / "empty")]) == 2
    assert "no CSV or Parquet file under" in capsys.readouterr().err
    assert not out.exists()  # nothing half-written


def test_drift_command_reads_every_table_under_an_s3_prefix(
    registered, tmp_path, monkeypatch, capsys
):
    with running_moto() as moto:
        for name, value in moto.env().items():
            monkeypatch.setenv(name, value)
        client = moto.client()
        bucket = new_bucket(client)
        parts = {
            "exports/day=1/part-0.parquet": drifted_rows(300, seed=7),
            "exports/day=1/part-1.parquet": drifted_rows(300, seed=8),
            "exports/day=2/extra.csv": drifted_rows(200, seed=9),
        }
        skipped = {  # not tables, marked hidden, or beside the prefix rather than under it
            "exports/_SUCCESS": None,
            "exports/notes.md": None,
            "exports/_retraining/churn/old.parquet": make_churn_dataset(rows=50, seed=1),
            "exports-old/part-0.parquet": make_churn_dataset(rows=50, seed=1),
        }
        for key, frame in {**parts, **skipped}.items():
            local = tmp_path / "upload" / key
            local.parent.mkdir(parents=True, exist_ok=True)
            if frame is None:
                local.write_text("x")
            elif key.endswith(".csv"):
                frame.to_csv(local, index=False)
            else:
                frame.to_parquet(local)
            upload_file(client, local, bucket, key)
        out = tmp_path / "out"
        argv = ["drift", "--model", registered, "--output", str(out), "--current"]
        assert cli.main([*argv, f"s3://{bucket}/exports"]) == DRIFT_EXIT_CODE
        verdict = json.loads((out / "drift-verdict.json").read_text())
        assert verdict["files"] == [f"s3://{bucket}/{key}" for key in parts]
        assert verdict["current_rows"] == 800 and set(verdict["drifted_features"]) >= MOVED
        assert "from 3 file(s)" in capsys.readouterr().out

        assert cli.main([*argv, f"s3://{bucket}/exports/day=2/extra.csv"]) == DRIFT_EXIT_CODE
        assert json.loads((out / "drift-verdict.json").read_text())["current_rows"] == 200
        assert cli.main([*argv, f"s3://{bucket}/nothing-here/"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: no CSV or Parquet file under s3://{bucket}/nothing-here/"
        assert cli.main([*argv, f"s3://{bucket}/exports/day=3.csv"]) == 2
        (err,) = capsys.readouterr().err.strip().splitlines()
        assert err.startswith(f"error: downloading s3://{bucket}/exports/day=3.csv failed")


def test_a_directory_stands_for_every_table_under_it(tmp_path):
    for name in ("b/part-1.parquet", "a.csv", "b/part-0.PARQUET", "_tmp/x.csv", ".hidden.csv",
                 "notes.txt", "b/_SUCCESS"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    expected = ["a.csv", "b/part-0.PARQUET", "b/part-1.parquet"]
    assert table_sources(str(tmp_path)) == [str(tmp_path / name) for name in expected]
    assert table_sources(f"file://{tmp_path}/a.csv") == [str(tmp_path / "a.csv")]


# The dataset rules beyond a share, each on a constructed case where the share rule is quiet.

ONLY_SHARE = {"top_features": 0, "max_psi": 0, "max_new_category_rows": 1}


def test_a_drifted_top_feature_is_dataset_drift_though_the_share_is_small():
    reference, current = sample(3000, 1), sample(3000, 2)
    current["support_calls"] = current["support_calls"] + 1  # one feature of six
    importance = {"support_calls": 0.2, "tenure_months": 0.1, "plan": 0.05, "age": 0.0,
                  "monthly_charges": 0.01, "region": 0.0}  # fmt: skip
    quiet = DriftOptions(**{**ONLY_SHARE, "top_features": 3})
    result = detect_drift(reference, current, quiet, importance=importance)
    assert result.drifted == ["support_calls"] and result.drifted_share < 0.5
    assert result.dataset_drift
    assert result.dataset_reasons == [
        "important feature(s) drifted: support_calls "
        "(rule: top_features 3: support_calls, tenure_months, plan)"
    ]
    # The same drift in an unimportant feature, or no importance known: the share decides.
    unimportant = {**importance, "support_calls": 0.0, "age": 0.3}
    assert not detect_drift(reference, current, quiet, importance=unimportant).dataset_drift
    assert not detect_drift(reference, current, quiet).dataset_drift


def test_a_psi_above_the_bound_is_dataset_drift():
    reference, current = sample(3000, 1), sample(3000, 2)
    current["monthly_charges"] = current["monthly_charges"] * 1.4
    options = DriftOptions(**{**ONLY_SHARE, "max_psi": 0.25})
    result = detect_drift(reference, current, options)
    assert result.drifted_share < 0.5 and result.dataset_drift
    (reason,) = result.dataset_reasons
    assert reason.startswith("PSI above 0.25: monthly_charges ") and reason.endswith(
        "(rule: max_psi)"
    )
    charges = next(f for f in result.features if f.column == "monthly_charges")
    assert f"monthly_charges {charges.psi:.3g} " in reason and charges.psi > 0.25
    assert not detect_drift(reference, current, DriftOptions(**ONLY_SHARE)).dataset_drift


def test_rows_with_unseen_categories_beyond_the_bound_are_dataset_drift():
    reference, current = sample(3000, 1), sample(3000, 2)
    half = current.index[::2]
    current.loc[half, "region"] = "atlantis"
    current.loc[half[:100], "plan"] = "enterprise"  # the same rows: still half of all rows
    options = DriftOptions(**{**ONLY_SHARE, "max_new_category_rows": 0.1})
    result = detect_drift(reference, current, options)
    assert result.new_category_rows == 0.5 and result.dataset_drift
    assert result.dataset_reasons == [
        "50.0% of rows carry a category never seen in the reference "
        "(rule: max_new_category_rows 0.1)"
    ]
    current.loc[half[150:], "region"] = "north"  # 150 rows of 3000: 5%, under the bound
    assert detect_drift(reference, current, options).new_category_rows == 0.05
    assert not detect_drift(reference, current, options).dataset_drift


def test_same_distribution_samples_meet_no_rule_by_default():
    """The defaults on two samples of one distribution, with every feature ranked."""
    importance = {name: float(rank) for rank, name in enumerate(FEATURES)}
    for seed in range(5):
        result = detect_drift(sample(600, 10 + seed), sample(600, 50 + seed), importance=importance)
        assert result.dataset_reasons == [] and not result.dataset_drift


def test_drift_command_exit_code_follows_the_top_feature_rule(tmp_path, capsys):
    """The CI gate: one important feature moved is exit 3; 0 without the top-features rule."""
    training = make_churn_dataset(rows=1500, seed=21)
    registry = LocalRegistry(tmp_path / "registry")
    importance = {"contract": 0.09, "tenure_months": 0.07, "support_calls": 0.05}
    registry.register("churn", build_bundle(tmp_path / "bundle", training), {
        "reference": reference_sample(training, "churned"),
        "explanation": {"permutation_importance": importance},
    })  # fmt: skip
    current = make_churn_dataset(rows=1500, seed=22)
    current["support_calls"] += 2  # only this one, ranked third
    current.to_csv(tmp_path / "current.csv", index=False)
    strict, lenient = tmp_path / "strict.yaml", tmp_path / "lenient.yaml"
    strict.write_text("monitoring:\n  drift:\n    max_psi: 0\n")  # the top-k rule alone
    lenient.write_text("monitoring:\n  drift:\n    max_psi: 0\n    top_features: 0\n")
    argv = ["drift", "--model", f"{tmp_path / 'registry'}/churn@1", "--current",
            str(tmp_path / "current.csv"), "--output", str(tmp_path / "out")]  # fmt: skip
    assert cli.main([*argv, "--config", str(strict)]) == DRIFT_EXIT_CODE
    out = capsys.readouterr().out
    assert "DRIFT: 1 of 9 features drifted" in out
    assert "  - important feature(s) drifted: support_calls (rule: top_features 3" in out
    verdict = json.loads((tmp_path / "out" / "drift-verdict.json").read_text())
    assert verdict["dataset_drift"] is True and len(verdict["dataset_reasons"]) == 1
    assert cli.main([*argv, "--config", str(lenient)]) == 0
    assert "no dataset drift: 1 of 9 features drifted" in capsys.readouterr().out


def test_date_columns_are_plotted_as_dates_and_examples_without_float_noise(tmp_path):
    """Before: the x axis counted days since 1970, and a contract example read
    50.830000000000005 (a price times 1.5)."""
    reference = make_churn_dataset(rows=600, seed=1).drop(columns=["churned"])
    current = make_churn_dataset(rows=600, seed=2).drop(columns=["churned"])
    current["signup_date"] = pd.to_datetime(current["signup_date"]) + pd.Timedelta(days=400)
    current["monthly_charges"] = current["monthly_charges"] * 1.5
    result = detect_drift(reference, current, contract=infer_contract(reference, target=""))
    signup = next(f for f in result.features if f.column == "signup_date")
    schema = infer_schema(reference, target="")
    figure = distribution_figure(
        signup,
        schema.coerce(reference)["signup_date"],
        schema.coerce(current)["signup_date"],
    )
    figure.canvas.draw()
    (axes,) = figure.axes
    labels = " ".join(t.get_text() for t in axes.get_xticklabels())
    assert re.search(r"20\d\d", labels), labels  # years on the axis, not day counts
    assert "1970" not in axes.get_ylabel() + labels

    messages = " ".join(f["message"] for f in result.contract)
    assert "monthly_charges" in {f["column"] for f in result.contract}
    assert not re.search(r"\d\.\d{7,}", messages), messages
    html = render_report(result, schema.coerce(reference), schema.coerce(current))
    assert not re.search(r"\d\.\d{7,}", html.split("<img")[0])
