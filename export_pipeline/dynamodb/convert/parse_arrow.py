"""Columnar fast path for a batch of full-export lines: Arrow's JSON reader, no per-item Python.

DynamoDB JSON never has type conflicts on one path (`{"S": ..}` is always a
string, `{"M": ..}` always an object...), so Arrow's JSON reader infers a
clean nested struct for a whole batch. This module turns that struct into
the same *raw columns* the per-line path builds (`read`): strings
and number texts as they are, binary decoded, sets as lists, and maps and
lists serialized to JSON text column-wise (one compute call per schema node,
not per value). Values that need a per-value decision (escaping, unusual
numbers) are fixed only where present.

Anything unexpected (invalid lines, unknown type descriptors, a value of the
wrong JSON type, a batch with too many distinct map keys) returns None, and
the caller re-reads the batch with the per-line path, which either converts
it or raises an error naming the file and line. Both paths produce the same
values; the tests compare them.
"""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from export_pipeline.dynamodb.convert import values as cv

MAX_SCHEMA_FIELDS = 2_000  # maps keyed by ids would explode the struct: use the slow path
_STRING = pa.string()
# Constants as Arrow scalars: plain Python values would make pyarrow import pandas.
_S = cv.string_scalar
_NULL = _S(None)
_EMPTY, _COMMA, _QUOTE = _S(""), _S(","), _S('"')
_TRUE, _FALSE, _JSON_NULL = _S("true"), _S("false"), _S("null")
_OPEN_LIST, _CLOSE_LIST, _OPEN_MAP, _CLOSE_MAP = _S("["), _S("]"), _S("{"), _S("}")
_EMPTY_LIST, _EMPTY_MAP = _S("[]"), _S("{}")
_YES, _NO = pc.is_valid(_EMPTY), pc.is_null(_EMPTY)  # boolean scalars
_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'
_BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class NotColumnar(Exception):
    """This batch needs the per-line path."""


class SchemaHint:
    """Item schema for later batches, once a batch held strings Arrow reads as timestamps.

    Arrow's JSON reader infers timestamps from ISO-looking strings; such a
    batch is read again with those fields declared as strings, so the text
    stays exactly as it is. Later batches are read once, with that schema
    declared (fields it lacks are still inferred). Shared by the threads of
    one conversion: a plain attribute, replaced whole.
    """

    def __init__(self) -> None:
        self.schema: pa.Schema | None = None


def raw_columns(
    blob: bytes, rows: int, hint: SchemaHint | None = None
) -> dict[tuple[str, str], pa.Array] | None:
    """Raw columns {(attribute, tag): array} for the `rows` full-export lines in `blob`, or None."""
    try:
        item = _read_items(blob, rows, hint or SchemaHint())
        if item is None:
            return None
        out: dict[tuple[str, str], pa.Array] = {}
        for field, typed in zip(item.type, item.flatten(), strict=True):
            out.update(_attribute(field.name, typed))
        for array in out.values():
            # Arrow's JSON reader passes invalid UTF-8 through into string values
            # (DynamoDB never writes it); full validation raises ArrowInvalid on it.
            array.validate(full=True)
        return out
    except MemoryError:
        raise  # not a batch to decline: run_conversion names the file and the limit
    except (NotColumnar, pa.ArrowException, cv.ValueError_, ValueError, TypeError):
        return None


def _read_items(blob: bytes, rows: int, hint: SchemaHint) -> pa.StructArray | None:
    options = pj.ReadOptions(use_threads=False, block_size=len(blob) + 1)
    table = None
    if hint.schema is not None:
        parse = pj.ParseOptions(explicit_schema=hint.schema, unexpected_field_behavior="infer")
        try:
            table = pj.read_json(pa.BufferReader(blob), read_options=options, parse_options=parse)
        except pa.ArrowInvalid:
            table = None  # a declared field holds another JSON type here: infer all
    if table is None:
        table = pj.read_json(pa.BufferReader(blob), read_options=options)
    if table.num_rows != rows or table.schema.names != ["Item"]:
        return None
    if _contains_timestamp(table.schema.field("Item").type):
        schema = pa.schema([pa.field("Item", _timestamps_to_strings(table.schema[0].type))])
        parse = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
        table = pj.read_json(pa.BufferReader(blob), read_options=options, parse_options=parse)
        hint.schema = schema
    column = table.column("Item")
    item = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if not pa.types.is_struct(item.type) or item.null_count:
        return None
    if _count_fields(item.type) > MAX_SCHEMA_FIELDS:
        return None
    return item


def _contains_timestamp(arrow_type: pa.DataType) -> bool:
    if pa.types.is_timestamp(arrow_type):
        return True
    if pa.types.is_struct(arrow_type):
        return any(_contains_timestamp(f.type) for f in arrow_type)
    if pa.types.is_list(arrow_type):
        return _contains_timestamp(arrow_type.value_type)
    return False


def _timestamps_to_strings(arrow_type: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(arrow_type):
        return _STRING
    if pa.types.is_struct(arrow_type):
        return pa.struct([f.with_type(_timestamps_to_strings(f.type)) for f in arrow_type])
    if pa.types.is_list(arrow_type):
        return pa.list_(_timestamps_to_strings(arrow_type.value_type))
    return arrow_type


def _count_fields(arrow_type: pa.DataType) -> int:
    if pa.types.is_struct(arrow_type):
        return len(arrow_type) + sum(_count_fields(f.type) for f in arrow_type)
    if pa.types.is_list(arrow_type):
        return _count_fields(arrow_type.value_type)
    return 0


def _check_one_tag(typed: pa.StructArray, children: list[pa.Array]) -> None:
    """Every present value must hold exactly one type descriptor."""
    if not pa.types.is_struct(typed.type):
        raise NotColumnar
    if not children:
        if typed.null_count != len(typed):
            raise NotColumnar
        return
    if len(children) == 1:  # flatten() keeps the struct's nulls: equal counts, same rows
        if children[0].null_count != typed.null_count:
            raise NotColumnar
        return
    present = pc.cast(typed.is_valid(), pa.int8())
    count = None
    for child in children:
        valid = pc.cast(child.is_valid(), pa.int8())
        count = valid if count is None else pc.add(count, valid)
    if not pc.all(pc.equal(count, present)).as_py():
        raise NotColumnar


def _attribute(name: str, typed: pa.Array) -> dict[tuple[str, str], pa.Array]:
    """Raw columns of one top-level attribute, one per type descriptor seen."""
    if not pa.types.is_struct(typed.type):
        raise NotColumnar
    children = typed.flatten()
    _check_one_tag(typed, children)
    out = {}
    for field, child in zip(typed.type, children, strict=True):
        tag = field.name
        if tag in ("S", "N"):
            _expect(child, pa.types.is_string)
            out[(name, tag)] = child
        elif tag in ("BOOL", "NULL"):
            _expect(child, pa.types.is_boolean)
            out[(name, tag)] = child
        elif tag == "B":
            _expect(child, pa.types.is_string)
            out[(name, tag)] = cv.decode_base64_array(child)
        elif tag in ("SS", "NS", "BS"):
            _expect_list_of_strings(child)
            if tag == "BS":
                child = _map_list_values(child, cv.decode_base64_array)
            out[(name, tag)] = child
        elif tag in ("M", "L"):
            out[(name, tag)] = _json_value(tag, child)
        else:
            raise NotColumnar
    return out


def _expect(array: pa.Array, predicate) -> None:
    if not predicate(array.type):
        raise NotColumnar


def _expect_list_of_strings(array: pa.Array) -> None:
    if not (pa.types.is_list(array.type) and pa.types.is_string(array.type.value_type)):
        raise NotColumnar


def _map_list_values(array: pa.ListArray, convert) -> pa.ListArray:
    """The same lists with each element converted (offsets and nulls kept)."""
    values = convert(array.values)
    return pa.ListArray.from_arrays(array.offsets, values, mask=array.is_null())


def _json_value(tag: str, array: pa.Array) -> pa.Array:
    """JSON text of the values of one type descriptor (null where absent)."""
    if tag == "S":
        _expect(array, pa.types.is_string)
        return _quote(array)
    if tag == "N":
        _expect(array, pa.types.is_string)
        return _numbers(array)
    if tag == "BOOL":
        _expect(array, pa.types.is_boolean)
        return pc.if_else(array, _TRUE, _FALSE)
    if tag == "NULL":
        _expect(array, pa.types.is_boolean)
        return pc.if_else(array.is_valid(), _JSON_NULL, _NULL)
    if tag == "B":
        _expect(array, pa.types.is_string)
        _check_base64(array)
        return _quote(array)
    if tag in ("SS", "NS", "BS"):
        _expect_list_of_strings(array)
        if tag == "BS":
            _check_base64(array.values)
        return _join_list(_map_list_values(array, _numbers if tag == "NS" else _quote))
    if tag == "M":
        return _json_map(array)
    if tag == "L":
        if not pa.types.is_list(array.type):
            raise NotColumnar
        if pa.types.is_null(array.type.value_type):  # only empty lists
            if len(array.values):
                raise NotColumnar
            return pc.if_else(array.is_valid(), _EMPTY_LIST, _NULL)
        return _join_list(_map_list_values(array, _json_elements))
    raise NotColumnar


def _json_elements(typed: pa.Array) -> pa.Array:
    texts = _json_typed(typed)
    if texts.null_count:  # a null list element is not DynamoDB JSON
        raise NotColumnar
    return texts


def _json_typed(typed: pa.Array) -> pa.Array:
    """JSON text of typed values (`{"S": ..}`, `{"M": ..}`, ...): one per row."""
    if not pa.types.is_struct(typed.type):
        raise NotColumnar
    children = typed.flatten()
    _check_one_tag(typed, children)
    parts = [_json_value(f.name, c) for f, c in zip(typed.type, children, strict=True)]
    if not parts:
        return pa.nulls(len(typed), _STRING)
    return pc.coalesce(*parts) if len(parts) > 1 else parts[0]


def _json_map(array: pa.Array) -> pa.Array:
    if not pa.types.is_struct(array.type):
        raise NotColumnar
    keys = [orjson.dumps(field.name).decode() + ":" for field in array.type]
    values = [_json_typed(child) for child in array.flatten()]
    if not values:
        return pc.if_else(array.is_valid(), _EMPTY_MAP, _NULL)
    if all(v.null_count == array.null_count for v in values):
        # Every key in every map (the usual shape): one join; an absent map stays null.
        parts = []
        for number, (key, value) in enumerate(zip(keys, values, strict=True)):
            parts += [_S(("{" if number == 0 else ",") + key), value]
        return pc.binary_join_element_wise(*parts, _CLOSE_MAP, _EMPTY)
    # Each present key becomes `,"key":value`, an absent one ""; joined, minus the
    # first comma. (binary_join_element_wise's null_handling="skip" drops rows
    # whose inputs are all null in pyarrow 26, so it is not used.)
    pieces = [
        pc.fill_null(pc.binary_join_element_wise(_S("," + key), value, _EMPTY), _EMPTY)
        for key, value in zip(keys, values, strict=True)
    ]
    body = pieces[0] if len(pieces) == 1 else pc.binary_join_element_wise(*pieces, _EMPTY)
    wrapped = pc.binary_join_element_wise(
        _OPEN_MAP, pc.utf8_slice_codeunits(body, 1), _CLOSE_MAP, _EMPTY
    )
    return pc.if_else(array.is_valid(), wrapped, _NULL)


def _join_list(lists: pa.ListArray) -> pa.Array:
    return pc.binary_join_element_wise(
        _OPEN_LIST, pc.binary_join(lists, _COMMA), _CLOSE_LIST, _EMPTY
    )


def _quote(strings: pa.Array) -> pa.Array:
    """JSON string literals; escaping done per value only where needed."""
    quoted = pc.binary_join_element_wise(_QUOTE, strings, _QUOTE, _EMPTY)
    if not _may_need_escape(strings):
        return quoted
    needs = pc.fill_null(pc.match_substring_regex(strings, _NEEDS_ESCAPE), _NO)
    if not pc.any(needs).as_py():
        return quoted
    escaped = [orjson.dumps(v).decode() for v in strings.filter(needs).to_pylist()]
    return pc.replace_with_mask(quoted, needs, cv.string_array(escaped))


_ESCAPED_BYTES = np.zeros(256, dtype=bool)
_ESCAPED_BYTES[:0x20] = True
_ESCAPED_BYTES[[ord('"'), ord("\\")]] = True


def _may_need_escape(strings: pa.Array) -> bool:
    """Whether any byte of the values' data needs JSON escaping (one numpy pass)."""
    data = strings.buffers()[2]
    return data is not None and bool(_ESCAPED_BYTES[np.frombuffer(data, np.uint8)].any())


def _numbers(texts: pa.Array) -> pa.Array:
    """JSON numbers where exact, else per `json_number`.

    Kept as they are: plain integers up to 15 digits (not "-0"), and decimals
    without exponent of at most 15 digits that equal float64's shortest text
    of themselves (so they round-trip exactly, and orjson would write them the
    same). Everything else is decided one by one, exactly as the per-line
    path does.
    """
    shapes = cv.NumberShapes(texts)
    plain_values = shapes.json_integer()
    if texts.null_count:
        plain_values |= ~cv.valid_values(texts)
    if plain_values.all():
        return texts
    decimals = shapes.plain_decimal() & (shapes.int_digits + shapes.frac_digits <= 15)
    if decimals.any():
        try:
            shortest = pc.cast(pc.cast(texts, pa.float64()), _STRING)
        except pa.ArrowInvalid:
            shortest = None  # some text is no number: let json_number decide
        if shortest is not None:
            plain_values |= decimals & cv.true_values(pc.equal(shortest, texts))
            if plain_values.all():
                return texts
    plain = cv.bool_array(plain_values)
    others = pc.invert(plain)
    converted = [orjson.dumps(cv.json_number(v)).decode() for v in texts.filter(others).to_pylist()]
    return pc.replace_with_mask(texts, others, cv.string_array(converted))


def _check_base64(texts: pa.Array) -> None:
    valid = pc.match_substring_regex(texts, _BASE64)
    if not pc.all(pc.fill_null(valid, _YES)).as_py():
        raise NotColumnar
