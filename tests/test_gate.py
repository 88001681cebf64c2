import json

import numpy as np
import pytest
from bundles import build_bundle
from kfp.dsl import Artifact, Dataset, Model
from pydantic import ValidationError

from kfp_lifecycle.components.evaluate import evaluate_bundle
from kfp_lifecycle.components.gate import (
    LATENCY,
    MODEL_SIZE,
    Baseline,
    GateOptions,
    assess,
    decide,
    gate,
)
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.core.bundle import MODEL_FILE, load_bundle
from kfp_lifecycle.core.documents import Blessing, Calibration, Evaluation, read_document, served
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION
from kfp_lifecycle.registry import CHAMPION, LocalRegistry, set_alias

METRICS = {"roc_auc": 0.82, "recall": 0.4, "accuracy": 0.9}


def _options(**fields) -> GateOptions:
    return GateOptions.model_validate(fields)


# --- decide: the rules -----------------------------------------------------------------------


def test_blessed_when_every_threshold_is_met():
    decision = decide(METRICS, CLASSIFICATION, _options(thresholds={"roc_auc": 0.8, "recall": 0.4}))
    assert decision.blessed and not decision.overridden
    assert decision.reasons[:2] == [
        "pass: roc_auc = 0.8200 (required >= 0.8)",
        "pass: recall = 0.4000 (required >= 0.4)",
    ]
    assert [(c.name, c.value, c.bound, c.passed) for c in decision.checks] == [
        ("roc_auc", 0.82, 0.8, True),
        ("recall", 0.4, 0.4, True),
    ]


def test_one_failed_threshold_refuses_and_says_which():
    decision = decide(METRICS, CLASSIFICATION, _options(thresholds={"roc_auc": 0.8, "recall": 0.5}))
    assert not decision.blessed
    assert "FAIL: recall = 0.4000 (required >= 0.5)" in decision.reasons


def test_error_metrics_are_ceilings():
    options = _options(thresholds={"rmse": 10.0})
    assert decide({"rmse": 9.0, "r2": 0.5}, REGRESSION, options).blessed
    assert not decide({"rmse": 11.0, "r2": 0.5}, REGRESSION, options).blessed


def test_primary_threshold_bounds_the_primary_metric():
    options = _options(primary_threshold=0.85)
    decision = decide(METRICS, CLASSIFICATION, options, primary_metric="roc_auc")
    assert not decision.blessed and decision.thresholds == {"roc_auc": 0.85}


def test_no_threshold_means_no_blessing_even_when_every_guardrail_passes():
    options = _options(max_latency_ms_per_row=50.0, max_model_size_mb=100.0)
    measured = {LATENCY: 0.1, MODEL_SIZE: 0.5}
    decision = decide(METRICS, CLASSIFICATION, options, measured=measured)
    assert not decision.blessed
    assert all(check.passed for check in decision.checks)
    assert "no metric threshold configured" in decision.reasons[0]


def test_guardrails_on_latency_and_size_refuse_a_slow_or_large_model():
    options = _options(
        thresholds={"roc_auc": 0.8}, max_latency_ms_per_row=2.0, max_model_size_mb=10.0
    )
    fine = decide(METRICS, CLASSIFICATION, options, measured={LATENCY: 1.5, MODEL_SIZE: 3.0})
    slow = decide(METRICS, CLASSIFICATION, options, measured={LATENCY: 2.5, MODEL_SIZE: 3.0})
    large = decide(METRICS, CLASSIFICATION, options, measured={LATENCY: 1.5, MODEL_SIZE: 12.0})
    assert fine.blessed and not slow.blessed and not large.blessed
    assert f"FAIL: {LATENCY} = 2.5000 (required <= 2.0)" in slow.reasons


def test_threshold_on_a_metric_of_another_task_is_an_error():
    with pytest.raises(LifecycleError, match="unknown metric"):
        decide(METRICS, CLASSIFICATION, _options(thresholds={"rmse": 1.0}))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"thresholds": {"auc": 0.8}}, "auc"),
        ({"treshold": 0.8}, "treshold"),
        ({"max_latency_ms_per_row": -1}, "max_latency_ms_per_row"),
        ({"override": True}, "override_reason"),
    ],
)
def test_bad_options_are_named(options, field):
    with pytest.raises(ValidationError, match=field):
        GateOptions.model_validate(options)


def _champion(roc_auc: float) -> Baseline:
    return Baseline(version=3, uri="/registry/churn/versions/3", metrics={"roc_auc": roc_auc})


@pytest.mark.parametrize(
    ("champion_score", "margin", "blessed"),
    [(0.80, 0.0, True), (0.82, 0.0, True), (0.83, 0.0, False), (0.81, 0.02, False)],
)
def test_champion_margin_is_in_the_primary_metrics_better_direction(
    champion_score, margin, blessed
):
    options = _options(thresholds={"roc_auc": 0.5}, champion_margin=margin)
    champion = _champion(champion_score)
    decision = decide(METRICS, CLASSIFICATION, options, "roc_auc", baseline=champion)
    assert decision.blessed is blessed
    assert decision.checks[-1].bound == pytest.approx(champion_score + margin)
    assert decision.margin == margin and decision.baseline.version == 3


def test_override_blesses_a_refused_model_and_keeps_every_reason():
    refused = _options(thresholds={"roc_auc": 0.9})
    overridden = _options(
        thresholds={"roc_auc": 0.9}, override=True, override_reason="INC-42: ship the fix now"
    )
    before = decide(METRICS, CLASSIFICATION, refused)
    after = decide(METRICS, CLASSIFICATION, overridden)
    assert not before.blessed and after.blessed and after.overridden
    assert after.reasons[: len(before.reasons)] == before.reasons
    assert after.override_reason == "INC-42: ship the fix now"
    assert "INC-42" in after.reasons[-1]
    document = after.model_dump()
    assert document["overridden"] and document["checks"][0]["passed"] is False


def test_an_override_of_a_passing_model_is_not_recorded_as_one():
    options = _options(thresholds={"roc_auc": 0.8}, override=True, override_reason="just in case")
    decision = decide(METRICS, CLASSIFICATION, options)
    assert decision.blessed and not decision.overridden and decision.override_reason == ""


# --- assess: real bundles, a real registry ----------------------------------------------------


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, churn):
    """A real model, and one trained on shuffled labels (no signal: genuinely worse)."""
    good = build_bundle(tmp_path_factory.mktemp("good"), churn)
    shuffled = churn.assign(churned=np.random.default_rng(0).permutation(churn["churned"]))
    worse = build_bundle(tmp_path_factory.mktemp("worse"), shuffled)
    test = split_table(churn, "churned", CLASSIFICATION, seed=0).test
    return good, worse, test


# log_loss <= 5 holds for both: only the champion comparison can tell them apart.
BOTH_PASS = {"thresholds": {"log_loss": 5.0}}


def _registry_with_champion(root, bundle_dir):
    registry = LocalRegistry(root)
    version = registry.register("churn", bundle_dir, {})
    set_alias(registry, "churn", CHAMPION, version.version)
    return registry


def _assess(bundle_dir, test, registry_root, tmp_path, **options):
    candidate = load_bundle(bundle_dir)
    return assess(
        candidate,
        test,
        Evaluation.model_validate(evaluate_bundle(candidate, test)),
        CLASSIFICATION,
        str(registry_root),
        "churn",
        _options(**options),
        str(tmp_path),
    )


def test_gate_refuses_a_challenger_worse_than_the_champion(tmp_path, bundles):
    good, worse, test = bundles
    _registry_with_champion(tmp_path / "registry", good)
    decision = _assess(worse, test, tmp_path / "registry", tmp_path, **BOTH_PASS)
    assert not decision.blessed
    champion_on_test = evaluate_bundle(load_bundle(good), test)["metrics"]
    assert decision.baseline.version == 1
    assert decision.baseline.metrics == champion_on_test  # scored on the same test rows
    failed = [c for c in decision.checks if not c.passed]
    assert [c.name for c in failed] == ["roc_auc_vs_champion"]
    assert failed[0].bound == champion_on_test["roc_auc"]
    assert any("FAIL: roc_auc" in r and "champion version 1" in r for r in decision.reasons)


def test_gate_blesses_a_challenger_better_than_the_champion(tmp_path, bundles):
    good, worse, test = bundles
    _registry_with_champion(tmp_path / "registry", worse)
    decision = _assess(good, test, tmp_path / "registry", tmp_path, **BOTH_PASS)
    assert decision.blessed, decision.reasons
    comparison = decision.checks[-1]
    assert comparison.name == "roc_auc_vs_champion" and comparison.passed
    assert comparison.value > decision.baseline.metrics["roc_auc"]


def test_gate_refuses_without_a_threshold_even_when_it_beats_the_champion(tmp_path, bundles):
    good, worse, test = bundles
    _registry_with_champion(tmp_path / "registry", worse)
    decision = _assess(good, test, tmp_path / "registry", tmp_path)
    assert not decision.blessed
    assert decision.checks[-1].passed  # it does beat the champion
    assert "no metric threshold configured" in decision.reasons[0]


def test_first_model_has_no_champion_to_beat(tmp_path, bundles):
    good, _, test = bundles
    decision = _assess(good, test, tmp_path / "empty-registry", tmp_path, **BOTH_PASS)
    assert decision.blessed and decision.baseline is None
    assert any("no champion yet" in reason for reason in decision.reasons)


def test_a_champion_with_another_input_schema_is_a_reason_not_a_crash(tmp_path, bundles, churn):
    good, _, test = bundles
    wider = churn.assign(loyalty_points=np.arange(len(churn)) % 7)
    champion = build_bundle(tmp_path / "wider", wider)
    _registry_with_champion(tmp_path / "registry", champion)
    decision = _assess(good, test, tmp_path / "registry", tmp_path, **BOTH_PASS)
    assert not decision.blessed
    assert decision.baseline.metrics is None and "loyalty_points" in decision.baseline.problem
    assert any("cannot compare with champion version 1" in r for r in decision.reasons)


def test_gate_measures_latency_and_model_size(tmp_path, bundles):
    good, _, test = bundles
    options = {**BOTH_PASS, "max_latency_ms_per_row": 1e-9, "compare_with_champion": False}
    decision = _assess(good, test, tmp_path / "registry", tmp_path, **options)
    assert decision.measured[MODEL_SIZE] == (good / MODEL_FILE).stat().st_size / 1e6
    assert decision.measured[LATENCY] > 1e-9  # no model predicts a row in a femtosecond
    assert not decision.blessed and decision.baseline is None and decision.margin is None


def test_component_writes_the_decision_even_when_nothing_passes(tmp_path, bundles):
    good, worse, test = bundles
    _registry_with_champion(tmp_path / "registry", good)
    test_path = tmp_path / "test.parquet"
    test.to_parquet(test_path, index=False)
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text(json.dumps(evaluate_bundle(load_bundle(worse), test)))
    (tmp_path / "calibration.json").write_text(Calibration().model_dump_json())
    blessing = Artifact(uri=str(tmp_path / "blessing.json"))
    blessed = gate.python_func(
        model=Model(uri=str(worse)),
        calibration=Artifact(uri=str(tmp_path / "calibration.json")),
        test=Dataset(uri=str(test_path)),
        evaluation=Artifact(uri=str(evaluation)),
        task=CLASSIFICATION,
        registry=str(tmp_path / "registry"),
        model_name="churn",
        blessing=blessing,
        options={"thresholds": {"roc_auc": 0.99}},
    )
    document = json.loads((tmp_path / "blessing.json").read_text())
    assert read_document(tmp_path / "blessing.json", Blessing).blessed is False
    assert blessed is False is document["blessed"] is blessing.metadata["blessed"]
    assert set(document) >= {"blessed", "overridden", "reasons", "checks", "thresholds"}
    assert document["baseline"]["version"] == 1 and document["baseline"]["metrics"]
    assert all(not check["passed"] for check in document["checks"])


def test_gate_refuses_to_judge_an_evaluation_of_another_threshold(tmp_path, bundles):
    """The evaluation must be of the model as served: the calibration's threshold."""
    good, _, test = bundles
    raw = load_bundle(good)
    evaluation = Evaluation.model_validate(evaluate_bundle(raw, test))  # at 0.5
    candidate = served(raw, Calibration(decision_threshold=0.3))
    with pytest.raises(LifecycleError, match=r"threshold 0\.5, but the model is served at 0\.3"):
        assess(candidate, test, evaluation, CLASSIFICATION, str(tmp_path), "churn",
               _options(**BOTH_PASS), str(tmp_path))  # fmt: skip
    matching = Evaluation.model_validate(evaluate_bundle(candidate, test))
    decision = assess(candidate, test, matching, CLASSIFICATION, str(tmp_path / "none"), "churn",
                      _options(**BOTH_PASS), str(tmp_path))  # fmt: skip
    assert decision.blessed
