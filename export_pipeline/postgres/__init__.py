"""RDS PostgreSQL / Aurora PostgreSQL snapshots → S3 (Parquet) → BigQuery.

- `source`: `PostgresSource`, the RDS source (`export_pipeline.rds`) with PostgreSQL's engine.
- `engine`: what is PostgreSQL's own in an RDS export (`export_pipeline.rds.engine.Engine`).
- `types`: PostgreSQL type → BigQuery type and SQL conversion (the mapping table).
"""
