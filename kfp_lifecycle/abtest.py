"""A/B tests that end with a decision: variants at fixed shares, judged once, at a planned size.

KServe splits traffic but never concludes (kserve#335). Here the monitoring side does: each
variant's quality comes from the request log joined with the labels that arrived later (by
request id and row, per model version: components/quality.py), with a confidence interval
and a test fit for the metric: a two-proportion z-test for accuracy, a bootstrap of the
difference for ROC-AUC and RMSE. Each challenger is compared with the control (the stable
model), Bonferroni-corrected for several challengers.

Peeking is what makes most A/B dashboards lie: testing after every batch and stopping at
the first p < alpha declares far more false winners than alpha. So the sample size per arm
is fixed up front, from the smallest effect worth detecting, the power and alpha, and the
test is judged once, when every arm has it. Before that the verdict is "continue" with the
rows still needed, whatever the interim numbers say. Verdicts: winner (a significant
difference, in either direction), continue, or stop (planned size reached and no
difference of the planned size detected: keep the control).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats

from kfp_lifecycle.core.errors import DataError, LifecycleError

ACCURACY, ROC_AUC, RMSE = "accuracy", "roc_auc", "rmse"
METRICS = (ACCURACY, ROC_AUC, RMSE)
HIGHER_IS_BETTER = {ACCURACY: True, ROC_AUC: True, RMSE: False}
WINNER, CONTINUE, STOP = "winner", "continue", "stop"
PLAN_ANNOTATION = "kfp-lifecycle.io/abtest"


class AbTestPlan(BaseModel):
    """What is tested, decided before the first request (stored on the InferenceService)."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(ACCURACY, description="accuracy, roc_auc (binary) or rmse.")
    baseline: float = Field(
        ..., gt=0, description="The control's expected figure (accuracy, AUC, or RMSE)."
    )
    min_effect: float = Field(
        ..., gt=0, description="Smallest difference worth detecting, in the metric's units."
    )
    alpha: float = Field(0.05, gt=0, lt=0.5, description="False-positive rate of the test.")
    power: float = Field(0.8, gt=0.5, lt=1, description="Chance to detect min_effect.")
    positive_rate: float = Field(
        0.5, gt=0, lt=1, description="roc_auc only: expected share of the positive class."
    )
    positive_label: str = Field("", description="roc_auc only: the positive class (default: last).")
    control: str = Field(..., description="Model version of the stable model.")
    challengers: dict[str, str] = Field(
        ..., description="Model version -> Standard-mode variant name (or storageUri)."
    )
    rows_per_arm: int = Field(0, ge=0, description="Planned labelled rows per arm (computed).")
    bootstrap: int = Field(2000, ge=200, description="Bootstrap resamples (roc_auc, rmse).")

    @model_validator(mode="after")
    def _sized(self) -> AbTestPlan:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not self.challengers or self.control in self.challengers:
            raise ValueError("an A/B test needs challengers, none of them the control")
        if self.metric in (ACCURACY, ROC_AUC) and self.baseline >= 1:
            raise ValueError(f"{self.metric} baseline must be below 1, got {self.baseline}")
        if not self.rows_per_arm:
            self.rows_per_arm = sample_size(
                self.metric,
                self.baseline,
                self.min_effect,
                self.comparison_alpha,
                self.power,
                self.positive_rate,
            )
        return self

    @property
    def comparison_alpha(self) -> float:
        """Bonferroni: each of k challenger-vs-control tests at alpha / k."""
        return self.alpha / len(self.challengers)

    def to_annotation(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_service(cls, service: dict[str, Any]) -> AbTestPlan:
        text = (service["metadata"].get("annotations") or {}).get(PLAN_ANNOTATION)
        if not text:
            name = service["metadata"]["name"]
            raise LifecycleError(f"{name} has no A/B test: start one with `lifecycle abtest start`")
        return cls.model_validate(json.loads(text))


def _z(p: float) -> float:
    return float(stats.norm.ppf(p))


def hanley_mcneil_variance(auc: float, positives: float, negatives: float) -> float:
    """Variance of an AUC estimate (Hanley & McNeil 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    return (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )


def sample_size(
    metric: str,
    baseline: float,
    min_effect: float,
    alpha: float,
    power: float,
    positive_rate: float = 0.5,
) -> int:
    """Labelled rows per arm for a two-sided test at `alpha` to find `min_effect` with `power`.

    accuracy: the two-proportion formula (Fleiss). roc_auc: Hanley-McNeil variances of both
    AUCs at the expected class balance. rmse: with normal errors the RMSE estimate has
    variance sigma^2 / 2n, so the difference of two has sigma^2 / n (delta method).
    """
    z_alpha, z_power = _z(1 - alpha / 2), _z(power)
    if metric == ACCURACY:
        p1 = baseline
        p2 = baseline + min_effect if baseline + min_effect < 1 else baseline - min_effect
        mean = (p1 + p2) / 2
        root = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_power * math.sqrt(
            p1 * (1 - p1) + p2 * (1 - p2)
        )
        return math.ceil((root / abs(p2 - p1)) ** 2)
    if metric == RMSE:
        return math.ceil(((z_alpha + z_power) * baseline / min_effect) ** 2)
    other = baseline + min_effect if baseline + min_effect < 1 else baseline - min_effect

    def standard_error(n: int) -> float:
        positives, negatives = max(n * positive_rate, 2), max(n * (1 - positive_rate), 2)
        return math.sqrt(
            hanley_mcneil_variance(baseline, positives, negatives)
            + hanley_mcneil_variance(other, positives, negatives)
        )

    target = abs(other - baseline) / (z_alpha + z_power)
    low, high = 4, 8
    while standard_error(high) > target:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if standard_error(middle) > target else (low, middle)
    return high


def two_proportions(
    successes_a: Any, rows_a: Any, successes_b: Any, rows_b: Any, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """B minus A: difference, CI (unpooled) and two-sided p-value (pooled z-test).

    Works on arrays, one test per element, so thousands of simulations run at once.
    """
    sa, na, sb, nb = (
        np.asarray(x, dtype=float) for x in (successes_a, rows_a, successes_b, rows_b)
    )
    pa, pb = sa / na, sb / nb
    difference = pb - pa
    pooled = (sa + sb) / (na + nb)
    pooled_se = np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(pooled_se > 0, difference / pooled_se, 0.0)
    p_value = 2 * stats.norm.sf(np.abs(z))
    se = np.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    half = _z(1 - alpha / 2) * se
    return difference, difference - half, difference + half, p_value


def resample_weights(rows: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap resamples as counts (resamples x rows): how often each row was drawn."""
    drawn = rng.integers(0, rows, size=(resamples, rows)) + np.arange(resamples)[:, None] * rows
    return np.bincount(drawn.ravel(), minlength=resamples * rows).reshape(resamples, rows)


def weighted_auc(truth: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC per row of weights, ties counted half (the Mann-Whitney statistic).

    Sorting once and reading cumulative negative weights at each tie group's edges makes
    every resample a cumulative sum instead of a sort.
    """
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    positive = truth[order].astype(bool)
    w = weights[:, order]
    negatives = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w * ~positive, axis=1)], axis=1)
    first = np.searchsorted(ordered, ordered, side="left")
    last = np.searchsorted(ordered, ordered, side="right")
    below = negatives[:, first]
    tied = negatives[:, last] - below
    pos = w * positive
    with np.errstate(divide="ignore", invalid="ignore"):
        return (pos * (below + tied / 2)).sum(axis=1) / (pos.sum(axis=1) * negatives[:, -1])


def weighted_rmse(truth: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.sqrt((weights * (predicted - truth) ** 2).sum(axis=1) / weights.sum(axis=1))


WEIGHTED = {ROC_AUC: weighted_auc, RMSE: weighted_rmse}


def bootstrap_difference(
    metric: str,
    arm_a: tuple[np.ndarray, np.ndarray],
    arm_b: tuple[np.ndarray, np.ndarray],
    alpha: float,
    resamples: int,
    rng: np.random.Generator,
) -> tuple[float, float, float, float]:
    """B minus A: difference, percentile CI and two-sided p-value from resampling each arm.

    The p-value is twice the smaller tail of the resampled differences around 0.
    """
    function = WEIGHTED[metric]
    values = []
    for truth, output in (arm_a, arm_b):
        weights = resample_weights(len(truth), resamples, rng)
        values.append(function(truth, output, weights))
    spread = values[1] - values[0]
    spread = spread[np.isfinite(spread)]
    observed = float(_value(metric, arm_b) - _value(metric, arm_a))
    low, high = np.quantile(spread, [alpha / 2, 1 - alpha / 2])
    p_value = min(1.0, 2 * min(float((spread <= 0).mean()), float((spread >= 0).mean())))
    return observed, float(low), float(high), p_value


@dataclass
class Arm:
    version: str
    rows: int
    value: float | None
    ci: tuple[float, float] | None


@dataclass
class Comparison:
    challenger: str
    difference: float
    ci: tuple[float, float]
    p_value: float
    significant: bool
    better: bool  # the challenger is better than the control (judged or not)


@dataclass
class AbVerdict:
    decision: str  # winner | continue | stop
    winner: str | None
    rows_needed: dict[str, int]
    arms: list[Arm]
    comparisons: list[Comparison]
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def arm_outcomes(
    joined: pd.DataFrame, metric: str, positive_label: str = ""
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per model version: (truth, output) arrays for the metric, from log rows with labels.

    accuracy: (1s, correct?); roc_auc: (is positive?, positive-class probability);
    rmse: (label, prediction). The labels and outputs are read as quality reads them.
    """
    from kfp_lifecycle.components.quality import _prediction
    from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION
    from kfp_lifecycle.serving.payload_log import MODEL_VERSION

    task = REGRESSION if metric == RMSE else CLASSIFICATION
    arms = {}
    for version, rows in joined.groupby(joined[MODEL_VERSION].astype(str), sort=True):
        truth, prediction = _prediction(rows, task)
        if metric == RMSE:
            arms[version] = (np.asarray(truth, float), np.asarray(prediction.labels, float))
        elif metric == ACCURACY:
            correct = np.asarray(prediction.labels, dtype=object) == np.asarray(truth, object)
            arms[version] = (np.ones(len(rows)), correct.astype(float))
        else:
            classes = [str(c) for c in prediction.classes]
            if len(classes) != 2:
                raise DataError(
                    f"roc_auc needs a binary classifier, version {version} has {classes}"
                )
            positive = positive_label or classes[-1]
            if positive not in classes:
                raise DataError(
                    f"positive label {positive!r} is not a class ({', '.join(classes)})"
                )
            is_positive = np.asarray(truth, dtype=object) == positive
            arms[version] = (
                is_positive.astype(float),
                prediction.probabilities[:, classes.index(positive)],
            )
    return arms


def _value(metric: str, arm: tuple[np.ndarray, np.ndarray]) -> float:
    if metric == ACCURACY:
        return float(arm[1].mean())
    return float(WEIGHTED[metric](arm[0], arm[1], np.ones((1, len(arm[0]))))[0])


def judge(
    arms: dict[str, tuple[np.ndarray, np.ndarray]], plan: AbTestPlan, seed: int = 0
) -> AbVerdict:
    """The verdict at this moment; judged only once every arm has the planned rows."""
    rng = np.random.default_rng(seed)
    versions = [plan.control, *plan.challengers]
    empty = (np.zeros(0), np.zeros(0))
    counts = {v: len(arms.get(v, empty)[0]) for v in versions}
    needed = {v: max(0, plan.rows_per_arm - n) for v, n in counts.items()}
    alpha = plan.comparison_alpha
    summary = [
        Arm(v, counts[v], _value(plan.metric, arms[v]) if counts[v] else None, None)
        for v in versions
    ]
    for arm in summary:
        if arm.rows and plan.metric == ACCURACY:  # Wald interval of one proportion
            half = _z(1 - alpha / 2) * math.sqrt(arm.value * (1 - arm.value) / arm.rows)
            arm.ci = (arm.value - half, arm.value + half)
    comparisons = []
    control = arms.get(plan.control, empty)
    higher = HIGHER_IS_BETTER[plan.metric]
    for challenger in plan.challengers:
        other = arms.get(challenger, empty)
        if len(control[0]) < 2 or len(other[0]) < 2:
            continue
        if plan.metric == ACCURACY:
            result = two_proportions(
                control[1].sum(), len(control[1]), other[1].sum(), len(other[1]), alpha
            )
            difference, low, high, p_value = (float(x) for x in result)
        else:
            difference, low, high, p_value = bootstrap_difference(
                plan.metric, control, other, alpha, plan.bootstrap, rng
            )
        comparisons.append(
            Comparison(
                challenger,
                difference,
                (low, high),
                p_value,
                p_value < alpha,
                (difference > 0) == higher and difference != 0,
            )
        )
    return decide(plan, summary, comparisons, needed)


def decide(
    plan: AbTestPlan, arms: list[Arm], comparisons: list[Comparison], needed: dict[str, int]
) -> AbVerdict:
    """Before the planned size: continue, whatever the numbers (no peeking). At it: the best
    significantly better challenger wins; the control wins when it beats every challenger
    significantly; else stop (no difference of the planned size)."""
    unit = f"{plan.metric} at alpha {plan.alpha:g} (each of {len(plan.challengers)}: " + (
        f"{plan.comparison_alpha:.3g})"
    )
    if any(needed.values()):
        missing = ", ".join(f"{v}: {n}" for v, n in needed.items() if n)
        reason = (
            f"no difference yet: {plan.rows_per_arm} labelled rows per arm are planned, rows "
            f"still needed: {missing}; judging earlier would inflate false winners"
        )
        return AbVerdict(CONTINUE, None, needed, arms, comparisons, [reason])
    better = [c for c in comparisons if c.significant and c.better]
    reasons = [
        f"{c.challenger} vs {plan.control}: {plan.metric} difference {c.difference:+.4f} "
        f"(CI {c.ci[0]:+.4f}..{c.ci[1]:+.4f}), p={c.p_value:.4g}"
        + (" significant" if c.significant else "")
        for c in comparisons
    ]
    if better:
        higher = HIGHER_IS_BETTER[plan.metric]
        best = max(better, key=lambda c: c.difference if higher else -c.difference)
        reasons.insert(0, f"{best.challenger} wins on {unit}")
        return AbVerdict(WINNER, best.challenger, needed, arms, comparisons, reasons)
    if comparisons and all(c.significant and not c.better for c in comparisons):
        reasons.insert(0, f"the control {plan.control} beats every challenger on {unit}")
        return AbVerdict(WINNER, plan.control, needed, arms, comparisons, reasons)
    reasons.insert(
        0,
        f"stop: no {plan.metric} difference of {plan.min_effect:g} or more detected at the "
        f"planned {plan.rows_per_arm} rows per arm; keep the control {plan.control}",
    )
    return AbVerdict(STOP, None, needed, arms, comparisons, reasons)


def evaluate(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    label_column: str,
    plan: AbTestPlan,
    seed: int = 0,
) -> AbVerdict:
    """The verdict from the request log and the labels (joined by request id and row)."""
    from kfp_lifecycle.components.quality import join_ground_truth

    joined, _ = join_ground_truth(predictions, labels, label_column)
    return judge(arm_outcomes(joined, plan.metric, plan.positive_label), plan, seed)


def report_html(plan: AbTestPlan, verdict: AbVerdict, service: str) -> str:
    """The verdict, the plan and each arm, self-contained (html_report)."""
    import matplotlib.pyplot as plt

    from kfp_lifecycle.html_report import (
        Section,
        figure_to_img,
        metric_columns_table,
        render_page,
        table,
    )

    css = {WINNER: "ok", CONTINUE: "muted", STOP: "warn"}[verdict.decision]
    decision = Section("verdict", "Verdict").text(
        f"{verdict.decision}" + (f": {verdict.winner}" if verdict.winner else ""), css
    )
    for reason in verdict.reasons:
        decision.text(reason)
    planned = Section("plan", "Plan (fixed before the test)").add(
        table(
            ["metric", "baseline", "min effect", "alpha", "power", "rows per arm"],
            [
                [
                    plan.metric,
                    plan.baseline,
                    plan.min_effect,
                    plan.alpha,
                    plan.power,
                    plan.rows_per_arm,
                ]
            ],
        )
    )
    arms = Section("arms", "Arms").add(
        metric_columns_table(
            ["version", "role", "labelled rows", "still needed"],
            [plan.metric],
            [
                (
                    [
                        a.version,
                        "control" if a.version == plan.control else "challenger",
                        a.rows,
                        verdict.rows_needed.get(a.version, 0),
                    ],
                    {plan.metric: a.value},
                )
                for a in verdict.arms
            ],
        )
    )
    compared = Section("comparisons", "Challenger minus control").add(
        table(
            ["challenger", "difference", "CI low", "CI high", "p-value", "significant"],
            [
                [c.challenger, c.difference, c.ci[0], c.ci[1], c.p_value, c.significant]
                for c in verdict.comparisons
            ],
        )
    )
    if verdict.comparisons:
        figure, axis = plt.subplots(figsize=(6, 0.6 + 0.5 * len(verdict.comparisons)))
        for row, c in enumerate(verdict.comparisons):
            error = [[c.difference - c.ci[0]], [c.ci[1] - c.difference]]
            axis.errorbar(c.difference, row, xerr=error, fmt="o", capsize=4)
        axis.axvline(0, color="grey", linewidth=1)
        axis.set_yticks(
            range(len(verdict.comparisons)), [c.challenger for c in verdict.comparisons]
        )
        axis.set_xlabel(f"{plan.metric} difference vs control {plan.control}")
        compared.add(figure_to_img(figure, "difference and confidence interval per challenger"))
    if verdict.decision == CONTINUE:
        compared.text(
            "Interim figures: not a decision until every arm has the planned rows.", "muted"
        )
    return render_page(
        f"A/B test: {service}", f"control {plan.control}", [decision, planned, arms, compared]
    )
