"""The native parser's fuzz harness (`export_pipeline_tests/fuzz`), on the installed build.

The sanitizer run itself is `python -m export_pipeline_tests.fuzz.native_parser`
(`.ci/run` runs 40 s of it). These tests keep the harness honest in the default
suite: its seeds are batches the parser accepts, its oracle reports a parser
that gets a value wrong or accepts what the per-line code rejects, and a few
thousand generated and mutated batches agree with the per-line code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from export_pipeline.dynamodb.convert import parse_native
from export_pipeline_tests.fuzz.native_parser import (
    PARSER_SOURCE,
    Case,
    Mutator,
    Oracle,
    seed_cases,
)

pytestmark = pytest.mark.usefixtures("native_parser")  # fails, saying why, when not built


@pytest.fixture
def oracle() -> Oracle:
    return Oracle(parse_native._items)


def test_the_harness_builds_the_parser_the_package_ships() -> None:
    """The sanitizer build compiles this file: it must be the extension's own source."""
    assert PARSER_SOURCE.is_file(), PARSER_SOURCE
    assert PARSER_SOURCE.parent == Path(parse_native.__file__).parent


def test_every_seed_is_accepted_and_agrees(oracle: Oracle) -> None:
    seeds = seed_cases()
    for case in seeds:
        assert oracle.check(case) is None, case.blob[:120]
    assert oracle.accepted == len(seeds)
    assert {case.keys for case in seeds} == {None, ("pk",), ("pk", "sk")}


class _Tampered:
    """The installed parser, with the first byte of the first string column changed."""

    def parse(self, blob: Any, rows: int, *keys: Any) -> Any:
        parsed = parse_native._items.parse(blob, rows, *keys)
        columns = parsed[0] if keys else parsed
        for i, column in enumerate(columns):
            if column[1] == "S" and column[5]:
                data = bytes([column[5][0] ^ 1]) + column[5][1:]
                columns[i] = (*column[:5], data, *column[6:])
                break
        return parsed


class _Lenient:
    """A parser that accepts any batch: it answers for a valid batch of as many rows."""

    def parse(self, blob: Any, rows: int, *keys: Any) -> Any:
        valid = b'{"Item":{"pk":{"S":"a"}}}\n' * rows
        return parse_native._items.parse(valid, rows, *keys)


def test_the_oracle_reports_a_value_the_parser_got_wrong() -> None:
    case = seed_cases()[0]
    problem = Oracle(_Tampered()).check(case)
    assert problem is not None and "'pk' S" in problem


def test_the_oracle_reports_a_batch_accepted_against_the_per_line_code() -> None:
    problem = Oracle(_Lenient()).check(Case(b'{"Item":{"pk":{"S":"a"}}\n', 1))  # a brace short
    assert problem is not None and "per-line code rejects" in problem


def test_generated_and_mutated_batches_agree_with_the_per_line_code(oracle: Oracle) -> None:
    mutator, corpus = Mutator(seed=1), seed_cases()
    for _ in range(3000):
        case = mutator.next_case(corpus)
        assert oracle.check(case) is None, case.encode()[:400]
    assert oracle.accepted > 100  # enough batches got past the parser to compare values


def test_cases_round_trip_through_their_file_form() -> None:
    for case in (Case(b"x\n\xff", 2, ("pk", "sk")), Case(b"", 0)):
        assert Case.decode(case.encode()) == case
