"""One storage layer over the `minio` SDK for any S3 endpoint (MinIO, SeaweedFS, AWS S3).

Configuration comes from the environment, the variables KServe's storage initializer reads:

    AWS_ACCESS_KEY_ID        required
    AWS_SECRET_ACCESS_KEY    required
    AWS_SESSION_TOKEN        optional (temporary credentials)
    S3_ENDPOINT              host[:port] or http(s)://host[:port]; AWS_ENDPOINT_URL is read
                             when it is unset; default s3.amazonaws.com
    S3_USE_HTTPS             "1" or "0" (default "1"); when the endpoint has an http:// or
                             https:// scheme, the scheme decides and a contradicting value
                             is an error
    AWS_REGION               optional; AWS_DEFAULT_REGION is read when it is unset
    S3_CONNECT_TIMEOUT       seconds to connect (default 5)
    S3_READ_TIMEOUT          seconds without a byte before a request is given up (default 30)
    S3_DEADLINE              seconds one read operation may take in all, retries included
                             (default 120): no new attempt starts after it

Every failure reaches the caller as a one-line LifecycleError (StorageError, or BundleError
for content that does not match its sha256); credentials never appear in reprs or messages.
Every request (GET, HEAD, PUT, POST, DELETE: multipart create and complete are POSTs) is
retried with exponential backoff on connection errors, timeouts and HTTP 429/500/502/503/504,
a bounded number of times (see S3Config); the error after the last attempt names the HTTP
status and what was being done. A GET whose body is cut mid-stream (connection reset,
IncompleteRead) or stalls past the read timeout is started again from the first byte, until
the operation's deadline. Retrying a POST is safe here: a repeated
CompleteMultipartUpload of the same upload id is answered as the first one was, and a
repeated CreateMultipartUpload only leaves an unused upload id behind (a bucket lifecycle
rule with AbortIncompleteMultipartUpload cleans those up).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import check_bucket_name
from urllib3.util import Retry, Timeout

from kfp_lifecycle import minio_adapter
from kfp_lifecycle.core.errors import BundleError, LifecycleError

DEFAULT_ENDPOINT = "s3.amazonaws.com"
SLOW_DEADLINE = 120.0  # a client not made by s3_client()
# Files above this size are uploaded in parts of this size (minio's minimum part is 5 MiB).
PART_SIZE = 64 * 1024 * 1024
CHUNK = 1024 * 1024
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)
# Every verb the minio client sends; urllib3's default leaves out POST.
RETRIED_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})
# A conditional write lost a race: 412 PreconditionFailed, or 409 ConditionalRequestConflict
# (AWS, when conditional writes to one key overlap).
LOST_RACE_CODES = ("PreconditionFailed", "ConditionalRequestConflict")
MISSING_CODES = ("NoSuchKey", "NoSuchObject")
# A body cut or stalled mid-stream: the GET is started again.
CUT = (
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    urllib3.exceptions.IncompleteRead,
    urllib3.exceptions.SSLError,
)
# Read deadlines, by client (the minio client has no field of ours).
_DEADLINES: weakref.WeakKeyDictionary[Minio, float] = weakref.WeakKeyDictionary()

log = logging.getLogger(__name__)


class StorageError(LifecycleError):
    """An S3 request failed (unreachable endpoint, denied access, missing bucket, ...)."""


class PreconditionFailed(StorageError):
    """A conditional write found the object changed (or present) since it was read."""


@dataclass(frozen=True)
class S3Config:
    """Where and how to reach the endpoint; secrets are kept out of repr.

    Worst case a request takes (retries + 1) * (connect_timeout + read_timeout) plus the
    backoff sleeps (backoff * 2**k, each at most max_backoff) before it fails; a read
    operation starts no new attempt after `deadline` seconds.
    """

    endpoint: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    secure: bool = True
    region: str | None = None
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 8.0
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    deadline: float = 120.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> S3Config:
        """Read the variables in the module docstring; `options` set the retry/timeout fields."""
        env = os.environ if environ is None else environ
        access_key = _required(env, "AWS_ACCESS_KEY_ID")
        secret_key = _required(env, "AWS_SECRET_ACCESS_KEY")
        raw = env.get("S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL") or DEFAULT_ENDPOINT
        endpoint, secure = _parse_endpoint(raw, env.get("S3_USE_HTTPS"))
        return cls(
            endpoint=endpoint,
            access_key=access_key,
            secret_key=secret_key,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
            secure=secure,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            **{**_seconds(env), **options},
        )


def _seconds(env: Mapping[str, str]) -> dict[str, float]:
    """The timeouts set in the environment, each a positive number of seconds."""
    found = {}
    for name, field_name in (
        ("S3_CONNECT_TIMEOUT", "connect_timeout"),
        ("S3_READ_TIMEOUT", "read_timeout"),
        ("S3_DEADLINE", "deadline"),
    ):
        if raw := env.get(name, "").strip():
            try:
                value = float(raw)
            except ValueError:
                value = -1.0
            if not value > 0:
                raise LifecycleError(f"{name} must be a positive number of seconds, not '{raw}'")
            found[field_name] = value
    return found


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if not value:
        raise LifecycleError(
            f"{name} is not set: S3 access needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    return value


def _parse_endpoint(raw: str, use_https: str | None) -> tuple[str, bool]:
    """host[:port] and whether to use TLS, from an endpoint with or without a scheme."""
    flag = None
    if use_https is not None and use_https.strip():
        value = use_https.strip().lower()
        if value not in ("1", "0", "true", "false"):
            raise LifecycleError(f"S3_USE_HTTPS must be 1 or 0, not '{use_https}'")
        flag = value in ("1", "true")
    if "@" in raw:  # user:password@host: say so without echoing it
        raise LifecycleError(
            "the S3 endpoint must not embed credentials; use AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY"
        )
    match = re.fullmatch(r"(?:(https?)://)?([^/\s]+)/?", raw.strip())
    if not match:
        raise LifecycleError(
            f"S3 endpoint '{raw}' is not host[:port] or http(s)://host[:port] (no path)"
        )
    scheme, host = match.groups()
    if scheme is None:
        return host, True if flag is None else flag
    if flag is not None and flag != (scheme == "https"):
        raise LifecycleError(
            f"S3_USE_HTTPS={use_https} contradicts the endpoint's scheme {scheme}://"
        )
    return host, scheme == "https"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """("bucket", "key/prefix") from s3://bucket/key/prefix; the key may be empty."""
    if not uri.startswith("s3://"):
        raise LifecycleError(f"'{uri}' is not an S3 URI: expected s3://bucket/key")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise LifecycleError(f"'{uri}' names no bucket: expected s3://bucket/key")
    try:
        check_bucket_name(bucket, strict=True)
    except ValueError as error:
        raise LifecycleError(f"'{uri}': {error}") from None
    return bucket, key


def s3_client(config: S3Config | None = None) -> Minio:
    """A minio client whose connection pool retries transient failures with backoff."""
    config = config or S3Config.from_env()
    retry = Retry(
        total=config.retries,
        connect=config.retries,
        read=config.retries,
        status=config.retries,
        backoff_factor=config.backoff,
        backoff_max=config.max_backoff,
        status_forcelist=TRANSIENT_STATUSES,
        allowed_methods=RETRIED_METHODS,
        raise_on_status=False,  # the last reply reaches minio, which reports the S3 error code
        respect_retry_after_header=False,  # keeps the total time bounded
    )
    http = urllib3.PoolManager(
        timeout=Timeout(connect=config.connect_timeout, read=config.read_timeout),
        maxsize=16,
        retries=retry,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    client = Minio(
        config.endpoint,
        access_key=config.access_key,
        secret_key=config.secret_key,
        session_token=config.session_token,
        secure=config.secure,
        region=config.region,
        http_client=http,
    )
    _DEADLINES[client] = config.deadline
    return client


def _retrying_read(client: Minio, bucket: str, key: str, consume: Callable[[Any], Any]) -> Any:
    """GET `key` and hand the response to `consume`; a body cut or stalled mid-stream starts
    the GET again (consume must start from scratch each time), until the deadline."""
    deadline = time.monotonic() + _DEADLINES.get(client, SLOW_DEADLINE)
    attempt = 0
    while True:
        response = client.get_object(bucket, key)
        try:
            return consume(response)
        except CUT as error:
            attempt += 1
            if time.monotonic() >= deadline:
                raise StorageError(
                    f"reading {_uri(bucket, key)} failed: the body was cut or stalled "
                    f"{attempt} time(s) until the deadline ({type(error).__name__})"
                ) from None
            log.warning("reading %s: body cut (%s), reading again", _uri(bucket, key), error)
            time.sleep(min(2.0, 0.1 * 2**attempt))
        finally:
            response.close()
            response.release_conn()


@contextmanager
def s3_errors(action: str) -> Iterator[None]:
    """Turn client and transport failures into one-line StorageErrors without credentials.

    Each names the HTTP status the endpoint answered last, and says when that status is a
    transient one that was retried: "uploading ... failed after retries with backoff:
    HTTP 503 SlowDown: Please reduce your request rate."
    """
    try:
        yield
    except S3Error as error:
        kind = PreconditionFailed if error.code in LOST_RACE_CODES else StorageError
        response = getattr(error, "response", None)
        status = _failed(response.status if response is not None else None)
        raise kind(f"{action} {status} {error.code}: {error.message}") from error
    except ServerError as error:
        raise StorageError(f"{action} {_failed(error.status_code)}") from error
    except InvalidResponseError as error:
        # minio keeps the status only in its private `_code` (what its __reduce__ passes on).
        status = _failed(getattr(error, "_code", None))
        raise StorageError(f"{action} {status} (a reply that is not S3's XML)") from error
    except urllib3.exceptions.HTTPError as error:
        reason = getattr(error, "reason", None) or error
        detail = re.sub(r"<[^>]*>:?\s*", "", str(reason))  # drop "<HTTPConnection object at ..>"
        raise StorageError(
            f"{action} failed: endpoint unreachable ({type(reason).__name__}: {detail})"
        ) from error


def _failed(status: int | None) -> str:
    """ "failed: HTTP 404", or "failed after retries with backoff: HTTP 503" when transient."""
    if status is None:
        return "failed:"
    retried = " after retries with backoff" if status in TRANSIENT_STATUSES else ""
    return f"failed{retried}: HTTP {status}"


def _uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def exists(client: Minio, bucket: str, key: str) -> bool:
    with s3_errors(f"checking {_uri(bucket, key)}"):
        try:
            client.stat_object(bucket, key)
        except S3Error as error:
            if error.code in MISSING_CODES:
                return False
            raise
    return True


def list_keys(client: Minio, bucket: str, prefix: str) -> list[str]:
    """Every key under `prefix` (recursively), sorted."""
    with s3_errors(f"listing {_uri(bucket, prefix)}"):
        return sorted(
            item.object_name
            for item in client.list_objects(bucket, prefix=prefix, recursive=True)
            if item.object_name and not item.is_dir
        )


def upload_file(
    client: Minio,
    path: str | Path,
    bucket: str,
    key: str,
    part_size: int = PART_SIZE,
    *,
    create_only: bool = False,
) -> str:
    """Upload one file; above `part_size` it goes as a multipart upload. Returns the ETag.

    `create_only` makes the write conditional on the key being absent (`If-None-Match: *`
    on the PutObject, or on the CompleteMultipartUpload of a large file) and raises
    PreconditionFailed when the endpoint refuses it: an existing object is never replaced.
    That object may be this call's own, when a reply was lost and the PUT retried: a caller
    that must know compares what is stored (as S3Registry.register does).
    """
    with s3_errors(f"uploading {path} to {_uri(bucket, key)}"):
        if create_only:
            return _upload_new(client, Path(path), bucket, key, part_size)
        return client.fput_object(bucket, key, str(path), part_size=part_size).etag


def _upload_new(client: Minio, path: Path, bucket: str, key: str, part_size: int) -> str:
    """fput_object with `If-None-Match: *`, which minio's public API cannot send (see
    minio_adapter). Parts go one at a time."""
    condition = {"If-None-Match": "*"}
    headers = {"Content-Type": "application/octet-stream"}
    with open(path, "rb") as source:
        if path.stat().st_size <= part_size:
            data = source.read()
            return minio_adapter.put_object(client, bucket, key, data, {**headers, **condition})
        upload_id = minio_adapter.create_multipart_upload(client, bucket, key, headers)
        try:
            parts = []
            while data := source.read(part_size):
                number = len(parts) + 1
                etag = minio_adapter.upload_part(client, bucket, key, data, upload_id, number)
                parts.append((number, etag))
            return minio_adapter.complete_multipart_upload(
                client, bucket, key, upload_id, parts, condition
            )
        except BaseException:
            with suppress(Exception):  # the upload's failure is the error worth reporting
                minio_adapter.abort_multipart_upload(client, bucket, key, upload_id)
            raise


def download_file(
    client: Minio, bucket: str, key: str, path: str | Path, sha256: str | None = None
) -> Path:
    """Download one object; with `sha256`, a mismatching download is deleted, not kept.

    The data goes to a temporary file beside `path` that is renamed into place only once
    complete and verified, so `path` never holds a partial or unverified file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.urandom(8).hex()}.part")
    try:

        def save(response: Any) -> Any:
            digest = hashlib.sha256()
            with open(partial, "wb") as sink:  # from the first byte on every attempt
                for chunk in response.stream(CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
            return digest

        with s3_errors(f"downloading {_uri(bucket, key)}"):
            digest = _retrying_read(client, bucket, key, save)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise BundleError(
                f"{_uri(bucket, key)} does not match its recorded sha256 (expected {sha256}, "
                f"found {digest.hexdigest()}); refusing to keep a modified model file"
            )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def object_sha256(client: Minio, bucket: str, key: str) -> str:
    """The sha256 of what the endpoint actually stores, read back without touching disk."""

    def hash_body(response: Any) -> str:
        digest = hashlib.sha256()
        for chunk in response.stream(CHUNK):
            digest.update(chunk)
        return digest.hexdigest()

    with s3_errors(f"reading {_uri(bucket, key)}"):
        return _retrying_read(client, bucket, key, hash_body)


def upload_dir(
    client: Minio, directory: str | Path, bucket: str, prefix: str, part_size: int = PART_SIZE
) -> list[str]:
    """Upload every file under `directory` to `prefix/<relative path>`; returns the keys."""
    directory = Path(directory)
    keys = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        key = _join(prefix, path.relative_to(directory).as_posix())
        upload_file(client, path, bucket, key, part_size)
        keys.append(key)
    return keys


def download_dir(client: Minio, bucket: str, prefix: str, directory: str | Path) -> list[Path]:
    """Download every object under `prefix/` into `directory`, keeping relative paths."""
    base = _join(prefix, "")
    paths = []
    for key in list_keys(client, bucket, base):
        paths.append(download_file(client, bucket, key, Path(directory) / key[len(base) :]))
    return paths


def _join(prefix: str, name: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def read_bytes(client: Minio, bucket: str, key: str) -> tuple[bytes, str] | None:
    """The object's content and ETag, or None when it does not exist."""
    with s3_errors(f"reading {_uri(bucket, key)}"):
        try:
            return _retrying_read(
                client,
                bucket,
                key,
                lambda response: (response.read(), response.headers.get("etag", "").strip('"')),
            )
        except S3Error as error:
            if error.code in MISSING_CODES:
                return None
            raise


def read_json(client: Minio, bucket: str, key: str) -> tuple[Any, str] | None:
    """A small JSON object and its ETag (for a later `if_match`), or None when absent."""
    found = read_bytes(client, bucket, key)
    if found is None:
        return None
    data, etag = found
    try:
        return json.loads(data), etag
    except json.JSONDecodeError as error:
        raise StorageError(f"{_uri(bucket, key)} is not valid JSON: {error}") from None


def write_json(
    client: Minio,
    bucket: str,
    key: str,
    value: Any,
    *,
    if_match: str | None = None,
    create_only: bool = False,
) -> str:
    """Write a small JSON object, conditionally if asked; returns the new ETag."""
    data = json.dumps(value, indent=2, sort_keys=True).encode()
    return put_bytes(client, bucket, key, data, if_match=if_match, create_only=create_only)


def put_bytes(
    client: Minio,
    bucket: str,
    key: str,
    data: bytes,
    *,
    if_match: str | None = None,
    create_only: bool = False,
    content_type: str = "application/json",
) -> str:
    """PutObject of a small object; returns its ETag.

    `create_only` sends `If-None-Match: *` (fails if the key exists) and `if_match` sends
    `If-Match: "<etag>"` (fails if the object changed): either raises PreconditionFailed
    when the endpoint refuses the write.

    minio's public API cannot send these headers: minio_adapter says how they are sent.
    """
    if if_match is not None and create_only:
        raise ValueError("if_match and create_only exclude each other")
    headers = {"Content-Type": content_type}
    if create_only:
        headers["If-None-Match"] = "*"
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"'
    action = f"writing {_uri(bucket, key)}"
    with s3_errors(action):
        try:
            return minio_adapter.put_object(client, bucket, key, data, headers)
        except S3Error as error:
            if if_match is not None and error.code in MISSING_CODES:  # deleted since read
                raise PreconditionFailed(f"{action} failed: {error.code}") from error
            raise


def check_conditional_writes(client: Minio, bucket: str, key: str) -> None:
    """Refuse an endpoint that ignores If-None-Match / If-Match instead of silently racing.

    Writes a small probe object at `key`, then two writes that must be refused.
    """
    probe = json.dumps({"probe": "conditional writes"}).encode()
    with suppress(PreconditionFailed):  # already there, from an earlier check
        put_bytes(client, bucket, key, probe, create_only=True)
    for header, condition in (
        ("If-None-Match", {"create_only": True}),
        ("If-Match", {"if_match": "0" * 32}),
    ):
        try:
            put_bytes(client, bucket, key, probe, **condition)
        except PreconditionFailed:
            continue
        raise StorageError(
            f"the S3 endpoint ignores {header} on PutObject: "
            "concurrent registry updates would be lost; use an endpoint that supports "
            "If-None-Match and If-Match on PutObject"
        )


def copy_key(client: Minio, bucket: str, source: str, key: str) -> None:
    """Server-side copy within a bucket (no data through this machine; up to 5 GiB)."""
    from minio.commonconfig import CopySource

    with s3_errors(f"copying {_uri(bucket, source)} to {_uri(bucket, key)}"):
        client.copy_object(bucket, key, CopySource(bucket, source))


def remove_keys(client: Minio, bucket: str, keys: list[str]) -> None:
    """Delete the keys in the order given (one request each: the order is the point; absent
    keys are no error, as in S3 itself)."""
    for key in keys:
        with s3_errors(f"removing {_uri(bucket, key)}"):
            client.remove_object(bucket, key)
