"""PostgreSQL's own part of an RDS snapshot export (see `export_pipeline.rds.engine`)."""

from __future__ import annotations

from export_pipeline.postgres import parquet_types, types
from export_pipeline.rds.engine import Engine

POSTGRES = Engine(
    family="postgres",
    name="PostgreSQL",
    map_column=types.map_column,
    typed_expression=types.typed_expression,
    expected_staging_type=types.expected_staging_type,
    fits_expression=types.fits_expression,
    type_disagreement=parquet_types.type_disagreement,
)
