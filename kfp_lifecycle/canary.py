"""Automatic canary analysis: measure the canary against the stable revision, then decide.

Both revisions are read from Prometheus through the serving runtime's own metrics, which
carry the model version (serving/model.py): error rate, latency quantiles and, optionally,
the shares of predicted labels, over a window. The rollout steps the canary's traffic share
(e.g. 10% -> 50% -> 100%), analysing after each step; a failed analysis rolls back, a passed
last step promotes. Whatever stops the rollout half-way (Prometheus unreachable, an API
error) rolls back too, then fails with the reason: no canary is left at N% unwatched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy.spatial.distance import jensenshannon

from kfp_lifecycle import deploy
from kfp_lifecycle.core.errors import LifecycleError

PROMOTE = "promote"
ROLLBACK = "rollback"
WAIT = "wait"  # not enough traffic yet to judge


class CanaryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prometheus_url: str = Field(
        "http://prometheus-operated.monitoring:9090", description="Prometheus HTTP API base URL."
    )
    steps: list[int] = Field([10, 50, 100], description="Canary traffic shares, in percent.")
    interval_seconds: float = Field(120.0, description="Traffic time before each analysis.")
    window: str = Field("2m", description="PromQL range for rates and quantiles.")
    min_requests: int = Field(20, description="Fewer canary requests: wait, do not judge.")
    max_error_rate: float = Field(0.01, description="Canary error (5xx) share: at most this...")
    max_error_rate_increase: float = Field(0.005, description="...and stable's plus this.")
    max_p99_latency_ratio: float = Field(1.25, description="Canary p99 / stable p99, at most.")
    min_p99_latency_increase_seconds: float = Field(
        0.05,
        ge=0,
        description="A canary fails the ratio only when its p99 is also this much above the "
        "stable's: p99s of a few milliseconds differ severalfold by scheduling noise and "
        "histogram buckets alone.",
    )
    max_p99_latency_seconds: float | None = Field(None, description="Absolute p99 ceiling.")
    max_prediction_shift: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Jensen-Shannon distance (base 2: 0 same, 1 disjoint) between the canary's "
        "and stable's predicted-label shares, at most; unset: not compared.",
    )
    max_wait_steps: int = Field(
        5, ge=1, description="Inconclusive analyses in a row, then roll back."
    )

    @field_validator("steps")
    @classmethod
    def _increasing_shares(cls, steps: list[int]) -> list[int]:
        if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
            raise ValueError(f"steps must be increasing percentages in 1..100, got {steps}")
        return steps


@dataclass
class RevisionStats:
    version: str
    requests: float
    error_rate: float | None
    p50_seconds: float | None
    p99_seconds: float | None
    label_counts: dict[str, float] = field(default_factory=dict)  # when the shift is compared


@dataclass
class Verdict:
    decision: str  # promote | rollback | wait
    reasons: list[str]
    canary: RevisionStats
    stable: RevisionStats

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RolloutResult:
    outcome: str  # promoted | rolled back
    verdicts: list[Verdict] = field(default_factory=list)


def _results(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    """The series of one instant query; any failure is a LifecycleError naming Prometheus."""
    try:
        response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
        response.raise_for_status()
        return response.json()["data"]["result"]
    except httpx.HTTPError as error:
        raise LifecycleError(f"Prometheus at {prometheus_url} did not answer: {error}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise LifecycleError(
            f"Prometheus at {prometheus_url} answered {promql!r} with something else than a "
            f"query result ({type(error).__name__}: {error})"
        ) from None


def _number(sample: dict[str, Any]) -> float | None:
    value = float(sample["value"][1])
    return None if value != value else value  # NaN: a 0/0 ratio


def query(prometheus_url: str, promql: str) -> float | None:
    """One instant query; None when the result is empty or not a number (no traffic yet)."""
    result = _results(prometheus_url, promql)
    return _number(result[0]) if result else None


def query_by(prometheus_url: str, promql: str, label: str) -> dict[str, float]:
    """One instant query returning a series per value of `label`, as {value: number}."""
    numbers = {s["metric"].get(label, ""): _number(s) for s in _results(prometheus_url, promql)}
    return {key: value for key, value in numbers.items() if value is not None}


def revision_stats(
    prometheus_url: str, model: str, version: str, window: str, labels: bool = False
) -> RevisionStats:
    """One revision's figures over `window`; `labels` also counts its predictions per label."""
    selector = f'model_name="{model}",model_version="{version}"'
    requests = f"sum(increase(kfp_lifecycle_requests_total{{{selector}}}[{window}]))"
    errors = (
        f'sum(rate(kfp_lifecycle_requests_total{{{selector},outcome="error"}}[{window}]))'
        f" / sum(rate(kfp_lifecycle_requests_total{{{selector}}}[{window}]))"
    )

    def quantile(q: float) -> str:
        return (
            f"histogram_quantile({q}, sum by (le) "
            f"(rate(kfp_lifecycle_request_seconds_bucket{{{selector}}}[{window}])))"
        )

    count = query(prometheus_url, requests) or 0.0
    # With requests but no error series yet, the ratio is empty: no errors means 0.
    error_rate = (query(prometheus_url, errors) or 0.0) if count else None
    predicted = (
        f"sum by (label) (increase(kfp_lifecycle_predictions_total{{{selector}}}[{window}]))"
    )
    return RevisionStats(
        version=version,
        requests=count,
        error_rate=error_rate,
        p50_seconds=query(prometheus_url, quantile(0.5)),
        p99_seconds=query(prometheus_url, quantile(0.99)),
        label_counts=query_by(prometheus_url, predicted, "label") if labels else {},
    )


def prediction_shift(canary: dict[str, float], stable: dict[str, float]) -> float:
    """Jensen-Shannon distance (base 2) between two label-count tables: 0 same shares, 1 disjoint.

    A label only one side predicted counts as 0 on the other, so a new class shows up.
    """
    labels = sorted(set(canary) | set(stable))
    p = np.array([canary.get(label, 0.0) for label in labels], dtype=float)
    q = np.array([stable.get(label, 0.0) for label in labels], dtype=float)
    if p.sum() <= 0 or q.sum() <= 0:
        raise LifecycleError("prediction shift needs predictions from both revisions")
    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2))


def shares(counts: dict[str, float]) -> str:
    """Label shares as people read them: "no 80%, yes 20%"."""
    total = sum(counts.values())
    return ", ".join(f"{label} {count / total:.0%}" for label, count in sorted(counts.items()))


def judge(canary: RevisionStats, stable: RevisionStats, options: CanaryOptions) -> Verdict:
    """Every rule that fails is a reason; any failure rolls back."""
    if canary.requests < options.min_requests or canary.error_rate is None:
        reason = f"canary served {canary.requests:.0f} request(s) in {options.window}; "
        reason += f"at least {options.min_requests} are needed to judge"
        return Verdict(WAIT, [reason], canary, stable)
    failures, passes = [], []
    stable_errors = stable.error_rate or 0.0
    ceiling = min(options.max_error_rate, stable_errors + options.max_error_rate_increase)
    ceiling = max(ceiling, stable_errors)  # never stricter than what stable itself does
    line = f"error rate {canary.error_rate:.2%} (stable {stable_errors:.2%}, limit {ceiling:.2%})"
    (passes if canary.error_rate <= ceiling else failures).append(line)
    if canary.p99_seconds is not None and stable.p99_seconds:
        ratio = canary.p99_seconds / stable.p99_seconds
        slack = options.min_p99_latency_increase_seconds
        line = (
            f"p99 latency {canary.p99_seconds * 1000:.1f} ms = {ratio:.2f}x stable "
            f"({stable.p99_seconds * 1000:.1f} ms; limit {options.max_p99_latency_ratio:.2f}x "
            f"and +{slack * 1000:.0f} ms)"
        )
        slower = canary.p99_seconds - stable.p99_seconds > slack
        ok = ratio <= options.max_p99_latency_ratio or not slower
        (passes if ok else failures).append(line)
    if options.max_p99_latency_seconds is not None and canary.p99_seconds is not None:
        line = (
            f"p99 latency {canary.p99_seconds * 1000:.1f} ms "
            f"(ceiling {options.max_p99_latency_seconds * 1000:.1f} ms)"
        )
        ok = canary.p99_seconds <= options.max_p99_latency_seconds
        (passes if ok else failures).append(line)
    skipped = []
    if options.max_prediction_shift is not None:
        if sum(canary.label_counts.values()) > 0 and sum(stable.label_counts.values()) > 0:
            distance = prediction_shift(canary.label_counts, stable.label_counts)
            line = (
                f"prediction shift {distance:.3f} (Jensen-Shannon distance, limit "
                f"{options.max_prediction_shift:.3f}): canary {shares(canary.label_counts)} "
                f"vs stable {shares(stable.label_counts)}"
            )
            (passes if distance <= options.max_prediction_shift else failures).append(line)
        else:
            side = "canary" if not sum(canary.label_counts.values()) else "stable"
            skipped.append(f"prediction shift: the {side} predicted nothing in {options.window}")
    notes = [f"not judged: {s}" for s in skipped]
    if failures:
        return Verdict(ROLLBACK, [f"FAIL: {f}" for f in failures] + passes + notes, canary, stable)
    return Verdict(PROMOTE, [f"pass: {p}" for p in passes] + notes, canary, stable)


def analyse(
    options: CanaryOptions, model: str, canary_version: str, stable_version: str
) -> Verdict:
    labels = options.max_prediction_shift is not None
    stats = [
        revision_stats(options.prometheus_url, model, version, options.window, labels)
        for version in (canary_version, stable_version)
    ]
    return judge(*stats, options)


def _conclusive_verdict(
    options: CanaryOptions,
    analyse_step: Callable[[], Verdict],
    result: RolloutResult,
    sleep: Callable[[float], None],
    log: Callable[[str], None],
) -> Verdict:
    """Analyse after each interval until the verdict is promote or roll back."""
    for _ in range(options.max_wait_steps):
        sleep(options.interval_seconds)
        verdict = analyse_step()
        result.verdicts.append(verdict)
        log(f"  {verdict.decision}: " + "; ".join(verdict.reasons))
        if verdict.decision != WAIT:
            return verdict
    verdict.decision = ROLLBACK
    verdict.reasons.append("no conclusive analysis in time: rolling back to be safe")
    return verdict


def run_rollout(
    api: deploy.KServeApi,
    name: str,
    namespace: str,
    options: CanaryOptions,
    analyse_step: Callable[[], Verdict],
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> RolloutResult:
    """Step the canary through options.steps; roll back at the first failed analysis.

    Both KServe modes: the share is canaryTrafficPercent (Knative) or the one variant's
    trafficPercent (Standard); promotion and rollback are deploy's plans for the live mode.
    A step below 100% sets the canary's share, waits, then analyses. The 100% step sends
    no request: traffic stays at the last share for one more analysis, and only a passing
    one promotes (promotion is what sends 100% to the new revision). Any error on the way
    rolls back before the step fails.
    """
    service = api.get(name, namespace)
    if service is None or not deploy.canary_in_progress(service):
        raise LifecycleError(f"{namespace}/{name} has no canary in progress to roll out")
    live = deploy.canary_percent(service)
    result = RolloutResult("")
    try:
        for percent in options.steps:
            if percent < 100:
                for request in deploy.plan_set_traffic(name, namespace, percent, service):
                    api.apply(request)
                live = percent
                log(
                    f"canary at {percent}%: waiting {options.interval_seconds:.0f}s, then analysing"
                )
            else:
                log(
                    f"canary stays at {live}% for a last analysis in "
                    f"{options.interval_seconds:.0f}s; if it passes, promotion sends it 100%"
                )
            verdict = _conclusive_verdict(options, analyse_step, result, sleep, log)
            if verdict.decision == ROLLBACK:
                deploy.apply_rollback(api, name, namespace)
                result.outcome = "rolled back"
                return result
        for request in deploy.plan_promote(name, namespace, api.get(name, namespace)):
            api.apply(request)
    except Exception as error:
        cause = str(error) if isinstance(error, LifecycleError) else repr(error)
        problem = f"canary rollout of {namespace}/{name} stopped at {live}%: {cause}"
        log(f"  error: {problem}; rolling back")
        raise deploy.roll_back_because(api, name, namespace, problem) from error
    result.outcome = "promoted"
    return result
