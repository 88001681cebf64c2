"""Whole-run time against the run's time budget: the default training run on a 3,000-row x
80-column regression table (the size of the Ames housing data), on kfp.local.

    .venv/bin/python bench/time_budget.py [--rows 3000] [--columns 80] [--budget SECONDS]

Prints the wall time, the budget, their ratio, and what tuning, diagnosis and explanation cut
to fit. Exit 1 when the run takes longer than its budget.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kfp_lifecycle.budget import DEFAULT_TIME_BUDGET
from kfp_lifecycle.config import parse_config
from kfp_lifecycle.local_run import run_training


def housing_table(rows: int, columns: int, seed: int = 0) -> pd.DataFrame:
    """Numeric and categorical columns (a quarter categorical), gaps, a price from a few."""
    rng = np.random.default_rng(seed)
    frame = {}
    categorical = columns // 4
    for i in range(columns - categorical - 1):
        frame[f"num_{i}"] = rng.normal(size=rows) * (1 + i % 5)
    for i in range(categorical):
        levels = [f"level_{k}" for k in range(3 + i % 8)]
        frame[f"cat_{i}"] = rng.choice(levels, size=rows)
    table = pd.DataFrame(frame)
    price = (
        180_000
        + 25_000 * table["num_0"]
        + 9_000 * table["num_1"] * (table["num_2"] > 0)
        + 15_000 * (table["cat_0"] == "level_1")
        + rng.normal(0, 20_000, size=rows)
    )
    for name in table.columns[::7]:
        table.loc[rng.random(rows) < 0.05, name] = np.nan
    table["sale_price"] = price.round(-2)
    return table


def cuts(output: Path) -> list[str]:
    """What the budgeted steps said they cut, from their artifacts."""
    found = []
    root = output / "pipeline-root"
    for path in root.rglob("trials"):
        if path.is_file():
            cut = json.loads(path.read_text()).get("budget_cut")
            if cut:
                found.append(f"tuning: {cut}")
    for path in root.rglob("diagnosis"):
        if path.is_file():
            found += [f"diagnosis: {line}" for line in json.loads(path.read_text())["evidence"]
                      if "time budget" in line]  # fmt: skip
    for path in root.rglob("explanation"):
        if path.is_file():
            cut = json.loads(path.read_text()).get("budget_cut")
            if cut:
                found.append(f"explanation: {cut}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--columns", type=int, default=80)
    parser.add_argument("--budget", type=float, default=DEFAULT_TIME_BUDGET)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        data = Path(directory) / "housing.csv"
        housing_table(args.rows, args.columns).to_csv(data, index=False)
        config = parse_config(
            {"data": {"source": str(data), "target": "sale_price"},
             "output": str(Path(directory) / "out"), "time_budget": args.budget}
        )  # fmt: skip
        started = time.monotonic()
        summary = run_training(config)
        seconds = time.monotonic() - started
        print(f"{args.rows} rows x {args.columns} columns, regression, default run")
        print(f"selected {summary['best_family']}, test rmse {summary['metrics']['rmse']:.1f}")
        print(f"wall time {seconds:.1f} s, budget {args.budget:g} s: "
              f"ratio {seconds / args.budget:.2f}")  # fmt: skip
        for line in cuts(Path(directory) / "out") or ["nothing was cut"]:
            print(f"  {line}")
    sys.exit(0 if seconds <= args.budget else 1)


if __name__ == "__main__":
    main()
