"""The model families, as a registry: one module per family, each declaring `FAMILY`.

`FAMILIES` maps each name to its `Family` spec (kfp_lifecycle/families/spec.py), in the
families' own order; it is built from the modules of this package, so adding a family is
one new module (and its tests). `DEFAULT_FAMILIES` are those trained when the configuration
does not name any.
"""

import importlib
import pkgutil

from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.families.spec import (
    EARLY_STOPPING_ROUNDS,
    EXPLAINERS,
    Diagnosis,
    EarlyStopping,
    Family,
)

__all__ = [
    "DEFAULT_FAMILIES",
    "EARLY_STOPPING_ROUNDS",
    "EXPLAINERS",
    "FAMILIES",
    "Diagnosis",
    "EarlyStopping",
    "Family",
    "get_family",
]


def _discover() -> dict[str, Family]:
    found = []
    for module in pkgutil.iter_modules(__path__):
        if module.name == "spec":
            continue
        family = getattr(importlib.import_module(f"{__name__}.{module.name}"), "FAMILY", None)
        if not isinstance(family, Family):
            raise TypeError(f"{__name__}.{module.name} declares no FAMILY (a Family spec)")
        if family.name != module.name:
            raise TypeError(f"{__name__}.{module.name} declares family '{family.name}'")
        found.append(family)
    return {family.name: family for family in sorted(found, key=lambda f: (f.order, f.name))}


FAMILIES: dict[str, Family] = _discover()
DEFAULT_FAMILIES: list[str] = [name for name, family in FAMILIES.items() if family.default]


def get_family(name: str) -> Family:
    """The family called `name`; a one-line error naming the known ones otherwise."""
    if name not in FAMILIES:
        raise DataError(f"unknown model family '{name}'; choose from: {', '.join(FAMILIES)}")
    return FAMILIES[name]
