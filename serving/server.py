"""Serve one model bundle with KServe's model server (REST V1 and V2, no gRPC).

python -m kfp_lifecycle.serving.server --model DIR [--host 127.0.0.1] [--port 8080]
    [--name NAME] [--strict] [--grace-period 20] [--read-timeout 30] [--model-repository]

KServe's server as is, with its edges closed: it binds 127.0.0.1 unless told otherwise (a
container passes --host 0.0.0.0), the model repository's load/unload routes are off (anyone
could unload the model), a slow client gets a read deadline, a client error is answered and
logged in one line with the bad value cut, and every answer is counted by outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import ModelServer
from kserve.errors import InvalidInput, ModelNotFound
from kserve.model_server import FASTAPI_APP_IMPORT_STRING, app
from kserve.protocol.rest.server import RESTServer

from kfp_lifecycle.console import show_logs
from kfp_lifecycle.core.bundle import read_metadata
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.registry import download_version as download_bundle
from kfp_lifecycle.registry import model_name_from, resolve_reference
from kfp_lifecycle.serving.limits import (
    DEFAULT_MAX_BODY_BYTES,
    BodySizeLimit,
    ClosedRoutes,
    RequestOutcomes,
    read_deadline_protocol,
)
from kfp_lifecycle.serving.model import BundleModel
from kfp_lifecycle.serving.options import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_HOST,
    DEFAULT_READ_TIMEOUT_SECONDS,
    add_server_options,
    server_options,
)


def served_name(model_dir: str | Path, name: str | None = None) -> str:
    """The name in the URLs: given, else the bundle's `model_name`, else its directory name."""
    if not name:
        name = read_metadata(model_dir).get("model_name") or Path(model_dir).resolve().name
    return model_name_from(name)


def endpoints(name: str, port: int, host: str = "127.0.0.1") -> dict[str, str]:
    shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    base = f"http://{shown_host}:{port}"
    return {
        "V1 predict": f"POST {base}/v1/models/{name}:predict",
        "V2 infer": f"POST {base}/v2/models/{name}/infer",
        "health": f"GET  {base}/v2/health/ready",
        "model ready": f"GET  {base}/v2/models/{name}/ready",
        "metrics": f"GET  {base}/metrics",
    }


def resolve_model(uri: str) -> str:
    """A local bundle directory for a bundle path or s3:// prefix, or for a registry reference
    `REGISTRY/MODEL@ALIAS` / `REGISTRY/MODEL@VERSION` (REGISTRY a path or s3:// URI).

    Remote bundles are downloaded and verified (sha256) into a temporary directory.
    """
    uri = resolve_reference(uri)
    if uri.startswith("s3://"):
        local = tempfile.mkdtemp(prefix="kfp-lifecycle-bundle-")
        download_bundle(uri, local)
        return local
    return uri


DEFAULT_KEEP_ALIVE_SECONDS = 65  # above common load balancers' idle timeouts (60 s)
# A client error message is cut to this length in answers and logs.
ERROR_CHARACTERS = 300

# KServe's unauthenticated model repository routes (load, unload), closed unless enabled.
REPOSITORY_ROUTES = "/v2/repository/"

# Named, not __name__: run as `python -m kfp_lifecycle.serving.server` this module is __main__.
logger = logging.getLogger("kfp_lifecycle.serving.server")


def serve(
    model_dir: str,
    port: int = 8080,
    name: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    host: str = DEFAULT_HOST,
    strict: bool = False,
    grace_seconds: int = DEFAULT_GRACE_SECONDS,
    read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
    model_repository: bool = False,
    fast_path: bool = True,
    require_signature: bool = False,
) -> None:
    """Load (and so verify) the bundle before binding the port, then serve until stopped.

    Raises BundleError for a missing or modified bundle; nothing is served then.
    """
    model_dir = resolve_model(model_dir)
    model = BundleModel(
        served_name(model_dir, name),
        str(model_dir),
        strict=strict,
        fast_path=fast_path,
        log_grace_seconds=grace_seconds,
        require_signature=require_signature,
    )
    model.load()
    logger.info("serving model '%s' version %s from %s", model.name, model.version, model_dir)
    if fast_path and model.bundle.compiled is None:
        logger.info("  (fast path off: a step is not compiled, predicting through sklearn)")
    for label, url in endpoints(model.name, port, host).items():
        logger.info("  %-13s %s", label + ":", url)
    sys.stdout.flush()
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    if not model_repository:
        app.add_middleware(ClosedRoutes, prefixes=(REPOSITORY_ROUTES,))
    app.add_middleware(RequestOutcomes, count=model.count_response)  # outermost: sees 413s
    server = LifecycleModelServer(
        host=host,
        read_timeout=read_timeout,
        http_port=port,
        enable_grpc=False,
        workers=1,
        grace_period=grace_seconds,
        timeout_keep_alive=DEFAULT_KEEP_ALIVE_SECONDS,
    )
    server.start([model])


class LifecycleModelServer(ModelServer):
    """KServe's ModelServer (one worker, REST only) with the host, read deadline and routes
    chosen here; everything else (signals, graceful stop, metrics) is KServe's own."""

    def __init__(self, host: str, read_timeout: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.host = host
        self.read_timeout = read_timeout

    def start(self, models: list[Any]) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = LifecycleRESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            grace_period=self.grace_period,
            timeout_keep_alive=self.timeout_keep_alive,
            host=self.host,
            read_timeout=self.read_timeout,
        )
        self.servers.append(self._rest_server.start())
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


class LifecycleRESTServer(RESTServer):
    def __init__(self, *args: Any, host: str, read_timeout: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.config.host = host
        self.config.http = read_deadline_protocol(_http_protocol(), read_timeout)

    def create_application(self) -> None:
        super().create_application()
        # Client errors: one log line, the message cut, no traceback (KServe logs the
        # traceback with the bad value for every 400/404; FastAPI echoes the input on 422).
        app.exception_handlers[InvalidInput] = _client_error(400)
        app.exception_handlers[ModelNotFound] = _client_error(404)
        app.exception_handlers[RequestValidationError] = _invalid_body


def _http_protocol() -> type:
    """uvicorn's fastest available HTTP/1.1 protocol class (what its "auto" would pick)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


def cut(message: str) -> str:
    if len(message) <= ERROR_CHARACTERS:
        return message
    return f"{message[:ERROR_CHARACTERS]}... ({len(message)} characters)"


def _client_error(status: int) -> Any:
    async def handle(request: Any, error: Exception) -> JSONResponse:
        message = cut(str(error))
        logger.info("%s %s -> %d: %s", request.method, request.url.path, status, message)
        return JSONResponse(status_code=status, content={"error": message})

    return handle


async def _invalid_body(request: Any, error: RequestValidationError) -> JSONResponse:
    """The V2 body's structural errors, naming where, never echoing the input."""
    problems = [
        f"{'.'.join(str(p) for p in problem.get('loc', ()))}: {problem.get('msg', '')}"
        for problem in error.errors()[:5]
    ]
    message = cut("invalid request body: " + "; ".join(problems))
    logger.info("%s %s -> 422: %s", request.method, request.url.path, message)
    return JSONResponse(status_code=422, content={"error": message})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a model bundle with KServe.")
    parser.add_argument(
        "--model", required=True, help="bundle directory, or REGISTRY/MODEL@ALIAS (e.g. @champion)"
    )
    add_server_options(parser)
    args = parser.parse_args(argv)
    show_logs()
    try:
        serve(args.model, **server_options(args))
    except LifecycleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
