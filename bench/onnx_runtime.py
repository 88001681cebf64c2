"""ONNX Runtime against the sklearn pipeline and the compiled fast path, in one process.

    .venv/bin/python bench/onnx_runtime.py                 # churn demo table, 4 families
    .venv/bin/python bench/onnx_runtime.py --rows 20000 --batch 1000 --repeats 30

For each family, one bundle trained as the training step trains it (small settings), then
three ways to predict the same request columns (`InputSchema.records_to_columns`, parsed once
and shared): **sklearn** = the bundle's Pipeline over a DataFrame of those columns (the
reference), **fast** = the compiled fast path the server uses, **onnx** = ONNX Runtime on
the exported model.onnx, the feed built from the same columns (that cost included). All on
one thread, as the model server runs them: OpenMP and BLAS pools limited to 1 (what the
server sets, threadpoolctl) and one ONNX Runtime intra-op thread. Single rows (each of 200
held-out rows in turn) and batches; the three are interleaved call by call so that load from
other work falls on all alike. Reported: median microseconds per call, and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from threadpoolctl import threadpool_limits

from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model
from kfp_lifecycle.core.bundle import Bundle
from kfp_lifecycle.core.schema import columns_frame
from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.demo import make_churn_dataset
from kfp_lifecycle.export import TOLERANCE, check_parity, columns_feed, convert_bundle

PARAMS = {
    "linear": {},
    "random_forest": {"n_estimators": 100, "n_jobs": 1},
    "hist_gradient_boosting": {"max_iter": 100},
    "xgboost": {"n_estimators": 300, "early_stopping_rounds": 20, "n_jobs": 1},
}


def records(frame: Any) -> list[dict[str, Any]]:
    """Rows as a JSON client sends them."""
    out = []
    for row in frame.to_dict("records"):
        record = {}
        for key, value in row.items():
            if hasattr(value, "isoformat"):
                value = value.isoformat()
            elif value is None or (not isinstance(value, str) and np.isnan(value)):
                value = None
            record[key] = value
        out.append(record)
    return out


def timed(function: Any) -> float:
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) * 1e6


def measure(bundle: Bundle, session: Any, requests: list[Any], repeats: int) -> dict[str, float]:
    """Median microseconds per call of each way, interleaved call by call."""
    schema = bundle.schema
    ways = {
        "sklearn": lambda c: bundle.predict(columns_frame(c)),
        "fast": lambda c: bundle.predict_columns(c),
        "onnx": lambda c: session.run(None, columns_feed(c, schema)),
    }
    for columns in requests[:5]:  # warm-up
        for way in ways.values():
            way(columns)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for columns in requests:
            for name, way in ways.items():
                times[name].append(timed(lambda way=way, columns=columns: way(columns)))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=6000, help="rows of the churn table")
    parser.add_argument("--batch", type=int, default=1000, help="rows per batch request")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the requests")
    args = parser.parse_args()
    threadpool_limits(1)  # as serving/model.py does for the whole server process

    table = make_churn_dataset(rows=args.rows, seed=7)
    parts = split_table(table, "churned", CLASSIFICATION, seed=0)
    fitted, schema, _ = fit_preprocessor(parts.train, "churned", CLASSIFICATION)
    held_out = parts.test.drop(columns=["churned"]).reset_index(drop=True)
    singles = [schema.records_to_columns(records(held_out.iloc[[i]]))[0] for i in range(200)]
    batch_rows = held_out.sample(args.batch, replace=len(held_out) < args.batch, random_state=0)
    batch = [schema.records_to_columns(records(batch_rows))[0]]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1

    print(f"churn table, {args.rows} rows; single rows: 200 held-out rows x {args.repeats}; ")
    print(f"batches of {args.batch} rows x {args.repeats * 20}; median microseconds per call\n")
    header = "| family | request | sklearn | fast | onnx | onnx / sklearn | onnx / fast |"
    print(header + "\n|---|---|---:|---:|---:|---:|---:|")
    for family, params in PARAMS.items():
        trained = train_model(
            parts.train, parts.validation, "churned", CLASSIFICATION, family, fitted, schema,
            params=params,
        )  # fmt: skip
        bundle = Bundle(Path("."), trained.pipeline, trained.metadata)
        model = convert_bundle(bundle).SerializeToString()
        parity = check_parity(bundle, model, held_out)
        assert parity.passed and parity.max_scaled_diff < TOLERANCE, parity
        session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        for name, requests, repeats in (
            ("1 row", singles, args.repeats),
            (f"{args.batch} rows", batch, args.repeats * 20),
        ):
            us = measure(bundle, session, requests, repeats)
            print(
                f"| {family} | {name} | {us['sklearn']:.0f} | {us['fast']:.0f} | {us['onnx']:.0f} "
                f"| {us['onnx'] / us['sklearn']:.2f} | {us['onnx'] / us['fast']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
