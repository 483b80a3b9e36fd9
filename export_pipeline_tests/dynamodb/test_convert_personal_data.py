"""Personal data in the converter: excluded attributes never reach Parquet, hashed ones as HMAC.

Real gzip DynamoDB JSON in, real Parquet out, through every full-export path
(`conversion_path`) and the incremental one (NewImage, OldImage and Keys).
The expected digests are `hmac.new(key, text.encode(), sha256)` over the
documented text forms, computed here.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_pipeline.column_hashing import HashKey
from export_pipeline.dynamodb.convert import (
    PersonalData,
    convert_full_export,
    convert_incremental_export,
)
from export_pipeline_tests.dynamodb.test_convert import rows, write_items

pytestmark = pytest.mark.usefixtures("conversion_path")

SECRET = b"converter-test-key"
PII = PersonalData(
    excluded=frozenset({"name", "address"}),
    hashed=frozenset({"email", "age", "photo", "tags", "profile"}),
    key=HashKey(SECRET),
)


def digest(text: str) -> str:
    return hmac.new(SECRET, text.encode("utf-8"), hashlib.sha256).hexdigest()


def _item(i: int, email: str) -> dict:
    return {
        "pk": {"S": f"k{i}"},
        "name": {"S": f"Secret Name {i}"},
        "address": {"M": {"street": {"S": f"{i} Hidden Road"}}},
        "email": {"S": email},
        "age": {"N": "42.50" if i % 2 else "7"},
        "photo": {"B": base64.b64encode(bytes([i, 0, 255])).decode()},
        "tags": {"SS": ["a", "b"]},
        "profile": {"M": {"x": {"N": "1"}}},
        "kept": {"S": f"visible {i}"},
    }


def _all_bytes(paths: list[Path]) -> bytes:
    return b"".join(p.read_bytes() for p in paths)


def test_full_export_drops_excluded_and_hashes_hashed_attributes(tmp_path: Path) -> None:
    items = [_item(i, f"user{i}@example.com") for i in range(6)]
    items.append({"pk": {"S": "nulls"}, "email": {"NULL": True}})
    result = convert_full_export(
        [write_items(tmp_path / "in.json.gz", items)], tmp_path / "out", personal_data=PII
    )
    names = {c.source_name: c for c in result.columns}
    assert "name" not in names and "address" not in names
    for hashed in ("email", "age", "photo", "tags", "profile"):
        assert names[hashed].bq_type == "STRING" and names[hashed].mode == "NULLABLE"
        assert "hashed" in names[hashed].description
    by_pk = {r["pk"]: r for r in rows(result)}
    for i in range(6):
        row = by_pk[f"k{i}"]
        assert row["email"] == digest(f"user{i}@example.com")
        assert row["age"] == digest("42.5" if i % 2 else "7")
        assert row["photo"] == digest(base64.b64encode(bytes([i, 0, 255])).decode())
        assert row["tags"] == digest('["a","b"]')
        assert row["profile"] == digest('{"x":1}')
        assert row["kept"] == f"visible {i}"
    assert by_pk["nulls"]["email"] is None  # NULL stays NULL
    raw = _all_bytes(result.parquet_files)
    for i in range(6):  # zstd-compressed, but short strings would still show if present
        assert f"user{i}@example.com".encode() not in raw
        assert b"Secret Name" not in raw and b"Hidden Road" not in raw
    text = str([pq.read_table(p).to_pylist() for p in result.parquet_files])
    assert "example.com" not in text and "Secret" not in text and "Hidden" not in text


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=15))
def test_hostile_strings_hash_exactly_in_incremental_images_and_keys(
    tmp_path_factory, values: list[str]
) -> None:
    tmp_path = tmp_path_factory.mktemp("inc")
    pii = PersonalData(frozenset({"name"}), frozenset({"email", "pk"}), HashKey(SECRET))
    changes = []
    for i, value in enumerate(values):
        keys = {"pk": {"S": f"k{i}"}}
        meta = {"WriteTimestampMicros": {"N": str(1_700_000_000_000_000 + i)}}
        if i % 3 == 2:  # a delete: Keys and OldImage only
            old = {**keys, "email": {"S": value}, "name": {"S": value}}
            changes.append({"Metadata": meta, "Keys": keys, "OldImage": old})
        else:
            new = {**keys, "email": {"S": value}, "name": {"S": "N " + value}}
            changes.append({"Metadata": meta, "Keys": keys, "NewImage": new, "OldImage": new})
    path = tmp_path / "inc.json.gz"
    path.write_bytes(gzip.compress(b"".join(orjson.dumps(c) + b"\n" for c in changes)))
    result = convert_incremental_export(
        [path], tmp_path / "out", key_attributes=["pk"], personal_data=pii
    )
    assert "name" not in {c.source_name for c in result.columns}
    got = sorted((r["pk"], r["email"]) for r in rows(result))
    want = sorted(
        (digest(f"k{i}"), None if i % 3 == 2 else digest(v)) for i, v in enumerate(values)
    )
    assert got == want


def test_a_key_attribute_cannot_be_excluded(tmp_path: Path) -> None:
    path = write_items(tmp_path / "in.json.gz", [{"pk": {"S": "a"}}], key="NewImage")
    with pytest.raises(ValueError, match=r"key attribute.*pk.*cannot be excluded"):
        convert_incremental_export(
            [path],
            tmp_path / "out",
            key_attributes=["pk"],
            personal_data=PersonalData(excluded=frozenset({"pk"})),
        )
