"""Racing processes on both registries: alias moves are linearizable, first runs pick the best.

Each trial starts 8 processes (multiprocessing, released together by a barrier) that promote,
roll back or register concurrently; the end state (champion, previous) and what every
process was told must be what some serial order of the same operations gives. The S3
registry runs against SeaweedFS, which enforces If-Match / If-None-Match atomically.
"""

import itertools
import multiprocessing
import os
import random
import time
from pathlib import Path

import pytest

from kfp_lifecycle.core.errors import RegistryError
from kfp_lifecycle.registry import (
    CHAMPION,
    LocalRegistry,
    S3Registry,
    moved_to,
    offer_champion,
    open_registry,
    promote,
    rollback,
    rolled_back,
)

PROCESSES = 8
CONTEXT = multiprocessing.get_context("fork")
_barrier = None


def _init(barrier) -> None:
    global _barrier
    _barrier = barrier


def _registry(root: str, env: dict[str, str]):
    os.environ.update(env)
    return open_registry(root)


def _alias_op(args):
    """One promote or rollback; returns what the caller was told."""
    root, env, model, (kind, version) = args
    registry = _registry(root, env)
    _barrier.wait(timeout=60)
    if kind == "promote":
        promote(registry, model, version)
        return ("promote", version)
    try:
        return ("rollback", rollback(registry, model))
    except RegistryError:
        return ("rollback", None)


def _register_op(args):
    """A first run: register a blessed version with its own score, then the gate-driven move."""
    root, env, model, bundle_dir, score = args
    registry = _registry(root, env)
    extra = {"gate": {"blessed": True, "baseline": None}, "metrics_test": {"roc_auc": score}}
    _barrier.wait(timeout=60)
    version = registry.register(model, bundle_dir, {**extra, "primary_metric": "roc_auc"})
    return version.version, score, offer_champion(registry, model, version.version)


def _serial_outcomes(start: dict, ops: list[tuple[str, int | None]]):
    """Every (end state, told) that some serial order of `ops` gives, from `start`."""
    for order in itertools.permutations(range(len(ops))):
        record, told = dict(start), [None] * len(ops)
        for index in order:
            kind, version = ops[index]
            if kind == "promote":
                record, told[index] = moved_to(record, version), ("promote", version)
            else:
                try:
                    record = rolled_back(record)
                    told[index] = ("rollback", record["version"])
                except RegistryError:
                    told[index] = ("rollback", None)
        yield (record["version"], record.get("previous")), told


def _race(pool, registry, root: str, env: dict, model: str, trials: int, seed: int) -> int:
    rng = random.Random(seed)
    start = {"version": 2, "previous": 1}
    for _ in range(trials):
        registry.update_alias(model, CHAMPION, lambda _: dict(start))
        ops = [
            rng.choice([("promote", 1), ("promote", 3), ("promote", 4), ("rollback", None)])
            for _ in range(PROCESSES)
        ]
        told = pool.map(_alias_op, [(root, env, model, op) for op in ops])
        record = registry.alias_record(model, CHAMPION)
        end = (record["version"], record.get("previous"))
        assert any(
            end == serial_end and told == serial_told
            for serial_end, serial_told in _serial_outcomes(start, ops)
        ), f"no serial order of {ops} from {start} ends in {end} telling {told}"
    return trials


def _blessed_versions(registry, model: str, bundle_dir: Path, count: int) -> None:
    for _ in range(count):
        registry.register(model, bundle_dir, {"gate": {"blessed": True}})


@pytest.fixture(scope="module")
def pool():
    with CONTEXT.Pool(PROCESSES, initializer=_init, initargs=(CONTEXT.Barrier(PROCESSES),)) as p:
        yield p


def _stores(kind: str, tmp_path: Path, seaweed) -> tuple[str, dict[str, str]]:
    if kind == "local":
        return str(tmp_path / "registry"), {}
    return f"s3://{seaweed.new_bucket()}/registry", seaweed.env()


@pytest.mark.parametrize("kind,trials", [("local", 40), ("s3", 12)])
def test_racing_promote_and_rollback_end_in_a_serial_state(
    kind, trials, tmp_path, bundle_dir, pool, request
):
    seaweed = request.getfixturevalue("seaweed") if kind == "s3" else None
    root, env = _stores(kind, tmp_path, seaweed)
    registry = S3Registry(root, seaweed.client()) if seaweed else LocalRegistry(root)
    _blessed_versions(registry, "race", bundle_dir, 4)
    began = time.monotonic()
    assert _race(pool, registry, root, env, "race", trials, seed=7) == trials
    assert time.monotonic() - began < 240


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_concurrent_first_runs_leave_the_best_blessed_version_champion(
    kind, tmp_path, bundle_dir, pool, request
):
    seaweed = request.getfixturevalue("seaweed") if kind == "s3" else None
    for trial in range(3):
        root, env = _stores(kind, tmp_path / str(trial), seaweed)
        scores = random.Random(trial).sample([0.70 + i / 100 for i in range(20)], PROCESSES)
        results = pool.map(_register_op, [(root, env, "first", bundle_dir, s) for s in scores])
        registry = open_registry(root) if not seaweed else S3Registry(root, seaweed.client())
        best = max(results, key=lambda result: result[1])
        assert sorted(r[0] for r in results) == list(range(1, PROCESSES + 1))
        assert registry.aliases("first")[CHAMPION] == best[0]
        assert best[2] is True  # the best run was told it became champion
