"""Serving throughput and latency: this project's KServe runtime vs MLServer's scikit-learn runtime.

    make bench-serving          (builds bench/.venv-mlserver, then runs this)

The same model bundle (the demo's XGBoost pipeline) is served by both on localhost, each as a
single process, and driven by the same closed-loop load (CONCURRENCY clients, DURATION
seconds per scenario) over the V2 / Open Inference Protocol, for single-row and batched
requests. Both are asked for labels and class probabilities. Reported: requests/s, p50 and
p99 latency, and the ratios ours / MLServer (>1 for throughput, <1 for latency is better).
The load generator runs on the same 2 cores: absolute numbers are low, ratios are the point.
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
import pandas as pd

from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model
from kfp_lifecycle.core.bundle import MODEL_FILE, write_bundle
from kfp_lifecycle.core.schema import NUMERIC, InputSchema
from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.demo import make_churn_dataset

CONCURRENCY = 8
DURATION = 15.0
BATCH = 100


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def build_bundle(directory: Path) -> tuple[Path, pd.DataFrame, InputSchema]:
    frame = make_churn_dataset()
    parts = split_table(frame, "churned", CLASSIFICATION)
    fitted, schema, _ = fit_preprocessor(parts.train, "churned", CLASSIFICATION)
    bundle = train_model(
        parts.train, parts.validation, "churned", CLASSIFICATION, "xgboost", fitted, schema
    )
    write_bundle(directory, bundle.pipeline, {**bundle.metadata, "model_name": "churn"})
    return directory, parts.test.drop(columns=["churned"]), schema


def v2_body(rows: pd.DataFrame, schema: InputSchema, for_mlserver: bool) -> dict:
    inputs = []
    for column in schema.columns:
        values = rows[column.name]
        if column.kind == NUMERIC:
            data = [None if pd.isna(v) else float(v) for v in values]
            inputs.append(
                {"name": column.name, "shape": [len(rows)], "datatype": "FP64", "data": data}
            )
        else:
            data = [None if pd.isna(v) else str(v) for v in values]
            tensor = {"name": column.name, "shape": [len(rows)], "datatype": "BYTES", "data": data}
            if for_mlserver:
                tensor["parameters"] = {"content_type": "str"}
            inputs.append(tensor)
    body = {"inputs": inputs}
    if for_mlserver:  # decode as a DataFrame, return both labels and probabilities
        body["parameters"] = {"content_type": "pd"}
        body["outputs"] = [{"name": "predict"}, {"name": "predict_proba"}]
    return body


def wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server not ready:\n{log.read_text()[-3000:]}")


async def drive(url: str, body: dict) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + DURATION
    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json"}

    async def client(session: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            response = await session.post(url, content=payload, headers=headers)
            if response.status_code != 200:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=60) as session:
        await session.post(url, content=payload, headers=headers)  # warm up
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    values = np.asarray(latencies) * 1000
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "errors": errors,
    }


def measure(name, command, ready_url, infer_url, bodies, env, log) -> dict:
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(ready_url, process, log)
        return {scenario: asyncio.run(drive(infer_url, body)) for scenario, body in bodies.items()}
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mlserver-python", default="bench/.venv-mlserver/bin/python")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    bundle_dir, rows, schema = build_bundle(work / "bundle")
    bodies_ours = {
        "single row": v2_body(rows.head(1), schema, False),
        f"batch of {BATCH}": v2_body(rows.head(BATCH), schema, False),
    }
    bodies_mls = {
        "single row": v2_body(rows.head(1), schema, True),
        f"batch of {BATCH}": v2_body(rows.head(BATCH), schema, True),
    }

    # MLServer: the same pipeline file, served by its scikit-learn runtime in one process.
    mls_dir = work / "mlserver"
    (mls_dir / "churn").mkdir(parents=True)
    joblib.dump(joblib.load(bundle_dir / MODEL_FILE), mls_dir / "churn" / "model.joblib")
    (mls_dir / "churn" / "model-settings.json").write_text(json.dumps({
        "name": "churn",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "1"},
    }))  # fmt: skip
    mls_port = free_port()
    (mls_dir / "settings.json").write_text(json.dumps({
        "http_port": mls_port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": 0, "debug": False,
    }))  # fmt: skip

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ours_port = free_port()
    ours = measure(
        "ours",
        [sys.executable, "-m", "kfp_lifecycle.serving.server", "--model", str(bundle_dir),
         "--port", str(ours_port)],
        f"http://127.0.0.1:{ours_port}/v2/models/churn/ready",
        f"http://127.0.0.1:{ours_port}/v2/models/churn/infer",
        bodies_ours, env, work / "ours.log",
    )  # fmt: skip
    mlserver_bin = str(Path(args.mlserver_python).parent / "mlserver")
    mls = measure(
        "mlserver",
        [mlserver_bin, "start", str(mls_dir)],
        f"http://127.0.0.1:{mls_port}/v2/models/churn/ready",
        f"http://127.0.0.1:{mls_port}/v2/models/churn/infer",
        bodies_mls, env, work / "mlserver.log",
    )  # fmt: skip

    print(f"concurrency {CONCURRENCY}, {DURATION:.0f} s per scenario, {os.cpu_count()} cores\n")
    print("| scenario | server | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|")
    for scenario in bodies_ours:
        for label, result in (("kfp-lifecycle", ours[scenario]), ("MLServer", mls[scenario])):
            print(
                f"| {scenario} | {label} | {result['rps']:.1f} | {result['p50_ms']:.1f} | "
                f"{result['p99_ms']:.1f} | {result['errors']} |"
            )
    print("\n| scenario | throughput ours/MLServer | p50 ours/MLServer | p99 ours/MLServer |")
    print("|---|---:|---:|---:|")
    for scenario in bodies_ours:
        a, b = ours[scenario], mls[scenario]
        print(
            f"| {scenario} | {a['rps'] / b['rps']:.2f} | {a['p50_ms'] / b['p50_ms']:.2f} | "
            f"{a['p99_ms'] / b['p99_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
