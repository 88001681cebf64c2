"""SQL sources: a table or query of a database, read in bounded chunks as Arrow, then pandas.

URL forms (the `data` source / `--data`):

    postgresql://[user@]host[:port]/database?table=schema.events
    postgresql://host/database?query=SELECT%20...        (or `query:` under data.sql)
    sqlite:///relative/file.db?table=events   sqlite:////absolute/file.db?table=events
    dialect+driver://host/database?table=events         (any SQLAlchemy URL, e.g. mysql+pymysql)

Why this driver layer: PostgreSQL and SQLite are read with ADBC (adbc-driver-postgresql,
adbc-driver-sqlite). ADBC returns Arrow record batches straight from the wire (PostgreSQL's
binary COPY protocol), streamed by `fetch_record_batch`, so memory stays bounded by one
chunk and no Python object is built per value; its types come from the database's catalog
(int8 with NULLs stays int64 with a validity mask, timestamptz stays timestamp[UTC]).
ConnectorX is also Arrow-native and fastest when a query is split into partitions read in
parallel, but its streaming mode (return_type="arrow_stream") is young, while ADBC, kept by
the Apache Arrow project, gives PostgreSQL and SQLite one DBAPI interface with streaming at
its core (ConnectorX is not benchmarked here). pandas.read_sql and plain SQLAlchemy build a
Python object per value (bench/ingest_sql.py: 5-8x slower, 10x the memory). Other
databases still work through SQLAlchemy with a server-side cursor (`stream_results`), each
partition turned into Arrow: slower, but bounded too.

Types reaching pandas: integers are nullable Int64 (a NULL stays missing, the column stays
integer), timestamps keep their time zone, NUMERIC/DECIMAL becomes float64 (the models'
input type), text stays text.

Credentials never sit in the URL: the user may be in it, the password may not (the URL is
logged, kept in the run's parameters and the model's lineage). The password (and the user,
when the URL has none) come from LIFECYCLE_DB_PASSWORD / LIFECYCLE_DB_USER in the environment,
or from a `.env`-style file (LIFECYCLE_ENV_FILE, else ./.env); on a cluster from the
Kubernetes Secret `kfp-lifecycle-db` (kfp_lifecycle/cluster.py). Every message a failure
produces has the password masked.

Incremental windows: with `watermark` (a column), rows with since <= column < until are read;
with `incremental`, the lower bound is the largest watermark value the previous run read
(exclusive), kept in a small JSON state file written atomically (locally or on S3), by
default next to the registry. The window read is returned, for the lineage.

This module is a plain library (no kfp): ingest, `lifecycle drift --current`, and batch
scoring (`read_sql_chunks`) share it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlencode, urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from kfp_lifecycle.core.errors import DataError, LifecycleError

log = logging.getLogger(__name__)

USER_ENV = "LIFECYCLE_DB_USER"
PASSWORD_ENV = "LIFECYCLE_DB_PASSWORD"
ENV_FILE_ENV = "LIFECYCLE_ENV_FILE"
ADBC_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "sqlite": "sqlite"}
NOT_SQL_SCHEMES = ("s3", "file", "http", "https", "gs", "abfs")
STATE_DIR = "_sources"
MASK = "***"
# Arrow integer types that fit pandas' nullable Int64 (uint64 may not: left to pandas).
INT64_SAFE = {pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32()}


class SourceError(DataError):
    """A database source cannot be read (unreachable, refused, missing table, no rows)."""


class SqlOptions(BaseModel):
    """How to read a SQL source: what to select, and which window of rows."""

    model_config = ConfigDict(extra="forbid")

    table: str | None = Field(
        None, description="Table (schema.table) to read; or ?table= in the URL."
    )
    query: str | None = Field(None, description="SELECT to read instead of a table.")
    watermark: str | None = Field(
        None, description="Column that orders rows in time (an increasing id or timestamp)."
    )
    since: str | int | float | None = Field(None, description="Read rows with watermark >= since.")
    until: str | int | float | None = Field(None, description="Read rows with watermark < until.")
    incremental: bool = Field(
        False, description="Read only rows newer than the previous run's largest watermark."
    )
    state: str | None = Field(
        None,
        description="Where the incremental state lives (a local path or s3:// key); "
        "default <registry>/_sources/<model name>.json.",
    )
    chunk_rows: int = Field(100_000, gt=0, description="Rows per chunk read and written.")


@dataclass(frozen=True)
class SqlSource:
    """A parsed source URL: where to connect (without the password) and what to select."""

    url: str  # as given, minus the lifecycle parameters; never holds a password
    backend: str  # "postgresql", "sqlite" or "sqlalchemy"
    table: str | None
    query: str | None
    user: str | None
    password: str | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        """The URL to show: no password, ever."""
        return self.url

    @property
    def identity(self) -> str:
        """What the incremental state belongs to: where, and which table or query."""
        return f"{self.display} {self.table or self.query}"

    def what(self) -> str:
        return f"table '{self.table}'" if self.table else "the query"


def is_sql_source(source: str) -> bool:
    """A database URL (scheme://...), not a path, file:// or s3:// object."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", str(source))
    return bool(match) and match.group(1).lower() not in NOT_SQL_SCHEMES


def mask_url(url: str) -> str:
    """`url` with any password replaced by ***."""
    return re.sub(r"(://[^/:@\s]*:)[^@/\s]*@", rf"\g<1>{MASK}@", url)


def mask(text: str, *secrets: str | None) -> str:
    """`text` with each secret (and its URL-encoded form) and any URL password masked."""
    for secret in secrets:
        if secret:
            for form in (secret, quote(secret, safe=""), quote(secret), quote_plus(secret)):
                text = text.replace(form, MASK)
    return mask_url(text)


def read_env_file(path: str | Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env-style file (`export`, quotes and # comments allowed)."""
    values = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        values[key.strip()] = value
    return values


def credentials(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """LIFECYCLE_DB_USER / LIFECYCLE_DB_PASSWORD: the environment first, then the .env file."""
    env = os.environ if environ is None else environ
    found: dict[str, str] = {}
    env_file = env.get(ENV_FILE_ENV) or ".env"
    if Path(env_file).is_file():
        found.update(read_env_file(env_file))
    elif env.get(ENV_FILE_ENV):
        raise LifecycleError(f"{ENV_FILE_ENV}={env_file}: no such file")
    found.update({k: env[k] for k in (USER_ENV, PASSWORD_ENV) if env.get(k)})
    return {k: found[k] for k in (USER_ENV, PASSWORD_ENV) if found.get(k)}


def parse_source(
    source: str, options: SqlOptions | None = None, environ: Mapping[str, str] | None = None
) -> SqlSource:
    """Split the URL into connection and selection; credentials from the environment."""
    options = options or SqlOptions()
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    if parts.password is not None:
        raise LifecycleError(
            f"{mask_url(source)}: the database URL must not hold a password (it is logged and "
            f"kept in the lineage); set {PASSWORD_ENV} in the environment or a .env file"
        )
    params = parse_qsl(parts.query, keep_blank_values=True)
    table = options.table or next((v for k, v in params if k == "table"), None)
    query = options.query or next((v for k, v in params if k == "query"), None)
    kept = [(k, v) for k, v in params if k not in ("table", "query")]
    base = source.split("?", 1)[0]  # not urlunsplit: it turns sqlite://// into sqlite://
    url = f"{base}?{urlencode(kept)}" if kept else base
    if bool(table) == bool(query):
        problem = "both" if table else "neither"
        raise LifecycleError(
            f"{url}: give a table or a query, not {problem} (?table=NAME in the URL, or "
            "data.sql.table / data.sql.query in the config)"
        )
    backend = ADBC_SCHEMES.get(scheme, "sqlalchemy")
    found = credentials(environ) if backend != "sqlite" else {}
    user = unquote(parts.username) if parts.username else found.get(USER_ENV)
    return SqlSource(url, backend, table, query, user, found.get(PASSWORD_ENV))


def absolute_sqlite(url: str) -> str:
    """sqlite:///relative.db as sqlite:////absolute/relative.db (steps may run elsewhere)."""
    match = re.match(r"^(sqlite(?:\+\w+)?):///(?!/)([^?]+)(.*)$", url)
    if not match:
        return url
    scheme, path, rest = match.groups()
    return f"{scheme}:///{Path(unquote(path)).absolute()}{rest}"


# --- windows and state ------------------------------------------------------------------


def state_location(registry: str, model_name: str) -> str:
    """The default incremental state: beside the registry, one file per model."""
    return f"{registry.rstrip('/')}/{STATE_DIR}/{model_name}.json"


def read_state(location: str) -> dict[str, Any] | None:
    """The previous run's state, or None when there was none."""
    if location.startswith("s3://"):
        from kfp_lifecycle.storage import parse_s3_uri, read_json, s3_client

        found = read_json(s3_client(), *parse_s3_uri(location))
        return None if found is None else found[0]
    path = Path(location.removeprefix("file://"))
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise LifecycleError(f"incremental state {path} is not valid JSON: {error}") from None


def write_state(location: str, state: dict[str, Any]) -> None:
    """Replace the state in one step: a reader sees the old state or the new, never half."""
    if location.startswith("s3://"):
        from kfp_lifecycle.storage import parse_s3_uri, s3_client, write_json

        write_json(s3_client(), *parse_s3_uri(location), state)  # one PutObject: atomic
        return
    path = Path(location.removeprefix("file://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        partial.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


@dataclass
class Window:
    """Which rows were selected: column > after (the previous max), >= since, < until."""

    column: str | None = None
    since: Any = None
    after: Any = None
    until: Any = None
    max: Any = None  # the largest watermark value read
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "since": self.since,
            "after": self.after,
            "until": self.until,
            "max": self.max,
            "rows": self.rows,
        }

    def describe(self) -> str:
        bounds = [
            f"{self.column} > {self.after!r}" if self.after is not None else "",
            f"{self.column} >= {self.since!r}" if self.since is not None else "",
            f"{self.column} < {self.until!r}" if self.until is not None else "",
        ]
        return " and ".join(b for b in bounds if b) or "all rows"


def plan_window(
    options: SqlOptions, state: dict[str, Any] | None = None, source: str | None = None
) -> Window:
    """The window to read, from the options and (incremental) the previous run's state,
    which must have been kept for the same source and watermark column."""
    if (options.since is not None or options.until is not None or options.incremental) and not (
        options.watermark
    ):
        raise LifecycleError("since, until and incremental need data.sql.watermark (a column)")
    window = Window(options.watermark, options.since, None, options.until)
    if options.incremental and state:
        if state.get("watermark") != options.watermark:
            raise LifecycleError(
                f"the incremental state was kept for watermark '{state.get('watermark')}', "
                f"not '{options.watermark}'; remove it or point data.sql.state elsewhere"
            )
        if source is not None and state.get("source") != source:
            raise LifecycleError(
                f"the incremental state was kept for {state.get('source')}, not {source}; "
                "remove it or point data.sql.state elsewhere"
            )
        window.after = state.get("max")
    return window


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        raise LifecycleError(f"a watermark bound must be a number or text, not {value!r}")
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _quote_name(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def select_statement(source: SqlSource, window: Window) -> str:
    """The SELECT that reads the source's window (bounds are literals the database casts)."""
    base = f"SELECT * FROM {_quote_name(source.table)}" if source.table else None
    if base is None:
        base = f"SELECT * FROM ({source.query.strip().rstrip(';')}) AS lifecycle_source"
    column = _quote_name(window.column) if window.column else ""
    conditions = [
        f"{column} > {_literal(window.after)}" if window.after is not None else "",
        f"{column} >= {_literal(window.since)}" if window.since is not None else "",
        f"{column} < {_literal(window.until)}" if window.until is not None else "",
    ]
    conditions = [c for c in conditions if c]
    if conditions:
        base += " WHERE " + " AND ".join(conditions)
    if window.column:
        base += f" ORDER BY {column}"
    return base


# --- reading ------------------------------------------------------------------------------


def _connect_adbc(source: SqlSource) -> Any:
    parts = urlsplit(source.url)
    if source.backend == "sqlite":
        import adbc_driver_sqlite.dbapi as sqlite

        path = unquote(source.url.split("://", 1)[1].split("?", 1)[0])
        path = path[1:] if path.startswith("/") else path  # sqlite:///rel, sqlite:////abs
        if not path or not Path(path).is_file():
            raise SourceError(
                f"cannot reach {source.display}: database file '{path}' does not exist"
            )
        return sqlite.connect(path)
    import adbc_driver_postgresql.dbapi as postgresql

    host = parts.hostname or "localhost"
    netloc = host if ":" not in host else f"[{host}]"
    if parts.port:
        netloc += f":{parts.port}"
    if source.user:
        login = quote(source.user, safe="")
        if source.password:
            login += ":" + quote(source.password, safe="")
        netloc = f"{login}@{netloc}"
    uri = parts._replace(scheme="postgresql", netloc=netloc).geturl()
    return postgresql.connect(uri)


def _adbc_batches(source: SqlSource, statement: str) -> Iterator[pa.RecordBatch]:
    with closing(_connect_adbc(source)) as connection, closing(connection.cursor()) as cursor:
        cursor.execute(statement)
        reader = cursor.fetch_record_batch()
        yield from reader


def _sqlalchemy_batches(
    source: SqlSource, statement: str, chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    import sqlalchemy

    url = sqlalchemy.engine.make_url(source.url)
    if source.user:
        url = url.set(username=source.user, password=source.password)
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            result = connection.execution_options(stream_results=True).execute(
                sqlalchemy.text(statement)
            )
            columns = list(result.keys())
            schema = None
            for rows in result.partitions(chunk_rows):
                arrays = [pa.array([_plain(row[i]) for row in rows]) for i in range(len(columns))]
                batch = pa.RecordBatch.from_arrays(arrays, names=columns)
                if schema is None:
                    schema = batch.schema
                elif batch.schema != schema:
                    batch = _unify(batch, schema)
                yield batch
    finally:
        engine.dispose()


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, decimal.Decimal) else value


def _unify(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A later partition's batch in the first's types (null-only columns take any type)."""
    arrays = []
    for name, expected in zip(schema.names, schema.types, strict=True):
        column = batch.column(name)
        arrays.append(column if pa.types.is_null(expected) else column.cast(expected))
    return pa.RecordBatch.from_arrays(arrays, names=schema.names)


def _one_line_error(source: SqlSource, error: Exception) -> SourceError:
    """One masked line saying what went wrong: unreachable, refused, missing, or failed."""
    text = str(error).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    first = re.sub(r"^[A-Z_]+: (\[libpq\] )?", "", first)
    lowered = text.lower()
    parts = urlsplit(source.url)
    where = source.url
    if parts.hostname:
        where = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    if (
        "password authentication failed" in lowered
        or "no password supplied" in lowered
        or ("access denied" in lowered)
    ):
        message = (
            f"the database at {where} refused the credentials of user '{source.user}' "
            f"(check {USER_ENV} / {PASSWORD_ENV})"
        )
    elif re.search(r"database \S+ does not exist", lowered):
        message = f"{source.display}: {first.split('FATAL:')[-1].strip()}"
    elif any(
        sign in lowered
        for sign in (
            "connection refused",
            "could not translate host name",
            "timeout expired",
            "could not connect",
            "failed to connect",
            "name or service not known",
            "can't connect",
        )
    ):
        reason = "connection refused" if "connection refused" in lowered else first
        message = f"cannot reach the database at {where}: {reason}"
    elif source.table and (
        "no such table" in lowered or re.search(r"relation \S+ does not exist", lowered)
    ):
        message = f"table '{source.table}' does not exist in {source.display}"
    else:
        message = f"reading {source.what()} from {source.display} failed: {first}"
    return SourceError(mask(message, source.password))


def _arrow_chunks(source: SqlSource, window: Window, chunk_rows: int) -> Iterator[pa.Table]:
    """The window's rows as Arrow tables of up to chunk_rows rows; raises one-line errors."""
    statement = select_statement(source, window)
    log.info("reading %s from %s (%s)", source.what(), source.display, window.describe())
    if source.backend == "sqlalchemy":
        batches = _sqlalchemy_batches(source, statement, chunk_rows)
    else:
        batches = _adbc_batches(source, statement)
    pending: list[pa.RecordBatch] = []
    held = 0
    try:
        for batch in batches:
            while batch.num_rows:
                take = min(batch.num_rows, chunk_rows - held)
                pending.append(batch.slice(0, take))
                held += take
                batch = batch.slice(take)
                if held == chunk_rows:
                    yield _typed(pa.Table.from_batches(pending))
                    pending, held = [], 0
        if pending:
            yield _typed(pa.Table.from_batches(pending))
    except LifecycleError:
        raise
    except ImportError as error:  # a SQLAlchemy dialect whose driver is not installed
        raise SourceError(
            f"cannot read {source.display}: its database driver is not installed ({error})"
        ) from None
    except Exception as error:  # the drivers' own errors: classify, mask, one line
        raise _one_line_error(source, error) from None


def _typed(table: pa.Table) -> pa.Table:
    """NUMERIC (PostgreSQL's opaque text, or decimal) as float64; the rest unchanged."""
    fields, columns = [], []
    for column_field, column in zip(table.schema, table.columns, strict=True):
        kind = column_field.type
        if isinstance(kind, pa.BaseExtensionType):  # arrow.opaque: PostgreSQL's NUMERIC text
            numeric = getattr(kind, "type_name", "") == "numeric"
            column = pa.chunked_array([chunk.storage for chunk in column.chunks], kind.storage_type)
            kind = kind.storage_type
            if numeric and pa.types.is_string(kind):
                column, kind = column.cast(pa.float64()), pa.float64()
        elif pa.types.is_decimal(kind):
            column, kind = column.cast(pa.float64()), pa.float64()
        fields.append(pa.field(column_field.name, kind))
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _pandas(table: pa.Table) -> pd.DataFrame:
    """Integers as nullable Int64 (NULL stays missing, the column stays integer)."""
    return table.to_pandas(
        types_mapper=lambda kind: pd.Int64Dtype() if kind in INT64_SAFE else None
    )


def _watermark_max(table: pa.Table, column: str | None) -> Any:
    if column is None:
        return None
    if column not in table.column_names:
        raise SourceError(f"watermark column '{column}' is not among the columns read")
    value = pc.max(table.column(column)).as_py()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _later(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


@dataclass
class SqlRead:
    """A read in progress: Arrow chunks, and once they are consumed, the window read."""

    source: SqlSource
    window: Window
    tables: Iterator[pa.Table]


def open_read(
    url: str, options: SqlOptions | None = None, state: dict[str, Any] | None = None
) -> SqlRead:
    """Start reading the source in Arrow chunks; `read.window` fills in as they come."""
    options = options or SqlOptions()
    source = parse_source(url, options)
    window = plan_window(options, state, source.identity)

    def tables() -> Iterator[pa.Table]:
        for table in _arrow_chunks(source, window, options.chunk_rows):
            window.max = _later(window.max, _watermark_max(table, window.column))
            window.rows += table.num_rows
            yield table
        if window.rows == 0:
            raise SourceError(
                f"{source.what()} from {source.display} returned no rows ({window.describe()})"
            )

    return SqlRead(source, window, tables())


def read_sql_chunks(
    url: str, options: SqlOptions | dict | None = None, state_location: str | None = None
) -> Iterator[pd.DataFrame]:
    """The source's rows as DataFrames of at most `chunk_rows` rows, memory bounded by one.

    For batch scoring and anything else that processes a source piece by piece; with
    `incremental`, the window starts after the state at `state_location` (never written here).
    """
    options = SqlOptions.model_validate(options or {})
    state = read_state(state_location) if options.incremental and state_location else None
    for table in open_read(url, options, state).tables:
        yield _pandas(table)


def read_sql(url: str, options: SqlOptions | dict | None = None) -> pd.DataFrame:
    """The whole window as one DataFrame (chunks joined as Arrow, converted once)."""
    options = SqlOptions.model_validate(options or {})
    tables = list(open_read(url, options).tables)
    return _pandas(pa.concat_tables(tables) if len(tables) > 1 else tables[0])


def ingest_sql(
    url: str,
    destination: str | Path,
    options: SqlOptions | dict | None = None,
    state_location: str | None = None,
) -> dict[str, Any]:
    """Stream the window into one Parquet file, one row group per chunk; with `incremental`,
    advance the state to the largest watermark read once the file is complete.

    Returns rows, columns, the Parquet file's sha256 and the window (for the lineage).
    """
    from kfp_lifecycle.core.bundle import sha256_file

    options = SqlOptions.model_validate(options or {})
    if options.incremental and not state_location:
        raise LifecycleError("incremental reads need a state location (data.sql.state)")
    state = read_state(state_location) if options.incremental and state_location else None
    read = open_read(url, options, state)
    destination = Path(destination)
    partial = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.part")
    writer = None
    columns = 0
    try:
        for table in read.tables:
            if writer is None:  # the pandas types (Int64, ...) travel in the file's metadata
                schema = _frame_to_arrow(_pandas(table.slice(0, 1000))).schema
                writer = pq.ParquetWriter(partial, schema)
                columns = table.num_columns
            writer.write_table(table.cast(writer.schema))
        writer.close()
        writer = None
        os.replace(partial, destination)
    finally:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
    window = read.window
    if options.incremental and state_location:
        write_state(
            state_location,
            {
                "watermark": window.column,
                "max": window.max,
                "source": read.source.identity,
                "rows": window.rows,
                "time": time.time(),
            },
        )
    log.info("read %d rows from %s (%s)", window.rows, read.source.display, window.describe())
    return {
        "rows": window.rows,
        "columns": columns,
        "sha256": sha256_file(destination),
        "window": window.to_dict(),
    }


def _frame_to_arrow(frame: pd.DataFrame) -> pa.Table:
    """As ingest.to_parquet stores it (mixed object columns as text), keeping pandas types."""
    frame = frame.copy()
    for name in frame.select_dtypes(include="object").columns:
        frame[name] = frame[name].astype("string")
    return pa.Table.from_pandas(frame, preserve_index=False)


def check_source(
    url: str, options: SqlOptions | dict | None = None, state_location: str | None = None
) -> pd.DataFrame:
    """Reach the source and read its first chunk: every one-line error before a step starts
    (a window without rows raises SourceError rather than ending empty)."""
    return next(read_sql_chunks(url, options, state_location))
