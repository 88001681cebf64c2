"""The S3 storage layer against moto's S3 server: the real S3 HTTP protocol on localhost."""

import io
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundles import build_bundle
from flaky_s3 import flaky_proxy
from minio import Minio
from s3_server import FAST, SECRET, TOKEN, MotoS3, new_bucket, running_moto
from server_process import free_port

from kfp_lifecycle.core.bundle import sha256_file
from kfp_lifecycle.core.errors import BundleError, LifecycleError
from kfp_lifecycle.storage import (
    PreconditionFailed,
    S3Config,
    StorageError,
    check_conditional_writes,
    download_dir,
    download_file,
    exists,
    list_keys,
    parse_s3_uri,
    put_bytes,
    read_bytes,
    read_json,
    s3_client,
    upload_dir,
    upload_file,
    write_json,
)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with running_moto() as server:
        yield server


@pytest.fixture
def client(moto: MotoS3) -> Minio:
    return moto.client()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, churn) -> Path:
    return build_bundle(tmp_path_factory.mktemp("bundle"), churn)


def test_s3_uris_are_parsed_with_clear_errors():
    assert parse_s3_uri("s3://models/registry/churn") == ("models", "registry/churn")
    assert parse_s3_uri("s3://models") == ("models", "")
    assert parse_s3_uri("s3://models/") == ("models", "")
    with pytest.raises(LifecycleError, match="not an S3 URI"):
        parse_s3_uri("gs://models/x")
    with pytest.raises(LifecycleError, match="names no bucket"):
        parse_s3_uri("s3:///x")
    with pytest.raises(LifecycleError, match="invalid bucket name"):
        parse_s3_uri("s3://Bad_Bucket/x")


def test_configuration_comes_from_the_environment():
    base = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": SECRET}
    config = S3Config.from_env(base)
    assert (config.endpoint, config.secure, config.region) == ("s3.amazonaws.com", True, None)
    config = S3Config.from_env({**base, "S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0"})
    assert (config.endpoint, config.secure) == ("minio:9000", False)
    config = S3Config.from_env(
        {**base, "AWS_ENDPOINT_URL": "https://seaweed.example:8333/", "AWS_DEFAULT_REGION": "eu"}
    )
    assert (config.endpoint, config.secure, config.region) == ("seaweed.example:8333", True, "eu")
    config = S3Config.from_env({**base, "S3_ENDPOINT": "http://a:1", "AWS_ENDPOINT_URL": "b:2"})
    assert (config.endpoint, config.secure) == ("a:1", False)
    with pytest.raises(LifecycleError, match="contradicts"):
        S3Config.from_env({**base, "S3_ENDPOINT": "http://minio:9000", "S3_USE_HTTPS": "1"})
    with pytest.raises(LifecycleError, match="S3_USE_HTTPS must be 1 or 0"):
        S3Config.from_env({**base, "S3_USE_HTTPS": "maybe"})
    with pytest.raises(LifecycleError, match="no path"):
        S3Config.from_env({**base, "S3_ENDPOINT": "http://minio:9000/bucket"})


def test_missing_credentials_are_named_and_secrets_never_shown(moto):
    with pytest.raises(LifecycleError, match="AWS_ACCESS_KEY_ID is not set"):
        S3Config.from_env({"AWS_SECRET_ACCESS_KEY": SECRET})
    with pytest.raises(LifecycleError, match="AWS_SECRET_ACCESS_KEY is not set"):
        S3Config.from_env({"AWS_ACCESS_KEY_ID": "key"})
    credentials_in_url = {**moto.env(), "S3_ENDPOINT": f"http://key:{SECRET}@minio:9000"}
    with pytest.raises(LifecycleError, match="must not embed credentials") as embedded:
        S3Config.from_env(credentials_in_url)
    config = S3Config.from_env({**moto.env(), "AWS_SESSION_TOKEN": TOKEN})
    assert config.session_token == TOKEN
    # An endpoint where nothing listens: the failure is a one-line StorageError, fast.
    closed = S3Config.from_env({**moto.env(), "S3_ENDPOINT": f"127.0.0.1:{free_port()}"}, **FAST)
    started = time.monotonic()
    with pytest.raises(StorageError, match="endpoint unreachable") as unreachable:
        list_keys(s3_client(closed), "any-bucket", "")
    assert time.monotonic() - started < 5
    for text in (repr(config), str(config), str(embedded.value), str(unreachable.value)):
        assert SECRET not in text and TOKEN not in text and "test-access-key" not in text


def test_directory_round_trip(client, tmp_path):
    bucket = new_bucket(client)
    source = tmp_path / "source"
    (source / "nested").mkdir(parents=True)
    (source / "a.txt").write_text("alpha")
    (source / "nested" / "b.bin").write_bytes(os.urandom(1000))
    keys = upload_dir(client, source, bucket, "runs/1/")
    assert keys == ["runs/1/a.txt", "runs/1/nested/b.bin"]
    assert list_keys(client, bucket, "runs/") == keys
    target = tmp_path / "target"
    download_dir(client, bucket, "runs/1", target)
    for name in ("a.txt", "nested/b.bin"):
        assert (target / name).read_bytes() == (source / name).read_bytes()


def test_large_files_go_as_multipart_uploads(client, tmp_path):
    bucket = new_bucket(client)
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(12 * 1024 * 1024))
    etag = upload_file(client, path, bucket, "big.bin", part_size=5 * 1024 * 1024)
    assert etag.endswith("-3")  # an S3 multipart ETag: md5-of-part-md5s, dash, part count
    copy = download_file(client, bucket, "big.bin", tmp_path / "copy.bin", sha256_file(path))
    assert sha256_file(copy) == sha256_file(path)


def test_a_download_that_does_not_match_its_sha256_is_deleted(client, tmp_path):
    bucket = new_bucket(client)
    source = tmp_path / "model.joblib"
    source.write_bytes(b"model bytes")
    upload_file(client, source, bucket, "m/model.joblib")
    target = tmp_path / "download"
    with pytest.raises(StorageError, match="NoSuchKey") as missing:
        download_file(client, bucket, "m/absent", target / "absent")
    assert not isinstance(missing.value, PreconditionFailed)
    with pytest.raises(BundleError, match="does not match its recorded sha256"):
        download_file(client, bucket, "m/model.joblib", target / "model.joblib", "0" * 64)
    assert list(target.iterdir()) == []  # neither the file nor a partial download


def test_conditional_writes_reach_the_server(client):
    bucket = new_bucket(client)
    etag = write_json(client, bucket, "alias.json", {"version": 1}, create_only=True)
    with pytest.raises(PreconditionFailed):
        write_json(client, bucket, "alias.json", {"version": 9}, create_only=True)
    # Two writers read the same ETag: the first compare-and-swap wins, the second is refused.
    second = write_json(client, bucket, "alias.json", {"version": 2}, if_match=etag)
    with pytest.raises(PreconditionFailed):
        write_json(client, bucket, "alias.json", {"version": 3}, if_match=etag)
    assert read_json(client, bucket, "alias.json") == ({"version": 2}, second)
    client.remove_object(bucket, "alias.json")  # deleted since it was read: also a lost race
    with pytest.raises(PreconditionFailed):
        write_json(client, bucket, "alias.json", {"version": 4}, if_match=second)
    check_conditional_writes(client, bucket, ".probe")


def test_public_put_object_cannot_send_conditions(client):
    """Why storage.put_bytes does not use put_object: the header becomes user metadata."""
    bucket = new_bucket(client)
    client.put_object(bucket, "k", io.BytesIO(b"one"), 3)
    client.put_object(bucket, "k", io.BytesIO(b"two"), 3, metadata={"If-None-Match": "*"})
    stat = client.stat_object(bucket, "k")
    assert stat.metadata["x-amz-meta-if-none-match"] == "*"
    assert client.get_object(bucket, "k").data == b"two"  # overwritten: no condition applied


def test_an_endpoint_that_ignores_conditions_is_refused(client, monkeypatch):
    bucket = new_bucket(client)
    put = client._put_object

    def unconditional(bucket_name, object_name, data, headers=None, query_params=None):
        headers = {k: v for k, v in (headers or {}).items() if not k.startswith("If-")}
        return put(bucket_name, object_name, data, headers, query_params)

    monkeypatch.setattr(client, "_put_object", unconditional)
    with pytest.raises(StorageError, match="ignores If-None-Match"):
        check_conditional_writes(client, bucket, ".probe")


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])  # what overloaded S3 endpoints send
def test_transient_statuses_are_retried_for_a_put_and_a_get(moto, status):
    bucket = new_bucket(moto.client())
    with flaky_proxy(moto, failures=2, status=status) as proxy:
        client = proxy.client(retries=3, backoff=0.01)
        put_bytes(client, bucket, "k.json", b'{"a": 1}')
        assert read_bytes(client, bucket, "k.json")[0] == b'{"a": 1}'
    assert [(s.method, s.status) for s in proxy.seen] == [
        *[("PUT", status)] * 2, ("PUT", 200), *[("GET", status)] * 2, ("GET", 200)
    ]  # fmt: skip


def test_every_request_of_a_multipart_upload_is_retried(moto, tmp_path):
    """Create and complete are POSTs, which urllib3 does not retry unless told to."""
    bucket = new_bucket(moto.client())
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(11 * 1024 * 1024))
    with flaky_proxy(moto, failures=2) as proxy:
        client = proxy.client(retries=3, backoff=0.01)
        for key, create_only in (("plain.bin", False), ("conditional.bin", True)):
            etag = upload_file(client, path, bucket, key, 5 * 1024 * 1024, create_only=create_only)
            assert etag.endswith("-3")
            copy = download_file(client, bucket, key, tmp_path / key, sha256_file(path))
            assert sha256_file(copy) == sha256_file(path)
            assert proxy.attempts("POST", f"{key}?uploads") == 3  # create: 2 failures, then ok
            assert proxy.attempts("POST", f"{key}?uploadId=") == 3  # complete
            assert proxy.attempts("PUT", f"{key}?partNumber=2&") == 3
            assert proxy.attempts("GET", key) == 3


@pytest.mark.parametrize("xml", [True, False], ids=["s3-error", "html-from-a-proxy"])
def test_a_request_that_keeps_failing_names_the_status_and_the_key(moto, tmp_path, xml):
    bucket = new_bucket(moto.client())
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(6 * 1024 * 1024))
    with flaky_proxy(moto, failures=math.inf, xml=xml) as proxy:
        client = proxy.client(retries=2, backoff=0.01)
        with pytest.raises(StorageError) as upload:
            upload_file(client, path, bucket, "models/big.bin", 5 * 1024 * 1024)
        with pytest.raises(StorageError) as read:
            read_bytes(client, bucket, "models/k.json")
        with pytest.raises(StorageError) as check:
            exists(client, bucket, "models/k.json")  # a HEAD: no body at all
    retried = "failed after retries with backoff: HTTP 503"
    assert str(upload.value).startswith(
        f"uploading {path} to s3://{bucket}/models/big.bin {retried}"
    )
    assert str(read.value).startswith(f"reading s3://{bucket}/models/k.json {retried}")
    assert str(check.value) == f"checking s3://{bucket}/models/k.json {retried}"
    if xml:
        assert str(read.value).endswith("SlowDown: Please reduce your request rate.")
    assert proxy.attempts("POST", "big.bin?uploads") == 3  # the configured 1 + 2 retries
    assert proxy.attempts("GET", "k.json") == proxy.attempts("HEAD", "k.json") == 3
    assert not proxy.attempts("PUT", "big.bin")  # no part was sent without an upload id


def test_create_only_uploads_never_replace_an_object(client, tmp_path):
    """Single-part and multipart alike: the If-None-Match: * reaches the endpoint."""
    bucket = new_bucket(client)
    for name, size in (("small.bin", 1000), ("large.bin", 11 * 1024 * 1024)):
        first, second = tmp_path / f"first-{name}", tmp_path / f"second-{name}"
        first.write_bytes(os.urandom(size))
        second.write_bytes(os.urandom(size))
        upload_file(client, first, bucket, name, 5 * 1024 * 1024, create_only=True)
        with pytest.raises(PreconditionFailed, match=f"uploading .* to s3://{bucket}/{name}"):
            upload_file(client, second, bucket, name, 5 * 1024 * 1024, create_only=True)
        copy = download_file(client, bucket, name, tmp_path / f"copy-{name}")
        assert sha256_file(copy) == sha256_file(first)
    upload_file(client, second, bucket, "large.bin", 5 * 1024 * 1024)  # unconditional: replaces
    assert sha256_file(download_file(client, bucket, "large.bin", tmp_path / "c")) == sha256_file(
        second
    )
