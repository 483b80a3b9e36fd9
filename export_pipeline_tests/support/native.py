"""The native DynamoDB parser (C extension `export_pipeline.dynamodb.convert._items`) in tests."""

from __future__ import annotations

NOT_BUILT = (
    "the C extension export_pipeline.dynamodb.convert._items is not built (no C compiler at "
    "install?): install gcc and the Python headers (Debian: python3-dev), then "
    "`pip install -e .` again"
)
