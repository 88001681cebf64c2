"""The model server's command-line options, apart from the server so that building the CLI's
parser never imports KServe (`lifecycle serve` and `python -m kfp_lifecycle.serving.server`
share them)."""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_GRACE_SECONDS = 20  # below Kubernetes' default terminationGracePeriodSeconds (30)
DEFAULT_READ_TIMEOUT_SECONDS = 30.0


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The server's options, shared by `lifecycle serve` and this module's own entry point."""
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--name", default=None, help="model name in the URLs")
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}: this machine only; a container "
        "passes 0.0.0.0)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse categories training never saw (400) instead of serving them with a warning",
    )
    parser.add_argument(
        "--grace-period",
        type=int,
        default=DEFAULT_GRACE_SECONDS,
        help="seconds a stop waits for requests in flight and the request log "
        f"(default {DEFAULT_GRACE_SECONDS}); rows it could not write are counted and logged",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT_SECONDS,
        help="seconds a client has to send a whole request (headers and body) "
        f"(default {DEFAULT_READ_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument(
        "--model-repository",
        action="store_true",
        help="enable KServe's unauthenticated /v2/repository load/unload routes (off)",
    )
    parser.add_argument(
        "--require-signature",
        action="store_true",
        help="load only a bundle signed with the configured key (LIFECYCLE_SIGNING_KEY[_FILE]); "
        "the cluster's ServingRuntime passes it. Without it a signed bundle is still verified",
    )
    parser.add_argument(
        "--no-fast-path",
        action="store_true",
        help="predict through the sklearn pipeline instead of its compiled form",
    )


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "port": args.port,
        "name": args.name,
        "host": args.host,
        "strict": args.strict,
        "grace_seconds": args.grace_period,
        "read_timeout": args.read_timeout,
        "model_repository": args.model_repository,
        "fast_path": not args.no_fast_path,
        "require_signature": args.require_signature,
    }
