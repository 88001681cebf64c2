"""`:explain` returns additive contributions that reproduce the model's own raw score."""

import json

import httpx
import numpy as np
import pytest
from bundles import build_bundle

from kfp_lifecycle.core.bundle import load_bundle
from kfp_lifecycle.serving.explain import NotExplainable, explain_rows
from kfp_lifecycle.serving.server import served_name


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, churn):
    return {
        family: build_bundle(tmp_path_factory.mktemp(family), churn, family)
        for family in ("xgboost", "linear", "random_forest")
    }


def _raw_scores(bundle, frame):
    features = bundle.pipeline[:-1].transform(frame)
    estimator = bundle.pipeline[-1]
    if bundle.metadata["family"] == "xgboost":
        return estimator.predict(features, output_margin=True)
    return estimator.decision_function(features)


@pytest.mark.parametrize("family", ["xgboost", "linear"])
def test_contributions_add_up_to_the_raw_score(bundles, churn, family):
    bundle = load_bundle(bundles[family])
    rows = churn.drop(columns=["churned"]).head(6)
    explanations = explain_rows(bundle, rows, top=10_000)
    expected = _raw_scores(bundle, rows)
    for explanation, raw in zip(explanations, expected, strict=True):
        total = explanation["bias"] + sum(explanation["contributions"].values())
        assert total == pytest.approx(float(raw), abs=1e-4)
        assert explanation["raw_score"] == pytest.approx(float(raw), abs=1e-4)
    top = explain_rows(bundle, rows.head(1))[0]["contributions"]
    assert len(top) == 10
    magnitudes = [abs(v) for v in top.values()]
    assert magnitudes == sorted(magnitudes, reverse=True)


def test_other_families_say_they_cannot_explain(bundles, churn):
    with pytest.raises(NotExplainable, match="RandomForestClassifier has no per-prediction"):
        explain_rows(load_bundle(bundles["random_forest"]), churn.head(1))


@pytest.mark.serving
def test_explain_endpoint(bundles, churn, start_server):
    rows = json.loads(churn.drop(columns=["churned"]).head(2).to_json(orient="records"))
    xgb = start_server(bundles["xgboost"], served_name(bundles["xgboost"]))
    response = httpx.post(
        f"{xgb.url}/v1/models/{xgb.name}:explain",
        json={"instances": rows},
        headers={"x-request-id": "explain-7"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"] == "explain-7"  # like every other answer
    anonymous = httpx.post(
        f"{xgb.url}/v1/models/{xgb.name}:explain", json={"instances": rows}, timeout=30
    )
    assert len(anonymous.json()["request_id"]) == 36  # a new UUID
    new = httpx.post(
        f"{xgb.url}/v1/models/{xgb.name}:explain",
        json={"instances": [rows[0], {**rows[1], "plan": "platinum"}]},
        timeout=30,
    )
    assert new.status_code == 200 and len(new.json()["explanations"]) == 2
    assert [(w["row"], w["value"]) for w in new.json()["warnings"]] == [(1, "platinum")]
    assert len(body["explanations"]) == 2 and len(body["predictions"]) == 2
    forest = start_server(bundles["random_forest"], served_name(bundles["random_forest"]))
    refused = httpx.post(
        f"{forest.url}/v1/models/{forest.name}:explain", json={"instances": rows}, timeout=30
    )
    assert refused.status_code == 400 and "no per-prediction explanation" in refused.text
    assert np.isfinite(body["explanations"][0]["raw_score"])
