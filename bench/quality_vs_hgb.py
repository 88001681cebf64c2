"""Tuned-pipeline quality and wall time vs a plain scikit-learn HistGradientBoosting
baseline, on the same splits.

    .venv/bin/python bench/quality_vs_hgb.py [--trials N] [--timeout SECONDS]
        [--families a,b] [--datasets name,name] [--pipeline]

For each dataset: one seeded train/validation/test split shared by every contender. The
baseline is HistGradientBoosting with default settings (native categorical support), fitted
on train and scored on test. Ours, twice on that split: every family of --families (default:
every registered family, kfp_lifecycle/families/, LightGBM included) with its defaults
("defaults"), and every family tuned with Optuna (components/tune.py; the default
TuneOptions budget unless --trials/--timeout say otherwise) and refitted with its best
params ("tuned"); each time the champion is the family `select` would pick on validation
among them. Reported side by side: the champions' validation score (what tuning optimises)
and test score (what the baseline is judged on), test ratios to the baseline (>1: better,
for error metrics too), and wall times with their ratio to the baseline's; then each
family's own: validation scores, tuned test score and its wall time (tuning included). Our wall time
includes preprocessing and all the families, run one after the other (the pipeline runs
them in parallel). Data ships with scikit-learn or the project (no network).

With --pipeline, each dataset also goes through the whole training pipeline on kfp.local
(`lifecycle run training` with the default configuration: cleaning, feature selection,
balancing, tuning within the default budget, decision threshold, every report step), and the
baseline is fitted again on that run's own split (the table read back from CSV, cleaned and
split as the pipeline's steps do). Its wall time is the whole run's, reports included.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import datasets
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import mean_squared_error, roc_auc_score

from kfp_lifecycle.components.clean import clean_table
from kfp_lifecycle.components.evaluate import compute_metrics
from kfp_lifecycle.components.ingest import read_table
from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.select import leaderboard, rank_candidates
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.train import train_model, tune_family
from kfp_lifecycle.components.tune import TuneOptions, chosen_params
from kfp_lifecycle.config import parse_config
from kfp_lifecycle.core.tasks import CLASSIFICATION, METRICS, PRIMARY_METRIC, REGRESSION
from kfp_lifecycle.demo import make_churn_dataset
from kfp_lifecycle.families import FAMILIES, get_family
from kfp_lifecycle.local_run import run_training


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


def ours(parts, target, task, tuning: TuneOptions | None, families: list[str]):
    """The champion as the pipeline would pick it on validation: family, validation and test
    score; and every family's validation and test score and wall time (tuning included)."""
    fitted, schema, _ = fit_preprocessor(parts.train, target, task)
    metric = PRIMARY_METRIC[task]
    truth = parts.test[target].tolist()
    bundles, tests, seconds = [], {}, {}
    for family in families:
        started = time.perf_counter()
        params = None
        if tuning is not None:
            study = tune_family(parts.train, parts.validation, target, task, family, fitted,
                                metric, tuning)  # fmt: skip
            params = chosen_params(study)
        bundle = train_model(parts.train, parts.validation, target, task, family, fitted,
                             schema, params=params)  # fmt: skip
        seconds[family] = time.perf_counter() - started
        prediction = bundle.predict(parts.test.drop(columns=[target]))
        tests[family] = compute_metrics(task, truth, prediction)[metric]
        bundles.append(bundle)
    ranked = rank_candidates([b.metadata for b in bundles], metric)
    champion = ranked[0]["family"]
    (bundle,) = [b for b in bundles if b.metadata["family"] == champion]
    return {
        "champion": champion,
        "validation": bundle.metadata["metrics"]["validation"][metric],
        "test": tests[champion],
        "families": leaderboard(ranked, metric),
        "tests": tests,
        "seconds": seconds,
    }


def whole_pipeline(frame: pd.DataFrame, target: str, task: str) -> dict:
    """The training pipeline on kfp.local, defaults throughout; and the HGB baseline on the
    split that run made (the same functions, options and seed as its clean and split steps)."""
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as directory:
        data = Path(directory) / "table.csv"
        frame.to_csv(data, index=False)
        config = parse_config(
            {
                "data": {"source": str(data), "target": target, "task": task},
                "output": str(Path(directory) / "run"),
            }
        )  # no gate threshold: nothing is blessed, every run is still scored and registered
        started = time.perf_counter()
        summary = run_training(config)
        seconds = time.perf_counter() - started
        cleaned, _ = clean_table(read_table(data), target, config.clean)
        parts = split_table(cleaned, target, task, config.split)
    return {
        "champion": summary["best_family"],
        "test": summary["metrics"][summary["primary_metric"]],
        "seconds": seconds,
        "baseline": baseline(parts, target, task),
    }


def _timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def main() -> None:
    defaults = TuneOptions()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=defaults.trials)
    parser.add_argument("--timeout", type=float, default=defaults.timeout_seconds)
    parser.add_argument(
        "--pipeline", action="store_true", help="also run the whole pipeline on kfp.local"
    )
    parser.add_argument(
        "--families",
        default=",".join(FAMILIES),
        help="comma-separated model families (default: every registered one)",
    )
    short = {name.split()[0]: name for name in DATASETS}  # "wine (3 classes)" -> "wine"
    parser.add_argument(
        "--datasets", help=f"comma-separated subset of: {', '.join(short)} (default: all)"
    )
    arguments = parser.parse_args()
    chosen = [get_family(f.strip()).name for f in arguments.families.split(",") if f.strip()]
    given = arguments.datasets.split(",") if arguments.datasets else list(short)
    unknown = [name for name in given if name not in short]
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(short)}")
    picked = [short[name] for name in given]
    tuning = TuneOptions(trials=arguments.trials, timeout_seconds=arguments.timeout)
    print(f"tuning budget per family: {tuning.trials} trials, {tuning.timeout_seconds:g}s")
    print(f"families: {', '.join(chosen)}")
    rows, families, pipelines = [], [], []
    for name in picked:
        load, target, task = DATASETS[name]
        frame = load()
        parts = split_table(frame, target, task, seed=42)
        base, base_seconds = _timed(baseline, parts, target, task)
        plain, plain_seconds = _timed(ours, parts, target, task, None, chosen)
        tuned, tuned_seconds = _timed(ours, parts, target, task, tuning, chosen)
        metric = PRIMARY_METRIC[task]
        higher = METRICS[metric].greater_is_better

        def ratio(score, base=base, higher=higher):
            return round(score / base if higher else base / score, 3)

        rows.append(
            {
                "dataset": name,
                "metric": metric,
                "defaults: champion": plain["champion"],
                "tuned: champion": tuned["champion"],
                "valid defaults": round(plain["validation"], 4),
                "valid tuned": round(tuned["validation"], 4),
                "test hgb": round(base, 4),
                "test defaults": round(plain["test"], 4),
                "test tuned": round(tuned["test"], 4),
                "defaults/hgb": ratio(plain["test"]),
                "tuned/hgb": ratio(tuned["test"]),
                "s hgb": round(base_seconds, 2),
                "s defaults": round(plain_seconds, 1),
                "s tuned": round(tuned_seconds, 1),
                "time defaults/hgb": round(plain_seconds / base_seconds, 1),
                "time tuned/hgb": round(tuned_seconds / base_seconds, 1),
            }
        )
        for family, score in plain["families"].items():
            families.append(
                {
                    "dataset": name,
                    "family": family,
                    "metric": metric,
                    "valid defaults": round(score, 4),
                    "valid tuned": round(tuned["families"][family], 4),
                    "test hgb": round(base, 4),
                    "test tuned": round(tuned["tests"][family], 4),
                    "tuned/hgb": ratio(tuned["tests"][family]),
                    "s tuned": round(tuned["seconds"][family], 1),
                    "time tuned/hgb": round(tuned["seconds"][family] / base_seconds, 1),
                }
            )
        print(rows[-1], flush=True)
        if arguments.pipeline:
            run = whole_pipeline(frame, target, task)
            pipelines.append(
                {
                    "dataset": name,
                    "metric": metric,
                    "champion": run["champion"],
                    "test hgb (same split)": round(run["baseline"], 4),
                    "test pipeline": round(run["test"], 4),
                    "pipeline/hgb": ratio(run["test"], base=run["baseline"]),
                    "s pipeline": round(run["seconds"], 1),
                }
            )
            print(pipelines[-1], flush=True)
    print("\nChampions (test ratios > 1: better than the HGB baseline):")
    print(pd.DataFrame(rows).to_markdown(index=False))
    print("\nEvery family: validation defaults vs tuned, tuned test score and time vs HGB:")
    print(pd.DataFrame(families).to_markdown(index=False))
    if pipelines:
        print("\nThe whole training pipeline on kfp.local vs HGB on the run's own split:")
        print(pd.DataFrame(pipelines).to_markdown(index=False))


if __name__ == "__main__":
    main()
