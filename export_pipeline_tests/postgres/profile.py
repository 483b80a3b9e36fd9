"""How many examples the PostgreSQL round-trip property tests try.

Each example is a round trip through the real server and BigQuery (about a
second on the local cloud), so the suite tries a few; the long profile,
`EXPORT_PIPELINE_PG_EXAMPLES=200 pytest export_pipeline_tests/postgres`, tries
many more (docs/postgresql.md, "Tests").
"""

from __future__ import annotations

import os

ROUND_TRIP_EXAMPLES = int(os.environ.get("EXPORT_PIPELINE_PG_EXAMPLES", "10"))
