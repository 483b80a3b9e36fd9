"""Duplicate keys in a PostgreSQL `json` value, found in BigQuery SQL.

PostgreSQL's `json` keeps its input text as it is, duplicate keys included
(`{"a": 1, "a": 2}`), and PostgreSQL's own functions read the last one.
BigQuery's JSON type keeps one key per object, so loading such a value would
change it silently; it goes to `__raw` instead (`jsonb` has no duplicates:
PostgreSQL removed them on input).

The check tokenises the text with `REGEXP_EXTRACT_ALL` (strings and the
structural characters `{ } [ ] :`), gives each token its nesting depth (a
running sum over the braces and brackets) and the position of the object
it is in (the last `{` or `[` opened at that depth), and looks for a key (a
string followed by `:`) that occurs twice in one object, keys compared
after JSON unescaping (`"a"` and `"\\u0061"` are one key). It runs only
on texts with at least two keys.
"""

from __future__ import annotations

from export_pipeline.naming import INTERNAL_PREFIX

_TOKEN = r'(?s)"(?:[^"\\]|\\.)*"|[{}\[\]:]'
_TWO_KEYS = r'(?s)"\s*:.*"\s*:'
# Aliases in the pipeline's own name space: no staging column is shadowed by them.
_TOK = f"{INTERNAL_PREFIX}_json_token"
_POS = f"{INTERNAL_PREFIX}_json_offset"
_AT = f"{INTERNAL_PREFIX}_json_position"
_DEPTH = f"{INTERNAL_PREFIX}_json_depth"
_NEXT = f"{INTERNAL_PREFIX}_json_next"
_OBJECT = f"{INTERNAL_PREFIX}_json_object"
_WHOLE_PRECEDING = "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"


def has_duplicate_keys(column_sql: str) -> str:
    """SQL: TRUE where the JSON text has an object with a key twice (at any depth)."""
    # The offset is renamed at the level that unnests it: bqemulator rewrites the
    # offset's name in every enclosing query and would lose it there.
    tokens = (
        f"SELECT {_TOK}, {_POS} AS {_AT}, "
        f"SUM(CASE WHEN {_TOK} IN ('{{', '[') THEN 1 WHEN {_TOK} IN ('}}', ']') THEN -1 "
        f"ELSE 0 END) OVER (ORDER BY {_POS} {_WHOLE_PRECEDING}) AS {_DEPTH}, "
        f"LEAD({_TOK}) OVER (ORDER BY {_POS}) AS {_NEXT} "
        f"FROM UNNEST(REGEXP_EXTRACT_ALL({column_sql}, r'{_TOKEN}')) AS {_TOK} "
        f"WITH OFFSET AS {_POS}"
    )
    placed = (
        f"SELECT {_TOK}, {_NEXT}, LAST_VALUE(IF({_TOK} IN ('{{', '['), {_AT}, NULL) "
        f"IGNORE NULLS) OVER (PARTITION BY {_DEPTH} ORDER BY {_AT} {_WHOLE_PRECEDING}) "
        f"AS {_OBJECT} FROM ({tokens})"
    )
    duplicated = (
        f"EXISTS(SELECT 1 FROM ({placed}) WHERE {_NEXT} = ':' "
        f"GROUP BY {_OBJECT}, JSON_VALUE(SAFE.PARSE_JSON({_TOK})) HAVING COUNT(*) > 1)"
    )
    return f"IF(REGEXP_CONTAINS({column_sql}, r'{_TWO_KEYS}'), {duplicated}, FALSE)"
