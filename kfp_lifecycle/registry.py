"""The model registry: immutable numbered versions of a bundle, and aliases that point at them.

Layout (the same under a local directory and, later, an S3 prefix):

    <root>/<model>/versions/<n>/model.joblib
    <root>/<model>/versions/<n>/metadata.json
    <root>/<model>/aliases/<alias>.json      {"version": n, ...}
    <root>/<model>/aliases/champion.json     {"version": n, "previous": m, ...}

A version appears only once complete: it is written and verified in a staging directory,
then renamed into place (atomic on POSIX; the rename fails if another run took the number).
Published versions are readable by everyone (0755 directories, 0644 files), like any
directory a model server running as another user has to read.
Aliases are replaced atomically under a lock, so concurrent updates are never lost.

`previous` is not an alias file of its own: champion.json records the champion it replaced,
so a champion move and its `previous` change in one atomic write and can never disagree
(two files would, after a crash between their writes). Every reader of `previous`
(alias(), aliases(), rollback) takes it from champion.json.
"""

from __future__ import annotations

import errno
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

from kfp_lifecycle.core.bundle import (
    METADATA_FILE,
    MODEL_FILE,
    Bundle,
    load_bundle,
    read_metadata,
    verify_bundle,
    write_metadata,
)
from kfp_lifecycle.core.errors import RegistryError

if TYPE_CHECKING:
    from kfp_lifecycle.registry_s3 import S3Registry

CHAMPION = "champion"
PREVIOUS = "previous"
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DIRECTORY_MODE, FILE_MODE = 0o755, 0o644
# What rename() of a staging directory onto an existing version directory fails with.
TAKEN = (errno.EEXIST, errno.ENOTEMPTY)
Record = dict[str, Any]


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
        """Copy a verified bundle to the next free version number, `extra` added to its metadata.

        A filesystem failure (no permission, disk full, ...) is a RegistryError naming the
        path; only "that number is taken" (another run published it first) is retried.
        """
        verify_bundle(bundle_dir)
        try:
            return self._publish(model, Path(bundle_dir), extra)
        except OSError as error:
            raise RegistryError(f"cannot register '{model}' in {self.root}: {error}") from error

    def _publish(self, model: str, bundle_dir: Path, extra: dict[str, Any]) -> ModelVersion:
        model_dir = self._model_dir(model)
        versions_dir = model_dir / "versions"
        versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
        try:
            os.chmod(staging, DIRECTORY_MODE)  # mkdtemp makes it 0700: readable by us only
            shutil.copy2(bundle_dir / MODEL_FILE, staging / MODEL_FILE)
            os.chmod(staging / MODEL_FILE, FILE_MODE)
            metadata = read_metadata(bundle_dir)
            while True:
                number = (self.versions(model) or [0])[-1] + 1
                now = datetime.now(UTC).isoformat()
                write_metadata(
                    staging,
                    {**metadata, **extra, "registry_version": number, "registered_at": now},
                )
                os.chmod(staging / METADATA_FILE, FILE_MODE)
                verify_bundle(staging)
                target = versions_dir / str(number)
                try:
                    os.rename(staging, target)
                except OSError as error:
                    if error.errno in TAKEN:  # another run published this number first
                        continue
                    raise
                return ModelVersion(model, number, str(target))
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

    def _records(self, model: str) -> dict[str, Record]:
        """The alias files as stored; see alias_versions for what they mean."""
        directory = self._model_dir(model) / "aliases"
        if not directory.is_dir():
            return {}
        return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}

    def alias(self, model: str, alias: str) -> ModelVersion | None:
        number = alias_versions(self._records(model)).get(alias)
        return None if number is None else self.get(model, number)

    def aliases(self, model: str) -> dict[str, int]:
        return alias_versions(self._records(model))

    def set_alias(self, model: str, alias: str, version: int, override_reason: str = "") -> None:
        """Point `alias` at a complete version; `champion` keeps its predecessor as `previous`.
        An override reason (a version the gate refused) is kept in the alias record."""
        check_settable(alias)
        target = self.get(model, version)
        verify_bundle(target.uri)
        with self._lock(model):
            current = self._records(model).get(alias)
            self._write_alias(model, alias, alias_record(alias, current, version, override_reason))

    def _write_alias(self, model: str, alias: str, record: Record) -> None:
        directory = self._model_dir(model) / "aliases"
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{alias}.{uuid.uuid4().hex}"
        temporary.write_text(json.dumps({**record, "updated_at": datetime.now(UTC).isoformat()}))
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


def alias_versions(records: dict[str, Record]) -> dict[str, int]:
    """Alias name -> version, from the stored alias records of one model.

    `previous` comes from champion.json's "previous" field only; a previous.json (written by
    earlier versions of this code) is ignored, so it can never contradict the champion.
    """
    versions = {name: record["version"] for name, record in records.items() if name != PREVIOUS}
    champion = records.get(CHAMPION) or {}
    if champion.get("previous") is not None:
        versions[PREVIOUS] = champion["previous"]
    return versions


def alias_record(
    alias: str, current: Record | None, version: int, override_reason: str = ""
) -> Record:
    """The record `alias` gets when it moves to `version` (both registries write this)."""
    record = next_champion(current, version) if alias == CHAMPION else {"version": version}
    return {**record, "override_reason": override_reason} if override_reason else record


def next_champion(current: Record | None, version: int) -> Record:
    """The champion record after moving to `version`: the replaced champion becomes `previous`."""
    if current is None:
        return {"version": version}
    if current["version"] == version:
        return {key: current[key] for key in ("version", "previous") if key in current}
    return {"version": version, "previous": current["version"]}


def check_settable(alias: str) -> None:
    """`previous` follows the champion; setting it by hand would rewrite the champion's past."""
    if alias == PREVIOUS:
        raise RegistryError(
            f"'{PREVIOUS}' is kept by the registry as the champion before the current one; "
            "promote a version or roll back instead of setting it"
        )


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
    registry.set_alias(model, CHAMPION, version, override_reason)


def rollback(registry: LocalRegistry | S3Registry, model: str) -> int:
    """Point the champion back at `previous` (as champion.json records it); afterwards
    `previous` is the version rolled back from, so a second rollback undoes the first."""
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
