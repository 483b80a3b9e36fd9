"""convert_full_export / convert_incremental_export: real gzip in, real Parquet out."""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from export_pipeline.dynamodb.convert import (
    DELETED_COLUMN,
    ConversionError,
    ConversionResult,
    convert_full_export,
    convert_incremental_export,
    read,
    run,
)
from export_pipeline.naming import assign_columns
from export_pipeline_tests.support.aws_samples import AwsSamples
from export_pipeline_tests.support.native import NOT_BUILT

pytestmark = pytest.mark.usefixtures("conversion_path")


def write_items(path: Path, items: list[dict], *, key: str = "Item") -> Path:
    """A gzip DynamoDB JSON data file with one `{key: item}` per line."""
    lines = b"".join(orjson.dumps({key: item}) + b"\n" for item in items)
    path.write_bytes(gzip.compress(lines))
    return path


def rows(result: ConversionResult) -> list[dict]:
    out: list[dict] = []
    for path in result.parquet_files:
        out.extend(pq.read_table(path).to_pylist())
    return out


def column(result: ConversionResult, source: str):
    (spec,) = [c for c in result.columns if c.source_name == source]
    return spec


def convert_values(tmp_path: Path, attribute: dict, values: list[dict], **kwargs):
    """Convert items {"pk": i, attribute-name: value} and return (spec, values by pk)."""
    ((name, _),) = attribute.items()
    items = [{"pk": {"N": str(i)}, name: v} for i, v in enumerate(values)]
    result = convert_full_export(
        [write_items(tmp_path / "in.json.gz", items)], tmp_path / "out", **kwargs
    )
    by_pk = {row["pk"]: row[column(result, name).name] for row in rows(result)}
    return column(result, name), [by_pk[i] for i in range(len(values))]


# -- the type rules ---------------------------------------------------------------------


def test_int64_edges(tmp_path: Path) -> None:
    values = [str(2**63 - 1), str(-(2**63)), "0", "-0", "1E+3"]
    spec, got = convert_values(tmp_path, {"n": 0}, [{"N": v} for v in values])
    assert (spec.bq_type, spec.mode) == ("INT64", "NULLABLE")
    assert got == [2**63 - 1, -(2**63), 0, 0, 1000]
    schema = pq.read_schema(tmp_path / "out" / "dynamodb-part-00000.parquet")
    assert schema.field("n").type == pa.int64()


@pytest.mark.parametrize("beyond", [str(2**63), str(-(2**63) - 1)])
def test_int64_plus_minus_one_beyond_is_numeric(tmp_path: Path, beyond: str) -> None:
    spec, got = convert_values(tmp_path, {"n": 0}, [{"N": "1"}, {"N": beyond}])
    assert spec.bq_type == "NUMERIC"
    assert got == [Decimal(1), Decimal(beyond)]
    schema = pq.read_schema(tmp_path / "out" / "dynamodb-part-00000.parquet")
    assert schema.field("n").type == pa.decimal128(38, 9)


def test_numeric_29_digits_and_9_decimals(tmp_path: Path) -> None:
    values = ["9" * 29, "-" + "9" * 29 + "." + "9" * 9, "0.000000001", "1.50"]
    spec, got = convert_values(tmp_path, {"n": 0}, [{"N": v} for v in values])
    assert spec.bq_type == "NUMERIC"
    assert got == [Decimal(v) for v in values]


@pytest.mark.parametrize(
    "odd",
    ["0.1234567891", "9" * 30, "1" * 38, "1E-130", "9.9999999999999999999999999999999999999E+125"],
)
def test_numbers_beyond_numeric_keep_exact_text(tmp_path: Path, odd: str) -> None:
    spec, got = convert_values(tmp_path, {"n": 0}, [{"N": "1"}, {"N": "2.5"}, {"N": odd}])
    assert spec.bq_type == "STRING"
    assert got == ["1", "2.5", odd]


def test_strings_binary_bool_null(tmp_path: Path) -> None:
    texts = ["", "plain", "emoji \U0001f600 4-byte", "ünïcödé"]
    spec, got = convert_values(tmp_path, {"s": 0}, [{"S": v} for v in texts])
    assert spec.bq_type == "STRING" and got == texts

    blobs = [b"", b"\x00\xff\x10", bytes(range(256))]
    spec, got = convert_values(
        tmp_path, {"b": 0}, [{"B": base64.b64encode(v).decode()} for v in blobs]
    )
    assert spec.bq_type == "BYTES" and got == blobs

    spec, got = convert_values(tmp_path, {"f": 0}, [{"BOOL": True}, {"BOOL": False}])
    assert spec.bq_type == "BOOL" and got == [True, False]

    spec, got = convert_values(tmp_path, {"z": 0}, [{"NULL": True}, {"NULL": True}])
    assert (spec.bq_type, spec.mode) == ("STRING", "NULLABLE") and got == [None, None]


def test_null_beside_other_type_is_sql_null(tmp_path: Path) -> None:
    spec, got = convert_values(tmp_path, {"x": 0}, [{"N": "5"}, {"NULL": True}])
    assert spec.bq_type == "INT64" and got == [5, None]


def test_sets(tmp_path: Path) -> None:
    spec, got = convert_values(tmp_path, {"ss": 0}, [{"SS": ["a", "\U0001f600"]}, {"SS": ["b"]}])
    assert (spec.bq_type, spec.mode) == ("STRING", "REPEATED")
    assert got == [["a", "\U0001f600"], ["b"]]

    spec, got = convert_values(tmp_path, {"bs": 0}, [{"BS": ["AQI=", "/w=="]}])
    assert (spec.bq_type, spec.mode) == ("BYTES", "REPEATED") and got == [[b"\x01\x02", b"\xff"]]

    spec, got = convert_values(tmp_path, {"ns": 0}, [{"NS": ["1", "2"]}, {"NS": ["3"]}])
    assert (spec.bq_type, spec.mode) == ("INT64", "REPEATED") and got == [[1, 2], [3]]

    spec, got = convert_values(tmp_path, {"ns": 0}, [{"NS": ["1", "2.5"]}])
    assert spec.bq_type == "NUMERIC" and got == [[Decimal(1), Decimal("2.5")]]

    spec, got = convert_values(tmp_path, {"ns": 0}, [{"NS": ["1", "1" * 38]}])
    assert (spec.bq_type, spec.mode) == ("STRING", "REPEATED") and got == [["1", "1" * 38]]


def test_missing_attributes_are_null(tmp_path: Path) -> None:
    items = [
        {"pk": {"N": "1"}, "ns": {"NS": ["1", "2.5"]}, "b": {"B": "AQI="}},
        {"pk": {"N": "2"}},
        {"pk": {"N": "3"}, "ns": {"NS": ["7"]}},
    ]
    result = convert_full_export([write_items(tmp_path / "in.json.gz", items)], tmp_path / "o")
    got = sorted(rows(result), key=lambda r: r["pk"])
    assert got == [
        {"pk": 1, "ns": [Decimal(1), Decimal("2.5")], "b": b"\x01\x02"},
        {"pk": 2, "ns": None, "b": None},
        {"pk": 3, "ns": [Decimal(7)], "b": None},
    ]


def test_maps_and_lists_become_exact_json(tmp_path: Path) -> None:
    value = {
        "M": {
            "s": {"S": "x"},
            "int": {"N": "42"},
            "big": {"N": "1" * 38},
            "dec": {"N": "2.5"},
            "long_dec": {"N": "0.10000000000000000001"},
            "b": {"B": "AQID"},
            "ss": {"SS": ["a", "b"]},
            "ns": {"NS": ["1", "12345678901234567890"]},
            "bs": {"BS": ["AQI="]},
            "null": {"NULL": True},
            "bool": {"BOOL": False},
            "l": {"L": [{"S": "in list"}, {"M": {"deep": {"N": "-0"}}}]},
        }
    }
    spec, got = convert_values(tmp_path, {"m": 0}, [value, {"L": [{"N": "1"}]}])
    assert spec.bq_type == "JSON"
    assert json.loads(got[0]) == {
        "s": "x",
        "int": 42,
        "big": "1" * 38,
        "dec": 2.5,
        "long_dec": "0.10000000000000000001",
        "b": "AQID",
        "ss": ["a", "b"],
        "ns": [1, "12345678901234567890"],
        "bs": ["AQI="],
        "null": None,
        "bool": False,
        "l": ["in list", {"deep": 0}],
    }
    assert json.loads(got[1]) == [1]


def test_mixed_type_attribute_becomes_json(tmp_path: Path) -> None:
    values = [
        {"S": "text"},
        {"N": "7"},
        {"N": "1" * 38},
        {"BOOL": True},
        {"B": "AQID"},
        {"SS": ["a"]},
        {"NS": ["1.5"]},
        {"M": {"k": {"S": "v"}}},
        {"NULL": True},
    ]
    spec, got = convert_values(tmp_path, {"x": 0}, values)
    assert spec.bq_type == "JSON"
    decoded = [None if g is None else json.loads(g) for g in got]
    assert decoded == ["text", 7, "1" * 38, True, "AQID", ["a"], [1.5], {"k": "v"}, None]


def test_mixed_types_across_batches_and_files(tmp_path: Path) -> None:
    first = write_items(tmp_path / "a.json.gz", [{"pk": {"S": "a"}, "x": {"N": "1"}}] * 3)
    second = write_items(tmp_path / "b.json.gz", [{"pk": {"S": "b"}, "x": {"N": "1.25"}}] * 2)
    third = write_items(tmp_path / "c.json.gz", [{"pk": {"S": "c"}, "x": {"S": "one"}}])
    result = convert_full_export([first, second], tmp_path / "o1", batch_size=2, max_workers=2)
    assert column(result, "x").bq_type == "NUMERIC"
    assert sorted(r["x"] for r in rows(result)) == [Decimal(1)] * 3 + [Decimal("1.25")] * 2
    schemas = {pq.read_schema(p).to_string() for p in result.parquet_files}
    assert len(result.parquet_files) == 2 and len(schemas) == 1  # one per input file

    result = convert_full_export([first, third], tmp_path / "o2", batch_size=2, max_workers=2)
    assert column(result, "x").bq_type == "JSON"
    assert sorted(r["x"] for r in rows(result)) == ['"one"', "1", "1", "1"]


def test_column_names_collisions_keep_source_names(tmp_path: Path) -> None:
    names = ["Name", "name", "a-b", "a_b", "1st", "_TABLE_x", "ünï"]
    item = {n: {"S": n} for n in names}
    result = convert_full_export([write_items(tmp_path / "in.json.gz", [item])], tmp_path / "o")
    expected = assign_columns(names, {}, reserved=("_exported_at",))
    assert {c.source_name: c.name for c in result.columns} == expected
    # Readable; a suffix only where two would collide (the valid name keeps its spelling).
    assert expected["Name"] == "Name" and expected["name"].startswith("name_")
    assert expected["a_b"] == "a_b" and expected["a-b"].startswith("a_b_")
    readable = (expected["1st"], expected["_TABLE_x"], expected["ünï"])
    assert readable == ("_1st", "src_TABLE_x", "uni")
    assert len({c.name.lower() for c in result.columns}) == len(names)
    (row,) = rows(result)
    assert {source: row[bq] for source, bq in expected.items()} == {n: n for n in names}
    assert all(repr(c.source_name) in c.description for c in result.columns)


def test_deep_nesting_and_400kb_item(tmp_path: Path) -> None:
    deep: dict = {"S": "bottom"}
    for level in range(31):
        deep = {"M": {f"l{level}": deep}} if level % 2 else {"L": [deep]}
    big = "x" * 399_000
    items = [{"pk": {"N": "1"}, "deep": deep, "big": {"S": big}}]
    result = convert_full_export([write_items(tmp_path / "in.json.gz", items)], tmp_path / "o")
    (row,) = rows(result)
    assert row["big"] == big
    value = json.loads(row["deep"])
    for level in reversed(range(31)):
        value = value[f"l{level}"] if level % 2 else value[0]
    assert value == "bottom"


# -- files, errors ------------------------------------------------------------------------


def test_full_export_sample(tmp_path: Path, aws_samples: AwsSamples) -> None:
    files = sorted(aws_samples.dynamodb_full.rglob("data/*.json.gz"))
    result = convert_full_export(files, tmp_path / "o")
    manifest = aws_samples.dynamodb_full.rglob("manifest-files.json")
    expected = {
        e["dataFileS3Key"].rsplit("/", 1)[-1]: e["itemCount"]
        for m in manifest
        for e in map(json.loads, m.read_text().splitlines())
    }
    assert {Path(p).name: n for p, n in result.items_per_file.items()} == expected
    assert result.item_count == sum(expected.values()) == 3
    assert result.bytes_read == sum(f.stat().st_size for f in files)
    types = {c.source_name: (c.bq_type, c.mode) for c in result.columns}
    assert types == {
        "orderId": ("STRING", "NULLABLE"),
        "customer": ("STRING", "NULLABLE"),
        "total": ("NUMERIC", "NULLABLE"),
        "paid": ("BOOL", "NULLABLE"),
        "lines": ("JSON", "NULLABLE"),
        "tags": ("STRING", "REPEATED"),
        "note": ("STRING", "NULLABLE"),
        "sig": ("BYTES", "NULLABLE"),
        "scores": ("NUMERIC", "REPEATED"),
        "meta": ("JSON", "NULLABLE"),
    }
    by_id = {r["orderId"]: r for r in rows(result)}
    assert by_id["o-1003"]["total"] == Decimal("12345678901234567890.123")
    assert json.loads(by_id["o-1003"]["meta"]) == {"source": "web", "ab": ["/w=="]}
    assert json.loads(by_id["o-1001"]["lines"]) == [
        {"sku": "A1", "qty": 2},
        {"sku": "B7", "qty": 1},
    ]
    assert by_id["o-1002"]["sig"] == b"\x01\x02\x03"
    assert by_id["o-1002"]["scores"] == [Decimal(1), Decimal("2.5")]
    # One schema for every file, equal to `columns`.
    for path in result.parquet_files:
        schema = pq.read_schema(path)
        assert schema.names == [c.name for c in result.columns]


def test_incremental_export_sample(tmp_path: Path, aws_samples: AwsSamples) -> None:
    files = sorted(aws_samples.dynamodb_incremental.rglob("data/*.json.gz"))
    result = convert_incremental_export(files, tmp_path / "o", key_attributes=["orderId"])
    assert result.item_count == 3
    assert result.columns[0].name == "orderId"
    assert [c.name for c in result.columns][-2:] == [DELETED_COLUMN, "_write_timestamp_micros"]
    assert [c.source_name for c in result.columns][-2:] == [None, None]
    got = {r["orderId"]: r for r in rows(result)}
    assert got["o-1002"] == {
        "orderId": "o-1002",
        "customer": "c-2",
        "total": 7,
        "paid": True,
        DELETED_COLUMN: False,
        "_write_timestamp_micros": 1764117000000000,
    }
    assert got["o-1003"][DELETED_COLUMN] is True and got["o-1003"]["customer"] is None
    assert got["o-1003"]["_write_timestamp_micros"] == 1764117300000000
    assert got["o-1004"][DELETED_COLUMN] is False and got["o-1004"]["total"] == 42


def test_incremental_attribute_named_like_converter_column(tmp_path: Path) -> None:
    line = {
        "Metadata": {"WriteTimestampMicros": {"N": "5"}},
        "Keys": {"id": {"S": "k"}},
        "NewImage": {
            "id": {"S": "k"},
            "_deleted": {"S": "mine"},
            "_write_timestamp_micros": {"S": "also mine"},
        },
    }
    path = tmp_path / "in.json.gz"
    path.write_bytes(gzip.compress(orjson.dumps(line) + b"\n"))
    result = convert_incremental_export([path], tmp_path / "o", key_attributes=["id"])
    # `_deleted` is free (the converter's flag has the internal prefix); the
    # converter's own `_write_timestamp_micros` is not.
    assert column(result, "_deleted").name == "_deleted"
    mine = column(result, "_write_timestamp_micros").name
    assert mine == "src_write_timestamp_micros"
    (row,) = rows(result)
    assert row["_deleted"] == "mine" and row[DELETED_COLUMN] is False
    assert row[mine] == "also mine" and row["_write_timestamp_micros"] == 5


def test_incremental_missing_key_names_file_and_line(tmp_path: Path) -> None:
    good = {"Metadata": {"WriteTimestampMicros": {"N": "5"}}, "Keys": {"id": {"S": "k"}}}
    bad = {"Metadata": {"WriteTimestampMicros": {"N": "6"}}, "Keys": {"other": {"S": "k"}}}
    path = tmp_path / "in.json.gz"
    path.write_bytes(gzip.compress(orjson.dumps(good) + b"\n" + orjson.dumps(bad) + b"\n"))
    with pytest.raises(ConversionError, match=r"in\.json\.gz, line 2: .*'id'"):
        convert_incremental_export([path], tmp_path / "o", key_attributes=["id"])


def test_zero_byte_and_empty_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json.gz"
    empty.write_bytes(b"")
    empty_gzip = tmp_path / "empty-gzip.json.gz"
    empty_gzip.write_bytes(gzip.compress(b""))
    one = write_items(tmp_path / "one.json.gz", [{"pk": {"S": "a"}}])
    result = convert_full_export([empty, empty_gzip, one], tmp_path / "o")
    assert result.items_per_file == {str(empty): 0, str(empty_gzip): 0, str(one): 1}
    assert rows(result) == [{"pk": "a"}]
    nothing = convert_full_export([empty], tmp_path / "o2")
    assert (nothing.item_count, nothing.parquet_files, nothing.columns) == (0, [], [])


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.json.gz"
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(ConversionError, match=r"corrupt\.json\.gz.*corrupt gzip") as info:
        convert_full_export([path], tmp_path / "o")
    assert info.value.path == str(path)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    whole = gzip.compress(
        b"".join(orjson.dumps({"Item": {"n": {"N": str(i)}}}) + b"\n" for i in range(2000))
    )
    path = tmp_path / "cut.json.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ConversionError, match=r"cut\.json\.gz.*truncated"):
        convert_full_export([path], tmp_path / "o", max_workers=1)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b'{"NotItem": {}}', "missing 'Item'"),
        (b'{"Item": {"a": {"S": "x", "N": "1"}}}', "exactly one type descriptor"),
        (b'{"Item": {"a": {"Q": "x"}}}', "unknown DynamoDB type descriptor"),
        (b'{"Item": {"a": {"N": "12abc"}}}', "invalid number"),
        (
            b'{"Item": {"a": {"N": "1E+126"}}}',
            "invalid number '1E\\+126': outside DynamoDB's range",
        ),
        (b'{"Item": {"a": {"L": [{"N": "1E999999999"}]}}}', "1E999999999.*outside DynamoDB's"),
        (b'{"Item": {"a": {"M": {"k": {"N": "1e11111111111111111111"}}}}}', "exponent out of"),
        (b'{"Item": {"a": {"B": "***"}}}', "invalid base64"),
        (b'{"Item": {"a": {"S": "\xe2\x98u\x95"}}}', "invalid JSON"),  # not UTF-8
        (b'{"Item": {"a": {"M": {"k": {"SS": ["\xff"]}}}}}', "invalid JSON"),
        (b'{"Item": {"a": {"S": "\\ud800"}}}', "invalid JSON"),  # a lone surrogate
    ],
)
def test_invalid_line_names_file_and_line(tmp_path: Path, line: bytes, message: str) -> None:
    good = b'{"Item": {"a": {"N": "1"}}}\n'
    path = tmp_path / "bad.json.gz"
    path.write_bytes(gzip.compress(good * 2 + line + b"\n" + good))
    with pytest.raises(ConversionError, match=rf"bad\.json\.gz, line 3: .*{message}") as info:
        convert_full_export([path], tmp_path / "o", max_workers=1)
    assert info.value.line == 3


def test_parallel_threads_match_single_worker(tmp_path: Path) -> None:
    items = [
        {"pk": {"S": f"k{i}"}, "n": {"N": str(i * 7)}, "m": {"M": {"i": {"N": str(i)}}}}
        for i in range(1000)
    ]
    path = write_items(tmp_path / "in.json.gz", items)
    one = convert_full_export([path], tmp_path / "o1", batch_size=1000, max_workers=1)
    two = convert_full_export([path], tmp_path / "o2", batch_size=64, max_workers=2)
    assert one.columns == two.columns
    assert rows(one) == rows(two)
    assert two.item_count == 1000
    # One output file per worker, one row group per batch, rows in input order.
    groups = [pq.ParquetFile(p).metadata.num_row_groups for p in two.parquet_files]
    assert len(groups) == 2 and sum(groups) == 16
    assert [r["pk"] for r in rows(two)] == [f"k{i}" for i in range(1000)]


def test_incremental_worker_processes_match_single_worker(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(run, "PARALLEL_MIN_BYTES", 0)  # real worker processes
    changes = [
        {
            "Metadata": {"WriteTimestampMicros": {"N": str(1000 + i)}},
            "Keys": {"id": {"S": f"k{i % 50}"}},
            **({"NewImage": {"id": {"S": f"k{i % 50}"}, "n": {"N": str(i)}}} if i % 3 else {}),
        }
        for i in range(400)
    ]
    path = tmp_path / "in.json.gz"
    path.write_bytes(gzip.compress(b"".join(orjson.dumps(c) + b"\n" for c in changes)))
    one = convert_incremental_export([path], tmp_path / "o1", key_attributes=["id"], max_workers=1)
    two = convert_incremental_export(
        [path], tmp_path / "o2", key_attributes=["id"], batch_size=30, max_workers=2
    )
    assert one.columns == two.columns
    assert rows(one) == rows(two) and len(rows(two)) == 400
    assert [r[DELETED_COLUMN] for r in rows(two)] == [i % 3 == 0 for i in range(400)]


def test_batches_cut_by_bytes_keep_line_numbers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(read, "MAX_BATCH_BYTES", 300)
    monkeypatch.setattr(read, "DECOMPRESSED_CHUNK", 100)
    lines = [
        orjson.dumps({"Item": {"pk": {"N": str(i)}, "s": {"S": "x" * (i % 37)}}})
        for i in range(200)
    ]
    lines[150] = b'{"Item": {"pk": {"N": "150"}, "s": {"S": 5}}}'
    # Two gzip members, the second without a final line end.
    data = gzip.compress(b"\n".join(lines[:90]) + b"\n") + gzip.compress(b"\n".join(lines[90:]))
    path = tmp_path / "in.json.gz"
    path.write_bytes(data)
    blobs = list(read.blobs(path, batch_size=7))
    assert b"".join(b.data for b in blobs) == gzip.decompress(data)
    assert len(blobs) > 200 // 7 + 1  # some batches were cut by size, not by count
    line = 1
    for blob in blobs:
        assert blob.first_line == line and 1 <= blob.rows <= 7
        assert blob.data.rstrip(b"\n").split(b"\n") == lines[line - 1 : line - 1 + blob.rows]
        line += blob.rows
    assert line == 201
    with pytest.raises(ConversionError, match=r"in\.json\.gz, line 151: ") as info:
        convert_full_export([path], tmp_path / "o", batch_size=7, max_workers=2)
    assert info.value.line == 151


def test_batches_exceed_the_byte_limit_by_at_most_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(read, "MAX_BATCH_BYTES", 64)
    monkeypatch.setattr(read, "DECOMPRESSED_CHUNK", 16)
    lines = [b"x" * (i % 23) for i in range(120)]
    lines[40] = b"y" * 150  # longer than a batch and than several chunks
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / "in.json.gz"
    path.write_bytes(gzip.compress(data))
    blobs = list(read.blobs(path, batch_size=1000))
    assert b"".join(b.data for b in blobs) == data
    line = 1
    for blob in blobs:
        assert blob.data.endswith(b"\n") and blob.first_line == line
        assert blob.rows == blob.data.count(b"\n")
        last_line = blob.data[:-1].rsplit(b"\n", 1)[-1] + b"\n"
        assert len(blob.data) - len(last_line) < 64
        line += blob.rows
    assert line == 121 and any(b.data.endswith(b"\n" + b"y" * 150 + b"\n") for b in blobs)


def test_base64_columnar_decoding_matches_binascii() -> None:
    from export_pipeline.dynamodb.convert.values import ValueError_, decode_base64_array

    values = [base64.b64encode(bytes(range(n % 256)) * (n // 7 + 1)).decode() for n in range(300)]
    values += ["", None, "AB==", "AAB=", "////", "+/+/"]
    texts = pa.array(values, pa.string())
    expected = [None if v is None else binascii.a2b_base64(v, strict_mode=True) for v in values]
    assert decode_base64_array(texts).to_pylist() == expected
    assert decode_base64_array(texts.slice(5, 50)).to_pylist() == expected[5:55]
    for bad in ["AB=", "A===", "====", "AA=A", "AA==AAAA", "A\nAA", "AAAA====", "éé"]:
        with pytest.raises(ValueError_):  # the per-line path then decides exactly
            decode_base64_array(pa.array(["QUJD", bad], pa.string()))


def test_number_shapes_match_their_patterns() -> None:
    import random
    import re

    from export_pipeline.dynamodb.convert.values import NumberShapes

    rng = random.Random(5)
    alphabet = "0123456789-.eE+ x"
    texts = ["", "0", "-0", "00", "-", ".", "1.", ".5", "-.5", "1.5", "-1.5", "1..2", "1-2"]
    texts += ["9" * n for n in (15, 16, 18, 19, 29, 30)] + ["1." + "5" * n for n in (9, 10)]
    texts += ["1" * 29 + ".1", "1" * 30 + ".1", "é1", "1é", "12345678901234567890"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(3000)]
    texts += [str(rng.randint(-(10**20), 10**20)) for _ in range(500)]
    values = [*texts, None, "1"]
    patterns = {
        "int64_like": r"-?[0-9]{1,18}",
        "numeric_like": r"-?[0-9]{1,29}\.[0-9]{1,9}",
        "json_integer": r"0|-?[1-9][0-9]{0,14}",
        "plain_decimal": r"-?(0|[1-9][0-9]*)\.[0-9]+",
    }
    for array, expected in (
        (pa.array(values), values),
        (pa.array(values).slice(3, 600), values[3:603]),
    ):
        shapes = NumberShapes(array)
        for method, pattern in patterns.items():
            got = getattr(shapes, method)().tolist()
            want = [v is not None and re.fullmatch(pattern, v) is not None for v in expected]
            assert got == want, method


def test_timestamp_like_strings_are_parsed_once_per_batch(tmp_path: Path, monkeypatch) -> None:
    from export_pipeline.dynamodb.convert import parse_arrow

    calls = []
    read_json = parse_arrow.pj.read_json

    def counting(*args, **kwargs):
        calls.append(1)
        return read_json(*args, **kwargs)

    monkeypatch.setattr(parse_arrow.pj, "read_json", counting)
    items = [
        {
            "pk": {"N": str(i)},
            "at": {"S": f"2024-01-0{i % 9 + 1}T10:00:00"},
            "d": {"S": "2024-02-03"},
        }
        for i in range(8)
    ]
    result = convert_full_export(
        [write_items(tmp_path / "in.json.gz", items)], tmp_path / "o", batch_size=2, max_workers=1
    )
    got = {row["pk"]: (row["at"], row["d"]) for row in rows(result)}
    assert got == {i: (f"2024-01-0{i % 9 + 1}T10:00:00", "2024-02-03") for i in range(8)}
    if read.NATIVE_ENABLED:
        assert calls == []  # the native parser reads strings as strings
    elif read.COLUMNAR_ENABLED:
        assert len(calls) == 4 + 1  # the first batch twice (inferred, then as text), then once


def _random_item(rng, index: int) -> dict:
    """An item of varied shapes: sparse attributes, maps with all or some keys, escapes."""
    texts = ["plain", 'quote "q"', "back\\slash", "line\nend", "tab\t", "é ☕", "\u0001", ""]
    numbers = ["0", "-7", "12345678901234567890", "1.5", "0.1", "-0", "1E+2", "3.14159", "1e-130"]
    blob = base64.b64encode(rng.randbytes(rng.randint(0, 9))).decode()
    item = {"pk": {"N": str(index)}}
    if rng.random() < 0.8:
        item["s"] = {"S": rng.choice(texts)}
    if rng.random() < 0.8:
        item["n"] = {"N": rng.choice(numbers[:4])}
    if rng.random() < 0.7:
        item["b"] = {"B": blob}
    if rng.random() < 0.5:
        item["bs"] = {"BS": [blob, base64.b64encode(b"x").decode()]}
    full_map = {"city": {"S": rng.choice(texts)}, "zip": {"N": rng.choice(numbers)}}
    if rng.random() < 0.5:
        full_map["lines"] = {"L": [{"S": rng.choice(texts)}, {"N": rng.choice(numbers)}]}
    item["m"] = {"M": full_map}
    if rng.random() < 0.6:
        some = {"k": {"BOOL": rng.random() < 0.5}, "n": {"NULL": True}, "b": {"B": blob}}
        item["sparse"] = {"M": {k: v for k, v in some.items() if rng.random() < 0.6}}
    if rng.random() < 0.5:
        item["ns"] = {"NS": rng.sample(numbers[:4], 2)}
    return item


def test_columnar_and_per_line_agree_on_varied_items(tmp_path: Path, monkeypatch) -> None:
    import random

    rng = random.Random(7)
    items = [_random_item(rng, i) for i in range(600)]
    path = write_items(tmp_path / "in.json.gz", items)
    _assert_native_applies(items)
    results = _results_by_path(
        monkeypatch, lambda name: convert_full_export([path], tmp_path / name, batch_size=100)
    )
    assert results["native"] == results["per-line"]
    assert results["columnar"] == results["per-line"]
    by_pk = {row["pk"]: row for row in results["native"][1]}
    assert set(by_pk[0]["m"]) >= {"city", "zip"}


# (name, NATIVE_ENABLED, COLUMNAR_ENABLED): each full-export path on its own.
PATHS = [("native", True, True), ("columnar", False, True), ("per-line", False, False)]


def _assert_native_applies(items: list[dict]) -> None:
    """The native parser accepts these items itself (no silent fallback to a slower path)."""
    from export_pipeline.dynamodb.convert import parse_native

    assert parse_native.AVAILABLE, NOT_BUILT
    blob = b"\n".join(orjson.dumps({"Item": item}) for item in items) + b"\n"
    assert parse_native.raw_columns(blob, len(items)) is not None


def test_incremental_paths_agree_on_varied_changes(tmp_path: Path, monkeypatch) -> None:
    """Deletes, NewImages without their key, OldImages, extra members, any member order."""
    import random

    from export_pipeline.dynamodb.convert import parse_native

    rng = random.Random(11)
    lines = []
    for i in range(400):
        item = _random_item(rng, i)
        record: dict = {
            "Metadata": {"WriteTimestampMicros": {"N": str(1_700_000_000_000_000 + i)}},
            "Keys": {"pk": item["pk"]},
        }
        draw = rng.random()
        if draw < 0.7:
            record["NewImage"] = item
        elif draw < 0.85:
            record["NewImage"] = {k: v for k, v in item.items() if k != "pk"}
        if rng.random() < 0.3:
            record["OldImage"] = _random_item(rng, i)
        order = list(record)
        rng.shuffle(order)
        lines.append(orjson.dumps({k: record[k] for k in order}))
    blob = b"\n".join(lines) + b"\n"
    assert parse_native.change_columns(blob, len(lines), ("pk",)) is not None
    path = tmp_path / "changes.json.gz"
    path.write_bytes(gzip.compress(blob))
    results = _results_by_path(
        monkeypatch,
        lambda name: convert_incremental_export(
            [path], tmp_path / name, key_attributes=["pk"], batch_size=100, max_workers=1
        ),
    )
    assert results["native"] == results["per-line"]
    deleted = [row[DELETED_COLUMN] for row in results["native"][1]]
    assert 0 < sum(deleted) < len(deleted)


def _results_by_path(monkeypatch, convert) -> dict[str, tuple[list, list[dict]]]:
    """{path name: (columns, rows)} of `convert(name)` run through each path alone;
    JSON values compared as values with exact number texts (key order may differ)."""
    results = {}
    for name, native, columnar in PATHS:
        monkeypatch.setattr(read, "NATIVE_ENABLED", native)
        monkeypatch.setattr(read, "COLUMNAR_ENABLED", columnar)
        result = convert(name)
        json_columns = {c.name for c in result.columns if c.bq_type == "JSON"}
        results[name] = (
            result.columns,
            [
                {k: _exact_json(v) if k in json_columns else v for k, v in row.items()}
                for row in rows(result)
            ],
        )
    return results


def _exact_json(text: str | None):
    """JSON text -> value with numbers kept as their text (key order may differ)."""
    return None if text is None else json.loads(text, parse_int=str, parse_float=str)


def test_full_export_does_not_import_pandas(tmp_path: Path) -> None:
    """pyarrow imports pandas when given plain Python values (about a second and 40 MB
    in a process without it); the converter's columnar path never does."""
    import random
    import subprocess
    import sys

    rng = random.Random(3)
    path = write_items(tmp_path / "in.json.gz", [_random_item(rng, i) for i in range(300)])
    script = (
        "import sys; from pathlib import Path\n"
        "from export_pipeline.dynamodb.convert import convert_full_export\n"
        f"result = convert_full_export([Path({str(path)!r})], Path({str(tmp_path / 'o')!r}))\n"
        "assert result.item_count == 300\n"
        "print('pandas' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"


def test_rerun_replaces_previous_output(tmp_path: Path) -> None:
    path = write_items(tmp_path / "in.json.gz", [{"pk": {"S": str(i)}} for i in range(10)])
    convert_full_export([path], tmp_path / "o", batch_size=2)
    result = convert_full_export([path], tmp_path / "o", batch_size=5)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(
        p.name for p in result.parquet_files
    )
    assert len(rows(result)) == 10


RICH_ITEMS = [
    {
        "pk": {"S": "a"},
        "when": {"S": "2024-01-01T10:00:00"},
        "n": {"N": "1.5"},
        "m": {
            "M": {
                "quote": {"S": 'say "hi" \\ \n\t\u0001'},
                "when": {"S": "2024-01-01"},
                "nums": {"L": [{"N": "-0"}, {"N": "0.1"}, {"N": "1" * 38}, {"N": "1E-130"}]},
                "empty_map": {"M": {}},
                "empty_list": {"L": []},
                "sets": {
                    "L": [{"SS": ["x", "\U0001f600"]}, {"NS": ["1", "2.25"]}, {"BS": ["AQI="]}]
                },
                "b": {"B": "/w=="},
                "null": {"NULL": True},
                "bool": {"BOOL": True},
                'odd "key"\n': {"S": "v"},
            }
        },
        "l": {"L": [{"M": {"k": {"N": "12345678901234567890"}}}, {"L": [{"BOOL": False}]}]},
        "ss": {"SS": ["é", "\\"]},
    },
    {"pk": {"S": "b"}, "m": {"M": {"other": {"S": "only here"}}}, "l": {"L": []}},
    {"pk": {"S": "c"}},
]


def test_columnar_path_applies_and_matches_per_line(tmp_path: Path, monkeypatch) -> None:
    from export_pipeline.dynamodb.convert.parse_arrow import raw_columns

    blob = b"\n".join(orjson.dumps({"Item": item}) for item in RICH_ITEMS)
    assert raw_columns(blob, len(RICH_ITEMS)) is not None  # no silent fallback for valid data
    _assert_native_applies(RICH_ITEMS)
    path = write_items(tmp_path / "in.json.gz", RICH_ITEMS)
    results = {}
    for name, native, columnar in PATHS:
        monkeypatch.setattr(read, "NATIVE_ENABLED", native)
        monkeypatch.setattr(read, "COLUMNAR_ENABLED", columnar)
        result = convert_full_export([path], tmp_path / name)
        json_columns = {c.name for c in result.columns if c.bq_type == "JSON"}
        results[name] = (
            result.columns,
            [
                {
                    k: (json.loads(v) if k in json_columns and v is not None else v)
                    for k, v in row.items()
                }
                for row in rows(result)
            ],
        )
    assert results["native"] == results["per-line"]
    assert results["columnar"] == results["per-line"]
    _columns, got = results["native"]
    by_pk = {row["pk"]: row for row in got}
    assert by_pk["a"]["when"] == "2024-01-01T10:00:00"  # not re-formatted as a timestamp
    assert by_pk["a"]["m"]["quote"] == 'say "hi" \\ \n\t\u0001'
    assert by_pk["a"]["m"]["nums"] == [0, 0.1, "1" * 38, "1E-130"]
    assert by_pk["a"]["m"]["empty_map"] == {} and by_pk["a"]["m"]["empty_list"] == []
    assert by_pk["a"]["m"]['odd "key"\n'] == "v"
    assert by_pk["a"]["l"] == [{"k": "12345678901234567890"}, [False]]
    assert by_pk["b"]["l"] == [] and by_pk["c"]["m"] is None


@pytest.mark.parametrize(
    "item",
    [
        {"a": {"S": "x", "N": "1"}},  # two type descriptors
        {"a": {"Q": "x"}},  # unknown descriptor
        {"a": {"S": 5}},  # wrong JSON type
        {"a": {"M": {"k": {}}}},  # nested value without a descriptor
        {"a": {"L": [{"B": "***"}]}},  # invalid base64 inside a list
    ],
)
@pytest.mark.usefixtures("native_parser")
def test_columnar_and_native_paths_refuse_invalid_data(item: dict) -> None:
    from export_pipeline.dynamodb.convert import parse_native
    from export_pipeline.dynamodb.convert.parse_arrow import raw_columns

    good = orjson.dumps({"Item": {"a": {"S": "fine"}}})
    blob = good + b"\n" + orjson.dumps({"Item": item})
    assert parse_native.raw_columns(good, 1) is not None
    assert parse_native.raw_columns(blob, 2) is None
    assert raw_columns(blob, 2) is None
