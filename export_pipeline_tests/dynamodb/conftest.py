"""Fixtures shared by the DynamoDB tests."""

from __future__ import annotations

import pytest

from export_pipeline.dynamodb.convert import read
from export_pipeline_tests.support.native import NOT_BUILT


@pytest.fixture
def native_parser() -> None:
    """Fail, saying why, where a test needs the native parser and it is not built."""
    from export_pipeline.dynamodb.convert import parse_native

    if parse_native.DISABLED:
        pytest.fail("the native parser is off: EXPORT_PIPELINE_NATIVE_PARSER=0 is set")
    if not parse_native.AVAILABLE:
        pytest.fail(NOT_BUILT)


@pytest.fixture(params=["native", "columnar", "per-line"])
def conversion_path(request, monkeypatch) -> str:
    """Run every test through each full-export path (they must agree exactly).

    "native" is the default (native parser, then Arrow's reader, then per
    line); "columnar" starts at Arrow's reader; "per-line" uses only the
    per-line path. Only the in-process path is switched: tests that start
    worker processes use the default there.
    """
    if request.param == "native":
        request.getfixturevalue("native_parser")
    monkeypatch.setattr(read, "NATIVE_ENABLED", request.param == "native")
    monkeypatch.setattr(read, "COLUMNAR_ENABLED", request.param != "per-line")
    return request.param
