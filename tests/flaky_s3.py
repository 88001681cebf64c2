"""An HTTP proxy in front of the moto server that fails requests on purpose, for retry tests.

Faults (`fault`): "status" answers with an error status; "cut" relays the upstream's headers
(full Content-Length) and half its body, then closes the connection (IncompleteRead on the
client); "hang" sends the headers and half the body, then says nothing for `hang` seconds
(a stalled stream, the client's read timeout). `methods` limits which requests are faulted.

The client talks to the proxy as if it were the S3 endpoint. Each distinct request
(method, path and query) is answered `failures` times with `status` before it is passed
through to moto, so every retried request in an operation (a PUT, a GET, each request of a
multipart upload) has to survive its own failures. Every request is logged with the status
the client got, so tests can count the attempts.
"""

import http.client
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from minio import Minio
from s3_server import MotoS3

from kfp_lifecycle.storage import S3Config, s3_client

# What S3 itself sends when it sheds load; a load balancer in front of it sends HTML.
XML_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
HTML_BODY = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
# Hop-by-hop headers are the proxy's own business, not the upstream's.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


@dataclass(frozen=True)
class Seen:
    method: str
    target: str  # path and query, as the client sent them
    status: int


class FlakyProxy:
    """Fails the first `failures` attempts of each distinct request with `status`."""

    def __init__(
        self,
        upstream: MotoS3,
        failures: float,
        status: int = 503,
        xml: bool = True,
        fault: str = "status",
        methods: tuple[str, ...] | None = None,
        hang: float = 30.0,
    ):
        self.upstream, self.failures, self.status = upstream, failures, status
        self.fault, self.methods, self.hang = fault, methods, hang
        self.body = XML_BODY if xml else HTML_BODY
        self.content_type = "application/xml" if xml else "text/html"
        self.seen: list[Seen] = []
        self._attempts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def client(self, **options: float) -> Minio:
        """A client whose endpoint is this proxy; `options` set S3Config's retry fields."""
        env = {**self.upstream.env(), "S3_ENDPOINT": f"http://127.0.0.1:{self.port}"}
        return s3_client(S3Config.from_env(env, **options))

    def attempts(self, method: str, marker: str) -> int:
        """How many requests of `method` whose path or query contains `marker` arrived."""
        return sum(1 for s in self.seen if s.method == method and marker in s.target)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def _fail(self, method: str, target: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        with self._lock:
            self._attempts[method, target] += 1
            return self._attempts[method, target] <= self.failures

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as S3 endpoints do

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                failing = proxy._fail(self.command, self.path)
                if failing and proxy.fault == "status":
                    self._answer(proxy.status, proxy.content_type, proxy.body)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream.port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                proxy.seen.append(Seen(self.command, self.path, response.status))
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP | {"content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if failing and self.command != "HEAD":
                    self._break(data)
                elif self.command != "HEAD":
                    self.wfile.write(data)

            def _break(self, data: bytes) -> None:
                """Half the body, then a closed connection (cut) or silence (hang)."""
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                if proxy.fault == "hang":
                    time.sleep(proxy.hang)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                proxy.seen.append(Seen(self.command, self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler


@contextmanager
def flaky_proxy(
    upstream: MotoS3, failures: float, status: int = 503, xml: bool = True, **faults
) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(upstream, failures, status, xml, **faults)
    try:
        yield proxy
    finally:
        proxy.close()
