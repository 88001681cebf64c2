"""Serve one model bundle with KServe's model server (REST V1 and V2, no gRPC).

python -m kfp_lifecycle.serving.server --model DIR [--port 8080] [--name NAME]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from kserve import ModelServer
from kserve.model_server import app

from kfp_lifecycle.core.bundle import read_metadata
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.registry import download_version as download_bundle
from kfp_lifecycle.registry import model_name_from, resolve_reference
from kfp_lifecycle.serving.limits import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from kfp_lifecycle.serving.model import BundleModel


def served_name(model_dir: str | Path, name: str | None = None) -> str:
    """The name in the URLs: given, else the bundle's `model_name`, else its directory name."""
    if not name:
        name = read_metadata(model_dir).get("model_name") or Path(model_dir).resolve().name
    return model_name_from(name)


def endpoints(name: str, port: int) -> dict[str, str]:
    base = f"http://localhost:{port}"
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


def serve(
    model_dir: str,
    port: int = 8080,
    name: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Load (and so verify) the bundle before binding the port, then serve until stopped.

    Raises BundleError for a missing or modified bundle; nothing is served then.
    """
    model_dir = resolve_model(model_dir)
    model = BundleModel(served_name(model_dir, name), str(model_dir))
    model.load()
    print(f"serving model '{model.name}' version {model.version} from {model_dir}")
    for label, url in endpoints(model.name, port).items():
        print(f"  {label + ':':<13} {url}")
    sys.stdout.flush()
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    ModelServer(http_port=port, enable_grpc=False, workers=1).start([model])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a model bundle with KServe.")
    parser.add_argument(
        "--model", required=True, help="bundle directory, or REGISTRY/MODEL@ALIAS (e.g. @champion)"
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--name", default=None, help="model name in the URLs")
    args = parser.parse_args(argv)
    try:
        serve(args.model, port=args.port, name=args.name)
    except LifecycleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
