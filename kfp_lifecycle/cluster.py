"""What a compiled pipeline expects to find in the cluster namespace it runs in.

S3 credentials reach the pods from a Kubernetes Secret and the endpoint from a ConfigMap,
both mounted as environment variables with kfp-kubernetes: nothing secret is ever in the
compiled YAML. The manifests under manifests/ create objects of these names. A database
source's user and password come the same way from the Secret DB_SECRET (optional: only
pipelines reading a database need it; the user creates it, see the README).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kfp_lifecycle.sources.sql import PASSWORD_ENV, USER_ENV

if TYPE_CHECKING:
    from kfp import dsl

# The names are read inside running steps too (kfp_lifecycle/dask_cluster.py), where
# kfp.kubernetes cannot be imported: kfp is imported only where a task is configured.
S3_SECRET = "kfp-lifecycle-s3"
S3_CONFIG_MAP = "kfp-lifecycle-s3"
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_CONFIG_KEYS = ("S3_ENDPOINT", "S3_USE_HTTPS", "AWS_REGION")
# The key that signs registered versions and verifies them before loading
# (kfp_lifecycle/registry/signing.py); kept in its own Secret, never in the bucket.
SIGNING_SECRET = "kfp-lifecycle-signing"
SIGNING_KEYS = ("LIFECYCLE_SIGNING_KEY",)
DB_SECRET = "kfp-lifecycle-db"
DB_SECRET_KEYS = (USER_ENV, PASSWORD_ENV)


def with_s3_access(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Give a step the S3 settings of kfp_lifecycle.storage, from the Secret and ConfigMap."""
    from kfp import kubernetes

    kubernetes.use_secret_as_env(task, S3_SECRET, {key: key for key in S3_SECRET_KEYS})
    kubernetes.use_secret_as_env(task, SIGNING_SECRET, {key: key for key in SIGNING_KEYS})
    # Optional: against AWS S3 itself no endpoint needs configuring.
    kubernetes.use_config_map_as_env(
        task, S3_CONFIG_MAP, {key: key for key in S3_CONFIG_KEYS}, optional=True
    )
    return task


def with_db_access(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Give a step a database source's credentials (kfp_lifecycle.sources.sql) from DB_SECRET."""
    from kfp import kubernetes

    kubernetes.use_secret_as_env(
        task, DB_SECRET, {key: key for key in DB_SECRET_KEYS}, optional=True
    )
    return task
