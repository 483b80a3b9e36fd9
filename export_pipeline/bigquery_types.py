"""BigQuery's type names and the limits of NUMERIC, in one place.

Every module that names a BigQuery type or decides whether a number fits
NUMERIC takes it from here, so the lossless rules (what goes to NUMERIC, what
is kept as exact text) cannot drift apart between the sources.
"""

from __future__ import annotations

STRING = "STRING"
BYTES = "BYTES"
INT64 = "INT64"
FLOAT64 = "FLOAT64"
NUMERIC = "NUMERIC"
BIGNUMERIC = "BIGNUMERIC"
BOOL = "BOOL"
JSON = "JSON"
DATE = "DATE"
DATETIME = "DATETIME"
TIME = "TIME"
TIMESTAMP = "TIMESTAMP"

# NUMERIC is DECIMAL(38, 9): up to 29 integer digits and 9 fractional digits.
NUMERIC_PRECISION = 38
NUMERIC_SCALE = 9
NUMERIC_MAX_INTEGER_DIGITS = NUMERIC_PRECISION - NUMERIC_SCALE
# NUMERIC spelled with its full precision and scale (a bare NUMERIC cast is
# DECIMAL(18, 3) in the local BigQuery; see `export_pipeline.bigquery.sql.cast_to`).
NUMERIC_FULL = f"NUMERIC({NUMERIC_PRECISION}, {NUMERIC_SCALE})"

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def decimal_fits_numeric(precision: int, scale: int) -> bool:
    """Whether every DECIMAL(precision, scale) value fits BigQuery NUMERIC exactly."""
    return 0 <= scale <= NUMERIC_SCALE and precision - scale <= NUMERIC_MAX_INTEGER_DIGITS
