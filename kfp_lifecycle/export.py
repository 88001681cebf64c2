"""Export: a model bundle as one ONNX model (preprocessing + estimator), checked against it.

The ONNX model runs without Python (plain onnxruntime, on a device, or KServe's ONNX
runtime). It takes one input per schema column, [rows, 1] each, typed as the coerced
column is:

    numeric, boolean   double   (NaN = missing; +-inf as given)
    categorical        string   ("" = missing)
    datetime           int64    nanoseconds since 1970-01-01 UTC (int64 min = missing, NaT)

and answers `label` and `probabilities` (classification; the probabilities are the bundle's,
the label is the arg-max: apply the bundle's `decision_threshold` to the probabilities for
the bundle's label) or `variable` (regression).

skl2onnx converts the pipeline. The project's own transformers (SchemaCoercer, IQRClipper,
DatetimeFeatures, KeepFeatures) get converters here, registered with skl2onnx's
`update_registered_converter`; the sklearn steps skl2onnx cannot convert as this project
fits them (string imputers with missing_values=None, imputers with indicators, the
categorical MissingIndicator) are replaced, for the conversion only, by equivalent
export-only steps built from their fitted state: categorical branches become the lookup
tables the fast path computes with the fitted branch itself. Every step is computed in
double precision, as sklearn computes it; XGBoost and LightGBM see float32, as they do.
A step nothing here converts stops the export with one line naming it: never a wrong model.

The model is checked with onnxruntime against the bundle on the rows kept with it (the
reference sample) and fails above TOLERANCE (max absolute probability, or prediction,
difference). This module is imported by the CLI and the training pipeline, never by the
model server.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline

from kfp_lifecycle.core.bundle import DEFAULT_DECISION_THRESHOLD, Bundle
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.core.fastpath import NotCompilable, category_tables
from kfp_lifecycle.core.schema import (
    BOOLEAN,
    CATEGORICAL,
    DATETIME,
    NUMERIC,
    Columns,
    InputSchema,
)
from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.core.transformers import (
    CYCLES,
    DatetimeFeatures,
    IQRClipper,
    KeepFeatures,
    SchemaCoercer,
)

logger = logging.getLogger(__name__)

FORMATS = ("onnx",)
ONNX_FILE = "model.onnx"
REPORT_JSON = "onnx-report.json"
REPORT_MD = "onnx-report.md"
TOLERANCE = 1e-4
PLURALS = {"probability": "probabilities", "prediction": "predictions"}
MISSING_TEXT = ""
MISSING_TIME = np.iinfo(np.int64).min  # numpy's NaT as int64
NANOS_PER_DAY = 86_400 * 10**9
NANOS_PER_HOUR = 3_600 * 10**9
# Opsets onnxruntime 1.18+ runs; ai.onnx.ml 3 holds tree thresholds in double.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
IR_VERSION = 9  # onnxruntime 1.31 reads up to 13; 9 is opset 17's
ONNX_LIBRARIES = ("onnx", "onnxruntime", "skl2onnx", "onnxmltools")


class ExportError(LifecycleError):
    """The bundle cannot be exported, or its export does not predict what the bundle does."""


# The ONNX inputs and the feed that matches them.


def onnx_input_types(schema: InputSchema) -> list[tuple[str, Any]]:
    """skl2onnx initial types: one [rows, 1] input per schema column."""
    from skl2onnx.common.data_types import DoubleTensorType, Int64TensorType, StringTensorType

    kinds = {
        NUMERIC: DoubleTensorType,
        BOOLEAN: DoubleTensorType,
        CATEGORICAL: StringTensorType,
        DATETIME: Int64TensorType,
    }
    return [(c.name, kinds[c.kind]([None, 1])) for c in schema.columns]


def onnx_feed(frame: pd.DataFrame, schema: InputSchema) -> dict[str, np.ndarray]:
    """Raw feature rows as the ONNX model's inputs (what an edge caller must send)."""
    coerced = schema.coerce(frame)
    return columns_feed({name: coerced[name].to_numpy() for name in schema.names}, schema)


def columns_feed(columns: Columns, schema: InputSchema) -> dict[str, np.ndarray]:
    """Request columns (`InputSchema.records_to_columns`) as the ONNX model's inputs."""
    feed = {}
    for column in schema.columns:
        values = columns[column.name]
        if column.kind == CATEGORICAL:
            array = np.array([MISSING_TEXT if v is None else v for v in values], dtype=object)
        elif column.kind == DATETIME:
            array = np.asarray(values, dtype="datetime64[ns]").astype(np.int64)
        else:
            array = np.asarray(values, dtype=np.float64)
        feed[column.name] = array.reshape(-1, 1)
    return feed


# Export-only steps: sklearn steps as fitted, in a form the converters below can write.


class _Impute(TransformerMixin, BaseEstimator):
    """A fitted SimpleImputer over numbers: fill NaN, drop all-missing columns, add flags."""

    def __init__(self, keep: np.ndarray, fill: np.ndarray, flagged: np.ndarray | None):
        self.keep, self.fill, self.flagged = keep, fill, flagged

    @classmethod
    def of(cls, where: str, imputer: SimpleImputer, width: int) -> _Impute:
        missing = imputer.missing_values
        if not (isinstance(missing, float) and np.isnan(missing)):
            raise ExportError(
                f"cannot export step '{where}' (SimpleImputer with missing_values={missing!r}) "
                "to ONNX"
            )
        statistics = np.asarray(imputer.statistics_, dtype=np.float64)
        if statistics.shape != (width,):
            raise ExportError(f"cannot export step '{where}': imputer fitted on another width")
        keep = np.flatnonzero(~np.isnan(statistics))
        indicator = getattr(imputer, "indicator_", None)
        flagged = None
        if indicator is not None:
            if indicator.features != "missing-only":
                raise ExportError(f"cannot export step '{where}': indicator over all features")
            flagged = np.asarray(indicator.features_, dtype=np.int64)
        return cls(keep, statistics[keep], flagged)

    def width(self) -> int:
        return len(self.keep) + (len(self.flagged) if self.flagged is not None else 0)


class _CategoryTables(TransformerMixin, BaseEstimator):
    """A fitted categorical branch: per column, known value -> row of the branch's output."""

    def __init__(self, tables: list[np.ndarray], keys: list[list[str]], unseen: list[int]):
        self.tables, self.keys, self.unseen = tables, keys, unseen


class _CategoryMissing(TransformerMixin, BaseEstimator):
    """A fitted MissingIndicator(missing_values=None) over categories: flags the columns it
    learned had missing values."""

    def __init__(self, flagged: list[int]):
        self.flagged = flagged


def exportable_pipeline(pipeline: Any) -> tuple[Pipeline, InputSchema | None]:
    """The bundle's fitted pipeline with every step in a form that has an ONNX converter.

    Returns it with the SchemaCoercer's schema (None without a coercer). The original is
    not modified. Raises ExportError naming the first step that cannot be converted.
    """
    if not isinstance(pipeline, Pipeline):
        raise ExportError(f"cannot export a {type(pipeline).__name__}: not a sklearn Pipeline")
    steps, schema = [], None
    for name, step in pipeline.steps:
        if step in (None, "passthrough"):
            continue
        if isinstance(step, SchemaCoercer):
            schema = InputSchema.from_dict(step.schema)
        elif isinstance(step, ColumnTransformer):
            if schema is None:
                raise ExportError(f"cannot export step '{name}': no SchemaCoercer before it")
            step = _exportable_columns(name, step, schema)
        steps.append((name, step))
    check_convertible(steps[:-1])
    return Pipeline(steps), schema


def _exportable_columns(name: str, ct: ColumnTransformer, schema: InputSchema) -> Any:
    if getattr(ct, "sparse_output_", False):
        raise ExportError(f"cannot export step '{name}': it returns a sparse matrix")
    kinds = {c.name: c.kind for c in schema.columns}
    branches = []
    for branch, transformer, columns in ct.transformers_:
        where = f"{name}/{branch}"
        if isinstance(transformer, str) or not columns:
            branches.append((branch, transformer, columns))
            continue
        if not isinstance(columns, list) or not all(c in kinds for c in columns):
            raise ExportError(f"cannot export step '{where}': it selects columns not by name")
        column_kinds = {kinds[c] for c in columns}
        if column_kinds == {CATEGORICAL}:
            exported = _categorical(where, transformer, columns)
        elif column_kinds <= {NUMERIC, BOOLEAN} or column_kinds == {DATETIME}:
            exported = _numeric(where, transformer, len(columns))
        else:
            raise ExportError(f"cannot export step '{where}': it mixes {sorted(column_kinds)}")
        branches.append((branch, exported, columns))
    exported_ct = copy.copy(ct)
    exported_ct.transformers_ = branches
    return exported_ct


def _branch_steps(transformer: Any) -> list[tuple[str, Any]]:
    if isinstance(transformer, Pipeline):
        return [(n, s) for n, s in transformer.steps if s not in (None, "passthrough")]
    return [(type(transformer).__name__, transformer)]


def _categorical(where: str, transformer: Any, columns: list[str]) -> Any:
    steps = _branch_steps(transformer)
    if len(steps) == 1 and isinstance(steps[0][1], MissingIndicator):
        indicator = steps[0][1]
        if indicator.missing_values is not None or indicator.features != "missing-only":
            raise ExportError(
                f"cannot export step '{where}' (MissingIndicator for "
                f"{indicator.missing_values!r}) to ONNX"
            )
        return _CategoryMissing([int(i) for i in indicator.features_])
    try:
        tables, lookups, unseen = category_tables(
            where, transformer, [s for _, s in steps], columns
        )
    except NotCompilable as reason:
        raise ExportError(f"cannot export step '{where}' to ONNX: {reason}") from None
    keys = []
    for column, lookup in zip(columns, lookups, strict=True):
        if MISSING_TEXT in lookup:
            raise ExportError(
                f"cannot export step '{where}': column '{column}' has the category "
                f"{MISSING_TEXT!r}, which the ONNX model's input reserves for a missing value"
            )
        # A missing value (None in the table's probes) arrives as MISSING_TEXT.
        keys.append([MISSING_TEXT if k is None else str(k) for k in lookup])
    return _CategoryTables(tables, keys, unseen)


def _numeric(where: str, transformer: Any, width: int) -> Any:
    steps = []
    for name, step in _branch_steps(transformer):
        if isinstance(step, SimpleImputer):
            step = _Impute.of(f"{where}/{name}", step, width)
            width = step.width()
        elif isinstance(step, DatetimeFeatures):
            width = len(step.get_feature_names_out())
        steps.append((name, step))
    return Pipeline(steps)


def check_convertible(steps: list[tuple[str, Any]]) -> None:
    """Fail with one line naming the first step no registered converter writes."""
    from skl2onnx._supported_operators import sklearn_operator_name_map

    register_converters()
    for where, step in _leaves(steps):
        if type(step) not in sklearn_operator_name_map:
            raise ExportError(
                f"cannot export step '{where}' ({type(step).__name__}) to ONNX: "
                "no converter is registered for it"
            )


def _leaves(steps: list[tuple[str, Any]], prefix: str = "") -> list[tuple[str, Any]]:
    leaves = []
    for name, step in steps:
        where = f"{prefix}{name}"
        if isinstance(step, Pipeline):
            leaves += _leaves(step.steps, f"{where}/")
        elif isinstance(step, ColumnTransformer):
            inner = [(n, t) for n, t, _ in step.transformers_ if not isinstance(t, str)]
            leaves += _leaves(inner, f"{where}/")
        elif step not in (None, "passthrough"):
            leaves.append((where, step))
    return leaves


# Converters (skl2onnx's scope/container API; every value double unless said otherwise).


class _Nodes:
    """A few ONNX nodes at a time, with unique names, inside one skl2onnx converter."""

    def __init__(self, scope: Any, operator: Any, container: Any):
        self.scope, self.operator, self.container = scope, operator, container

    def const(self, value: Any, dtype: Any = np.float64) -> str:
        from onnx import numpy_helper

        array = np.asarray(value, dtype=dtype)
        name = self.scope.get_unique_variable_name(f"{self.operator.full_name}_c")
        self.container.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs: Any) -> str:
        domain = attrs.pop("op_domain", "")
        version = attrs.pop("op_version", None)
        name = output or self.scope.get_unique_variable_name(f"{self.operator.full_name}_v")
        self.container.add_node(
            op_type,
            list(inputs),
            [name],
            op_domain=domain,
            op_version=version,
            name=self.scope.get_unique_operator_name(f"{self.operator.full_name}_{op_type}"),
            **attrs,
        )
        return name

    def column(self, source: str, index: int) -> str:
        return self.op("Gather", source, self.const([index], np.int64), axis=1)

    def concat(self, parts: list[str], output: str) -> str:
        if len(parts) == 1:
            return self.op("Identity", parts[0], output=output)
        return self.op("Concat", *parts, output=output, axis=1)

    def nan_where(self, missing: str, values: str) -> str:
        return self.op("Where", missing, self.const(np.nan), values)


def _shape_double(width: Any) -> Any:
    from skl2onnx.common.data_types import DoubleTensorType

    def calculate(operator: Any) -> None:
        rows = operator.inputs[0].get_first_dimension()
        operator.outputs[0].type = DoubleTensorType([rows, width(operator.raw_operator)])

    return calculate


def _convert_coercer(scope: Any, operator: Any, container: Any) -> None:
    """The coercer's work (select the schema's columns, cast them) is the typed inputs; what
    it makes of an infinite number (kept, or read as missing) is asked of it, not assumed."""
    nodes = _Nodes(scope, operator, container)
    coercer: SchemaCoercer = operator.raw_operator
    as_missing = set(infinite_as_missing(coercer))
    for source, target in zip(operator.inputs, operator.outputs, strict=True):
        if source.raw_name in as_missing:
            infinite = nodes.op("IsInf", source.full_name)
            nodes.op(
                "Where", infinite, nodes.const(np.nan), source.full_name, output=target.full_name
            )
        else:
            nodes.op("Identity", source.full_name, output=target.full_name)


def infinite_as_missing(coercer: SchemaCoercer) -> list[str]:
    """The number columns in which the coercer turns +-inf into NaN."""
    schema = InputSchema.from_dict(coercer.schema)
    probe = {}
    for column in schema.columns:
        if column.kind in (NUMERIC, BOOLEAN):
            probe[column.name] = [np.inf, -np.inf]
        elif column.kind == CATEGORICAL:
            probe[column.name] = ["a", "a"]
        else:
            probe[column.name] = [None, None]
    coerced = coercer.transform(pd.DataFrame(probe))
    return [c.name for c in schema.columns if c.kind == NUMERIC and coerced[c.name].isna().all()]


def _shape_coercer(operator: Any) -> None:
    for source, target in zip(operator.inputs, operator.outputs, strict=True):
        target.type = copy.deepcopy(source.type)


def _parse_coercer(scope: Any, model: SchemaCoercer, inputs: list[Any], custom_parsers=None):
    """One output per schema column, named as the column, so the ColumnTransformer that
    follows picks its columns by name."""
    names = InputSchema.from_dict(model.schema).names
    given = [variable.raw_name for variable in inputs]
    if given != names:
        raise ExportError(f"the ONNX inputs {given} are not the schema's columns {names}")
    operator = scope.declare_local_operator(ALIASES[SchemaCoercer], model)
    operator.inputs = list(inputs)
    for variable in inputs:
        operator.outputs.append(scope.declare_local_variable(variable.raw_name, variable.type))
    return list(operator.outputs)


def _convert_clipper(scope: Any, operator: Any, container: Any) -> None:
    """np.clip: below lower -> lower, above upper -> upper, NaN passes (comparisons false)."""
    nodes = _Nodes(scope, operator, container)
    clipper: IQRClipper = operator.raw_operator
    x = operator.inputs[0].full_name
    lower, upper = nodes.const([clipper.lower_]), nodes.const([clipper.upper_])
    high = nodes.op("Where", nodes.op("Greater", x, upper), upper, x)
    nodes.op(
        "Where", nodes.op("Less", high, lower), lower, high, output=operator.outputs[0].full_name
    )


def _convert_keep(scope: Any, operator: Any, container: Any) -> None:
    nodes = _Nodes(scope, operator, container)
    keep: KeepFeatures = operator.raw_operator
    nodes.op(
        "Gather",
        operator.inputs[0].full_name,
        nodes.const(keep.indices_, np.int64),
        output=operator.outputs[0].full_name,
        axis=1,
    )


def _convert_impute(scope: Any, operator: Any, container: Any) -> None:
    nodes = _Nodes(scope, operator, container)
    impute: _Impute = operator.raw_operator
    x = operator.inputs[0].full_name
    kept = nodes.op("Gather", x, nodes.const(impute.keep, np.int64), axis=1)
    filled = nodes.op("Where", nodes.op("IsNaN", kept), nodes.const([impute.fill]), kept)
    parts = [filled]
    if impute.flagged is not None and len(impute.flagged):
        flagged = nodes.op("Gather", x, nodes.const(impute.flagged, np.int64), axis=1)
        parts.append(nodes.op("Cast", nodes.op("IsNaN", flagged), to=11))  # 11: double
    nodes.concat(parts, operator.outputs[0].full_name)


def _convert_category_tables(scope: Any, operator: Any, container: Any) -> None:
    """Per column: value -> table row (LabelEncoder; the unseen row by default), then the row."""
    nodes = _Nodes(scope, operator, container)
    lookup: _CategoryTables = operator.raw_operator
    x = operator.inputs[0].full_name
    parts = []
    for index, (table, keys, unseen) in enumerate(
        zip(lookup.tables, lookup.keys, lookup.unseen, strict=True)
    ):
        rows = nodes.op(
            "LabelEncoder",
            nodes.column(x, index),
            op_domain="ai.onnx.ml",
            op_version=2,
            keys_strings=keys,
            values_int64s=list(range(len(keys))),
            default_int64=int(unseen),
        )
        flat = nodes.op("Reshape", rows, nodes.const([-1], np.int64))
        parts.append(nodes.op("Gather", nodes.const(table), flat, axis=0))
    nodes.concat(parts, operator.outputs[0].full_name)


def _convert_category_missing(scope: Any, operator: Any, container: Any) -> None:
    nodes = _Nodes(scope, operator, container)
    x = operator.inputs[0].full_name
    parts = []
    for index in operator.raw_operator.flagged:
        flag = nodes.op(
            "LabelEncoder",
            nodes.column(x, index),
            op_domain="ai.onnx.ml",
            op_version=2,
            keys_strings=[MISSING_TEXT],
            values_int64s=[1],
            default_int64=0,
        )
        parts.append(nodes.op("Cast", flag, to=11))
    nodes.concat(parts, operator.outputs[0].full_name)


def _convert_datetime(scope: Any, operator: Any, container: Any) -> None:
    """DatetimeFeatures from int64 nanoseconds: civil date by integer arithmetic (H. Hinnant's
    days-to-civil), in the order and float operations of the Python transformer."""
    nodes = _Nodes(scope, operator, container)
    expand: DatetimeFeatures = operator.raw_operator
    x = operator.inputs[0].full_name
    flagged = set(expand.flagged_)
    parts = []
    for index, name in enumerate(expand.feature_names_in_):
        nanos = nodes.column(x, index)
        missing = nodes.op("Equal", nanos, nodes.const(MISSING_TIME, np.int64))
        values = _calendar(nodes, nanos)
        for part in expand.parts:
            number = nodes.nan_where(missing, nodes.op("Cast", values[part], to=11))
            parts.append(number)
            if expand.cyclical and part in CYCLES:
                # numpy's own sin/cos of each possible value: onnxruntime's differ in the
                # last bit, and a tree may split between two values one bit apart (cos of
                # February and of December).
                low, sines, cosines = cycle_tables(part)
                safe = nodes.op("Where", missing, nodes.const(low, np.int64), values[part])
                index = nodes.op("Sub", safe, nodes.const(low, np.int64))
                for table in (sines, cosines):
                    looked_up = nodes.op("Gather", nodes.const(table), index, axis=0)
                    parts.append(nodes.nan_where(missing, looked_up))
        if name in flagged:
            parts.append(nodes.op("Cast", missing, to=11))
    nodes.concat(parts, operator.outputs[0].full_name)


# The values each cyclical part can take: month 1-12, weekday 0-6, hour 0-23, day 1-366.
CYCLE_RANGES = {"month": (1, 12), "weekday": (0, 6), "hour": (0, 23), "dayofyear": (1, 366)}


def cycle_tables(part: str) -> tuple[int, np.ndarray, np.ndarray]:
    """First value, then sin and cos of every value, computed as DatetimeFeatures does."""
    low, high = CYCLE_RANGES[part]
    period, first = CYCLES[part]
    number = np.arange(low, high + 1, dtype=np.float64)
    angle = 2 * np.pi * (number - first) / period
    return low, np.sin(angle), np.cos(angle)


def _calendar(nodes: _Nodes, nanos: str) -> dict[str, str]:
    """int64 year, month, weekday (Monday 0), hour and day of year of int64 nanoseconds."""

    def c(value: int) -> str:
        return nodes.const(value, np.int64)

    def mod(a: str, b: int) -> str:  # integer Mod with fmod=0 takes the divisor's sign
        return nodes.op("Mod", a, c(b), fmod=0)

    def floordiv(a: str, b: int) -> str:
        return nodes.op("Div", nodes.op("Sub", a, mod(a, b)), c(b))

    def add(a: str, b: str) -> str:
        return nodes.op("Add", a, b)

    def sub(a: str, b: str) -> str:
        return nodes.op("Sub", a, b)

    def div(a: str, b: int) -> str:  # of non-negative numbers: truncation is floor
        return nodes.op("Div", a, c(b))

    def mul(a: str, b: int) -> str:
        return nodes.op("Mul", a, c(b))

    days = floordiv(nanos, NANOS_PER_DAY)
    hour = div(mod(nanos, NANOS_PER_DAY), NANOS_PER_HOUR)
    weekday = mod(add(days, c(3)), 7)  # 1970-01-01 was a Thursday (3)
    z = add(days, c(719_468))
    era = floordiv(z, 146_097)
    doe = sub(z, mul(era, 146_097))  # day of era, 0..146096
    yoe = div(
        add(sub(doe, div(doe, 1460)), sub(div(doe, 36_524), div(doe, 146_096))), 365
    )  # year of era, 0..399
    doy = sub(doe, sub(add(mul(yoe, 365), div(yoe, 4)), div(yoe, 100)))  # from March 1st
    mp = div(add(mul(doy, 5), c(2)), 153)  # month from March, 0..11
    march_on = nodes.op("Less", mp, c(10))
    month = nodes.op("Where", march_on, add(mp, c(3)), sub(mp, c(9)))
    year = add(add(yoe, mul(era, 400)), nodes.op("Cast", nodes.op("Not", march_on), to=7))
    leap = nodes.op(
        "Or",
        nodes.op(
            "And",
            nodes.op("Equal", mod(year, 4), c(0)),
            nodes.op("Not", nodes.op("Equal", mod(year, 100), c(0))),
        ),
        nodes.op("Equal", mod(year, 400), c(0)),
    )
    # Day of year: March 1st is day 60 (61 in a leap year); January 1st is doy 306.
    from_march = add(add(doy, c(60)), nodes.op("Cast", leap, to=7))
    dayofyear = nodes.op("Where", march_on, from_march, sub(doy, c(305)))
    return {"year": year, "month": month, "weekday": weekday, "hour": hour, "dayofyear": dayofyear}


def _datetime_width(expand: DatetimeFeatures) -> int:
    return len(expand.get_feature_names_out())


def _table_width(lookup: _CategoryTables) -> int:
    return sum(table.shape[1] for table in lookup.tables)


ALIASES: dict[type, str] = {
    SchemaCoercer: "KfpLifecycleSchemaCoercer",
    IQRClipper: "KfpLifecycleIQRClipper",
    DatetimeFeatures: "KfpLifecycleDatetimeFeatures",
    KeepFeatures: "KfpLifecycleKeepFeatures",
    _Impute: "KfpLifecycleImpute",
    _CategoryTables: "KfpLifecycleCategoryTables",
    _CategoryMissing: "KfpLifecycleCategoryMissing",
}
_registered = False


def register_converters() -> None:
    """Register this project's converters, and XGBoost's and LightGBM's from onnxmltools."""
    global _registered
    if _registered:
        return
    from skl2onnx import update_registered_converter

    converters = {
        SchemaCoercer: (_shape_coercer, _convert_coercer, _parse_coercer),
        IQRClipper: (_shape_double(lambda s: len(s.lower_)), _convert_clipper, None),
        DatetimeFeatures: (_shape_double(_datetime_width), _convert_datetime, None),
        KeepFeatures: (_shape_double(lambda s: len(s.indices_)), _convert_keep, None),
        _Impute: (_shape_double(_Impute.width), _convert_impute, None),
        _CategoryTables: (_shape_double(_table_width), _convert_category_tables, None),
        _CategoryMissing: (
            _shape_double(lambda s: len(s.flagged)),
            _convert_category_missing,
            None,
        ),
    }
    for model, (shape, convert, parser) in converters.items():
        update_registered_converter(model, ALIASES[model], shape, convert, parser=parser)
    _register_boosters(update_registered_converter)
    _registered = True


def _register_boosters(update_registered_converter: Any) -> None:
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor
    except ImportError:
        pass
    else:
        update_registered_converter(
            XGBClassifier,
            "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes,
            convert_xgboost,
            options=classifier_options,
        )
        update_registered_converter(
            XGBRegressor,
            "XGBoostXGBRegressor",
            calculate_linear_regressor_output_shapes,
            convert_xgboost,
        )
    try:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    except ImportError:
        pass
    else:
        update_registered_converter(
            LGBMClassifier,
            "LightGbmLGBMClassifier",
            calculate_linear_classifier_output_shapes,
            convert_lightgbm,
            options=classifier_options,
        )
        update_registered_converter(
            LGBMRegressor,
            "LightGbmLGBMRegressor",
            calculate_linear_regressor_output_shapes,
            convert_lightgbm,
        )


# Conversion, check and report.


def convert_bundle(bundle: Bundle) -> Any:
    """The bundle's whole pipeline as an onnx.ModelProto (raises ExportError, one line).

    The preprocessing and the estimator are converted apart and joined: each in the
    precision its library computes in (double, float32 for XGBoost and LightGBM).
    """
    pipeline, schema = exportable_pipeline(bundle.pipeline)
    schema = schema or bundle.schema
    *preprocessing, (_, estimator) = pipeline.steps
    if not preprocessing:
        raise ExportError("cannot export a pipeline without preprocessing before its estimator")
    task = bundle.metadata["task"]
    width = int(getattr(estimator, "n_features_in_", 0))
    front = _converted(
        type(estimator).__name__,
        lambda: _skl2onnx(Pipeline(preprocessing), onnx_input_types(schema), None),
    )
    back, dtype = _converted(
        type(estimator).__name__, lambda: _estimator_model(estimator, task, width)
    )
    model = _join(front, back, dtype, bundle.metadata)
    model.doc_string = json.dumps(_model_notes(bundle, schema))
    return model


def _converted(what: str, convert: Any) -> Any:
    try:
        return convert()
    except ExportError:
        raise
    except Exception as error:  # a converter's own failure, reported as one line
        text = str(error).strip()
        first = text.splitlines()[0] if text else ""
        raise ExportError(
            f"converting the {what} pipeline to ONNX failed: {type(error).__name__}: {first[:300]}"
        ) from None


def _skl2onnx(model: Any, initial_types: list[Any], options: dict | None) -> Any:
    from skl2onnx import convert_sklearn

    register_converters()
    return convert_sklearn(
        model, initial_types=initial_types, options=options, target_opset=TARGET_OPSET
    )


TREE_ESTIMATORS = (
    "RandomForestClassifier",
    "RandomForestRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "LGBMClassifier",
    "LGBMRegressor",
)
FLOAT32_ESTIMATORS = ("XGBClassifier", "XGBRegressor")


def _estimator_model(estimator: Any, task: str, width: int) -> tuple[Any, Any]:
    """The estimator alone as ONNX over a [rows, width] `features` input, and that input's
    numpy type. Outputs: label, probabilities (classification) or variable (regression)."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    kind = type(estimator).__name__
    if kind in TREE_ESTIMATORS:
        return _tree_model(estimator, task, width), np.float64
    options = {id(estimator): {"zipmap": False}} if task == CLASSIFICATION else None
    if kind in FLOAT32_ESTIMATORS:
        types = [("features", FloatTensorType([None, width]))]
        return _skl2onnx(estimator, types, options), np.float32
    check_convertible([("model", estimator)])
    types = [("features", DoubleTensorType([None, width]))]
    return _skl2onnx(estimator, types, options), np.float64


def _join(front: Any, back: Any, dtype: Any, metadata: dict[str, Any]) -> Any:
    """One model: the preprocessing's output cast to the estimator's input type, then the
    estimator; its scores as double, and the bundle's own labels (its classes, its decision
    threshold for two classes) computed from them."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    front = compose.add_prefix(front, "preprocess/", rename_inputs=False)
    back = compose.add_prefix(back, "estimator/")
    (features,) = [output.name for output in front.graph.output]
    (estimator_input,) = [i.name for i in back.graph.input]
    to = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    nodes = [*front.graph.node, helper.make_node("Cast", [features], [estimator_input], to=to)]
    nodes += back.graph.node
    initializers = [*front.graph.initializer, *back.graph.initializer]
    scores = back.graph.output[-1].name  # probabilities (after the label), or the prediction
    if metadata["task"] != CLASSIFICATION:
        nodes.append(helper.make_node("Cast", [scores], ["variable"], to=TensorProto.DOUBLE))
        outputs = [helper.make_tensor_value_info("variable", TensorProto.DOUBLE, [None, 1])]
    else:
        classes = metadata["classes"]
        numeric = all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
        table = (
            np.asarray(classes, dtype=np.int64)
            if numeric
            else np.asarray([str(c) for c in classes], dtype=object)
        )
        nodes.append(helper.make_node("Cast", [scores], ["probabilities"], to=TensorProto.DOUBLE))
        initializers.append(numpy_helper.from_array(table, "bundle/classes"))
        if len(classes) == 2:
            threshold = metadata.get("decision_threshold", DEFAULT_DECISION_THRESHOLD)
            initializers += [
                numpy_helper.from_array(np.asarray([1], dtype=np.int64), "bundle/positive"),
                numpy_helper.from_array(np.asarray(threshold, np.float64), "bundle/threshold"),
            ]
            nodes += [
                helper.make_node(
                    "Gather", ["probabilities", "bundle/positive"], ["bundle/p1"], axis=1
                ),
                helper.make_node("Reshape", ["bundle/p1", "bundle/flat"], ["bundle/p"]),
                helper.make_node(
                    "GreaterOrEqual", ["bundle/p", "bundle/threshold"], ["bundle/over"]
                ),
                helper.make_node("Cast", ["bundle/over"], ["bundle/index"], to=TensorProto.INT64),
            ]
            initializers.append(
                numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "bundle/flat")
            )
        else:
            nodes.append(
                helper.make_node("ArgMax", ["probabilities"], ["bundle/index"], axis=1, keepdims=0)
            )
        nodes.append(helper.make_node("Gather", ["bundle/classes", "bundle/index"], ["label"]))
        elem = TensorProto.INT64 if numeric else TensorProto.STRING
        outputs = [
            helper.make_tensor_value_info("label", elem, [None]),
            helper.make_tensor_value_info(
                "probabilities", TensorProto.DOUBLE, [None, len(classes)]
            ),
        ]
    opsets: dict[str, int] = {}
    for model in (front, back):
        for entry in model.opset_import:
            opsets[entry.domain] = max(opsets.get(entry.domain, 0), entry.version)
    graph = helper.make_graph(
        nodes,
        "kfp-lifecycle",
        list(front.graph.input),
        outputs,
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, v) for domain, v in sorted(opsets.items())],
        ir_version=IR_VERSION,
        producer_name="kfp-lifecycle",
    )
    onnx.checker.check_model(model)
    return model


# Trees: sklearn's forests and histogram boosting as ai.onnx.ml TreeEnsemble (opset 5),
# thresholds and leaf values in double as sklearn holds them.

LEQ = 0  # TreeEnsemble node mode BRANCH_LEQ: x <= split goes to the true branch


@dataclass
class _Tree:
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf: np.ndarray  # bool
    missing_left: np.ndarray  # bool: NaN goes left
    value: np.ndarray  # node -> leaf value (for one target)


def _forest_trees(forest: Any, target: int) -> list[_Tree]:
    trees = []
    for estimator in forest.estimators_:
        t = estimator.tree_
        values = t.value[:, 0, :]
        if hasattr(forest, "classes_"):  # a leaf's class fractions, as predict_proba gives
            values = values / values.sum(axis=1, keepdims=True)
        missing = getattr(t, "missing_go_to_left", np.zeros(t.node_count, dtype=np.uint8))
        trees.append(
            _Tree(
                t.feature,
                t.threshold,
                t.children_left,
                t.children_right,
                t.children_left == -1,
                np.asarray(missing, dtype=bool),
                values[:, target],
            )
        )
    return trees


def _hgb_trees(model: Any, target: int) -> list[_Tree]:
    trees = []
    for iteration in model._predictors:
        nodes = iteration[target].nodes
        if nodes["is_categorical"].any():
            raise ExportError("cannot export a HistGradientBoosting model with categorical splits")
        trees.append(
            _Tree(
                nodes["feature_idx"],
                nodes["num_threshold"],
                nodes["left"],
                nodes["right"],
                nodes["is_leaf"].astype(bool),
                nodes["missing_go_to_left"].astype(bool),
                nodes["value"],
            )
        )
    return trees


def _tree_ensemble(nodes: _Graph, x: str, per_target: list[list[_Tree]]) -> str:
    """Sum over the trees of each target, [rows, targets] double."""
    from onnx import numpy_helper

    attrs: dict[str, list] = {
        k: []
        for k in (
            "nodes_featureids", "nodes_splits", "nodes_truenodeids", "nodes_trueleafs",
            "nodes_falsenodeids", "nodes_falseleafs", "nodes_missing_value_tracks_true",
            "leaf_targetids", "leaf_weights", "tree_roots",
        )
    }  # fmt: skip
    for target, trees in enumerate(per_target):
        for tree in trees:
            _add_tree(attrs, tree, target)
    splits = np.asarray(attrs.pop("nodes_splits"), dtype=np.float64)
    weights = np.asarray(attrs.pop("leaf_weights"), dtype=np.float64)
    return nodes.op(
        "TreeEnsemble",
        x,
        op_domain="ai.onnx.ml",
        op_version=5,
        aggregate_function=1,  # SUM
        post_transform=0,
        n_targets=len(per_target),
        nodes_modes=numpy_helper.from_array(np.full(len(splits), LEQ, dtype=np.uint8)),
        nodes_splits=numpy_helper.from_array(splits),
        leaf_weights=numpy_helper.from_array(weights),
        **attrs,
    )


def _add_tree(attrs: dict[str, list], tree: _Tree, target: int) -> None:
    """Append one tree: internal nodes and leaves numbered apart, as TreeEnsemble wants."""
    node_base, leaf_base = len(attrs["nodes_featureids"]), len(attrs["leaf_weights"])
    internal = np.flatnonzero(~tree.leaf)
    leaves = np.flatnonzero(tree.leaf)
    node_index = {int(n): node_base + i for i, n in enumerate(internal)}
    leaf_index = {int(n): leaf_base + i for i, n in enumerate(leaves)}
    attrs["leaf_targetids"] += [target] * len(leaves)
    attrs["leaf_weights"] += [float(tree.value[n]) for n in leaves]
    if not len(internal):  # a lone leaf: one split whose branches both reach it
        attrs["tree_roots"].append(node_base)
        for key, value in (
            ("nodes_featureids", 0), ("nodes_splits", 0.0), ("nodes_truenodeids", leaf_base),
            ("nodes_trueleafs", 1), ("nodes_falsenodeids", leaf_base), ("nodes_falseleafs", 1),
            ("nodes_missing_value_tracks_true", 0),
        ):  # fmt: skip
            attrs[key].append(value)
        return
    attrs["tree_roots"].append(node_index[0])
    for n in internal:
        left, right = int(tree.left[n]), int(tree.right[n])
        attrs["nodes_featureids"].append(int(tree.feature[n]))
        attrs["nodes_splits"].append(float(tree.threshold[n]))
        attrs["nodes_truenodeids"].append(leaf_index.get(left, node_index.get(left)))
        attrs["nodes_trueleafs"].append(int(left in leaf_index))
        attrs["nodes_falsenodeids"].append(leaf_index.get(right, node_index.get(right)))
        attrs["nodes_falseleafs"].append(int(right in leaf_index))
        attrs["nodes_missing_value_tracks_true"].append(int(tree.missing_left[n]))


class _Graph:
    """A _Nodes stand-in outside skl2onnx: plain onnx.helper nodes and initializers."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.count = 0

    def const(self, value: Any, dtype: Any = np.float64) -> str:
        from onnx import numpy_helper

        name = self._name("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        domain = attrs.pop("op_domain", "")
        attrs.pop("op_version", None)
        name = output or self._name(op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], domain=domain, **attrs))
        return name

    def _name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"


def _link(graph: _Graph, raw: str, task: str, targets: int) -> str:
    """Raw scores to probabilities as sklearn's and LightGBM's losses do (logistic, softmax)."""
    if task != CLASSIFICATION:
        return raw
    if targets > 1:
        return graph.op("Softmax", raw, axis=1)
    positive = graph.op("Sigmoid", raw)
    return graph.op("Concat", graph.op("Sub", graph.const([[1.0]]), positive), positive, axis=1)


def _lightgbm_node(node: dict[str, Any], rows: list[dict[str, Any]]) -> int:
    """Number `node` and its subtree depth-first into `rows`; return its index."""
    index = len(rows)
    row: dict[str, Any] = {"leaf": "leaf_value" in node}
    rows.append(row)
    if row["leaf"]:
        row.update(value=node["leaf_value"], feature=0, threshold=0.0, left=-1, right=-1)
        row["missing_left"] = False
        return index
    if node["decision_type"] != "<=" or node["missing_type"] == "Zero":
        raise ExportError(
            f"cannot export a LightGBM split '{node['decision_type']}' with missing type "
            f"{node['missing_type']} (categorical splits, zero_as_missing)"
        )
    threshold = float(node["threshold"])
    # Missing type None: NaN is read as 0.0; NaN: it takes the default side.
    missing_left = node["default_left"] if node["missing_type"] == "NaN" else threshold >= 0.0
    row.update(feature=node["split_feature"], threshold=threshold, value=0.0)
    row["missing_left"] = bool(missing_left)
    row["left"] = _lightgbm_node(node["left_child"], rows)
    row["right"] = _lightgbm_node(node["right_child"], rows)
    return index


def _lightgbm_trees(dump: dict[str, Any], targets: int) -> list[list[_Tree]]:
    """LightGBM's dumped trees (tree i adds to target i % targets), numbered as arrays."""
    per_target: list[list[_Tree]] = [[] for _ in range(targets)]
    for info in dump["tree_info"]:
        rows: list[dict[str, Any]] = []
        _lightgbm_node(info["tree_structure"], rows)
        per_target[info["tree_index"] % targets].append(
            _Tree(
                np.array([r["feature"] for r in rows], dtype=np.int64),
                np.array([r["threshold"] for r in rows], dtype=np.float64),
                np.array([r["left"] for r in rows], dtype=np.int64),
                np.array([r["right"] for r in rows], dtype=np.int64),
                np.array([r["leaf"] for r in rows], dtype=bool),
                np.array([r["missing_left"] for r in rows], dtype=bool),
                np.array([r["value"] for r in rows], dtype=np.float64),
            )
        )
    return per_target


def _tree_model(estimator: Any, task: str, width: int) -> Any:
    from onnx import TensorProto, helper

    graph = _Graph()
    x = "features"
    kind = type(estimator).__name__
    if kind.startswith("RandomForest"):
        targets = len(estimator.classes_) if task == CLASSIFICATION else 1
        summed = _tree_ensemble(graph, x, [_forest_trees(estimator, t) for t in range(targets)])
        scores = graph.op("Div", summed, graph.const(float(len(estimator.estimators_))))
    elif kind.startswith("HistGradientBoosting"):
        link = type(estimator._loss.link).__name__
        if task != CLASSIFICATION and link != "IdentityLink":
            raise ExportError(f"cannot export a {kind} with {link}")
        targets = estimator.n_trees_per_iteration_
        summed = _tree_ensemble(graph, x, [_hgb_trees(estimator, t) for t in range(targets)])
        baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(1, -1)
        scores = _link(graph, graph.op("Add", graph.const(baseline), summed), task, targets)
    else:
        dump = estimator.booster_.dump_model()
        objective = dump["objective"].split()
        targets = int(dump["num_tree_per_iteration"])
        if dump.get("average_output"):
            raise ExportError(f"cannot export a {kind} whose boosting averages (rf)")
        if objective[0] not in ("binary", "multiclass", "regression"):
            raise ExportError(f"cannot export a {kind} with objective {dump['objective']!r}")
        raw = _tree_ensemble(graph, x, _lightgbm_trees(dump, targets))
        sigmoid = [float(o.split(":")[1]) for o in objective if o.startswith("sigmoid:")]
        if sigmoid and sigmoid[0] != 1.0:
            raw = graph.op("Mul", raw, graph.const(sigmoid[0]))
        scores = _link(graph, raw, task, targets)
    outputs = []
    if task == CLASSIFICATION:
        classes = np.asarray(estimator.classes_)
        index = graph.op("ArgMax", scores, axis=1, keepdims=0)
        if classes.dtype.kind in "iub":
            labels, elem = graph.const(classes, np.int64), TensorProto.INT64
        else:
            labels, elem = graph.const(classes.astype(str), object), TensorProto.STRING
        graph.op("Gather", labels, index, output="label", axis=0)
        graph.op("Identity", scores, output="probabilities")
        outputs = [
            helper.make_tensor_value_info("label", elem, [None]),
            helper.make_tensor_value_info(
                "probabilities", TensorProto.DOUBLE, [None, len(classes)]
            ),
        ]
    else:
        graph.op("Identity", scores, output="variable")
        outputs = [helper.make_tensor_value_info("variable", TensorProto.DOUBLE, [None, 1])]
    inputs = [helper.make_tensor_value_info(x, TensorProto.DOUBLE, [None, width])]
    return helper.make_model(
        helper.make_graph(graph.nodes, "trees", inputs, outputs, graph.initializers),
        opset_imports=[
            helper.make_opsetid("", TARGET_OPSET[""]),
            helper.make_opsetid("ai.onnx.ml", 5),
        ],
        ir_version=IR_VERSION,
    )


def _model_notes(bundle: Bundle, schema: InputSchema) -> dict[str, Any]:
    metadata = bundle.metadata
    return {
        "inputs": {c.name: c.kind for c in schema.columns},
        "missing": {"categorical": MISSING_TEXT, "datetime": int(MISSING_TIME), "number": "NaN"},
        "task": metadata["task"],
        "classes": metadata.get("classes"),
        "decision_threshold": metadata.get("decision_threshold"),
        "bundle_sha256": metadata.get("sha256"),
    }


@dataclass
class Parity:
    """ONNX Runtime against the bundle. Probabilities are compared absolutely; predictions
    relative to their size (|diff| / max(1, |prediction|)): a float32 model (XGBoost)
    predicting thousands resolves ~1e-4 itself, so an absolute 1e-4 would test its rounding."""

    rows: int
    max_abs_diff: float
    max_scaled_diff: float  # what the tolerance applies to
    measure: str  # probability | prediction
    tolerance: float
    passed: bool
    label_agreement: float | None  # classification: share of ONNX labels equal to the bundle's


def check_parity(bundle: Bundle, model_bytes: bytes, rows: pd.DataFrame) -> Parity:
    """Max absolute difference between ONNX Runtime and the bundle on `rows`; for a
    classifier also the share of rows whose ONNX label is the bundle's."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    task = bundle.metadata["task"]
    schema = InputSchema.from_dict(bundle.metadata["input_schema"])
    reference = bundle.predict(schema.coerce(rows))
    if task == CLASSIFICATION:
        labels, got = session.run(["label", "probabilities"], onnx_feed(rows, schema))
        expected = reference.probabilities
        same = [a == b for a, b in zip(labels.tolist(), reference.labels, strict=True)]
        agreement, measure = float(np.mean(same)), "probability"
    else:
        (got,) = session.run(["variable"], onnx_feed(rows, schema))
        expected = np.asarray(reference.labels, dtype=np.float64).reshape(-1, 1)
        agreement, measure = None, "prediction"
    if got.shape != expected.shape:
        raise ExportError(f"the ONNX model answers shape {got.shape}, the bundle {expected.shape}")
    expected = np.asarray(expected, dtype=np.float64)
    both_nan = np.isnan(got) & np.isnan(expected)
    absolute = np.where(both_nan, 0.0, np.abs(got - expected))
    scale = 1.0 if task == CLASSIFICATION else np.maximum(1.0, np.abs(expected))
    diff, scaled = (_worst(a) for a in (absolute, absolute / scale))
    return Parity(len(rows), diff, scaled, measure, TOLERANCE, scaled <= TOLERANCE, agreement)


def _worst(values: np.ndarray) -> float:
    worst = float(np.max(values, initial=0.0))
    return float("inf") if np.isnan(worst) else worst


def check_rows(bundle: Bundle) -> tuple[pd.DataFrame, str]:
    """The rows a bundle keeps for checking: held-out test rows if it keeps them, else its
    reference sample (a seeded sample of the raw training rows)."""
    metadata = bundle.metadata
    for key, source in (("test_rows", "test rows"), ("reference", "reference sample")):
        kept = metadata.get(key)
        if kept and kept.get("table"):
            table = kept["table"]
            return pd.DataFrame(table["data"], columns=table["columns"]), source
    raise ExportError(
        "the bundle keeps no rows to check the ONNX model against (no test rows, no "
        "reference sample): register it through the training pipeline, or pass --rows"
    )


@dataclass
class ExportResult:
    model: str
    format: str
    onnx_file: str
    bytes: int
    seconds: float
    rows_source: str
    parity: Parity
    opsets: dict[str, int]
    libraries: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_bundle(
    bundle: Bundle,
    output: str | Path,
    model: str = "",
    rows: pd.DataFrame | None = None,
    rows_source: str = "given rows",
) -> ExportResult:
    """Write model.onnx and its report into `output` once the model agrees with the bundle.

    Nothing is written when conversion fails or parity is above TOLERANCE (the report of a
    failed check is written, the model is not).
    """
    started = time.perf_counter()
    onnx_model = convert_bundle(bundle)
    data = onnx_model.SerializeToString()
    source = rows_source
    if rows is None:
        rows, source = check_rows(bundle)
    parity = check_parity(bundle, data, rows)
    notes = json.loads(onnx_model.doc_string)
    result = ExportResult(
        model=model or str(bundle.path),
        format="onnx",
        onnx_file=ONNX_FILE,
        bytes=len(data),
        seconds=round(time.perf_counter() - started, 3),
        rows_source=source,
        parity=parity,
        opsets={entry.domain or "ai.onnx": entry.version for entry in onnx_model.opset_import},
        libraries=_versions(),
        inputs=notes["inputs"],
    )
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if parity.passed:
        _write_atomically(output / ONNX_FILE, data)
    _write_report(output, result, notes)
    if not parity.passed:
        raise ExportError(
            f"the ONNX model differs from the bundle by {parity.max_scaled_diff:.3g} "
            f"({_measured(parity)} on {parity.rows} {source}; tolerance {TOLERANCE:g}); "
            f"model.onnx not written, see {output / REPORT_MD}"
        )
    return result


def _measured(parity: Parity) -> str:
    if parity.measure == "probability":
        return "max absolute probability difference"
    return "max prediction difference relative to max(1, |prediction|)"


def _versions() -> dict[str, str]:
    found = {}
    for name in ONNX_LIBRARIES:
        try:
            found[name] = version(name)
        except Exception:
            found[name] = "not installed"
    return found


def _write_atomically(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".part") as handle:
        handle.write(data)
    Path(handle.name).replace(path)


def _write_report(output: Path, result: ExportResult, notes: dict[str, Any]) -> None:
    report = {**result.to_dict(), "model_notes": notes}
    (output / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    parity = result.parity
    verdict = "passed" if parity.passed else "FAILED"
    lines = [
        "# ONNX export",
        "",
        f"- model: `{result.model}`",
        f"- file: `{ONNX_FILE}` ({result.bytes} bytes)" if parity.passed else "- file: not written",
        f"- check: {verdict}: {_measured(parity)} {parity.max_scaled_diff:.3g} on "
        f"{parity.rows} rows ({result.rows_source}), tolerance {parity.tolerance:g}"
        + (
            f" (max absolute difference {parity.max_abs_diff:.3g})"
            if parity.measure == "prediction"
            else ""
        ),
    ]
    if parity.label_agreement is not None:
        lines.append(
            f"- labels: the ONNX model's `label` is the bundle's on {parity.label_agreement:.2%} "
            "of the rows"
        )
    lines += [
        f"- opsets: {', '.join(f'{k} {v}' for k, v in result.opsets.items())}",
        f"- libraries: {', '.join(f'{k} {v}' for k, v in result.libraries.items())}",
        "",
        "## Inputs (one [rows, 1] tensor each)",
        "",
        "| column | kind | ONNX type | missing value |",
        "| --- | --- | --- | --- |",
    ]
    types = {NUMERIC: "double", BOOLEAN: "double", CATEGORICAL: "string", DATETIME: "int64 (ns)"}
    missing = {NUMERIC: "NaN", BOOLEAN: "NaN", CATEGORICAL: '""', DATETIME: str(MISSING_TIME)}
    for name, kind in result.inputs.items():
        lines.append(f"| {name} | {kind} | {types[kind]} | {missing[kind]} |")
    if notes["task"] == CLASSIFICATION:
        outputs = (
            f"`label` (one of {notes['classes']}; for two classes, the second when its "
            f"probability >= {notes['decision_threshold'] or DEFAULT_DECISION_THRESHOLD}) "
            "and `probabilities` (double, one column per class, in that order)"
        )
    else:
        outputs = "`variable` (double, [rows, 1])"
    lines += ["", f"Outputs: {outputs}."]
    (output / REPORT_MD).write_text("\n".join(lines) + "\n")


def export_model(model: str, output: str | Path, fmt: str = "onnx") -> ExportResult:
    """Export `model` (a bundle directory, s3:// version URI or REGISTRY/MODEL@ALIAS or
    @VERSION) to `output` in `fmt`."""
    from kfp_lifecycle.registry import load_version, resolve_reference

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; choose from: {', '.join(FORMATS)}")
    uri = resolve_reference(model)
    with tempfile.TemporaryDirectory(prefix="lifecycle-export-") as workdir:
        bundle = load_version(uri, workdir)
        return export_bundle(bundle, output, model=uri)
