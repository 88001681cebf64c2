"""A run's total time budget, shared by the steps whose cost is open-ended.

Tuning, diagnosis and explanation can each spend as long as they are given; the other steps
take what the data takes. The budget (seconds for the whole training run) is split in fixed
shares, so that every step knows its own limit without a clock shared across processes (on a
cluster, steps run in separate pods): the rest is left for the fixed steps (ingest, profile,
preprocessing, evaluation, report, registration) and each step's start-up. The families of a
run are tuned side by side (a ParallelFor), so each gets the whole tuning share. What a step
cut to fit is recorded in its own output, and the report shows it.
"""

DEFAULT_TIME_BUDGET = 600.0
SHARES = {"tuning": 0.45, "diagnosis": 0.12, "explanation": 0.08}


def share(budget: float, part: str) -> float | None:
    """Seconds `part` may take of a run's `budget`; None when the budget is off (0)."""
    return None if budget <= 0 else budget * SHARES[part]


def affordable(costs: list[float], seconds: float | None) -> int:
    """How many of `costs` (estimated seconds, in the order they are worth doing) fit in
    `seconds`, taken in order; all of them without a limit."""
    if seconds is None:
        return len(costs)
    spent = 0.0
    for count, cost in enumerate(costs):
        spent += cost
        if spent > seconds:
            return count
    return len(costs)
