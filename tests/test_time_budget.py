"""A run's total time budget: tuning, diagnosis and explanation each cut their work to fit
their share, and say what they cut."""

import numpy as np
import pandas as pd
import pytest

from kfp_lifecycle.budget import SHARES, affordable, share
from kfp_lifecycle.cli import build_parser, training_config
from kfp_lifecycle.components.diagnose import DiagnoseOptions, diagnose_fit
from kfp_lifecycle.components.explain import ExplainOptions, explain_bundle
from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model, tune_family
from kfp_lifecycle.components.tune import TuneOptions, within_budget
from kfp_lifecycle.config import parse_config
from kfp_lifecycle.core.tasks import REGRESSION
from kfp_lifecycle.local_run import pipeline_arguments


def test_shares_and_what_fits():
    assert share(0, "tuning") is None and share(1000, "diagnosis") == 1000 * SHARES["diagnosis"]
    assert sum(SHARES.values()) < 1  # the fixed steps keep the rest
    assert affordable([1.0, 2.0, 3.0], 3.5) == 2 and affordable([1.0, 2.0], None) == 2


def test_tuning_timeout_is_capped_by_its_share_and_says_so():
    options, cut = within_budget(TuneOptions(timeout_seconds=60), 100)
    assert options.timeout_seconds == 100 * SHARES["tuning"] and "60s to 45s" in cut
    assert within_budget(TuneOptions(timeout_seconds=60), 0) == (
        TuneOptions(timeout_seconds=60),
        "",
    )


def test_the_budget_is_a_flag_a_config_key_and_a_pipeline_parameter(tmp_path, regression):
    data = tmp_path / "houses.csv"
    regression.to_csv(data, index=False)
    config = parse_config({"data": {"source": str(data), "target": "price"},
                           "output": str(tmp_path), "time_budget": 120})  # fmt: skip
    assert pipeline_arguments(config)["time_budget"] == 120
    args = build_parser().parse_args(
        ["run", "training", "--data", str(data), "--target", "price", "--time-budget", "90"]
    )
    assert training_config(args).time_budget == 90
    from kfp_lifecycle.pipelines.training import training_pipeline

    inputs = training_pipeline.pipeline_spec.root.input_definitions.parameters
    assert inputs["time_budget"].default_value.number_value == 600.0


def _regression_bundle(regression: pd.DataFrame, tuned: bool = False):
    parts = split_table(regression, "price", REGRESSION, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, "price", REGRESSION)
    study = None
    if tuned:
        study = tune_family(parts.train, parts.validation, "price", REGRESSION, "linear", fitted,
                            "rmse", TuneOptions(trials=12))  # fmt: skip
    bundle = train_model(parts.train, parts.validation, "price", REGRESSION, "linear", fitted,
                         schema)  # fmt: skip
    bundle.metadata["primary_metric"] = "rmse"
    return bundle, parts, study


def test_diagnosis_cuts_its_refits_to_the_time_and_reuses_the_tuning_history(regression):
    bundle, parts, study = _regression_bundle(regression, tuned=True)
    whole = diagnose_fit(bundle, parts.train, parts.validation, DiagnoseOptions())
    assert len(whole["learning_curve"]["train_sizes"]) == 5
    assert not any("time budget" in line for line in whole["evidence"])
    cut = diagnose_fit(bundle, parts.train, parts.validation, DiagnoseOptions(), seconds=0.0)
    # the verdict's own refit always runs; the rest is left out, and the evidence says so
    assert cut["learning_curve"]["train_sizes"] == whole["learning_curve"]["train_sizes"][-1:]
    assert cut["verdict"] == whole["verdict"]
    assert any("time budget: learning-curve size" in line for line in cut["evidence"])
    assert len(cut["validation_curve"]["values"]) == 1
    reused = diagnose_fit(bundle, parts.train, parts.validation, DiagnoseOptions(), 0.0, study)
    curve = reused["validation_curve"]
    assert curve["source"] == "tuning history" and len(curve["values"]) >= 2
    tried = [t["value"] for t in study["trials"] if t["value"] is not None]
    assert min(curve["validation_scores"]) == min(tried)  # the best trial is on the curve
    assert any("read from the tuning history" in line for line in reused["evidence"])
    # the full-size point is the bundle's own model, not refitted: its recorded score
    assert any("the bundle's own model (no refit)" in line for line in reused["evidence"])
    recorded = bundle.metadata["metrics"]["validation"]["rmse"]
    assert reused["learning_curve"]["validation_scores"][-1] == pytest.approx(recorded)
    assert reused["verdict"] == whole["verdict"]


def test_explanation_cuts_repeats_then_rows_to_fit(regression):
    bundle, parts, _ = _regression_bundle(regression)
    full = explain_bundle(bundle, parts.test, ExplainOptions(repeats=5))
    assert full["budget_cut"] == "" and "5 repeats" in full["method"]
    cut = explain_bundle(bundle, parts.test, ExplainOptions(repeats=5), seconds=1e-3)
    assert cut["budget_cut"].startswith("1 of 5 repeats") and "1 repeats" in cut["method"]
    assert set(cut["permutation_importance"]) == set(full["permutation_importance"])
    assert np.isfinite(list(cut["permutation_importance"].values())).all()
