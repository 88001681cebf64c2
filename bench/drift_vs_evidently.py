"""Drift detection: components/drift.py vs Evidently's DataDriftPreset on the same data.

    make bench-drift            (builds bench/.venv-evidently, then runs this)

Reference and current tables of 100,000 rows x 50 columns (25 numeric, 25 categorical),
deterministic; drift of several magnitudes injected in 12 columns, some of it small enough
that the two tools may reasonably disagree. Reported: wall time of each tool's detection
(data already in memory, in each tool's own process), the ratio, and the share of
per-column verdicts on which they agree (and the columns where they differ).
"""

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kfp_lifecycle.components.drift import detect_drift

ROWS = 100_000
EVIDENTLY = """
import json, sys, time
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
reference, current = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
started = time.perf_counter()
snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
seconds = time.perf_counter() - started
verdicts = {}
for metric in snapshot.dict()["metrics"]:
    config = metric["config"]
    if config.get("type", "").endswith("ValueDrift"):
        value, threshold = float(metric["value"]), config["threshold"]
        p_value = "p_value" in config["method"].lower()
        verdicts[config["column"]] = value < threshold if p_value else value >= threshold
print(json.dumps({"seconds": seconds, "verdicts": verdicts}))
"""


def tables(rows: int = ROWS, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)

    def draw(shifted: bool) -> pd.DataFrame:
        columns = {}
        for i in range(25):
            shift = [0.0, 0.02, 0.1, 0.3, 1.0, 0.0][i % 6] if shifted and i < 12 else 0.0
            columns[f"num_{i}"] = rng.normal(loc=shift, scale=1 + i % 3, size=rows)
        for i in range(25):
            weights = np.array([0.4, 0.3, 0.2, 0.1])
            if shifted and i < 12:
                weights = weights + [0.0, 0.01, 0.05, 0.2, 0.4, 0.0][i % 6] * np.array(
                    [-1, 0, 0, 1]
                )
                weights = weights / weights.sum()
            columns[f"cat_{i}"] = rng.choice(list("abcd"), p=weights, size=rows)
        return pd.DataFrame(columns)

    drifted = [f"num_{i}" for i in range(12) if i % 6 in (2, 3, 4)]
    drifted += [f"cat_{i}" for i in range(12) if i % 6 in (2, 3, 4)]
    return draw(False), draw(True), drifted


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--evidently-python", default="bench/.venv-evidently/bin/python")
    parser.add_argument("--rows", type=int, default=ROWS)
    args = parser.parse_args()
    reference, current, planted = tables(args.rows)
    work = Path(tempfile.mkdtemp(prefix="bench-drift-"))
    reference.to_parquet(work / "reference.parquet")
    current.to_parquet(work / "current.parquet")

    started = time.perf_counter()
    ours = detect_drift(reference, current)
    our_seconds = time.perf_counter() - started
    our_verdicts = {f.column: f.drifted for f in ours.features}

    output = subprocess.run(
        [args.evidently_python, "-c", EVIDENTLY, str(work / "reference.parquet"),
         str(work / "current.parquet")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    theirs = json.loads(output.strip().splitlines()[-1])
    columns = list(reference.columns)
    agree = [c for c in columns if our_verdicts[c] == theirs["verdicts"][c]]
    differ = sorted(set(columns) - set(agree))

    print(f"{args.rows} rows x {len(columns)} columns; drift planted in {len(planted)} columns\n")
    print("| tool | seconds | columns flagged | planted ones found |")
    print("|---|---:|---:|---:|")
    for name, verdicts, seconds in (
        ("kfp-lifecycle", our_verdicts, our_seconds),
        ("Evidently DataDriftPreset", theirs["verdicts"], theirs["seconds"]),
    ):
        flagged = [c for c, v in verdicts.items() if v]
        found = len(set(flagged) & set(planted))
        print(f"| {name} | {seconds:.2f} | {len(flagged)} | {found}/{len(planted)} |")
    print(f"\ntime ours / Evidently: {our_seconds / theirs['seconds']:.2f}")
    print(f"per-column agreement: {len(agree)}/{len(columns)} = {len(agree) / len(columns):.1%}")
    if differ:
        print("differ on: " + ", ".join(f"{c} (ours {our_verdicts[c]})" for c in differ))


if __name__ == "__main__":
    main()
