"""Preprocess with Dask: the same fitted scikit-learn Pipeline as components/preprocess.py.

The pandas engine's fit_preprocessor decides and fits everything on a seeded sample of the
training rows (`sample_rows`): dropped columns, encodings, category lists, target
encodings, date-time parts. Then what is cheap to compute exactly is recomputed over every
training row with Dask reducers and written into the fitted steps: the numeric imputation
values (mean exactly; the median from Dask's approximate quantiles) and the standard
scaler's means and variances, missing indicators included. The report says which parts are
exact and how many rows the sample had. The Pipeline is the pandas engine's kind, so
serving and batch scoring are unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from kfp_lifecycle.components.preprocess import (
    PreprocessOptions,
    PreprocessReport,
    check_training_rows,
    fit_preprocessor,
)
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import InputSchema
from kfp_lifecycle.dask_engine.engine import logger
from kfp_lifecycle.dask_engine.tables import sample_frame


def fit_preprocessor_dask(
    frame: Any,
    target: str,
    task: str,
    options: PreprocessOptions | None = None,
    sample_rows: int = 200_000,
    seed: int = 42,
) -> tuple[Pipeline, InputSchema, PreprocessReport, dict[str, Any]]:
    """Fit on a sample, refine the numeric statistics on every row; also returns what was
    exact and what was sampled (for the step's report)."""
    options = options or PreprocessOptions()
    if options.outliers == "isolation_forest":
        raise DataError(
            "preprocessing.outliers 'isolation_forest' is not available with engine dask "
            "(it removes training rows by a model of all of them); use iqr_clip or none"
        )
    total = int(frame.map_partitions(len).sum().compute())
    sample = sample_frame(frame, sample_rows, total, seed)
    check_training_rows(sample, target, task)
    if int(frame[target].isna().sum().compute()):
        check_training_rows(frame[target].to_frame().compute(), target, task)  # names the rows
    pipeline, schema, report = fit_preprocessor(sample, target, task, options)
    exact = _refine_numeric(pipeline, frame, schema, options, total)
    report.training_rows = report.fitted_rows = total
    sampling = {
        "engine": "dask",
        "training_rows": total,
        "partitions": frame.npartitions,
        "sampled_rows": len(sample),
        "exact": exact,
        "sampled": "column drops, encodings, category lists, target encodings, date-time "
        "and boolean imputation, clipping bounds"
        + ("" if exact else ", numeric imputation and scaling"),
    }
    logger.info(
        "preprocess: fitted on %s of %s training rows in %d partitions; exact: %s",
        f"{len(sample):,}", f"{total:,}", frame.npartitions, exact or "nothing",
    )  # fmt: skip
    return pipeline, schema, report, sampling


def _refine_numeric(
    pipeline: Pipeline, frame: Any, schema: InputSchema, options: PreprocessOptions, total: int
) -> str:
    """Overwrite the numeric branch's imputation values and standard scaling with statistics
    over every row; returns what was made exact ('' when the branch is left as fitted)."""
    import dask

    columns = pipeline.named_steps["columns"]
    branch = columns.named_transformers_.get("numeric")
    if branch is None or "iqrclipper" in branch.named_steps:
        return ""  # clipped values change the moments: the sample's fit stands
    names = next(cols for name, _, cols in columns.transformers_ if name == "numeric")
    imputer = branch.named_steps["simpleimputer"]
    scaler = branch.named_steps.get("standardscaler")

    coerce = pipeline.named_steps["coerce"]
    parts = [dask.delayed(_moments)(p, coerce, names) for p in frame.to_delayed()]
    moments = sum(dask.compute(*parts))  # rows x [present, sum, sum of squares]
    present, sums, squares = moments[:, 0], moments[:, 1], moments[:, 2]
    missing = total - present
    if options.numeric_imputation == "median":
        numeric = frame.map_partitions(lambda p: coerce.transform(p)[names])
        fill = numeric.quantile(0.5).compute().reindex(names).to_numpy(dtype="float64")
        made = "numeric means, missing shares and scaling over all rows; medians approximate"
    elif options.numeric_imputation == "mean":
        fill = sums / np.maximum(present, 1)
        made = "numeric means, imputation values, missing shares and scaling over all rows"
    else:
        fill = np.zeros(len(names))
        made = "numeric means, missing shares and scaling over all rows"
    fill = np.where(np.isnan(fill), imputer.statistics_, fill)
    imputer.statistics_ = fill.astype(imputer.statistics_.dtype)
    if isinstance(scaler, StandardScaler):
        mean = (sums + missing * fill) / total
        variance = np.maximum((squares + missing * fill**2) / total - mean**2, 0.0)
        indicator = getattr(imputer, "indicator_", None)
        if indicator is not None:  # indicator columns: 1 where the value was missing
            share = missing[indicator.features_] / total
            mean = np.concatenate([mean, share])
            variance = np.concatenate([variance, share * (1 - share)])
        if len(mean) == len(scaler.mean_):
            scaler.mean_, scaler.var_ = mean, variance
            scale = np.sqrt(variance)
            scaler.scale_ = np.where(scale == 0, 1.0, scale)
            scaler.n_samples_seen_ = total
    return made


def _moments(part: pd.DataFrame, coerce: Any, names: list[str]) -> np.ndarray:
    values = coerce.transform(part)[names].to_numpy(dtype="float64")
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    return np.stack([present.sum(axis=0), filled.sum(axis=0), (filled**2).sum(axis=0)], axis=1)
