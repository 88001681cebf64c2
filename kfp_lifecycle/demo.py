"""The embedded demo dataset: a deterministic, realistic customer-churn table (no network).

It has what real tables have: numeric and categorical columns, missing values, a timestamp
and an imbalanced binary target whose signal is real but noisy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DEMO_TARGET = "churned"
DEMO_MODEL_NAME = "churn"
DEMO_ROWS = 5000
# The business bounds the demo's model must meet; without any, the gate blesses nothing.
DEMO_GATE = {"thresholds": {"roc_auc": 0.70}}


def make_churn_dataset(rows: int = DEMO_ROWS, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "standard", "pro"], size=rows, p=[0.5, 0.35, 0.15])
    contract = rng.choice(
        ["month-to-month", "one-year", "two-year"], size=rows, p=[0.55, 0.25, 0.2]
    )
    region = rng.choice(["north", "south", "east", "west"], size=rows)
    payment = rng.choice(["card", "bank-transfer", "electronic-check", "mailed-check"], size=rows)
    age = rng.normal(44, 14, size=rows).clip(18, 90).round()
    tenure = rng.gamma(2.0, 14.0, size=rows).clip(0, 120).round()
    base_price = np.select([plan == "basic", plan == "standard"], [29.0, 59.0], 99.0)
    monthly = (base_price + rng.normal(0, 6, size=rows)).round(2)
    support_calls = rng.poisson(1.2 + 1.5 * (plan == "basic"), size=rows)
    signup = pd.Timestamp("2026-01-01") - pd.to_timedelta(tenure * 30.4, unit="D")
    signup = signup + pd.to_timedelta(rng.integers(0, 86400, size=rows), unit="s")

    logit = (
        -2.7
        + 1.1 * (contract == "month-to-month")
        - 0.9 * (contract == "two-year")
        - 0.035 * tenure
        + 0.45 * support_calls
        + 0.012 * (monthly - 50)
        + 0.6 * (payment == "electronic-check")
        - 0.015 * (age - 44)
    )
    churned = rng.random(rows) < 1 / (1 + np.exp(-logit))

    frame = pd.DataFrame(
        {
            "signup_date": signup.strftime("%Y-%m-%d %H:%M:%S"),
            "age": age,
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "support_calls": support_calls,
            "plan": plan,
            "contract": contract,
            "region": region,
            "payment_method": payment,
            DEMO_TARGET: np.where(churned, "yes", "no"),
        }
    )
    # Real tables have holes: some ages and regions were never recorded.
    frame.loc[rng.random(rows) < 0.08, "age"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "region"] = None
    frame.loc[rng.random(rows) < 0.03, "monthly_charges"] = np.nan
    return frame


def write_demo_dataset(path: str | Path, rows: int = DEMO_ROWS) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_churn_dataset(rows).to_csv(path, index=False)
    return path
