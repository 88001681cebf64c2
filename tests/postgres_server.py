"""A throwaway PostgreSQL cluster (Debian's `postgresql` package) on a loopback port.

initdb refuses to run as root, so as root the cluster is created and started as the
`postgres` system user (runuser). The data directory lives in a fresh temporary directory
that is removed with the server. Used by tests/test_ingest_sql.py and bench/ingest_sql.py.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from server_process import free_port

USER = "lifecycle"
PASSWORD = "s3cr3t-Pa55word"  # what the tests check never leaks into messages
DATABASE = "lifecycle"


def postgres_bin() -> Path | None:
    """The directory holding initdb/pg_ctl: PATH first, then /usr/lib/postgresql/<ver>/bin."""
    found = shutil.which("initdb")
    if found and (Path(found).resolve().parent / "pg_ctl").exists():
        return Path(found).resolve().parent  # a symlink's directory may lack pg_ctl
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


@dataclass
class Postgres:
    port: int
    user: str = USER
    password: str = PASSWORD
    database: str = DATABASE

    @property
    def url(self) -> str:
        """The URL without the password (the way users give it)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        """With the password, for the fixture's own setup connections only."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    """Start a cluster with a password-protected user and database; stop and delete it after."""
    bindir = postgres_bin()
    if bindir is None:
        raise FileNotFoundError("initdb not found (install Debian's postgresql package)")
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="kfp-lifecycle-pg-"))
    data, log = base / "data", base / "server.log"
    prefix: list[str] = []
    if as_root:
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if as_root:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    port = free_port()

    def run(*command: str) -> None:
        subprocess.run([*prefix, *command], check=True, capture_output=True, cwd=base)

    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        )
        options = f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
        try:
            env = {**os.environ, "PGPASSWORD": PASSWORD}
            subprocess.run(
                [
                    str(bindir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    USER,
                    DATABASE,
                ],
                check=True,
                capture_output=True,
                env=env,
            )
            yield Postgres(port)
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def execute_sql(server: Postgres, statements: str) -> None:
    """Run `;`-separated statements and commit (setup only: no results)."""
    import adbc_driver_postgresql.dbapi as postgresql

    with postgresql.connect(server.dsn) as connection, connection.cursor() as cursor:
        for statement in filter(str.strip, statements.split(";")):
            cursor.execute(statement)
        connection.commit()
