"""Rows per second and peak memory reading a PostgreSQL table: this project's reader
(kfp_lifecycle.sources.sql, ADBC + Arrow) against pandas.read_sql (SQLAlchemy + psycopg 3).

    .venv/bin/python bench/ingest_sql.py               # 1,000,000 rows
    .venv/bin/python bench/ingest_sql.py --rows 50000  # a quick smoke run

A throwaway PostgreSQL cluster (Debian's package; tests/postgres_server.py) gets one table:
int8 id, int4 with 10% NULLs, two float8, numeric(12,2), timestamptz, a low-cardinality
text and a free text. Every contender runs in a fresh child process, one after another on
the same table, so its peak resident memory (ru_maxrss) is its own; all of them run
--repeat times (default 2) in rounds, and each one's fastest round is reported:

    baseline            the imports only: what every child pays before reading
    floor (ADBC Arrow)  the driver alone: every record batch fetched, nothing converted
    ours: DataFrame     read_sql: the whole table as one DataFrame (Int64, tz, float64)
    ours: chunks        read_sql_chunks, 100,000 rows each, consumed and dropped (scoring)
    ours: ingest        ingest_sql: streamed into Parquet (what the ingest step does)
    pandas.read_sql     the whole table through a SQLAlchemy engine (psycopg 3)
    pandas chunks       pandas.read_sql(chunksize=100,000) consumed and dropped
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CHUNK = 100_000
CONTENDERS = (
    "baseline",
    "floor",
    "ours_frame",
    "ours_chunks",
    "ours_ingest",
    "pandas",
    "pandas_chunks",
)
LABELS = {
    "baseline": "baseline (imports only)",
    "floor": "floor: ADBC record batches, no conversion",
    "ours_frame": "ours: read_sql (one DataFrame)",
    "ours_chunks": "ours: read_sql_chunks (100k rows each)",
    "ours_ingest": "ours: ingest_sql (to Parquet)",
    "pandas": "pandas.read_sql (SQLAlchemy + psycopg 3)",
    "pandas_chunks": "pandas.read_sql(chunksize=100k)",
}
CREATE = """
CREATE TABLE bench AS
SELECT i::int8 AS id,
       CASE WHEN i % 10 = 0 THEN NULL ELSE (i % 1000)::int4 END AS visits,
       random() AS score, (i % 97) / 7.0::float8 AS ratio,
       round((random() * 10000)::numeric, 2)::numeric(12, 2) AS amount,
       TIMESTAMPTZ '2024-01-01 00:00:00+00' + i * INTERVAL '1 second' AS seen_at,
       'plan-' || (i % 5) AS plan,
       md5(i::text) AS note
FROM generate_series(1, {rows}) AS i
"""


def run(contender: str, url: str, dsn: str, directory: Path) -> dict:
    import pandas as pd

    from kfp_lifecycle.sources import sql

    table = f"{url}?table=bench"
    started = time.perf_counter()
    rows = 0
    if contender == "floor":
        import adbc_driver_postgresql.dbapi as postgresql

        with postgresql.connect(dsn) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT * FROM bench")
            for batch in cursor.fetch_record_batch():
                rows += batch.num_rows
    elif contender == "ours_frame":
        rows = len(sql.read_sql(table, {"chunk_rows": CHUNK}))
    elif contender == "ours_chunks":
        for frame in sql.read_sql_chunks(table, {"chunk_rows": CHUNK}):
            rows += len(frame)
    elif contender == "ours_ingest":
        rows = sql.ingest_sql(table, directory / "bench.parquet", {"chunk_rows": CHUNK})["rows"]
    elif contender in ("pandas", "pandas_chunks"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as connection:
            if contender == "pandas":
                rows = len(pd.read_sql("SELECT * FROM bench", connection))
            else:
                stream = connection.execution_options(stream_results=True)
                for frame in pd.read_sql("SELECT * FROM bench", stream, chunksize=CHUNK):
                    rows += len(frame)
        engine.dispose()
    seconds = time.perf_counter() - started
    # Linux reports ru_maxrss in KiB: this child's peak resident set, imports included.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    return {"rows": rows, "seconds": seconds, "peak_mib": peak}


def measure(contender: str, server, directory: Path) -> dict:
    command = [sys.executable, __file__, "--child", contender, "--dir", str(directory)]
    env = {
        **os.environ,
        "BENCH_URL": server.url,
        "BENCH_DSN": server.dsn,
        "LIFECYCLE_DB_PASSWORD": server.password,
    }
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        sys.exit(f"{contender} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the fastest counts")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(
            json.dumps(run(args.child, os.environ["BENCH_URL"], os.environ["BENCH_DSN"], args.dir))
        )
        return

    from postgres_server import execute_sql, running_postgres

    print(f"load average before: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{os.cpu_count()} CPUs; {args.rows:,} rows x 8 columns")
    with running_postgres() as server, tempfile.TemporaryDirectory() as directory:
        # A first scan after a bulk load sets every row's hint bits (and writes the pages):
        # do it here, so the first contender does not pay for it.
        execute_sql(server, CREATE.format(rows=args.rows) + "; ANALYZE bench")
        execute_sql(server, "SELECT count(*) FROM bench WHERE note <> ''")
        runs = [
            {c: measure(c, server, Path(directory)) for c in CONTENDERS} for _ in range(args.repeat)
        ]
    # the fastest of the rounds (the machine is shared: the others waited more)
    results = {c: min((r[c] for r in runs), key=lambda r: r["seconds"]) for c in CONTENDERS}
    base = results["baseline"]["peak_mib"]
    pandas_rate = args.rows / results["pandas"]["seconds"]
    print(
        "\n| reader | seconds | rows/s | rows/s vs pandas.read_sql | peak RSS (MiB) | "
        "above baseline (MiB) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for contender in CONTENDERS:
        result = results[contender]
        if contender == "baseline":
            print(f"| {LABELS[contender]} | | | | {result['peak_mib']:.0f} | 0 |")
            continue
        assert result["rows"] == args.rows, (contender, result["rows"])
        rate = args.rows / result["seconds"]
        print(
            f"| {LABELS[contender]} | {result['seconds']:.2f} | {rate:,.0f} | "
            f"{rate / pandas_rate:.2f} | {result['peak_mib']:.0f} | "
            f"{result['peak_mib'] - base:.0f} |"
        )
    print(f"\nload average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
