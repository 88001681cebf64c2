"""The input schema of a model: which raw columns it takes, of what kind, with which categories.

It is inferred from the training table, saved in the bundle's metadata, and used twice: to
coerce training frames to canonical dtypes and to check prediction requests field by field.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from kfp_lifecycle.core.errors import SchemaError

NUMERIC = "numeric"
CATEGORICAL = "categorical"
BOOLEAN = "boolean"
DATETIME = "datetime"
KINDS = (NUMERIC, CATEGORICAL, BOOLEAN, DATETIME)

# Object columns are read as datetimes when at least this share of their values parse.
DATETIME_PARSE_SHARE = 0.95

# ID-like columns: text or whole numbers, at least this share of them distinct, among at
# least ID_MIN_VALUES present values (fewer prove nothing).
ID_DISTINCT_SHARE = 0.95
ID_MIN_VALUES = 20
CONSTANT, ID_LIKE = "constant", "ID-like"


@dataclass
class ColumnSpec:
    name: str
    kind: str
    dtype: str
    nullable: bool
    categories: list[str] = field(default_factory=list)

    @cached_property
    def known(self) -> frozenset[str]:
        return frozenset(self.categories)


@dataclass
class InputSchema:
    columns: list[ColumnSpec]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def of_kind(self, kind: str) -> list[str]:
        return [c.name for c in self.columns if c.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [asdict(c) for c in self.columns]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSchema:
        return cls([ColumnSpec(**c) for c in data["columns"]])

    def coerce(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Return the schema's columns in order, each cast to its kind's canonical dtype."""
        missing = [name for name in self.names if name not in frame.columns]
        if missing:
            raise SchemaError(f"missing column(s): {', '.join(missing)}")
        return pd.DataFrame({c.name: _coerce_column(frame[c.name], c.kind) for c in self.columns})

    def records_to_frame(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        """Check prediction records field by field (an unseen category too): a coerced frame."""
        columns, _ = self.records_to_columns(records, strict=True)
        return columns_frame(columns)

    def records_to_columns(
        self, records: list[dict[str, Any]], strict: bool = False
    ) -> tuple[Columns, list[Unseen]]:
        """Check prediction records field by field; the error names the row and the field.

        Returns one array per column, holding what `coerce` would (float64 for numbers and
        flags, text or None for categories, datetime64[ns] for date-times), and the values
        of categorical fields that training never saw. Those are served (the fitted encoders
        map them as they map rare values) unless `strict`, which refuses them.
        """
        if not isinstance(records, list) or not records:
            raise SchemaError("expected a non-empty list of records (objects keyed by column)")
        names = self.names
        for row, record in enumerate(records):
            if not isinstance(record, dict):
                raise SchemaError(
                    f"record {row} is {type(record).__name__}; expected an object keyed by "
                    f"column name ({', '.join(names)})"
                )
            missing = [name for name in names if name not in record]
            if missing:
                raise SchemaError(f"record {row} is missing field(s): {', '.join(missing)}")
            for column in self.columns:
                problem = _check_value(record[column.name], column)
                if problem:
                    raise SchemaError(f"record {row}, field '{column.name}': {problem}")
        columns: Columns = {}
        unseen: list[Unseen] = []
        for column in self.columns:
            raw = [record[column.name] for record in records]
            columns[column.name] = _column_array(raw, column)
            if column.kind == CATEGORICAL and column.categories:
                unseen += _unseen_categories(raw, column, strict)
        return columns, sorted(unseen, key=lambda u: u.row)

    def check_rows(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
        """Coerce a batch of rows and say, per row, why it breaks the schema ("" if it does
        not): the batch counterpart of records_to_frame, column by column rather than value
        by value. A value is bad when it is present but cannot be read as its column's kind
        (a number, true/false, an ISO 8601 date-time), or is a category training never saw.
        Bad values are missing in the coerced frame; a missing column is a SchemaError."""
        missing = [name for name in self.names if name not in frame.columns]
        if missing:
            raise SchemaError(f"missing column(s): {', '.join(missing)}")
        reasons = np.full(len(frame), "", dtype=object)
        coerced = {}
        for column in self.columns:
            raw = frame[column.name]
            values, bad, problem = _checked_column(raw, column)
            if bad is not None:
                _note(reasons, bad, raw, column.name, problem)
            coerced[column.name] = values
        return pd.DataFrame(coerced, index=frame.index), pd.Series(reasons, index=frame.index)


Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class Unseen:
    """A categorical value that no training row held, as the request sent it."""

    row: int
    field: str
    value: Any


def columns_frame(columns: Columns) -> pd.DataFrame:
    """The coerced frame of request columns, for the sklearn pipeline (the reference path)."""
    return pd.DataFrame(columns)


def _column_array(raw: list[Any], column: ColumnSpec) -> np.ndarray:
    """Checked values as `_coerce_column` casts them, without a Series for the common kinds."""
    if column.kind in (NUMERIC, BOOLEAN):
        return np.array([np.nan if v is None else float(v) for v in raw], dtype=np.float64)
    if column.kind == CATEGORICAL:
        values = np.empty(len(raw), dtype=object)
        values[:] = [None if v is None else str(v) for v in raw]
        return values
    values = np.empty(len(raw), dtype=object)
    values[:] = raw
    fast, read = plain_iso_datetimes(values)
    if read.all():
        return fast
    # Date-times are parsed once per column (per value is ~100x slower on a batch).
    parsed = _coerce_column(pd.Series(raw, dtype=object), DATETIME)
    unparsed = parsed.isna().to_numpy() & np.array([v is not None for v in raw])
    if unparsed.any():
        row = int(unparsed.argmax())
        raise SchemaError(
            f"record {row}, field '{column.name}': expected an ISO 8601 date-time string, "
            f"got {shown(raw[row])}"
        )
    return parsed.to_numpy(dtype="datetime64[ns]")


def _checked_column(raw: pd.Series, column: ColumnSpec) -> tuple[pd.Series, Any, str]:
    """check_rows for one column: the coerced values, which rows hold a bad value (None:
    none) and the problem, formatted with each bad value.

    Vectorised: the common inputs (typed columns, text, plain ISO date-times) take no
    Python call per value; anything else takes `_coerce_column`, which defines the result.
    """
    kind = column.kind
    if kind == BOOLEAN:
        if pd.api.types.is_bool_dtype(raw):  # bool, or pandas' nullable boolean
            values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
            return pd.Series(values, index=raw.index), None, ""
        readable = raw.map(lambda v: _is_missing(v) or isinstance(v, bool | int | float))
        values = _coerce_column(raw.where(readable), BOOLEAN)
        return values, ~readable.to_numpy(dtype=bool), "expected true or false, got {!r}"
    if kind == DATETIME and raw.dtype == object:
        values = _object_datetimes(raw)
    elif kind == CATEGORICAL and raw.dtype == object and _is_text(raw):
        return _text_categories(raw, column)
    else:
        values = _coerce_column(raw, kind)
    if kind in (NUMERIC, DATETIME) and values.dtype != raw.dtype:
        unread = (values.isna() & raw.notna()).to_numpy()
        what = "a number" if kind == NUMERIC else "an ISO 8601 date-time string"
        return values, unread, f"expected {what}, got {{!r}}"
    if kind == CATEGORICAL and column.categories:
        unseen = (values.notna() & ~values.isin(column.known)).to_numpy()
        return values, unseen, "category {!r} was never seen in training"
    return values, None, ""


def _is_text(raw: pd.Series) -> bool:
    """Every present value is a str (a C-speed check)."""
    return pd.api.types.infer_dtype(raw, skipna=True) in ("string", "empty")


def _text_categories(raw: pd.Series, column: ColumnSpec) -> tuple[pd.Series, Any, str]:
    """A text category column as _coerce_column gives it (missing values as None), and its
    unseen categories, looking at missing values only among the rows no category matches."""
    array = raw.to_numpy()
    known = raw.isin(column.categories).to_numpy() if column.categories else None
    others = np.flatnonzero(~known) if known is not None else np.arange(len(array))
    absent = pd.isna(array[others])
    values = array.copy()
    values[others[absent]] = None
    coerced = pd.Series(values, index=raw.index, dtype=object)
    if known is None:
        return coerced, None, ""
    unseen = np.zeros(len(array), dtype=bool)
    unseen[others[~absent]] = True
    return coerced, unseen, "category {!r} was never seen in training"


def _object_datetimes(raw: pd.Series) -> pd.Series:
    """_coerce_column(raw, DATETIME) for an object column: plain ISO date-times (and None)
    parsed at C speed, only the other values by pandas' per-value parser (each value is
    parsed on its own there, so the subset gives what the whole column would)."""
    parsed, read = plain_iso_datetimes(raw.to_numpy())
    if not read.all():
        rest = ~read
        parsed[rest] = _coerce_column(raw[rest], DATETIME).to_numpy(dtype="datetime64[ns]")
    return pd.Series(parsed, index=raw.index)


def _note(reasons: np.ndarray, bad: Any, raw: pd.Series, name: str, problem: str) -> None:
    """Append `field 'name': problem` (formatted with the value) to the bad rows' reasons."""
    bad = np.asarray(bad, dtype=bool)
    if not bad.any():
        return
    for row, value in zip(np.flatnonzero(bad), raw.to_numpy()[bad], strict=True):
        note = f"field '{name}': " + problem.format(plain(value))
        reasons[row] = f"{reasons[row]}; {note}" if reasons[row] else note


@dataclass(frozen=True)
class Unusable:
    """Why a feature column cannot help a model: `rule` is CONSTANT or ID_LIKE."""

    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule} ({self.detail})"


def unusable_column(values: pd.Series, kind: str) -> Unusable | None:
    """The one rule for constant and ID-like columns, or None for a column worth keeping.

    Validate warns with it on the whole table, preprocess drops by it on the training rows,
    and profile reports it, so what the warning says is what preprocessing does. Constant
    counts a missing value as a value: a column of 1.0 and gaps is a flag whose missing
    indicator carries the information, and is kept. ID-like is text or whole numbers that
    are (almost) all distinct: a model can only memorise them, never generalise.

    Training rows are a subset of the table, so a constant column stays constant there, and
    an ID-like one stays ID-like unless it sits right at a threshold (its few repeats all
    land in training, or under ID_MIN_VALUES rows are left); preprocess's report says what
    it dropped.
    """
    if values.nunique(dropna=False) <= 1:
        if values.isna().all():
            return Unusable(CONSTANT, "missing in every row")
        return Unusable(CONSTANT, f"every row holds {plain(values.iloc[0])!r}")
    if kind not in (CATEGORICAL, NUMERIC):
        return None
    present = values.dropna()
    if len(present) < ID_MIN_VALUES:
        return None
    distinct = int(present.nunique())
    if distinct < ID_DISTINCT_SHARE * len(present):
        return None
    if kind == NUMERIC and not bool((present == present.round()).all()):
        return None
    return Unusable(ID_LIKE, f"{distinct} distinct values in {len(present)} rows")


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds, so messages show 3, not np.int64(3)."""
    return value.item() if isinstance(value, np.generic) else value


# A value quoted in an error shows at most this many characters (a rejected request's value
# may be megabytes, or personal data that should not fill logs).
SHOWN_CHARACTERS = 100


def shown(value: Any) -> str:
    """repr(value) for a message, cut to SHOWN_CHARACTERS with its full length stated."""
    text = repr(plain(value))
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:SHOWN_CHARACTERS]}... ({len(text)} characters)"


def infer_schema(frame: pd.DataFrame, target: str) -> InputSchema:
    columns = []
    for name in frame.columns:
        if name == target:
            continue
        series = frame[name]
        kind = infer_kind(series)
        categories: list[str] = []
        if kind == CATEGORICAL:
            categories = sorted(series.dropna().astype(str).unique().tolist())
        columns.append(
            ColumnSpec(
                name=str(name),
                kind=kind,
                dtype=str(series.dtype),
                nullable=bool(series.isna().any()),
                categories=categories,
            )
        )
    return InputSchema(columns)


def infer_kind(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return BOOLEAN
    if pd.api.types.is_datetime64_any_dtype(series):
        return DATETIME
    if pd.api.types.is_numeric_dtype(series):
        return NUMERIC
    values = series.dropna()
    if len(values) and _parses_as_datetime(values):
        return DATETIME
    return CATEGORICAL


def _parses_as_datetime(values: pd.Series) -> bool:
    sample = values.astype(str).head(1000)
    # Plain numbers ("3", "2.5") are not dates even though pandas could read some as such.
    if pd.to_numeric(sample, errors="coerce").notna().mean() > 0.5:
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() >= DATETIME_PARSE_SHARE)


def infinite_as_missing(values: pd.Series) -> pd.Series:
    """±inf is no measurement a model can use: treated as missing (NaN), so imputation, not a
    crash, handles it, in training and in serving alike."""
    if pd.api.types.is_float_dtype(values) and np.isinf(values.to_numpy()).any():
        return values.mask(np.isinf(values.to_numpy()))
    return values


def infinite_counts(frame: pd.DataFrame) -> dict[str, int]:
    """{column: number of inf/-inf values}, for the float columns that have any."""
    counts = {}
    for name in frame.columns:
        if pd.api.types.is_float_dtype(frame[name]):
            found = int(np.isinf(frame[name].to_numpy()).sum())
            if found:
                counts[str(name)] = found
    return counts


def _coerce_column(series: pd.Series, kind: str) -> pd.Series:
    if kind == NUMERIC:
        return infinite_as_missing(pd.to_numeric(series, errors="coerce").astype("float64"))
    if kind == BOOLEAN:
        return series.map(lambda v: np.nan if _is_missing(v) else float(v)).astype("float64")
    if kind == DATETIME:
        if pd.api.types.is_datetime64_any_dtype(series):
            values = series
        else:  # naive and zoned values may mix: zoned ones are taken to UTC, naive as UTC
            values = pd.to_datetime(series, errors="coerce", format="mixed", utc=True)
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        return values.astype("datetime64[ns]")
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        # Text already (the common case, and a C-speed check): the same result as the
        # per-value conversion below, without a Python call per value.
        return series.astype(object).where(series.notna(), None)
    return series.map(lambda v: None if _is_missing(v) else str(v)).astype(object)


def _is_missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


# Naive ISO 8601 date-times, which numpy reads as pandas does (a naive value is UTC).
PLAIN_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?")


# Years whose every instant fits datetime64[ns] (1677-09-21 to 2262-04-11): numpy wraps
# around outside them without a word, so the per-value path leaves other years to pandas.
NANOSECOND_YEARS = range(1678, 2262)
# Below this many values, the per-value path is faster than Arrow's fixed cost (~0.1 ms).
ARROW_DATETIME_ROWS = 256


def plain_iso_datetimes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(datetime64[ns] values, which were read) for an object array: None and plain ISO
    date-times (PLAIN_ISO_DATETIME, naive, as pandas reads them) are read at C speed, by
    Arrow (a batch) or numpy (a few values: a request). Everything else (another layout,
    a zone, an impossible or out-of-range date, a non-string) is left NaT and unread, for
    pandas' parser: what pandas makes of it stays the definition."""
    parsed = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    if len(values) < ARROW_DATETIME_ROWS:
        read = np.zeros(len(values), dtype=bool)
        for i, value in enumerate(values):
            if value is None:
                read[i] = True
            elif (
                isinstance(value, str)
                and PLAIN_ISO_DATETIME.fullmatch(value)
                and value.isascii()
                and int(value[:4]) in NANOSECOND_YEARS
            ):
                try:
                    parsed[i] = np.datetime64(value.replace(" ", "T"), "ns")
                except ValueError:  # an impossible date (2026-02-30)
                    continue
                read[i] = True
        return parsed, read
    return _arrow_iso_datetimes(values, parsed)


def _arrow_iso_datetimes(values: np.ndarray, parsed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        strings = values
    else:  # mixed types (rare): only the strings are candidates
        strings = [v if isinstance(v, str) else None for v in values]
    try:
        texts = pa.array(strings, type=pa.string(), from_pandas=True)
    except UnicodeEncodeError:  # a lone surrogate is no UTF-8: pandas reads every value
        return parsed, np.array([v is None for v in values], dtype=bool)
    nulls = np.flatnonzero(texts.is_null().to_numpy(zero_copy_only=False))
    matched = pc.match_substring_regex(texts, f"^{PLAIN_ISO_DATETIME.pattern}$")
    matched = matched.fill_null(False).to_numpy(zero_copy_only=False)
    if matched.any():
        candidates = texts.filter(pa.array(matched))
        try:
            stamps = pc.cast(candidates, pa.timestamp("ns")).to_numpy()
        except pa.ArrowInvalid:  # an impossible or out-of-range date among them
            # pandas' ISO 8601 parser (the one its mixed-format parse tries first) says
            # which; those it cannot read are left to the mixed-format parse.
            stamps = pd.to_datetime(
                candidates.to_numpy(zero_copy_only=False), format="ISO8601", errors="coerce"
            ).to_numpy(dtype="datetime64[ns]")
            matched[matched] = ~np.isnat(stamps)
            stamps = stamps[~np.isnat(stamps)]
        parsed[matched] = stamps
    matched[nulls] = [values[i] is None for i in nulls]
    return parsed, matched


def _unseen_categories(raw: list[Any], column: ColumnSpec, strict: bool) -> list[Unseen]:
    known = column.known
    unseen = [
        Unseen(row, column.name, value)
        for row, value in enumerate(raw)
        if value is not None and str(value) not in known
    ]
    if unseen and strict:
        first = unseen[0]
        examples = ", ".join(repr(c) for c in column.categories[:8])
        more = f" and {len(column.categories) - 8} more" if len(column.categories) > 8 else ""
        raise SchemaError(
            f"record {first.row}, field '{column.name}': category {shown(first.value)} was never "
            f"seen in training (known: {examples}{more})"
        )
    return unseen


def _check_value(value: Any, column: ColumnSpec) -> str | None:
    if value is None:
        return None  # the fitted imputers handle missing values, as in training
    if column.kind == NUMERIC:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {type(value).__name__} {shown(value)}"
    elif column.kind == BOOLEAN:
        if not isinstance(value, bool):
            return f"expected true or false, got {type(value).__name__} {shown(value)}"
    elif column.kind == DATETIME:
        if not isinstance(value, str):  # parsed, column by column, in records_to_frame
            return f"expected an ISO 8601 date-time string, got {shown(value)}"
    elif not isinstance(value, str | int) or isinstance(value, bool):
        return f"expected a string (category), got {type(value).__name__} {shown(value)}"
    return None
