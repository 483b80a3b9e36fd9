"""PostgreSQL hstore text → a BigQuery JSON object, in BigQuery SQL.

AWS writes an hstore value as PostgreSQL's text (`hstore_out`): its pairs
separated by `, `, each `"key"=>"value"`, or `"key"=>NULL` for a NULL value;
keys and values are always in double quotes, with `"` and `\\` escaped by a
backslash inside them and every other character (`=>`, commas, white space,
newlines, any Unicode) as it is. An empty hstore is the empty string. Keys
are unique (PostgreSQL keeps one of each on input).

The JSON object is `{key: value}`, every value a JSON string or null:

    "a"=>"1", "b c"=>NULL   →   {"a": "1", "b c": null}

which is what PostgreSQL's own `hstore_to_json()` returns. The text is split
into pairs with `REGEXP_EXTRACT_ALL`, each pair's key and value are unquoted
and written as JSON strings (`TO_JSON_STRING`, which escapes what JSON
requires), and a `STRING_AGG` subquery (`WITH OFFSET … ORDER BY`) joins them.
A text of no hstore form gives NULL (the caller keeps it in `__raw`).
"""

from __future__ import annotations

from export_pipeline.naming import INTERNAL_PREFIX

_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PAIR = rf"{_QUOTED}=>(?:{_QUOTED}|NULL)"
# A whole hstore text; every text it admits converts (`fits`).
HSTORE = rf"(?s)^(?:{_PAIR}(?:, {_PAIR})*)?$"
# One pair's key and value, each captured with its quotes (never an empty capture).
_KEY = rf"(?s)^({_QUOTED})=>"
_VALUE = rf"(?s)^{_QUOTED}=>({_QUOTED}|NULL)$"
# Aliases in the pipeline's own name space: no staging column is shadowed by them.
_PAIR_ALIAS = f"{INTERNAL_PREFIX}_hstore_pair"
_OFFSET = f"{INTERNAL_PREFIX}_hstore_offset"
_MEMBERS = f"{INTERNAL_PREFIX}_hstore_members"


def is_hstore(type_name: str) -> bool:
    """Whether a type name (`format_type()`, lower case) is the hstore extension's type.

    `format_type()` qualifies a type whose schema is not on the search path, so an
    extension installed in another schema reads `extensions.hstore`.
    """
    return type_name == "hstore" or type_name.endswith(".hstore")


def fits(column_sql: str) -> str:
    """SQL: the text is in hstore's output form (then `hstore_json` is not NULL)."""
    return f"REGEXP_CONTAINS({column_sql}, r'{HSTORE}')"


def _json_string(quoted_sql: str) -> str:
    """SQL: a double-quoted hstore key or value as a JSON string (escapes undone, then
    JSON's own)."""
    text = (
        f"REGEXP_REPLACE(SUBSTR({quoted_sql}, 2, LENGTH({quoted_sql}) - 2), "
        rf"r'(?s)\\(.)', r'\1')"
    )
    return f"TO_JSON_STRING({text})"


def hstore_json(column_sql: str) -> str:
    """SQL: the hstore text as the JSON object above; NULL when it is no hstore text."""
    c = column_sql
    key = f"REGEXP_EXTRACT({_PAIR_ALIAS}, r'{_KEY}')"
    value = f"REGEXP_EXTRACT({_PAIR_ALIAS}, r'{_VALUE}')"
    value_json = f"IF({value} = 'NULL', 'null', {_json_string(value)})"
    member = f"CONCAT({_json_string(key)}, ':', {value_json})"
    # The aggregate sits in an inner query: a SAFE. call around an aggregate is not
    # accepted by every engine (bqemulator's DuckDB refuses it).
    members = (
        f"(SELECT SAFE.PARSE_JSON(CONCAT('{{', {_MEMBERS}, '}}')) FROM "
        f"(SELECT STRING_AGG({member}, ',' ORDER BY {_OFFSET}) AS {_MEMBERS} FROM "
        f"UNNEST(REGEXP_EXTRACT_ALL({c}, r'(?s){_PAIR}')) AS {_PAIR_ALIAS} "
        f"WITH OFFSET AS {_OFFSET}))"
    )
    return f"CASE WHEN {c} = '' THEN PARSE_JSON('{{}}') WHEN {fits(c)} THEN {members} END"
