"""The one place that names the container image every component and the server run in.

The package's own image is the default; a deployment on another registry chooses its image
as a setting (`lifecycle compile --image`, or LIFECYCLE_IMAGE), not a source edit."""

from __future__ import annotations

import os
import re

from kfp_lifecycle import __version__
from kfp_lifecycle.core.errors import LifecycleError

IMAGE_REPOSITORY = "ghcr.io/kfp-lifecycle/kfp-lifecycle"
IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"  # the package's own, pushed by the images workflow
IMAGE_ENV = "LIFECYCLE_IMAGE"

# [REGISTRY[:PORT]/]PATH:TAG or ...@sha256:DIGEST; a tag or digest is required, so a cluster
# never runs whatever `latest` happens to be.
_REFERENCE = re.compile(
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)+"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})"
)


def image(override: str | None = None) -> str:
    """The image to run: `override` (--image), else $LIFECYCLE_IMAGE, else the package's own."""
    chosen = override or os.environ.get(IMAGE_ENV) or IMAGE
    if not _REFERENCE.fullmatch(chosen) or chosen.endswith(":latest"):
        source = "--image" if override else IMAGE_ENV
        raise LifecycleError(
            f"{source} '{chosen}' is not an image reference REGISTRY/NAME:TAG "
            "(lowercase, with a version tag or @sha256 digest, not :latest)"
        )
    return chosen
