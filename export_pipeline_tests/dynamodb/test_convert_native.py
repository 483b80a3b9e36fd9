"""The native full-export parser (`_items.c`) against the per-line code, value by value.

`test_convert.py` runs every conversion test through the native path too;
these tests aim at what only a hand-written parser can get wrong: JSON
escapes and UTF-8, the exact JSON form of nested numbers, duplicated keys,
whitespace, and refusing (None) whatever it does not fully understand, so
that a slower path decides.
"""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export_pipeline.dynamodb.convert import parse_native
from export_pipeline.dynamodb.convert import values as cv
from export_pipeline_tests.support.native import NOT_BUILT

pytestmark = pytest.mark.usefixtures("native_parser")  # fails, saying why, when not built


def test_the_extension_is_built() -> None:
    """CI installs with a C compiler: a silently missing build would only be slower."""
    assert parse_native.AVAILABLE, NOT_BUILT


def parse(lines: list[bytes]) -> dict | None:
    return parse_native.raw_columns(b"\n".join(lines) + b"\n", len(lines))


def item_line(item: dict) -> bytes:
    return orjson.dumps({"Item": item})


def per_line_json(tag: str, value: object) -> str | None:
    try:
        return cv.nested_json(tag, value)
    except (cv.ValueError_, ValueError, TypeError):
        return None


# Where the parser's own rule for nested numbers ends: integers of 15 and 16
# characters, 15 and 16 significant digits, 1e-4 and below, trailing zeros,
# leading zeros, exponents, and texts that are no number.
_EDGE_NUMBER_WORDS = """
    0 -0 00 -00 007 -007 123456789012345 -12345678901234 1234567890123456 -123456789012345
    0.1 -0.5 1.5 3.14159 0.0001 -0.0001 0.00012345678901234 0.00001 0.000001 0.0000012
    0.00010 0.0 1.0 1.50 0.123456789012345 0.1234567890123456 99999999999999.9
    999999999999999.9 12345678901234.5 123456789012345.6 9007199254740993 1e16 1E+20 1E-130
    0.1000000000000000000001 00.5 - 1. .5 1e abc +1 1_000 NaN Infinity
"""
EDGE_NUMBERS = [*_EDGE_NUMBER_WORDS.split(), "1" * 38, " 1", ""]
_DIGITS = st.text("0123456789", min_size=1, max_size=40)
NUMBER_TEXTS = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.builds(lambda a, b: f"{a}.{b}", _DIGITS, _DIGITS),
    st.builds(lambda a, b: f"-{a}.{b}", _DIGITS, _DIGITS),
    st.builds(lambda a, e: f"{a}E{e}", _DIGITS, st.integers(-130, 130)),
)


def assert_number_like_per_line(text: str) -> None:
    value = [{"N": text}, {"NS": [text, "1"]}, {"M": {"k": {"N": text}}}]
    expected = per_line_json("L", value)
    columns = parse([item_line({"l": {"L": value}, "n": {"N": text}})])
    if expected is None:  # an invalid number: the per-line path reports it
        assert columns is None
        return
    assert columns is not None
    assert columns[("l", "L")].to_pylist() == [expected]  # the same text, byte for byte
    assert columns[("n", "N")].to_pylist() == [text]  # top-level numbers stay their text


@pytest.mark.parametrize("text", EDGE_NUMBERS)
def test_nested_number_edges_match_the_per_line_code(text: str) -> None:
    assert_number_like_per_line(text)


@settings(max_examples=400, deadline=None)
@given(NUMBER_TEXTS)
def test_nested_numbers_match_the_per_line_code(text: str) -> None:
    assert_number_like_per_line(text)


_TEXT = st.text(max_size=30)


@settings(max_examples=300, deadline=None)
@given(_TEXT, _TEXT)
def test_strings_and_names_round_trip_whatever_the_escaping(name: str, text: str) -> None:
    item = {name: {"S": text}, "m": {"M": {text: {"SS": [text]}, "k": {"S": text}}}}
    expected_map = cv.nested_json("M", item["m"]["M"])
    for line in (
        item_line(item),  # orjson: UTF-8, minimal escapes
        json.dumps({"Item": item}, ensure_ascii=True).encode(),  # \uXXXX, surrogate pairs
        json.dumps(
            {"Item": item}, ensure_ascii=False, indent=None, separators=(" , ", " : ")
        ).encode(),  # spaces around every separator
    ):
        columns = parse([line])
        assert columns is not None, line
        if name != "m":
            assert columns[(name, "S")].to_pylist() == [text]
        assert columns[("m", "M")].to_pylist() == [expected_map]


def test_escaped_slash_and_escaped_base64() -> None:
    line = b'{"Item":{"b":{"B":"\\/w=="},"m":{"M":{"b":{"B":"\\/w=="},"s":{"S":"a\\/b"}}}}}'
    columns = parse([line])
    assert columns is not None
    assert columns[("b", "B")].to_pylist() == [b"\xff"]
    assert columns[("m", "M")].to_pylist() == ['{"b":"/w==","s":"a/b"}']


def test_every_type_with_absent_values_between() -> None:
    items = [
        {"pk": {"S": "a"}, "b": {"B": "AAE="}, "t": {"BOOL": True}, "z": {"NULL": True}},
        {"pk": {"S": "b"}, "ss": {"SS": ["x", "é"]}, "ns": {"NS": ["1", "2.5"]}},
        {"pk": {"S": "c"}, "bs": {"BS": ["AQ==", ""]}, "t": {"BOOL": False}},
        {"pk": {"S": "d"}, "l": {"L": []}, "m": {"M": {}}},
    ]
    columns = parse([item_line(item) for item in items])
    assert columns is not None
    got = {key: array.to_pylist() for key, array in columns.items()}
    assert got == {
        ("pk", "S"): ["a", "b", "c", "d"],
        ("b", "B"): [b"\x00\x01", None, None, None],
        ("t", "BOOL"): [True, None, False, None],
        ("z", "NULL"): [True, None, None, None],
        ("ss", "SS"): [None, ["x", "é"], None, None],
        ("ns", "NS"): [None, ["1", "2.5"], None, None],
        ("bs", "BS"): [None, None, [b"\x01", b""], None],
        ("l", "L"): [None, None, None, "[]"],
        ("m", "M"): [None, None, None, "{}"],
    }
    for array in columns.values():
        array.validate(full=True)


def test_duplicated_and_many_map_keys_follow_python() -> None:
    """A dict keeps the first position and the last value of a duplicated key."""
    duplicated = b'{"Item":{"m":{"M":{"a":{"N":"1"},"b":{"S":"x"},"a":{"N":"2"}}}}}'
    many = {f"k{i}": {"N": str(i)} for i in range(100)}
    columns = parse([duplicated, item_line({"m": {"M": many}})])
    assert columns is not None
    assert columns[("m", "M")].to_pylist() == ['{"a":2,"b":"x"}', cv.nested_json("M", many)]


def test_large_maps_are_converted_without_python(monkeypatch) -> None:
    many = {f"k{i:03d}": {"N": str(i)} for i in range(300)}
    expected = cv.nested_json("M", many)

    def python_conversion(*_args):
        raise AssertionError("the parser handed this map to Python")

    monkeypatch.setattr(cv, "nested_json", python_conversion)
    columns = parse([item_line({"m": {"M": many}})])
    assert columns is not None
    assert columns[("m", "M")].to_pylist() == [expected]


def test_a_duplicated_key_in_a_large_map_follows_python() -> None:
    """Past 16 keys the parser finds duplicates by sorting; Python's dict decides."""
    members = [f'"k{i:03d}":{{"N":"{i}"}}' for i in range(300)] + ['"k150":{"S":"last"}']
    line = ('{"Item":{"m":{"M":{' + ",".join(members) + "}}}}").encode()
    expected = cv.nested_json("M", orjson.loads(line)["Item"]["m"]["M"])
    columns = parse([line])
    assert columns is not None
    assert columns[("m", "M")].to_pylist() == [expected]
    assert '"k150":"last"' in expected


def test_nesting_to_dynamodbs_limit_and_refusal_beyond_the_parsers() -> None:
    def nested(levels: int) -> dict:
        value: dict = {"S": "leaf"}
        for _ in range(levels):
            value = {"L": [value]}
        return value

    columns = parse([item_line({"deep": nested(32)})])
    assert columns is not None
    assert json.loads(columns[("deep", "L")][0].as_py()) == json.loads(
        cv.nested_json("L", nested(32)["L"])
    )
    assert parse([item_line({"deep": nested(80)})]) is None


@pytest.mark.parametrize(
    "line",
    [
        b'{"Item":{"s":{"S":"\xff"}}}',  # invalid UTF-8
        b'{"Item":{"s":{"S":"\xc0\xaf"}}}',  # overlong UTF-8
        b'{"Item":{"s":{"S":"\\ud800"}}}',  # lone surrogate
        b'{"Item":{"s":{"S":"a\x01b"}}}',  # raw control character
        b'{"Item":{"s":{"S":"x"},"s":{"S":"y"}}}',  # attribute twice
        b'{"Item":{"s":{"S":"x"}},"Other":1}',  # more than Item
        b'{"Item":{"s":{"S":"x"}}} trailing',
        b'{"Item":{"z":{"NULL":false}}}',
        b'{"Item":{"b":{"B":"QQ="}}}',  # non-canonical base64
        b'{"Item":{"b":{"B":"Q==="}}}',
        b'{"Item":{"t":{"BOOL":"true"}}}',
        b'{"Item":{"s":{"SS":["a",1]}}}',
        b'{"Item":{"m":{"M":{"k":{"S":"x","N":"1"}}}}}',
        b'{"Item":{"m":{"M":{"k":{"S":"x"}}}',  # truncated
        b"",
    ],
)
def test_refuses_what_it_does_not_fully_understand(line: bytes) -> None:
    good = item_line({"s": {"S": "fine"}})
    assert parse([good]) is not None
    assert parse([good, line]) is None


def test_refuses_a_row_count_that_does_not_match() -> None:
    lines = b"\n".join(item_line({"a": {"N": str(i)}}) for i in range(3)) + b"\n"
    assert parse_native.raw_columns(lines, 3) is not None
    assert parse_native.raw_columns(lines, 2) is None
    assert parse_native.raw_columns(lines, 4) is None
    assert parse_native.raw_columns(lines.rstrip(b"\n"), 3) is not None  # no final newline


MUTATION_BASE = [
    {
        "pk": {"S": "user#1"},
        "n": {"N": "-12.50"},
        "b": {"B": "AAEC"},
        "t": {"BOOL": True},
        "z": {"NULL": True},
        "ss": {"SS": ["é", 'q"q']},
        "ns": {"NS": ["1", "2.5"]},
        "bs": {"BS": ["AQ==", "Ag=="]},
        "m": {"M": {"k": {"S": "tab\t"}, "l": {"L": [{"N": "1E+2"}, {"BOOL": False}]}}},
    },
    {"pk": {"S": "user#2"}, "m": {"M": {"k": {"S": "☕"}, "n": {"N": "0.1"}}}, "l": {"L": []}},
]
_MUTATION_BYTES = b'{}[]":,\\ntrue false null SNBMLa019.-+eE=/\x00\x80\xc3\xa9\xff u'


def _mutated(data, text: bytes) -> bytes:
    """`text` after one to three random byte edits: insert, delete, repeat a slice."""
    line = bytearray(text)
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(line) - 1))
        action = data.draw(st.sampled_from(["insert", "delete", "repeat"]))
        if action == "insert":
            line[position:position] = bytes([data.draw(st.sampled_from(_MUTATION_BYTES))])
        elif action == "delete":
            del line[position]
        else:
            line[position:position] = line[position : position + data.draw(st.integers(1, 12))]
    return bytes(line)


def _expected_raw(tag: str, value: object) -> object:
    if tag in ("M", "L"):
        return cv.nested_json(tag, value)
    if tag == "B":
        return cv.decode_base64_list([value])[0]
    if tag == "BS":
        return cv.decode_base64_list(value)
    return True if tag == "NULL" else value


@settings(max_examples=2000, deadline=None)
@given(st.data())
def test_mutated_lines_are_declined_or_read_exactly_as_orjson_reads_them(data) -> None:
    """Random byte edits of valid lines: declining is always allowed; what the parser
    accepts must be valid JSON and every value must be what the per-line code makes."""
    lines = [item_line(item) for item in MUTATION_BASE]
    index = data.draw(st.integers(0, len(lines) - 1))
    lines[index] = _mutated(data, lines[index])
    columns = parse(lines)
    if columns is None:
        return
    items = [orjson.loads(text)["Item"] for text in lines]  # must not raise
    for (attribute, tag), array in columns.items():
        for row, value in enumerate(array.to_pylist()):
            typed = items[row].get(attribute)
            if typed is None or tag not in typed:
                assert value is None, (attribute, tag, row)
            else:
                assert value == _expected_raw(tag, typed[tag]), (attribute, tag, row)


# -- incremental exports: change lines ------------------------------------------------


def change_line(members: dict) -> bytes:
    return orjson.dumps(members)


def parse_changes(lines: list[bytes], keys: tuple[str, ...] = ("pk",)):
    parsed = parse_native.change_columns(b"\n".join(lines) + b"\n", len(lines), keys)
    if parsed is None:
        return None
    images, deleted, stamps = parsed
    got = {key: array.to_pylist() for key, array in images.items()}
    return got, deleted.to_pylist(), stamps.to_pylist()


def _stamp(micros: int) -> dict:
    return {"WriteTimestampMicros": {"N": str(micros)}}


def test_change_lines_follow_the_per_line_rules_for_keys_and_images() -> None:
    """NewImage is the row; Keys fill in a key attribute NewImage lacks (NewImage wins
    where both have it); a delete's row is its Keys; OldImage is not used."""
    lines = [
        change_line(
            {
                "Metadata": _stamp(1),
                "Keys": {"pk": {"S": "a"}},
                "NewImage": {"pk": {"S": "a"}, "v": {"N": "1"}},
            }
        ),
        change_line(
            {
                "Keys": {"pk": {"S": "b"}},
                "NewImage": {"v": {"N": "2"}},
                "Metadata": _stamp(2),
                "OldImage": {"v": {"N": "0"}},
            }
        ),
        change_line({"Metadata": _stamp(3), "Keys": {"pk": {"S": "c"}}}),
        change_line(
            {
                "Metadata": _stamp(4),
                "Keys": {"pk": {"S": "d"}, "extra": {"S": "k"}},
                "NewImage": {"pk": {"S": "d-image"}},
            }
        ),
        change_line(
            {
                "Metadata": _stamp(5),
                "Keys": {"pk": {"S": "e"}, "extra": {"S": "k"}},
                "NewImage": {"v": {"N": "5"}},
            }
        ),
    ]
    got, deleted, stamps = parse_changes(lines)
    assert got == {
        ("pk", "S"): ["a", "b", "c", "d-image", "e"],
        ("v", "N"): ["1", "2", None, None, "5"],
        ("extra", "S"): [None, None, None, None, "k"],
    }
    assert deleted == [False, False, True, False, False]
    assert stamps == ["1", "2", "3", "4", "5"]


def test_change_lines_with_a_composite_key() -> None:
    line = change_line(
        {
            "Metadata": _stamp(9),
            "Keys": {"pk": {"S": "a"}, "sk": {"N": "2"}},
            "NewImage": {"pk": {"S": "a"}, "x": {"BOOL": True}},
        }
    )
    got, deleted, _stamps = parse_changes([line], ("pk", "sk"))
    assert got == {("pk", "S"): ["a"], ("x", "BOOL"): [True], ("sk", "N"): ["2"]}
    assert deleted == [False]


@pytest.mark.parametrize(
    "members",
    [
        {"Keys": {"pk": {"S": "a"}}},  # no Metadata
        {"Metadata": _stamp(1)},  # no Keys
        {"Metadata": _stamp(1), "Keys": {"other": {"S": "a"}}},  # the key attribute missing
        {"Metadata": {"WriteTimestampMicros": {}}, "Keys": {"pk": {"S": "a"}}},
        {"Metadata": {"WriteTimestampMicros": {"N": 5}}, "Keys": {"pk": {"S": "a"}}},
        {"Metadata": _stamp(1), "Keys": {"pk": {"S": "a"}}, "NewImage": None},
        {"Metadata": _stamp(1), "Keys": {"pk": {"S": "a"}}, "NewImage": {"v": {"Q": "1"}}},
        {"Metadata": _stamp(1), "Keys": {"pk": {"S": 1}}},
    ],
)
def test_change_lines_refused(members: dict) -> None:
    good = change_line({"Metadata": _stamp(1), "Keys": {"pk": {"S": "a"}}})
    assert parse_changes([good]) is not None
    assert parse_changes([good, change_line(members)]) is None


@pytest.mark.parametrize(
    "line",
    [
        b'{"Metadata":{"WriteTimestampMicros":{"N":"1"}},"Keys":{"pk":{"S":"a"}},'
        b'"Keys":{"pk":{"S":"b"}}}',  # Keys twice: Python keeps the last
        b'{"Metadata":{"WriteTimestampMicros":{"N":"1","N":"2"}},"Keys":{"pk":{"S":"a"}}}',
        b'{"Metadata":{"WriteTimestampMicros":{"N":"1"}},"Keys":{"pk":{"S":"a"},"pk":{"S":"b"}}}',
        b'{"Metadata":{"WriteTimestampMicros":{"N":"1"}},"Keys":{"pk":{"S":"a"}},'
        b'"OldImage":{"v":01}}',  # OldImage is not valid JSON
        b'{"Metadata":{"WriteTimestampMicros":{"N":"1"}},"Keys":{"pk":{"S":"a"}}} x',
    ],
)
def test_change_lines_refused_where_only_json_shows_it(line: bytes) -> None:
    assert parse_changes([line]) is None


def test_ignored_members_may_hold_any_json() -> None:
    line = (
        b'{"Metadata":{"Other":[1,-2.5e-3,true,false,null,{"a":"\\u00e9"}],'
        b'"WriteTimestampMicros":{"Extra":0,"N":"7"}},"Keys":{"pk":{"S":"a"}},'
        b'"OldImage":{"v":{"M":{"deep":{"L":[{"N":"1E+400"}]}}}},"Unknown":[[]]}'
    )
    got, deleted, stamps = parse_changes([line])
    assert got == {("pk", "S"): ["a"]} and deleted == [True] and stamps == ["7"]


CHANGE_BASE = [
    {"Metadata": _stamp(1), "Keys": {"pk": {"S": "a"}}, "NewImage": MUTATION_BASE[0]},
    {"Keys": {"pk": {"S": "b"}}, "NewImage": {"v": {"N": "2"}}, "Metadata": _stamp(2)},
    {"Metadata": _stamp(3), "Keys": {"pk": {"S": "c"}}, "OldImage": MUTATION_BASE[1]},
]


def _per_line_change(record: dict) -> tuple[dict, bool, str]:
    """What the per-line path makes of a change line (its rules, restated)."""
    image = record.get("NewImage")
    deleted = image is None
    if image is None:
        image = record["Keys"]
    elif "pk" not in image:
        image = {**record["Keys"], **image}
    return image, deleted, record["Metadata"]["WriteTimestampMicros"]["N"]


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_mutated_change_lines_are_declined_or_read_as_the_per_line_path_reads_them(
    data,
) -> None:
    lines = [change_line(record) for record in CHANGE_BASE]
    index = data.draw(st.integers(0, len(lines) - 1))
    lines[index] = _mutated(data, lines[index])
    parsed = parse_native.change_columns(b"\n".join(lines) + b"\n", len(lines), ("pk",))
    if parsed is None:
        return
    images, deleted, stamps = parsed
    expected = [_per_line_change(orjson.loads(text)) for text in lines]  # must not raise
    assert deleted.to_pylist() == [d for _image, d, _stamp in expected]
    assert stamps.to_pylist() == [s for _image, _d, s in expected]
    for (attribute, tag), array in images.items():
        for row, value in enumerate(array.to_pylist()):
            typed = expected[row][0].get(attribute)
            if typed is None or tag not in typed:
                assert value is None, (attribute, tag, row)
            else:
                assert value == _expected_raw(tag, typed[tag]), (attribute, tag, row)


def test_the_switch_turns_the_parser_off_in_every_process(tmp_path) -> None:
    """EXPORT_PIPELINE_NATIVE_PARSER=0: the CLI says which parser ran, and the
    output is the same (a real subprocess: the switch is read at import)."""
    import gzip
    import os
    import subprocess
    import sys

    lines = [item_line({"pk": {"S": str(i)}, "m": {"M": {"n": {"N": "1.5"}}}}) for i in range(5)]
    path = tmp_path / "in.json.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    command = [sys.executable, "-m", "export_pipeline.cli", "dynamodb-to-parquet", str(path)]
    outputs = {}
    for switch in ("1", "0"):
        done = subprocess.run(
            [*command, "-o", str(tmp_path / switch)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "EXPORT_PIPELINE_NATIVE_PARSER": switch},
        )
        outputs[switch] = done.stdout
    assert "parsed by:      the native parser (C extension)" in outputs["1"]
    assert "Arrow's JSON reader: the native parser is off" in outputs["0"]
    columns = {switch: text.split("columns", 1)[1] for switch, text in outputs.items()}
    assert columns["1"] == columns["0"] and "pk" in columns["1"]
