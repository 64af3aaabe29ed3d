"""The JSON walkers: an event's mappings copied, checked and measured on the caller's thread.

Every value a backend could choke on is refused here, with the key path of the culprit,
before anything is queued: strings holding a lone surrogate (keys and ids included),
integers beyond ±(2**63-1), non-finite floats, values with no JSON form, nesting deeper
than :data:`MAX_DEPTH` (which also stops reference cycles) and structures with more than
:data:`MAX_ITEMS` keys and values. The last bound is counted while walking, so a small
structure shared many times over (``[x] * 10`` nested six deep) is refused after at most
``MAX_ITEMS`` steps, not after copying the ten million values it stands for.

One walk does three things at once, because this runs for every call: it copies the
caller's containers (the caller may change them after ``track()`` returns), converts the
values that have one obvious JSON form (datetime, Decimal, UUID, Enum, set, tuple), and
adds up a payload size. After the walk one call to the encoder (C code under orjson) gives
the exact encoded size, escapes included, and refuses what the walk does not look at per
character: lone surrogates. Only when it refuses does a second, slower walk find the path.

Two sizes come out, because one number cannot serve both purposes (a control character is
one byte in memory and six on the wire; an empty list is 56 bytes in memory and two on the
wire): ``wire`` (the encoded size, for batch limits and ``FANOUT_MAX_EVENT_BYTES``) and
``memory`` (what the queued event holds, for ``FANOUT_QUEUE_BYTES``). See ``docs/events.md``.
"""

from __future__ import annotations

import datetime as _dt
import enum
import math
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Final

from ._exceptions import InvalidEvent
from ._json import dumps_strict

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "MAX_ITEMS",
    "Budget",
    "check_dict",
    "check_mapping",
    "memory_estimate",
    "wire_size",
]

#: Nesting deeper than this is refused; it also stops reference cycles.
MAX_DEPTH: Final = 32
#: Keys and values in one event, all mappings together (each object also counts 3, for its
#: table). Counted while walking, so refusing an oversized structure costs at most this many
#: steps whatever the structure pretends to hold.
MAX_ITEMS: Final = 100_000
#: Integers beyond ±MAX_INT are refused: every backend stores a signed 64-bit integer
#: (ClickHouse ``Int64``, PostgreSQL ``bigint``) and orjson encodes no wider.
MAX_INT: Final = 2**63 - 1
#: Budget units an object costs beyond its keys and values (its hash table, ~144 bytes).
_OBJECT_ITEMS: Final = 3
#: Estimated bytes of memory per budget unit: an object header, a pointer, a table slot.
ITEM_BYTES: Final = 48
#: Memory of an event beside its mappings: the tuple, the id, the timestamp.
EVENT_BYTES: Final = 400

_isfinite = math.isfinite
_dict_set = dict.__setitem__

#: The remaining item budget of one event: a one-element list, shared by its mappings.
Budget = list[int]


class _Bad(Exception):
    """Internal: a value that cannot become JSON; collects its key path while unwinding."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.keys: list[str | int] = []


def _path(field: str, keys: list[str | int]) -> str:
    out = field
    for key in reversed(keys):
        out += f"[{key}]" if isinstance(key, int) else f".{_shown(key)}"
    return out


def _shown(text: str) -> str:
    """``text`` safe to print: a lone surrogate or a control character is escaped."""
    if text.isascii() and text.isprintable():
        return text
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


def _repr(value: object) -> str:
    """``repr(value)`` for a message, whatever ``__repr__`` does; at most 60 characters."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a message must not fail on a broken __repr__
        return f"<{type(value).__name__}>"
    return _shown(text if len(text) <= 60 else text[:57] + "...")


def _wide(text: str) -> int:
    """Memory payload of a non-ASCII string: its characters (counted as 2 bytes each) and
    the UTF-8 copy the encoder caches inside it (orjson, in validation's one call).

    Computed from the text alone, never from ``sys.getsizeof``: that changes once the
    UTF-8 copy is cached, so the same value would be counted differently depending on
    whether some other code had encoded it before (and a spooled event read back would
    not equal the original).
    """
    return 34 + 2 * len(text) + len(text.encode("utf-8", "surrogatepass"))


def _too_many() -> _Bad:
    return _Bad(f"holds more than {MAX_ITEMS:,} keys and values in all (the limit per event)")


def _big_int(value: int) -> _Bad:
    return _Bad(
        "is an integer beyond ±(2**63-1), which backends cannot store; send it as a string"
    )


# Memory payload: what a value holds beyond the ITEM_BYTES (48) every key, value and
# object is charged through the budget, as CPython 3.10-3.13 lays them out on 64 bits. The
# literals below, inlined for speed, come from sys.getsizeof plus the 8-byte pointer to each:
#   str (ASCII): 49 + len + 8 => +9 + len     int: 28-36 + 8 => -8     float: 24 + 8 => -16
#   True/False/None (shared): 8 => -40        key: its text + its share of the table => +8
#   object: +3 items for its table (144 bytes; an empty one: 64, so +16 and no items)
#   list: 56 + 8 per item => +8 (the pointers are in the items)
# tests/test_memory_bound.py holds the estimate to within 2x of tracemalloc's count.


def _object(
    value: Mapping[Any, Any], depth: int, budget: Budget, make: type[dict[str, Any]] = dict
) -> tuple[dict[str, Any], int]:
    out = make(value)
    n = len(out)
    if not n:
        return out, 16
    left = budget[0] - 2 * n - _OBJECT_ITEMS
    if left < 0:
        raise _too_many()
    budget[0] = left
    size = 0
    for k, v in out.items():
        if type(k) is not str:
            budget[0] += 2 * n + _OBJECT_ITEMS  # walked again below, with plain keys
            return _object(_plain_keys(out), depth, budget, make)
        t = type(v)
        if t is str:
            size += len(k) + 17 + (len(v) if v.isascii() else _wide(v))
        elif t is int:
            if not -MAX_INT <= v <= MAX_INT:
                e = _big_int(v)
                e.keys.append(k)
                raise e
            size += len(k)
        elif t is bool or v is None:
            size += len(k) - 32
        elif t is float:
            if not _isfinite(v):
                e = _Bad(f"is {v!r}, which JSON cannot represent")
                e.keys.append(k)
                raise e
            size += len(k) - 8
        else:
            try:
                converted, held = _value(v, depth, budget)
            except _Bad as e:
                e.keys.append(k)
                raise
            _dict_set(out, k, converted)  # also for a ReadOnlyDict being built
            size += len(k) + 8 + held
    return out, size


def _plain_keys(value: dict[Any, Any]) -> dict[Any, Any]:
    """``value`` with str-subclass keys as plain text (as the encoders write them); other
    non-string keys are refused."""
    plain: dict[Any, Any] = {}
    for k, v in value.items():
        if type(k) is not str:
            if not isinstance(k, str):
                raise _Bad(f"has a non-string key {_repr(k)}; JSON object keys must be strings")
            k = str.__str__(k)
        plain[k] = v
    return plain


def _array(value: Iterable[Any], depth: int, budget: Budget) -> tuple[list[Any], int]:
    out = list(value)
    left = budget[0] - len(out)
    if left < 0:
        raise _too_many()
    budget[0] = left
    size = 8
    for i, v in enumerate(out):
        t = type(v)
        if t is str:
            size += 9 + (len(v) if v.isascii() else _wide(v))
        elif t is int:
            if not -MAX_INT <= v <= MAX_INT:
                e = _big_int(v)
                e.keys.append(i)
                raise e
            size -= 8
        elif t is bool or v is None:
            size -= 40
        elif t is float:
            if not _isfinite(v):
                e = _Bad(f"is {v!r}, which JSON cannot represent")
                e.keys.append(i)
                raise e
            size -= 16
        else:
            try:
                out[i], held = _value(v, depth, budget)
            except _Bad as e:
                e.keys.append(i)
                raise
            size += held
    return out, size


def _value(value: Any, depth: int, budget: Budget) -> tuple[Any, int]:
    """Convert one non-plain value. The caller's objects may do anything when asked for
    their items or their text, so whatever they raise becomes a ``_Bad`` at this path."""
    if depth >= MAX_DEPTH:
        raise _Bad(f"is nested more than {MAX_DEPTH} levels deep, or contains itself")
    try:
        return _convert(value, depth, budget)
    except _Bad:
        raise
    except RecursionError:
        raise _Bad("is nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - user objects' methods may raise anything
        raise _Bad(
            f"is a {type(value).__name__} that could not be read as JSON "
            f"({type(exc).__name__})"
        ) from None


def _sized(value: Any, budget: Budget) -> None:
    # Refuse before copying: list(x) of ten million items costs 80 MB on its own.
    if len(value) > budget[0]:
        raise _too_many()


def _convert(value: Any, depth: int, budget: Budget) -> tuple[Any, int]:
    t = type(value)
    if t is dict or isinstance(value, Mapping):
        _sized(value, budget)
        return _object(value, depth + 1, budget)
    if t is list or t is tuple:
        _sized(value, budget)
        return _array(value, depth + 1, budget)
    if isinstance(value, enum.Enum):
        return _value(value.value, depth + 1, budget)
    # Subclasses of str, int and float: their plain value, checked like any other.
    if isinstance(value, str):
        return _plain(str.__str__(value), depth, budget)
    if isinstance(value, int):
        return _plain(int.__index__(value), depth, budget)
    if isinstance(value, float):
        return _plain(float.__float__(value), depth, budget)
    if isinstance(value, _dt.datetime):
        return _text(value.isoformat()), 41
    if isinstance(value, (_dt.date, _dt.time)):
        return _text(value.isoformat()), 25
    if isinstance(value, Decimal):
        # The PostHog and Segment SDKs make the same choice: a JSON number, via float.
        number = float(value) if value.is_finite() else math.nan
        if not _isfinite(number):
            raise _Bad(f"is {_repr(value)}, which JSON cannot represent")
        return number, -16
    if isinstance(value, uuid.UUID):
        return str(value), 45
    if isinstance(value, (set, frozenset)):
        _sized(value, budget)
        try:
            items = sorted(value)
        except Exception:  # noqa: BLE001 - unorderable (or badly ordered) members
            items = list(value)
        return _array(items, depth + 1, budget)
    if isinstance(value, (list, tuple)):
        _sized(value, budget)
        return _array(value, depth + 1, budget)
    raise _Bad(
        f"is a {type(value).__name__}, which cannot become JSON; "
        "convert it to str, int, float, bool, list or dict first"
    )


def _plain(value: str | int | float, depth: int, budget: Budget) -> tuple[Any, int]:
    try:
        wrapped, held = _array([value], depth, budget)
    except _Bad as e:
        del e.keys[0]  # the [0] of the wrapping list is not part of the caller's path
        raise
    budget[0] += 1  # the wrapping list's item
    return wrapped[0], held - 8


def _text(value: object) -> str:
    if type(value) is not str:
        raise _Bad(f"converts to a {type(value).__name__}, not a string")
    return value


def check_mapping(
    value: Any, field: str, budget: Budget, make: type[dict[str, Any]]
) -> tuple[dict[str, Any], int]:
    """Copy, check and convert one of an event's mappings; return it and its payload size.

    Raises ``InvalidEvent`` naming the path of the first value that cannot become JSON.
    """
    if type(value) is not dict and not isinstance(value, Mapping):  # the ABC check is slow
        raise InvalidEvent(f"{field} must be a dict, not {type(value).__name__}", path=field)
    try:
        if type(value) is not dict:
            _sized(value, budget)
        return _object(value, 1, budget, make)
    except _Bad as e:
        path = _path(field, e.keys)
        raise InvalidEvent(f"{path} {e.message}", path=path) from None
    except Exception as exc:  # noqa: BLE001 - a custom Mapping's methods may raise anything
        raise InvalidEvent(
            f"{field} could not be read as a dict ({type(exc).__name__})", path=field
        ) from None


def check_dict(
    value: dict[str, Any], field: str, budget: Budget, make: type[dict[str, Any]]
) -> tuple[dict[str, Any], int]:
    """:func:`check_mapping` for a non-empty plain ``dict``, the common case: the same walk
    without the type checks a plain dict needs none of."""
    try:
        return _object(value, 1, budget, make)
    except _Bad as e:
        path = _path(field, e.keys)
        raise InvalidEvent(f"{path} {e.message}", path=path) from None
    except Exception as exc:  # noqa: BLE001 - e.g. a key whose __eq__ raises
        raise InvalidEvent(
            f"{field} could not be read as a dict ({type(exc).__name__})", path=field
        ) from None


def wire_size(values: tuple[Any, ...], fields: tuple[str, ...]) -> int:
    """The encoded size of an event's checked values (ids, name, mappings), escapes included.

    One call into the encoder; when it refuses (a lone surrogate, which the walk does not
    look for character by character), find the culprit and raise ``InvalidEvent`` at its
    path.
    """
    try:
        return len(dumps_strict(values))
    except Exception:  # noqa: BLE001 - whatever the encoder refuses, name the culprit below
        pass
    for value, field in zip(values, fields, strict=True):
        keys = _unencodable(value)
        if keys is not None:
            path = _path(field, keys)
            raise InvalidEvent(
                f"{path} holds a lone surrogate (a half of a UTF-16 pair, as from "
                "surrogateescape decoding), which UTF-8 and JSON cannot carry",
                path=path,
            )
    raise InvalidEvent("the event cannot be encoded as JSON", path=fields[-1])


def _unencodable(value: Any) -> list[str | int] | None:
    """The key path (innermost first) of a string UTF-8 cannot encode, or ``None``."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        item, keys = stack.pop()
        if isinstance(item, str):
            if not _encodes(item):
                return keys
        elif isinstance(item, dict):
            for k, v in item.items():
                if isinstance(k, str) and not _encodes(k):
                    return [k, *keys]
                stack.append((v, [k, *keys]))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, [i, *keys]) for i, v in enumerate(item))
    return None


def _encodes(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def memory_estimate(payload: int, budget_left: int) -> int:
    """Bytes a queued event holds: its own parts, its strings' text, its containers."""
    return EVENT_BYTES + payload + ITEM_BYTES * (MAX_ITEMS - budget_left)
