"""Automatic canary analysis: measure the canary against the stable revision, then decide.

Both revisions are read from Prometheus through the serving runtime's own metrics, which
carry the model version (serving/model.py): error rate, and latency quantiles over a window.
The rollout steps the canary's traffic share (e.g. 10% -> 50% -> 100%), analysing after
each step; a failed analysis rolls back, a passed last step promotes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from kfp_lifecycle import deploy
from kfp_lifecycle.errors import LifecycleError

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
    max_p99_latency_seconds: float | None = Field(None, description="Absolute p99 ceiling.")
    max_wait_steps: int = Field(5, description="Inconclusive analyses in a row, then roll back.")


@dataclass
class RevisionStats:
    version: str
    requests: float
    error_rate: float | None
    p50_seconds: float | None
    p99_seconds: float | None


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


def query(prometheus_url: str, promql: str) -> float | None:
    """One instant query; None when the result is empty or not a number (no traffic yet)."""
    try:
        response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise LifecycleError(f"Prometheus at {prometheus_url} did not answer: {error}") from None
    result = response.json()["data"]["result"]
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if value != value else value  # NaN: a 0/0 ratio


def revision_stats(prometheus_url: str, model: str, version: str, window: str) -> RevisionStats:
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
    return RevisionStats(
        version=version,
        requests=count,
        error_rate=error_rate,
        p50_seconds=query(prometheus_url, quantile(0.5)),
        p99_seconds=query(prometheus_url, quantile(0.99)),
    )


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
        line = (
            f"p99 latency {canary.p99_seconds * 1000:.1f} ms = {ratio:.2f}x stable "
            f"({stable.p99_seconds * 1000:.1f} ms; limit {options.max_p99_latency_ratio:.2f}x)"
        )
        (passes if ratio <= options.max_p99_latency_ratio else failures).append(line)
    if options.max_p99_latency_seconds is not None and canary.p99_seconds is not None:
        line = (
            f"p99 latency {canary.p99_seconds * 1000:.1f} ms "
            f"(ceiling {options.max_p99_latency_seconds * 1000:.1f} ms)"
        )
        ok = canary.p99_seconds <= options.max_p99_latency_seconds
        (passes if ok else failures).append(line)
    if failures:
        return Verdict(ROLLBACK, [f"FAIL: {f}" for f in failures] + passes, canary, stable)
    return Verdict(PROMOTE, [f"pass: {p}" for p in passes], canary, stable)


def analyse(
    options: CanaryOptions, model: str, canary_version: str, stable_version: str
) -> Verdict:
    stats = [
        revision_stats(options.prometheus_url, model, version, options.window)
        for version in (canary_version, stable_version)
    ]
    return judge(*stats, options)


def run_rollout(
    api: deploy.KServeApi,
    name: str,
    namespace: str,
    options: CanaryOptions,
    analyse_step: Callable[[], Verdict],
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> RolloutResult:
    """Step the canary through options.steps; roll back at the first failed analysis."""
    result = RolloutResult("")
    for percent in options.steps:
        if percent < 100:
            for request in deploy.plan_set_traffic(name, namespace, percent):
                api.apply(request)
        log(f"canary at {percent}%: waiting {options.interval_seconds:.0f}s, then analysing")
        waits = 0
        while True:
            sleep(options.interval_seconds)
            verdict = analyse_step()
            result.verdicts.append(verdict)
            log(f"  {verdict.decision}: " + "; ".join(verdict.reasons))
            if verdict.decision != WAIT:
                break
            waits += 1
            if waits >= options.max_wait_steps:
                verdict.decision = ROLLBACK
                verdict.reasons.append("no conclusive analysis in time: rolling back to be safe")
                break
        if verdict.decision == ROLLBACK:
            for request in deploy.plan_rollback(name, namespace, api.get(name, namespace)):
                api.apply(request)
            result.outcome = "rolled back"
            return result
    for request in deploy.plan_promote(name, namespace, api.get(name, namespace)):
        api.apply(request)
    result.outcome = "promoted"
    return result
