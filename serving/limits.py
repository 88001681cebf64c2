"""The model server's edges, as plain ASGI middleware and a uvicorn protocol: a body size
limit, a read deadline for slow clients, and one count of every request's outcome.

A body over the limit is answered 413 before it is parsed, whether it announces its length
or streams in chunks, so one oversized request cannot exhaust the server's memory.
"""

import contextvars
import json
import logging
from collections.abc import Callable
from typing import Any

import prometheus_client

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


class BodySizeLimit:
    def __init__(self, app: Any, max_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted_receive, send)
        except BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        message = f"request body is larger than the limit of {self.max_bytes} bytes"
        await send_error(send, 413, message)


async def send_error(send: Any, status: int, message: str) -> None:
    """Answer with `{"error": message}` straight from ASGI middleware."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    """Raised inside the app when a streamed body passes the limit."""


# What a refusal was, for kfp_lifecycle_rejected_requests_total{reason}. The model marks the
# refusals it makes (a schema error) in the request's note; the others are told by status.
REASON_BY_STATUS = {
    400: "malformed_body",  # not JSON, or not the protocol's shape (KServe's own checks)
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_body",  # the V2 body's structure (FastAPI's validation)
}
REQUEST_NOTE: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("request_note")


def note_refusal(reason: str) -> None:
    """Record why the current request is refused (called by the model before raising);
    the first, most specific reason noted wins."""
    note = REQUEST_NOTE.get(None)
    if note is not None:
        note.setdefault("reason", reason)


class RequestOutcomes:
    """Count every request the server answers: a POST by outcome (ok, rejected, error), and
    every refusal (4xx), whatever refused it, by reason.

    It wraps the whole app (body limit included), so the rejected count equals the 4xx
    responses: refusals before the model (bad JSON, 413, 404, 422) are counted too. It also
    reads `application/json; charset=utf-8`, and a body with no content type (tritonclient's
    JSON mode), as plain JSON, which KServe does not.
    """

    def __init__(self, app: Any, count: Callable[[str, int, str | None], None]):
        self.app = app
        self.count = count

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["headers"] = _plain_json_content_type(scope.get("headers", []))
        note: dict[str, str] = {}
        token = REQUEST_NOTE.set(note)
        status = 500

        async def watched_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            REQUEST_NOTE.reset(token)
            reason = None
            if 400 <= status < 500:
                reason = note.get("reason") or REASON_BY_STATUS.get(status, f"http_{status}")
            if scope.get("method") == "POST" or reason:
                self.count(scope.get("method", ""), status, reason)


def _plain_json_content_type(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`application/json; charset=utf-8` (or us-ascii) as `application/json`; no content type
    at all, and no binary-tensor header, as JSON too (tritonclient's JSON mode sends none,
    and KServe then takes a V2 body for binary tensors and refuses it)."""
    out, typed, binary = [], False, False
    for key, value in headers:
        if key == b"content-type":
            typed = True
            if b";" in value:
                media, _, parameters = value.partition(b";")
                charset = parameters.strip().lower().removeprefix(b"charset=").strip(b'"')
                if media.strip().lower() == b"application/json" and charset in JSON_CHARSETS:
                    value = b"application/json"
        elif key == b"inference-header-content-length":
            binary = True
        out.append((key, value))
    if not typed and not binary:
        out.append((b"content-type", b"application/json"))
    return out


JSON_CHARSETS = (b"utf-8", b"utf8", b"us-ascii")


def read_deadline_protocol(base: type, seconds: float) -> type:
    """uvicorn's HTTP protocol with a deadline on reading each request.

    A connection must deliver a whole request (headers and body) within `seconds` of its
    first byte, or of connecting; otherwise it is closed. Idle keep-alive connections are
    uvicorn's own timeout_keep_alive. Without this, a client sending a header a byte a
    minute holds a connection (and its memory) for ever.
    """

    class ReadDeadline(base):
        read_deadline_seconds = seconds

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._read_deadline = None
            self._arm_read_deadline()

        def data_received(self, data: bytes) -> None:
            if self._read_deadline is None:
                self._arm_read_deadline()
            super().data_received(data)
            if self._request_read():
                self._read_deadline.cancel()
                self._read_deadline = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._read_deadline is not None:
                self._read_deadline.cancel()
                self._read_deadline = None
            super().connection_lost(exc)

        def _request_read(self) -> bool:
            cycle = self.cycle
            return cycle is not None and not cycle.more_body and not cycle.response_complete

        def _arm_read_deadline(self) -> None:
            self._read_deadline = self.loop.call_later(self.read_deadline_seconds, self._expire)

        def _expire(self) -> None:
            self._read_deadline = None
            if self._request_read() or self.transport.is_closing():
                return
            logger.warning(
                "closed a connection from %s: no complete request within %ss",
                self.client[0] if self.client else "?",
                self.read_deadline_seconds,
            )
            SLOW_CLIENTS.inc()
            self.transport.close()

    return ReadDeadline


SLOW_CLIENTS = prometheus_client.Counter(
    "kfp_lifecycle_slow_connections_closed_total",
    "Connections closed because a whole request did not arrive within the read timeout.",
)


class ClosedRoutes:
    """Answer 404 for paths under the given prefixes before any route sees them.

    KServe 0.21 serves /v2/repository/models/NAME/load and /unload without authentication:
    one POST would unload the model while /v2/health/ready still says 200.
    """

    def __init__(self, app: Any, prefixes: tuple[str, ...]):
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(self.prefixes):
            await send_error(send, 404, "model repository routes are disabled")
            return
        await self.app(scope, receive, send)
