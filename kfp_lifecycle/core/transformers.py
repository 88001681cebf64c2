"""The transformers pickled into every model bundle, kept apart from the steps that fit them.

A pickle records each class's module path, so these classes live in the KFP-free core and
never move: a served model loads without kfp, and renaming a pipeline step cannot make a
registered version unloadable. Bundles of format 1 (0.1.0) recorded the step modules'
paths; kfp_lifecycle.core.bundle maps those here when it loads them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from kfp_lifecycle.core.schema import InputSchema

# Period and first value of each cyclical date-time part.
CYCLES = {
    "month": (12.0, 1.0),
    "weekday": (7.0, 0.0),
    "hour": (24.0, 0.0),
    "dayofyear": (365.25, 1.0),
}


class SchemaCoercer(TransformerMixin, BaseEstimator):
    """Select the schema's columns and cast them, so raw request rows look like training rows."""

    def __init__(self, schema: dict[str, Any] | None = None):
        self.schema = schema

    def fit(self, X: pd.DataFrame, y: Any = None) -> SchemaCoercer:
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return InputSchema.from_dict(self.schema).coerce(X)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(InputSchema.from_dict(self.schema).names, dtype=object)


class IQRClipper(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Clip each column to Tukey fences learned on training rows; missing values pass through.

    A column whose IQR is 0 (mostly one value, e.g. counts that are usually 0) is left
    unclipped: its fences would collapse every other value onto the common one.
    """

    def __init__(self, factor: float = 3.0):
        self.factor = factor

    def fit(self, X: Any, y: Any = None) -> IQRClipper:
        values = validate_data(self, X, dtype="float64", ensure_all_finite="allow-nan")
        with warnings.catch_warnings(action="ignore", category=RuntimeWarning):  # all-NaN
            q1, q3 = np.nanpercentile(values, [25, 75], axis=0)
        spread = q3 - q1
        clipped = np.nan_to_num(spread, nan=0.0) > 0
        self.lower_ = np.where(clipped, q1 - self.factor * spread, -np.inf)
        self.upper_ = np.where(clipped, q3 + self.factor * spread, np.inf)
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "lower_")
        values = validate_data(self, X, dtype="float64", ensure_all_finite="allow-nan", reset=False)
        return np.clip(values, self.lower_, self.upper_)


class DatetimeFeatures(TransformerMixin, BaseEstimator):
    """Expand each timestamp into parts models can split on, with optional sin/cos cycles.

    With `missing_indicator`, a column that had missing training values also gets a 0/1
    `<column>_missing` feature (one per column, not one per part).
    """

    def __init__(
        self,
        parts: tuple[str, ...] = ("year", "month", "weekday", "hour"),
        cyclical: bool = True,
        missing_indicator: bool = False,
    ):
        self.parts = parts
        self.cyclical = cyclical
        self.missing_indicator = missing_indicator

    def fit(self, X: pd.DataFrame, y: Any = None) -> DatetimeFeatures:
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = len(X.columns)
        self.flagged_ = [
            name
            for name in X.columns
            if self.missing_indicator and _timestamps(X[name]).isna().any()
        ]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "flagged_")
        columns: dict[str, pd.Series] = {}
        for name in self.feature_names_in_:
            values = _timestamps(X[name])
            for part in self.parts:
                number = getattr(values.dt, part).astype("float64")
                columns[f"{name}_{part}"] = number
                if self.cyclical and part in CYCLES:
                    period, first = CYCLES[part]
                    angle = 2 * np.pi * (number - first) / period
                    columns[f"{name}_{part}_sin"] = np.sin(angle)
                    columns[f"{name}_{part}_cos"] = np.cos(angle)
            if name in self.flagged_:
                columns[f"{name}_missing"] = values.isna().astype("float64")
        return pd.DataFrame(columns, index=X.index)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "flagged_")
        names = []
        for name in self.feature_names_in_:
            for part in self.parts:
                names.append(f"{name}_{part}")
                if self.cyclical and part in CYCLES:
                    names += [f"{name}_{part}_sin", f"{name}_{part}_cos"]
            if name in self.flagged_:
                names.append(f"{name}_missing")
        return np.asarray(names, dtype=object)


def _timestamps(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, errors="coerce")


class KeepFeatures(TransformerMixin, BaseEstimator):
    """Keep a subset of the previous step's output columns, named as that step names them."""

    def __init__(self, features_in: list[str] | None = None, keep: list[str] | None = None):
        self.features_in = features_in
        self.keep = keep

    def fit(self, X: Any = None, y: Any = None) -> KeepFeatures:
        position = {name: i for i, name in enumerate(self.features_in)}
        unknown = [name for name in self.keep if name not in position]
        if unknown:
            raise ValueError(f"feature(s) to keep not in the input: {', '.join(unknown)}")
        self.indices_ = np.asarray([position[name] for name in self.keep], dtype=int)
        self.n_features_in_ = len(self.features_in)
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "indices_")
        values = np.asarray(X)
        if values.shape[1] != self.n_features_in_:
            raise ValueError(
                f"expected {self.n_features_in_} input features, got {values.shape[1]}"
            )
        return values[:, self.indices_]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self.keep, dtype=object)
