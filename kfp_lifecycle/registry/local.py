"""The registry in a local directory.

    <root>/<model>/versions/<n>/model.joblib
    <root>/<model>/versions/<n>/metadata.json     signed (see signing.py)
    <root>/<model>/aliases/<alias>.json           {"version": n, ...}
    <root>/<model>/aliases/champion.json          {"version": n, "previous": m, ...}

A version appears only once complete: it is written and verified in a staging directory,
then renamed into place (atomic on POSIX; the rename fails if another run took the number).
Published versions are readable by everyone (0755 directories, 0644 files).

Alias moves are compare-and-swap: under an exclusive fcntl lock on <model>/.lock (held
across processes), the current record is read, the new one computed from it, written to a
temporary file and renamed over the alias. Every OSError (read-only or full disk, no
permission) becomes a one-line RegistryError and no temporary file is left behind.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kfp_lifecycle.core.bundle import METADATA_FILE, MODEL_FILE, read_metadata, verify_bundle
from kfp_lifecycle.core.errors import LifecycleError, RegistryError
from kfp_lifecycle.registry import signing
from kfp_lifecycle.registry.base import (
    Change,
    ModelVersion,
    Record,
    alias_versions,
    check_name,
)

DIRECTORY_MODE, FILE_MODE = 0o755, 0o644
# What rename() of a staging directory onto an existing version directory fails with.
TAKEN = (errno.EEXIST, errno.ENOTEMPTY)

log = logging.getLogger(__name__)


class LocalRegistry:
    def __init__(self, root: str | Path):
        self.root = Path(str(root).removeprefix("file://")).absolute()
        self.uri = str(self.root)

    def signing_key(self, create: bool = False) -> bytes | None:
        return signing.signing_key(signing.local_key_file(self.root), create=create)

    @contextmanager
    def _os_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except OSError as error:
            raise RegistryError(f"{action} in {self.root}: {error}") from None

    def _model_dir(self, model: str) -> Path:
        return self.root / check_name(model)

    def _version_dir(self, model: str, version: int) -> Path:
        return self._model_dir(model) / "versions" / str(version)

    def _numbers(self, model: str) -> list[int]:
        """Every numbered directory, complete or not: a number is never given out twice."""
        directory = self._model_dir(model) / "versions"
        with self._os_errors(f"listing versions of '{model}'"):
            if not directory.is_dir():
                return []
            return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())

    def broken_versions(self, model: str) -> list[int]:
        return [n for n in self._numbers(model) if not self._complete(model, n)]

    def _complete(self, model: str, number: int) -> bool:
        return (self._version_dir(model, number) / METADATA_FILE).is_file()

    def versions(self, model: str) -> list[int]:
        numbers = self._numbers(model)
        broken = [n for n in numbers if not self._complete(model, n)]
        if broken:
            log.warning(
                "model '%s' in %s: version(s) %s have no %s and are skipped; "
                "`lifecycle registry repair` removes them",
                model,
                self.root,
                ", ".join(map(str, broken)),
                METADATA_FILE,
            )
        return [n for n in numbers if n not in broken]

    def check_writable(self) -> None:
        """Create and remove a probe file where versions go (or in the nearest existing
        directory above, so a check leaves nothing behind): fails fast, before training."""
        try:
            where = self.root
            while not where.exists() and where != where.parent:
                where = where.parent
            probe = where / f".probe-{uuid.uuid4().hex}"
            try:
                probe.write_bytes(b"probe")
            finally:
                probe.unlink(missing_ok=True)
        except OSError as error:
            raise RegistryError(f"not writable: {error}") from None

    def register(self, model: str, bundle_dir: str | Path, extra: dict[str, Any]) -> ModelVersion:
        """Copy a verified bundle to the next free version number, `extra` added to its
        metadata, signed. Only "that number is taken" (another run was first) is retried."""
        verify_bundle(bundle_dir)
        check_name(model)
        with self._os_errors(f"cannot register '{model}'"):
            key = self.signing_key(create=True)
            return self._publish(model, Path(bundle_dir), extra, key)

    def _publish(
        self, model: str, bundle_dir: Path, extra: dict[str, Any], key: bytes | None
    ) -> ModelVersion:
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
                number = (self._numbers(model) or [0])[-1] + 1
                now = datetime.now(UTC).isoformat()
                record = {**metadata, **extra, "registry_version": number, "registered_at": now}
                document = metadata_document(record, key)
                (staging / METADATA_FILE).write_bytes(document)
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
        if not (path / METADATA_FILE).is_file():
            known = ", ".join(map(str, self.versions(model))) or "none"
            state = "an incomplete" if path.is_dir() else "no"
            raise RegistryError(f"model '{model}' has {state} version {version}; versions: {known}")
        return ModelVersion(model, version, str(path))

    def metadata(self, model: str, version: int) -> dict[str, Any]:
        return read_metadata(self.get(model, version).uri)

    def read_version(self, model: str, version: int) -> tuple[bytes, bytes, str]:
        """(model bytes, metadata.json bytes, where): what load_version verifies."""
        return read_bundle_bytes(self.get(model, version).uri)

    def _records(self, model: str) -> dict[str, Record]:
        directory = self._model_dir(model) / "aliases"
        with self._os_errors(f"reading aliases of '{model}'"):
            if not directory.is_dir():
                return {}
            return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}

    def alias(self, model: str, alias: str) -> ModelVersion | None:
        number = alias_versions(self._records(model)).get(alias)
        return None if number is None else self.get(model, number)

    def aliases(self, model: str) -> dict[str, int]:
        return alias_versions(self._records(model))

    def alias_record(self, model: str, alias: str) -> Record | None:
        return self._records(model).get(alias)

    def update_alias(self, model: str, alias: str, change: Change) -> Record | None:
        """Read-compute-replace under an exclusive lock: the change sees the record it replaces."""
        check_name(alias, "alias")
        with self._os_errors(f"cannot move alias '{alias}' of '{model}'"), self._lock(model):
            path = self._model_dir(model) / "aliases" / f"{alias}.json"
            current = json.loads(path.read_text()) if path.is_file() else None
            record = change(current)
            if record is None:
                return None
            if record.get("version") is not None:
                self.get(model, record["version"])
            self._write_alias(path, {**record, "updated_at": datetime.now(UTC).isoformat()})
            return record

    def _write_alias(self, path: Path, record: Record) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex}")
        try:
            with open(temporary, "w") as handle:
                handle.write(json.dumps(record))
                handle.flush()
                os.fsync(handle.fileno())  # a full disk fails here, not after the rename
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    @contextmanager
    def _lock(self, model: str) -> Iterator[None]:
        self._model_dir(model).mkdir(parents=True, exist_ok=True)
        with open(self._model_dir(model) / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def remove_version(self, model: str, version: int) -> None:
        path = self._version_dir(model, version)
        with self._os_errors(f"cannot remove version {version} of '{model}'"), self._lock(model):
            if not path.is_dir():
                raise RegistryError(f"model '{model}' has no version {version}")
            pointing = [a for a, n in self.aliases(model).items() if n == version]
            if pointing:
                raise RegistryError(
                    f"version {version} of '{model}' is {', '.join(pointing)}: move the alias first"
                )
            # Rename first (atomic), then delete: a reader never sees half a version.
            doomed = path.with_name(f".removed-{version}-{uuid.uuid4().hex}")
            os.rename(path, doomed)
            shutil.rmtree(doomed)


def read_bundle_bytes(directory: str | Path) -> tuple[bytes, bytes, str]:
    """A local bundle's model and metadata bytes, read once (what is verified is loaded)."""
    directory = Path(str(directory).removeprefix("file://"))
    try:
        return (
            (directory / MODEL_FILE).read_bytes(),
            (directory / METADATA_FILE).read_bytes(),
            str(directory),
        )
    except OSError as error:
        raise LifecycleError(
            f"cannot read the model bundle {directory}: {error.strerror}"
        ) from None


def metadata_document(record: dict[str, Any], key: bytes | None) -> bytes:
    """metadata.json as both registries store it: numpy values made plain, then signed."""
    with tempfile.TemporaryDirectory() as staging:
        from kfp_lifecycle.core.bundle import write_metadata

        write_metadata(staging, record)
        plain = json.loads((Path(staging) / METADATA_FILE).read_text())
    if key is not None:
        plain = signing.sign(plain, key)
    return json.dumps(plain, indent=2, sort_keys=True).encode()
