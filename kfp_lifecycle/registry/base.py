"""What every registry is (the Registry protocol) and the rules both implementations share.

The alias rules live here once, as pure functions from the record an alias move replaces to
the record it writes: an implementation only has to apply such a function atomically
(`update_alias`: compare-and-swap, retried on conflict). So promote, rollback and the
gate-driven move are computed from the very record they replace, never from an earlier read.

champion.json keeps `previous` (the champion it replaced) and both override reasons, so a
champion move and its `previous` are one atomic write and a rollback restores exactly what
it undoes, override reason included; a second rollback undoes the first.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kfp_lifecycle.core.errors import RegistryError
from kfp_lifecycle.core.tasks import is_better

logger = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
NAME_PATTERN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
Record = dict[str, Any]
# Maps the record an alias has (None: none yet) to the one it gets; None leaves it unchanged.
Change = Callable[[Record | None], Record | None]


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    uri: str


class Registry(Protocol):
    """Immutable numbered versions of a bundle, and aliases that point at them."""

    def versions(self, model: str) -> list[int]:
        """Published versions (a broken one is skipped with a warning)."""
        ...

    def register(
        self, model: str, bundle_dir: str | Path, extra: dict[str, Any]
    ) -> ModelVersion: ...

    def get(self, model: str, version: int) -> ModelVersion: ...

    def metadata(self, model: str, version: int) -> dict[str, Any]: ...

    def alias(self, model: str, alias: str) -> ModelVersion | None: ...

    def aliases(self, model: str) -> dict[str, int]: ...

    def update_alias(self, model: str, alias: str, change: Change) -> Record | None:
        """Apply `change` to the alias record atomically (compare-and-swap, retried on
        conflict); returns the record written (None when `change` kept it)."""
        ...

    def check_writable(self) -> None:
        """Raise a one-line RegistryError when the registry cannot be reached or written."""
        ...

    def broken_versions(self, model: str) -> list[int]:
        """Version numbers present without a readable metadata.json."""
        ...

    def remove_version(self, model: str, version: int) -> None: ...

    def read_version(self, model: str, version: int) -> tuple[bytes, bytes, str]:
        """(model bytes, metadata.json bytes, where), each read once, for verification."""
        ...

    def alias_record(self, model: str, alias: str) -> Record | None: ...

    def signing_key(self, create: bool = False) -> bytes | None:
        """The key that signs and verifies this registry's versions (never stored in it)."""
        ...


def check_name(model: str, what: str = "model name") -> str:
    """A full match: no trailing newline or other character slips past."""
    if not isinstance(model, str) or not NAME_PATTERN.fullmatch(model):
        raise RegistryError(f"invalid {what} {model!r}: use lowercase letters, digits and dashes")
    return model


def model_name_from(text: str) -> str:
    """A registry (and Kubernetes) safe name: lowercase letters, digits and dashes."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "model"


def model_version_of(metadata: dict[str, Any]) -> str:
    """The version a server reports: the registry number, else a short content hash."""
    if metadata.get("registry_version") is not None:
        return str(metadata["registry_version"])
    return str(metadata["sha256"])[:12]


# --- the one place that says what may become champion or be deployed -------------------


def is_blessed(metadata: dict[str, Any]) -> bool:
    return bool((metadata.get("gate") or {}).get("blessed"))


def require_blessed(metadata: dict[str, Any], subject: str, action: str, override: str) -> None:
    """Only blessed versions become champion or get deployed, unless a reason is stated.

    Used by promote (CLI and registry), `lifecycle deploy`, every rollout strategy and the
    deploy component.
    """
    if is_blessed(metadata):
        return
    if override.strip():
        logger.warning("%s: %s it although the gate refused it, because: %s", subject,
                       action or "using", override)  # fmt: skip
        return
    reasons = "; ".join((metadata.get("gate") or {}).get("reasons") or []) or "no decision"
    hint = " (--override-reason)" if action else ""
    raise RegistryError(
        f"{subject} was not blessed by the gate ({reasons}): refusing to {action or 'use'} it "
        f"without an explicit override reason{hint}"
    )


# --- alias transitions: pure functions of the record they replace -----------------------


def alias_versions(records: dict[str, Record]) -> dict[str, int]:
    """Alias name -> version; `previous` comes from champion.json only (a previous.json left
    by earlier code is ignored, so it can never contradict the champion)."""
    versions = {name: record["version"] for name, record in records.items() if name != PREVIOUS}
    champion = records.get(CHAMPION) or {}
    if champion.get("previous") is not None:
        versions[PREVIOUS] = champion["previous"]
    return versions


def check_settable(alias: str) -> None:
    """`previous` follows the champion; setting it by hand would rewrite the champion's past."""
    if alias == PREVIOUS:
        raise RegistryError(
            f"'{PREVIOUS}' is kept by the registry as the champion before the current one; "
            "promote a version or roll back instead of setting it"
        )


def _clean(record: Record) -> Record:
    return {key: value for key, value in record.items() if value not in (None, "")}


def moved_to(current: Record | None, version: int, override_reason: str = "") -> Record:
    """The champion record after moving to `version`: the replaced one becomes `previous`."""
    if current is None:
        return _clean({"version": version, "override_reason": override_reason})
    if current["version"] == version:
        kept = {k: v for k, v in current.items() if k != "updated_at"}
        return _clean({**kept, "override_reason": override_reason or kept.get("override_reason")})
    return _clean(
        {
            "version": version,
            "override_reason": override_reason,
            "previous": current["version"],
            "previous_override_reason": current.get("override_reason"),
        }
    )


def rolled_back(current: Record | None, model: str = "") -> Record:
    """Swap champion and previous, override reasons included: rolling back twice is a no-op."""
    if current is None or current.get("previous") is None:
        raise RegistryError(f"model '{model}' has no previous champion to roll back to")
    return _clean(
        {
            "version": current["previous"],
            "override_reason": current.get("previous_override_reason"),
            "previous": current["version"],
            "previous_override_reason": current.get("override_reason"),
        }
    )


def offered(
    current: Record | None,
    version: int,
    baseline: int | None,
    score_of: Callable[[int], float | None],
    metric: str,
) -> Record | None:
    """The gate-driven move: `version` was blessed against champion `baseline`.

    It becomes champion if the champion is still the one the gate compared with (or there is
    none); if another run moved it meanwhile (e.g. concurrent first runs), only if its test
    score beats the new champion's. None: leave the champion as it is.
    """
    if current is None or current["version"] == baseline:
        return moved_to(current, version)
    if current["version"] == version:
        return None
    mine, theirs = score_of(version), score_of(current["version"])
    if mine is not None and (theirs is None or is_better(metric, mine, theirs)):
        return moved_to(current, version)
    return None


def alias_record(alias: str, current: Record | None, version: int, reason: str = "") -> Record:
    """What `alias` gets when set to `version`: champion keeps its history, others just point."""
    if alias == CHAMPION:
        return moved_to(current, version, reason)
    return _clean({"version": version, "override_reason": reason})
