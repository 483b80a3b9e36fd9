"""PostgreSQL array text → BigQuery ARRAY<T> or JSON, in BigQuery SQL.

AWS writes a PostgreSQL array as a UTF-8 string in PostgreSQL's own text form
(`array_out`): `{1,2,3}`, `{}`, `{"a b",NULL,"c\\"d"}`, `{{1,2},{3,4}}`. Its
rules, which the patterns here follow:

* elements are separated by the element type's delimiter: `;` for `box`,
  `,` for every other built-in type;
* an element is written in double quotes when it is empty, holds a brace,
  the delimiter, a double quote, a backslash or white space, or reads `NULL`
  (any case); inside quotes, `"` and `\\` are escaped with a backslash;
* a NULL element is the bare word `NULL`; a nested array is `{…}` in place
  of an element; an array whose lower bound is not 1 is prefixed with its
  dimensions (`[0:1]={1,2}`).

The conversion runs in BigQuery, never in Python: the text is split into
tokens with `REGEXP_EXTRACT_ALL` and each token is mapped inside an `ARRAY`
or `STRING_AGG` subquery (`WITH OFFSET … ORDER BY` keeps the order).
A text these rules do not produce (a dimension prefix, or anything not an
array) matches neither form, so the caller keeps it in `__raw`.
"""

from __future__ import annotations

from collections.abc import Callable

from export_pipeline.naming import INTERNAL_PREFIX

# Characters PostgreSQL's array_isspace() treats as white space (it quotes elements holding them).
_SPACE = r" \t\n\r\x0B\f"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
# Aliases of the token subqueries, in the pipeline's own name space (`naming.INTERNAL_PREFIX`):
# no staging column has such a name, so no column is shadowed or taken for them.
TOKEN = f"{INTERNAL_PREFIX}_token"
OFFSET = f"{INTERNAL_PREFIX}_offset"
WHOLE = f"{INTERNAL_PREFIX}_whole"
CONVERTED = f"{INTERNAL_PREFIX}_converted"


def _unquoted(delimiter: str) -> str:
    return rf'[^{{}}{delimiter}"\\{_SPACE}]+'


def element_pattern(delimiter: str) -> str:
    """RE2 pattern of one element token (quoted or bare, `NULL` included)."""
    return rf"(?s){_QUOTED}|{_unquoted(delimiter)}"


def token_pattern(delimiter: str) -> str:
    """RE2 pattern of one token of any array text: an element, a brace or the delimiter."""
    return rf"(?s){_QUOTED}|{_unquoted(delimiter)}|[{{}}{delimiter}]"


def one_dimensional_pattern(delimiter: str) -> str:
    """RE2 pattern of a whole one-dimensional array text (no dimension prefix)."""
    element = rf"(?:{_QUOTED}|{_unquoted(delimiter)})"
    return rf"(?s)^\{{({element}({delimiter}{element})*)?\}}$"


def is_null_token(token_sql: str) -> str:
    """SQL: the token is a NULL element (the bare word, which PostgreSQL reads in any case)."""
    return f"(NOT STARTS_WITH({token_sql}, '\"') AND UPPER({token_sql}) = 'NULL')"


def element_text(token_sql: str) -> str:
    """SQL: an element token's value (quotes removed, backslash escapes undone)."""
    return (
        f"IF(STARTS_WITH({token_sql}, '\"'), REGEXP_REPLACE(SUBSTR({token_sql}, 2, "
        rf"LENGTH({token_sql}) - 2), r'(?s)\\(.)', r'\1'), {token_sql})"
    )


def _tokens(column_sql: str, pattern: str) -> str:
    """SQL FROM item: each token (`TOKEN`) matching `pattern`, with its position (`OFFSET`).

    The element text is computed where it is used (`element_text(TOKEN)`), not
    in a derived table: bqemulator rewrites a derived table's offset and loses
    the order.
    """
    return (
        f"UNNEST(REGEXP_EXTRACT_ALL({column_sql}, r'{pattern}')) AS {TOKEN} WITH OFFSET AS {OFFSET}"
    )


def _elements(column_sql: str, delimiter: str) -> str:
    return _tokens(column_sql, element_pattern(delimiter))


def typed_array(column_sql: str, delimiter: str, element_sql: Callable[[str], str]) -> str:
    """SQL: the ARRAY of typed elements of a one-dimensional array text, else NULL.

    `element_sql` maps an element's text (SQL) to its typed value. Only valid
    where `array_fits` holds for every row: BigQuery cannot store an array
    holding NULL.
    """
    pattern = one_dimensional_pattern(delimiter)
    typed = element_sql(element_text(TOKEN))
    return (
        f"IF(REGEXP_CONTAINS({column_sql}, r'{pattern}'), ARRAY(SELECT {typed} FROM "
        f"{_elements(column_sql, delimiter)} ORDER BY {OFFSET}), NULL)"
    )


def array_fits(column_sql: str, delimiter: str, element_fits: Callable[[str], str]) -> str:
    """SQL: the text is a one-dimensional array with no NULL element and every element
    fits its typed form (`element_fits`: element text SQL → condition)."""
    pattern = one_dimensional_pattern(delimiter)
    fits = element_fits(element_text(TOKEN))
    return (
        f"(REGEXP_CONTAINS({column_sql}, r'{pattern}') AND NOT EXISTS(SELECT 1 FROM "
        f"{_elements(column_sql, delimiter)} WHERE {is_null_token(TOKEN)} "
        f"OR NOT COALESCE({fits}, FALSE)))"
    )


def json_array(column_sql: str, delimiter: str, element_json: Callable[[str], str]) -> str:
    """SQL: the array text as a JSON array (nested for each dimension), else NULL.

    Braces become brackets, NULL elements JSON null, and each other element
    `element_json(<element text SQL>)`, which must be JSON text. The tokens
    must cover the whole text and the result must parse, so a dimension
    prefix or a text that is not an array gives NULL.
    """
    pattern = token_pattern(delimiter)
    value = element_json(element_text(TOKEN))
    mapped = (
        f"CASE WHEN {TOKEN} = '{{' THEN '[' WHEN {TOKEN} = '}}' THEN ']' "
        f"WHEN {TOKEN} = '{delimiter}' THEN ',' "
        f"WHEN {is_null_token(TOKEN)} THEN 'null' ELSE {value} END"
    )
    # The aggregates sit in an inner query: a SAFE. call around an aggregate is not
    # accepted by every engine (bqemulator's DuckDB refuses it).
    return (
        f"IF(STARTS_WITH({column_sql}, '{{'), (SELECT IF({WHOLE} = {column_sql}, "
        f"SAFE.PARSE_JSON({CONVERTED}), NULL) FROM "
        f"(SELECT STRING_AGG({TOKEN}, '' ORDER BY {OFFSET}) AS {WHOLE}, "
        f"STRING_AGG({mapped}, '' ORDER BY {OFFSET}) AS {CONVERTED} FROM "
        f"{_tokens(column_sql, pattern)})), NULL)"
    )


def json_string(text_sql: str) -> str:
    """SQL: a text as a JSON string literal (every character escaped as JSON requires)."""
    return f"TO_JSON_STRING({text_sql})"
