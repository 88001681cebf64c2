"""The model registry on S3: LocalRegistry's interface and layout under s3://bucket/prefix/.

    <prefix>/<model>/versions/<n>/model.joblib
    <prefix>/<model>/versions/<n>/metadata.json     written last: it publishes version n
    <prefix>/<model>/aliases/<alias>.json           {"version": n, "updated_at": ...}
    <prefix>/<model>/aliases/champion.json          {"version": n, "previous": m, ...}
    <prefix>/<model>/claims/<n>                     {"owner": ..., "claimed_at": ...}

S3 has neither rename nor locks, so every step that must not race is a conditional
PutObject: `If-None-Match: *` creates only if the key is absent, `If-Match: <etag>` replaces
only the object that was read. A refused write (412) means another run got there first.

register:
  1. verify the local bundle;
  2. claim n = 1 + the highest claimed or published number by creating claims/<n> with
     If-None-Match: * and a random token, then reading it back: n is ours only if the claim
     holds our token; otherwise list again and claim the next number;
  3. upload model.joblib to versions/<n>/ (multipart when large) with If-None-Match: *, so
     no other run's upload is ever replaced (a refusal is our own retried write or a
     broken claim: step 4 tells them apart);
  4. read the stored object back: its sha256 must be the bundle's;
  5. publish: create versions/<n>/metadata.json with If-None-Match: *.
  A version exists (versions(), get(), alias targets) only once its metadata.json does, so
  a run that dies before step 5 leaves an invisible version whose number is never reused.

Aliases are read with their ETag and written with If-Match (If-None-Match: * when new),
read and retried on refusal. champion.json also records the version it replaced
("previous"): a champion move and its `previous` are one atomic write, and `previous` is
read from there only (registry.alias_versions), so no crash between two writes can leave
them disagreeing. No previous.json is written; one left by earlier code is ignored.

A version's URI is s3://bucket/prefix/<model>/versions/<n>. KServe's storage initializer
copies every key that starts with its storageUri, so give KServe the URI plus a trailing "/":
without it, versions/1 also matches versions/10/, versions/11/, ...
"""

from __future__ import annotations

import random
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from minio import Minio

from kfp_lifecycle.core.bundle import METADATA_FILE, MODEL_FILE, verify_bundle, write_metadata
from kfp_lifecycle.core.errors import BundleError, RegistryError
from kfp_lifecycle.registry import (
    CHAMPION,
    NAME_PATTERN,
    PREVIOUS,
    ModelVersion,
    Record,
    alias_record,
    alias_versions,
    check_settable,
)
from kfp_lifecycle.storage import (
    PreconditionFailed,
    StorageError,
    check_conditional_writes,
    exists,
    list_keys,
    object_sha256,
    parse_s3_uri,
    put_bytes,
    read_bytes,
    read_json,
    s3_client,
    upload_file,
    write_json,
)

PROBE_KEY = ".conditional-write-probe"


class S3Registry:
    def __init__(self, uri: str, client: Minio | None = None, attempts: int = 30):
        """`attempts` bounds how often a claim or alias update is retried after losing a race."""
        self.bucket, prefix = parse_s3_uri(uri)
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.client = client or s3_client()
        self.attempts = attempts
        self._conditional_writes_checked = False

    def _key(self, model: str, *parts: str) -> str:
        if not NAME_PATTERN.match(model):
            raise RegistryError(
                f"invalid model name '{model}': use lowercase letters, digits and dashes"
            )
        return "/".join(part for part in (self.prefix, model, *parts) if part)

    def _version_key(self, model: str, version: int, name: str = "") -> str:
        return self._key(model, "versions", str(version), name)

    def _alias_key(self, model: str, alias: str) -> str:
        if not NAME_PATTERN.match(alias):
            raise RegistryError(f"invalid alias '{alias}': use lowercase letters, digits, dashes")
        return self._key(model, "aliases", f"{alias}.json")

    def _s3_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _version_uri(self, model: str, version: int) -> str:
        """With a trailing slash: KServe's storage initializer downloads every key under the
        storageUri as a prefix, so without it `versions/1` would also fetch `versions/10/`."""
        return self._s3_uri(self._version_key(model, version)) + "/"

    @contextmanager
    def _failures(self, action: str) -> Iterator[None]:
        """Report a storage failure as a RegistryError saying what was being done."""
        try:
            yield
        except StorageError as error:
            raise RegistryError(f"{action} in {self.uri}: {error}") from error

    def _numbers(self, model: str, folder: str, pattern: str) -> list[int]:
        base = self._key(model, folder) + "/"
        with self._failures(f"listing {folder} of '{model}'"):
            keys = list_keys(self.client, self.bucket, base)
        found = (re.fullmatch(pattern, key[len(base) :]) for key in keys)
        return sorted(int(match.group(1)) for match in found if match)

    def versions(self, model: str) -> list[int]:
        """Published versions only: those whose metadata.json exists."""
        return self._numbers(model, "versions", rf"(\d+)/{re.escape(METADATA_FILE)}")

    def register(self, model: str, bundle_dir: str | Path, extra: dict[str, Any]) -> ModelVersion:
        """Upload a verified bundle as the next free version, `extra` added to its metadata."""
        metadata = verify_bundle(bundle_dir)
        self._key(model)  # an invalid name fails before anything is written
        with self._failures(f"registering '{model}'"):
            self._check_conditional_writes()
            number = self._claim(model)
            model_key = self._version_key(model, number, MODEL_FILE)
            with suppress(PreconditionFailed):  # already there: checked just below
                upload_file(
                    self.client,
                    Path(bundle_dir) / MODEL_FILE,
                    self.bucket,
                    model_key,
                    create_only=True,
                )
            now = datetime.now(UTC).isoformat()
            record = {**metadata, **extra, "registry_version": number, "registered_at": now}
            stored = object_sha256(self.client, self.bucket, model_key)
            if stored != record["sha256"]:
                raise RegistryError(
                    f"{self._s3_uri(model_key)} holds sha256 {stored}, not this run's model "
                    f"({record['sha256']}); version {number} of '{model}' is left unpublished"
                )
            self._publish(model, number, _metadata_document(record))
        return ModelVersion(model, number, self._version_uri(model, number))

    def _claim(self, model: str) -> int:
        token = uuid.uuid4().hex
        for attempt in range(self.attempts):
            claimed = self._numbers(model, "claims", r"(\d+)")
            number = max([0, *claimed, *self.versions(model)]) + 1
            key = self._key(model, "claims", str(number))
            claim = {"owner": token, "claimed_at": datetime.now(UTC).isoformat()}
            with suppress(PreconditionFailed):
                write_json(self.client, self.bucket, key, claim, create_only=True)
            # Read the claim back either way: a refused write may be our own earlier try whose
            # reply was lost, and an accepted one may have been overwritten by a racer on a
            # server whose If-None-Match check is not atomic (moto, seaweedfs issue #8800).
            found = read_json(self.client, self.bucket, key)
            if found is not None and found[0].get("owner") == token:
                return number
            _pause(attempt)
        raise RegistryError(
            f"could not claim a version number for '{model}' in {self.uri}: "
            f"{self.attempts} attempts all lost to concurrent registrations"
        )

    def _publish(self, model: str, number: int, document: bytes) -> None:
        """Create metadata.json, after which version `number` is visible."""
        key = self._version_key(model, number, METADATA_FILE)
        try:
            put_bytes(self.client, self.bucket, key, document, create_only=True)
        except PreconditionFailed:
            found = read_bytes(self.client, self.bucket, key)
            if found is None or found[0] != document:  # not just our own retried write
                raise RegistryError(
                    f"version {number} of '{model}' in {self.uri} was published by another "
                    "run although this run claimed it: the endpoint's conditional writes "
                    "are not exclusive"
                ) from None

    def get(self, model: str, version: int) -> ModelVersion:
        key = self._version_key(model, version, METADATA_FILE)
        with self._failures(f"looking up version {version} of '{model}'"):
            published = exists(self.client, self.bucket, key)
        if not published:
            known = ", ".join(map(str, self.versions(model))) or "none"
            raise RegistryError(f"model '{model}' has no version {version}; versions: {known}")
        return ModelVersion(model, version, self._version_uri(model, version))

    def metadata(self, model: str, version: int) -> dict[str, Any]:
        self.get(model, version)  # a clear error for an unknown or unpublished version
        with self._failures(f"reading version {version} of '{model}'"):
            found = read_json(
                self.client, self.bucket, self._version_key(model, version, METADATA_FILE)
            )
        if found is None:
            raise RegistryError(f"version {version} of '{model}' in {self.uri} has no metadata")
        return found[0]

    def alias(self, model: str, alias: str) -> ModelVersion | None:
        stored = CHAMPION if alias == PREVIOUS else alias  # `previous` is in champion.json
        found = self._read(self._alias_key(model, stored))
        number = None if found is None else alias_versions({stored: found[0]}).get(alias)
        return None if number is None else self.get(model, number)

    def aliases(self, model: str) -> dict[str, int]:
        base = self._key(model, "aliases") + "/"
        with self._failures(f"listing aliases of '{model}'"):
            keys = list_keys(self.client, self.bucket, base)
        records = {}
        for key in keys:
            name = key[len(base) :].removesuffix(".json")
            if NAME_PATTERN.match(name) and name != PREVIOUS and (found := self._read(key)):
                records[name] = found[0]
        return alias_versions(records)

    def set_alias(self, model: str, alias: str, version: int, override_reason: str = "") -> None:
        """Point `alias` at a complete version; `champion` keeps its predecessor as `previous`;
        an override reason is kept in the record.

        One conditional write of one object, so it either happens whole or not at all.
        """
        check_settable(alias)
        self.get(model, version)
        self._verify(model, version)
        with self._failures(f"moving alias '{alias}' of '{model}' to version {version}"):
            self._check_conditional_writes()
            self._swap(
                model,
                alias,
                lambda current: alias_record(alias, current, version, override_reason),
            )

    def _swap(self, model: str, alias: str, change: Callable[[Record | None], Record]) -> None:
        """Compare-and-swap an alias object: re-read and retry when another run wrote first.

        `change` maps the current record (None when there is none) to the new one.
        """
        key = self._alias_key(model, alias)
        for attempt in range(self.attempts):
            found = self._read(key)
            current, etag = found if found is not None else (None, None)
            record = {**change(current), "updated_at": datetime.now(UTC).isoformat()}
            try:
                write_json(
                    self.client, self.bucket, key, record, if_match=etag, create_only=etag is None
                )
                return
            except PreconditionFailed:
                _pause(attempt)
        raise RegistryError(
            f"alias '{alias}' of '{model}' in {self.uri} kept changing during this update; "
            f"gave up after {self.attempts} attempts"
        )

    def _read(self, key: str) -> tuple[Record, str] | None:
        """An alias record and its ETag (or None); the one place aliases are read."""
        with self._failures("reading an alias"):
            return read_json(self.client, self.bucket, key)

    def _verify(self, model: str, version: int) -> None:
        """Re-hash the stored model file against its metadata before anything points at it."""
        metadata_key = self._version_key(model, version, METADATA_FILE)
        with self._failures(f"verifying version {version} of '{model}'"):
            found = read_json(self.client, self.bucket, metadata_key)
            if found is None or "sha256" not in found[0]:
                raise BundleError(f"{self._s3_uri(metadata_key)} is missing or has no sha256")
            expected = found[0]["sha256"]
            model_key = self._version_key(model, version, MODEL_FILE)
            if not exists(self.client, self.bucket, model_key):
                raise BundleError(f"{self._s3_uri(model_key)} is missing")
            actual = object_sha256(self.client, self.bucket, model_key)
        if actual != expected:
            raise BundleError(
                f"{self._s3_uri(model_key)} does not match its recorded sha256 (expected "
                f"{expected}, found {actual}); refusing to point an alias at a modified model"
            )

    def _check_conditional_writes(self) -> None:
        """Once per instance, before the first write: see storage.check_conditional_writes."""
        if not self._conditional_writes_checked:
            probe = "/".join(part for part in (self.prefix, PROBE_KEY) if part)
            check_conditional_writes(self.client, self.bucket, probe)
            self._conditional_writes_checked = True


def _pause(attempt: int) -> None:
    """Wait before retrying a lost race: exponential with full jitter, so racers spread out."""
    time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))


def _metadata_document(metadata: dict[str, Any]) -> bytes:
    """metadata.json exactly as LocalRegistry writes it (same serialisation, numpy values too)."""
    with tempfile.TemporaryDirectory() as staging:
        write_metadata(staging, metadata)
        return (Path(staging) / METADATA_FILE).read_bytes()
