"""Model server cold start and memory: one checkout's server against another's, same bundle.

    .venv/bin/python bench/server_cold_start.py --before /work/main/.venv/bin/python \
        --after .venv/bin/python --bundle /tmp/demo-old/registry/churn/versions/1 --runs 5

Each run starts `python -m kfp_lifecycle.serving.server` on a free localhost port with the
interpreter given (each interpreter imports its own checkout) and measures the wall time from
process start to GET /v2/health/ready answering 200, then the resident memory (VmRSS of the
server process and any children) once ready. Runs alternate before/after so that load from
other work on the machine falls on both alike. Reported: the median, min and max of each,
and the ratios after / before of the medians (< 1 is better).
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

TIMEOUT_SECONDS = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int) -> float:
    """VmRSS of `pid` and its descendants, in MiB."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        for line in Path(f"/proc/{current}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
        for task in Path(f"/proc/{current}/task").iterdir():
            children = (task / "children").read_text().split()
            pending += [int(child) for child in children]
    return total / 1024


def one_run(
    python: str, bundle: Path, log: Path, pythonpath: str | None = None
) -> tuple[float, float]:
    """Seconds from process start to ready, and RSS (MiB) once ready."""
    port = free_port()
    command = [python, "-m", "kfp_lifecycle.serving.server", "--model", str(bundle)]
    command += ["--port", str(port), "--name", "bench"]
    with open(log, "wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(),
            env={**os.environ, "PYTHONUNBUFFERED": "1",
                 **({"PYTHONPATH": pythonpath} if pythonpath else {})},
        )  # fmt: skip
    try:
        while True:
            if process.poll() is not None:
                sys.exit(f"{python}: server exited with {process.returncode}; see {log}")
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2)
                if response.status_code == 200:
                    ready = time.perf_counter() - started
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() - started > TIMEOUT_SECONDS:
                sys.exit(f"{python}: not ready within {TIMEOUT_SECONDS}s; see {log}")
            time.sleep(0.02)
        time.sleep(0.5)  # let start-up settle before reading memory
        return ready, rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="python of the checkout before")
    parser.add_argument("--after", required=True, help="python of the checkout after")
    parser.add_argument(
        "--before-pythonpath",
        help="a checkout (e.g. a git worktree) the before side imports first, so one "
        "interpreter can run both",
    )
    parser.add_argument("--bundle", required=True, type=Path, help="bundle both serve")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    # Not resolved: a venv's python is a symlink whose location selects the venv.
    args.before, args.after = os.path.abspath(args.before), os.path.abspath(args.after)

    results: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as scratch:
        before_path = os.path.abspath(args.before_pythonpath) if args.before_pythonpath else None
        paths = {"before": before_path, "after": None}
        one_run(args.before, args.bundle, Path(scratch) / "warm.log", before_path)  # file cache
        one_run(args.after, args.bundle, Path(scratch) / "warm.log")
        for run in range(args.runs):
            for side in ("before", "after"):
                python = getattr(args, side)
                log = Path(scratch) / f"{side}.log"
                results[side].append(one_run(python, args.bundle, log, paths[side]))
                ready, rss = results[side][-1]
                print(f"run {run + 1} {side:<6} ready {ready:6.2f} s  RSS {rss:7.1f} MiB")

    print(f"\n{args.runs} runs each, bundle {args.bundle}")
    print("| checkout | time to ready (s) median [min-max] | RSS ready (MiB) median [min-max] |")
    print("|---|---:|---:|")
    medians = {}
    for side, runs in results.items():
        times, rss = [r[0] for r in runs], [r[1] for r in runs]
        medians[side] = (statistics.median(times), statistics.median(rss))
        print(
            f"| {side} ({getattr(args, side)}) | {medians[side][0]:.2f} "
            f"[{min(times):.2f}-{max(times):.2f}] | {medians[side][1]:.0f} "
            f"[{min(rss):.0f}-{max(rss):.0f}] |"
        )
    time_ratio = medians["after"][0] / medians["before"][0]
    rss_ratio = medians["after"][1] / medians["before"][1]
    print(f"\nafter / before: time to ready {time_ratio:.2f}, RSS {rss_ratio:.2f}")


if __name__ == "__main__":
    main()
