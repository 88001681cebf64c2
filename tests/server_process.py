"""Start KServe's model server in a subprocess, as `lifecycle serve` does, and wait for it."""

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

READY_TIMEOUT_SECONDS = 60


@dataclass
class Server:
    port: int
    name: str
    log: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_command(model_dir: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kfp_lifecycle.serving.server",
        "--model",
        str(model_dir),
        "--port",
        str(port),
    ]


def wait_until_ready(process: subprocess.Popen, server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"server exited with {process.returncode} before becoming ready:\n"
                f"{server.log.read_text()}"
            )
        try:
            if httpx.get(f"{server.url}/v2/models/{server.name}/ready", timeout=2).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"server not ready within {READY_TIMEOUT_SECONDS}s:\n{server.log.read_text()}")


@contextmanager
def running_prometheus(binary: str, config: Path, directory: Path) -> Iterator[str]:
    """A real Prometheus on a free localhost port with `config`, ready; yields its URL and
    stops it afterwards. Its log is `directory/log`, shown when it does not come up."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = directory / "log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"Prometheus did not start:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
