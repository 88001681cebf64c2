"""Serving: the payload conversions as plain functions, then KServe's real server in a subprocess.

The server's answers are compared with `load_bundle(dir).predict(...)` on the same rows, so the
served model and the bundle cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from kserve import InferInput, InferRequest
from kserve.errors import InvalidInput
from server_process import READY_TIMEOUT_SECONDS, Server, free_port, server_command
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from kfp_lifecycle.core.bundle import MODEL_FILE, Bundle, Prediction, load_bundle, write_bundle
from kfp_lifecycle.core.errors import BundleError
from kfp_lifecycle.core.schema import InputSchema, infer_schema
from kfp_lifecycle.registry import model_version_of
from kfp_lifecycle.serving.model import (
    INPUT_DATATYPE,
    BundleModel,
    records_frame,
    v1_records,
    v1_response,
    v2_records,
    v2_response,
)
from kfp_lifecycle.serving.server import serve, served_name

ROWS: list[dict[str, Any]] = [
    {"age": 41, "plan": "pro"},
    {"age": None, "plan": "basic"},
    {"age": 23.5, "plan": "team"},
    {"age": 67, "plan": "basic"},
]


def _features() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 120
    age = rng.integers(18, 80, n).astype(float)
    age[::9] = np.nan
    plan = rng.choice(["basic", "pro", "team"], n)
    return pd.DataFrame({"age": age, "plan": plan})


def _preprocessor() -> ColumnTransformer:
    numeric = make_pipeline(SimpleImputer(), StandardScaler())
    categorical = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing"),
        OneHotEncoder(handle_unknown="ignore"),
    )
    return ColumnTransformer([("num", numeric, ["age"]), ("cat", categorical, ["plan"])])


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = _features()
    young = frame["age"].fillna(45) < 45
    frame["churn"] = np.where(young ^ (frame["plan"] == "pro"), "yes", "no")
    schema = infer_schema(frame, "churn")
    classes = sorted(frame["churn"].unique().tolist())
    labels = frame["churn"].map(classes.index)
    pipeline = Pipeline([("pre", _preprocessor()), ("model", LogisticRegression())])
    pipeline.fit(schema.coerce(frame), labels)
    directory = tmp_path_factory.mktemp("bundles") / "classifier"
    write_bundle(
        directory,
        pipeline,
        {
            "task": "classification",
            "target": "churn",
            "family": "linear",
            "classes": classes,
            "input_schema": schema.to_dict(),
            "model_name": "toy",
        },
    )
    return directory


@pytest.fixture(scope="module")
def regressor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = _features()
    frame["spend"] = 3.0 * frame["age"].fillna(40) + frame["plan"].map(
        {"basic": 0.0, "pro": 50.0, "team": 20.0}
    )
    schema = infer_schema(frame, "spend")
    pipeline = Pipeline([("pre", _preprocessor()), ("model", LinearRegression())])
    pipeline.fit(schema.coerce(frame), frame["spend"])
    directory = tmp_path_factory.mktemp("bundles") / "Spend_Model"
    write_bundle(
        directory,
        pipeline,
        {
            "task": "regression",
            "target": "spend",
            "family": "linear",
            "input_schema": schema.to_dict(),
        },
    )
    return directory


@pytest.fixture(scope="module")
def tampered_dir(classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bundles") / "tampered"
    shutil.copytree(classifier_dir, directory)
    model_file = directory / MODEL_FILE
    content = bytearray(model_file.read_bytes())
    content[len(content) // 2] ^= 0xFF
    model_file.write_bytes(bytes(content))
    return directory


def _expected(directory: Path, rows: list[dict[str, Any]]) -> Prediction:
    bundle: Bundle = load_bundle(directory)
    return bundle.predict(bundle.schema.records_to_frame(rows))


def _v2_inputs(rows: list[dict[str, Any]], schema: InputSchema) -> list[dict[str, Any]]:
    return [
        {
            "name": column.name,
            "shape": [len(rows)],
            "datatype": INPUT_DATATYPE[column.kind],
            "data": [row[column.name] for row in rows],
        }
        for column in schema.columns
    ]


def _probabilities_v1(body: dict[str, Any], classes: list[str]) -> np.ndarray:
    return np.array([[row[c] for c in classes] for row in body["probabilities"]])


def _output(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(output for output in body["outputs"] if output["name"] == name)


# Plain functions: no server.


def test_v1_records_returns_the_instances() -> None:
    assert v1_records({"instances": ROWS}) == ROWS


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ({"rows": ROWS}, '"instances"'),
        ({"instances": {"age": 41}}, '"instances" must be a list'),
        ({"instances": []}, '"instances" is empty'),
        (b"age=41", '"instances"'),
        (ROWS, '"instances"'),
    ],
)
def test_v1_records_rejects_malformed_payloads(payload: Any, named: str) -> None:
    with pytest.raises(InvalidInput, match=named):
        v1_records(payload)


@pytest.mark.parametrize(
    ("record", "named"),
    [
        ({"plan": "pro"}, "record 0 is missing field(s): age"),
        ({"age": "forty", "plan": "pro"}, "record 0, field 'age': expected a number"),
        ({"age": 41, "plan": ["pro"]}, "record 0, field 'plan'"),
    ],
)
def test_records_frame_turns_schema_errors_into_invalid_input(
    classifier_dir: Path, record: dict[str, Any], named: str
) -> None:
    schema = load_bundle(classifier_dir).schema
    with pytest.raises(InvalidInput) as raised:
        records_frame([record], schema)
    assert named in str(raised.value)


def test_v2_records_reads_one_tensor_per_column(classifier_dir: Path) -> None:
    schema = load_bundle(classifier_dir).schema
    request = InferRequest(
        "toy",
        [
            InferInput("plan", [2, 1], "BYTES", [[b"pro"], ["basic"]]),
            InferInput("age", [2], "FP64", [41.0, None]),
            InferInput("customer_id", [2], "INT64", [7, 8]),
        ],
    )
    assert v2_records(request, schema) == [
        {"age": 41.0, "plan": "pro"},
        {"age": None, "plan": "basic"},
    ]


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        (
            [InferInput("age", [1], "BYTES", ["forty"]), InferInput("plan", [1], "BYTES", ["pro"])],
            "input 'age': datatype BYTES does not fit a numeric column",
        ),
        ([InferInput("age", [1], "FP64", [41.0])], "missing input tensor(s): plan"),
        (
            [
                InferInput("age", [2], "FP64", [41.0, 3.0]),
                InferInput("plan", [1], "BYTES", ["pro"]),
            ],
            "differ in length: age=2, plan=1",
        ),
        (
            [
                InferInput("age", [1, 2], "FP64", [41.0, 3.0]),
                InferInput("plan", [1], "BYTES", ["a"]),
            ],
            "input 'age' has shape [1, 2]",
        ),
        (
            [InferInput("age", [2], "FP64", [41.0]), InferInput("plan", [1], "BYTES", ["pro"])],
            "input 'age' has 1 value(s) but its shape says 2",
        ),
        (
            [InferInput("age", [0], "FP64", []), InferInput("plan", [0], "BYTES", [])],
            "input tensors are empty",
        ),
    ],
)
def test_v2_records_rejects_malformed_tensors(
    classifier_dir: Path, inputs: list[InferInput], named: str
) -> None:
    schema = load_bundle(classifier_dir).schema
    with pytest.raises(InvalidInput) as raised:
        v2_records(InferRequest("toy", inputs), schema)
    assert named in str(raised.value)


def test_responses_carry_labels_probabilities_and_version(classifier_dir: Path) -> None:
    prediction = _expected(classifier_dir, ROWS)
    v1 = v1_response(prediction, "3")
    assert v1["predictions"] == prediction.labels
    assert v1["model_version"] == "3"
    np.testing.assert_array_equal(
        _probabilities_v1(v1, prediction.classes), prediction.probabilities
    )

    v2, _ = v2_response(prediction, "toy", "3", InferRequest("toy", [], request_id="r1")).to_rest()
    assert (v2["id"], v2["model_name"], v2["model_version"]) == ("r1", "toy", "3")
    labels = _output(v2, "predictions")
    assert (labels["datatype"], labels["shape"], labels["data"]) == (
        "BYTES",
        [len(ROWS)],
        prediction.labels,
    )
    probabilities = _output(v2, "probabilities")
    assert probabilities["shape"] == [len(ROWS), 2]
    assert json.loads(probabilities["parameters"]["classes"]) == prediction.classes
    np.testing.assert_array_equal(
        np.reshape(probabilities["data"], probabilities["shape"]), prediction.probabilities
    )


def test_regression_responses_have_no_probabilities(regressor_dir: Path) -> None:
    prediction = _expected(regressor_dir, ROWS)
    assert "probabilities" not in v1_response(prediction, "1")
    v2, _ = v2_response(prediction, "spend", "1", InferRequest("spend", [])).to_rest()
    assert [o["name"] for o in v2["outputs"]] == ["predictions"]
    assert _output(v2, "predictions")["datatype"] == "FP64"


def test_bundle_model_predicts_v1_and_v2_in_process(classifier_dir: Path) -> None:
    model = BundleModel("toy", str(classifier_dir))
    assert model.load() and model.ready
    expected = _expected(classifier_dir, ROWS)
    assert model.predict({"instances": ROWS})["predictions"] == expected.labels
    request = InferRequest(
        "toy", [InferInput(**spec) for spec in _v2_inputs(ROWS, model.bundle.schema)]
    )
    response, _ = model.predict(request).to_rest()
    assert _output(response, "predictions")["data"] == expected.labels


def test_model_version_prefers_the_registry_version() -> None:
    assert model_version_of({"registry_version": 4, "sha256": "ab" * 32}) == "4"
    assert model_version_of({"sha256": "0123456789abcdef"}) == "0123456789ab"


def test_served_name_is_sanitized(classifier_dir: Path, regressor_dir: Path) -> None:
    assert served_name(classifier_dir) == "toy"
    assert served_name(regressor_dir) == "spend-model"
    assert served_name(classifier_dir, "Churn Model v2") == "churn-model-v2"


def test_tampered_bundle_is_refused_before_serving(tampered_dir: Path) -> None:
    model = BundleModel("toy", str(tampered_dir))
    with pytest.raises(BundleError, match="sha256"):
        model.load()
    assert not model.ready
    with pytest.raises(BundleError, match="sha256"):
        serve(str(tampered_dir), port=free_port())


# The real server, started as `lifecycle serve` would start it.


@pytest.fixture(scope="module")
def classifier_server(start_server: Callable[..., Server], classifier_dir: Path) -> Server:
    return start_server(classifier_dir, "toy")


@pytest.fixture(scope="module")
def regressor_server(start_server: Callable[..., Server], regressor_dir: Path) -> Server:
    return start_server(regressor_dir, "spend-model")


def _v1(server: Server, body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/{server.name}:predict", json=body, timeout=10)


def _v2(server: Server, body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{server.name}/infer", json=body, timeout=10)


@pytest.mark.serving
def test_server_prints_its_urls(classifier_server: Server) -> None:
    output = classifier_server.log.read_text()
    assert "serving model 'toy'" in output
    for path in ("/v1/models/toy:predict", "/v2/models/toy/infer", "/v2/health/ready", "/metrics"):
        assert f"http://localhost:{classifier_server.port}{path}" in output


@pytest.mark.serving
def test_v1_matches_the_bundle(classifier_server: Server, classifier_dir: Path) -> None:
    expected = _expected(classifier_dir, ROWS)
    response = _v1(classifier_server, {"instances": ROWS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predictions"] == expected.labels
    assert body["model_version"] == load_bundle(classifier_dir).metadata["sha256"][:12]
    np.testing.assert_allclose(
        _probabilities_v1(body, expected.classes), expected.probabilities, rtol=1e-12
    )


@pytest.mark.serving
def test_v2_matches_the_bundle(classifier_server: Server, classifier_dir: Path) -> None:
    expected = _expected(classifier_dir, ROWS)
    schema = load_bundle(classifier_dir).schema
    response = _v2(classifier_server, {"id": "q1", "inputs": _v2_inputs(ROWS, schema)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "q1"
    assert _output(body, "predictions")["data"] == expected.labels
    probabilities = _output(body, "probabilities")
    assert json.loads(probabilities["parameters"]["classes"]) == expected.classes
    np.testing.assert_allclose(
        np.reshape(probabilities["data"], probabilities["shape"]),
        expected.probabilities,
        rtol=1e-12,
    )


BAD_V1_BODIES = [
    pytest.param({"instances": [{"plan": "pro"}]}, "missing field(s): age", id="missing-field"),
    pytest.param(
        {"instances": [{"age": "forty", "plan": "pro"}]},
        "field 'age': expected a number",
        id="string-for-number",
    ),
    pytest.param({"instances": []}, '"instances" is empty', id="empty-batch"),
    pytest.param({"instances": {"age": 41}}, '"instances"', id="instances-not-a-list"),
    pytest.param({"rows": ROWS}, '"instances"', id="no-instances"),
]


@pytest.mark.serving
@pytest.mark.parametrize(("body", "named"), BAD_V1_BODIES)
def test_v1_bad_requests_get_a_400_naming_the_problem(
    classifier_server: Server, body: Any, named: str
) -> None:
    response = _v1(classifier_server, body)
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]


@pytest.mark.serving
def test_invalid_json_gets_a_4xx(classifier_server: Server) -> None:
    headers = {"content-type": "application/json"}
    v1 = httpx.post(
        f"{classifier_server.url}/v1/models/toy:predict", content=b"{not json", headers=headers
    )
    assert v1.status_code == 400
    assert "Unrecognized request format" in v1.json()["error"]
    v2 = httpx.post(
        f"{classifier_server.url}/v2/models/toy/infer", content=b"{not json", headers=headers
    )
    assert 400 <= v2.status_code < 500
    assert "JSON decode error" in v2.text


BAD_V2_INPUTS = [
    pytest.param(
        [{"name": "age", "shape": [1], "datatype": "FP64", "data": [41.0]}],
        "missing input tensor(s): plan",
        id="missing-field",
    ),
    pytest.param(
        [
            {"name": "age", "shape": [0], "datatype": "FP64", "data": []},
            {"name": "plan", "shape": [0], "datatype": "BYTES", "data": []},
        ],
        "input tensors are empty",
        id="empty-batch",
    ),
]


@pytest.mark.serving
@pytest.mark.parametrize(("inputs", "named"), BAD_V2_INPUTS)
def test_v2_bad_requests_get_a_400_naming_the_problem(
    classifier_server: Server, inputs: list[dict[str, Any]], named: str
) -> None:
    response = _v2(classifier_server, {"inputs": inputs})
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]


@pytest.mark.serving
def test_v2_wrongly_typed_input_gets_a_400(classifier_server: Server) -> None:
    inputs = [
        {"name": "age", "shape": [1], "datatype": "BYTES", "data": ["forty"]},
        {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
    ]
    response = _v2(classifier_server, {"inputs": inputs})
    assert response.status_code == 400
    assert "input 'age'" in response.json()["error"]


@pytest.mark.serving
def test_server_still_answers_after_bad_requests(
    classifier_server: Server, classifier_dir: Path
) -> None:
    assert _v1(classifier_server, {"instances": [{"plan": "pro"}]}).status_code == 400
    assert _v1(classifier_server, {"instances": "nope"}).status_code == 400
    response = _v1(classifier_server, {"instances": ROWS})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == _expected(classifier_dir, ROWS).labels
    assert httpx.get(f"{classifier_server.url}/v2/health/ready").status_code == 200


@pytest.mark.serving
def test_regression_server_matches_the_bundle(
    regressor_server: Server, regressor_dir: Path
) -> None:
    expected = _expected(regressor_dir, ROWS)
    v1_reply = _v1(regressor_server, {"instances": ROWS})
    assert v1_reply.status_code == 200, v1_reply.text
    v1 = v1_reply.json()
    assert "probabilities" not in v1
    np.testing.assert_allclose(v1["predictions"], expected.labels, rtol=1e-12)
    schema = load_bundle(regressor_dir).schema
    v2_reply = _v2(regressor_server, {"inputs": _v2_inputs(ROWS, schema)})
    assert v2_reply.status_code == 200, v2_reply.text
    v2 = v2_reply.json()
    assert [o["name"] for o in v2["outputs"]] == ["predictions"]
    np.testing.assert_allclose(_output(v2, "predictions")["data"], expected.labels, rtol=1e-12)


@pytest.mark.serving
def test_tampered_bundle_exits_nonzero_without_serving(tampered_dir: Path) -> None:
    port = free_port()
    result = subprocess.run(
        server_command(tampered_dir, port),
        capture_output=True,
        text=True,
        timeout=READY_TIMEOUT_SECONDS,
    )
    assert result.returncode != 0
    assert "sha256" in result.stderr
    assert "Uvicorn running" not in result.stdout + result.stderr


@pytest.mark.serving
def test_metrics_count_outcomes_and_classes_by_model_version(
    classifier_server: Server, classifier_dir: Path
) -> None:
    assert _v1(classifier_server, {"instances": ROWS}).status_code == 200
    assert _v1(classifier_server, {"instances": [{"plan": "pro"}]}).status_code == 400
    metrics = httpx.get(f"{classifier_server.url}/metrics", timeout=10).text
    version = model_version_of(load_bundle(classifier_dir).metadata)
    prefix = f'model_name="toy",model_version="{version}"'
    ok = _sample(metrics, f'kfp_lifecycle_requests_total{{{prefix},outcome="ok"}}')
    rejected = _sample(metrics, f'kfp_lifecycle_requests_total{{{prefix},outcome="rejected"}}')
    assert ok >= 1 and rejected >= 1
    labelled = [
        line for line in metrics.splitlines() if line.startswith("kfp_lifecycle_predictions_total{")
    ]
    assert labelled and all(prefix in line for line in labelled)
    assert "request_predict_seconds" in metrics  # KServe's own


def _sample(metrics: str, series: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not exported")


@pytest.mark.serving
def test_oversized_body_gets_413_and_the_server_stays_up(classifier_server: Server) -> None:
    padding = "x" * (11 * 1024 * 1024)
    body = json.dumps({"instances": ROWS, "padding": padding})
    response = httpx.post(
        f"{classifier_server.url}/v1/models/{classifier_server.name}:predict",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert "larger than the limit" in response.json()["error"]
    assert _v1(classifier_server, {"instances": ROWS}).status_code == 200


def test_streamed_body_over_the_limit_is_cut_off() -> None:
    """A chunked body (no content-length) is counted as it arrives."""
    import asyncio

    from kfp_lifecycle.serving.limits import BodySizeLimit

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def call(chunks: list[bytes]) -> int:
        messages = iter(
            [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
            + [{"type": "http.request", "body": b"", "more_body": False}]
        )
        sent = []

        async def receive():
            return next(messages)

        async def send(message):
            sent.append(message)

        await BodySizeLimit(app, max_bytes=100)({"type": "http", "headers": []}, receive, send)
        return sent[0]["status"]

    assert asyncio.run(call([b"x" * 60])) == 200
    assert asyncio.run(call([b"x" * 60, b"x" * 60])) == 413


@pytest.mark.serving
def test_unseen_category_is_served_with_a_warning_naming_it(
    classifier_server: Server, classifier_dir: Path
) -> None:
    row = {**ROWS[0], "plan": "platinum"}
    response = _v1(classifier_server, {"instances": [ROWS[0], row]})
    assert response.status_code == 200, response.text
    (warning,) = response.json()["warnings"]
    assert (warning["row"], warning["field"], warning["value"]) == (1, "plan", "platinum")
    # one-hot with handle_unknown="ignore": the row is predicted as sklearn predicts it
    bundle = load_bundle(classifier_dir)
    frame = bundle.schema.coerce(pd.DataFrame([ROWS[0], row]))
    assert response.json()["predictions"] == bundle.predict(frame).labels
