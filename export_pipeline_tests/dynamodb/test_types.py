"""Type rules: number classification, JSON numbers, widening."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from export_pipeline.dynamodb import types as t
from export_pipeline.dynamodb.convert.values import json_number
from export_pipeline.dynamodb.types import ColumnType, number_kind, widen

INT64, NUMERIC, STRING, JSON, BOOL, BYTES, NULL = (
    ColumnType(t.INT64),
    ColumnType(t.NUMERIC),
    ColumnType(t.STRING),
    ColumnType(t.JSON),
    ColumnType(t.BOOL),
    ColumnType(t.BYTES),
    ColumnType(t.NULL),
)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("0", t.INT64),
        ("-0", t.INT64),
        (str(2**63 - 1), t.INT64),
        (str(-(2**63)), t.INT64),
        (str(2**63), t.NUMERIC),
        (str(-(2**63) - 1), t.NUMERIC),
        ("1E+2", t.INT64),
        ("1.000", t.INT64),
        ("9" * 29, t.NUMERIC),
        ("9" * 30, t.STRING),
        ("-" + "9" * 29 + "." + "9" * 9, t.NUMERIC),
        ("0.123456789", t.NUMERIC),
        ("0.1234567891", t.STRING),
        ("1.5000000000", t.NUMERIC),  # trailing zeros are not significant
        ("1" * 38, t.STRING),
        ("1E-130", t.STRING),
        ("9.9999999999999999999999999999999999999E+125", t.STRING),
        ("1E+28", t.NUMERIC),
        ("1E+29", t.STRING),
    ],
)
def test_number_kind_edges(text: str, kind: str) -> None:
    assert number_kind(text) == kind


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "NaN", "Infinity", "1e", "--1", " 1"])
def test_number_kind_rejects_non_numbers(text: str) -> None:
    with pytest.raises(ValueError):
        number_kind(text)


@pytest.mark.parametrize(
    ("text", "kind"),
    [("0E+999999999", t.INT64), ("-9.99E+125", t.STRING), ("1.0E-130", t.STRING)],
)
def test_number_kind_accepts_dynamodbs_range_edges(text: str, kind: str) -> None:
    assert number_kind(text) == kind


@pytest.mark.parametrize(
    "text", ["1E+126", "-1E+126", "9.9E-131", "1E999999999", "1e111111111111111111111"]
)
def test_number_kind_rejects_numbers_beyond_dynamodbs_range(text: str) -> None:
    """Such numbers cannot come from DynamoDB; 1E999999999 would also make int()
    build a billion-digit integer (minutes of CPU) if it were not refused first."""
    with pytest.raises(ValueError, match="range"):
        number_kind(text)


@settings(deadline=None)  # shared, busy CI machine: timing says nothing here
@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_number_kind_holds_value_exactly(value: Decimal) -> None:
    assume(not value or -130 <= value.adjusted() <= 125)  # DynamoDB's range (tested above)
    text = str(value)
    kind = number_kind(text)
    if kind == t.INT64:
        assert Decimal(int(value)) == value and -(2**63) <= int(value) < 2**63
    elif kind == t.NUMERIC:
        with localcontext() as context:
            context.prec = 400
            assert value.quantize(Decimal("1E-9")) == value
        assert abs(value) < Decimal(10) ** 29
        assert not (value == value.to_integral_value() and -(2**63) <= value < 2**63)
    else:
        with localcontext() as context:
            context.prec = 400
            fits = abs(value) < Decimal(10) ** 29 and value.quantize(Decimal("1E-9")) == value
        assert not fits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("-0", 0),
        (str(2**53), 2**53),
        (str(2**53 + 1), str(2**53 + 1)),  # float64 cannot hold it
        ("1.5", 1.5),
        ("0.1", 0.1),  # its own shortest float text: BigQuery keeps it exactly
        ("0.10000000000000000001", "0.10000000000000000001"),
        ("1" * 38, "1" * 38),
        ("1E-130", "1E-130"),  # exponent forms keep their text (SQL applies the same rule)
        ("1E+20", "1E+20"),
        ("0.30000000000000004", "0.30000000000000004"),  # 17 digits: text
        ("0.000123456789012345", 0.000123456789012345),  # 15 significant digits
        ("12345678901234567890.123", "12345678901234567890.123"),
    ],
)
def test_json_number_only_when_exact(text: str, expected: object) -> None:
    result = json_number(text)
    assert result == expected and type(result) is type(expected)


@settings(deadline=None)  # shared, busy CI machine: timing says nothing here
@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_json_number_never_loses_value(value: Decimal) -> None:
    text = str(value)
    result = json_number(text)
    if isinstance(result, str):
        assert result == text
    elif isinstance(result, int):
        assert Decimal(result) == value and abs(result) <= 2**53
    else:
        assert Decimal(repr(result)) == value


def test_widen_number_chain() -> None:
    assert widen(INT64, NUMERIC) == NUMERIC
    assert widen(NUMERIC, INT64) == NUMERIC
    assert widen(INT64, STRING) == STRING
    assert widen(NUMERIC, STRING) == STRING
    assert widen(INT64, INT64) == INT64


def test_widen_other_kinds() -> None:
    assert widen(BOOL, INT64) == JSON
    assert widen(BYTES, STRING) == JSON
    assert widen(JSON, STRING) == JSON
    assert widen(NULL, BOOL) == BOOL
    assert widen(BYTES, NULL) == BYTES
    assert widen(ColumnType(t.INT64, True), ColumnType(t.NUMERIC, True)) == ColumnType(
        t.NUMERIC, True
    )
    assert widen(ColumnType(t.STRING, True), ColumnType(t.BYTES, True)) == JSON
    assert widen(ColumnType(t.STRING, True), STRING) == JSON


def test_column_type_from_bigquery_names() -> None:
    assert ColumnType.from_bigquery("INTEGER") == INT64
    assert ColumnType.from_bigquery("NUMERIC", "REPEATED") == ColumnType(t.NUMERIC, True)
    assert ColumnType(t.NULL).bq_type == "STRING"
    assert str(ColumnType(t.BYTES, True)) == "ARRAY<BYTES>"


@settings(deadline=None)  # shared, busy CI machine: timing says nothing here
@given(
    st.lists(
        st.one_of(
            st.decimals(allow_nan=False, allow_infinity=False, places=None).map(str),
            st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1).map(str),
            st.floats(allow_nan=False, allow_infinity=False).map(repr),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_columnar_json_numbers_match_per_value_rule(texts: list[str]) -> None:
    """The column-wise JSON number writer agrees with `json_number` on every value."""
    import json

    import pyarrow as pa

    from export_pipeline.dynamodb.convert.parse_arrow import _numbers

    texts = [x for x in texts if _is_dynamodb_number(x)]
    if not texts:
        return
    written = _numbers(pa.array(texts, pa.string())).to_pylist()
    for text, json_text in zip(texts, written, strict=True):
        expected = json_number(text)
        got = json.loads(json_text)
        assert got == expected and type(got) is type(expected), (text, json_text)


def _is_dynamodb_number(text: str) -> bool:
    try:
        t.dynamodb_decimal(text)
    except ValueError:
        return False
    return True
