"""Schema changes on a live target table without losing data or the high-water mark.

Incremental sources grow: a DynamoDB attribute appears, or an `N` attribute
that held small integers receives 1e40 and must go from INT64 to NUMERIC to
STRING. `reconcile_schema` is the one entry point: it adds the missing
columns (NULL / [] in existing rows) and widens narrower ones (every value
converted exactly) in ONE rewrite, so a table's high-water mark stays true
across it.

The rewrite is `CREATE OR REPLACE TABLE t OPTIONS(…) AS SELECT <converted
columns>, <NULL AS new columns> FROM t` (atomic for readers), without a
column list: types come from the CASTs in the SELECT. Then
`restore_declared_types` patches JSON columns the emulator reports as
STRING back to JSON, and `apply_metadata` restores column descriptions
(both `tables.patch`, no-ops on BigQuery). Why not the cheaper forms: on
BigQuery adding a column could be a free metadata change (`tables.patch`
with a longer schema, or `ALTER TABLE ADD COLUMN`), but in bqemulator 1.4.0
neither reaches the stored table (the schema lists the column, queries fail
with "column not found"); a CTAS column list (`CREATE TABLE t (c NUMERIC)
AS …`) makes the emulator store NUMERIC as DECIMAL(18,3) and JSON as
STRING. The rewrite without a list is the form both accept; it costs one
scan of the table, only when the schema changes. Types cannot change in
place on BigQuery anyway (beyond a few coercions). REQUIRED columns come out
NULLABLE.

Widening order (`widened_field`): INT64 → NUMERIC; any two different
scalar types that print as text (numbers, BOOL, STRING, dates/times) →
STRING; anything else (BYTES vs STRING, STRUCTs, arrays vs scalars, JSON) →
JSON. Conversions are exact: CAST to NUMERIC/STRING, `TO_JSON` for JSON
(numbers as their decimal text in a JSON string). Emulator differences:
CAST(NUMERIC AS STRING) gives '1.500000000' there, '1.5' on BigQuery; a CTAS
never makes a JSON column there (see `restore_declared_types`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.layout import layout_of_table
from export_pipeline.bigquery.sql import cast_to, column_type, standard_type, table_options
from export_pipeline.bigquery.tables import BigQueryPublishError, TableId
from export_pipeline.naming import quote_identifier

_EXACT_NUMBERS = ("INT64", "NUMERIC", "BIGNUMERIC")
_TEXT_LIKE = frozenset(
    {
        "INT64",
        "NUMERIC",
        "BIGNUMERIC",
        "FLOAT64",
        "BOOL",
        "STRING",
        "DATE",
        "DATETIME",
        "TIME",
        "TIMESTAMP",
    }
)


# Metadata calls give up after 2 minutes instead of the client's default 10.
METADATA_RETRY = bigquery.DEFAULT_RETRY.with_deadline(120)


# How a source decides a column's wider type, and writes one value in it:
# `widened_field` and `convert_sql` unless the source brings its own rules
# (DynamoDB does: `export_pipeline.dynamodb.widening`).
Widen = Callable[[SchemaField, SchemaField], SchemaField]
Convert = Callable[[str, SchemaField, SchemaField], str]


class SchemaEvolutionError(BigQueryPublishError):
    """A requested schema change is not possible without loss; the message names the column."""


def _kind(field: SchemaField) -> str:
    """Type identity of a field for comparison: its GoogleSQL column type (ARRAY/STRUCT spelled)."""
    return column_type(field)


def same_type(a: SchemaField, b: SchemaField) -> bool:
    return _kind(a) == _kind(b)


def widened_field(existing: SchemaField, wanted: SchemaField) -> SchemaField:
    """The field that holds every value of both `existing` and `wanted` exactly.

    Keeps `existing`'s name and description. REQUIRED relaxes to NULLABLE.
    """
    mode = existing.mode if existing.mode == wanted.mode else "NULLABLE"
    if same_type(existing, wanted):
        return _with(existing, existing.field_type, mode, existing.fields)
    a, b = standard_type(existing.field_type), standard_type(wanted.field_type)
    repeated = "REPEATED" in (existing.mode, wanted.mode)
    if not repeated and a in _EXACT_NUMBERS and b in _EXACT_NUMBERS:
        wider = max(a, b, key=_EXACT_NUMBERS.index)
        return _with(existing, wider, mode, ())
    if not repeated and a in _TEXT_LIKE and b in _TEXT_LIKE:
        return _with(existing, "STRING", mode, ())
    return _with(existing, "JSON", "NULLABLE", ())


def _with(field: SchemaField, field_type: str, mode: str, fields) -> SchemaField:
    return SchemaField(
        field.name,
        standard_type(field_type),
        mode=mode,
        description=field.description,
        fields=tuple(fields or ()),
    )


def convert_sql(expression: str, source: SchemaField, target: SchemaField) -> str:
    """SQL turning `expression` (typed as `source`) into `target`'s type, exactly.

    Only conversions `widened_field` can produce are accepted.
    """
    if same_type(source, target):
        return expression
    to = standard_type(target.field_type)
    src = standard_type(source.field_type)
    if target.mode == "REPEATED" or (source.mode == "REPEATED" and to != "JSON"):
        raise SchemaEvolutionError(
            f"column {target.name}: cannot convert {column_type(source)} to {column_type(target)}"
        )
    if to == "JSON":
        if src in _EXACT_NUMBERS and source.mode != "REPEATED":
            # Exact: the number's decimal text as a JSON string. (BigQuery's
            # TO_JSON(x, stringify_wide_numbers => TRUE) would keep small
            # numbers as JSON numbers; bqemulator 1.4.0 rejects the argument.)
            return f"TO_JSON(CAST({expression} AS STRING))"
        return f"TO_JSON({expression})"
    if to in ("NUMERIC", "BIGNUMERIC") and src in _EXACT_NUMBERS:
        return cast_to(expression, target)
    if to == "STRING" and src in _TEXT_LIKE:
        return f"CAST({expression} AS STRING)"
    raise SchemaEvolutionError(
        f"column {target.name}: no exact conversion from {column_type(source)} to "
        f"{column_type(target)}"
    )


def _by_name(fields: Sequence[SchemaField]) -> dict[str, SchemaField]:
    # Column names are case-insensitive in BigQuery.
    return {f.name.lower(): f for f in fields}


def null_sql(field: SchemaField) -> str:
    """SQL for an absent value of `field`: a typed NULL, or [] if REPEATED.

    Used for a column added to existing rows, and by callers for a column
    their rows do not have (`SelectColumn.absent`).
    """
    if field.mode == "REPEATED":
        if standard_type(field.field_type) == "NUMERIC":
            # Spelled out for the reason `sql.cast_to` gives: bqemulator 1.4.0
            # makes a bare ARRAY<NUMERIC> DECIMAL(18,3)[] and rounds later rows.
            return "CAST([] AS ARRAY<NUMERIC(38, 9)>)"
        return f"CAST([] AS {column_type(field)})"
    typed = cast_to("NULL", field)  # NUMERIC spelled NUMERIC(38, 9): see `sql.cast_to`
    return typed if typed != "NULL" else f"CAST(NULL AS {column_type(field)})"


def _rewrite(
    client: bigquery.Client,
    target: TableId,
    table: bigquery.Table,
    widen: Sequence[SchemaField],
    add: Sequence[SchemaField],
    job_labels: dict[str, str] | None,
    convert: Convert = convert_sql,
) -> bigquery.Table:
    """One CTAS over `target` itself: columns widened, columns appended, values kept.

    No column list in the CTAS: the types come from the CASTs in the SELECT
    (`convert_sql`, `null_sql`), the form BigQuery and bqemulator 1.4.0 both
    type the same (the emulator would store a listed NUMERIC as
    DECIMAL(18,3)). Then `restore_declared_types` and `apply_metadata` make
    the reported schema and the descriptions/labels what was declared.
    The table's partitioning, clustering, options and CMEK go into the CTAS
    (`layout.layout_of_table`): a CREATE OR REPLACE without them would drop
    them; policy tags are patched back with the descriptions.
    """
    wanted = _by_name(widen)
    new_schema: list[SchemaField] = []
    selects: list[str] = []
    for field in table.schema:
        change = wanted.get(field.name.lower())
        new = (
            field if change is None else _with(field, change.field_type, change.mode, change.fields)
        )
        column = quote_identifier(field.name)
        selects.append(f"{convert(column, field, new)} AS {column}")
        new_schema.append(new)
    for field in add:
        selects.append(f"{null_sql(field)} AS {quote_identifier(field.name)}")
        new_schema.append(field)
    layout = layout_of_table(table)
    clauses = layout.ddl_clauses(new_schema)
    sql = (
        f"CREATE OR REPLACE TABLE {target.sql}\n{clauses + chr(10) if clauses else ''}"
        f"{table_options(table.description, table.labels, layout.options())}\n"
        f"AS SELECT {', '.join(selects)} FROM {target.sql}"
    )
    client.query(sql, job_config=bigquery.QueryJobConfig(labels=job_labels or {})).result()
    restore_declared_types(client, target, new_schema)
    rewritten = apply_metadata(client, target, new_schema, table.description, table.labels)
    patch = layout.storage_patch(rewritten)
    if layout.policy_tags:
        rewritten.schema = layout.tagged(rewritten.schema)
        patch.append("schema")
    if not patch:
        return rewritten
    return client.update_table(rewritten, patch, retry=METADATA_RETRY)


def restore_declared_types(
    client: bigquery.Client, target: TableId, declared: Sequence[SchemaField]
) -> None:
    """Make the table report its JSON columns as JSON after a CTAS (a no-op on BigQuery).

    BigQuery types a CTAS column from its expression, so a JSON column stays
    JSON. bqemulator 1.4.0 reports every JSON column a CTAS makes as STRING
    (the values stay JSON); left so, the next `reconcile_schema` would see
    STRING and JSON and wrap the JSON text in JSON again. Patching the
    column's type back with `tables.patch` (which the emulator allows, and
    which BigQuery never needs here) keeps the table what was declared.
    Only JSON declared and STRING reported is patched: any other difference
    is a real error and is left to show.
    """
    table = client.get_table(target.reference)
    wanted = _by_name(declared)

    def declared_json(field: SchemaField) -> bool:
        want = wanted.get(field.name.lower())
        return (
            want is not None
            and standard_type(want.field_type) == "JSON"
            and standard_type(field.field_type) == "STRING"
            and field.mode != "REPEATED"
        )

    if not any(declared_json(f) for f in table.schema):
        return
    table.schema = [
        SchemaField(f.name, "JSON", mode="NULLABLE", description=f.description)
        if declared_json(f)
        else f
        for f in table.schema
    ]
    client.update_table(table, ["schema"], retry=METADATA_RETRY)


def apply_metadata(
    client: bigquery.Client,
    target: TableId,
    fields: Sequence[SchemaField],
    description: str | None,
    labels: dict[str, str] | None,
) -> bigquery.Table:
    """Make the table's description, labels and column descriptions what they should be.

    The DDL that created the table already sets them on BigQuery; bqemulator
    1.4.0 ignores column descriptions and labels given in CTAS OPTIONS, so
    this checks and patches with `tables.patch` (a no-op when all is set).
    """
    table = client.get_table(target.reference)
    wanted = _by_name(fields)
    changed: list[str] = []
    new_schema = []
    for field in table.schema:
        want = wanted.get(field.name.lower())
        if want is not None and want.description and field.description != want.description:
            api = field.to_api_repr()
            api["description"] = want.description
            field = SchemaField.from_api_repr(api)
            changed.append("schema")
        new_schema.append(field)
    if "schema" in changed:
        table.schema = new_schema
    if description is not None and table.description != description:
        table.description = description
        changed.append("description")
    current_labels = dict(table.labels or {})
    if labels is not None and any(current_labels.get(k) != v for k, v in labels.items()):
        # Added/updated only, never removed: removing needs a null label value
        # in the patch, which bqemulator 1.4.0 answers with HTTP 500. (A CTAS
        # replace already drops labels it does not set, on BigQuery.)
        table.labels = {**current_labels, **labels}
        changed.append("labels")
    if not changed:
        return table
    return client.update_table(table, sorted(set(changed)), retry=METADATA_RETRY)


def reconcile_schema(
    client: bigquery.Client,
    target: TableId,
    desired: Sequence[SchemaField],
    *,
    job_labels: dict[str, str] | None = None,
    widen: Widen = widened_field,
    convert: Convert = convert_sql,
) -> list[SchemaField]:
    """Make `target` able to hold rows of `desired` losslessly; return its resulting schema.

    Missing columns are added, narrower ones widened (`widen`, by default
    `widened_field`; values rewritten with `convert`, by default
    `convert_sql`), wider existing ones kept (the caller converts its
    values with the same `convert`). Existing columns not in `desired` are kept.
    """
    table = client.get_table(target.reference)
    existing = _by_name(table.schema)
    additions = [f for f in desired if f.name.lower() not in existing]
    widenings = []
    for field in desired:
        current = existing.get(field.name.lower())
        if current is None:
            continue
        wider = widen(current, field)
        if not same_type(wider, current) or wider.mode != current.mode:
            widenings.append(wider)
    to_json = [f for f in widenings if standard_type(f.field_type) == "JSON"]
    rest = [f for f in widenings if standard_type(f.field_type) != "JSON"]
    if to_json and (rest or additions):
        # Conversions to JSON get a rewrite of their own: in bqemulator 1.4.0
        # a query holding TO_JSON or an ARRAY subquery makes every
        # `CAST(… AS NUMERIC(38, 9))` of that query DECIMAL(18,3), so they
        # never share one with the NUMERIC casts of other columns.
        table = _rewrite(client, target, table, to_json, [], job_labels, convert)
        to_json = []
    if to_json or rest or additions:
        _rewrite(client, target, table, [*to_json, *rest], additions, job_labels, convert)
    return list(client.get_table(target.reference).schema)
