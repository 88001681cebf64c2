"""InputSchema.check_rows (batch scoring's per-row contract check): this tree's against a
git revision's, on the same rows in one run, as a ratio.

    .venv/bin/python bench/check_rows.py --against da2a5f0     # 1M rows in 100k chunks
    .venv/bin/python bench/check_rows.py --against main --rows 200000

The rows are the demo churn table's (bench/scoring.py scores the same kind: a timestamp as
text, 4 numbers, 4 categories), with the schema inferred from them. Two data sets: clean,
and the same with 200 bad rows per chunk (unparseable, impossible and non-ISO dates, an
unseen category). Both implementations must give identical coerced frames and reasons
(checked first); each is then timed over all chunks, in turn, `--repeat` times, and its
fastest pass counts (the machine may be shared: interleaving exposes both to the same load).
"""

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def schema_module(revision: str):
    """kfp_lifecycle/core/schema.py as it is at `revision`, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{revision}:kfp_lifecycle/core/schema.py"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp(prefix="bench-check-rows-")) / "schema_then.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("schema_then", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def chunks(rows: int, size: int) -> list[pd.DataFrame]:
    from kfp_lifecycle.demo import make_churn_dataset

    frame = make_churn_dataset(rows=rows, seed=1000).drop(columns="churned")
    return [frame.iloc[i : i + size].reset_index(drop=True) for i in range(0, rows, size)]


def spoiled(clean: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """200 bad rows per chunk: 50 each of garbage, an impossible date, a US-style date (which
    pandas reads, slowly) and an unseen category."""
    rng = np.random.default_rng(1)
    out = []
    for chunk in clean:
        chunk = chunk.copy()
        rows = rng.choice(len(chunk), 200, replace=False)
        chunk.loc[rows[:50], "signup_date"] = "garbage"
        chunk.loc[rows[50:100], "signup_date"] = "2026-02-30"
        chunk.loc[rows[100:150], "signup_date"] = "01/02/2026"
        chunk.loc[rows[150:], "plan"] = "platinum"
        out.append(chunk)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision to compare with")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from kfp_lifecycle.core.schema import InputSchema, infer_schema

    clean = chunks(args.rows, args.chunk_rows)
    now = infer_schema(clean[0], target="")
    then = schema_module(args.against).InputSchema.from_dict(now.to_dict())
    assert isinstance(now, InputSchema)
    results: dict = {"rows": args.rows, "chunk_rows": args.chunk_rows, "against": args.against}
    for label, data in (("clean", clean), ("200_bad_rows_per_chunk", spoiled(clean))):
        for chunk in data:
            frame_then, reasons_then = then.check_rows(chunk)
            frame_now, reasons_now = now.check_rows(chunk)
            pd.testing.assert_series_equal(reasons_then, reasons_now)
            pd.testing.assert_frame_equal(frame_then, frame_now)
        seconds: dict[str, list[float]] = {"then": [], "now": []}
        for _ in range(args.repeat):
            for name, schema in (("then", then), ("now", now)):
                started = time.perf_counter()
                for chunk in data:
                    schema.check_rows(chunk)
                seconds[name].append(round(time.perf_counter() - started, 3))
        best = {name: min(times) for name, times in seconds.items()}
        results[label] = {
            "seconds": seconds,
            "best_then": best["then"],
            "best_now": best["now"],
            "ratio_now_vs_then": round(best["now"] / best["then"], 3),
        }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
