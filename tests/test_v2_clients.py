"""The V2 endpoint with the clients people use, for real: tritonclient's HTTP client (JSON
mode and binary tensors) and KServe's own InferenceRESTClient (JSON and binary)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from server_process import Server

from kfp_lifecycle.core.bundle import load_bundle

tritonclient_http = pytest.importorskip("tritonclient.http")

pytestmark = pytest.mark.serving
BUNDLE = Path(__file__).resolve().parent / "fixtures" / "bundles-0.1.0" / "multiclass_linear"
NAME = "species"


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server]) -> Server:
    return start_server(BUNDLE / "bundle", NAME, ("--name", NAME))


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    frame = pd.read_parquet(BUNDLE / "rows.parquet").dropna().head(5).reset_index(drop=True)
    frame.loc[4, "colour"] = "ultraviolet"  # a new category: served, with a warning
    return frame


def expected(rows: pd.DataFrame) -> np.ndarray:
    bundle = load_bundle(BUNDLE / "bundle")
    return bundle.predict(bundle.schema.coerce(rows)).probabilities


def _triton_inputs(rows: pd.DataFrame, binary: bool) -> list:
    inputs = []
    for name, datatype, values in (
        ("x1", "FP64", rows["x1"].to_numpy(np.float64)),
        ("x2", "FP64", rows["x2"].to_numpy(np.float64)),
        ("colour", "BYTES", rows["colour"].to_numpy(object)),
    ):
        tensor = tritonclient_http.InferInput(name, [len(rows)], datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient(server, rows, binary):
    client = tritonclient_http.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_model_ready(NAME)
    outputs = [
        tritonclient_http.InferRequestedOutput("predictions", binary_data=binary),
        tritonclient_http.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = client.infer(NAME, _triton_inputs(rows, binary), outputs=outputs)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected(rows), rtol=0, atol=0)
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predictions")]
    assert len(labels) == len(rows)
    warnings = json.loads(result.get_response()["parameters"]["warnings"])
    assert [(w["row"], w["field"], w["value"]) for w in warnings] == [(4, "colour", "ultraviolet")]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_kserve_inference_rest_client(server, rows, binary):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    inputs = []
    for name, datatype, values in (
        ("x1", "FP64", rows["x1"].to_numpy(np.float64)),
        ("x2", "FP64", rows["x2"].to_numpy(np.float64)),
        ("colour", "BYTES", rows["colour"].to_numpy(object)),
    ):
        tensor = InferInput(name, [len(rows)], datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    request = InferRequest(model_name=NAME, infer_inputs=inputs, request_id="client-9")

    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            return await client.infer(f"http://127.0.0.1:{server.port}", request, NAME)
        finally:
            await client._client.aclose()

    response = asyncio.run(call())
    assert response.id == "client-9"
    by_name = {output.name: output for output in response.outputs}
    np.testing.assert_allclose(by_name["probabilities"].as_numpy(), expected(rows), rtol=0, atol=0)
