"""SQL sources against a real PostgreSQL server (started here) and SQLite files."""

import datetime as dt
import json
import logging
import sqlite3
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest
from kfp import dsl
from kfp.dsl import Dataset
from postgres_server import PASSWORD, execute_sql, postgres_bin, running_postgres
from server_process import free_port

from kfp_lifecycle.components.ingest import ingest, ingest_table, read_source_chunks, read_table
from kfp_lifecycle.config import parse_config
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.core.schema import infer_schema
from kfp_lifecycle.drift_run import read_current, table_sources
from kfp_lifecycle.local_run import pipeline_arguments, run_local
from kfp_lifecycle.sources.sql import (
    PASSWORD_ENV,
    SourceError,
    credentials,
    mask,
    read_sql,
    read_sql_chunks,
    read_state,
)

ROWS = 2500
CHUNK = 1000
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
# id 1..2500: every 7th n is NULL, amount = id * 1.25 (numeric), ts = START + id minutes
# (written in +02:00, read back in UTC), note NULL every 5th, churned = id % 3 == 0.
CREATE = f"""
CREATE TABLE events (
    id int8 PRIMARY KEY, n int4, amount numeric(12, 2), ts timestamptz, note text,
    churned int4 NOT NULL
);
INSERT INTO events
SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE i % 50 END, i * 1.25,
       (TIMESTAMPTZ '2024-01-01 02:00:00+02:00') + i * INTERVAL '1 minute',
       CASE WHEN i % 5 = 0 THEN NULL ELSE 'note ' || i END, (i % 3 = 0)::int
FROM generate_series(1, {ROWS}) AS i;
CREATE TABLE empty_events (id int8, churned int4);
"""


@pytest.fixture(scope="module")
def postgres():
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; make system-deps)")
    with running_postgres() as server:
        execute_sql(server, CREATE)
        yield server


@pytest.fixture
def password(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env file of the developer's
    monkeypatch.delenv("LIFECYCLE_ENV_FILE", raising=False)
    monkeypatch.delenv("LIFECYCLE_DB_USER", raising=False)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def expected_events(ids: range) -> pd.DataFrame:
    frame = pd.DataFrame({"id": list(ids)})
    frame["n"] = pd.array([None if i % 7 == 0 else i % 50 for i in ids], dtype="Int64")
    frame["amount"] = frame["id"] * 1.25
    frame["ts"] = [START + dt.timedelta(minutes=i) for i in ids]
    frame["note"] = [None if i % 5 == 0 else f"note {i}" for i in ids]
    return frame


def assert_events(frame: pd.DataFrame, ids: range) -> None:
    expected = expected_events(ids)
    assert list(frame["id"]) == list(ids)
    assert frame["id"].dtype == "Int64" and frame["n"].dtype == "Int64"
    assert frame["n"].isna().sum() == expected["n"].isna().sum() > 0
    assert frame["n"].equals(expected["n"])
    assert frame["amount"].dtype == "float64"
    assert frame["amount"].tolist() == expected["amount"].tolist()
    assert str(frame["ts"].dt.tz) == "UTC"
    assert frame["ts"].tolist() == [pd.Timestamp(t) for t in expected["ts"]]
    assert [None if pd.isna(v) else v for v in frame["note"]] == expected["note"].tolist()


def test_postgres_table_read_in_chunks_keeps_types(postgres, password):
    chunks = list(
        read_sql_chunks(f"{postgres.url}?table=events", {"chunk_rows": CHUNK, "watermark": "id"})
    )
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    assert_events(pd.concat(chunks, ignore_index=True), range(1, ROWS + 1))


def test_postgres_query_source_from_url_and_from_options(postgres, password):
    query = "SELECT id, n, amount, ts, note FROM events WHERE id <= 300 ORDER BY id"
    from_url = read_sql(f"{postgres.url}?query={quote(query)}")
    from_options = read_sql(postgres.url, {"query": query + ";"})
    assert_events(from_url, range(1, 301))
    pd.testing.assert_frame_equal(from_url, from_options)


def test_ingest_streams_to_parquet_with_types_and_records_the_window(postgres, password, tmp_path):
    destination = tmp_path / "data.parquet"
    stored = ingest_table(
        f"{postgres.url}?table=events",
        destination,
        {"chunk_rows": CHUNK, "watermark": "id", "since": 11, "until": 2011},
    )
    assert stored["rows"] == 2000 and stored["columns"] == 6
    assert stored["window"] == {
        "column": "id",
        "since": 11,
        "after": None,
        "until": 2011,
        "max": 2010,
        "rows": 2000,
    }
    import pyarrow.parquet as pq

    assert pq.ParquetFile(destination).metadata.num_row_groups == 2  # one per chunk
    frame = pd.read_parquet(destination)
    assert_events(frame, range(11, 2011))
    # what the later steps see: the nullable integer stays a numeric feature
    schema = infer_schema(frame, "churned")
    assert {c.name: c.kind for c in schema.columns}["n"] == "numeric"


def test_incremental_window_reads_only_new_rows(postgres, password, tmp_path):
    execute_sql(postgres, "CREATE TABLE stream AS SELECT * FROM events WHERE id <= 100")
    url = f"{postgres.url}?table=stream"
    state = tmp_path / "registry" / "_sources" / "churn.json"
    options = {"watermark": "ts", "incremental": True, "chunk_rows": 40}
    first = ingest_table(url, tmp_path / "1.parquet", options, str(state))
    assert first["rows"] == 100 and first["window"]["after"] is None
    assert read_state(str(state))["max"] == "2024-01-01T01:40:00+00:00"
    execute_sql(postgres, "INSERT INTO stream SELECT * FROM events WHERE id > 100 AND id <= 130")
    second = ingest_table(url, tmp_path / "2.parquet", options, str(state))
    assert second["rows"] == 30
    assert second["window"]["after"] == "2024-01-01T01:40:00+00:00"
    assert list(pd.read_parquet(tmp_path / "2.parquet")["id"]) == list(range(101, 131))
    saved = json.loads(state.read_text())
    assert saved["max"] == "2024-01-01T02:10:00+00:00" and saved["watermark"] == "ts"
    assert not list(state.parent.glob(".*.part"))  # written atomically, nothing left over
    with pytest.raises(SourceError, match=r"returned no rows \(ts > '2024-01-01T02:10"):
        ingest_table(url, tmp_path / "3.parquet", options, str(state))
    assert not (tmp_path / "3.parquet").exists()
    assert json.loads(state.read_text()) == saved  # a failed read leaves the state alone
    with pytest.raises(
        LifecycleError, match=r"state was kept for .*/lifecycle stream, not .*/lifecycle events;"
    ):
        ingest_table(f"{postgres.url}?table=events", tmp_path / "4.parquet", options, str(state))


def test_password_never_in_messages_or_logs(postgres, monkeypatch, tmp_path, caplog):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    wrong = "Wr0ng-pa55-word"
    (tmp_path / ".env").write_text(f"# local secrets\nexport {PASSWORD_ENV}='{wrong}'\n")
    assert credentials() == {PASSWORD_ENV: wrong}
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SourceError) as refused:
        read_sql(f"{postgres.url}?table=events")
    message = str(refused.value)
    assert message == (
        f"the database at 127.0.0.1:{postgres.port} refused the credentials of user "
        "'lifecycle' (check LIFECYCLE_DB_USER / LIFECYCLE_DB_PASSWORD)"
    )
    embedded = f"postgresql://lifecycle:{PASSWORD}@127.0.0.1:{postgres.port}/lifecycle?table=e"
    with pytest.raises(LifecycleError) as in_url:
        read_sql(embedded)
    assert "must not hold a password" in str(in_url.value)
    assert "lifecycle:***@" in str(in_url.value)
    for text in (message, str(in_url.value), caplog.text):
        assert wrong not in text and PASSWORD not in text
    assert mask(f"x {quote('p@ss/w')} y p@ss/w", "p@ss/w") == "x *** y ***"


@pytest.mark.parametrize(
    ("source", "options", "expected"),
    [
        ("{url}?table=nope", {}, "table 'nope' does not exist in {url}"),
        (
            "{url}?table=empty_events",
            {},
            "table 'empty_events' from {url} returned no rows (all rows)",
        ),
        (
            "{url}",
            {"query": "SELECT * FROM events WHERE false"},
            "the query from {url} returned no rows (all rows)",
        ),
        (
            "{url}",
            {"query": "SELECT missing FROM events"},
            "reading the query from {url} failed: Failed to prepare query: ERROR:  column "
            '"missing" does not exist',
        ),
        ("{url}?table=events&query=x", {}, "give a table or a query, not both"),
        ("{url}", {"table": "events", "since": 3}, "need data.sql.watermark"),
    ],
)
def test_errors_are_one_line(postgres, password, source, options, expected):
    url = postgres.url
    with pytest.raises(LifecycleError) as error:
        read_sql(source.format(url=url), options)
    assert expected.format(url=url) in str(error.value)
    assert "\n" not in str(error.value)


def test_unreachable_host_is_one_line(password):
    port = free_port()  # nothing listens there
    with pytest.raises(SourceError) as error:
        read_sql(f"postgresql://lifecycle@127.0.0.1:{port}/db?table=events")
    assert str(error.value) == f"cannot reach the database at 127.0.0.1:{port}: connection refused"


def test_training_precheck_fails_before_any_step(postgres, password, tmp_path):
    def arguments(**data):
        config = parse_config({"data": data, "output": str(tmp_path / "out")})
        return pipeline_arguments(config)

    url = f"{postgres.url}?table=events"
    with pytest.raises(LifecycleError, match="target column 'churn' "):
        arguments(source=url, target="churn")
    with pytest.raises(SourceError, match="table 'nope' does not exist"):
        arguments(source=f"{postgres.url}?table=nope", target="churned")
    checked = arguments(source=url, target="churned", sql={"watermark": "id"})
    assert checked["data"] == url and checked["sql_options"]["watermark"] == "id"
    assert checked["task"] == "classification"
    assert not (tmp_path / "out").exists()  # nothing written by the check


def test_drift_current_reads_a_database(postgres, password, churn):
    url = f"{postgres.url}?table=events"
    assert table_sources(url) == [url]
    schema = infer_schema(expected_events(range(1, 5)).drop(columns=["ts", "note"]), "id")
    frame = read_current([url], schema)
    assert len(frame) == ROWS and list(frame.columns) == schema.names


@dsl.pipeline(name="ingest-only")
def ingest_only(data: str, sql_options: dict, registry: str, model_name: str) -> Dataset:
    step = ingest(source=data, sql_options=sql_options, registry=registry, model_name=model_name)
    return step.outputs["dataset"]


def test_ingest_step_reads_a_window_and_keeps_state_beside_the_registry(
    postgres, password, tmp_path, capfd
):
    """The KFP step itself (kfp.local, its own process): the password reaches it from the
    environment only, the window lands in the dataset's metadata, the state by the registry."""
    execute_sql(postgres, "CREATE TABLE step_rows AS SELECT * FROM events WHERE id <= 50")
    registry = tmp_path / "registry"
    arguments = {
        "data": f"{postgres.url}?table=step_rows",
        "sql_options": {"watermark": "id", "incremental": True, "chunk_rows": 20},
        "registry": str(registry),
        "model_name": "churn",
    }
    dataset = run_local(ingest_only, arguments, tmp_path / "run").output
    assert dataset.metadata["window"] == {
        "column": "id", "since": None, "after": None, "until": None, "max": 50, "rows": 50
    }  # fmt: skip
    assert dataset.metadata["source"] == arguments["data"]
    assert len(pd.read_parquet(dataset.path)) == 50
    assert json.loads((registry / "_sources" / "churn.json").read_text())["max"] == 50
    execute_sql(postgres, "INSERT INTO step_rows SELECT * FROM events WHERE id BETWEEN 51 AND 55")
    dataset = run_local(ingest_only, arguments, tmp_path / "run2").output
    assert dataset.metadata["window"]["after"] == 50 and dataset.metadata["window"]["rows"] == 5
    assert PASSWORD not in capfd.readouterr().out


@pytest.fixture(scope="module")
def sqlite_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "shop.db"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE orders (id INTEGER, qty INTEGER, price REAL, city TEXT, day TEXT)"
        )
        connection.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
            [
                (i, None if i % 4 == 0 else i % 9, i / 8, f"c{i % 3}", f"2024-02-{i % 28 + 1:02d}")
                for i in range(1, 2501)
            ],
        )
    return path


@pytest.mark.parametrize("scheme", ["sqlite", "sqlite+pysqlite"])  # ADBC, SQLAlchemy
def test_sqlite_table_and_query_in_chunks(sqlite_file, scheme):
    url = f"{scheme}:///{sqlite_file}?table=orders"
    chunks = list(read_source_chunks(url, 1000, {"watermark": "id"}))
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    frame = pd.concat(chunks, ignore_index=True)
    assert list(frame["id"]) == list(range(1, 2501))
    assert frame["qty"].dtype == "Int64" and frame["qty"].isna().sum() == 625
    assert frame["price"].tolist() == [i / 8 for i in range(1, 2501)]
    window = read_sql(
        f"{scheme}:///{sqlite_file}",
        {"query": "SELECT id, city FROM orders WHERE city = 'c1'", "watermark": "id", "until": 10},
    )
    assert list(window["id"]) == [1, 4, 7]


def test_missing_file_table_or_driver(tmp_path):
    with pytest.raises(SourceError, match=r"database file '.*nothing\.db' does not exist"):
        read_table(f"sqlite:///{tmp_path}/nothing.db?table=t")
    assert not (tmp_path / "nothing.db").exists()  # not created by the attempt
    sqlite3.connect(tmp_path / "some.db").close()
    with pytest.raises(SourceError, match="table 'orders' does not exist"):
        read_table(f"sqlite:///{tmp_path}/some.db?table=orders")
    with pytest.raises(SourceError, match=r"its database driver is not installed \(No module"):
        read_table("mysql+pymysql://u@127.0.0.1/db?table=t")
