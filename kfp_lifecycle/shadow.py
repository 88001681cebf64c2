"""Shadow testing without mirroring traffic: replay logged requests through a candidate.

KServe has no traffic mirroring (kserve#2978). The request log already holds what
production asked and what the champion answered (serving/payload_log.py), so a candidate
bundle predicts the same inputs offline, in process, through its own `predict`, and is
compared with the logged answers: how often it agrees, how far its predictions shift, how
long it takes per row. The gate refuses a candidate that disagrees beyond the threshold
before it sees any live traffic; a dark launch (a Standard-mode variant at 0%) can follow.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from kfp_lifecycle.canary import prediction_shift
from kfp_lifecycle.core.errors import DataError

BATCH_ROWS = 1000


class ShadowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_rows: int = Field(100, ge=1, description="Fewer replayed rows: refuse to judge.")
    min_agreement: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Share of rows where the candidate's answer matches the logged one "
        "(classification: same label; regression: within the tolerance), at least.",
    )
    max_shift: float = Field(
        0.1,
        ge=0,
        description="Classification: Jensen-Shannon distance of the predicted-label shares "
        "(0..1); regression: |mean difference| / the logged predictions' standard deviation.",
    )
    regression_tolerance: float = Field(
        0.1, ge=0, description="Regression: |difference| <= this x the logged answer's std."
    )
    max_latency_ratio: float | None = Field(
        None, gt=0, description="Candidate / champion seconds per row (needs the champion)."
    )


@dataclass
class ShadowReport:
    rows: int
    agreement: float
    shift: float
    candidate_seconds_per_row: float
    champion_seconds_per_row: float | None
    champion_reproduced: float | None  # the champion's replay vs its own log: 1.0 expected
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def logged_inputs(log: pd.DataFrame) -> pd.DataFrame:
    """The input columns of request-log rows: between the model version and the prediction."""
    from kfp_lifecycle.serving.payload_log import MODEL_VERSION, PREDICTION

    if PREDICTION not in log.columns or MODEL_VERSION not in log.columns:
        raise DataError("the rows are not a request log: no model_version/prediction columns")
    columns = list(log.columns)
    return log[columns[columns.index(MODEL_VERSION) + 1 : columns.index(PREDICTION)]]


def replay(bundle: Any, inputs: pd.DataFrame) -> tuple[np.ndarray, float]:
    """The bundle's predictions for the inputs, as served (Bundle.predict_rows: the server's
    checks and compiled path), and its seconds per row (batched)."""
    labels: list[Any] = []
    started = time.perf_counter()
    for begin in range(0, len(inputs), BATCH_ROWS):
        labels += list(bundle.predict_rows(inputs.iloc[begin : begin + BATCH_ROWS]).labels)
    elapsed = time.perf_counter() - started
    return np.asarray(labels, dtype=object), elapsed / max(len(inputs), 1)


def _agreement(candidate: np.ndarray, logged: np.ndarray, regression: bool, tolerance: float):
    if regression:
        a, b = candidate.astype(float), logged.astype(float)
        scale = float(np.std(b)) or 1.0
        return float(np.mean(np.abs(a - b) <= tolerance * scale)), abs(a.mean() - b.mean()) / scale
    a, b = candidate.astype(str), logged.astype(str)
    counts = [pd.Series(x).value_counts().to_dict() for x in (a, b)]
    return float(np.mean(a == b)), prediction_shift(*counts)


def shadow_replay(
    log: pd.DataFrame,
    candidate: Any,
    options: ShadowOptions,
    champion: Any | None = None,
    version: str | None = None,
) -> ShadowReport:
    """Replay the window's logged requests through the candidate and judge it.

    `champion`, when given, is replayed too: its seconds per row are the latency baseline
    (the log keeps no timings), and its agreement with its own log checks that the replay
    reproduces production (a mismatch means the log or the bundle is not what was served).
    `version` keeps only the rows that model version answered (a log can hold a canary's).
    """
    from kfp_lifecycle.core.tasks import CLASSIFICATION
    from kfp_lifecycle.serving.payload_log import MODEL_VERSION, PREDICTION

    if version is not None and MODEL_VERSION in log.columns:  # only the champion's answers
        log = log[log[MODEL_VERSION].astype(str) == str(version)]
    if len(log) < options.min_rows:
        raise DataError(f"{len(log)} logged row(s) in the window: at least {options.min_rows}")
    inputs = logged_inputs(log)
    logged = log[PREDICTION].to_numpy(dtype=object)
    regression = candidate.metadata["task"] != CLASSIFICATION
    answers, seconds = replay(candidate, inputs)
    agreement, shift = _agreement(answers, logged, regression, options.regression_tolerance)
    champion_seconds = reproduced = None
    if champion is not None:
        own, champion_seconds = replay(champion, inputs)
        reproduced = _agreement(own, logged, regression, options.regression_tolerance)[0]
    failures, passes = [], []
    line = (
        f"agreement {agreement:.1%} with the logged answers (at least {options.min_agreement:.1%})"
    )
    (passes if agreement >= options.min_agreement else failures).append(line)
    line = f"prediction shift {shift:.3f} (at most {options.max_shift:.3f})"
    (passes if shift <= options.max_shift else failures).append(line)
    if options.max_latency_ratio is not None and champion_seconds:
        ratio = seconds / champion_seconds
        line = f"latency {ratio:.2f}x the champion's (at most {options.max_latency_ratio:.2f}x)"
        (passes if ratio <= options.max_latency_ratio else failures).append(line)
    reasons = [f"FAIL: {f}" for f in failures] + [f"pass: {p}" for p in passes]
    if reproduced is not None and reproduced < 1.0:
        reasons.append(f"note: the champion's replay matches its log on {reproduced:.1%} of rows")
    return ShadowReport(
        rows=len(log),
        agreement=agreement,
        shift=float(shift),
        candidate_seconds_per_row=seconds,
        champion_seconds_per_row=champion_seconds,
        champion_reproduced=reproduced,
        passed=not failures,
        reasons=reasons,
    )
