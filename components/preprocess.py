"""Preprocess: the feature transform, fitted on training rows only and shipped in the bundle.

The fitted transform becomes the first half of the model's scikit-learn Pipeline, so the
server applies exactly what training applied to raw feature rows (no train/serve skew).
"""

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Output
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from kfp_lifecycle.component import component
from kfp_lifecycle.schema import BOOLEAN, CATEGORICAL, DATETIME, NUMERIC, InputSchema, infer_schema

PREPROCESSOR_FILE = "preprocessor.joblib"
SCHEMA_FILE = "schema.json"

# One-hot columns per categorical feature; rarer categories are grouped as "infrequent".
MAX_CATEGORIES = 30
MISSING_CATEGORY = "__missing__"


class SchemaCoercer(TransformerMixin, BaseEstimator):
    """Select the schema's columns and cast them, so raw request rows look like training rows."""

    def __init__(self, schema: dict[str, Any] | None = None):
        self.schema = schema

    def fit(self, X: pd.DataFrame, y: Any = None) -> "SchemaCoercer":
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return InputSchema.from_dict(self.schema).coerce(X)


class DatetimeFeatures(TransformerMixin, BaseEstimator):
    """Turn each timestamp into year, month, day of week and hour, which models can split on."""

    PARTS = ("year", "month", "dayofweek", "hour")

    def fit(self, X: pd.DataFrame, y: Any = None) -> "DatetimeFeatures":
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        columns = {}
        for name in X.columns:
            values = pd.to_datetime(X[name], errors="coerce")
            for part in self.PARTS:
                columns[f"{name}_{part}"] = getattr(values.dt, part).astype("float64")
        return pd.DataFrame(columns, index=X.index)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(
            [f"{name}_{part}" for name in self.feature_names_in_ for part in self.PARTS],
            dtype=object,
        )


def build_preprocessor(schema: InputSchema) -> Pipeline:
    numeric = schema.of_kind(NUMERIC) + schema.of_kind(BOOLEAN)
    branches = []
    if numeric:
        branches.append(
            (
                "numeric",
                make_pipeline(
                    SimpleImputer(strategy="median", add_indicator=True), StandardScaler()
                ),
                numeric,
            )
        )
    if schema.of_kind(CATEGORICAL):
        branches.append(
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY),
                    OneHotEncoder(
                        handle_unknown="infrequent_if_exist",
                        max_categories=MAX_CATEGORIES,
                        sparse_output=False,
                    ),
                ),
                schema.of_kind(CATEGORICAL),
            )
        )
    if schema.of_kind(DATETIME):
        branches.append(
            (
                "datetime",
                make_pipeline(
                    DatetimeFeatures(),
                    SimpleImputer(strategy="median", keep_empty_features=True),
                    StandardScaler(),
                ),
                schema.of_kind(DATETIME),
            )
        )
    columns = ColumnTransformer(branches, remainder="drop", verbose_feature_names_out=True)
    return Pipeline([("coerce", SchemaCoercer(schema.to_dict())), ("columns", columns)])


def fit_preprocessor(train: pd.DataFrame, target: str) -> tuple[Pipeline, InputSchema]:
    """Infer the input schema and fit the transform, both from training rows alone."""
    schema = infer_schema(train, target)
    preprocessor = build_preprocessor(schema)
    preprocessor.fit(train.drop(columns=[target]))
    return preprocessor, schema


def save_preprocessor(directory: str | Path, preprocessor: Pipeline, schema: InputSchema) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(preprocessor, directory / PREPROCESSOR_FILE)
    (directory / SCHEMA_FILE).write_text(json.dumps(schema.to_dict(), indent=2))


def load_preprocessor(directory: str | Path) -> tuple[Pipeline, InputSchema]:
    directory = Path(directory)
    schema = InputSchema.from_dict(json.loads((directory / SCHEMA_FILE).read_text()))
    return joblib.load(directory / PREPROCESSOR_FILE), schema


@component
def preprocess(train: Input[Dataset], target: str, preprocessor: Output[Artifact]):
    """Fit imputation, scaling and one-hot encoding on the training rows.

    Args:
        train: Training rows (the only rows the transform ever sees while fitting).
        target: Name of the column to predict (excluded from the features).
        preprocessor: Directory with the fitted transform and the input schema.
    """
    import pandas as pd

    from kfp_lifecycle.components.preprocess import fit_preprocessor, save_preprocessor

    fitted, schema = fit_preprocessor(pd.read_parquet(train.path), target)
    save_preprocessor(preprocessor.path, fitted, schema)
    features = fitted.named_steps["columns"].get_feature_names_out()
    preprocessor.metadata.update({"inputs": schema.names, "features": len(features)})
    print(f"preprocessor: {len(schema.names)} input columns -> {len(features)} features")
