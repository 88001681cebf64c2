"""The whole training pipeline, run for real through kfp.local (no cluster)."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from kfp import dsl

from kfp_lifecycle import cli
from kfp_lifecycle.component import component
from kfp_lifecycle.components.drift import reference_frame
from kfp_lifecycle.config import parse_config
from kfp_lifecycle.core.bundle import load_bundle
from kfp_lifecycle.errors import StepCrashed
from kfp_lifecycle.families import DEFAULT_FAMILIES
from kfp_lifecycle.local_run import run_local, run_training
from kfp_lifecycle.registry import CHAMPION, LocalRegistry

pytestmark = pytest.mark.pipeline

SUMMARY_KEYS = {
    "task", "primary_metric", "best_family", "champion", "metrics", "leaderboard", "blessed",
    "reasons", "model_uri", "model_name", "model_version",
}  # fmt: skip


def write_csv(frame, directory):
    path = directory / "data.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def churn_runs(tmp_path_factory, churn):
    """Two runs into one registry: the first passes a lenient gate, the second an impossible one."""
    root = tmp_path_factory.mktemp("churn-runs")
    data = write_csv(churn, root)
    common = {
        "data": {"source": str(data), "target": "churned"},
        "registry": str(root / "registry"),
    }
    first = run_training(
        parse_config({**common, "output": str(root / "run1"), "gate": {"primary_threshold": 0.6}})
    )
    second = run_training(
        parse_config(
            {**common, "output": str(root / "run2"), "gate": {"thresholds": {"roc_auc": 0.99}}}
        )
    )
    return root, first, second


def test_summary_names_best_family_metrics_and_decision(churn_runs):
    root, first, _ = churn_runs
    assert set(first) >= SUMMARY_KEYS
    assert json.loads((root / "run1" / "summary.json").read_text()) == first
    assert (first["task"], first["primary_metric"]) == ("classification", "roc_auc")
    assert set(first["leaderboard"]) == set(DEFAULT_FAMILIES)
    best = max(first["leaderboard"], key=first["leaderboard"].get)
    assert first["best_family"] == best
    assert first["champion"] == best  # the deprecated name, kept for one release
    assert first["blessed"] is True
    assert first["reasons"] == [
        f"pass: roc_auc = {first['metrics']['roc_auc']:.4f} (required >= 0.6)",
        "skip: the registry has no champion yet: nothing to compare with",
    ]


def test_registered_bundle_is_complete_and_predicts(churn_runs, churn):
    _, first, _ = churn_runs
    bundle = load_bundle(first["model_uri"])  # verifies the sha256
    metadata = bundle.metadata
    assert metadata["family"] == first["best_family"]
    assert metadata["metrics_test"] == first["metrics"]
    assert metadata["registry_version"] == first["model_version"] == 1
    assert len(metadata["lineage"]["data_sha256"]) == 64 and metadata["lineage"]["run_id"]
    assert (
        metadata["metrics"]["validation"]["roc_auc"] == first["leaderboard"][first["best_family"]]
    )
    assert 0 < metadata["decision_threshold"] < 1  # chosen on validation rows, used by serving
    contract = metadata["contract"]
    assert contract["target"] == "churned" and set(contract["columns"]) == set(churn.columns)
    assert contract["columns"]["plan"]["categories"] == ["basic", "pro", "standard"]
    assert metadata["model_card"].startswith("# Model card")
    assert set(metadata["explanation"]["permutation_importance"]) == set(bundle.schema.names)
    tuning = metadata["tuning"]
    assert tuning["trials_run"] >= 1 and tuning["best_score"] >= tuning["default_score"]
    reference = reference_frame(metadata)  # the training rows drift monitoring compares with
    assert list(reference.columns) == bundle.schema.names and len(reference) > 500
    prediction = bundle.predict(churn.drop(columns=["churned"]).head(20))
    assert set(prediction.labels) <= {"no", "yes"}


def test_the_run_exports_the_registered_version_to_onnx(churn_runs, churn):
    import onnxruntime

    from kfp_lifecycle.export import TOLERANCE, onnx_feed

    root, first, _ = churn_runs
    (outcome_file,) = (root / "run1" / "pipeline-root").rglob("export.json")
    outcome = json.loads(outcome_file.read_text())
    assert outcome["exported"] is True, outcome
    assert (outcome["model_uri"], outcome["model_version"]) == (first["model_uri"], 1)
    assert outcome["max_difference"] < TOLERANCE
    bundle = load_bundle(first["model_uri"])
    rows = churn.drop(columns=["churned"]).head(50)
    session = onnxruntime.InferenceSession(str(outcome_file.parent / "model.onnx"))
    labels, probabilities = session.run(["label", "probabilities"], onnx_feed(rows, bundle.schema))
    expected = bundle.predict(rows)
    assert labels.tolist() == expected.labels
    np.testing.assert_allclose(probabilities, expected.probabilities, atol=TOLERANCE, rtol=0)


def test_the_run_writes_an_evaluation_report_with_every_section_filled(churn_runs):
    root, _, _ = churn_runs
    (page,) = (root / "run1" / "pipeline-root").glob("*/report/report")
    html = page.read_text()
    for key in ("metrics", "gate", "roc", "pr", "confusion", "calibration", "learning",
                "importance", "tuning", "slices", "features"):  # fmt: skip
        assert f'<section id="{key}">' in html, key
    for missing in ("No fit diagnosis", "No feature importance", "No hyperparameter tuning"):
        assert missing not in html
    assert "http://" not in html and "https://" not in html  # self-contained


def test_unblessed_run_is_registered_but_does_not_move_the_champion(churn_runs):
    root, first, second = churn_runs
    assert second["blessed"] is False
    assert second["reasons"][0].startswith("FAIL: roc_auc")
    # Same data, same seeds: the challenger ties the champion on the same test rows.
    assert (
        second["reasons"][1].startswith("pass: roc_auc = ")
        and "against champion version 1" in (second["reasons"][1])
    )
    assert second["model_version"] == 2
    registry = LocalRegistry(root / "registry")
    assert registry.versions("churned") == [1, 2]
    assert registry.alias("churned", CHAMPION).version == first["model_version"]


def test_regression_pipeline(tmp_path, regression):
    summary = run_training(
        parse_config(
            {
                "data": {"source": str(write_csv(regression, tmp_path)), "target": "price"},
                "output": str(tmp_path / "out"),
                "models": {"families": ["linear", "xgboost"]},
            }
        )
    )
    assert (summary["task"], summary["primary_metric"]) == ("regression", "rmse")
    assert set(summary["metrics"]) == {"rmse", "mae", "r2", "mape"}
    # No threshold configured: the gate refuses, whatever the metrics.
    assert summary["blessed"] is False
    assert summary["reasons"][0].startswith("FAIL: no metric threshold configured")
    board = summary["leaderboard"]
    assert summary["best_family"] == min(board, key=board.get)  # lower RMSE wins


def test_cli_runs_a_multiclass_table(tmp_path, multiclass):
    data = write_csv(multiclass, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "kfp_lifecycle.cli", "run", "training", "--data", str(data),
         "--target", "species", "--output", str(tmp_path / "out"), "--families", "linear",
         "--threshold", "0.8"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["best_family"] == "linear" and summary["metrics"]["roc_auc"] > 0.85
    assert summary["blessed"] is True
    assert "Leaderboard" in result.stdout and "BLESSED" in result.stdout
    # Quiet by default: one line per step, the summary, then where everything is.
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) <= 60, "\n".join(lines)
    assert "KFP Executor" not in result.stdout and "executor_input" not in result.stdout
    steps = [line.split() for line in lines if line.endswith(" s") and " ok " in line]
    assert {"ingest", "train", "evaluate", "report", "register"} <= {s[0] for s in steps}
    reports = summary["reports"]
    assert set(reports) >= {"eda-report", "evaluation-report", "model-card"}
    for name, path in reports.items():
        assert path.endswith((".html", ".md")) and Path(path).stat().st_size > 1000, name
    assert Path(reports["evaluation-report"]).read_text().startswith("<!DOCTYPE html>")
    assert lines[-1] == f"summary:            {tmp_path / 'out' / 'summary.json'}"
    assert [line.split()[-1] for line in lines[-2 - len(reports) : -2]] == list(reports.values())
    assert "KFP Executor" in Path(summary["log"]).read_text()  # kept, not shown


def test_cli_reports_bad_input_in_one_line(tmp_path, churn):
    data = write_csv(churn, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "kfp_lifecycle.cli", "run", "training", "--data", str(data),
         "--target", "churn", "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: target column 'churn' not found; columns are: signup_date, age, tenure_months, "
        "monthly_charges, support_calls, plan, contract, region, payment_method, churned"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.serving
def test_champion_served_through_its_alias_predicts_like_the_bundle(
    churn_runs, churn, start_server
):
    root, first, _ = churn_runs
    server = start_server(f"{root / 'registry'}/churned@champion", "churned")
    rows = churn.drop(columns=["churned"]).head(8)
    records = json.loads(rows.to_json(orient="records"))
    response = httpx.post(
        f"{server.url}/v1/models/churned:predict", json={"instances": records}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = load_bundle(first["model_uri"]).predict(rows)
    assert body["predictions"] == expected.labels
    served = [[p[str(c)] for c in expected.classes] for p in body["probabilities"]]
    assert np.allclose(served, expected.probabilities, atol=1e-9)
    assert body["model_version"] == str(first["model_version"])
    missing = httpx.post(
        f"{server.url}/v1/models/churned:predict",
        json={"instances": [{k: v for k, v in records[0].items() if k != "tenure_months"}]},
        timeout=30,
    )
    assert missing.status_code == 400 and "tenure_months" in missing.text


def test_a_step_that_stops_on_bad_input_ends_the_run_in_one_line_naming_it(tmp_path, churn):
    """What no check before the run can see (a group split with too few groups) fails in its
    step; the command line still prints one line naming the step and why, without colours."""
    data = write_csv(churn.head(150).assign(site=["north", "south"] * 75), tmp_path)
    config = tmp_path / "group.yaml"
    config.write_text("split: {strategy: group, group_column: site}\n")
    result = subprocess.run(
        [sys.executable, "-m", "kfp_lifecycle.cli", "run", "training", "--data", str(data),
         "--target", "churned", "--output", str(tmp_path / "out"), "--families", "linear",
         "--config", str(config)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        "error: step 'split' failed: group_column 'site' has 2 distinct value(s); a group split "
        "needs at least 3 (one per partition)"
    ]
    # Quiet by default: the step's line says it failed; its log, in pipeline.log, the detail.
    assert ["split", "failure"] in [line.split()[:2] for line in result.stdout.splitlines()]
    assert "Traceback" not in result.stdout
    assert "Traceback" in (tmp_path / "out" / "pipeline.log").read_text()


@component
def crashing_step(rows: int) -> int:
    """A step with a bug, as a real one would have it: it imports the project, then fails."""
    import kfp_lifecycle.errors  # noqa: F401

    raise ValueError(f"cannot handle {rows} rows")


@dsl.pipeline(name="crashing")
def crashing_pipeline(rows: int = 3):
    crashing_step(rows=rows)


def test_a_step_that_crashes_is_reported_as_a_bug_in_one_line(tmp_path):
    with pytest.raises(StepCrashed) as raised:
        run_local(crashing_pipeline, {"rows": 3}, tmp_path)
    assert str(raised.value) == (
        "step 'crashing-step' failed with ValueError: cannot handle 3 rows "
        "(a bug: its traceback is in the log above)"
    )


def test_the_leaderboard_marks_the_selected_family_not_rank_one(capsys, tmp_path):
    """The best family is what the select step chose; a family can top validation and lose."""
    summary = {
        "task": "classification", "primary_metric": "roc_auc", "best_family": "linear",
        "leaderboard": {"xgboost": 0.91, "linear": 0.90}, "metrics": {"roc_auc": 0.89},
        "blessed": True, "reasons": [], "model_name": "churned", "model_version": 1,
        "model_uri": str(tmp_path),
    }  # fmt: skip
    cli.print_summary(summary, str(tmp_path))
    lines = capsys.readouterr().out.splitlines()
    first, second = (
        next(line for line in lines if score in line) for score in ("0.9100", "0.9000")
    )
    assert "xgboost" in first and "(selected)" not in first
    assert "linear" in second and "(selected)" in second


def test_a_run_without_a_threshold_ends_with_the_flag_to_set_one(capsys, tmp_path):
    summary = {
        "task": "classification", "primary_metric": "roc_auc", "best_family": "linear",
        "leaderboard": {"linear": 0.90}, "metrics": {"roc_auc": 0.89}, "blessed": False,
        "reasons": ["FAIL: no metric threshold configured: the gate blesses no model without "
                    "one (set thresholds or primary_threshold)"],
        "model_name": "churned", "model_version": 1, "model_uri": str(tmp_path),
    }  # fmt: skip
    cli.print_summary(summary, str(tmp_path))
    out = capsys.readouterr().out
    assert "hint: rerun with --threshold VALUE (a bound on roc_auc) or --gate METRIC=VALUE" in out


def test_registry_help_names_every_kind_of_registry(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "training", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--registry REGISTRY model registry: a directory, file:// or s3:// URI" in help_text


def test_print_is_itself_again_after_a_local_run(tmp_path):
    """kfp.local's threads for a ParallelFor can leave builtins.print indented for good; a
    command that runs two pipelines (monitor, then retrain) would print askew after that."""
    import builtins

    real = builtins.print

    def leaky_pipeline():
        builtins.print = lambda *args, **kwargs: real("    ", *args, **kwargs)
        return "done"

    try:
        assert run_local(leaky_pipeline, {}, tmp_path) == "done"
        assert builtins.print is real
    finally:
        builtins.print = real


def test_a_quiet_run_reports_each_step_once_and_keeps_kfps_output_in_its_log(tmp_path, capsys):
    """What `--verbose` turns off: with a log file, kfp.local's output goes there and each
    step is heard of once, with its status and time; the crashing step too."""
    heard = []
    log = tmp_path / "pipeline.log"
    with pytest.raises(StepCrashed) as raised:
        run_local(crashing_pipeline, {"rows": 3}, tmp_path, log, lambda *step: heard.append(step))
    assert str(raised.value).endswith(f"(a bug: its traceback is in {log})")
    ((step, status, seconds),) = heard
    assert (step, status) == ("crashing-step", "FAILURE") and 0 < seconds < 120
    assert capsys.readouterr().out == ""
    text = log.read_text()
    assert "Executing task" in text and "ValueError: cannot handle 3 rows" in text
