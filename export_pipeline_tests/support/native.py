"""The native DynamoDB parser (the C extension `export_pipeline.dynamodb._items`) in tests."""

from __future__ import annotations

NOT_BUILT = (
    "the C extension export_pipeline.dynamodb._items is not built (no C compiler at "
    "install?): install gcc and the Python headers (Debian: python3-dev), then "
    "`pip install -e .` again"
)
