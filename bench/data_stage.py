"""Time and peak memory of the data stage (ingest, validate, clean, split, preprocess) on a
large table.

    .venv/bin/python bench/data_stage.py               # 1,000,000 rows x 30 columns
    .venv/bin/python bench/data_stage.py --rows 20000  # a quick smoke run

A deterministic table (numbers, counts, a flag, low-cardinality categories, one
high-cardinality category, a timestamp as text, missing values, a binary target) is written
as CSV to a temporary directory. Each stage then runs in a fresh child process, so its peak
resident memory (the child's own ru_maxrss, numpy and pandas buffers included) is that
stage's alone:

    ingest      components.ingest.read_table (CSV) + to_parquet
    validate    read the Parquet + what the validate step runs: validate_table,
                infer_contract, and check_contract (pandera) of the table against the
                contract inferred from it (what a second training run does)
    clean       read the Parquet + clean_table (duplicates, rows without a target)
    split       read the Parquet + split_table (stratified train/validation/test, leak guard)
    preprocess  read the Parquet + fit_preprocessor (default PreprocessOptions, on every row)
                + transform of every row

The budget is the issue's: each stage within 8 GiB. The exit code is 1 when a stage is over.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

BUDGET_GIB = 8.0
TARGET = "churned"
STAGES = ("ingest", "validate", "clean", "split", "preprocess")


def make_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """29 features and a target; about 3% of most feature values missing."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for i in range(12):
        columns[f"num_{i:02d}"] = rng.normal(i, 1 + i / 4, size=rows)
    for i in range(4):
        columns[f"amount_{i:02d}"] = rng.lognormal(3 + i / 2, 1.0, size=rows).round(2)
    for i in range(3):
        columns[f"count_{i:02d}"] = rng.poisson(1 + i, size=rows)
    columns["flag"] = rng.random(rows) < 0.3
    for i in range(7):
        levels = np.array([f"level-{i}-{k}" for k in range(3 + 2 * i)])
        columns[f"cat_{i:02d}"] = levels[rng.integers(0, len(levels), size=rows)]
    columns["city"] = np.char.add("city-", rng.zipf(1.3, size=rows).clip(max=5000).astype(str))
    start = np.datetime64("2022-01-01T00:00:00")
    offsets = rng.integers(0, 3 * 365 * 86_400, size=rows).astype("timedelta64[s]")
    columns["event_time"] = np.datetime_as_string(start + offsets, unit="s")
    frame = pd.DataFrame(columns)

    logit = (
        0.4 * frame["num_00"]
        - 0.3 * (frame["num_03"] - 3)
        + 0.5 * (frame["cat_01"] == "level-1-0")
        + 0.2 * frame["count_01"]
        - 2.0
    )
    frame[TARGET] = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    for name in [*(f"num_{i:02d}" for i in range(0, 12, 2)), "amount_00", "cat_00", "cat_03"]:
        values = frame[name].astype(object) if name.startswith("cat") else frame[name]
        frame[name] = values.where(rng.random(rows) >= 0.03)
    return frame


def run_stage(stage: str, directory: Path) -> dict[str, float]:
    """One stage, in this (child) process; returns its seconds and details."""
    from kfp_lifecycle.components.clean import clean_table
    from kfp_lifecycle.components.ingest import read_table, to_parquet
    from kfp_lifecycle.components.preprocess import PreprocessOptions, fit_preprocessor
    from kfp_lifecycle.components.split import split_table
    from kfp_lifecycle.components.validate import check_contract, infer_contract, validate_table
    from kfp_lifecycle.core.tasks import CLASSIFICATION  # the generated target is binary

    csv, parquet = directory / "table.csv", directory / "table.parquet"
    started = time.perf_counter()
    details: dict[str, float] = {}
    if stage == "generate":
        frame = make_table(int(os.environ["BENCH_ROWS"]))
        frame.to_csv(csv, index=False)
        details = {"csv_mib": csv.stat().st_size / 2**20}
    elif stage == "ingest":
        frame = read_table(csv)
        to_parquet(frame, parquet)
        details = {"rows": len(frame), "columns": frame.shape[1]}
    elif stage == "validate":
        frame = pd.read_parquet(parquet)
        result = validate_table(frame, TARGET)
        contract = infer_contract(frame, TARGET)
        findings = check_contract(frame, contract)
        details = {"task": result.task, "contract_findings": len(findings)}
    elif stage == "clean":
        kept, report = clean_table(pd.read_parquet(parquet), TARGET)
        details = {"rows_out": len(kept), "duplicates": report.duplicate_rows}
    elif stage == "split":
        parts = split_table(pd.read_parquet(parquet), TARGET, CLASSIFICATION)
        details = {"train_rows": len(parts.train), "test_rows": len(parts.test)}
    elif stage == "preprocess":
        frame = pd.read_parquet(parquet)
        fitted, _, report = fit_preprocessor(frame, TARGET, CLASSIFICATION, PreprocessOptions())
        features = fitted.transform(frame.drop(columns=[TARGET]))
        details = {
            "features": features.shape[1],
            "target_encoded": sum(e == "target" for e in report.encodings.values()),
        }
    details["seconds"] = time.perf_counter() - started
    return details


def measure(stage: str, directory: Path, rows: int) -> dict[str, float]:
    """Run the stage in a child process; its own peak RSS comes back with its timings."""
    command = [sys.executable, __file__, "--child", stage, "--dir", str(directory)]
    completed = subprocess.run(
        command,
        env={**os.environ, "BENCH_ROWS": str(rows)},
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        sys.exit(f"stage {stage} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def child(stage: str, directory: Path) -> None:
    details = run_stage(stage, directory)
    # Linux reports ru_maxrss in KiB: the peak resident set of this process, all of it.
    details["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(details))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", choices=("generate", *STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir)
        return

    print(f"load average before: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{os.cpu_count()} CPUs; {args.rows:,} rows x 30 columns")
    with tempfile.TemporaryDirectory(prefix="bench-data-stage-") as directory:
        generated = measure("generate", Path(directory), args.rows)
        print(
            f"generated {generated['csv_mib']:.0f} MiB of CSV in {generated['seconds']:.1f} s "
            "(not part of the stages below)\n"
        )
        print("| stage | seconds | peak RSS (GiB) | within 8 GiB | notes |")
        print("|---|---:|---:|---|---|")
        over = []
        for stage in STAGES:
            result = measure(stage, Path(directory), args.rows)
            seconds, peak = result.pop("seconds"), result.pop("peak_rss_gib")
            within = "yes" if peak <= BUDGET_GIB else "no"
            if peak > BUDGET_GIB:
                over.append(stage)
            notes = ", ".join(f"{k}: {v}" for k, v in result.items())
            print(f"| {stage} | {seconds:.1f} | {peak:.2f} | {within} | {notes} |", flush=True)
    print(f"\nload average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if over:
        sys.exit(f"over the {BUDGET_GIB:g} GiB budget: {', '.join(over)}")


if __name__ == "__main__":
    main()
