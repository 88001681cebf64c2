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
  5. publish: create versions/<n>/metadata.json, signed (signing.py), with If-None-Match: *.
  A version exists (versions(), get(), alias targets) only once its metadata.json does, so
  a run that dies before step 5 leaves an invisible version whose number is never reused.

Alias moves are compare-and-swap: the record is read with its ETag, the new one computed from
it (base.py's transitions) and written with If-Match (If-None-Match: * when new); a refusal
(412) means another run moved it first, so the move is recomputed from the new record and
retried. champion.json also records the version it replaced
("previous"): a champion move and its `previous` are one atomic write, and `previous` is
read from there only (registry.alias_versions), so no crash between two writes can leave
them disagreeing. No previous.json is written; one left by earlier code is ignored.

A version's URI is s3://bucket/prefix/<model>/versions/<n>. KServe's storage initializer
copies every key that starts with its storageUri, so give KServe the URI plus a trailing "/":
without it, versions/1 also matches versions/10/, versions/11/, ...
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from minio import Minio

from kfp_lifecycle.core.bundle import METADATA_FILE, MODEL_FILE, verify_bundle
from kfp_lifecycle.core.errors import BundleError, RegistryError
from kfp_lifecycle.registry import signing
from kfp_lifecycle.registry.base import (
    CHAMPION,
    PREVIOUS,
    Change,
    ModelVersion,
    Record,
    alias_versions,
    check_name,
)
from kfp_lifecycle.registry.local import metadata_document
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
    remove_keys,
    s3_client,
    upload_file,
    write_json,
)

PROBE_KEY = ".conditional-write-probe"

log = logging.getLogger(__name__)


def read_bundle_metadata(client: Minio, uri: str) -> tuple[bytes, dict[str, Any]] | None:
    """metadata.json under an s3:// version prefix, as stored bytes and parsed; None when
    absent. The one place metadata is read from S3."""
    bucket, prefix = parse_s3_uri(uri)
    key = "/".join(p for p in (prefix.strip("/"), METADATA_FILE) if p)
    found = read_bytes(client, bucket, key)
    if found is None:
        return None
    import json

    try:
        return found[0], json.loads(found[0])
    except ValueError as error:
        raise BundleError(f"{uri.rstrip('/')}/{METADATA_FILE} is not valid JSON: {error}") from None


def read_bundle_bytes(client: Minio, uri: str) -> tuple[bytes, bytes, str]:
    """(model bytes, metadata bytes, where) of an s3:// bundle, each read once."""
    source = uri.rstrip("/")
    found = read_bundle_metadata(client, uri)
    if found is None:
        raise BundleError(f"{source} is not a complete model bundle: {METADATA_FILE} is missing")
    bucket, prefix = parse_s3_uri(uri)
    model = read_bytes(client, bucket, "/".join(p for p in (prefix.strip("/"), MODEL_FILE) if p))
    if model is None:
        raise BundleError(f"{source} is not a complete model bundle: {MODEL_FILE} is missing")
    return model[0], found[0], source


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
        check_name(model)
        return "/".join(part for part in (self.prefix, model, *parts) if part)

    def _version_key(self, model: str, version: int, name: str = "") -> str:
        return self._key(model, "versions", str(version), name)

    def _alias_key(self, model: str, alias: str) -> str:
        check_name(alias, "alias")
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
        """Published versions only: those whose metadata.json exists; leftovers of a
        registration that never published are named in a warning."""
        published = self._numbers(model, "versions", rf"(\d+)/{re.escape(METADATA_FILE)}")
        broken = sorted(set(self._numbers(model, "versions", r"(\d+)/.*")) - set(published))
        if broken:
            log.warning(
                "model '%s' in %s: version(s) %s have no %s (a registration that did not "
                "finish, or one still running) and are skipped; `lifecycle registry repair` "
                "removes them",
                model,
                self.uri,
                ", ".join(map(str, broken)),
                METADATA_FILE,
            )
        return published

    def broken_versions(self, model: str) -> list[int]:
        published = self._numbers(model, "versions", rf"(\d+)/{re.escape(METADATA_FILE)}")
        return sorted(set(self._numbers(model, "versions", r"(\d+)/.*")) - set(published))

    def remove_version(self, model: str, version: int) -> None:
        """Delete a version's objects, metadata.json first so it is never half visible.
        Its claim stays: the number is not given out again."""
        pointing = [a for a, n in self.aliases(model).items() if n == version]
        if pointing:
            raise RegistryError(
                f"version {version} of '{model}' is {', '.join(pointing)}: move the alias first"
            )
        base = self._version_key(model, version) + "/"
        with self._failures(f"removing version {version} of '{model}'"):
            keys = list_keys(self.client, self.bucket, base)
            if not keys:
                raise RegistryError(f"model '{model}' has no version {version}")
            first = [k for k in keys if k.endswith("/" + METADATA_FILE)]
            remove_keys(self.client, self.bucket, first + [k for k in keys if k not in first])

    def check_writable(self) -> None:
        """Reachable, credentials valid, writes allowed and conditional: one probe write."""
        with self._failures("checking the registry"):
            self._conditional_writes_checked = False
            self._check_conditional_writes()

    def signing_key(self, create: bool = False) -> bytes | None:
        return signing.signing_key(None)

    def register(self, model: str, bundle_dir: str | Path, extra: dict[str, Any]) -> ModelVersion:
        """Upload a verified bundle as the next free version, `extra` added to its metadata."""
        metadata = verify_bundle(bundle_dir)
        self._key(model)  # an invalid name fails before anything is written
        key = self.signing_key()
        if key is None:
            raise RegistryError(
                f"no signing key: set {signing.KEY_ENV} or {signing.KEY_FILE_ENV} to register "
                f"in {self.uri} (the key stays outside the bucket)"
            )
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
            self._publish(model, number, metadata_document(record, key))
        return ModelVersion(model, number, self._version_uri(model, number))

    def _claim(self, model: str) -> int:
        token = uuid.uuid4().hex
        for attempt in range(self.attempts):
            claimed = self._numbers(model, "claims", r"(\d+)")
            present = self._numbers(model, "versions", r"(\d+)/.*")  # broken ones too
            number = max([0, *claimed, *present]) + 1
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
        uri = self.get(model, version).uri  # a clear error for an unknown version
        with self._failures(f"reading version {version} of '{model}'"):
            found = read_bundle_metadata(self.client, uri)
        if found is None:
            raise RegistryError(f"version {version} of '{model}' in {self.uri} has no metadata")
        return found[1]

    def read_version(self, model: str, version: int) -> tuple[bytes, bytes, str]:
        uri = self.get(model, version).uri
        with self._failures(f"reading version {version} of '{model}'"):
            return read_bundle_bytes(self.client, uri)

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
            if (
                re.fullmatch(r"[a-z0-9-]+", name)
                and name != PREVIOUS
                and (found := self._read(key))
            ):
                records[name] = found[0]
        return alias_versions(records)

    def alias_record(self, model: str, alias: str) -> Record | None:
        found = self._read(self._alias_key(model, alias))
        return None if found is None else found[0]

    def update_alias(self, model: str, alias: str, change: Change) -> Record | None:
        """Compare-and-swap one alias object: the new record is computed from the one read,
        written only if that one is still there (its ETag), else recomputed and retried."""
        key = self._alias_key(model, alias)
        with self._failures(f"moving alias '{alias}' of '{model}'"):
            self._check_conditional_writes()
            for attempt in range(self.attempts):
                found = self._read(key)
                current, etag = found if found is not None else (None, None)
                record = change(current)
                if record is None:
                    return None
                if record.get("version") is not None and record["version"] != (current or {}).get(
                    "version"
                ):
                    self.get(model, record["version"])
                stamped = {**record, "updated_at": datetime.now(UTC).isoformat()}
                try:
                    write_json(
                        self.client,
                        self.bucket,
                        key,
                        stamped,
                        if_match=etag,
                        create_only=etag is None,
                    )
                    return record
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

    def _check_conditional_writes(self) -> None:
        """Once per instance, before the first write: see storage.check_conditional_writes."""
        if not self._conditional_writes_checked:
            probe = "/".join(part for part in (self.prefix, PROBE_KEY) if part)
            check_conditional_writes(self.client, self.bucket, probe)
            self._conditional_writes_checked = True


def _pause(attempt: int) -> None:
    """Wait before retrying a lost race: exponential with full jitter, so racers spread out."""
    time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
