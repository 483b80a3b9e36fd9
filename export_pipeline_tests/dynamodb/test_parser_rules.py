"""The rules of docs/dynamodb-parsers.md, each checked on the three parsers at once.

Every test generates export lines, runs the native parser, Arrow's reader
(full exports only) and the per-line parser on the same batch, and checks
both the rule's content (against values the test computes itself) and that
a parser either declines or returns exactly the per-line parser's raw
columns (R1). `test_every_rule_in_the_spec_has_a_test` ties this module to
the written rules.
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export_pipeline.dynamodb.convert import parse_arrow, parse_lines, parse_native, read
from export_pipeline.dynamodb.convert import values as cv
from export_pipeline.dynamodb.convert.model import (
    DELETED_TAG,
    TIMESTAMP_TAG,
    BatchInfo,
    ConversionError,
)
from export_pipeline.dynamodb.convert.parse_arrow import SchemaHint

pytestmark = pytest.mark.usefixtures("native_parser")  # fails, saying why, when not built

SPEC = Path(__file__).resolve().parents[2] / "docs" / "dynamodb-parsers.md"
RULE_TESTS: dict[str, list[str]] = {}
REJECTED = "rejected"  # the per-line parser raised ConversionError
DECLINED = "declined"  # the native or Arrow parser left the batch to another parser
EXAMPLES = settings(max_examples=60, deadline=None)


def rule(*ids: str) -> Callable:
    """Mark a test as the check of the given rules of the spec."""

    def mark(test: Callable) -> Callable:
        for rule_id in ids:
            RULE_TESTS.setdefault(rule_id, []).append(test.__name__)
        return test

    return mark


# -- running the three parsers -------------------------------------------------------


def _read_back(info: BatchInfo) -> dict:
    """An intermediate batch as {(attribute, tag): (values, number kind)}."""
    table = pa.ipc.open_file(info.ipc_path).read_all()
    return {
        (column.attribute, column.tag): (
            None if column.field_index is None else table.column(column.field_index).to_pylist(),
            column.number_kind,
        )
        for column in info.columns
    }


def _flush(writer: read._BatchWriter, columns: dict | None, rows: int) -> object:
    if columns is None:
        return DECLINED
    try:
        return _read_back(writer.flush_arrays(columns, rows, 1))
    except (cv.ValueError_, ValueError, TypeError, pa.ArrowException):
        return DECLINED  # pass 1 falls back to the per-line parser on these too


def outcomes(lines: list[bytes], keys: tuple[str, ...] | None = None) -> dict[str, object]:
    """Each parser's raw columns for one batch (a full export when `keys` is None)."""
    blob, rows, path = b"\n".join(lines) + b"\n", len(lines), Path("rules.json.gz")
    with tempfile.TemporaryDirectory() as tmp:
        writer = read._BatchWriter(path, Path(tmp), "rules", rows)
        found: dict[str, object] = {}
        columns: dict = {}
        try:
            if keys is None:
                parse_lines.parse_items(path, lines, columns, 0, rows, 0)
            else:
                parse_lines.parse_changes(path, lines, columns, 0, rows, 0, keys)
            found["per line"] = _read_back(writer.flush(columns, rows, 1))
        except ConversionError:
            found["per line"] = REJECTED
        if keys is None:
            found["native"] = _flush(writer, parse_native.raw_columns(blob, rows), rows)
            found["arrow"] = _flush(writer, parse_arrow.raw_columns(blob, rows, SchemaHint()), rows)
        else:
            changes = parse_native.change_columns(blob, rows, keys)
            if changes is not None:
                images, deleted, stamps = changes
                changes = {(None, DELETED_TAG): deleted, (None, TIMESTAMP_TAG): stamps, **images}
            found["native"] = _flush(writer, changes, rows)
    return found


def agreed(lines: list[bytes], keys: tuple[str, ...] | None = None, *, native: bool = True):
    """R1 on this batch; returns the per-line parser's columns (or REJECTED).

    `native`: the batch is one the native parser must accept (so the
    comparison is not vacuous).
    """
    found = outcomes(lines, keys)
    reference = found.pop("per line")
    for parser, result in found.items():
        if result == DECLINED:
            assert not (native and parser == "native" and reference != REJECTED), (
                "the native parser declined a valid batch"
            )
            continue
        assert reference != REJECTED, f"{parser} accepted a batch the per-line parser rejects"
        assert result == reference, f"{parser} differs from the per-line parser"
    return reference


def item_lines(items: list[dict]) -> list[bytes]:
    return [orjson.dumps({"Item": item}) for item in items]


# -- generators ------------------------------------------------------------------------

NAMES = st.text(min_size=1, max_size=8)
TEXTS = st.text(max_size=24)
INTEGER_TEXTS = st.integers(-(10**38) + 1, 10**38 - 1).map(str)
DECIMAL_TEXTS = st.builds(
    lambda sign, whole, fraction: f"{sign}{whole}.{fraction}",
    st.sampled_from(["", "-"]),
    st.integers(0, 10**20),
    st.integers(1, 10**17).map(lambda n: str(n).rstrip("0") or "1"),
)
NUMBER_TEXTS = st.one_of(INTEGER_TEXTS, DECIMAL_TEXTS, st.sampled_from(["0", "-0", "1E+20"]))
SCALARS = st.one_of(
    TEXTS.map(lambda s: {"S": s}),
    NUMBER_TEXTS.map(lambda n: {"N": n}),
    st.binary(max_size=12).map(lambda b: {"B": base64.b64encode(b).decode()}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
)
NESTED = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda values: {"L": values}),
        st.dictionaries(NAMES, inner, max_size=4).map(lambda members: {"M": members}),
    ),
    max_leaves=12,
)


def plain(typed: dict) -> object:
    """The plain JSON value of R6, computed here independently of the converter."""
    ((tag, value),) = typed.items()
    if tag == "M":
        return {key: plain(member) for key, member in value.items()}
    if tag == "L":
        return [plain(member) for member in value]
    if tag == "N":  # by the text's shape: integers within 2^53, short plain decimals
        if re.fullmatch(r"-?[0-9]+", value):
            return int(value) if abs(int(value)) <= 2**53 else value
        significant = value.lstrip("-").replace(".", "").lstrip("0")
        if re.fullmatch(r"-?[0-9]+\.[0-9]+", value) and len(significant) <= 15:
            return float(value)
        return value
    if tag == "NULL":
        return None
    return value  # S, B (base64 text), BOOL


def column(found: dict, attribute: str, tag: str) -> list:
    return found[(attribute, tag)][0]


# -- the rules -------------------------------------------------------------------------


@rule("R1", "R2")
@EXAMPLES
@given(st.lists(st.tuples(NAMES, TEXTS), min_size=1, max_size=6))
def test_strings_and_names_are_json_strings(pairs) -> None:
    items = [{name: {"S": text}} for name, text in pairs]
    found = agreed(item_lines(items))
    for row, (name, text) in enumerate(pairs):
        assert column(found, name, "S")[row] == text


@rule("R2")
def test_escapes_are_decoded_the_same_way() -> None:
    lines = [
        b'{"Item":{"a\\/b":{"S":"x\\/y\\u00e9\\ud83d\\ude00\\n"}}}',
        b'{"Item":{"a\\/b":{"SS":["\\"q\\"","\\\\"]}}}',
    ]
    found = agreed(lines)
    assert column(found, "a/b", "S") == ["x/y\u00e9\U0001f600\n", None]
    assert column(found, "a/b", "SS") == [None, ['"q"', "\\"]]


@rule("R1", "R3")
@EXAMPLES
@given(st.lists(NUMBER_TEXTS, min_size=1, max_size=8), st.lists(NUMBER_TEXTS, max_size=4))
def test_numbers_keep_their_text(numbers, set_elements) -> None:
    items = [{"n": {"N": text}} for text in numbers]
    if set_elements:
        items.append({"ns": {"NS": sorted(set(set_elements))}})
    found = agreed(item_lines(items))
    assert column(found, "n", "N")[: len(numbers)] == numbers
    if set_elements:
        assert column(found, "ns", "NS")[-1] == sorted(set(set_elements))


@rule("R1", "R4")
@EXAMPLES
@given(st.lists(st.binary(max_size=16), min_size=1, max_size=5))
def test_binary_is_decoded(blobs) -> None:
    items = [{"b": {"B": base64.b64encode(blob).decode()}} for blob in blobs]
    items.append({"bs": {"BS": [base64.b64encode(blob).decode() for blob in blobs]}})
    found = agreed(item_lines(items))
    assert column(found, "b", "B")[: len(blobs)] == blobs
    assert column(found, "bs", "BS")[-1] == blobs


@rule("R1", "R4", "R5", "R7")
@pytest.mark.parametrize(
    "typed",
    [
        {"B": "not base64!"},
        {"BS": ["QUJD", "%%%%"]},
        {"BOOL": "true"},
        {"BOOL": 1},
        {"X": "unknown descriptor"},
        {"S": "two", "N": "1"},
        {},
    ],
)
def test_what_the_per_line_parser_rejects_no_parser_accepts(typed: dict) -> None:
    lines = item_lines([{"ok": {"S": "fine"}}, {"bad": typed}])
    assert agreed(lines) == REJECTED


@rule("R1", "R5")
@EXAMPLES
@given(st.lists(st.one_of(st.booleans(), st.none()), min_size=1, max_size=8))
def test_bool_and_null(flags) -> None:
    items = [{"f": {"BOOL": flag}} if flag is not None else {"f": {"NULL": True}} for flag in flags]
    found = agreed(item_lines(items))
    if any(flag is not None for flag in flags):
        assert column(found, "f", "BOOL") == flags
    if None in flags:
        assert found[("f", "NULL")][0] is None  # a NULL column stores nothing


@rule("R5")
def test_a_null_attribute_stores_nothing_whatever_its_value() -> None:
    found = agreed(item_lines([{"n": {"NULL": True}}, {"n": {"NULL": "yes"}}]), native=False)
    assert found[("n", "NULL")] == (None, None)


@rule("R1", "R6")
@EXAMPLES
@given(st.lists(NESTED.filter(lambda typed: "M" in typed or "L" in typed), min_size=1, max_size=4))
def test_maps_and_lists_are_plain_json(values) -> None:
    items = [{"v": typed} for typed in values]
    found = agreed(item_lines(items), native=False)  # the native parser may leave odd numbers
    for row, typed in enumerate(values):
        ((tag, _),) = typed.items()
        text = column(found, "v", tag)[row]
        assert json.loads(text) == plain(typed)


@rule("R6")
def test_a_key_given_twice_keeps_its_last_value() -> None:
    lines = [b'{"Item":{"m":{"M":{"k":{"S":"first"},"j":{"N":"1"},"k":{"S":"last"}}}}}']
    found = agreed(lines)
    assert column(found, "m", "M") == ['{"k":"last","j":1}']


@rule("R1", "R8")
@EXAMPLES
@given(
    st.lists(
        st.tuples(
            TEXTS,  # key
            st.one_of(st.none(), st.dictionaries(NAMES, SCALARS, max_size=3)),  # NewImage
            st.booleans(),  # the NewImage lacks the key
            st.integers(0, 2**62),  # WriteTimestampMicros
        ),
        min_size=1,
        max_size=6,
    )
)
def test_change_lines(changes) -> None:
    lines, expected_keys = [], []
    for key, image, lacks_key, stamp in changes:
        record: dict = {
            "Metadata": {"WriteTimestampMicros": {"N": str(stamp)}},
            "Keys": {"pk": {"S": key}},
            "Ignored": {"any": [1, "json", None]},
        }
        if image is not None:
            image = {name: value for name, value in image.items() if name != "pk"}
            record["NewImage"] = image if lacks_key else {"pk": {"S": key}, **image}
        lines.append(orjson.dumps(record))
        expected_keys.append(key)
    found = agreed(lines, ("pk",))
    assert column(found, "pk", "S") == expected_keys
    assert column(found, None, DELETED_TAG) == [image is None for _, image, _, _ in changes]
    assert column(found, None, TIMESTAMP_TAG) == [str(stamp) for *_, stamp in changes]


@rule("R8")
def test_a_change_line_without_its_key_is_rejected() -> None:
    line = orjson.dumps(
        {"Metadata": {"WriteTimestampMicros": {"N": "1"}}, "Keys": {"other": {"S": "x"}}}
    )
    assert agreed([line], ("pk",)) == REJECTED


@rule("R9")
@EXAMPLES
@given(st.lists(st.tuples(NAMES, TEXTS), min_size=2, max_size=6))
def test_lines_are_rows(pairs) -> None:
    blob = b"\n".join(item_lines([{name: {"S": text}} for name, text in pairs]))
    rows = len(pairs)
    assert parse_native.raw_columns(blob, rows) is not None  # no final newline
    assert parse_native.raw_columns(blob + b"\n", rows) is not None
    for wrong in (rows - 1, rows + 1):
        assert parse_native.raw_columns(blob + b"\n", wrong) is None
        assert parse_arrow.raw_columns(blob + b"\n", wrong) is None


def test_every_rule_in_the_spec_has_a_test() -> None:
    written = set(re.findall(r"^- \*\*(R\d+) ", SPEC.read_text(encoding="utf-8"), re.MULTILINE))
    assert written, f"no rules found in {SPEC}"
    assert written == set(RULE_TESTS), (
        f"rules without a test: {sorted(written - set(RULE_TESTS))}; "
        f"tests citing unwritten rules: {sorted(set(RULE_TESTS) - written)}"
    )
