"""RDS MySQL / Aurora MySQL snapshots → S3 (Parquet) → BigQuery.

- `source`: `RdsSource`, this source's side of `export_pipeline.contract`.
- `run_config`: what a run of its export and table assets can be asked.
- `snapshot_sensor`: one sensor per instance/cluster that exports each new snapshot.
- `exports`: snapshot choice, StartExportTask / reuse, waiting with backoff.
- `identifiers`: export task identifiers valid for AWS and stable per scope.
- `export_files`: reading export_info / export_tables_info and Parquet footers in S3.
- `types`: MySQL type → BigQuery type and SQL conversion (the mapping table).
- `loading`: one table: S3 Parquet → staging → typed, atomic replace.
"""
