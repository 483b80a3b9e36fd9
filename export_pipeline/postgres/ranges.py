"""PostgreSQL range text → a BigQuery JSON object, in BigQuery SQL.

AWS writes a range as PostgreSQL's text (`range_out`): `empty`, or
`[lower,upper)` with `[`/`]` for an inclusive bound and `(`/`)` for an
exclusive one, and nothing in a bound's place when that side is unbounded
(`(,5]`). A bound value is written in double quotes when it is empty or
holds `" \\ ( ) [ ] ,` or white space (a timestamp's space), with `"` and
`\\` doubled inside.

The JSON object is

    {"empty": false, "lower": 1, "upper": 10, "lower_inc": true, "upper_inc": false}

`lower` / `upper` are null for an unbounded side (PostgreSQL's
`lower_inf` / `upper_inf`); a bound whose value is `infinity` (dates and
timestamps) is that value, the string "infinity", since PostgreSQL keeps it
apart from an unbounded side. Bounds of int4range / int8range are JSON
numbers; every other bound is a JSON string of PostgreSQL's exact text
(numrange's decimals unrounded, dates and timestamps as the export wrote
them). `empty` ranges have null bounds and false flags. A text of no
range form gives NULL (the caller keeps it in `__raw`).
"""

from __future__ import annotations

_QUOTED = r'"(?:[^"\\]|""|\\.)*"'
_BARE = r'[^"\\()\[\],\s]+'
_BOUND = rf"(?:{_QUOTED}|{_BARE})"
_LOWER = rf"(?s)^[\[(]({_BOUND}?),{_BOUND}?[\])]$"
_UPPER = rf"(?s)^[\[(]{_BOUND}?,({_BOUND}?)[\])]$"
INTEGER_RANGES = frozenset({"int4range", "int8range"})
RANGES = INTEGER_RANGES | {"numrange", "tsrange", "tstzrange", "daterange"}


def _bound_json(bound_sql: str, integer: bool) -> str:
    """SQL: one extracted bound as JSON text (null when unbounded)."""
    value = (
        f"IF(STARTS_WITH({bound_sql}, '\"'), REGEXP_REPLACE(SUBSTR({bound_sql}, 2, "
        rf"""LENGTH({bound_sql}) - 2), r'(?s)\\(.)|"(")', r'\1\2'), {bound_sql})"""
    )
    as_json = f"TO_JSON_STRING({value})"
    if integer:
        as_json = f"IF(REGEXP_CONTAINS({bound_sql}, r'^-?[0-9]+$'), {bound_sql}, {as_json})"
    # An unbounded side extracts as '' (BigQuery) or NULL (bqemulator): both are JSON null.
    return f"IF(COALESCE({bound_sql}, '') = '', 'null', {as_json})"


def range_json(column_sql: str, range_type: str) -> str:
    """SQL: the range text as the JSON object above; NULL when it is no range text."""
    c = column_sql
    integer = range_type in INTEGER_RANGES
    lower = _bound_json(f"REGEXP_EXTRACT({c}, r'{_LOWER}')", integer)
    upper = _bound_json(f"REGEXP_EXTRACT({c}, r'{_UPPER}')", integer)
    bounded = (
        f"""CONCAT('{{"empty": false, "lower": ', {lower}, ', "upper": ', {upper}, """
        f"""', "lower_inc": ', IF(STARTS_WITH({c}, '['), 'true', 'false'), """
        f"""', "upper_inc": ', IF(ENDS_WITH({c}, ']'), 'true', 'false'), '}}')"""
    )
    empty = (
        """'{"empty": true, "lower": null, "upper": null, "lower_inc": false, """
        """"upper_inc": false}'"""
    )
    return (
        f"CASE WHEN {c} = 'empty' THEN PARSE_JSON({empty}) "
        f"WHEN REGEXP_CONTAINS({c}, r'{_LOWER}') THEN SAFE.PARSE_JSON({bounded}) END"
    )
