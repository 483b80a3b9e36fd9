"""Property: converting files apart with a plan merged over groups equals one conversion.

However the data files of an export are split into groups, learning each
group's types (`learn_file_types`), merging them (`merge_observed`,
`plan_columns`) and converting each file with that plan
(`convert_file_with_plan`) gives the columns and values of converting all
files in one process (`convert_full_export`).
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_pipeline.dynamodb.column_names import RecordedColumns
from export_pipeline.dynamodb.convert import convert_full_export
from export_pipeline.dynamodb.convert.run import (
    convert_file_with_plan,
    learn_file_types,
    merge_observed,
    plan_columns,
)

VALUES = st.one_of(
    st.integers(-(10**20), 10**20).map(lambda n: {"N": str(n)}),
    st.sampled_from(["0.5", "1E+3", "-12.25", "1E-130"]).map(lambda n: {"N": n}),
    st.text(max_size=5).map(lambda s: {"S": s}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.lists(st.integers(0, 99).map(str), min_size=1, max_size=3, unique=True).map(
        lambda ns: {"NS": ns}
    ),
)
ITEM = st.dictionaries(st.sampled_from(["a", "b", "c", "Ä"]), VALUES, max_size=3)
FILES = st.lists(st.lists(ITEM, max_size=6), min_size=1, max_size=5)


def _write(folder: Path, files: list[list[dict]]) -> list[Path]:
    paths, key = [], 0
    for number, items in enumerate(files):
        lines = []
        for item in items:
            lines.append(json.dumps({"Item": {"pk": {"S": f"k{key:04d}"}, **item}}))
            key += 1
        path = folder / f"{number:05d}.json.gz"
        path.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode()))
        paths.append(path)
    return paths


def _rows(parquet: list[Path]) -> tuple[pa.Schema | None, list[dict]]:
    tables = [pq.read_table(p) for p in parquet]
    if not tables:
        return None, []
    rows = pa.concat_tables(tables).to_pylist()
    return tables[0].schema, sorted(rows, key=lambda row: row["pk"])


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=FILES, files_per_step=st.integers(1, 3))
def test_groups_apart_equal_one_conversion(files: list[list[dict]], files_per_step: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        paths = _write(root, files)
        whole = convert_full_export(paths, root / "whole", max_workers=1)

        observed = []
        for path in paths:
            _items, types = learn_file_types(path, root, declared_items=None, max_workers=1)
            observed.append(types)
        groups = [
            merge_observed(observed[i : i + files_per_step])
            for i in range(0, len(observed), files_per_step)
        ]
        plan = plan_columns(merge_observed(groups), False, (), RecordedColumns())
        assert [spec for _p, spec in plan] == whole.columns
        parquet: list[Path] = []
        for number, path in enumerate(paths):
            _items, written = convert_file_with_plan(
                path,
                root / "steps",
                f"f{number:05d}-",
                [p for p, _spec in plan],
                declared_items=None,
                max_workers=1,
            )
            parquet += written
        steps_schema, steps_rows = _rows(parquet)
        whole_schema, whole_rows = _rows(whole.parquet_files)
        assert steps_rows == whole_rows
        if whole_schema is not None and steps_schema is not None:
            assert steps_schema.equals(whole_schema)
