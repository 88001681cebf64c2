"""kfp-lifecycle: Kubeflow Pipelines components for the whole life of a tabular model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kfp-lifecycle")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
