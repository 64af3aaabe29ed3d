"""PostgreSQL binary arrays built in a few C-level calls, for the PostgreSQL store's batch
statement.

psycopg dumps a Python list as an array by looping over its elements in Python (a dumper
lookup, a ``struct.pack`` and two appends per element); for a batch of events, ten
columns of it were half of the store's CPU per event in the collector process. The binary
array format is simple (a header, then each element as its length and its bytes, or length
-1 for NULL), and building it with ``map`` over ``str.encode`` and a packed length runs the
per-element loop in C. The results are ``bytes`` subclasses that :func:`register` teaches a
connection to send as they are, as binary parameters of their array type.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format

__all__ = ["ByteaArray", "Int8Array", "TextArray", "bytea_array", "encoded_text_array",
           "int8_array", "register", "text_array"]

# Element type oids and the oids of their one-dimensional arrays (pg_type).
_TEXT, _TEXT_ARRAY = 25, 1009
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
        parts[0::2] = map(_PREFIX.__getitem__ if max(lengths) < _SHORT else _LENGTH, lengths)
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
