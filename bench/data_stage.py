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

Scaling (issue 15): the whole data stage and training, per engine, at several sizes:

    .venv/bin/python bench/data_stage.py --engine dask                       # 1M 2M 5M 10M
    .venv/bin/python bench/data_stage.py --engine dask --sizes 20000,40000   # a smoke run

For each size one CSV file is generated (in 1M-row chunks, not timed), then each engine runs
ingest, validate (+ contract), profile, clean, split, preprocess and an XGBoost fit (fixed
200 trees at most, learning rate 0.1, early stopping on the validation rows, no tuning: the
same work for both engines) in one child process. Its peak memory is that of the whole
process tree: the child and every Dask worker it starts, resident sets summed, sampled
with psutil every 0.2 s. Dask: a LocalCluster of 2 worker processes (1 thread, 5 GiB each).
pandas runs only up to --pandas-max-rows (default 2M: it needs ~4 GiB per 1M rows). Results
go to bench/data_stage_scaling.json and the curve to bench/data_stage_scaling.png.
"""

import argparse
import contextlib
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


# --- scaling: the whole data stage and training, per engine ------------------------------
SIZES = (1_000_000, 2_000_000, 5_000_000, 10_000_000)
CHUNK_ROWS = 1_000_000
XGB_PARAMS = {"n_estimators": 200, "learning_rate": 0.1}
SCALING_JSON = Path(__file__).with_name("data_stage_scaling.json")
SCALING_PNG = Path(__file__).with_name("data_stage_scaling.png")


def generate_csv(rows: int, path: Path) -> None:
    """One CSV file of `rows` rows, written in chunks so that generating 10M rows fits."""
    for number, start in enumerate(range(0, rows, CHUNK_ROWS)):
        frame = make_table(min(CHUNK_ROWS, rows - start), seed=number)
        frame.to_csv(path, index=False, mode="w" if number == 0 else "a", header=number == 0)


def run_engine(engine: str, directory: Path) -> dict[str, float]:
    """Every step with one engine, timed step by step (in this child process)."""
    from kfp_lifecycle.core.tasks import CLASSIFICATION

    csv, times = directory / "table.csv", {}
    started = time.perf_counter()

    def lap(step: str) -> None:
        times[step] = round(time.perf_counter() - started - sum(times.values()), 2)

    if engine == "pandas":
        from kfp_lifecycle.components.clean import clean_table
        from kfp_lifecycle.components.ingest import read_table, to_parquet
        from kfp_lifecycle.components.preprocess import PreprocessOptions, fit_preprocessor
        from kfp_lifecycle.components.profile import profile_table
        from kfp_lifecycle.components.split import split_table
        from kfp_lifecycle.components.train import train_model
        from kfp_lifecycle.components.validate import infer_contract, validate_table

        frame = read_table(csv)
        to_parquet(frame, directory / "pandas.parquet")
        del frame
        lap("ingest")
        frame = pd.read_parquet(directory / "pandas.parquet")
        validate_table(frame, TARGET)
        infer_contract(frame, TARGET)
        lap("validate")
        profile_table(frame, TARGET, CLASSIFICATION)
        lap("profile")
        frame, _ = clean_table(frame, TARGET)
        lap("clean")
        parts = split_table(frame, TARGET, CLASSIFICATION)
        del frame
        lap("split")
        fitted, schema, _ = fit_preprocessor(parts.train, TARGET, CLASSIFICATION,
                                             PreprocessOptions())  # fmt: skip
        lap("preprocess")
        bundle = train_model(parts.train, parts.validation, TARGET, CLASSIFICATION, "xgboost",
                             fitted, schema, params=XGB_PARAMS)  # fmt: skip
        lap("train")
        return {"steps": times, "roc_auc": bundle.metadata["metrics"]["validation"]["roc_auc"],
                "rows": int(sum(parts.report.rows.values()))}  # fmt: skip

    from kfp_lifecycle.components.profile import ProfileOptions
    from kfp_lifecycle.components.split import SplitOptions
    from kfp_lifecycle.components.tune import TuneOptions
    from kfp_lifecycle.dask_engine import clean, ingest, preprocess, profile, split, validate
    from kfp_lifecycle.dask_engine.cluster import open_client
    from kfp_lifecycle.dask_engine.engine import DaskSettings, log_to_step
    from kfp_lifecycle.dask_engine.tables import read_dataset
    from kfp_lifecycle.dask_engine.train import train_distributed

    log_to_step()
    settings = DaskSettings(n_workers=2, threads_per_worker=1, memory_per_worker="5GiB")
    with open_client(settings):
        ingest.ingest_table(str(csv), directory / "ingested", settings)
        lap("ingest")
        stats = validate.table_statistics(
            read_dataset(directory / "ingested"), TARGET, settings.sample_rows
        )
        validate.validate_statistics(stats, TARGET)
        validate.contract_from(stats, TARGET)
        lap("validate")
        profile.profile_statistics(stats, TARGET, CLASSIFICATION, ProfileOptions())
        lap("profile")
        clean.clean_table(read_dataset(directory / "ingested"), TARGET, directory / "cleaned")
        lap("clean")
        names = {name: directory / name for name in ("train", "validation", "test")}
        report = split.split_table(read_dataset(directory / "cleaned"), TARGET,
                                   CLASSIFICATION, names, SplitOptions())  # fmt: skip
        lap("split")
        train = read_dataset(names["train"])
        fitted, schema, _, _ = preprocess.fit_preprocessor_dask(
            train, TARGET, CLASSIFICATION, sample_rows=settings.sample_rows
        )
        lap("preprocess")
        bundle, _ = train_distributed(
            train, read_dataset(names["validation"]), TARGET, CLASSIFICATION, fitted, schema,
            "roc_auc", TuneOptions(enabled=False), settings, base_params=XGB_PARAMS,
        )  # fmt: skip
        lap("train")
    return {"steps": times, "roc_auc": bundle.metadata["metrics"]["validation"]["roc_auc"],
            "rows": int(sum(report.rows.values()))}  # fmt: skip


def tree_rss(process: "psutil.Process") -> int:  # noqa: F821
    """Resident bytes of a process and all its descendants (0 for one that just ended)."""
    import psutil

    total = 0
    with contextlib.suppress(psutil.Error):
        for member in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
    return total


def measure_tree(command: list[str], env: dict[str, str]) -> tuple[dict, float, float]:
    """Run `command`; its JSON result, wall seconds, and the peak of the summed resident
    memory of it and all its descendants (sampled every 0.2 s), in GiB."""
    import psutil

    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    process, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, tree_rss(process))
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    output = child.stdout.read()
    if child.returncode != 0:
        sys.exit(f"{' '.join(command)} failed with exit code {child.returncode}")
    return json.loads(output.strip().splitlines()[-1]), seconds, peak / 2**30


def scaling(sizes: list[int], engines: list[str], pandas_max_rows: int) -> None:
    print(f"load average before: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{os.cpu_count()} CPUs; sizes {', '.join(f'{n:,}' for n in sizes)} x 30 columns\n")
    print("| rows | engine | seconds | peak memory, process tree (GiB) | validation ROC-AUC |"
          " ingest | validate | profile | clean | split | preprocess | train |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = json.loads(SCALING_JSON.read_text()) if SCALING_JSON.exists() else []
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-data-stage-", dir=os.environ.get(
                "BENCH_TMP")) as directory:  # fmt: skip
            generated = time.perf_counter()
            generate_csv(rows, Path(directory) / "table.csv")
            generated = time.perf_counter() - generated
            for engine in engines:
                if engine == "pandas" and rows > pandas_max_rows:
                    continue
                command = [sys.executable, __file__, "--child-engine", engine,
                           "--dir", directory]  # fmt: skip
                result, seconds, peak = measure_tree(command, dict(os.environ))
                steps = result["steps"]
                print(f"| {rows:,} | {engine} | {seconds:.0f} | {peak:.2f} | "
                      f"{result['roc_auc']:.4f} | "
                      + " | ".join(f"{steps[s]:.0f}" for s in
                                   ("ingest", "validate", "profile", "clean", "split",
                                    "preprocess", "train")) + " |", flush=True)  # fmt: skip
                results = [r for r in results if (r["rows"], r["engine"]) != (rows, engine)]
                load = os.getloadavg()[0]
                results.append({"rows": rows, "engine": engine, "seconds": round(seconds, 1),
                                "peak_gib": round(peak, 3), "steps": steps,
                                "roc_auc": result["roc_auc"], "generate_seconds":
                                round(generated, 1), "load_average": load})  # fmt: skip
                SCALING_JSON.write_text(json.dumps(sorted(results, key=lambda r: (
                    r["engine"], r["rows"])), indent=2) + "\n")  # fmt: skip
    print(f"\nload average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    draw(json.loads(SCALING_JSON.read_text()))


def draw(results: list[dict]) -> None:
    """Seconds and peak memory against rows, one line per engine (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for engine, marker in (("dask", "o"), ("pandas", "s")):
        points = sorted((r["rows"], r["seconds"], r["peak_gib"]) for r in results
                        if r["engine"] == engine)  # fmt: skip
        if not points:
            continue
        rows, seconds, peak = zip(*points, strict=True)
        left.plot(rows, seconds, marker=marker, label=engine)
        right.plot(rows, peak, marker=marker, label=engine)
    dask_points = sorted((r["rows"], r["seconds"]) for r in results if r["engine"] == "dask")
    if dask_points:
        first_rows, first_seconds = dask_points[0]
        top = dask_points[-1][0]
        left.plot([first_rows, top], [first_seconds, first_seconds * top / first_rows], "k:",
                  label="linear from the smallest")  # fmt: skip
    right.axhline(12, color="red", linestyle="--", label="12 GiB target")
    for axis, label in ((left, "seconds, end to end"), (right, "peak GiB, process tree")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("rows (30 columns)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle("Data stage + XGBoost training, 2 shared cores (bench/data_stage.py)")
    figure.tight_layout()
    figure.savefig(SCALING_PNG, dpi=100)
    print(f"curve: {SCALING_PNG}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--engine",
        choices=("pandas", "dask"),
        help="scaling run: this engine (dask also runs pandas where it fits)",
    )
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--pandas-max-rows", type=int, default=2_000_000)
    parser.add_argument("--child-engine", choices=("pandas", "dask"), help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("generate", *STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_engine:
        print(json.dumps(run_engine(args.child_engine, args.dir)))
        return
    if args.engine:
        engines = ["dask", "pandas"] if args.engine == "dask" else ["pandas"]
        sizes = [int(n) for n in args.sizes.split(",")]
        scaling(sizes, engines, args.pandas_max_rows if args.engine == "dask" else max(sizes))
        return
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
