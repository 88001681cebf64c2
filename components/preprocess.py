"""Preprocess: cleaning and encoding, fitted on training rows only and shipped in the bundle.

The fitted transform becomes the first half of the model's scikit-learn Pipeline, so the
server applies exactly what training applied to raw feature rows (no train/serve skew).
Everything decided from data (dropped columns, encodings, clipping bounds, outlier rows) is
decided on training rows and written to the step's report.
"""

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Output
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import IsolationForest
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
    TargetEncoder,
)

from kfp_lifecycle.component import component
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import (
    BOOLEAN,
    CATEGORICAL,
    CONSTANT,
    DATETIME,
    ID_LIKE,
    NUMERIC,
    InputSchema,
    infer_schema,
    unusable_column,
)
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION, TASKS
from kfp_lifecycle.core.transformers import DatetimeFeatures, IQRClipper, SchemaCoercer

logger = logging.getLogger(__name__)

PREPROCESSOR_FILE = "preprocessor.joblib"
SCHEMA_FILE = "schema.json"

MISSING_CATEGORY = "__missing__"
RANDOM_STATE = 0
TARGET_ENCODER_FOLDS = 5

DatetimePart = Literal["year", "month", "weekday", "hour", "dayofyear"]
SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}


class PreprocessOptions(BaseModel):
    """How the preprocess step cleans and encodes; the defaults are a sound general baseline."""

    model_config = ConfigDict(extra="forbid")

    numeric_imputation: Literal["median", "mean", "constant"] = Field(
        "median",
        description="Fill for missing numbers and date-time parts: the training median, "
        "mean, or 0 (constant).",
    )
    categorical_imputation: Literal["most_frequent", "constant"] = Field(
        "constant",
        description="Fill for missing categories: the training mode, or its own category "
        f"'{MISSING_CATEGORY}' (constant), which keeps missingness as information.",
    )
    missing_indicators: bool = Field(
        True,
        description="Add a 0/1 column for each feature that had missing training values.",
    )
    outliers: Literal["none", "iqr_clip", "isolation_forest"] = Field(
        "none",
        description="iqr_clip: clip numbers to IQR fences learned on training rows; "
        "isolation_forest: remove the most isolated training rows before fitting.",
    )
    iqr_factor: float = Field(
        3.0,
        gt=0,
        description="iqr_clip fences: Q1 - f*IQR and Q3 + f*IQR (3 is Tukey's 'far out'). "
        "Columns whose IQR is 0 are not clipped.",
    )
    isolation_contamination: float = Field(
        0.01, gt=0, le=0.5, description="isolation_forest: share of training rows removed."
    )
    encoding: Literal["auto", "onehot", "ordinal", "target"] = Field(
        "auto",
        description="Categorical encoding; auto: one-hot, or cross-fitted target encoding "
        "for columns with more than high_cardinality distinct training values.",
    )
    rare_category_share: float = Field(
        0.01,
        ge=0,
        lt=1,
        description="Categories rarer than this share of training rows are grouped as "
        "'infrequent' (one-hot, ordinal); 0 keeps every category apart.",
    )
    high_cardinality: int = Field(
        30,
        ge=2,
        description="auto encoding: more distinct values than this means target encoding; "
        "also the most one-hot columns a single feature may produce.",
    )
    scaling: Literal["standard", "minmax", "robust", "none"] = Field(
        "standard",
        description="Scaler for numbers, date-time parts and target encodings "
        "(one-hot, ordinal and boolean columns are left as they are).",
    )
    datetime_parts: list[DatetimePart] = Field(
        default_factory=lambda: ["year", "month", "weekday", "hour"],
        description="Parts each date-time column is expanded into; empty drops date-times.",
    )
    datetime_cyclical: bool = Field(
        True,
        description="Also encode month, weekday, hour and dayofyear as sin/cos, so that "
        "December sits next to January.",
    )
    drop_constant: bool = Field(
        True, description="Drop columns holding a single value in every training row."
    )
    drop_id_like: bool = Field(
        True,
        description="Drop identifier columns (almost all values distinct), which cannot "
        "generalise to new rows.",
    )

    @field_validator("datetime_parts")
    @classmethod
    def _parts_are_distinct(cls, parts: list[str]) -> list[str]:
        repeated = sorted({part for part in parts if parts.count(part) > 1})
        if repeated:
            raise ValueError(f"repeated part(s): {', '.join(repeated)}")
        return parts


@dataclass
class PreprocessReport:
    """What preprocessing decided from the training rows, and why."""

    input_columns: list[str]
    dropped_columns: dict[str, str]  # column -> reason
    encodings: dict[str, str]  # categorical column -> onehot | ordinal | target
    distinct_values: dict[str, int]  # categorical column -> distinct training values
    outliers: str
    outlier_rows: list[int]  # positions in the training table, removed before fitting
    clip_bounds: dict[str, list[float | None]]  # column -> [lower, upper]; None: not clipped
    features: list[str]  # the transform's output columns
    training_rows: int
    fitted_rows: int
    options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def columns_to_drop(
    frame: pd.DataFrame, schema: InputSchema, options: PreprocessOptions
) -> dict[str, str]:
    """Columns that cannot help a model, each with the reason, judged on training rows by
    the same rule (schema.unusable_column) that the validate step warns by."""
    drops = {CONSTANT: options.drop_constant, ID_LIKE: options.drop_id_like}
    dropped = {}
    for column in schema.columns:
        unusable = unusable_column(frame[column.name], column.kind)
        if unusable is not None and drops[unusable.rule]:
            dropped[column.name] = str(unusable)
        elif column.kind == DATETIME and not options.datetime_parts:
            dropped[column.name] = "date-time with no datetime_parts configured"
    return dropped


def drop_unusable(
    frame: pd.DataFrame, schema: InputSchema, options: PreprocessOptions
) -> tuple[InputSchema, dict[str, str]]:
    """The schema without the columns that cannot help a model, and why each went.

    Raises DataError when none is left. The local runner calls it on the whole table
    before the pipeline starts, so a table of only IDs fails at once, not mid-run.
    """
    dropped = columns_to_drop(frame, schema, options)
    kept = InputSchema([c for c in schema.columns if c.name not in dropped])
    if not kept.columns:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in dropped.items())
        raise DataError(f"no usable feature columns left after cleaning ({reasons})")
    return kept, dropped


def choose_encodings(frame: pd.DataFrame, options: PreprocessOptions) -> dict[str, str]:
    """Encoding per categorical column; auto counts distinct training values."""
    if options.encoding != "auto":
        return {name: options.encoding for name in frame.columns}
    return {
        name: "target" if frame[name].nunique() > options.high_cardinality else "onehot"
        for name in frame.columns
    }


def isolation_outliers(frame: pd.DataFrame, contamination: float) -> np.ndarray:
    """Positions of the rows an IsolationForest fitted on these (numeric) rows isolates."""
    if frame.shape[1] == 0:
        return np.empty(0, dtype=int)
    forest = IsolationForest(contamination=contamination, random_state=RANDOM_STATE)
    return np.flatnonzero(forest.fit_predict(frame.to_numpy(dtype="float64")) == -1)


def build_preprocessor(
    schema: InputSchema, encodings: dict[str, str], options: PreprocessOptions, target_type: str
) -> Pipeline:
    """The unfitted transform: coerce raw rows to the schema, then one branch per treatment."""
    numeric_fill = 0.0 if options.numeric_imputation == "constant" else None
    branches = []

    numeric = schema.of_kind(NUMERIC)
    if numeric:
        clip = [IQRClipper(options.iqr_factor)] if options.outliers == "iqr_clip" else []
        imputer = SimpleImputer(
            strategy=options.numeric_imputation,
            fill_value=numeric_fill,
            add_indicator=options.missing_indicators,
        )
        branches.append(("numeric", make_pipeline(*clip, imputer, *_scaler(options)), numeric))
    if schema.of_kind(BOOLEAN):  # a missing flag takes the usual value, never a fraction
        imputer = SimpleImputer(strategy="most_frequent", add_indicator=options.missing_indicators)
        branches.append(("boolean", imputer, schema.of_kind(BOOLEAN)))

    for encoding in ("onehot", "ordinal", "target"):
        columns = [name for name, chosen in encodings.items() if chosen == encoding]
        if columns:
            imputer = SimpleImputer(
                strategy=options.categorical_imputation,
                missing_values=None,
                fill_value=MISSING_CATEGORY,
            )
            encoder = _encoder(encoding, options, target_type)
            branches.append((encoding, make_pipeline(imputer, *encoder), columns))
    if encodings and options.missing_indicators and options.categorical_imputation != "constant":
        indicator = MissingIndicator(missing_values=None, error_on_new=False)
        branches.append(("categorical_missing", indicator, list(encodings)))

    if schema.of_kind(DATETIME):
        expand = DatetimeFeatures(
            tuple(options.datetime_parts), options.datetime_cyclical, options.missing_indicators
        )
        imputer = SimpleImputer(
            strategy=options.numeric_imputation, fill_value=numeric_fill, keep_empty_features=True
        )
        steps = make_pipeline(expand, imputer, *_scaler(options))
        branches.append(("datetime", steps, schema.of_kind(DATETIME)))

    columns = ColumnTransformer(branches, remainder="drop", verbose_feature_names_out=True)
    return Pipeline([("coerce", SchemaCoercer(schema.to_dict())), ("columns", columns)])


def _scaler(options: PreprocessOptions) -> list[Any]:
    return [SCALERS[options.scaling]()] if options.scaling in SCALERS else []


def _encoder(encoding: str, options: PreprocessOptions, target_type: str) -> list[Any]:
    """Encoder steps; rare categories share one code.

    Unseen categories get the infrequent column (one-hot; all zeros when nothing was rare),
    -1 (ordinal), or the training mean of the target (target).
    """
    rare = options.rare_category_share or None
    if encoding == "onehot":
        return [
            OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                min_frequency=rare,
                max_categories=options.high_cardinality,
                sparse_output=False,
            )
        ]
    if encoding == "ordinal":
        return [
            OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, min_frequency=rare)
        ]
    # Cross-fitted: each training row's encoding comes from the other folds' targets.
    return [TargetEncoder(target_type=target_type, cv=_folds(target_type)), *_scaler(options)]


def _folds(target_type: str) -> KFold:
    """Cross-fitting folds for the target encoder: stratified for classes, seeded."""
    folds = KFold if target_type == "continuous" else StratifiedKFold
    return folds(TARGET_ENCODER_FOLDS, shuffle=True, random_state=RANDOM_STATE)


def fit_preprocessor(
    train: pd.DataFrame,
    target: str,
    task: str,
    options: PreprocessOptions | None = None,
) -> tuple[Pipeline, InputSchema, PreprocessReport]:
    """Decide and fit every cleaning and encoding step from training rows alone.

    The returned Pipeline takes raw feature rows. Rows an IsolationForest removes cannot be
    removed inside a predict-time Pipeline: they are listed in the report (`outlier_rows`),
    and `drop_outlier_rows` gives the training rows the transform was fitted on.
    """
    options = options or PreprocessOptions()
    check_training_rows(train, target, task)
    full_schema = infer_schema(train, target)
    coerced = full_schema.coerce(train)
    schema, dropped = drop_unusable(coerced, full_schema, options)

    outlier_rows = np.empty(0, dtype=int)
    if options.outliers == "isolation_forest":
        outlier_rows = isolation_outliers(
            coerced[schema.of_kind(NUMERIC) + schema.of_kind(BOOLEAN)],
            options.isolation_contamination,
        )
    features, labels = coerced[schema.names], train[target]
    del coerced  # one copy of a large table at a time
    if outlier_rows.size:
        kept = np.ones(len(train), dtype=bool)
        kept[outlier_rows] = False
        features, labels = features.iloc[kept], labels.iloc[kept]
    categorical = features[schema.of_kind(CATEGORICAL)]
    encodings = choose_encodings(categorical, options)

    target_type = "continuous"
    if task == CLASSIFICATION:
        target_type = "binary" if labels.nunique() == 2 else "multiclass"
    preprocessor = build_preprocessor(schema, encodings, options, target_type)
    # The rows are coerced already: fit what follows the (stateless) coercion step.
    preprocessor.named_steps["columns"].fit(features, labels)

    report = PreprocessReport(
        input_columns=schema.names,
        dropped_columns=dropped,
        encodings=encodings,
        distinct_values={name: int(categorical[name].nunique()) for name in encodings},
        outliers=options.outliers,
        outlier_rows=outlier_rows.tolist(),
        clip_bounds=_clip_bounds(preprocessor),
        features=preprocessor.get_feature_names_out().tolist(),
        training_rows=len(train),
        fitted_rows=len(features),
        options=options.model_dump(),
    )
    return preprocessor, schema, report


def check_training_rows(train: pd.DataFrame, target: str, task: str) -> None:
    """Refuse what a fit on these rows could only get wrong: unknown task, no target, no rows."""
    if task not in TASKS:
        raise DataError(f"unknown task '{task}'; choose one of: {', '.join(TASKS)}")
    if target not in train.columns:
        raise DataError(
            f"target column '{target}' not found; columns are: {', '.join(map(str, train.columns))}"
        )
    if train.empty:
        raise DataError("the training table has no rows")
    unlabelled = int(train[target].isna().sum())
    if unlabelled:
        raise DataError(f"target '{target}' is missing in {unlabelled} training row(s)")
    if task == REGRESSION and not pd.api.types.is_numeric_dtype(train[target]):
        raise DataError(
            f"task 'regression' needs a numeric target; '{target}' is {train[target].dtype}"
        )


def _clip_bounds(preprocessor: Pipeline) -> dict[str, list[float | None]]:
    columns = preprocessor.named_steps["columns"]
    numeric = columns.named_transformers_.get("numeric")
    if numeric is None or "iqrclipper" not in numeric.named_steps:
        return {}
    clipper = numeric.named_steps["iqrclipper"]
    return {
        str(name): [_finite(lower), _finite(upper)]
        for name, lower, upper in zip(
            clipper.feature_names_in_, clipper.lower_, clipper.upper_, strict=True
        )
    }


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def drop_outlier_rows(train: pd.DataFrame, report: PreprocessReport) -> pd.DataFrame:
    """The training rows the transform was fitted on (all of them unless rows were removed)."""
    return train.drop(index=train.index[report.outlier_rows])


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
def preprocess(
    train: Input[Dataset],
    target: str,
    task: str,
    preprocessor: Output[Artifact],
    train_clean: Output[Dataset],
    report: Output[Artifact],
    options: dict = {},  # noqa: B006 (KFP default, never mutated)
    engine: str = "pandas",
    dask_options: dict = {},  # noqa: B006
    dask_scheduler: str = "",
):
    """Clean, impute, encode and scale, all fitted on the training rows.

    Args:
        train: Training rows (the only rows the transform ever sees while fitting).
        target: Name of the column to predict (excluded from the features).
        task: classification or regression (the validate step's resolved task).
        preprocessor: Directory with the fitted transform and the input schema.
        train_clean: The training rows the transform was fitted on: without the rows
            outlier removal took out, identical to `train` otherwise.
        report: JSON: dropped columns with reasons, encoding per categorical column,
            clipping bounds, outlier rows removed, output features.
        options: PreprocessOptions (components/preprocess.py): numeric_imputation,
            categorical_imputation, missing_indicators, outliers, iqr_factor,
            isolation_contamination, encoding, rare_category_share, high_cardinality,
            scaling, datetime_parts, datetime_cyclical, drop_constant, drop_id_like.
        engine: pandas, dask, or auto (dask from a size: kfp_lifecycle/dask_engine/engine.py).
        dask_options: DaskSettings (dask_engine/engine.py): scheduler_address (else a
            LocalCluster per step), n_workers, memory_per_worker, sample_rows (the
            rows decisions and sampled statistics are fitted on; the report says which).
        dask_scheduler: tcp://host:8786 of a running Dask scheduler, e.g. the training-dask
            pipeline's cluster step's output; overrides dask_options' scheduler_address.
            Empty: that, else the DASK_SCHEDULER_ADDRESS variable, else a LocalCluster.
    """
    import json

    import pandas as pd

    from kfp_lifecycle.components.ingest import to_parquet
    from kfp_lifecycle.components.preprocess import (
        PreprocessOptions,
        drop_outlier_rows,
        fit_preprocessor,
        logger,
        save_preprocessor,
    )
    from kfp_lifecycle.dask_engine.steps import uses_dask

    settings = PreprocessOptions.model_validate(options)
    sampling = {}
    if uses_dask(engine, train.path):
        from kfp_lifecycle.dask_engine import steps
        from kfp_lifecycle.dask_engine.tables import copy_table

        fitted, schema, found, sampling = steps.preprocess(
            train.path, target, task, settings, dask_options, dask_scheduler
        )
        copy_table(train.path, train_clean.path)  # no row is removed with the dask engine
    else:
        rows = pd.read_parquet(train.path)
        fitted, schema, found = fit_preprocessor(rows, target, task, settings)
        to_parquet(drop_outlier_rows(rows, found), train_clean.path)
    save_preprocessor(preprocessor.path, fitted, schema)
    with open(report.path, "w") as handle:
        json.dump({**found.to_dict(), **({"dask": sampling} if sampling else {})}, handle, indent=2)
    preprocessor.metadata.update({"inputs": schema.names, "features": len(found.features)})
    train_clean.metadata["rows"] = found.fitted_rows
    report.metadata.update(
        {"dropped_columns": len(found.dropped_columns), "outlier_rows": len(found.outlier_rows)}
    )
    logger.info(
        f"preprocessor: {len(schema.names)} input columns -> {len(found.features)} features; "
        f"dropped {sorted(found.dropped_columns) or 'none'}; "
        f"{len(found.outlier_rows)} outlier row(s) removed"
    )
