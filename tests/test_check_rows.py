"""InputSchema.check_rows, the per-row contract check of batch scoring, on awkward values.

check_rows is vectorised (typed columns, text, plain ISO date-times take no Python call per
value) and must decide exactly as the value-by-value definition did: the reasons below are
what it gave. Each frame is checked small (the per-value date-time path) and repeated past
ARROW_DATETIME_ROWS (Arrow's path), which must agree row for row.
"""

import numpy as np
import pandas as pd
import pytest

from kfp_lifecycle.core.errors import SchemaError
from kfp_lifecycle.core.fastpath import INDEXED_LOOKUP_ROWS, _table_rows
from kfp_lifecycle.core.schema import (
    ARROW_DATETIME_ROWS,
    DATETIME,
    InputSchema,
    _coerce_column,
    plain_iso_datetimes,
)


def schema(**kinds: str | list[str]) -> InputSchema:
    """name=kind, or name=[categories] for a categorical column."""
    columns = []
    for name, kind in kinds.items():
        categories = kind if isinstance(kind, list) else []
        kind = "categorical" if isinstance(kind, list) else kind
        columns.append({"name": name, "kind": kind, "dtype": "object", "nullable": True,
                        "categories": categories})  # fmt: skip
    return InputSchema.from_dict({"columns": columns})


SCHEMA = schema(n="numeric", d="datetime", c=["a", "b"], f="boolean")

# Mixed types in object columns, NaN/None/pd.NA/inf, unseen categories, date-times in
# several ISO forms (zoned ones too) and strings that are no date at all.
FRAME = pd.DataFrame(
    {
        "n": pd.Series(
            [1, "2.5", "abc", None, True, float("inf"), "inf", np.nan, "", " 7 "], dtype=object
        ),
        "d": pd.Series(
            [
                "2026-01-01",
                "2026-01-01 12:30",
                "2026-01-01T12:30:45.5",
                "2026-01-01T12:30:45Z",
                "2026-01-01T12:30:45+02:00",
                "01/02/2026",
                "2026-02-30",
                "9999-12-31",
                "garbage",
                None,
            ],
            dtype=object,
        ),
        "c": pd.Series(["a", "b", "z", None, np.nan, pd.NA, "A", "", "b", "a"], dtype=object),
        "f": pd.Series(
            [True, False, None, 1, 0.5, "yes", np.nan, np.True_, "", False], dtype=object
        ),
    }
)

REASONS = [
    "",
    "",
    "field 'n': expected a number, got 'abc'; field 'c': category 'z' was never seen in training",
    "",
    "",
    "field 'n': expected a number, got inf; field 'f': expected true or false, got 'yes'",
    "field 'n': expected a number, got 'inf'; field 'd': expected an ISO 8601 date-time string, "
    "got '2026-02-30'; field 'c': category 'A' was never seen in training",
    "field 'd': expected an ISO 8601 date-time string, got '9999-12-31'; field 'c': category '' "
    "was never seen in training; field 'f': expected true or false, got True",
    "field 'n': expected a number, got ''; field 'd': expected an ISO 8601 date-time string, got "
    "'garbage'; field 'f': expected true or false, got ''",
    "",
]

DATES = [
    "2026-01-01",
    "2026-01-01 12:30",
    "2026-01-01 12:30:45.5",
    "2026-01-01 12:30:45",  # Z: UTC
    "2026-01-01 10:30:45",  # +02:00, taken to UTC
    "2026-01-02",
]


@pytest.mark.parametrize("repeat", [1, ARROW_DATETIME_ROWS // len(FRAME) + 1])
def test_reasons_and_values_per_row(repeat):
    frame = pd.concat([FRAME] * repeat, ignore_index=True)
    coerced, reasons = SCHEMA.check_rows(frame)
    assert reasons.tolist() == REASONS * repeat
    head = coerced.head(len(FRAME))
    assert head["n"].tolist()[:3] == [1.0, 2.5, pytest.approx(np.nan, nan_ok=True)]
    assert head["n"].iloc[9] == 7.0 and head["n"].iloc[4] == 1.0
    assert np.isnan(head["n"].iloc[5])  # inf is read, then missing
    assert head["d"].head(6).tolist() == [pd.Timestamp(v) for v in DATES]
    assert head["d"].iloc[6:].isna().all()
    assert head["c"].tolist() == ["a", "b", "z", None, None, None, "A", "", "b", "a"]
    assert head["f"].tolist()[:2] == [1.0, 0.0] and head["f"].iloc[4] == 0.5
    assert coerced["d"].dtype == "datetime64[ns]" and coerced["c"].dtype == object


def test_typed_columns_take_the_typed_paths():
    """Parquet input arrives typed: bool (plain and nullable) and float columns."""
    frame = pd.DataFrame(
        {
            "f": [True, False, True],
            "g": pd.array([True, None, False], dtype="boolean"),
            "n": [1.5, np.inf, np.nan],
        }
    )
    coerced, reasons = schema(f="boolean", g="boolean", n="numeric").check_rows(frame)
    assert reasons.tolist() == ["", "", ""]
    assert coerced["f"].tolist() == [1.0, 0.0, 1.0]
    assert coerced["g"].tolist()[0::2] == [1.0, 0.0] and np.isnan(coerced["g"].iloc[1])
    assert coerced["n"].iloc[0] == 1.5 and coerced["n"].iloc[1:].isna().all()


def test_plain_iso_datetimes_read_only_what_pandas_reads_alike():
    """Both paths (per value, Arrow) read plain ISO strings exactly as pandas does and leave
    the rest (zones, other layouts, impossible or out-of-range dates) unread, NaT, for
    pandas. A value at the edge of datetime64[ns] may be read or left: either way it ends
    as pandas reads it."""
    values = [
        "2026-01-01",
        "2026-01-01T12:30",
        "2026-01-01 12:30:45.123456789",
        "2261-12-31 23:59:59.999999999",
        None,
        "2026-01-01T12:30:45Z",
        "2026-01-01 ",
        "2026/01/01",
        "2026-02-30",
        "2026-01-01 24:00",
        "9999-12-31",
        "0000-01-01",
        "1677-09-21 00:12:43.145224193",
        "\uff12\uff10\uff12\uff16-01-01",  # full-width digits: pandas reads them, numpy not
        12345,
        np.nan,
    ]
    expected = _coerce_column(pd.Series(values, dtype=object), DATETIME).to_numpy()
    for repeat in (1, ARROW_DATETIME_ROWS // len(values) + 1):
        array = np.empty(len(values) * repeat, dtype=object)
        array[:] = values * repeat
        parsed, read = plain_iso_datetimes(array)
        read_here = read.tolist()[: len(values)]
        assert read_here[:5] == [True] * 5  # plain ISO (and None)
        assert read_here[5:8] + read_here[13:] == [False] * 6  # no plain ISO shape
        assert read_here[8:12] == [False] * 4  # impossible or out of range: pandas says NaT
        same = parsed.view("i8") == np.tile(expected, repeat).view("i8")  # NaT == NaT too
        assert same[read].all()
        assert np.isnat(parsed[~read]).all()


def test_a_request_with_a_date_past_nanoseconds_is_refused():
    """numpy wraps 9999-12-31 round to 1816 without a word; the server now refuses it as
    pandas does, instead of predicting from a date it made up."""
    one = schema(d="datetime")
    assert one.records_to_frame([{"d": "2026-01-01 08:00"}])["d"].iloc[0] == pd.Timestamp(
        "2026-01-01 08:00"
    )
    with pytest.raises(SchemaError, match=r"record 0, field 'd': expected an ISO 8601 .*9999"):
        one.records_to_frame([{"d": "9999-12-31"}])


def test_category_rows_agree_with_the_dict_lookup():
    lookup = {"a": 0, "b": 1, None: 2}
    index = pd.Index(list(lookup), dtype=object)
    values = np.array(["a", None, "z", "b", "", "A"] * INDEXED_LOOKUP_ROWS, dtype=object)
    for size in (6, len(values)):
        rows = _table_rows(values[:size], lookup, index, 3)
        assert rows.tolist() == [lookup.get(v, 3) for v in values[:size]]


@pytest.mark.parametrize("repeat", [1, ARROW_DATETIME_ROWS // 6 + 1])
def test_missing_markers_and_objects_in_object_columns(repeat):
    """pd.NA, NaT, numpy strings, a zoned Timestamp and a number among date-times; mixed
    types in a category column (read as their text); a typed int category column."""
    paris = pd.Timestamp("2026-01-01", tz="Europe/Paris")
    d = [pd.NA, np.str_("2026-01-01"), pd.NaT, "2026-01-01", 5, paris]
    frame = pd.DataFrame(
        {
            "d": pd.Series(d, dtype=object),
            "e": pd.Series([1, "x", None, 2.5, True, "y"], dtype=object),
            "i": [1, 2, 3, 1, 2, 3],
        }
    )
    checked = schema(d="datetime", e="categorical", i=["1", "2"])
    coerced, reasons = checked.check_rows(pd.concat([frame] * repeat, ignore_index=True))
    unseen = "field 'i': category 3 was never seen in training"
    assert reasons.tolist() == ["", "", unseen, "", "", unseen] * repeat
    stamps = coerced["d"].head(6).tolist()
    assert stamps[1] == stamps[3] == pd.Timestamp("2026-01-01")
    assert stamps[4] == pd.Timestamp(5) and stamps[5] == pd.Timestamp("2025-12-31 23:00")
    assert pd.isna(stamps[0]) and pd.isna(stamps[2])
    assert coerced["e"].head(6).tolist() == ["1", "x", None, "2.5", "True", "y"]
    assert coerced["i"].head(3).tolist() == ["1", "2", "3"]


def test_text_arrow_cannot_hold_is_left_to_pandas():
    """A lone surrogate (no UTF-8) among date-times: Arrow refuses the column, pandas reads it."""
    values = ["2026-01-01", "\ud800", None] * ARROW_DATETIME_ROWS
    coerced, reasons = schema(d="datetime").check_rows(pd.DataFrame({"d": values}, dtype=object))
    bad = "field 'd': expected an ISO 8601 date-time string, got '\\ud800'"
    assert reasons.tolist()[:3] == ["", bad, ""]
    assert (
        coerced["d"].iloc[0] == pd.Timestamp("2026-01-01") and coerced["d"].iloc[1:3].isna().all()
    )
