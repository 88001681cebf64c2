"""Serving latency and throughput against KServe's own floor, today's code and MLServer.

    make bench-serving
    .venv/bin/python bench/serving_floor.py --before PATH --mlserver-python PYTHON

Four servers on localhost, one process each, the same demo XGBoost bundle and the same V2
(Open Inference Protocol) requests, driven in one run, scenario by scenario (each scenario
runs on every server back to back, so load from other work falls on all alike):

    floor     a bare kserve.ModelServer whose model returns a constant: HTTP + JSON, no model
    ours      `python -m kfp_lifecycle.serving.server` of this checkout (the compiled path)
    before    the same module from another checkout (--before: a directory laid out as the
              repository, e.g. a git worktree of main; imported via PYTHONPATH)
    MLServer  1.7.1's scikit-learn runtime on the same pipeline file (its own venv)

Scenarios: single rows and batches of 100, with 1 and 8 closed-loop clients. Reported:
requests/s, p50 and p99 latency in ms, errors, and the ratios the issue sets targets for.
The load generator shares the machine's cores with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
from serving_vs_mlserver import BATCH, build_bundle, free_port, v2_body, wait_ready

from kfp_lifecycle.core.bundle import MODEL_FILE

DURATION = 8.0
SCENARIOS = [("single row", 1, 1), ("single row", 8, 1), (f"batch of {BATCH}", 1, BATCH),
             (f"batch of {BATCH}", 8, BATCH)]  # fmt: skip


def floor_server(port: int) -> None:
    """KServe's floor: its model server and protocol handling, a model that does nothing."""
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

    class Constant(Model):
        def __init__(self) -> None:
            super().__init__("churn")
            self.ready = True

        def load(self) -> bool:
            return True

        async def predict(self, payload, headers=None, response_headers=None):
            rows = payload.inputs[0].shape[0] if isinstance(payload, InferRequest) else 1
            output = InferOutput("predictions", [rows], "BYTES", ["no"] * rows)
            return InferResponse(payload.id or "constant", "churn", [output])

    ModelServer(http_port=port, enable_grpc=False, workers=1).start([Constant()])


async def drive(url: str, body: dict, clients: int) -> dict:
    latencies: list[float] = []
    errors = 0
    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json"}

    async def client(session: httpx.AsyncClient, stop: float) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            response = await session.post(url, content=payload, headers=headers)
            if response.status_code != 200:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as session:
        for _ in range(20):  # warm up
            await session.post(url, content=payload, headers=headers)
        started = time.perf_counter()
        stop = started + DURATION
        await asyncio.gather(*(client(session, stop) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    values = np.asarray(latencies) * 1000
    return {
        "rps": len(latencies) / elapsed,
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "errors": errors,
    }


def start(command: list[str], env: dict, log: Path, ready_url: str) -> subprocess.Popen:
    """Start a server in the scratch directory: `python -m` puts the working directory first
    on sys.path, which must not shadow the --before checkout with this one."""
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=log.parent
        )
    wait_ready(ready_url, process, log)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="checkout of today's code (PYTHONPATH root)")
    parser.add_argument("--mlserver-python", default="bench/.venv-mlserver/bin/python")
    parser.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server:
        floor_server(args.floor_server)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    bundle_dir, rows, schema = build_bundle(work / "bundle")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    servers: dict[str, tuple[list[str], dict, bool]] = {}
    module = [sys.executable, "-m", "kfp_lifecycle.serving.server", "--model", str(bundle_dir)]
    servers["floor"] = ([sys.executable, os.path.abspath(__file__), "--floor-server"], env, False)
    servers["ours"] = (module, env, False)
    if args.before:
        before_env = {**env, "PYTHONPATH": os.path.abspath(args.before)}
        servers["before"] = (module, before_env, False)
    mlserver_bin = Path(os.path.abspath(args.mlserver_python)).parent / "mlserver"
    if mlserver_bin.exists():
        mls_dir = work / "mlserver"
        (mls_dir / "churn").mkdir(parents=True)
        joblib.dump(joblib.load(bundle_dir / MODEL_FILE), mls_dir / "churn" / "model.joblib")
        (mls_dir / "churn" / "model-settings.json").write_text(json.dumps({
            "name": "churn", "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "1"},
        }))  # fmt: skip
        servers["MLServer"] = ([str(mlserver_bin), "start", str(mls_dir)], env, True)

    processes, urls = {}, {}
    try:
        for name, (command, server_env, is_mlserver) in servers.items():
            port = free_port()
            if is_mlserver:
                (work / "mlserver" / "settings.json").write_text(json.dumps({
                    "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
                    "parallel_workers": 0, "debug": False,
                }))  # fmt: skip
                full = command
            elif name == "floor":
                full = [*command, str(port)]
            else:
                full = [*command, "--port", str(port), "--name", "churn"]
            base = f"http://127.0.0.1:{port}/v2/models/churn"
            processes[name] = start(full, server_env, work / f"{name}.log", f"{base}/ready")
            urls[name] = f"{base}/infer"

        results: dict[tuple[str, int], dict[str, dict]] = {}
        for scenario, clients, size in SCENARIOS:
            for name in urls:
                body = v2_body(rows.head(size), schema, for_mlserver=name == "MLServer")
                result = asyncio.run(drive(urls[name], body, clients))
                results.setdefault((scenario, clients), {})[name] = result
                print(
                    f"{scenario:>14} x{clients} {name:<9} {result['rps']:7.1f} req/s "
                    f"p50 {result['p50']:7.2f} ms p99 {result['p99']:7.2f} ms "
                    f"errors {result['errors']}",
                    flush=True,
                )
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=30)
    report(results, list(urls))


def report(results: dict, names: list[str]) -> None:
    print(f"\n{DURATION:.0f} s per scenario and server, {os.cpu_count()} cores shared\n")
    print("| scenario | clients | server | req/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for (scenario, clients), by_server in results.items():
        for name in names:
            r = by_server[name]
            print(
                f"| {scenario} | {clients} | {name} | {r['rps']:.1f} | {r['p50']:.2f} | "
                f"{r['p99']:.2f} | {r['errors']} |"
            )
    print("\n| scenario | clients | p50 ours/floor | rps ours/before | rps ours/MLServer "
          "| p99 ours/before | p99 ours/MLServer |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (scenario, clients), r in results.items():
        cells = [_ratio(r, key, other) for key, other in
                 (("p50", "floor"), ("rps", "before"), ("rps", "MLServer"), ("p99", "before"),
                  ("p99", "MLServer"))]  # fmt: skip
        print(f"| {scenario} | {clients} | " + " | ".join(cells) + " |")


def _ratio(by_server: dict, key: str, other: str) -> str:
    if other not in by_server:
        return "-"
    return f"{by_server['ours'][key] / by_server[other][key]:.2f}"


if __name__ == "__main__":
    main()
