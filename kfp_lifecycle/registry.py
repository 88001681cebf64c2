"""The model registry: immutable numbered versions of a bundle, and aliases that point at them.

Layout (the same under a local directory and, later, an S3 prefix):

    <root>/<model>/versions/<n>/model.joblib
    <root>/<model>/versions/<n>/metadata.json
    <root>/<model>/aliases/<alias>.json      {"version": n, ...}

A version appears only once complete: it is written and verified in a staging directory,
then renamed into place (atomic on POSIX; the rename fails if another run took the number).
Aliases are replaced atomically under a lock, so concurrent updates are never lost.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfp_lifecycle.bundle import (
    MODEL_FILE,
    Bundle,
    load_bundle,
    read_metadata,
    verify_bundle,
    write_metadata,
)
from kfp_lifecycle.errors import RegistryError

if TYPE_CHECKING:
    from kfp_lifecycle.registry_s3 import S3Registry

CHAMPION = "champion"
PREVIOUS = "previous"
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def model_name_from(text: str) -> str:
    """A registry (and Kubernetes) safe name: lowercase letters, digits and dashes."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "model"


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    uri: str


class LocalRegistry:
    def __init__(self, root: str | Path):
        self.root = Path(str(root).removeprefix("file://")).absolute()

    def _model_dir(self, model: str) -> Path:
        if not NAME_PATTERN.match(model):
            raise RegistryError(
                f"invalid model name '{model}': use lowercase letters, digits and dashes"
            )
        return self.root / model

    def _version_dir(self, model: str, version: int) -> Path:
        return self._model_dir(model) / "versions" / str(version)

    def versions(self, model: str) -> list[int]:
        directory = self._model_dir(model) / "versions"
        if not directory.is_dir():
            return []
        return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())

    def register(self, model: str, bundle_dir: str | Path, extra: dict[str, Any]) -> ModelVersion:
        """Copy a verified bundle to the next free version number, `extra` added to its metadata."""
        verify_bundle(bundle_dir)
        versions_dir = self._model_dir(model) / "versions"
        versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self._model_dir(model)))
        try:
            shutil.copy2(Path(bundle_dir) / MODEL_FILE, staging / MODEL_FILE)
            metadata = read_metadata(bundle_dir)
            while True:
                number = (self.versions(model) or [0])[-1] + 1
                now = datetime.now(UTC).isoformat()
                write_metadata(
                    staging,
                    {**metadata, **extra, "registry_version": number, "registered_at": now},
                )
                verify_bundle(staging)
                try:
                    os.rename(staging, versions_dir / str(number))
                except OSError:  # another run published this number first: take the next
                    continue
                return ModelVersion(model, number, str(versions_dir / str(number)))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def get(self, model: str, version: int) -> ModelVersion:
        path = self._version_dir(model, version)
        if not path.is_dir():
            known = ", ".join(map(str, self.versions(model))) or "none"
            raise RegistryError(f"model '{model}' has no version {version}; versions: {known}")
        return ModelVersion(model, version, str(path))

    def metadata(self, model: str, version: int) -> dict[str, Any]:
        return read_metadata(self.get(model, version).uri)

    def alias(self, model: str, alias: str) -> ModelVersion | None:
        path = self._model_dir(model) / "aliases" / f"{alias}.json"
        if not path.is_file():
            return None
        return self.get(model, json.loads(path.read_text())["version"])

    def aliases(self, model: str) -> dict[str, int]:
        directory = self._model_dir(model) / "aliases"
        if not directory.is_dir():
            return {}
        return {
            p.stem: json.loads(p.read_text())["version"] for p in sorted(directory.glob("*.json"))
        }

    def set_alias(self, model: str, alias: str, version: int) -> None:
        """Point `alias` at a complete version; `champion` keeps its predecessor as `previous`."""
        target = self.get(model, version)
        verify_bundle(target.uri)
        with self._lock(model):
            if alias == CHAMPION:
                current = self.alias(model, CHAMPION)
                if current is not None and current.version != version:
                    self._write_alias(model, PREVIOUS, current.version)
            self._write_alias(model, alias, version)

    def _write_alias(self, model: str, alias: str, version: int) -> None:
        directory = self._model_dir(model) / "aliases"
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{alias}.{uuid.uuid4().hex}"
        record = {"version": version, "updated_at": datetime.now(UTC).isoformat()}
        temporary.write_text(json.dumps(record))
        os.replace(temporary, directory / f"{alias}.json")

    @contextmanager
    def _lock(self, model: str) -> Iterator[None]:
        self._model_dir(model).mkdir(parents=True, exist_ok=True)
        with open(self._model_dir(model) / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def open_registry(uri: str) -> LocalRegistry | S3Registry:
    """The registry behind a URI: a local path, file:// or s3://bucket/prefix."""
    if uri.startswith("s3://"):
        from kfp_lifecycle.registry_s3 import S3Registry  # it imports this module

        return S3Registry(uri)
    if "://" in uri and not uri.startswith("file://"):
        raise RegistryError(f"unsupported registry URI '{uri}': use a local path, file:// or s3://")
    return LocalRegistry(uri)


def promote(
    registry: LocalRegistry | S3Registry, model: str, version: int, override_reason: str = ""
) -> None:
    """Make `version` the champion; a version the gate did not bless needs a stated reason."""
    metadata = registry.metadata(model, version)
    if not metadata.get("gate", {}).get("blessed") and not override_reason:
        raise RegistryError(
            f"version {version} of '{model}' was not blessed by the gate; promoting it needs "
            "an explicit override reason (--override-reason)"
        )
    registry.set_alias(model, CHAMPION, version)


def rollback(registry: LocalRegistry | S3Registry, model: str) -> int:
    """Point the champion back at `previous` (which then holds the version rolled back)."""
    previous = registry.alias(model, PREVIOUS)
    if previous is None:
        raise RegistryError(f"model '{model}' has no previous champion to roll back to")
    registry.set_alias(model, CHAMPION, previous.version)
    return previous.version


def describe_versions(registry: LocalRegistry | S3Registry, model: str) -> list[dict[str, Any]]:
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
                "blessed": bool(metadata.get("gate", {}).get("blessed")),
                "metric": metric,
                "test_score": metadata.get("metrics_test", {}).get(metric),
                "registered_at": metadata.get("registered_at"),
                "aliases": sorted(aliases.get(number, [])),
                "uri": registry.get(model, number).uri,
            }
        )
    return rows


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
    from kfp_lifecycle.storage import parse_s3_uri, read_json, s3_client

    bucket, prefix = parse_s3_uri(uri)
    found = read_json(s3_client(), bucket, f"{prefix.rstrip('/')}/metadata.json".lstrip("/"))
    if found is None:
        raise RegistryError(f"{uri} is not a model bundle: metadata.json is missing")
    return found[0]


def load_version(uri: str, workdir: str | Path) -> Bundle:
    """A registered version as a loaded bundle; an s3:// one is downloaded into `workdir`
    and its sha256 checked while it downloads."""
    if not uri.startswith("s3://"):
        return load_bundle(uri.removeprefix("file://"))
    from kfp_lifecycle.storage import download_bundle

    local = Path(workdir) / "version"
    download_bundle(uri, local)
    return load_bundle(local)


def model_version_of(metadata: dict[str, Any]) -> str:
    """The version a server reports: the registry number, else a short content hash."""
    if metadata.get("registry_version") is not None:
        return str(metadata["registry_version"])
    return str(metadata["sha256"])[:12]
