"""The training pipeline's preprocessing as ONNX: converters registered with skl2onnx.

The project's own transformers (SchemaCoercer, IQRClipper, DatetimeFeatures, KeepFeatures)
get converters here, registered with skl2onnx's `update_registered_converter`. The sklearn
steps skl2onnx cannot convert as this project fits them (string imputers with
missing_values=None, imputers with indicators, the categorical MissingIndicator) are replaced,
for the conversion only, by export-only steps built from their fitted state; categorical
branches become the lookup tables the fast path computes with the fitted branch itself.
Every value is double, as sklearn computes it. Used by kfp_lifecycle.export only.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline

from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.core.fastpath import NotCompilable, category_tables
from kfp_lifecycle.core.schema import BOOLEAN, CATEGORICAL, DATETIME, NUMERIC, InputSchema
from kfp_lifecycle.core.transformers import (
    CYCLES,
    DatetimeFeatures,
    IQRClipper,
    KeepFeatures,
    SchemaCoercer,
)

MISSING_TEXT = ""
MISSING_TIME = np.iinfo(np.int64).min  # numpy's NaT as int64
NANOS_PER_DAY = 86_400 * 10**9
NANOS_PER_HOUR = 3_600 * 10**9
# What skl2onnx and onnxmltools write (the trees of onnx_trees need ai.onnx.ml 5), and the
# IR version of opset 17: onnx 1.23's own default is newer than onnxruntime 1.31 reads.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
IR_VERSION = 9


class ExportError(LifecycleError):
    """The bundle cannot be exported, or its export does not predict what the bundle does."""


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
