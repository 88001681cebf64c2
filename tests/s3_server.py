"""moto's S3 server in this process: the real S3 HTTP protocol on localhost, for tests."""

import gc
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from minio import Minio
from moto.server import ThreadedMotoServer
from server_process import free_port

from kfp_lifecycle.storage import S3Config, s3_client

SECRET = "wJalrXUtnFEMI-secret-value"
TOKEN = "session-token-value"
# Few, short retries: a stopped server fails a request within a few seconds.
FAST = {"retries": 1, "backoff": 0.05, "connect_timeout": 1.0, "read_timeout": 5.0}


class MotoS3:
    """moto's S3 server in this process on a fixed free port; restartable, state kept."""

    def __init__(self) -> None:
        self.port = free_port()
        self.start()

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        # stop() ends the serve loop but leaves the socket listening: close it, so clients
        # get "connection refused" and the port can be bound again by start().
        self.server._server.server_close()

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "test-access-key",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "S3_ENDPOINT": f"http://127.0.0.1:{self.port}",
            "AWS_REGION": "us-east-1",
        }

    def client(self) -> Minio:
        return s3_client(S3Config.from_env(self.env(), **FAST))


@contextmanager
def running_moto() -> Iterator[MotoS3]:
    """A server for a module; on exit, checks no server or handler thread is left behind."""
    before = set(threading.enumerate())
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = MotoS3()
    yield server
    server.stop()
    gc.collect()  # drops clients, closing their keep-alive connections and handler threads
    deadline = time.monotonic() + 5
    while (leaked := set(threading.enumerate()) - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leaked, f"threads left running: {leaked}"


def new_bucket(client: Minio) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.make_bucket(name)
    return name
