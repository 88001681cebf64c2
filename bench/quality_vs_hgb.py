"""Champion quality vs a plain scikit-learn HistGradientBoosting baseline, on the same splits.

    .venv/bin/python bench/quality_vs_hgb.py

For each dataset: the same seeded train/validation/test split; the baseline is
HistGradientBoosting with default settings (native categorical support), fitted on train and
scored on test. Ours: each family of components/train.py, and the champion that `select` would
pick on validation. Reported: test primary metric for each, the champion/baseline ratio, and
wall time for both sides. Data ships with scikit-learn or the project (no network).
"""

import time

import numpy as np
import pandas as pd
from sklearn import datasets
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import mean_squared_error, roc_auc_score

from kfp_lifecycle.components.evaluate import compute_metrics
from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.select import rank_candidates
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import DEFAULT_FAMILIES, train_model
from kfp_lifecycle.demo import make_churn_dataset
from kfp_lifecycle.tasks import CLASSIFICATION, METRICS, PRIMARY_METRIC, REGRESSION


def _sklearn(loader, target="target"):
    data = loader(as_frame=True)
    return data.frame.rename(columns={"target": target})


def _hastie():
    x, y = datasets.make_hastie_10_2(n_samples=12000, random_state=0)
    return pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]).assign(target=y)


def _friedman():
    x, y = datasets.make_friedman1(n_samples=5000, noise=1.0, random_state=0)
    return pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]).assign(target=y)


DATASETS = {
    "churn (demo, 5000 rows)": (lambda: make_churn_dataset(), "churned", CLASSIFICATION),
    "breast_cancer": (lambda: _sklearn(datasets.load_breast_cancer), "target", CLASSIFICATION),
    "wine (3 classes)": (lambda: _sklearn(datasets.load_wine), "target", CLASSIFICATION),
    "diabetes": (lambda: _sklearn(datasets.load_diabetes), "target", REGRESSION),
    "hastie_10_2 (12000 rows, nonlinear)": (lambda: _hastie(), "target", CLASSIFICATION),
    "friedman1 (5000 rows, nonlinear)": (lambda: _friedman(), "target", REGRESSION),
}


def baseline(parts, target, task):
    x_train = parts.train.drop(columns=[target])
    x_test = parts.test.drop(columns=[target])
    for frame in (x_train, x_test):
        for name in frame.columns:
            if pd.api.types.is_numeric_dtype(frame[name]):
                continue
            as_time = pd.to_datetime(frame[name], errors="coerce", format="mixed")
            if as_time.notna().mean() > 0.95:  # a timestamp: seconds since the epoch
                frame[name] = as_time.astype("int64") // 10**9
            else:
                frame[name] = frame[name].astype("category")
    cls = (
        HistGradientBoostingClassifier if task == CLASSIFICATION else HistGradientBoostingRegressor
    )
    model = cls(random_state=0, categorical_features="from_dtype")
    model.fit(x_train, parts.train[target])
    if task == REGRESSION:
        return float(np.sqrt(mean_squared_error(parts.test[target], model.predict(x_test))))
    proba = model.predict_proba(x_test)
    if proba.shape[1] == 2:
        return float(roc_auc_score(parts.test[target] == model.classes_[1], proba[:, 1]))
    return float(roc_auc_score(parts.test[target], proba, multi_class="ovr"))


def ours(parts, target, task):
    fitted, schema, _ = fit_preprocessor(parts.train, target, task)
    bundles = [
        train_model(parts.train, parts.validation, target, task, f, fitted, schema)
        for f in DEFAULT_FAMILIES
    ]
    metric = PRIMARY_METRIC[task]
    champion = rank_candidates([b.metadata for b in bundles], metric)[0]["family"]
    scores = {}
    for bundle in bundles:
        prediction = bundle.predict(parts.test.drop(columns=[target]))
        scores[bundle.metadata["family"]] = compute_metrics(
            task, parts.test[target].tolist(), prediction
        )[metric]
    return champion, scores


def main() -> None:
    rows = []
    for name, (load, target, task) in DATASETS.items():
        frame = load()
        parts = split_table(frame, target, task, seed=42)
        started = time.perf_counter()
        base = baseline(parts, target, task)
        base_seconds = time.perf_counter() - started
        started = time.perf_counter()
        champion, scores = ours(parts, target, task)
        our_seconds = time.perf_counter() - started
        metric = PRIMARY_METRIC[task]
        higher = METRICS[metric].greater_is_better
        ratio = scores[champion] / base if higher else base / scores[champion]
        rows.append(
            {
                "dataset": name,
                "metric (test)": metric,
                "hgb baseline": round(base, 4),
                **{f"{f}": round(s, 4) for f, s in scores.items()},
                "champion": champion,
                "champion/baseline (>1 better)": round(ratio, 3),
                "time ours (3 families) / baseline": round(our_seconds / base_seconds, 1),
            }
        )
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
