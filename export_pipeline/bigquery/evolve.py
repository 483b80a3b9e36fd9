"""Schema changes on a live target table without losing data or the high-water mark.

Incremental sources grow: a DynamoDB attribute appears, or an `N` attribute
that held small integers receives 1e40 and must go from INT64 to NUMERIC to
STRING. Two operations cover it, both keeping every existing value, so a
table's high-water mark stays true across them:

- `add_columns`: new NULLABLE/REPEATED columns (NULL / [] in existing rows).
- `widen_columns`: a column's type made wider, every value converted exactly.

Both are one `CREATE OR REPLACE TABLE t AS SELECT <converted columns>,
<NULL AS new columns> FROM t` (atomic for readers), then column
descriptions are restored with `tables.patch`. On BigQuery, adding a column
could be a free metadata change (`tables.patch` with a longer schema, or
`ALTER TABLE ADD COLUMN`), but in bqemulator 1.4.0 neither reaches the
stored table (the schema lists the column, queries fail with "column not
found"), so the rewrite, which both accept, is used; it costs one scan of
the table, only when the schema grows. Types cannot change in place on
BigQuery anyway (beyond a few coercions). REQUIRED columns come out NULLABLE.

Widening order (`widened_field`): INT64 → NUMERIC; any two different
scalar types that print as text (numbers, BOOL, STRING, dates/times) →
STRING; anything else (BYTES vs STRING, STRUCTs, arrays vs scalars, JSON) →
JSON. Conversions are exact: CAST to NUMERIC/STRING, `TO_JSON` for JSON
(numbers as their decimal text in a JSON string). Emulator differences:
CAST(NUMERIC AS STRING) gives '1.500000000' there, '1.5' on BigQuery; a CTAS
never makes a JSON column there (the widened column is reported as STRING
holding the JSON text), so widening to JSON is only fully exercised on
BigQuery.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

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


def _null_of(field: SchemaField) -> str:
    """SQL for the value an added column has in existing rows: NULL, or [] if REPEATED."""
    if field.mode == "REPEATED":
        return f"CAST([] AS {column_type(field)})"
    return f"CAST(NULL AS {column_type(field)})"


def _rewrite(
    client: bigquery.Client,
    target: TableId,
    table: bigquery.Table,
    widen: Sequence[SchemaField],
    add: Sequence[SchemaField],
    job_labels: dict[str, str] | None,
) -> bigquery.Table:
    """One CTAS over `target` itself: columns widened, columns appended, values kept."""
    wanted = _by_name(widen)
    new_schema: list[SchemaField] = []
    selects: list[str] = []
    for field in table.schema:
        change = wanted.get(field.name.lower())
        new = (
            field if change is None else _with(field, change.field_type, change.mode, change.fields)
        )
        column = quote_identifier(field.name)
        selects.append(f"{convert_sql(column, field, new)} AS {column}")
        new_schema.append(new)
    for field in add:
        selects.append(f"{_null_of(field)} AS {quote_identifier(field.name)}")
        new_schema.append(field)
    sql = (
        f"CREATE OR REPLACE TABLE {target.sql}\n{table_options(table.description, table.labels)}\n"
        f"AS SELECT {', '.join(selects)} FROM {target.sql}"
    )
    client.query(sql, job_config=bigquery.QueryJobConfig(labels=job_labels or {})).result()
    return apply_metadata(client, target, new_schema, table.description, table.labels)


def add_columns(
    client: bigquery.Client,
    target: TableId,
    new_fields: Sequence[SchemaField],
    *,
    job_labels: dict[str, str] | None = None,
) -> bigquery.Table:
    """Append NULLABLE/REPEATED columns to `target` (existing rows get NULL / [])."""
    table = client.get_table(target.reference)
    existing = _by_name(table.schema)
    for field in new_fields:
        if field.name.lower() in existing:
            raise SchemaEvolutionError(f"{target}: column {field.name} already exists")
        if field.mode == "REQUIRED":
            raise SchemaEvolutionError(
                f"{target}: cannot add REQUIRED column {field.name} to a table with rows"
            )
    if not new_fields:
        return table
    return _rewrite(client, target, table, [], list(new_fields), job_labels)


def widen_columns(
    client: bigquery.Client,
    target: TableId,
    changes: Sequence[SchemaField],
    *,
    job_labels: dict[str, str] | None = None,
) -> bigquery.Table:
    """Rewrite `target` with the given columns widened (each `changes` field names one).

    One CTAS over the table itself: readers see the old or the new table.
    Table description, labels and column descriptions are carried over.
    """
    table = client.get_table(target.reference)
    unknown = set(_by_name(changes)) - {f.name.lower() for f in table.schema}
    if unknown:
        raise SchemaEvolutionError(f"{target}: cannot widen missing columns {sorted(unknown)}")
    return _rewrite(client, target, table, changes, [], job_labels)


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
) -> list[SchemaField]:
    """Make `target` able to hold rows of `desired` losslessly; return its resulting schema.

    Missing columns are added, narrower ones widened (see `widened_field`),
    wider existing ones kept (the caller converts its values with
    `convert_sql`). Existing columns not in `desired` are kept.
    """
    table = client.get_table(target.reference)
    existing = _by_name(table.schema)
    additions = [f for f in desired if f.name.lower() not in existing]
    widenings = []
    for field in desired:
        current = existing.get(field.name.lower())
        if current is None:
            continue
        wider = widened_field(current, field)
        if not same_type(wider, current) or wider.mode != current.mode:
            widenings.append(wider)
    if widenings or additions:
        _rewrite(client, target, table, widenings, additions, job_labels)
    return list(client.get_table(target.reference).schema)
