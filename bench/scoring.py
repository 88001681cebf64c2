"""Batch scoring: rows per second and peak memory of `lifecycle score` against the plain way.

    .venv/bin/python bench/scoring.py                      # 1M rows (rate + memory), 10M (memory)
    .venv/bin/python bench/scoring.py --rows 1000000 --large 0   # 1M only
    .venv/bin/python bench/scoring.py --rows 50000 --large 0     # a quick smoke run

A churn model (the demo table's logistic-regression bundle, registered with its drift
reference, as training registers it) scores a Parquet file of N fresh rows (the demo
table's generator; 9 inputs: a timestamp as text, 4 numbers, 4 categories) plus a text key.
Each contender runs in a fresh child process and is timed from launch to exit (imports and
process start included: what a user waits for), with the peak resident memory of its whole
process tree (the child and every process it starts: kfp.local runs the step in one),
sampled every 50 ms with psutil:

    plain       pandas.read_parquet of the whole file, bundle.predict on all of it, the
                key + prediction + probabilities written with DataFrame.to_parquet: the
                loop a user writes without this project. Its predict time alone is the
                floor (no I/O at all), reported beside it.
    score       `lifecycle score --model REGISTRY/churn@champion --data FILE --output DIR
                --key customer_id`: the scoring pipeline through kfp.local (drift, contract,
                quarantine checks and the manifest included).
    in-process  the same with --in-process (no kfp.local).

With --repeat N the three run in turn N times and each one's fastest run counts (the
machine may be shared: interleaving exposes all three to the same swings in load).

Targets (issue 14): score at least 0.8x the plain rows/s at 1M rows; at most 4 GiB peak at
10M rows. At 10M the plain approach is extrapolated from its 1M peak (linear in rows: the
whole table and its transformed copies are in memory) unless --plain-large runs it.
"""

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

GIB = 1024**3
MEMORY_TARGET_GIB = 4.0
RATE_TARGET = 0.8
BLOCK = 500_000  # rows generated and written at a time, so that 10M rows fit anywhere


def write_data(path: Path, rows: int) -> None:
    """N fresh churn rows without the target, plus a text key, written block by block."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kfp_lifecycle.demo import make_churn_dataset

    writer = None
    for start in range(0, rows, BLOCK):
        size = min(BLOCK, rows - start)
        frame = make_churn_dataset(rows=size, seed=1000 + start // BLOCK).drop(columns="churned")
        frame.insert(0, "customer_id", [f"{i:09d}" for i in range(start, start + size)])
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table.cast(writer.schema))
    writer.close()


def build_registry(root: Path) -> str:
    """REGISTRY/churn@champion trained on 5,000 demo rows, with its reference and contract."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from bundles import register_churn

    from kfp_lifecycle.demo import make_churn_dataset

    registry = register_churn(root, make_churn_dataset(rows=5000, seed=21))
    return f"{registry}/churn@champion"


PLAIN = """
import json, sys, time
import pandas as pd
from kfp_lifecycle.core.bundle import load_bundle
from kfp_lifecycle.registry import resolve_reference

model, data, output = sys.argv[1:4]
bundle = load_bundle(resolve_reference(model))
frame = pd.read_parquet(data)
started = time.perf_counter()
predicted = bundle.predict(frame.drop(columns=["customer_id"]))
predict_seconds = time.perf_counter() - started
out = pd.DataFrame({"customer_id": frame["customer_id"], "prediction": predicted.labels})
for index, label in enumerate(predicted.classes):
    out[f"proba_{label}"] = predicted.probabilities[:, index]
out.to_parquet(output, index=False)
print(json.dumps({"predict_seconds": predict_seconds}))
"""


def measure(command: list[str]) -> dict:
    """Run `command`; its wall seconds, peak RSS of its process tree, and its stdout."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    watched = psutil.Process(process.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            total = 0
            with contextlib.suppress(psutil.Error):  # a process may end while it is read
                for member in [watched, *watched.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += member.memory_info().rss
            peak = max(peak, total)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{command[:3]} failed ({process.returncode}):\n{err[-3000:]}")
    return {"seconds": seconds, "peak_gib": peak / GIB, "stdout": out}


def run_plain(model: str, data: Path, work: Path) -> dict:
    result = measure([sys.executable, "-c", PLAIN, model, str(data), str(work / "plain.parquet")])
    result["predict_seconds"] = json.loads(result["stdout"].strip().splitlines()[-1])[
        "predict_seconds"
    ]
    return result


def run_score(model: str, data: Path, output: Path, in_process: bool, chunk_rows: int) -> dict:
    lifecycle = str(Path(sys.executable).with_name("lifecycle"))
    command = [lifecycle, "score", "--model", model, "--data", str(data), "--output",
               str(output), "--key", "customer_id", "--chunk-rows", str(chunk_rows)]  # fmt: skip
    result = measure(command + (["--in-process"] if in_process else []))
    result["summary"] = json.loads((output / "scoring-summary.json").read_text())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rate and memory run")
    parser.add_argument("--large", type=int, default=10_000_000, help="memory run (0: skip)")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--plain-large", action="store_true", help="run plain at --large too")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds at --rows; the fastest of each counts"
    )
    args = parser.parse_args()

    results: dict = {"rows": args.rows, "large": args.large, "chunk_rows": args.chunk_rows}
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as directory:
        work = Path(directory)
        model = build_registry(work)
        data = work / "customers.parquet"
        write_data(data, args.rows)
        results["file_mib"] = data.stat().st_size / 2**20
        runs: dict[str, list[dict]] = {"plain": [], "score": [], "in_process": []}
        for round_ in range(args.repeat):  # interleaved, so that load swings hit all alike
            runs["plain"].append(run_plain(model, data, work))
            for name, in_process in (("score", False), ("in_process", True)):
                output = work / f"{name}-{round_}"
                runs[name].append(run_score(model, data, output, in_process, args.chunk_rows))
        best = {name: min(done, key=lambda run: run["seconds"]) for name, done in runs.items()}
        plain, score, inproc = best["plain"], best["score"], best["in_process"]
        for name, run in best.items():
            results[name] = {
                "seconds": round(run["seconds"], 2),
                "rows_per_s": round(args.rows / run["seconds"]),
                "peak_gib": round(max(r["peak_gib"] for r in runs[name]), 3),
                "all_seconds": [round(r["seconds"], 2) for r in runs[name]],
            }
        results["floor_predict_only"] = {
            "seconds": round(plain["predict_seconds"], 2),
            "rows_per_s": round(args.rows / plain["predict_seconds"]),
        }
        results["score_timings"] = score["summary"]["timings_seconds"]
        results["rate_ratio_score_vs_plain"] = round(plain["seconds"] / score["seconds"], 3)
        results["rate_ratio_in_process_vs_plain"] = round(plain["seconds"] / inproc["seconds"], 3)
        data.unlink()
        if args.large:
            big = work / "large.parquet"
            write_data(big, args.large)
            large = run_score(model, big, work / "score-large", False, args.chunk_rows)
            results["score_large"] = {
                "seconds": round(large["seconds"], 2),
                "rows_per_s": round(args.large / large["seconds"]),
                "peak_gib": round(large["peak_gib"], 3),
                "rows_scored": large["summary"]["rows"]["scored"],
            }
            if args.plain_large:
                plain_large = run_plain(model, big, work)
                results["plain_large"] = {
                    "seconds": round(plain_large["seconds"], 2),
                    "peak_gib": round(plain_large["peak_gib"], 3),
                    "measured": True,
                }
            else:
                results["plain_large"] = {
                    "peak_gib": round(plain["peak_gib"] * args.large / args.rows, 2),
                    "measured": False,
                    "how": f"extrapolated linearly from its peak at {args.rows} rows",
                }
    print(json.dumps(results, indent=2))
    ok = results["rate_ratio_score_vs_plain"] >= RATE_TARGET
    if args.large:
        ok = ok and results["score_large"]["peak_gib"] <= MEMORY_TARGET_GIB
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
