"""The only place that calls minio's private API: conditional PutObject and multipart calls.

Why minio and not boto3: minio is what every part already uses (data sources, the request
log, the registry) and what the model-server image carries; boto3/botocore would be a second
S3 stack (~20 MB) with its own retry and credential rules, for two headers. minio 7.2.20 has
no public way to send If-None-Match / If-Match on PutObject: `put_object(metadata=...)`
renames unknown headers to `X-Amz-Meta-<name>`, so the condition would be stored as user
metadata and the write would go through. A presigned URL would put credentials in the
request URL. So these few calls use the private methods that `put_object` itself uses, with
the exact signatures pinned in PRIVATE_SIGNATURES; tests/test_minio_adapter.py fails when
the installed minio changes them (and the behaviour tests in tests/test_storage.py fail when
a condition stops being sent). minio is pinned.
"""

from __future__ import annotations

from minio import Minio
from minio.datatypes import CompleteMultipartUploadResult
from minio.helpers import md5sum_hash
from minio.xml import Element, SubElement, getbytes

# name -> parameter names, as minio 7.2.20 defines them (self excluded).
PRIVATE_SIGNATURES = {
    "_put_object": ("bucket_name", "object_name", "data", "headers", "query_params"),
    "_execute": (
        "method",
        "bucket_name",
        "object_name",
        "body",
        "headers",
        "query_params",
        "preload_content",
        "no_body_trace",
    ),
    "_create_multipart_upload": ("bucket_name", "object_name", "headers"),
    "_upload_part": ("bucket_name", "object_name", "data", "headers", "upload_id", "part_number"),
    "_abort_multipart_upload": ("bucket_name", "object_name", "upload_id"),
}


def put_object(client: Minio, bucket: str, key: str, data: bytes, headers: dict[str, str]) -> str:
    """One PutObject whose request headers (conditions included) are sent as given; ETag."""
    return client._put_object(bucket, key, data, headers).etag or ""


def create_multipart_upload(client: Minio, bucket: str, key: str, headers: dict[str, str]) -> str:
    return client._create_multipart_upload(bucket, key, headers)


def upload_part(
    client: Minio, bucket: str, key: str, data: bytes, upload_id: str, number: int
) -> str:
    return client._upload_part(bucket, key, data, None, upload_id, number)


def abort_multipart_upload(client: Minio, bucket: str, key: str, upload_id: str) -> None:
    client._abort_multipart_upload(bucket, key, upload_id)


def complete_multipart_upload(
    client: Minio,
    bucket: str,
    key: str,
    upload_id: str,
    parts: list[tuple[int, str]],
    headers: dict[str, str],
) -> str:
    """CompleteMultipartUpload with extra request headers; returns the object's ETag."""
    element = Element("CompleteMultipartUpload")
    for number, etag in parts:
        part = SubElement(element, "Part")
        SubElement(part, "PartNumber", str(number))
        SubElement(part, "ETag", f'"{etag}"')
    body = getbytes(element)
    response = client._execute(
        "POST",
        bucket,
        key,
        body=body,
        headers={"Content-Type": "application/xml", "Content-MD5": md5sum_hash(body), **headers},
        query_params={"uploadId": upload_id},
    )
    return CompleteMultipartUploadResult(response).etag or ""
