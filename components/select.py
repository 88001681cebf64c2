"""Select: the champion is the candidate with the best validation score on the primary metric."""

from typing import Any

from kfp.dsl import Input, Model, Output

from kfp_lifecycle.component import component
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.core.tasks import METRICS


def rank_candidates(candidates: list[dict[str, Any]], primary_metric: str) -> list[dict[str, Any]]:
    """Candidates' metadata, best first by validation score (ties keep their order)."""
    if not candidates:
        raise LifecycleError("no trained candidate to select from")
    best_first = METRICS[primary_metric].greater_is_better
    return sorted(
        candidates,
        key=lambda c: c["metrics"]["validation"][primary_metric],
        reverse=best_first,
    )


def leaderboard(ranked: list[dict[str, Any]], primary_metric: str) -> dict[str, float]:
    return {c["family"]: c["metrics"]["validation"][primary_metric] for c in ranked}


@component
def select(candidates: Input[list[Model]], primary_metric: str, champion: Output[Model]):
    """Pick the best candidate on validation data and copy its bundle.

    Args:
        candidates: One bundle per model family.
        primary_metric: Metric to rank by (direction comes from the metric).
        champion: The winning bundle, its metadata extended with the leaderboard.
    """
    import shutil

    from kfp_lifecycle.components.select import leaderboard, rank_candidates
    from kfp_lifecycle.core.bundle import read_metadata, write_metadata

    paths = {read_metadata(c.path)["family"]: c.path for c in candidates}
    ranked = rank_candidates([read_metadata(p) for p in paths.values()], primary_metric)
    board = leaderboard(ranked, primary_metric)
    best = ranked[0]
    shutil.copytree(paths[best["family"]], champion.path)
    write_metadata(champion.path, {**best, "leaderboard": board})
    champion.metadata.update({"family": best["family"], "leaderboard": board})
    for rank, (family, score) in enumerate(board.items(), start=1):  # best first
        print(f"{rank}. {family:<24} validation {primary_metric} = {score:.4f}")
