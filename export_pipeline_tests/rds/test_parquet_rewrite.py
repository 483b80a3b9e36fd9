"""A Parquet file that must be renamed is copied in batches: exact values, bounded memory."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from export_pipeline.column_hashing import HashKey
from export_pipeline.rds.parquet_rewrite import Rewrite, rewrite, rewrite_renamed

_SCHEMA = pa.schema(
    [
        ("order id", pa.int64()),
        ("amount", pa.decimal128(38, 10)),
        ("name", pa.string()),
        ("raw-bytes", pa.binary()),
        ("created", pa.timestamp("us", tz="UTC")),
        ("ratio", pa.float64()),
    ]
)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.none() | st.integers(-(2**63), 2**63 - 1),
            st.none() | st.decimals(-(10**27), 10**27, places=10, allow_nan=False),
            st.none() | st.text(max_size=20),
            st.none() | st.binary(max_size=20),
            st.none() | st.datetimes(timezones=st.just(dt.UTC)),
            st.none() | st.floats(allow_nan=False),
        ),
        max_size=40,
    ),
    st.integers(1, 7),
)
def test_the_copy_holds_the_same_values_and_types_under_the_new_names(rows, row_group) -> None:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in _SCHEMA]
    table = pa.Table.from_arrays(
        [pa.array(list(c), f.type) for c, f in zip(columns, _SCHEMA, strict=True)],
        schema=_SCHEMA,
    )
    source, target = io.BytesIO(), io.BytesIO()
    pq.write_table(table, source, row_group_size=row_group, store_schema=False)
    source.seek(0)
    renames = {"order id": "order_id", "raw-bytes": "raw_bytes"}
    assert rewrite_renamed(source, target, renames) == len(rows)
    target.seek(0)
    copied = pq.read_table(target)
    assert copied.column_names == ["order_id", "amount", "name", "raw_bytes", "created", "ratio"]
    original = pq.read_table(io.BytesIO(source.getvalue()))
    assert copied.schema.types == original.schema.types
    assert copied.rename_columns(original.column_names).equals(original)
    if rows and rows[0][1] is not None:
        assert copied.column("amount")[0].as_py() == Decimal(rows[0][1])


_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from export_pipeline.rds.parquet_rewrite import rewrite_renamed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(sys.argv[1], "rb") as source, open(sys.argv[2], "wb") as target:
        rows = rewrite_renamed(source, target, {"bad name": "bad_name"})
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "growth_kib": after - before}))
    """
)


def test_a_parquet_bomb_is_copied_within_the_memory_bound(tmp_path: Path) -> None:
    """A few KB standing for 256 MiB (256 copies of one 1 MiB value) is copied in a few MiB.

    Run in a fresh process, so that its peak RSS is the copy's alone. Read whole,
    the file takes the 256 MiB (and its copy as much again).
    """
    copies, value = 256, "v" * (1 << 20)
    column = pa.DictionaryArray.from_arrays(pa.array([0] * copies, pa.int32()), pa.array([value]))
    bomb = tmp_path / "bomb.parquet"
    # Without an Arrow schema, as AWS writes: a reader sees plain strings.
    table = pa.table({"bad name": column, "n": pa.array(range(copies))})
    pq.write_table(table, bomb, store_schema=False)
    assert bomb.stat().st_size < 64 << 10
    child = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(bomb), str(tmp_path / "copy.parquet")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["rows"] == copies
    assert report["growth_kib"] < 32 << 10, report  # 32 MiB: a batch, not the file
    copy = pq.ParquetFile(tmp_path / "copy.parquet")
    assert copy.schema_arrow.names == ["bad_name", "n"] and copy.metadata.num_rows == copies
    first = next(copy.iter_batches(batch_size=1))
    assert first.column(0)[0].as_py() == value


def _digest(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.none() | st.text(max_size=30),
            st.none() | st.text(max_size=30),
            st.none() | st.text(max_size=10),
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 7),
)
def test_excluded_columns_are_left_out_and_hashed_ones_hold_the_hmac(rows, row_group) -> None:
    """The copy BigQuery loads holds no excluded column and no plaintext of a hashed one."""
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("email", pa.string()),
            ("name", pa.string()),
            ("country", pa.binary()),  # MySQL CHAR, as AWS writes it
        ]
    )
    ids, emails, names, countries = (list(c) for c in zip(*rows, strict=True))
    table = pa.table(
        [
            pa.array(ids, pa.int64()),
            pa.array(emails, pa.string()),
            pa.array(names, pa.string()),
            pa.array([None if c is None else c.encode() for c in countries], pa.binary()),
        ],
        schema=schema,
    )
    source, target = io.BytesIO(), io.BytesIO()
    pq.write_table(table, source, row_group_size=row_group, store_schema=False)
    source.seek(0)
    key = b"rewrite-key"
    change = Rewrite(
        renames={"country": "country_code"},
        dropped={"name"},
        hashed={"email", "country", "id"},
        bytes_are_text={"country"},
        hash_key=HashKey(key),
    )
    assert rewrite(source, target, change) == len(rows)
    target.seek(0)
    copied = pq.read_table(target)
    assert copied.schema.names == ["id", "email", "country_code"]
    assert all(f.type == pa.string() for f in copied.schema)
    assert copied.column("id").to_pylist() == [_digest(key, str(i)) for i in ids]
    assert copied.column("email").to_pylist() == [
        None if e is None else _digest(key, e) for e in emails
    ]
    assert copied.column("country_code").to_pylist() == [
        None if c is None else _digest(key, c) for c in countries
    ]
