"""Hashed columns: HMAC-SHA256 of each value's text form, the same for every source.

The expected digests are computed here with `hmac.new(key, text.encode(), sha256)`
over the text form the docs define (docs/configuration.md, "Personal data"),
never with the code under test.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import pickle
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export_pipeline.column_hashing import (
    HashKey,
    MissingHashKeyError,
    canonical_number,
    check_hash_key,
    hash_array,
    read_hash_key,
)
from export_pipeline.config import DynamoDBTableConfig, RdsInstanceConfig
from export_pipeline.dynamodb.convert.write import value_text

SECRET = "test-key: ünïcode and spaces ✓"
KEY = HashKey(SECRET.encode())
ENV = "EXPORT_PIPELINE_TEST_HASH_KEY"


def expected(text: str) -> str:
    return hmac.new(SECRET.encode(), text.encode("utf-8"), hashlib.sha256).hexdigest()


# Hostile text: every Unicode category except surrogates (not encodable), NUL,
# quotes, backslashes, line ends, right-to-left marks, emoji, long strings.
hostile_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), hostile_text), max_size=40))
def test_string_values_hash_to_the_hmac_of_their_utf8(values: list[str | None]) -> None:
    hashed = hash_array(KEY, pa.array(values, pa.string())).to_pylist()
    assert hashed == [None if v is None else expected(v) for v in values]
    assert all(h is None or (len(h) == 64 and h == h.lower()) for h in hashed)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), hostile_text), min_size=1, max_size=30))
def test_a_dictionary_encoded_column_hashes_like_the_plain_one(values: list[str | None]) -> None:
    plain = pa.array(values, pa.string())
    assert hash_array(KEY, plain.dictionary_encode()).to_pylist() == [
        None if v is None else expected(v) for v in values
    ]


# Numbers as DynamoDB may send them and as MySQL holds them.
numbers = st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
    lambda d: abs(d.adjusted()) < 120
)


@settings(max_examples=300, deadline=None)
@given(numbers)
def test_a_number_has_one_text_whatever_its_spelling(number: Decimal) -> None:
    text = canonical_number(str(number))
    assert Decimal(text) == number  # exact: nothing rounded
    assert "e" not in text.lower() and not text.startswith("+")
    if "." in text:
        assert not text.endswith("0") and not text.endswith(".")
    for spelling in (f"{number:E}", f"{number:f}", f"+{number}" if number >= 0 else str(number)):
        if Decimal(spelling) == number:
            assert canonical_number(spelling) == text, spelling
    assert canonical_number(f"{number:f}000" if "." in f"{number:f}" else f"{number:f}.000") == (
        text
    )


@pytest.mark.parametrize(
    ("spelling", "text"),
    [("0", "0"), ("-0", "0"), ("0.000", "0"), ("-0.0", "0"), ("1.50", "1.5"), ("1E+3", "1000")],
)
def test_number_spellings(spelling: str, text: str) -> None:
    assert canonical_number(spelling) == text


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_an_integer_hashes_alike_in_dynamodb_and_in_an_rds_integer_column(value: int) -> None:
    dynamodb = expected(value_text("N", str(value)))
    rds = hash_array(KEY, pa.array([value], pa.int64())).to_pylist()[0]
    assert dynamodb == rds == expected(str(value))


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=-(10**20), max_value=10**20, places=4, allow_nan=False))
def test_a_decimal_hashes_alike_in_dynamodb_and_in_an_rds_decimal_column(value: Decimal) -> None:
    rds = hash_array(KEY, pa.array([value], pa.decimal128(30, 4))).to_pylist()[0]
    # DynamoDB sends the number as text without trailing zeros; any spelling agrees.
    assert rds == expected(value_text("N", f"{value:f}")) == expected(canonical_number(str(value)))


@settings(max_examples=100, deadline=None)
@given(hostile_text)
def test_a_string_hashes_alike_in_dynamodb_in_rds_text_and_in_mysql_char_bytes(text: str) -> None:
    dynamodb = expected(value_text("S", text))
    varchar = hash_array(KEY, pa.array([text], pa.string())).to_pylist()[0]
    char = hash_array(KEY, pa.array([text.encode()], pa.binary()), bytes_are_text=True)
    assert dynamodb == varchar == char.to_pylist()[0] == expected(text)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_bytes_hash_as_their_base64(data: bytes) -> None:
    text = base64.b64encode(data).decode()
    assert hash_array(KEY, pa.array([data], pa.binary())).to_pylist() == [expected(text)]
    assert expected(value_text("B", data)) == expected(text)


def test_other_types_hash_as_the_documented_text() -> None:
    cases = [
        (pa.array([True, False, None], pa.bool_()), ["true", "false", None]),
        (
            pa.array([1.5, 1e20, float("nan"), float("-inf")]),
            ["1.5", "1" + "0" * 20, "NaN", "-Infinity"],
        ),
        (pa.array([dt.date(2024, 2, 29)], pa.date32()), ["2024-02-29"]),
        (
            pa.array(
                [dt.datetime(2024, 1, 2, 3, 4, 5), dt.datetime(2024, 1, 2, 3, 4, 5, 60)],
                pa.timestamp("us"),
            ),
            ["2024-01-02 03:04:05", "2024-01-02 03:04:05.000060"],
        ),
        (pa.array([dt.time(23, 59, 59, 999999)], pa.time64("us")), ["23:59:59.999999"]),
    ]
    for array, texts in cases:
        assert hash_array(KEY, array).to_pylist() == [
            None if t is None else expected(t) for t in texts
        ], array.type
    assert value_text("BOOL", True) == "true"
    assert value_text("SS", ["a", 'b"c']) == '["a","b\\"c"]'
    assert value_text("NS", ["1", "2.5"]) == "[1,2.5]"
    assert value_text("M", '{"a":1}') == '{"a":1}'


def test_the_key_never_shows_in_its_text_and_crosses_processes_intact() -> None:
    assert SECRET not in repr(KEY) and SECRET not in str(KEY) and SECRET not in f"{KEY!r}"
    copy = pickle.loads(pickle.dumps(KEY))
    assert hash_array(copy, pa.array(["x"])).to_pylist() == [expected("x")]


def test_a_missing_key_fails_in_one_line_naming_the_variable_and_the_table(monkeypatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(MissingHashKeyError) as raised:
        read_hash_key(ENV, ["Orders"])
    message = str(raised.value)
    assert "\n" not in message and ENV in message and "Orders" in message
    monkeypatch.setenv(ENV, "")  # empty is missing too
    with pytest.raises(MissingHashKeyError):
        read_hash_key(ENV, ["Orders"])


def test_the_export_check_names_the_tables_that_hash(monkeypatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    orders = DynamoDBTableConfig(name="Orders", columns={"email": "hash"})
    check_hash_key(ENV, DynamoDBTableConfig(name="Plain", columns={"x": "exclude"}), "Plain")
    with pytest.raises(MissingHashKeyError, match="Orders"):
        check_hash_key(ENV, orders, "Orders")
    shop = RdsInstanceConfig(
        identifier="shopdb",
        export_only=["shop.customers", "shop.orders"],
        iam_role_arn="arn:aws:iam::123456789012:role/r",
        kms_key_id="alias/k",
        tables={"shop.customers": {"columns": {"email": "hash"}}},
    )
    with pytest.raises(MissingHashKeyError, match=r"shopdb table shop\.customers"):
        check_hash_key(ENV, shop, "shopdb")
    monkeypatch.setenv(ENV, "k")
    check_hash_key(ENV, shop, "shopdb")


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=1, max_size=200), st.lists(st.one_of(st.none(), hostile_text), max_size=5)
)
def test_any_key_length_gives_hmac_sha256(secret: bytes, values: list[str | None]) -> None:
    """Keys shorter than, equal to and longer than SHA-256's 64-byte block (hashed first)."""
    hashed = hash_array(HashKey(secret), pa.array(values, pa.string())).to_pylist()
    assert hashed == [
        None if v is None else hmac.new(secret, v.encode(), hashlib.sha256).hexdigest()
        for v in values
    ]
