"""The typed documents the training steps hand each other, and the one assembly of a bundle's
metadata from them."""

import json
import math

import pytest
from bundles import build_bundle, churn_evaluation

from kfp_lifecycle.core.bundle import load_bundle
from kfp_lifecycle.core.documents import (
    Blessing,
    Calibration,
    Evaluation,
    Explanation,
    Leaderboard,
    PlattScaling,
    assembled_metadata,
    read_document,
    served,
    write_document,
)
from kfp_lifecycle.core.errors import BundleError


@pytest.fixture(scope="module")
def model(tmp_path_factory, churn):
    return load_bundle(build_bundle(tmp_path_factory.mktemp("model"), churn))


def test_an_undefined_metric_and_absent_parts_survive_the_round_trip(tmp_path):
    evaluation = churn_evaluation().model_copy(update={"metrics": {"roc_auc": math.nan}})
    write_document(tmp_path / "evaluation.json", evaluation)
    written = json.loads((tmp_path / "evaluation.json").read_text())
    assert "roc_curve" not in written and "decision_threshold" not in written  # not null
    assert math.isnan(read_document(tmp_path / "evaluation.json", Evaluation).metrics["roc_auc"])
    write_document(tmp_path / "blessing.json", Blessing(blessed=False, reasons=["FAIL"]))
    assert json.loads((tmp_path / "blessing.json").read_text())["baseline"] is None  # kept


def test_a_wrong_document_is_one_line_naming_the_file_and_the_field(tmp_path):
    path = tmp_path / "blessing.json"
    path.write_text(json.dumps({"blessed": "perhaps", "reasons": []}))
    with pytest.raises(BundleError, match=r"blessing\.json: not a valid Blessing: blessed: ") as e:
        read_document(path, Blessing)
    assert "\n" not in str(e.value)
    path.write_text(json.dumps({"blessed": True, "reasons": [], "blesed": True}))
    with pytest.raises(BundleError, match="blesed: Extra inputs are not permitted"):
        read_document(path, Blessing)
    path.write_text("{")
    with pytest.raises(BundleError, match="not a readable Blessing document"):
        read_document(path, Blessing)


def test_assembly_sets_each_documents_keys_and_replaces_a_stale_calibration(model):
    stale = {**model.metadata, "calibration": {"method": "sigmoid", "slopes": [2.0],
                                               "intercepts": [0.0]}}  # fmt: skip
    threshold_only = Calibration(decision_threshold=0.4)
    merged = assembled_metadata(
        stale,
        Leaderboard(primary_metric="roc_auc", scores={"linear": 0.8}),
        threshold_only,
        Explanation(
            method="m",
            metric="roc_auc",
            permutation_importance={"age": 0.1},
            permutation_importance_std={"age": 0.0},
        ),
        "# card\n",
    )
    assert "calibration" not in merged and merged["decision_threshold"] == 0.4
    assert merged["leaderboard"] == {"linear": 0.8} and merged["model_card"] == "# card\n"
    assert "shap_mean_abs" not in merged["explanation"]
    assert {k: v for k, v in merged.items() if k in model.metadata and k != "leaderboard"} == {
        k: v for k, v in model.metadata.items() if k not in ("leaderboard",)
    }
    with pytest.raises(BundleError, match="not a valid BundleMetadata: sha256: Field required"):
        assembled_metadata({k: v for k, v in model.metadata.items() if k != "sha256"})


def test_the_served_view_predicts_as_the_registered_bundle_will(model, churn):
    rows = churn.drop(columns=["churned"]).head(50)
    scaling = PlattScaling(slopes=[1.5], intercepts=[-0.2])
    calibration = Calibration(scaling=scaling, decision_threshold=0.3)
    view = served(model, calibration)
    assert view.pipeline is model.pipeline and "calibration" not in model.metadata
    prediction = view.predict(rows)
    raw = model.predict(rows).probabilities
    assert not (prediction.probabilities == raw).all()  # the scaling is applied
    expected = ["yes" if p >= 0.3 else "no" for p in prediction.probabilities[:, 1]]
    assert prediction.labels == expected
