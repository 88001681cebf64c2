"""S3 reads under faults: bodies cut mid-stream are read again, a stalled stream is bounded by
the read timeout and the operation by its deadline; the private minio calls are pinned."""

import inspect
import math
import time
from pathlib import Path

import pytest
from flaky_s3 import flaky_proxy
from minio import Minio
from s3_server import new_bucket

from kfp_lifecycle import minio_adapter
from kfp_lifecycle.core.bundle import MODEL_FILE
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.registry import S3Registry, load_version
from kfp_lifecycle.storage import (
    S3Config,
    StorageError,
    download_file,
    object_sha256,
    put_bytes,
    read_bytes,
)

BODY = bytes(range(256)) * 4096  # 1 MiB, so a cut lands mid-stream


def test_the_private_minio_calls_are_the_ones_the_adapter_was_written_for():
    """Fails when an upgrade of minio renames or reshapes a private method the adapter uses."""
    for name, parameters in minio_adapter.PRIVATE_SIGNATURES.items():
        method = getattr(Minio, name, None)
        assert method is not None, f"minio no longer has {name}"
        assert tuple(inspect.signature(method).parameters)[1:] == parameters, name


def test_the_adapter_is_the_only_caller_of_private_minio_methods():
    package = Path(minio_adapter.__file__).parent
    sources = [
        *package.rglob("*.py"),
        *(package.parent / "serving").rglob("*.py"),
        *(package.parent / "components").rglob("*.py"),
    ]
    callers = {
        path.name
        for path in sources
        if any(
            f"._{name.lstrip('_')}(" in path.read_text()
            for name in minio_adapter.PRIVATE_SIGNATURES
        )
    }
    assert callers <= {"minio_adapter.py"}


@pytest.mark.parametrize("reader", ["read_bytes", "object_sha256", "download_file"])
def test_a_body_cut_mid_stream_is_read_again(moto, reader, tmp_path):
    bucket = new_bucket(moto.client())
    put_bytes(moto.client(), bucket, "blob", BODY, content_type="application/octet-stream")
    with flaky_proxy(moto, failures=2, fault="cut", methods=("GET",)) as proxy:
        client = proxy.client(retries=1, backoff=0.01, read_timeout=5)
        if reader == "read_bytes":
            assert read_bytes(client, bucket, "blob")[0] == BODY
        elif reader == "object_sha256":
            import hashlib

            assert object_sha256(client, bucket, "blob") == hashlib.sha256(BODY).hexdigest()
        else:
            path = download_file(client, bucket, "blob", tmp_path / "blob")
            assert path.read_bytes() == BODY
            assert [p.name for p in tmp_path.iterdir()] == ["blob"]  # no partial file left
    assert proxy.attempts("GET", "blob") == 3


def test_a_registration_and_a_load_survive_cut_bodies(moto, bundle_dir):
    bucket = new_bucket(moto.client())
    with flaky_proxy(moto, failures=1, fault="cut", methods=("GET",)) as proxy:
        client = proxy.client(retries=1, backoff=0.01, read_timeout=5)
        registry = S3Registry(f"s3://{bucket}/registry", client)
        version = registry.register("churn", bundle_dir, {})
        bundle = load_version(version.uri, client=client)
    assert bundle.metadata["registry_version"] == 1
    assert proxy.attempts("GET", MODEL_FILE) >= 2  # read back at register, then at load


def test_a_stalled_stream_is_bounded_by_the_read_timeout_and_the_deadline(moto):
    bucket = new_bucket(moto.client())
    put_bytes(moto.client(), bucket, "blob", BODY, content_type="application/octet-stream")
    with flaky_proxy(moto, failures=1, fault="hang", methods=("GET",), hang=5) as proxy:
        client = proxy.client(retries=0, read_timeout=0.5, deadline=10)
        began = time.monotonic()
        assert read_bytes(client, bucket, "blob")[0] == BODY  # stalled once, then read again
        assert time.monotonic() - began < 4
    with flaky_proxy(moto, failures=math.inf, fault="hang", methods=("GET",), hang=5) as proxy:
        client = proxy.client(retries=0, read_timeout=0.5, deadline=2)
        began = time.monotonic()
        with pytest.raises(StorageError, match=r"cut or stalled \d+ time\(s\) until the deadline"):
            read_bytes(client, bucket, "blob")
        assert time.monotonic() - began < 2 + 0.5 + 2.5  # deadline + a read timeout + backoff


def test_timeouts_and_the_deadline_come_from_the_environment(moto):
    env = {**moto.env(), "S3_CONNECT_TIMEOUT": "1.5", "S3_READ_TIMEOUT": "7", "S3_DEADLINE": "40"}
    config = S3Config.from_env(env)
    assert (config.connect_timeout, config.read_timeout, config.deadline) == (1.5, 7.0, 40.0)
    defaults = S3Config.from_env(moto.env())
    assert (defaults.connect_timeout, defaults.read_timeout, defaults.deadline) == (5, 30, 120)
    for bad in ("0", "-1", "soon"):
        with pytest.raises(LifecycleError, match=f"S3_READ_TIMEOUT must be a positive .*'{bad}'"):
            S3Config.from_env({**moto.env(), "S3_READ_TIMEOUT": bad})
