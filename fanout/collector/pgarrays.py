"""PostgreSQL binary arrays and binary ``COPY`` data built in a few C-level calls, for the
PostgreSQL store's batch writes.

psycopg dumps a Python list as an array by looping over its elements in Python (a dumper
lookup, a ``struct.pack`` and two appends per element); for a batch of events, ten
columns of it were half of the store's CPU per event in the collector process. The binary
array format is simple (a header, then each element as its length and its bytes, or length
-1 for NULL), and building it with ``map`` over ``str.encode`` and a packed length runs the
per-element loop in C. The results are ``bytes`` subclasses that :func:`register` teaches a
connection to send as they are, as binary parameters of their array type.

:func:`copy_rows` builds the rows of a ``COPY ... FROM STDIN (FORMAT binary)`` the same
way: the binary ``COPY`` format frames each field as the arrays frame their elements
(its length, then its bytes), row after row, so the rows are one ``b"".join`` of a list
whose slots are filled column by column by slice assignment.
"""

from __future__ import annotations

import datetime as _dt
import operator
import struct
from collections.abc import Sequence
from typing import Final

from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format

__all__ = ["TEXT_ARRAY_OID", "TEXT_OID", "ByteaArray", "Column", "Int8Array", "TextArray",
           "bytea_array", "copy_rows", "encoded_text_array", "int8_array", "int8_field",
           "int8_fields", "register", "text_array", "text_fields", "timestamptz_field"]

# Element type oids and the oids of their one-dimensional arrays (pg_type).
_TEXT, _TEXT_ARRAY = 25, 1009
#: The oids of ``text`` and ``text[]``, for statements whose parameters are typed by the
#: caller (a ``text`` parameter in binary is its UTF-8 bytes).
TEXT_OID: Final = _TEXT
TEXT_ARRAY_OID: Final = _TEXT_ARRAY
_BYTEA, _BYTEA_ARRAY = 17, 1001
_INT8, _INT8_ARRAY = 20, 1016

# ndim, has-nulls flag, element oid, then the one dimension's length and lower bound.
_HEAD: Final = struct.Struct(">iiIii").pack
_LENGTH: Final = struct.Struct(">i").pack
_NULL: Final = _LENGTH(-1)
_EMPTY: Final = struct.Struct(">iiI").pack  # ndim 0: an empty array has no dimension
# The length words of short elements, looked up rather than packed (a list index costs a
# third of a ``pack`` call): ids, names, timestamps and most bodies are under 4 KiB.
_SHORT: Final = 4096
_PREFIX: Final = [_LENGTH(n) for n in range(_SHORT)]


def _length_words(lengths: list[int]) -> Sequence[bytes]:
    """The length word of each of ``lengths``: all looked up by one ``itemgetter`` call
    (a C loop, a third of ``map`` over the list's ``__getitem__``, and no ``max`` pass
    to know they are short), packed when one is 4 KiB or more."""
    if len(lengths) > 1:  # itemgetter of one index returns the item, not a tuple
        try:
            words: tuple[bytes, ...] = operator.itemgetter(*lengths)(_PREFIX)
        except IndexError:  # an element of 4 KiB or more
            pass
        else:
            return words
    return list(map(_LENGTH, lengths))


class TextArray(bytes):
    """A ``text[]`` in PostgreSQL's binary format."""


class ByteaArray(bytes):
    """A ``bytea[]`` in PostgreSQL's binary format."""


class Int8Array(bytes):
    """An ``int8[]`` in PostgreSQL's binary format."""


def _elements(items: Sequence[bytes | None], oid: int) -> bytes:
    count = len(items)
    if not count:
        return _EMPTY(0, 0, oid)
    if None not in items:
        parts: list[bytes] = [b""] * (2 * count)
        lengths = list(map(len, items))  # type: ignore[arg-type]
        parts[0::2] = _length_words(lengths)
        parts[1::2] = items  # type: ignore[assignment]
        return _HEAD(1, 0, oid, count, 1) + b"".join(parts)
    head = _HEAD(1, 1, oid, count, 1)
    if items.count(None) == count:  # a column no event of the group has (anonymous_id)
        return head + _NULL * count
    return head + b"".join([_NULL if item is None else _LENGTH(len(item)) + item
                            for item in items])


def text_array(values: Sequence[str | None]) -> TextArray:
    """``values`` (UTF-8 encodable, no U+0000: validation guarantees both) as ``text[]``."""
    count = len(values)
    if count and values[0] is not None and values.count(values[0]) == count:
        # One value throughout (a group's kinds, its names): encoded and framed once.
        item = values[0].encode()
        return TextArray(_HEAD(1, 0, _TEXT, count, 1) + (_LENGTH(len(item)) + item) * count)
    if None in values:
        if values.count(None) == len(values):
            return TextArray(_elements(values, _TEXT))  # type: ignore[arg-type]  # all None
        encoded = [None if v is None else v.encode() for v in values]
    else:
        encoded = list(map(str.encode, values))  # type: ignore[arg-type]
    return TextArray(_elements(encoded, _TEXT))


def encoded_text_array(values: Sequence[bytes]) -> TextArray:
    """``values``, already UTF-8 encoded, as ``text[]``."""
    return TextArray(_elements(values, _TEXT))


def bytea_array(values: Sequence[bytes]) -> ByteaArray:
    return ByteaArray(_elements(values, _BYTEA))


def int8_array(values: Sequence[int]) -> Int8Array:
    count = len(values)
    if not count:
        return Int8Array(_EMPTY(0, 0, _INT8))
    flat = [8] * (2 * count)
    flat[1::2] = values
    return Int8Array(struct.pack(f">iiIii{count * 'iq'}", 1, 0, _INT8, count, 1, *flat))


# -- binary COPY ----------------------------------------------------------------------------

#: One column of :func:`copy_rows`: a field the same in every row (framed already, by
#: :func:`int8_field`, :func:`timestamptz_field` or :func:`text_fields`), or each row's
#: value (``None`` for NULL) as the bytes of its binary form.
Column = bytes | Sequence[bytes | None]

# The signature, flags and header-extension length; the trailer is a field count of -1.
_COPY_HEAD: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TAIL: Final = struct.pack(">h", -1)
_FIELD_COUNT: Final = struct.Struct(">h").pack
_INT8_FIELD: Final = struct.Struct(">iq").pack
_INT8_VALUE: Final = struct.Struct(">q").pack
# timestamptz travels as microseconds since 2000-01-01 UTC.
_PG_EPOCH: Final = _dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc)
_MICROSECOND: Final = _dt.timedelta(microseconds=1)


def int8_field(value: int) -> bytes:
    """``value`` as one whole ``int8`` field (length word included)."""
    return _INT8_FIELD(8, value)


def int8_fields(values: Sequence[int]) -> Column:
    """Each row's ``int8``: one field when every row has the same value."""
    if values and values.count(values[0]) == len(values):
        return int8_field(values[0])
    return list(map(_INT8_VALUE, values))


def timestamptz_field(when: _dt.datetime) -> bytes:
    """``when`` (timezone-aware) as one whole ``timestamptz`` field."""
    return _INT8_FIELD(8, (when - _PG_EPOCH) // _MICROSECOND)


def text_fields(values: Sequence[str | None]) -> Column:
    """Each row's ``text`` (``None`` for NULL; no U+0000, as for :func:`text_array`): one
    field when every row has the same value (a group's kinds, its names)."""
    count = len(values)
    if count and values.count(values[0]) == count:
        first = values[0]
        if first is None:
            return _NULL
        item = first.encode()
        return _LENGTH(len(item)) + item
    if None in values:
        return [None if v is None else v.encode() for v in values]
    return list(map(str.encode, values))  # type: ignore[arg-type]  # no None


def copy_rows(count: int, columns: Sequence[Column]) -> bytes:
    """``count`` rows of ``columns`` as the data of ``COPY ... FROM STDIN (FORMAT
    binary)``, header and trailer included. Fields the same in every row that follow one
    another (and the row's field count before them) are joined once into one slot per
    row, so a caller putting its constant columns first pays for them once per group."""
    runs: list[Column] = []
    constant = _FIELD_COUNT(len(columns))
    for column in columns:
        if isinstance(column, bytes):
            constant += column
            continue
        if constant:
            runs.append(constant)
            constant = b""
        runs.append(column)
    if constant:
        runs.append(constant)
    width = sum(1 if isinstance(run, bytes) else 2 for run in runs)
    parts: list[bytes] = [b""] * (count * width)
    at = 0
    for run in runs:
        if isinstance(run, bytes):
            parts[at::width] = [run] * count
            at += 1
            continue
        if None in run:
            parts[at::width] = [_NULL if v is None else _LENGTH(len(v)) for v in run]
            parts[at + 1::width] = [b"" if v is None else v for v in run]
        else:
            parts[at::width] = _length_words(list(map(len, run)))  # type: ignore[arg-type]
            parts[at + 1::width] = run  # type: ignore[assignment]  # no None
        at += 2
    return _COPY_HEAD + b"".join(parts) + _COPY_TAIL


class _Prebuilt(Dumper):
    format = Format.BINARY

    def dump(self, obj: object) -> bytes:
        assert isinstance(obj, bytes)
        return obj


class _TextArrayDumper(_Prebuilt):
    oid = _TEXT_ARRAY


class _ByteaArrayDumper(_Prebuilt):
    oid = _BYTEA_ARRAY


class _Int8ArrayDumper(_Prebuilt):
    oid = _INT8_ARRAY


def register(adapters: AdaptersMap) -> None:
    """Let connections using ``adapters`` send the arrays above as binary parameters."""
    adapters.register_dumper(TextArray, _TextArrayDumper)
    adapters.register_dumper(ByteaArray, _ByteaArrayDumper)
    adapters.register_dumper(Int8Array, _Int8ArrayDumper)
