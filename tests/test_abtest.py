"""A/B verdicts on simulated request logs with a known effect and with none.

The false-positive rate is measured over thousands of seeded simulations, vectorised: with
no effect, a winner is declared at most at alpha (plus Monte Carlo slack), also when the
test is looked at after every batch, because it is judged only at the planned size.
"""

import math

import numpy as np
import pandas as pd
import pytest

from kfp_lifecycle import abtest
from kfp_lifecycle.abtest import ACCURACY, CONTINUE, RMSE, ROC_AUC, STOP, WINNER, AbTestPlan
from kfp_lifecycle.core.bundle import Prediction
from kfp_lifecycle.serving.payload_log import REQUEST_ID, ROW, log_rows

ALPHA = 0.05


def slack(rate, sims):
    """Three standard errors of a rate estimated from `sims` simulations."""
    return 3 * math.sqrt(rate * (1 - rate) / sims)


def test_sample_sizes_match_the_textbook_formulas():
    # two proportions 0.80 vs 0.85, alpha 0.05 two-sided, power 0.8: 906 per arm (Fleiss)
    assert abtest.sample_size(ACCURACY, 0.80, 0.05, 0.05, 0.8) == 906
    # RMSE sigma 1, effect 0.1: ((1.96 + 0.8416) * 10)^2 = 785
    assert abtest.sample_size(RMSE, 1.0, 0.1, 0.05, 0.8) == 785
    auc = abtest.sample_size(ROC_AUC, 0.80, 0.05, 0.05, 0.8)
    se = math.sqrt(
        abtest.hanley_mcneil_variance(0.80, auc / 2, auc / 2)
        + abtest.hanley_mcneil_variance(0.85, auc / 2, auc / 2)
    )
    assert se * (1.959964 + 0.841621) <= 0.05 < 1.01 * se * (1.959964 + 0.841621) * 1.01
    plan = AbTestPlan(metric=ACCURACY, baseline=0.8, min_effect=0.05, control="1",
                      challengers={"2": "v2", "3": "v3"})  # fmt: skip
    assert plan.comparison_alpha == 0.025  # Bonferroni over two challengers
    assert plan.rows_per_arm == abtest.sample_size(ACCURACY, 0.8, 0.05, 0.025, 0.8) > 906


def test_no_effect_declares_a_winner_at_most_at_alpha_even_when_peeked_at():
    """20 looks per test, 4000 tests: the guarded verdict stays at alpha, naive peeking does not."""
    plan = AbTestPlan(metric=ACCURACY, baseline=0.8, min_effect=0.05, control="1",
                      challengers={"2": "v2"})  # fmt: skip
    rng = np.random.default_rng(7)
    sims, n, looks = 4000, plan.rows_per_arm, 20
    a = (rng.random((sims, n)) < 0.8).cumsum(axis=1)
    b = (rng.random((sims, n)) < 0.8).cumsum(axis=1)
    guarded = np.zeros(sims, bool)
    naive = np.zeros(sims, bool)
    for look in np.linspace(n / looks, n, looks).astype(int):
        *_, p = abtest.two_proportions(a[:, look - 1], look, b[:, look - 1], look, ALPHA)
        naive |= p < ALPHA
        if look >= plan.rows_per_arm:  # decide(): judged only at the planned size
            guarded |= p < plan.comparison_alpha
    assert guarded.mean() <= ALPHA + slack(ALPHA, sims)
    assert naive.mean() > 2 * ALPHA  # what the guard prevents
    # the same rule through judge(), on one simulated test per look
    arms = {"1": (np.ones(n // 2), np.ones(n // 2)), "2": (np.ones(n // 2), np.zeros(n // 2))}
    interim = abtest.judge(arms, plan)
    assert interim.decision == CONTINUE and interim.winner is None
    assert interim.rows_needed == {"1": n - n // 2, "2": n - n // 2}
    assert "rows still needed: 1: " in interim.reasons[0]


def test_the_bootstrap_keeps_its_false_positive_rate_and_finds_a_real_difference():
    rng = np.random.default_rng(3)

    def arm(separation, rows):
        truth = rng.random(rows) < 0.5
        return truth.astype(float), rng.normal(truth * separation, 1.0)

    sims, hits = 150, 0
    for _ in range(sims):
        *_, p = abtest.bootstrap_difference(ROC_AUC, arm(1.0, 300), arm(1.0, 300), ALPHA, 400, rng)
        hits += p < ALPHA
    assert hits / sims <= ALPHA + slack(ALPHA, sims)
    difference, low, high, p = abtest.bootstrap_difference(
        ROC_AUC, arm(0.5, 1500), arm(1.5, 1500), ALPHA, 1000, rng
    )
    assert p < ALPHA and 0 < low < difference < high


def test_weighted_auc_is_sklearns_on_the_resampled_rows():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    truth = (rng.random(200) < 0.3).astype(float)
    scores = np.round(rng.normal(truth, 1.0), 1)  # ties on purpose
    weights = abtest.resample_weights(200, 3, rng)
    for row in weights:
        rows = np.repeat(np.arange(200), row)
        assert abtest.weighted_auc(truth, scores, row[None, :])[0] == pytest.approx(
            roc_auc_score(truth[rows], scores[rows])
        )


def simulated_log(accuracies, rows, seed, positive_share=0.5):
    """A request log and its labels: each version right with its own probability."""
    rng = np.random.default_rng(seed)
    logs, labels = [], []
    for version, accuracy in accuracies.items():
        truth = np.where(rng.random(rows) < positive_share, "yes", "no")
        right = rng.random(rows) < accuracy
        predicted = np.where(right, truth, np.where(truth == "yes", "no", "yes"))
        p_yes = np.where(predicted == "yes", 0.5 + rng.random(rows) / 2, rng.random(rows) / 2)
        frame = pd.DataFrame({"tenure": rng.integers(0, 60, rows)})
        prediction = Prediction(list(predicted), np.c_[1 - p_yes, p_yes], ["no", "yes"])
        log = log_rows(frame, prediction, "x", "churn", version)
        log[REQUEST_ID] = [f"{version}-{i}" for i in range(rows)]
        log[ROW] = 0
        logs.append(log)
        labels.append(pd.DataFrame({REQUEST_ID: log[REQUEST_ID], "churned": truth}))
    return pd.concat(logs, ignore_index=True), pd.concat(labels, ignore_index=True)


@pytest.fixture(scope="module")
def plan():
    return AbTestPlan(metric=ACCURACY, baseline=0.8, min_effect=0.05, control="1",
                      challengers={"2": "v2"})  # fmt: skip


def test_a_planted_winner_is_found_from_the_log_and_labels(plan):
    log, labels = simulated_log({"1": 0.80, "2": 0.86}, plan.rows_per_arm, seed=1)
    verdict = abtest.evaluate(log, labels, "churned", plan)
    assert (verdict.decision, verdict.winner) == (WINNER, "2")
    (comparison,) = verdict.comparisons
    assert comparison.significant and comparison.better and comparison.ci[0] > 0
    assert [a.rows for a in verdict.arms] == [plan.rows_per_arm] * 2
    worse = abtest.evaluate(*simulated_log({"1": 0.86, "2": 0.80}, plan.rows_per_arm, 2),
                            "churned", plan)  # fmt: skip
    assert (worse.decision, worse.winner) == (WINNER, "1")  # the control wins


def test_no_effect_stops_and_a_short_log_continues(plan):
    log, labels = simulated_log({"1": 0.8, "2": 0.8}, plan.rows_per_arm, seed=4)
    verdict = abtest.evaluate(log, labels, "churned", plan)
    assert verdict.decision == STOP and verdict.winner is None
    assert "keep the control 1" in verdict.reasons[0]
    short = abtest.evaluate(*simulated_log({"1": 0.8, "2": 0.95}, 200, 5), "churned", plan)
    assert short.decision == CONTINUE  # a large interim difference is still no verdict
    assert short.rows_needed == {"1": plan.rows_per_arm - 200, "2": plan.rows_per_arm - 200}


def test_roc_auc_and_rmse_arms_come_from_the_log():
    log, labels = simulated_log({"1": 0.7, "2": 0.9}, 400, seed=6)
    plan = AbTestPlan(metric=ROC_AUC, baseline=0.7, min_effect=0.1, control="1",
                      challengers={"2": "v2"}, rows_per_arm=400, bootstrap=500)  # fmt: skip
    verdict = abtest.evaluate(log, labels, "churned", plan)
    assert (verdict.decision, verdict.winner) == (WINNER, "2")
    rows = 500
    rng = np.random.default_rng(8)
    truth = rng.normal(10, 2, 2 * rows)
    noise = np.r_[rng.normal(0, 1.0, rows), rng.normal(0, 1.5, rows)]
    log = pd.concat(
        [
            log_rows(
                pd.DataFrame({"x": np.zeros(rows)}),
                Prediction(
                    list(truth[i * rows : (i + 1) * rows] + noise[i * rows : (i + 1) * rows]),
                    None,
                    None,
                ),
                "r",
                "price",
                str(i + 1),
            )
            for i in range(2)
        ],
        ignore_index=True,
    )
    log[REQUEST_ID] = [str(i) for i in range(2 * rows)]
    labels = pd.DataFrame({REQUEST_ID: log[REQUEST_ID], "price": truth})
    plan = AbTestPlan(metric=RMSE, baseline=1.0, min_effect=0.3, control="1",
                      challengers={"2": "v2"}, bootstrap=500)  # fmt: skip
    verdict = abtest.evaluate(log, labels, "price", plan)
    assert (verdict.decision, verdict.winner) == (WINNER, "1")  # lower RMSE wins
    assert verdict.arms[0].value == pytest.approx(np.sqrt((noise[:rows] ** 2).mean()))


def test_the_html_report_shows_verdict_plan_and_arms(plan):
    from html_pages import sections_of

    log, labels = simulated_log({"1": 0.8, "2": 0.86}, plan.rows_per_arm, 1)
    verdict = abtest.evaluate(log, labels, "churned", plan)
    sections = sections_of(abtest.report_html(plan, verdict, "churn"))
    assert "winner: 2" in sections.text["verdict"]
    assert str(plan.rows_per_arm) in sections.text["plan"]
    assert sections.tables["arms"] == 1 and sections.images["comparisons"] == 1


def test_bad_plans_are_named():
    with pytest.raises(ValueError, match="metric must be one of"):
        AbTestPlan(metric="f1", baseline=0.8, min_effect=0.05, control="1", challengers={"2": "v2"})
    with pytest.raises(ValueError, match="none of them the control"):
        AbTestPlan(baseline=0.8, min_effect=0.05, control="1", challengers={"1": "v1"})
    with pytest.raises(ValueError, match="baseline must be below 1"):
        AbTestPlan(baseline=1.2, min_effect=0.05, control="1", challengers={"2": "v2"})
