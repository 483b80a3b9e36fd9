"""DynamoDB tables → S3 (point-in-time exports, DynamoDB JSON) → BigQuery.

- `source`: `DynamoDBSource`, this source's side of `export_pipeline.contract`.
- `run_config`: what a run of its export and table assets can be asked.
- `plan`: full, incremental, widened or fallback: which export(s) a run asks for.
- `exports`: ExportTableToPointInTime with idempotent tokens, adopting running exports, waiting.
- `export_files`: manifest-summary / manifest-files, and MD5-checked downloads of data files.
- `convert/`: data files → Parquet with lossless column types (`types`: the mapping table);
  its public API is `convert/__init__`, its data model `convert/model`, its three parsers
  `convert/parse_native`, `parse_arrow`, `parse_lines` (rules: docs/dynamodb-parsers.md).
- `loading`: verify, convert and publish one table (replace, or MERGE with the mark).
- `bigquery_tables`: what DynamoDB adds to the shared BigQuery publishing.
"""
