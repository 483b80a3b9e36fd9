"""DynamoDB columns widened in BigQuery: the same values a full export would write.

When an attribute's column must hold a new kind of value, BigQuery rewrites
the column (`bigquery.evolve.reconcile_schema`); the conversions here make
that rewrite, and the MERGE of staged rows into a wider column, produce
exactly what the converter produces for the same DynamoDB value:

- to JSON: numbers by `values.json_number`'s rule (integers within
  +-2^53 and plain decimals of at most 15 significant digits as JSON
  numbers, anything else as a JSON string of the exact text), bytes as
  base64 text, sets and arrays element by element in their order, BOOL and
  strings as themselves; a NULL stays SQL NULL and an empty array (an
  absent set) becomes NULL, as for an attribute an item does not have;
- which values a STRING column holds (strings, or number text too wide for
  NUMERIC) is read from the DynamoDB types in its description
  (`column_names`), so `"1"` and `1` stay apart;
- NUMERIC to STRING: the canonical decimal text (`1.5`, never `1.500000000`).

Every form is plain GoogleSQL that BigQuery and bqemulator 1.4.0 evaluate
alike (TO_BASE64, REGEXP_*, CAST, TO_JSON of strings, integers within 2^53,
doubles and BOOL, PARSE_JSON of text built here). The emulator's TO_JSON of
BYTES gives escape text where BigQuery documents base64, so bytes always go
through TO_BASE64; and TO_JSON in a query makes the emulator round that
query's NUMERIC(38, 9) casts, which is why `bigquery.evolve` rewrites
conversions to JSON on their own (docs/local-cloud.md).
"""

from __future__ import annotations

from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery import evolve
from export_pipeline.bigquery.sql import standard_type
from export_pipeline.dynamodb.column_names import tags_of_description

_NUMBERS = ("INT64", "NUMERIC", "BIGNUMERIC")
JSON_SAFE_INTEGER = 2**53


def numeric_text(expression: str) -> str:
    """SQL: a NUMERIC's canonical decimal text (no trailing zeros, no trailing point)."""
    return (
        "REGEXP_REPLACE(REGEXP_REPLACE(CAST("
        f"{expression} AS STRING), r'(\\.[0-9]*[1-9])0+$', r'\\1'), r'\\.0*$', '')"
    )


def number_text_json(text: str) -> str:
    """SQL: the JSON value of a DynamoDB number given as its text (`json_number`'s rule)."""
    return (
        f"CASE WHEN REGEXP_CONTAINS({text}, r'^-?[0-9]{{1,16}}$') "
        f"AND ABS(CAST({text} AS INT64)) <= {JSON_SAFE_INTEGER} "
        f"THEN TO_JSON(CAST({text} AS INT64)) "
        f"WHEN REGEXP_CONTAINS({text}, r'^-?[0-9]+\\.[0-9]+$') "
        f"AND LENGTH(LTRIM(REGEXP_REPLACE({text}, r'[^0-9]', ''), '0')) <= 15 "
        f"THEN TO_JSON(CAST({text} AS FLOAT64)) "
        f"ELSE TO_JSON({text}) END"
    )


def _holds_numbers(tags: frozenset[str]) -> bool:
    """Whether a STRING column (or its elements) holds DynamoDB number text."""
    return bool(tags & {"N", "NS"}) and not tags & {"S", "SS"}


def _element_json(expression: str, bq_type: str, tags: frozenset[str]) -> str:
    if bq_type == "INT64":
        return number_text_json(f"CAST({expression} AS STRING)")
    if bq_type in ("NUMERIC", "BIGNUMERIC"):
        return number_text_json(numeric_text(expression))
    if bq_type == "STRING" and _holds_numbers(tags):
        return number_text_json(expression)
    if bq_type == "BYTES":
        return f"TO_JSON(TO_BASE64({expression}))"
    if bq_type == "JSON":
        return expression
    return f"TO_JSON({expression})"


def json_sql(expression: str, source: SchemaField) -> str:
    """SQL turning `expression` (a value of column `source`) into the converter's JSON."""
    bq_type = standard_type(source.field_type)
    tags = tags_of_description(source.description or "")
    if bq_type == "JSON" and source.mode != "REPEATED":
        return expression
    if source.mode == "REPEATED":
        element = _element_json("e", bq_type, tags)
        texts = (
            f"ARRAY(SELECT TO_JSON_STRING({element}) FROM UNNEST({expression}) AS e "
            "WITH OFFSET AS o ORDER BY o)"
        )
        return (
            f"CASE WHEN ARRAY_LENGTH({expression}) > 0 "
            f"THEN PARSE_JSON(CONCAT('[', ARRAY_TO_STRING({texts}, ','), ']')) END"
        )
    return f"CASE WHEN {expression} IS NOT NULL THEN {_element_json(expression, bq_type, tags)} END"


def convert_sql(expression: str, source: SchemaField, target: SchemaField) -> str:
    """`evolve.convert_sql` with the converter's JSON and number text (see module doc)."""
    if evolve.same_type(source, target):
        return expression
    to = standard_type(target.field_type)
    if to == "JSON" and target.mode != "REPEATED":
        return json_sql(expression, source)
    numeric = standard_type(source.field_type) in ("NUMERIC", "BIGNUMERIC")
    if to == "STRING" and source.mode != "REPEATED" and numeric:
        return numeric_text(expression)
    return evolve.convert_sql(expression, source, target)


def widened_field(existing: SchemaField, wanted: SchemaField) -> SchemaField:
    """`evolve.widened_field`, except that a string and a number never meet in STRING.

    The converter already asks for JSON where a full export would make one
    (it types a column over every DynamoDB type it was typed for); this
    keeps an existing STRING column of strings from taking numbers as text
    (or one of number text from taking strings) in a table written before.
    """
    wider = evolve.widened_field(existing, wanted)
    if standard_type(wider.field_type) != "STRING" or wider.mode == "REPEATED":
        return wider
    old_tags = tags_of_description(existing.description or "")
    new_tags = tags_of_description(wanted.description or "")
    kinds = {_kind(standard_type(existing.field_type), old_tags)}
    kinds.add(_kind(standard_type(wanted.field_type), new_tags))
    kinds.discard("null")
    if len(kinds) > 1:
        return SchemaField(existing.name, "JSON", mode="NULLABLE", description=existing.description)
    return wider


def _kind(bq_type: str, tags: frozenset[str]) -> str:
    """What a scalar column's values are: `number`, `string`, `null` (only NULLs) or `other`."""
    if bq_type in _NUMBERS:
        return "number"
    if bq_type == "STRING":
        real = tags - {"NULL"}
        if not real:
            return "null" if tags else "string"
        return "number" if _holds_numbers(real) else "string"
    return "other"
