"""Loading already-staged gs:// objects into a staging table (`load_uris_to_staging`)."""

from __future__ import annotations

import io
import itertools

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.cloud.bigquery import SchemaField
from hypothesis import given
from hypothesis import strategies as st

from export_pipeline.bigquery.staging import (
    GcsUri,
    StagingLoadError,
    load_job_batches,
    load_uris_to_staging,
)
from export_pipeline.config import PipelineConfig
from export_pipeline_tests.support.bigquery import rows

SCHEMA = [SchemaField("id", "STRING", mode="REQUIRED"), SchemaField("n", "INT64")]


@pytest.fixture
def staged(gcs_client, pipeline_config: PipelineConfig, unique_name: str):  # type: ignore[no-untyped-def]
    """`staged(i, count)` uploads a Parquet file of `count` rows; returns its GcsUri."""
    assert pipeline_config.gcs is not None
    bucket = gcs_client.bucket(pipeline_config.gcs.staging_bucket)

    def stage(index: int, count: int) -> GcsUri:
        buffer = io.BytesIO()
        table = pa.table({"id": [f"{index}-{j}" for j in range(count)], "n": list(range(count))})
        pq.write_table(table, buffer)
        blob = bucket.blob(f"{unique_name}/part-{index:03d}.parquet")
        blob.upload_from_string(buffer.getvalue(), if_generation_match=0)
        return GcsUri(f"gs://{bucket.name}/{blob.name}", blob.size, count)

    yield stage
    for blob in bucket.list_blobs(prefix=f"{unique_name}/"):
        blob.delete()


def test_objects_load_by_gs_uri_in_one_job(bigquery_client, table_id, staged) -> None:
    uris = [staged(i, 3 + i) for i in range(4)]
    staging = table_id("_staging_uris")
    result = load_uris_to_staging(
        bigquery_client, uris, staging, SCHEMA, expected_rows=18, job_labels={"run": "t"}
    )
    assert (result.rows, result.files, result.bytes) == (18, 4, sum(u.size for u in uris))
    got = rows(bigquery_client, f"SELECT id, n FROM {staging.sql} ORDER BY id")
    assert [r["id"] for r in got][:3] == ["0-0", "0-1", "0-2"]
    # BigQuery's own job record: one load job, reading exactly these gs:// URIs.
    jobs = [j for j in bigquery_client.list_jobs(max_results=20) if j.job_type == "load"]
    mine = [j for j in jobs if j.destination.table_id == staging.table]
    assert [sorted(j.source_uris) for j in mine] == [sorted(u.uri for u in uris)]


def test_a_wildcard_uri_loads_every_object_it_matches(
    bigquery_client, table_id, staged, unique_name, pipeline_config
) -> None:
    uris = [staged(i, 2) for i in range(3)]
    bucket = pipeline_config.gcs.staging_bucket
    wildcard = GcsUri(f"gs://{bucket}/{unique_name}/part-*", sum(u.size for u in uris))
    result = load_uris_to_staging(
        bigquery_client, [wildcard], table_id("_staging_wild"), SCHEMA, expected_rows=6
    )
    assert result.rows == 6


def test_a_row_count_that_disagrees_fails_the_load(bigquery_client, table_id, staged) -> None:
    uri = staged(0, 5)
    with pytest.raises(StagingLoadError, match="expected 7"):
        load_uris_to_staging(
            bigquery_client, [uri], table_id("_staging_bad"), SCHEMA, expected_rows=7
        )
    lying = GcsUri(uri.uri, uri.size, rows=4)  # a footer count the data does not hold
    with pytest.raises(StagingLoadError, match="footers say 4"):
        load_uris_to_staging(bigquery_client, [lying], table_id("_staging_bad"), SCHEMA)


def test_a_missing_object_fails_the_load_naming_it(bigquery_client, table_id, pipeline_config):
    missing = GcsUri(f"gs://{pipeline_config.gcs.staging_bucket}/nowhere/x.parquet", 10, 1)
    with pytest.raises(StagingLoadError, match=r"nowhere/x\.parquet"):
        load_uris_to_staging(bigquery_client, [missing], table_id("_staging_gone"), SCHEMA)


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=100), max_size=60),
    max_uris=st.integers(min_value=1, max_value=7),
    max_bytes=st.integers(min_value=100, max_value=400),
)
def test_batches_keep_order_respect_both_limits_and_are_fewest(sizes, max_uris, max_bytes):
    uris = [GcsUri(f"gs://b/o{i}", size) for i, size in enumerate(sizes)]
    batches = load_job_batches(uris, max_uris=max_uris, max_bytes=max_bytes)
    assert [u for batch in batches for u in batch] == uris
    for batch in batches:
        assert 1 <= len(batch) <= max_uris
        assert sum(u.size for u in batch) <= max_bytes
    # Greedy is optimal for consecutive groups: each batch ends only because the
    # next URI would break a limit.
    for batch, following in itertools.pairwise(batches):
        assert len(batch) == max_uris or sum(u.size for u in batch) + following[0].size > max_bytes


def test_an_object_larger_than_one_job_reads_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="gs://b/huge"):
        load_job_batches([GcsUri("gs://b/huge", 16 * 10**12)])
