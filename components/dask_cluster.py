"""Dask cluster: the run's own DaskCluster on Kubernetes, deleted in an exit handler."""

import logging

from kfp_lifecycle.component import component

logger = logging.getLogger(__name__)


@component
def create_dask_cluster(
    dask_cluster: str,
    run_id: str,
    namespace: str = "kfp-lifecycle",
    workers: int = 2,
    worker_memory: str = "4Gi",
    worker_cpu: str = "1",
    timeout_seconds: int = 600,
) -> str:
    """Give the run a Dask scheduler: create a DaskCluster for it, or pass a given address on.

    Needs the Dask Kubernetes Operator and the Role in manifests/base/dask. The cluster runs
    the project's image, is named after the run and labelled with its id; the exit handler's
    delete-dask-cluster step removes it however the run ends.

    Args:
        dask_cluster: "ephemeral" (a DaskCluster for this run), a scheduler address
            (tcp://host:8786, used as it is), or "" (no cluster: each step starts a local one).
        run_id: The pipeline run's id; names the cluster.
        namespace: Namespace of the DaskCluster.
        workers: Number of Dask workers.
        worker_memory: Memory of each worker (a Kubernetes quantity; request = limit).
        worker_cpu: CPU of each worker (a Kubernetes quantity; request = limit).
        timeout_seconds: How long to wait for the scheduler before failing (the cluster is
            then deleted).

    Returns:
        The scheduler address (tcp://<name>-scheduler.<namespace>.svc:8786), the given one,
        or "" for a local cluster.
    """
    import logging

    from kfp_lifecycle.components.dask_cluster import logger
    from kfp_lifecycle.dask_cluster import (
        EPHEMERAL,
        ClusterSpec,
        DaskClusterApi,
        cluster_name,
        parse_choice,
        start_cluster,
    )

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    choice = parse_choice(dask_cluster)
    if choice.mode != EPHEMERAL:
        logger.info(
            f"no DaskCluster created: {choice.address or 'each step starts a local cluster'}"
        )
        return choice.address
    spec = ClusterSpec(
        name=cluster_name(run_id),
        namespace=namespace,
        run_id=run_id,
        workers=workers,
        worker_memory=worker_memory,
        worker_cpu=worker_cpu,
    )
    return start_cluster(DaskClusterApi(), spec, timeout_seconds)


@component
def delete_dask_cluster(dask_cluster: str, run_id: str, namespace: str = "kfp-lifecycle"):
    """Delete the run's DaskCluster (the exit handler: it runs even when training failed).

    Nothing to do unless the run asked for an ephemeral cluster; a cluster that was never
    created (its step failed first) is not an error.

    Args:
        dask_cluster: The run's dask_cluster parameter; only "ephemeral" has a cluster to delete.
        run_id: The pipeline run's id; names the cluster.
        namespace: Namespace of the DaskCluster.
    """
    import logging

    from kfp_lifecycle.components.dask_cluster import logger
    from kfp_lifecycle.dask_cluster import EPHEMERAL, DaskClusterApi, cluster_name, stop_cluster

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if dask_cluster.strip() != EPHEMERAL:  # an address, a local cluster, or a refused value
        logger.info("no DaskCluster was created for this run: nothing to delete")
        return
    stop_cluster(DaskClusterApi(), cluster_name(run_id), namespace)
