"""Select: the run's best family, the candidate with the best validation score on the primary
metric (the registry's `champion` alias is another thing: register moves it, if blessed)."""

import logging
import math
from typing import Any

from kfp.dsl import Artifact, Input, Model, Output

from kfp_lifecycle.component import component
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.core.tasks import CLASSIFICATION, METRICS, REGRESSION

logger = logging.getLogger(__name__)

# Validation scores this close (absolute for metrics in [0, 1], relative to the best
# otherwise) are a tie on small data: a few rows decide them. Ties go to the better proper
# scoring rule (log loss for classifiers) when the primary metric is not one already.
NEAR_TIE = 0.005
TIE_BREAKER = {CLASSIFICATION: "log_loss", REGRESSION: "mae"}


def near_tie(a: float, b: float, metric: str) -> bool:
    """Whether two scores of `metric` are within NEAR_TIE of each other."""
    bounded = metric not in ("rmse", "mae", "mape", "log_loss")
    scale = 1.0 if bounded else max(abs(a), abs(b), 1e-12)
    return abs(a - b) <= NEAR_TIE * scale


def rank_candidates(candidates: list[dict[str, Any]], primary_metric: str) -> list[dict[str, Any]]:
    """Candidates' metadata, best first by validation score; among those in a near tie with
    the best, the best by the task's tie breaker goes first (then the order is kept)."""
    if not candidates:
        raise LifecycleError("no trained candidate to select from")

    def score(candidate: dict[str, Any], metric: str) -> float:
        value = candidate["metrics"]["validation"].get(metric, float("nan"))
        sign = -1 if METRICS[metric].greater_is_better else 1
        return sign * value if math.isfinite(value) else math.inf

    ranked = sorted(candidates, key=lambda c: score(c, primary_metric))
    breaker = TIE_BREAKER[METRICS[primary_metric].task]
    best = ranked[0]["metrics"]["validation"][primary_metric]
    tied = [
        c
        for c in ranked
        if near_tie(c["metrics"]["validation"][primary_metric], best, primary_metric)
    ]
    if len(tied) > 1 and breaker != primary_metric:
        tied.sort(key=lambda c: score(c, breaker))
        ranked = tied + [c for c in ranked if c not in tied]
    return ranked


def leaderboard(ranked: list[dict[str, Any]], primary_metric: str) -> dict[str, float]:
    return {c["family"]: c["metrics"]["validation"][primary_metric] for c in ranked}


@component
def select(
    candidates: Input[list[Model]],
    primary_metric: str,
    selected: Output[Model],
    leaderboard: Output[Artifact],
):
    """Pick the best candidate on validation data and pass its bundle on untouched.

    Args:
        candidates: One bundle per model family.
        primary_metric: Metric to rank by (direction comes from the metric).
        selected: The winning candidate's bundle, byte for byte (this run's best family,
            not yet the registry's champion).
        leaderboard: JSON (core.documents.Leaderboard): every family's validation score,
            best first; register keeps it in the registered bundle's metadata.
    """
    import shutil

    from kfp_lifecycle.components.select import leaderboard as rank_board
    from kfp_lifecycle.components.select import logger, rank_candidates
    from kfp_lifecycle.core.bundle import read_metadata
    from kfp_lifecycle.core.documents import Leaderboard, write_document

    paths = {read_metadata(c.path)["family"]: c.path for c in candidates}
    ranked = rank_candidates([read_metadata(p) for p in paths.values()], primary_metric)
    board = rank_board(ranked, primary_metric)
    best = ranked[0]
    shutil.copytree(paths[best["family"]], selected.path)
    write_document(leaderboard.path, Leaderboard(primary_metric=primary_metric, scores=board))
    selected.metadata.update({"family": best["family"], "leaderboard": board})
    for rank, (family, score) in enumerate(board.items(), start=1):  # best first
        logger.info(f"{rank}. {family:<24} validation {primary_metric} = {score:.4f}")
