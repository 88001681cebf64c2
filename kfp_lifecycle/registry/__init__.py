"""The model registry: immutable numbered, signed versions of a bundle, and aliases.

One protocol (base.Registry), two implementations (local.LocalRegistry in a directory,
s3.S3Registry under s3://bucket/prefix), and here what every caller uses: opening a
registry by URI, the alias moves (promote, rollback, the gate-driven move after
registration), resolving `REGISTRY/MODEL@ALIAS`, and loading a version only after its
signature is verified, from the very bytes verified. No KFP import: the model server
imports this package.

Concurrency guarantee (tests/test_registry_race.py races 8 processes on both registries):
every alias move is a compare-and-swap computed from the record it replaces and retried on
conflict, so concurrent promote/rollback/register end in a state some serial order of them
gives; concurrent first registrations leave the best-scoring blessed version as champion.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from minio import Minio

from kfp_lifecycle.core.bundle import (
    METADATA_FILE,
    MODEL_FILE,
    REQUIRED_METADATA,
    Bundle,
    load_bundle,
    read_metadata,
    unpickle_model,
)
from kfp_lifecycle.core.errors import BundleError, RegistryError
from kfp_lifecycle.registry import signing
from kfp_lifecycle.registry.base import (
    CHAMPION,
    NAME_PATTERN,
    PREVIOUS,
    ModelVersion,
    Record,
    Registry,
    alias_record,
    alias_versions,
    check_name,
    check_settable,
    is_blessed,
    model_name_from,
    model_version_of,
    moved_to,
    offered,
    require_blessed,
    rolled_back,
)
from kfp_lifecycle.registry.local import LocalRegistry
from kfp_lifecycle.registry.local import read_bundle_bytes as read_local_bundle
from kfp_lifecycle.registry.s3 import S3Registry, read_bundle_bytes, read_bundle_metadata

__all__ = [
    "CHAMPION",
    "NAME_PATTERN",
    "PREVIOUS",
    "LocalRegistry",
    "ModelVersion",
    "Record",
    "Registry",
    "S3Registry",
    "alias_record",
    "alias_versions",
    "bundle_metadata",
    "check_name",
    "check_settable",
    "describe_versions",
    "download_version",
    "is_blessed",
    "load_version",
    "model_name_from",
    "model_version_of",
    "offer_champion",
    "open_registry",
    "promote",
    "repair",
    "require_blessed",
    "resolve_reference",
    "rollback",
    "set_alias",
    "verified_bytes",
]

log = logging.getLogger(__name__)


def open_registry(uri: str) -> LocalRegistry | S3Registry:
    """The registry behind a URI: a local path, file:// or s3://bucket/prefix."""
    if uri.startswith("s3://"):
        return S3Registry(uri)
    if "://" in uri and not uri.startswith("file://"):
        raise RegistryError(f"unsupported registry URI '{uri}': use a local path, file:// or s3://")
    return LocalRegistry(uri)


def set_alias(
    registry: Registry, model: str, alias: str, version: int, override_reason: str = ""
) -> None:
    """Point `alias` at a version (no blessing check: see promote); `champion` keeps its
    predecessor as `previous`."""
    check_settable(alias)
    registry.get(model, version)
    registry.update_alias(
        model, alias, lambda current: alias_record(alias, current, version, override_reason)
    )


def promote(registry: Registry, model: str, version: int, override_reason: str = "") -> None:
    """Make `version` the champion; a version the gate did not bless needs a stated reason.
    Its signature is verified first: nothing unauthentic becomes champion."""
    verified_bytes(registry, model, version)
    require_blessed(
        registry.metadata(model, version),
        f"version {version} of '{model}'",
        "promote",
        override_reason,
    )
    registry.update_alias(
        model, CHAMPION, lambda current: moved_to(current, version, override_reason)
    )


def rollback(registry: Registry, model: str) -> int:
    """Swap champion and `previous` in one compare-and-swap of champion.json; a second
    rollback undoes the first (override reasons included). Returns the new champion."""
    record = registry.update_alias(model, CHAMPION, lambda current: rolled_back(current, model))
    assert record is not None  # rolled_back never keeps the record as it is
    return int(record["version"])


def offer_champion(registry: Registry, model: str, version: int) -> bool:
    """The gate-driven move after registration; True when `version` became champion.

    The gate compared the candidate with the champion it saw (gate.baseline.version). If the
    champion moved since (a concurrent run), the candidate still wins only with a better test
    score than the new champion, decided under the compare-and-swap.
    """
    metadata = registry.metadata(model, version)
    if not is_blessed(metadata):
        return False
    baseline = ((metadata.get("gate") or {}).get("baseline") or {}).get("version")
    metric = metadata.get("primary_metric") or ""

    def score_of(number: int) -> float | None:
        found = metadata if number == version else registry.metadata(model, number)
        value = (found.get("metrics_test") or {}).get(metric)
        return None if value is None else float(value)

    record = registry.update_alias(
        model, CHAMPION, lambda current: offered(current, version, baseline, score_of, metric)
    )
    return record is not None and record["version"] == version


def describe_versions(registry: Registry, model: str) -> list[dict[str, Any]]:
    """One row per version: blessed or not, its test score, when, and the aliases on it."""
    aliases: dict[int, list[str]] = {}
    for alias, number in registry.aliases(model).items():
        aliases.setdefault(number, []).append(alias)
    rows = []
    for number in registry.versions(model):
        metadata = registry.metadata(model, number)
        metric = metadata.get("primary_metric")
        rows.append(
            {
                "version": number,
                "family": metadata.get("family"),
                "blessed": is_blessed(metadata),
                "metric": metric,
                "test_score": (metadata.get("metrics_test") or {}).get(metric),
                "registered_at": metadata.get("registered_at"),
                "signed": signing.SIGNATURE in metadata,
                "aliases": sorted(aliases.get(number, [])),
                "uri": registry.get(model, number).uri,
            }
        )
    return rows


def repair(registry: Registry, model: str) -> list[int]:
    """Remove the versions that have no metadata.json (never published); returns them."""
    broken = registry.broken_versions(model)
    for number in broken:
        registry.remove_version(model, number)
    return broken


def resolve_reference(uri: str) -> str:
    """The bundle URI behind `REGISTRY/MODEL@ALIAS` or `REGISTRY/MODEL@VERSION` (REGISTRY a
    path or s3:// URI); any other URI (a version's own directory or prefix) is returned as is."""
    location, at, reference = uri.removeprefix("file://").rpartition("@")
    if not at or Path(uri).exists():
        return uri
    registry_uri, _, model = location.rstrip("/").rpartition("/")
    registry = open_registry(registry_uri)
    if reference.isdigit():
        return registry.get(model, int(reference)).uri
    version = registry.alias(model, reference)
    if version is None:
        known = ", ".join(registry.aliases(model)) or "none"
        raise RegistryError(f"model '{model}' has no alias '{reference}'; aliases: {known}")
    return version.uri


def bundle_metadata(uri: str) -> dict[str, Any]:
    """metadata.json of a bundle directory or s3:// prefix, without fetching the model file."""
    if not uri.startswith("s3://"):
        return read_metadata(uri.removeprefix("file://"))
    from kfp_lifecycle.storage import s3_client

    found = read_bundle_metadata(s3_client(), uri)
    if found is None:
        raise RegistryError(f"{uri} is not a model bundle: metadata.json is missing")
    return found[1]


def _bundle_bytes(uri: str, client: Minio | None = None) -> tuple[bytes, bytes, str]:
    if uri.startswith("s3://"):
        from kfp_lifecycle.storage import s3_client

        return read_bundle_bytes(client or s3_client(), uri)
    return read_local_bundle(uri)


def _key_for(uri: str) -> bytes | None:
    """The verification key: the environment's, else a local registry's own key file
    (<registry>.signing-key beside the directory that holds <model>/versions/<n>)."""
    if uri.startswith("s3://"):
        return signing.signing_key(None)
    version_dir = Path(uri.removeprefix("file://")).absolute()
    return signing.signing_key(signing.local_key_file(version_dir.parent.parent.parent))


def verify_uri(uri: str, client: Minio | None = None) -> tuple[bytes, bytes, dict[str, Any]]:
    """(model bytes, metadata.json bytes, metadata) of a registered version, read once and
    verified: the `verify` hook every loader of registry models goes through before
    unpickling."""
    model, metadata_bytes, source = _bundle_bytes(uri, client)
    metadata = signing.verify(model, metadata_bytes, source, _key_for(uri))
    return model, metadata_bytes, _complete(metadata, source)


def verified_bytes(registry: Registry, model: str, version: int) -> tuple[bytes, dict[str, Any]]:
    data, metadata_bytes, source = registry.read_version(model, version)
    metadata = signing.verify(data, metadata_bytes, source, registry.signing_key())
    return data, _complete(metadata, source)


def _complete(metadata: dict[str, Any], source: str) -> dict[str, Any]:
    absent = [key for key in REQUIRED_METADATA if key not in metadata]
    if absent:
        raise BundleError(f"{source}: {METADATA_FILE} lacks required field(s): {', '.join(absent)}")
    return metadata


def load_version(
    uri: str, workdir: str | Path | None = None, client: Minio | None = None
) -> Bundle:
    """A registered version as a loaded bundle: its bytes are read once, the signature
    checked, and the pipeline unpickled from those same bytes (never re-read from disk).
    `workdir` is kept for callers' compatibility; nothing is written there."""
    data, _, metadata = verify_uri(uri, client)
    return Bundle(Path(uri), unpickle_model(data, metadata.get("format_version", 1)), metadata)


def load_served(directory: str | Path, require_signature: bool = False) -> Bundle:
    """The bundle a model server loads (a local directory: KServe's /mnt/models, a download,
    or a version inside a local registry), verified before it is unpickled.

    A signed bundle is always verified (with the configured key, or a local registry's own).
    An unsigned one is refused when `require_signature` (the cluster's ServingRuntime asks
    for it; LIFECYCLE_ALLOW_UNSIGNED=1 still accepts one, as every registry load does), else
    loaded after its sha256 check, with a warning: a bundle straight from a training run's
    output on a laptop is unsigned."""
    source = str(directory).removeprefix("file://")
    key = _key_for(source)
    model, metadata_bytes, source = read_local_bundle(source)
    if not require_signature and signing.SIGNATURE not in json.loads(metadata_bytes):
        log.warning("%s is unsigned: only its sha256 is checked", source)
        return load_bundle(source)
    metadata = _complete(signing.verify(model, metadata_bytes, source, key), source)
    return Bundle(Path(source), unpickle_model(model, metadata.get("format_version", 1)), metadata)


def download_version(
    uri: str, local_dir: str | Path, client: Minio | None = None
) -> dict[str, Any]:
    """Fetch a version (s3:// or local) into `local_dir` after verifying its signature;
    nothing unverified is written. Returns its metadata."""
    data, metadata_bytes, metadata = verify_uri(uri, client)
    local_dir = Path(local_dir)
    try:
        local_dir.mkdir(parents=True, exist_ok=True)
        (local_dir / MODEL_FILE).write_bytes(data)
        (local_dir / METADATA_FILE).write_bytes(metadata_bytes)
    except OSError as error:
        raise BundleError(f"cannot write {local_dir}: {error.strerror}") from None
    return metadata
