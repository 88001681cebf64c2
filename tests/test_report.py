import json
import re
from pathlib import Path

import numpy as np
import pytest
from bundles import build_bundle
from html_pages import CHROMIUM, NO_CHROMIUM, Tables, chromium, sections_of
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Model
from pydantic import ValidationError

from kfp_lifecycle.components.calibrate import CalibrateOptions, calibrate_bundle
from kfp_lifecycle.components.evaluate import evaluate_bundle
from kfp_lifecycle.components.features import FeaturesOptions, fit_feature_selector
from kfp_lifecycle.components.gate import GateOptions, decide
from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.report import (
    ReportOptions,
    build_report,
    metrics_by_slice,
    pick_slice_column,
    pr_figure,
    render_evaluation_report,
    render_model_card,
    report,
    residual_figure,
)
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model
from kfp_lifecycle.core.bundle import load_bundle, write_bundle
from kfp_lifecycle.core.documents import Diagnosis, Explanation, Leaderboard, as_dict, served
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import CATEGORICAL
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION
from kfp_lifecycle.html_report import readable_feature

SECTIONS = (
    "metrics",
    "roc",
    "pr",
    "confusion",
    "calibration",
    "learning",
    "features",
    "importance",
    "tuning",
    "slices",
)

# The documents other steps produce, in their documented shapes.
DIAGNOSIS = as_dict(
    Diagnosis(
        verdict="overfitting",
        evidence=["training roc_auc 0.93 against validation 0.71"],
        suggestion="raise min_samples_leaf or add rows",
        metric="roc_auc",
        greater_is_better=True,
        baseline_score=0.5,
        skill={"train": 0.82, "validation": 0.42, "gap": 0.4},
        rules={"gap_tolerance": 0.1, "min_skill": 0.1},
        learning_curve={
            "train_sizes": [100, 250, 500, 720],
            "train_scores": [0.97, 0.94, 0.92, 0.91],
            "validation_scores": [0.61, 0.66, 0.69, 0.71],
        },
        validation_curve={
            "param": "C",
            "values": [0.001, 0.01, 0.1, 1.0, 10.0],
            "train_scores": [0.70, 0.76, 0.82, 0.88, 0.91],
            "validation_scores": [0.66, 0.70, 0.71, 0.70, 0.68],
        },
    )
)
EXPLANATION = as_dict(
    Explanation(
        permutation_importance={"tenure_months": 0.081, "support_calls": 0.046, "age": -0.002},
        permutation_importance_std={"tenure_months": 0.01, "support_calls": 0.007, "age": 0.003},
        shap_mean_abs={"tenure_months": 0.4, "support_calls": 0.3, "plan_basic": 0.1},
        method="permutation importance on test rows (roc_auc, 5 repeats)",
        metric="roc_auc",
    )
)


def _trials(family: str, seed: int) -> dict:
    values = np.random.default_rng(seed).uniform(0.64, 0.74, size=12).round(4).tolist()
    values[4] = None  # a pruned trial has no value
    return {
        "family": family,
        "metric": "roc_auc",
        "greater_is_better": True,
        "objective": "maximize",
        "default_score": values[0],
        "best_score": max(v for v in values if v is not None),
        "best_params": {"max_depth": 4, "learning_rate": 0.05},
        "budget": {"trials": 12, "timeout_seconds": 600},
        "trials": [
            {
                "number": i,
                "params": {"max_depth": 3 + i % 4},
                "value": value,
                "state": "PRUNED" if value is None else "COMPLETE",
                "duration_seconds": 0.5,
                "is_default": i == 0,
            }
            for i, value in enumerate(values)
        ],
    }


TRIALS = [_trials("xgboost", 1), _trials("random_forest", 2)]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, churn):
    """A real selected bundle, its calibration, the bundle as served (calibration applied),
    its test evaluation and gate decision."""
    root = tmp_path_factory.mktemp("report")
    build_bundle(root / "selected", churn)
    parts = split_table(churn, "churned", CLASSIFICATION, seed=0)
    selected = load_bundle(root / "selected")
    calibration, _ = calibrate_bundle(selected, parts.validation, CalibrateOptions())
    bundle = served(selected, calibration)
    evaluation = evaluate_bundle(bundle, parts.test)
    options = GateOptions(thresholds={"roc_auc": 0.6})
    blessing = decide(evaluation["metrics"], CLASSIFICATION, options, "roc_auc").model_dump()
    return (root / "selected", calibration), bundle, parts.test, evaluation, blessing


@pytest.fixture(scope="module")
def feature_reports(churn):
    """The preprocess and features reports of a table with a constant column."""
    parts = split_table(churn.assign(site="main"), "churned", CLASSIFICATION, seed=0)
    fitted, _, preprocessing = fit_preprocessor(parts.train, "churned", CLASSIFICATION)
    options = FeaturesOptions(methods=["variance", "correlation", "mutual_information"])
    _, selection = fit_feature_selector(fitted, parts.train, "churned", CLASSIFICATION, options)
    return preprocessing.to_dict(), selection.to_dict()


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_report_renders_in_a_browser_with_every_section_filled(
    tmp_path, evaluated, feature_reports
):
    _, bundle, test, evaluation, blessing = evaluated
    page, _ = build_report(
        bundle, test, evaluation, blessing, DIAGNOSIS, EXPLANATION, TRIALS, ReportOptions(),
        *feature_reports,
    )  # fmt: skip
    path = tmp_path / "report.html"
    path.write_text(page)
    dom = chromium("--dump-dom", path.as_uri(), profile=tmp_path / "profile").stdout
    sections = sections_of(dom)
    for key in SECTIONS:
        assert key in sections.text, f"section {key} missing from the rendered page"
        filled = sections.text[key].strip() or sections.images[key]
        assert filled, f"section {key} has nothing under its heading"
    for key in ("roc", "pr", "confusion", "calibration", "importance", "tuning", "slices"):
        assert sections.images[key] >= 1, f"section {key} has no figure"
    assert sections.images["learning"] == 2  # learning curve and validation curve
    # Self-contained: every reference is an in-page anchor or inline data.
    assert all(ref.startswith(("#", "data:image/png;base64,")) for ref in sections.references)
    assert not re.search(r"https?://|url\(|@import", page)
    assert "overfitting" in sections.text["learning"]
    assert "Test rows split by 'plan'" in sections.text["slices"]
    assert "site" in sections.text["features"] and "kept feature" in sections.text["features"]

    screenshot = tmp_path / "report.png"
    chromium(
        f"--screenshot={screenshot}",
        "--window-size=1280,5000",
        path.as_uri(),
        profile=tmp_path / "profile",
    )
    assert screenshot.stat().st_size > 50_000  # a drawn page, not a blank one


def test_sections_without_data_say_so(evaluated, regression, tmp_path):
    _, bundle, _, evaluation, _ = evaluated
    page = render_evaluation_report(evaluation, None, None, [], None, bundle.metadata)
    sections = sections_of(page)
    assert set(SECTIONS) <= set(sections.text)
    assert "No fit diagnosis" in sections.text["learning"]
    assert "No feature importance" in sections.text["importance"]
    assert "No hyperparameter tuning" in sections.text["tuning"]
    assert "No slice column" in sections.text["slices"]
    assert "No preprocessing or feature selection report" in sections.text["features"]

    parts = split_table(regression, "price", REGRESSION, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, "price", REGRESSION)
    trained = train_model(
        parts.train, parts.validation, "price", REGRESSION, "linear", fitted, schema
    )
    write_bundle(tmp_path / "regression", trained.pipeline, trained.metadata)
    regressor = load_bundle(tmp_path / "regression")
    result = evaluate_bundle(regressor, parts.test)
    page = render_evaluation_report(result, None, None, [], None, regressor.metadata)
    sections = sections_of(page)
    # A regression report has no empty classifier sections, and shows its residuals.
    assert not {"roc", "pr", "confusion", "calibration"} & set(sections.text)
    assert "apply to classifiers" not in page
    assert sections.images["metrics"] == 2  # predicted against actual, residuals
    assert 'alt="residuals against predicted values"' in page
    scatter = result["predicted_vs_actual"]
    (points,) = residual_figure(scatter).axes[0].collections
    residuals = np.asarray(scatter["actual"]) - np.asarray(scatter["predicted"])
    assert np.asarray(points.get_offsets())[:, 1].tolist() == pytest.approx(residuals.tolist())


def test_the_pr_legend_sits_beside_the_curve_not_on_it(evaluated):
    _, _, _, evaluation, _ = evaluated
    figure = pr_figure(evaluation, {"yes": evaluation["pr_curve"]})
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (axes,) = figure.axes
    legend = axes.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(axes.get_window_extent(renderer))


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("onehot__site_infrequent_sklearn", "site = (rare values)"),
        ("onehot__plan_pro", "plan = pro"),
        ("onehot__payment_method_bank-transfer", "payment_method = bank-transfer"),
        ("onehot__region___missing__", "region = (missing)"),
        ("numeric__missingindicator_age", "age is missing"),
        ("numeric__tenure_months", "tenure_months"),
        ("datetime__signup_date_month_sin", "signup_date_month_sin"),
    ],
)
def test_feature_names_are_said_in_the_inputs_terms(name, shown):
    columns = ["site", "plan", "payment_method", "payment", "region", "age", "signup_date"]
    assert readable_feature(name, columns) == shown


def test_features_section_lists_kept_and_dropped_features_with_reasons(evaluated, feature_reports):
    _, bundle, _, evaluation, _ = evaluated
    preprocessing, selection = feature_reports
    assert preprocessing["dropped_columns"]["site"] and selection["dropped"]  # something to show
    page = render_evaluation_report(
        evaluation, None, None, [], None, bundle.metadata, None, preprocessing, selection
    )
    tables = Tables()
    tables.feed(page)
    assert {r[0]: r[1] for r in tables.rows["dropped-columns"]} == preprocessing["dropped_columns"]
    columns = preprocessing["input_columns"]
    readable = {name: readable_feature(name, columns) for name in selection["kept"]}
    dropped = {r[0]: r[1] for r in tables.rows["dropped-features"]}
    assert list(dropped) == [readable_feature(n, columns) for n in selection["dropped"]]
    kept = tables.rows["kept-features"]
    assert [r[0] for r in kept] == list(readable.values())
    # Feature names in the input's terms, no transformer prefixes nor sklearn's own words.
    assert "__" not in page.split('id="features"')[1].split("</section>")[0]
    assert any(" = " in name for name in readable.values())
    information = selection["scores"]["mutual_information"]
    assert [float(r[1]) for r in kept] == pytest.approx(
        [information[name] for name in selection["kept"]], rel=1e-3
    )
    sections = sections_of(page)
    text = sections.text["features"]
    assert f"{len(selection['kept'])} feature(s) kept, {len(selection['dropped'])} dropped" in text
    assert "variance, correlation, mutual_information" in text


def test_slice_metrics_are_the_metrics_of_each_slices_rows(evaluated):
    _, bundle, test, evaluation, _ = evaluated
    column = pick_slice_column(bundle.schema)
    categorical = [c for c in bundle.schema.columns if c.kind == CATEGORICAL]
    assert len(next(c for c in categorical if c.name == column).categories) == min(
        len(c.categories) for c in categorical
    )
    slices = metrics_by_slice(bundle, test, column)
    assert sum(s["rows"] for s in slices["slices"]) == len(test)
    assert slices["overall"] == pytest.approx(evaluation["metrics"], nan_ok=True)
    for part in slices["slices"]:
        rows = test[test[column] == part["value"]]
        alone = evaluate_bundle(bundle, rows)["metrics"]
        assert part["metrics"]["accuracy"] == pytest.approx(alone["accuracy"])
        assert part["few_rows"] == (len(rows) < 30)


def test_a_slice_of_one_class_has_undefined_auc_not_an_error(evaluated):
    _, bundle, test, _, _ = evaluated
    test = test.copy()
    test["plan"] = np.where(test["churned"] == "yes", "pro", test["plan"])
    test.loc[test["plan"] == "pro", "churned"] = "yes"
    slices = metrics_by_slice(bundle, test, "plan")
    pro = next(s for s in slices["slices"] if s["value"] == "pro")
    assert np.isnan(pro["metrics"]["roc_auc"]) and pro["metrics"]["recall"] >= 0


def test_many_values_are_capped_and_missing_values_are_a_slice(evaluated):
    _, bundle, test, _, _ = evaluated
    test = test.copy()
    test.loc[test.index[:5], "payment_method"] = None
    slices = metrics_by_slice(bundle, test, "payment_method", max_slices=3)
    values = [s["value"] for s in slices["slices"]]
    assert len(values) == 3 and "(other)" in values
    assert sum(s["rows"] for s in slices["slices"]) == len(test)
    everything = metrics_by_slice(bundle, test, "payment_method")
    assert next(s for s in everything["slices"] if s["value"] == "(missing)")["rows"] == 5


@pytest.mark.parametrize(
    ("column", "message"), [("age", "is numeric"), ("nope", "not an input column")]
)
def test_slice_column_must_be_a_categorical_input(evaluated, column, message):
    _, bundle, test, _, _ = evaluated
    with pytest.raises(DataError, match=message):
        metrics_by_slice(bundle, test, column)


def test_model_card_states_use_data_metrics_and_limitations(evaluated):
    _, bundle, test, evaluation, blessing = evaluated
    slices = metrics_by_slice(bundle, test, "plan")
    card = render_model_card(bundle.metadata, evaluation, blessing, DIAGNOSIS, slices)
    headings = re.findall(r"^## (.+)$", card, flags=re.MULTILINE)
    assert headings == ["Intended use", "Training data", "Metrics", "Gate decision", "Limitations"]
    assert f"| roc_auc | {evaluation['metrics']['roc_auc']:.4f} | higher |" in card
    assert f"Training rows: {bundle.metadata['training_rows']}" in card
    threshold = bundle.metadata["decision_threshold"]
    assert f"at least {threshold:.4f}, chosen to maximise F1 of 'yes' on validation rows" in card
    limitations = card.split("## Limitations")[1]
    assert "Fit diagnosis: overfitting" in limitations
    assert "Weakest slice of 'plan'" in limitations
    assert ("**Blessed**" in card) is blessing["blessed"]


def test_bad_report_options_are_named():
    with pytest.raises(ValidationError, match="slice_columns"):
        ReportOptions.model_validate({"slice_columns": "plan"})


def test_component_writes_report_and_card_and_leaves_the_model(
    tmp_path, evaluated, feature_reports
):
    (selected, calibration), _, test, evaluation, blessing = evaluated
    before = {p.name: p.read_bytes() for p in selected.iterdir()}
    documents = {
        "calibration": calibration.model_dump(),
        "leaderboard": Leaderboard(primary_metric="roc_auc", scores={"linear": 0.8, "knn": 0.7}),
        "evaluation": evaluation,
        "blessing": blessing,
        "diagnosis": DIAGNOSIS,
        "explanation": {},  # produced empty: the section says there is none
        "xgboost": TRIALS[0],
        "preprocessing": feature_reports[0],
        "features": feature_reports[1],
    }
    for name, document in documents.items():
        text = document.model_dump_json() if hasattr(document, "model_dump_json") else None
        (tmp_path / f"{name}.json").write_text(text or json.dumps(document))
    test.to_parquet(tmp_path / "test.parquet", index=False)
    page, card = HTML(uri=str(tmp_path / "report.html")), Markdown(uri=str(tmp_path / "card.md"))
    report.python_func(
        model=Model(uri=str(selected)),
        calibration=Artifact(uri=str(tmp_path / "calibration.json")),
        leaderboard=Artifact(uri=str(tmp_path / "leaderboard.json")),
        test=Dataset(uri=str(tmp_path / "test.parquet")),
        evaluation=Artifact(uri=str(tmp_path / "evaluation.json")),
        blessing=Artifact(uri=str(tmp_path / "blessing.json")),
        diagnosis=Artifact(uri=str(tmp_path / "diagnosis.json")),
        explanation=Artifact(uri=str(tmp_path / "explanation.json")),
        trials=[Artifact(uri=str(tmp_path / "xgboost.json"))],
        preprocessing=Artifact(uri=str(tmp_path / "preprocessing.json")),
        features=Artifact(uri=str(tmp_path / "features.json")),
        report=page,
        model_card=card,
        options={"slice_column": "contract"},
    )
    sections = sections_of(Path(page.path).read_text())
    assert "No feature importance" in sections.text["importance"]
    assert "xgboost" in sections.text["tuning"]
    assert "split by 'contract'" in sections.text["slices"]
    assert "constant" in sections.text["features"]  # the reason preprocessing dropped 'site'
    text = Path(card.path).read_text()
    # the card describes the model as served (its calibration's threshold) and the
    # leaderboard document (knn is in no bundle's metadata)
    assert f"at least {calibration.decision_threshold:.4f}" in text
    assert "linear 0.8000, knn 0.7000" in text
    assert {p.name: p.read_bytes() for p in selected.iterdir()} == before  # never rewritten
