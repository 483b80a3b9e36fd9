"""Transient GCS faults during staging must not change the result, nor leave objects behind.

The GCS client goes through a fault proxy (`proxy.py`) in front of the local
GCS server; BigQuery's load jobs then read the staged objects. Compared with
the session's fault-free run (which uploads through the worker), as in
`test_transient.py`.
"""

from __future__ import annotations

import uuid

from export_pipeline.config import GcsConfig
from export_pipeline.naming import dynamodb_table_name, rds_table_name
from export_pipeline_tests.faults import _runs
from export_pipeline_tests.faults.proxy import bigquery_error, reset
from export_pipeline_tests.faults.test_transient import (
    RUN_DEPENDENT_COLUMNS,
    _assert_all_fired,
)


def test_staging_survives_transient_gcs_faults(
    bigquery_client, gcs_client, clean, scratch_dataset, gcs_proxy, pipeline_config
) -> None:
    clean.require()
    assert pipeline_config.gcs is not None
    staging = GcsConfig(
        staging_bucket=pipeline_config.gcs.staging_bucket,
        staging_prefix=f"faults/{uuid.uuid4().hex[:10]}",
    )
    table = clean.dynamodb_table
    config = _runs.make_config(
        scratch_dataset, dynamodb_table=table, rds_instances=[clean.rds]
    ).model_copy(update={"gcs": staging})
    upload = r"^/upload/storage/v1/b/[^/]+/o\?"
    gcs_proxy.add(bigquery_error(503), method="POST", path=upload)  # starting an upload
    gcs_proxy.add(bigquery_error(503), method="PUT", path=upload)  # sending its bytes
    # The bytes ARE stored, the answer is lost: the client asks again and must get
    # the object, not a second copy or an error.
    gcs_proxy.add(reset("after"), method="PUT", path=upload, skip=2)
    listing = r"^/storage/v1/b/[^/]+/o\?"
    gcs_proxy.add(bigquery_error(503), method="GET", path=listing)
    gcs_proxy.add(bigquery_error(503), method="DELETE", path=r"^/storage/v1/b/[^/]+/o/")

    result = _runs.run_bigquery_steps(config, clean, gcs=gcs_proxy)

    assert result.success, _runs.failure_messages(result)
    _assert_all_fired(gcs_proxy)
    database, name = _runs.RDS_TABLE.split(".")
    for loaded in (dynamodb_table_name(table), rds_table_name(database, name)):
        expected = _runs.table_rows(
            bigquery_client, clean.table_id(loaded), ignore=RUN_DEPENDENT_COLUMNS
        )
        actual = _runs.table_rows(
            bigquery_client, clean.table_id(loaded, scratch_dataset), ignore=RUN_DEPENDENT_COLUMNS
        )
        assert expected and actual == expected, loaded
    left = list(gcs_client.list_blobs(staging.staging_bucket, prefix=staging.staging_prefix))
    assert left == [], [b.name for b in left]
