"""Start KServe's model server in a subprocess, as `lifecycle serve` does, and wait for it."""

import socket
import subprocess
import sys
import time
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
