import json

import numpy as np
import pytest
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Metrics, Model
from pydantic import ValidationError
from sklearn import metrics as skm

from kfp_lifecycle.components.calibrate import (
    CalibrateOptions,
    calibrate,
    calibrate_bundle,
    choose_threshold,
)
from kfp_lifecycle.components.evaluate import (
    compute_metrics,
    evaluate,
    evaluate_bundle,
    mean_absolute_percentage_error,
    reliability_curve,
)
from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model
from kfp_lifecycle.core.bundle import Prediction, load_bundle, write_bundle
from kfp_lifecycle.core.documents import Calibration, Evaluation, read_document, served
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION, metrics_for


def _bundle(directory, frame, target, task):
    parts = split_table(frame, target, task, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, target, task)
    bundle = train_model(parts.train, parts.validation, target, task, "linear", fitted, schema)
    write_bundle(directory, bundle.pipeline, bundle.metadata)
    return directory, parts


@pytest.fixture(scope="module")
def binary(tmp_path_factory, churn):
    return _bundle(tmp_path_factory.mktemp("binary"), churn, "churned", CLASSIFICATION)


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory, multiclass):
    return _bundle(tmp_path_factory.mktemp("multiclass"), multiclass, "species", CLASSIFICATION)


def test_binary_evaluation_matches_the_metrics_definitions(binary):
    directory, parts = binary
    bundle = load_bundle(directory)
    result = evaluate_bundle(bundle, parts.test)
    metrics = result["metrics"]
    assert sorted(metrics) == sorted(metrics_for(CLASSIFICATION))
    y = (parts.test["churned"] == "yes").to_numpy()
    p = bundle.predict(parts.test.drop(columns=["churned"])).probabilities[:, 1]
    assert metrics["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert metrics["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert metrics["f1_weighted"] == pytest.approx(
        skm.f1_score(parts.test["churned"], np.where(p >= 0.5, "yes", "no"), average="weighted")
    )
    curve = result["calibration"]
    assert sum(curve["count"]) == len(parts.test)
    gaps = np.abs(np.subtract(curve["observed"], curve["mean_predicted"]))
    assert metrics["calibration_error"] == pytest.approx(
        np.dot(curve["count"], gaps) / len(parts.test)
    )
    pr = result["pr_curve"]
    assert pr["prevalence"] == pytest.approx(y.mean())
    assert pr["recall"][0] == 1.0 and pr["recall"][-1] == 0.0
    assert result["roc_curve"]["auc"] == pytest.approx(metrics["roc_auc"])
    assert result["decision_threshold"] == 0.5


def test_multiclass_evaluation_has_one_vs_rest_curves_and_the_multiclass_brier(three_classes):
    directory, parts = three_classes
    bundle = load_bundle(directory)
    result = evaluate_bundle(bundle, parts.test)
    prediction = bundle.predict(parts.test.drop(columns=["species"]))
    y = parts.test["species"].to_numpy()
    truth = np.column_stack([y == c for c in bundle.classes]).astype(float)
    # The multi-class Brier score sums over classes (0..2); it is not halved.
    expected = np.mean(np.sum((prediction.probabilities - truth) ** 2, axis=1))
    assert result["metrics"]["brier"] == pytest.approx(expected)
    assert sorted(result["roc_curves"]) == sorted(bundle.classes) == sorted(result["pr_curves"])
    per_class = [
        skm.roc_auc_score(y == label, prediction.probabilities[:, i])
        for i, label in enumerate(bundle.classes)
    ]
    assert [result["roc_curves"][c]["auc"] for c in bundle.classes] == pytest.approx(per_class)
    assert result["metrics"]["roc_auc"] == pytest.approx(np.mean(per_class))
    assert result["calibration"]["kind"] == "top-class probability"
    assert sum(result["calibration"]["count"]) == len(parts.test)
    assert "roc_curve" not in result and "decision_threshold" not in result


def test_ranking_metrics_are_nan_not_an_error_when_a_class_has_no_row():
    prediction = Prediction(["a", "a"], np.array([[0.7, 0.3], [0.6, 0.4]]), ["a", "b"])
    metrics = compute_metrics(CLASSIFICATION, ["a", "a"], prediction)
    assert np.isnan(metrics["roc_auc"]) and np.isnan(metrics["pr_auc"])
    assert metrics["accuracy"] == 1.0


def test_calibration_error_tells_calibrated_from_overconfident_probabilities():
    rng = np.random.default_rng(0)
    probability = rng.uniform(size=20_000)
    outcome = rng.uniform(size=20_000) < probability
    calibrated = reliability_curve(outcome, probability)
    overconfident = reliability_curve(outcome, np.where(probability > 0.5, 0.99, 0.01))
    assert calibrated["expected_calibration_error"] < 0.02
    assert overconfident["expected_calibration_error"] > 0.2
    assert np.allclose(calibrated["observed"], calibrated["mean_predicted"], atol=0.05)


def test_mape_leaves_out_zero_targets_and_is_nan_without_any_other():
    y = np.array([0.0, 100.0, 200.0, -50.0])
    predicted = np.array([3.0, 110.0, 180.0, -40.0])
    nonzero = y != 0
    expected = np.mean(np.abs(predicted[nonzero] - y[nonzero]) / np.abs(y[nonzero]))
    assert mean_absolute_percentage_error(y, predicted) == pytest.approx(expected)
    assert skm.mean_absolute_percentage_error(y, predicted) > 1e6  # what the guard avoids
    assert np.isnan(mean_absolute_percentage_error(np.zeros(3), predicted[:3]))


def test_regression_evaluation_notes_zero_targets(tmp_path, regression):
    directory, parts = _bundle(tmp_path, regression, "price", REGRESSION)
    test = parts.test.copy()
    test.iloc[:3, test.columns.get_loc("price")] = 0.0
    result = evaluate_bundle(load_bundle(directory), test)
    assert sorted(result["metrics"]) == sorted(metrics_for(REGRESSION))
    assert result["notes"] == ["mape leaves out 3 row(s) whose target is 0"]
    assert np.isfinite(result["metrics"]["mape"])
    assert len(result["predicted_vs_actual"]["actual"]) == len(test)


def _scores(rows=400, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.uniform(size=rows) < 0.3
    scores = np.clip(0.3 * y + rng.normal(0.35, 0.18, size=rows), 0, 1).round(3)  # with ties
    return np.where(y, "pos", "neg"), scores


def _at(threshold, y, scores):
    predicted = scores >= threshold
    positive = y == "pos"
    false_positives = int(np.sum(predicted & ~positive))
    false_negatives = int(np.sum(~predicted & positive))
    return skm.f1_score(positive, predicted), false_positives, false_negatives


def test_f1_threshold_is_the_best_achievable_on_validation():
    y, scores = _scores()
    threshold, evidence = choose_threshold(y, scores, "pos", "f1")
    # Every labelling a threshold can give is "score >= one of the scores" (or none positive).
    best = max(_at(t, y, scores)[0] for t in np.unique(scores))
    f1, false_positives, false_negatives = _at(threshold, y, scores)
    assert f1 == pytest.approx(best)
    assert evidence["at_threshold"]["f1"] == pytest.approx(f1)
    assert evidence["at_threshold"]["false_positives"] == false_positives
    assert evidence["at_threshold"]["false_negatives"] == false_negatives
    assert evidence["at_default"]["f1"] == pytest.approx(_at(0.5, y, scores)[0])
    assert threshold not in set(scores)  # midway between scores, not on a row's own score


def test_cost_threshold_minimises_the_configured_cost():
    y, scores = _scores()

    def cost(threshold, fp_cost, fn_cost):
        _, false_positives, false_negatives = _at(threshold, y, scores)
        return fp_cost * false_positives + fn_cost * false_negatives

    chosen = {}
    for fp_cost, fn_cost in ((1.0, 10.0), (10.0, 1.0)):
        costs = {"false_positive": fp_cost, "false_negative": fn_cost}
        threshold, evidence = choose_threshold(y, scores, "pos", "cost", costs)
        lowest = min(cost(t, fp_cost, fn_cost) for t in [*np.unique(scores), 1.01])
        assert cost(threshold, fp_cost, fn_cost) == lowest == evidence["at_threshold"]["cost"]
        chosen[fn_cost] = threshold
    assert chosen[10.0] < chosen[1.0]  # costly misses: flag more rows


def test_fixed_threshold_is_kept_and_one_class_is_refused():
    y, scores = _scores()
    assert choose_threshold(y, scores, "pos", "fixed", fixed=0.42)[0] == 0.42
    with pytest.raises(DataError, match="needs both classes"):
        choose_threshold(np.full(10, "neg"), np.linspace(0, 1, 10), "pos", "f1")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"strategy": "youden"}, "strategy"),
        ({"treshold": 0.3}, "treshold"),
        ({"fixed_threshold": 1.5}, "fixed_threshold"),
        ({"strategy": "cost", "cost_false_positive": 0, "cost_false_negative": 0}, "cost_false"),
    ],
)
def test_bad_calibrate_options_are_named(options, field):
    with pytest.raises(ValidationError, match=field):
        CalibrateOptions.model_validate(options)


def test_calibration_sets_the_threshold_that_serving_applies_and_leaves_the_model(binary):
    directory, parts = binary
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    calibration, report = calibrate_bundle(
        load_bundle(directory), parts.validation, CalibrateOptions(strategy="f1")
    )
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before  # model untouched
    threshold = calibration.decision_threshold
    assert threshold == report["threshold"] != 0.5
    assert calibration.threshold_selection["threshold"] == threshold
    assert "curve" not in calibration.threshold_selection  # the curve stays in the report
    bundle = served(load_bundle(directory), calibration)
    assert bundle.metadata["decision_threshold"] == threshold
    prediction = bundle.predict(parts.test.drop(columns=["churned"]))
    expected = np.where(prediction.probabilities[:, 1] >= threshold, "yes", "no")
    assert prediction.labels == expected.tolist()
    assert evaluate_bundle(bundle, parts.test)["decision_threshold"] == threshold


def test_multiclass_bundle_gets_no_threshold_only_a_calibration(three_classes):
    directory, parts = three_classes
    model = load_bundle(directory)
    calibration, report = calibrate_bundle(
        model, parts.validation, CalibrateOptions(calibrate=False)
    )
    assert not report["applied"] and "binary" in report["reason"]
    assert calibration == Calibration() and served(model, calibration).metadata == model.metadata
    calibration, report = calibrate_bundle(model, parts.validation, CalibrateOptions())
    assert calibration.decision_threshold is None
    assert (calibration.scaling is not None) is report["calibration"]["applied"]
    assembled = served(model, calibration).metadata
    assert ("calibration" in assembled) is report["calibration"]["applied"]
    assert {k: v for k, v in assembled.items() if k != "calibration"} == model.metadata


def test_threshold_component_writes_the_calibration_and_its_evidence(tmp_path, binary):
    directory, parts = binary
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    validation = tmp_path / "validation.parquet"
    parts.validation.to_parquet(validation, index=False)
    calibration = Artifact(uri=str(tmp_path / "calibration.json"))
    calibrate.python_func(
        model=Model(uri=str(directory)),
        validation=Dataset(uri=str(validation)),
        calibration=calibration,
        report=Artifact(uri=str(tmp_path / "threshold.json")),
        options={"strategy": "cost", "cost_false_negative": 20.0},
    )
    evidence = json.loads((tmp_path / "threshold.json").read_text())
    assert evidence["strategy"] == "cost" and evidence["costs"]["false_negative"] == 20.0
    chosen = read_document(calibration.path, Calibration)
    assert chosen.decision_threshold == evidence["threshold"]
    assert calibration.metadata["decision_threshold"] == evidence["threshold"]
    assert evidence["at_threshold"]["cost"] <= evidence["at_default"]["cost"]
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


def test_evaluation_refuses_rows_without_the_target(binary):
    directory, parts = binary
    with pytest.raises(DataError, match="target column 'churned'"):
        evaluate_bundle(load_bundle(directory), parts.test.drop(columns=["churned"]))


def _run_evaluate(tmp_path, directory, test, calibration: Calibration | None = None):
    """The evaluate component's own body, with the KFP artifacts the dashboard reads."""
    rows = tmp_path / "test.parquet"
    test.to_parquet(rows, index=False)
    (tmp_path / "calibration.json").write_text((calibration or Calibration()).model_dump_json())
    metrics, classification = Metrics(uri=str(tmp_path / "m")), ClassificationMetrics(uri="")
    evaluate.python_func(
        model=Model(uri=str(directory)),
        calibration=Artifact(uri=str(tmp_path / "calibration.json")),
        test=Dataset(uri=str(rows)),
        metrics=metrics,
        classification_metrics=classification,
        evaluation=Artifact(uri=str(tmp_path / "evaluation.json")),
    )
    read_document(tmp_path / "evaluation.json", Evaluation)  # a valid Evaluation
    return metrics, classification, json.loads((tmp_path / "evaluation.json").read_text())


def test_the_dashboard_gets_every_finite_metric_the_confusion_matrix_and_the_roc(tmp_path, binary):
    directory, parts = binary
    metrics, classification, written = _run_evaluate(tmp_path, directory, parts.test)
    finite = {k: v for k, v in written["metrics"].items() if np.isfinite(v)}
    assert metrics.metadata == pytest.approx(finite) and "roc_auc" in metrics.metadata
    matrix = classification.metadata["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == ["no", "yes"]
    assert sum(map(sum, (row["row"] for row in matrix["rows"]))) == len(parts.test)
    assert [row["row"] for row in matrix["rows"]] == written["confusion_matrix"]["matrix"]
    roc = classification.metadata["confidenceMetrics"]
    assert len(roc) == len(written["roc_curve"]["fpr"])
    assert {point["recall"] for point in roc} >= {0.0, 1.0}


def test_evaluate_judges_the_model_with_its_calibration_applied(tmp_path, binary):
    """The evaluation is of the served behaviour: the calibration's threshold decides."""
    directory, parts = binary
    everything_positive = Calibration(decision_threshold=0.0)
    _, _, written = _run_evaluate(tmp_path, directory, parts.test, everything_positive)
    assert written["decision_threshold"] == 0.0
    assert written["metrics"]["recall"] == 1.0
    assert written["confusion_matrix"]["matrix"][0][0] == 0  # no row is predicted "no"


def test_multiclass_gets_a_confusion_matrix_and_no_binary_roc(tmp_path, three_classes):
    """KFP's ROC artifact is binary; the one-vs-rest curves are in the evaluation report."""
    directory, parts = three_classes
    _, classification, written = _run_evaluate(tmp_path, directory, parts.test)
    matrix = classification.metadata["confusionMatrix"]
    assert len(matrix["annotationSpecs"]) == 3 == len(written["roc_curves"])
    assert "confidenceMetrics" not in classification.metadata
