"""Authentic models: an HMAC-SHA256 signature over a version's model bytes and metadata.

The sha256 in metadata.json only proves the file was not damaged: whoever can write the
bucket can replace model.joblib and its hash together. The signature cannot be forged
without the key, and the key never goes into the registry:

    LIFECYCLE_SIGNING_KEY        the key itself (on a cluster: from a Kubernetes Secret)
    LIFECYCLE_SIGNING_KEY_FILE   or a file holding it
    LIFECYCLE_ALLOW_UNSIGNED=1   load unsigned versions (those registered before signing);
                                 a badly signed version is refused even then

With neither variable, a local registry uses (and on first registration creates, mode 0600)
the key file `<registry>.signing-key` beside the registry directory, so the local demo
signs and verifies without setup. An S3 registry has no such default: registering or
loading needs the key from the environment.

Signed message: a domain tag, the sha256 of the model bytes as read, and metadata.json in a
canonical form (sorted keys, no whitespace) without its own "signature" field. So the
metadata (schema, threshold, gate decision) is covered too, and the model is unpickled only
from the very bytes that were verified.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from kfp_lifecycle.core.errors import BundleError, RegistryError

KEY_ENV, KEY_FILE_ENV, ALLOW_UNSIGNED_ENV = (
    "LIFECYCLE_SIGNING_KEY",
    "LIFECYCLE_SIGNING_KEY_FILE",
    "LIFECYCLE_ALLOW_UNSIGNED",
)
SIGNATURE = "signature"
ALGORITHM = "hmac-sha256"
DOMAIN = b"kfp-lifecycle-model/v1\0"
LOCAL_KEY_SUFFIX = ".signing-key"

log = logging.getLogger(__name__)


def local_key_file(root: Path) -> Path:
    """The default key file of a local registry: beside the directory, not inside it."""
    return root.parent / f"{root.name}{LOCAL_KEY_SUFFIX}"


def signing_key(default_file: Path | None = None, create: bool = False) -> bytes | None:
    """The key from the environment, else from `default_file` (created when `create`)."""
    if value := os.environ.get(KEY_ENV):
        return value.encode()
    path = Path(os.environ[KEY_FILE_ENV]) if os.environ.get(KEY_FILE_ENV) else default_file
    if path is None:
        return None
    try:
        if not path.exists() and create and path == default_file:
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32))
            log.info("created the registry's signing key %s (keep it out of the registry)", path)
        if not path.exists():
            return None
        key = path.read_bytes().strip()
    except FileExistsError:  # another run created it a moment ago
        key = path.read_bytes().strip()
    except OSError as error:
        raise RegistryError(f"cannot read the signing key file {path}: {error}") from None
    if not key:
        raise RegistryError(f"the signing key file {path} is empty")
    return key


def canonical(metadata: dict[str, Any]) -> bytes:
    unsigned = {key: value for key, value in metadata.items() if key != SIGNATURE}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _mac(key: bytes, model_sha256: str, metadata: dict[str, Any]) -> str:
    message = DOMAIN + bytes.fromhex(model_sha256) + b"\0" + canonical(metadata)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """Names the key in the signature without revealing it (which key signed what)."""
    return hashlib.sha256(b"key-id\0" + key).hexdigest()[:12]


def sign(metadata: dict[str, Any], key: bytes) -> dict[str, Any]:
    """`metadata` (plain JSON values) with its signature added; sha256 is the model's."""
    plain = json.loads(json.dumps({k: v for k, v in metadata.items() if k != SIGNATURE}))
    value = _mac(key, plain["sha256"], plain)
    return {**plain, SIGNATURE: {"algorithm": ALGORITHM, "key_id": key_id(key), "value": value}}


def verify(model: bytes, metadata_bytes: bytes, source: str, key: bytes | None) -> dict[str, Any]:
    """The metadata of a version whose bytes are authentic, or BundleError (nothing loaded).

    Called on the bytes about to be unpickled, before joblib sees them.
    """
    try:
        metadata = json.loads(metadata_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{source}: metadata.json is not valid JSON: {error}") from None
    if not isinstance(metadata, dict) or "sha256" not in metadata:
        raise BundleError(f"{source}: metadata.json has no sha256: not a model bundle")
    actual = hashlib.sha256(model).hexdigest()
    signature = metadata.get(SIGNATURE)
    if signature is None:
        if os.environ.get(ALLOW_UNSIGNED_ENV) == "1" and actual == metadata["sha256"]:
            log.warning("%s is unsigned; loading it because %s=1", source, ALLOW_UNSIGNED_ENV)
            return metadata
        raise BundleError(
            f"{source} is not signed: refusing to load it (sign it by registering it again, or "
            f"set {ALLOW_UNSIGNED_ENV}=1 to accept unsigned models)"
        )
    if key is None:
        raise BundleError(
            f"{source} is signed but no signing key is configured to verify it: set "
            f"{KEY_ENV} or {KEY_FILE_ENV}"
        )
    expected = _mac(key, actual, metadata)
    if not isinstance(signature, dict) or not hmac.compare_digest(
        str(signature.get("value", "")), expected
    ):
        signer = signature.get("key_id") if isinstance(signature, dict) else "?"
        raise BundleError(
            f"{source} has a bad signature (model or metadata changed since registration, or "
            f"signed with another key: {signer} vs {key_id(key)}): refusing to load it"
        )
    if actual != metadata["sha256"]:  # covered by the signature; kept as a plain check
        raise BundleError(f"{source}: model bytes do not match the signed sha256")
    return metadata
