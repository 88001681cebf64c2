"""The Dask client a step works through: a given scheduler, or a LocalCluster of its own."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.dask_engine.engine import DaskSettings, logger

CONNECT_TIMEOUT = "30s"


@contextmanager
def open_client(settings: DaskSettings | Any) -> Iterator[Any]:
    """Yield a distributed.Client: connected to `settings.scheduler_address` when given (the
    cluster outlives the step), else to a LocalCluster started here and stopped on exit with
    `n_workers` workers of `memory_per_worker` each."""
    from distributed import Client, LocalCluster

    # Every value_counts/unique is a shuffle, each announced as a WARNING: not news here.
    logging.getLogger("distributed.shuffle._scheduler_plugin").setLevel(logging.ERROR)
    address = getattr(settings, "scheduler_address", None)
    if address:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT)
        except OSError as error:
            raise LifecycleError(f"cannot reach the Dask scheduler at {address}: {error}") from None
        with client:
            logger.info("dask: connected to %s (%d workers)", address, _workers(client))
            yield client
        return
    cluster = LocalCluster(
        n_workers=settings.n_workers,
        threads_per_worker=getattr(settings, "threads_per_worker", 1),
        memory_limit=settings.memory_per_worker,
        processes=getattr(settings, "processes", True),
        dashboard_address=None,
        host="127.0.0.1",
        protocol="tcp",  # also for thread workers: other processes may connect
    )
    with cluster, Client(cluster) as client:
        logger.info(
            "dask: LocalCluster of %d worker(s), %s each", settings.n_workers,
            settings.memory_per_worker,
        )  # fmt: skip
        yield client


def _workers(client: Any) -> int:
    return len(client.scheduler_info().get("workers", {}))
