"""The one place that names the container image every component and the server run in."""

from kfp_lifecycle import __version__

IMAGE_REPOSITORY = "ghcr.io/kfp-lifecycle/kfp-lifecycle"
IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"
