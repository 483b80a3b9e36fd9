"""Fixtures shared by the DynamoDB tests."""

from __future__ import annotations

import pytest

from export_pipeline_tests.support.native import NOT_BUILT


@pytest.fixture
def native_parser() -> None:
    """Fail, saying why, where a test needs the native parser and it is not built."""
    from export_pipeline.dynamodb.convert import parse_native

    if parse_native.DISABLED:
        pytest.fail("the native parser is off: EXPORT_PIPELINE_NATIVE_PARSER=0 is set")
    if not parse_native.AVAILABLE:
        pytest.fail(NOT_BUILT)
