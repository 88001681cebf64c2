"""The fitted pipeline compiled into numpy column transforms, so a request costs the model's time.

A served request used to go records -> DataFrame -> SchemaCoercer -> ColumnTransformer over
pandas, ~10 ms for one row, almost none of it the model. Here every preprocessing step is
read once, at load time, from its fitted attributes and turned into array operations over the
request's columns (`schema.Columns`); the final estimator then predicts on the same matrix the
sklearn pipeline would have given it. Categorical branches (imputer -> one-hot / ordinal /
target encoder -> scaler) are compiled into lookup tables computed by the fitted branch itself
on every known category, a missing value and an unseen one, so they match it by construction.

The sklearn pipeline stays the reference and the fallback: a step this compiler does not know
makes `compile_pipeline` return None (the reason is logged once), and the bundle predicts
through sklearn as before. Parity is tested per family, task and preprocessing option.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
    TargetEncoder,
)

from kfp_lifecycle.core.schema import (
    BOOLEAN,
    CATEGORICAL,
    DATETIME,
    NUMERIC,
    Columns,
    InputSchema,
)
from kfp_lifecycle.core.transformers import (
    CYCLES,
    DatetimeFeatures,
    IQRClipper,
    KeepFeatures,
    SchemaCoercer,
)

logger = logging.getLogger(__name__)

# A category no training row can hold: probes what a branch does with an unseen value.
UNSEEN_PROBE = "\x00kfp-lifecycle-unseen\x00"

Block = Callable[[Columns], np.ndarray]


class NotCompilable(Exception):
    """A step the compiler does not know; the bundle falls back to the sklearn pipeline."""


@dataclass
class CompiledPipeline:
    """The preprocessing as column transforms, then the pipeline's own final estimator."""

    blocks: list[Block]
    keep: np.ndarray | None
    estimator: Any
    width: int

    def transform(self, columns: Columns) -> np.ndarray:
        """The matrix the estimator sees: what the pipeline's steps before it would return."""
        parts = [block(columns) for block in self.blocks]
        matrix = np.hstack(parts) if len(parts) > 1 else np.asarray(parts[0], dtype=np.float64)
        if matrix.dtype != np.float64:
            matrix = matrix.astype(np.float64)
        if self.keep is not None:
            matrix = matrix[:, self.keep]
        return matrix

    def predict_proba(self, columns: Columns) -> np.ndarray:
        return self.estimator.predict_proba(self.transform(columns))

    def predict(self, columns: Columns) -> np.ndarray:
        return self.estimator.predict(self.transform(columns))


def compile_pipeline(pipeline: Any, schema: InputSchema) -> CompiledPipeline | None:
    """The compiled form of a fitted bundle pipeline, or None (logged) when a step is unknown."""
    try:
        return _compile(pipeline, schema)
    except NotCompilable as reason:
        logger.warning("fast prediction path off, serving through sklearn: %s", reason)
    except Exception as error:  # a fitted step shaped unlike any seen: sklearn serves it
        logger.warning(
            "fast prediction path off, serving through sklearn: compiling failed: %s: %s",
            type(error).__name__,
            error,
        )
    return None


def _compile(pipeline: Any, schema: InputSchema) -> CompiledPipeline:
    if not isinstance(pipeline, Pipeline):
        raise NotCompilable(f"the model is a {type(pipeline).__name__}, not a sklearn Pipeline")
    steps = [step for _, step in pipeline.steps if step not in (None, "passthrough")]
    if len(steps) < 2:
        raise NotCompilable("the pipeline has no preprocessing step before its estimator")
    *preprocessing, estimator = steps
    if getattr(estimator, "feature_names_in_", None) is not None:
        raise NotCompilable("the estimator was fitted on named columns")
    if preprocessing and isinstance(preprocessing[0], SchemaCoercer):
        # Requests arrive as schema columns already; the coercer would select and cast them.
        if InputSchema.from_dict(preprocessing[0].schema).names != schema.names:
            raise NotCompilable("the pipeline's schema differs from the bundle's")
        preprocessing = preprocessing[1:]
    keep = None
    if preprocessing and isinstance(preprocessing[-1], KeepFeatures):
        keep = np.asarray(preprocessing[-1].indices_, dtype=np.intp)
        preprocessing = preprocessing[:-1]
    if len(preprocessing) != 1 or not isinstance(preprocessing[0], ColumnTransformer):
        kinds = ", ".join(type(step).__name__ for step in preprocessing) or "none"
        raise NotCompilable(f"expected one ColumnTransformer before the estimator, got {kinds}")
    blocks, width = _column_transformer(preprocessing[0], schema)
    if keep is not None and (len(keep) and keep.max() >= width):
        raise NotCompilable("the feature selection refers past the preprocessing's output")
    return CompiledPipeline(blocks, keep, estimator, width)


def _column_transformer(ct: ColumnTransformer, schema: InputSchema) -> tuple[list[Block], int]:
    if getattr(ct, "sparse_output_", False):
        raise NotCompilable("the ColumnTransformer returns a sparse matrix")
    kinds = {c.name: c.kind for c in schema.columns}
    blocks, width = [], 0
    for name, transformer, columns in ct.transformers_:
        if isinstance(transformer, str):
            if transformer == "drop":
                continue
            raise NotCompilable(f"ColumnTransformer branch '{name}' is '{transformer}'")
        if not isinstance(columns, list) or not all(c in kinds for c in columns):
            raise NotCompilable(f"branch '{name}' selects columns not given by name")
        if not columns:
            continue
        steps = (
            list(transformer.steps) if isinstance(transformer, Pipeline) else [(name, transformer)]
        )
        steps = [step for _, step in steps if step not in (None, "passthrough")]
        column_kinds = {kinds[c] for c in columns}
        if column_kinds == {CATEGORICAL}:
            block, size = _categorical_branch(name, transformer, steps, columns)
        elif column_kinds <= {NUMERIC, BOOLEAN}:
            block, size = _numeric_branch(name, steps, columns)
        elif column_kinds == {DATETIME}:
            block, size = _datetime_branch(name, steps, columns)
        else:
            raise NotCompilable(f"branch '{name}' mixes column kinds {sorted(column_kinds)}")
        blocks.append(block)
        width += size
    if not blocks:
        raise NotCompilable("the ColumnTransformer produces no columns")
    return blocks, width


# Numeric steps: each maps an (n, k) float matrix to another, in place where sklearn is.


def _numeric_steps(name: str, steps: list[Any], width: int) -> tuple[list[Callable], int]:
    """Array functions for clip / impute / scale steps, and the width they end with."""
    compiled = []
    for step in steps:
        if isinstance(step, IQRClipper):
            lower, upper = step.lower_, step.upper_
            compiled.append(lambda x, lo=lower, hi=upper: np.clip(x, lo, hi))
        elif isinstance(step, SimpleImputer):
            function, width = _numeric_imputer(name, step, width)
            compiled.append(function)
        elif isinstance(step, StandardScaler):
            compiled.append(
                _shift_scale(
                    step.mean_ if step.with_mean else None, step.scale_ if step.with_std else None
                )
            )
        elif isinstance(step, MinMaxScaler):
            if step.clip:
                raise NotCompilable(f"branch '{name}': MinMaxScaler(clip=True)")
            compiled.append(lambda x, s=step.scale_, m=step.min_: _add(_mul(x, s), m))
        elif isinstance(step, RobustScaler):
            compiled.append(
                _shift_scale(
                    step.center_ if step.with_centering else None,
                    step.scale_ if step.with_scaling else None,
                )
            )
        else:
            raise NotCompilable(f"branch '{name}': step {type(step).__name__} is not compiled")
    return compiled, width


def _mul(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    x *= scale
    return x


def _add(x: np.ndarray, offset: np.ndarray) -> np.ndarray:
    x += offset
    return x


def _shift_scale(offset: np.ndarray | None, scale: np.ndarray | None) -> Callable:
    """(x - offset) / scale in place, as StandardScaler and RobustScaler compute it."""

    def scale_columns(x: np.ndarray) -> np.ndarray:
        if offset is not None:
            x -= offset
        if scale is not None:
            x /= scale
        return x

    return scale_columns


def _numeric_imputer(name: str, step: SimpleImputer, width: int) -> tuple[Callable, int]:
    if not (isinstance(step.missing_values, float) and np.isnan(step.missing_values)):
        raise NotCompilable(
            f"branch '{name}': SimpleImputer(missing_values={step.missing_values!r})"
        )
    statistics = np.asarray(step.statistics_, dtype=np.float64)
    if statistics.shape != (width,):
        raise NotCompilable(f"branch '{name}': SimpleImputer fitted on another width")
    valid = ~np.isnan(statistics)
    keep_all = bool(valid.all())
    valid_index = np.flatnonzero(valid)
    fill = statistics[valid_index]
    indicator = getattr(step, "indicator_", None)
    if indicator is not None and indicator.features != "missing-only":
        raise NotCompilable(f"branch '{name}': missing indicator over all features")
    flagged = np.asarray(indicator.features_, dtype=np.intp) if indicator is not None else None

    def impute(x: np.ndarray) -> np.ndarray:
        missing = np.isnan(x)
        filled = x if keep_all else x[:, valid_index]
        if missing.any():
            filled = np.where(missing if keep_all else missing[:, valid_index], fill, filled)
        if flagged is None:
            return filled
        return np.hstack([filled, missing[:, flagged].astype(np.float64)])

    out = len(valid_index) + (len(flagged) if flagged is not None else 0)
    return impute, out


def _numeric_branch(name: str, steps: list[Any], columns: list[str]) -> tuple[Block, int]:
    functions, width = _numeric_steps(name, steps, len(columns))

    def block(data: Columns) -> np.ndarray:
        matrix = np.column_stack([data[c] for c in columns]).astype(np.float64, copy=True)
        for function in functions:
            matrix = function(matrix)
        return matrix

    return block, width


# Date-times: DatetimeFeatures' parts computed from datetime64 values, then numeric steps.


def _datetime_branch(name: str, steps: list[Any], columns: list[str]) -> tuple[Block, int]:
    if not steps or not isinstance(steps[0], DatetimeFeatures):
        raise NotCompilable(f"branch '{name}': date-times without DatetimeFeatures first")
    expand = steps[0]
    if list(expand.feature_names_in_) != columns:
        raise NotCompilable(f"branch '{name}': DatetimeFeatures fitted on other columns")
    unknown = [p for p in expand.parts if p not in DATETIME_PARTS]
    if unknown:
        raise NotCompilable(f"branch '{name}': date-time part(s) {unknown} are not compiled")
    parts, cyclical, flagged = tuple(expand.parts), expand.cyclical, set(expand.flagged_)
    width = len(expand.get_feature_names_out())
    functions, width = _numeric_steps(name, steps[1:], width)

    def block(data: Columns) -> np.ndarray:
        features = []
        for column in columns:
            values = data[column]
            missing = np.isnat(values)
            for part in parts:
                number = DATETIME_PARTS[part](values)
                number[missing] = np.nan
                features.append(number)
                if cyclical and part in CYCLES:
                    period, first = CYCLES[part]
                    angle = 2 * np.pi * (number - first) / period
                    features += [np.sin(angle), np.cos(angle)]
            if column in flagged:
                features.append(missing.astype(np.float64))
        matrix = np.column_stack(features)
        for function in functions:
            matrix = function(matrix)
        return matrix

    return block, width


def _days(values: np.ndarray) -> np.ndarray:
    return values.astype("datetime64[D]").astype(np.int64)


def _year(values: np.ndarray) -> np.ndarray:
    return (values.astype("datetime64[Y]").astype(np.int64) + 1970).astype(np.float64)


def _month(values: np.ndarray) -> np.ndarray:
    return (values.astype("datetime64[M]").astype(np.int64) % 12 + 1).astype(np.float64)


def _weekday(values: np.ndarray) -> np.ndarray:
    return ((_days(values) + 3) % 7).astype(np.float64)  # 1970-01-01 was a Thursday (3)


def _hour(values: np.ndarray) -> np.ndarray:
    return (values.astype("datetime64[h]").astype(np.int64) % 24).astype(np.float64)


def _dayofyear(values: np.ndarray) -> np.ndarray:
    start = values.astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    return (_days(values) - start + 1).astype(np.float64)


DATETIME_PARTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "year": _year,
    "month": _month,
    "weekday": _weekday,
    "hour": _hour,
    "dayofyear": _dayofyear,
}


# Categorical branches: a lookup table per column, computed by the fitted branch itself.

ELEMENTWISE_AFTER_ENCODING = (StandardScaler, MinMaxScaler, RobustScaler)


def _categorical_branch(
    name: str, transformer: Any, steps: list[Any], columns: list[str]
) -> tuple[Block, int]:
    if len(steps) == 1 and isinstance(steps[0], MissingIndicator):
        return _missing_indicator(name, steps[0], columns)
    tables, lookups, unseen = category_tables(name, transformer, steps, columns)
    indexes = [pd.Index(list(lookup), dtype=object) for lookup in lookups]

    def block(data: Columns) -> np.ndarray:
        parts = []
        for column, table, lookup, index, other in zip(
            columns, tables, lookups, indexes, unseen, strict=True
        ):
            parts.append(table[_table_rows(data[column], lookup, index, other)])
        return np.hstack(parts) if len(parts) > 1 else parts[0]

    return block, sum(table.shape[1] for table in tables)


# From this many values on, a hash-table lookup (pandas) beats a dict lookup per value.
INDEXED_LOOKUP_ROWS = 512


def _table_rows(values: np.ndarray, lookup: dict[Any, int], index: pd.Index, other: int):
    """Each value's row in its lookup table (`other`: the unseen row). Values are text or
    None (as check_rows and records_to_columns give them), for which the index's hash
    table matches exactly as the dict does."""
    if len(values) < INDEXED_LOOKUP_ROWS:
        get = lookup.get
        return np.fromiter((get(v, other) for v in values), np.intp, len(values))
    rows = index.get_indexer(values)
    rows[rows < 0] = other
    return rows


def category_tables(
    name: str, transformer: Any, steps: list[Any], columns: list[str]
) -> tuple[list[np.ndarray], list[dict[Any, int]], list[int]]:
    """A categorical branch (imputer -> encoder -> scalers) as one lookup table per column.

    Shared with the ONNX export, which turns each table into a string lookup and a gather.
    Raises NotCompilable for a branch whose outputs are not each a function of one column.
    """
    encoders = [s for s in steps if isinstance(s, OneHotEncoder | OrdinalEncoder | TargetEncoder)]
    if len(encoders) != 1:
        raise NotCompilable(f"branch '{name}': expected one categorical encoder")
    position = steps.index(encoders[0])
    for step in steps[:position]:
        if not isinstance(step, SimpleImputer) or getattr(step, "indicator_", None) is not None:
            raise NotCompilable(f"branch '{name}': {type(step).__name__} before the encoder")
    for step in steps[position + 1 :]:
        if not isinstance(step, ELEMENTWISE_AFTER_ENCODING):
            raise NotCompilable(f"branch '{name}': {type(step).__name__} after the encoder")
    widths = _encoder_widths(name, encoders[0], len(columns))
    return _lookup_tables(transformer, columns, encoders[0], widths)


def _encoder_widths(name: str, encoder: Any, n_columns: int) -> list[int]:
    if isinstance(encoder, OneHotEncoder):
        widths = list(encoder._n_features_outs)
    elif isinstance(encoder, TargetEncoder) and encoder.target_type_ == "multiclass":
        widths = [len(encoder.classes_)] * n_columns
    else:
        widths = [1] * n_columns
    if len(widths) != n_columns:
        raise NotCompilable(f"branch '{name}': the encoder was fitted on other columns")
    return widths


def _lookup_tables(
    transformer: Any, columns: list[str], encoder: Any, widths: list[int]
) -> tuple[list[np.ndarray], list[dict[Any, int]], list[int]]:
    """Per column: the branch's output for each probe value, and value -> row in that table.

    Probe values are every category the encoder knows, a missing value (None, as requests
    hold it) and one unseen category; every other column holds its first known category,
    which cannot change this column's output (each encoder output depends on its own column).
    """
    probes = []
    for index in range(len(columns)):
        known = [str(v) for v in encoder.categories_[index] if isinstance(v, str)]
        probes.append([*dict.fromkeys(known), None, UNSEEN_PROBE])
    rows = max(len(p) for p in probes)
    frame = pd.DataFrame(
        {
            column: pd.Series(p + [p[0]] * (rows - len(p)), dtype=object)
            for column, p in zip(columns, probes, strict=True)
        }
    )
    output = transformer.transform(frame)
    if sparse.issparse(output):  # a sparse one-hot branch; the ColumnTransformer densifies
        output = output.toarray()
    output = np.asarray(output, dtype=np.float64)
    if output.shape[1] != sum(widths):
        raise NotCompilable("a categorical branch's output width is not its encoder's")
    tables, lookups, unseen, start = [], [], [], 0
    for probe, width in zip(probes, widths, strict=True):
        tables.append(np.ascontiguousarray(output[: len(probe), start : start + width]))
        lookups.append({value: i for i, value in enumerate(probe[:-1])})
        unseen.append(len(probe) - 1)
        start += width
    return tables, lookups, unseen


def _missing_indicator(name: str, step: MissingIndicator, columns: list[str]) -> tuple[Block, int]:
    if step.missing_values is not None or step.features != "missing-only":
        raise NotCompilable(f"branch '{name}': MissingIndicator for other than None")
    flagged = [columns[i] for i in step.features_]

    def block(data: Columns) -> np.ndarray:
        n = len(data[columns[0]])
        matrix = np.empty((n, len(flagged)), dtype=np.float64)
        for j, column in enumerate(flagged):
            matrix[:, j] = [v is None for v in data[column]]
        return matrix

    return block, len(flagged)
