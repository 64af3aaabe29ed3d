"""Turning one ``POST /v1/batch`` body into rows to store, rejections, and identity links.

Pure functions, no HTTP and no storage, so every rule of the protocol is testable alone.
The rules protect the store and the rest of the batch:

- A body that is not a batch (not gzip when it says so, not JSON, no ``batch`` list) is a
  :class:`ProtocolError` 400; a body above the byte or event limit is 413, checked before
  and during decoding so a gzip bomb cannot inflate past the limit.
- Each event is validated on its own with the client's rules (ids, name, kind, nesting
  depth, ISO timestamps) plus what the server needs: a string ``event_id`` (the dedupe
  key), valid UTF-8 text, no U+0000 in ids and the name (they are indexed columns, and
  PostgreSQL's text cannot hold NUL; both stores refuse them alike), and at most
  ``MAX_EVENT_BYTES`` once encoded. Missing or null
  optional fields take their defaults, so clients may omit them. A bad event
  is rejected by index; the valid events of the same batch are still stored.
- Invalid UTF-8 inside a JSON string does not fail the whole body: it is decoded with
  ``surrogateescape`` and the events that carry it are rejected one by one.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
import zlib
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from .._events import (
    KINDS,
    MAX_DEPTH,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    SCHEMA_VERSION,
    format_timestamp,
)
from .._json import dumps, dumps_strict
from .protocol import Limits
from .typed import DecodeError, LooseEvent, TypedEvent, as_dict, decode_typed, encode

__all__ = ["Ingested", "Link", "ProtocolError", "Row", "decode_body", "validate_batch"]

_IDENTITY: Final = frozenset({"", "identity"})
# Digits to "0", "[" and "{" to "[", everything else to " ": a pass over a body gives its
# count of arrays and objects, and, for a body the general way decodes, whether it holds
# a run of 19 digits, which marks a number orjson may not read exactly (int64 holds every
# 18-digit integer, not every 19-digit one; msgspec reads them all exactly).
_SCAN: Final = bytes(48 if 48 <= b <= 57 else 91 if b in b"[{" else 32 for b in range(256))
_LONG_DIGITS: Final = b"0" * 19

try:
    import orjson
except ImportError:  # pragma: no cover - PyPy and platforms without an orjson wheel
    _orjson_loads = None
else:
    _orjson_loads = orjson.loads
logger = logging.getLogger("fanout.collector")
#: The stored event's encoder (see fanout.collector.typed), and its strict form for the
#: fast paths (an event it refuses takes the long way, which names the mistake). Without
#: msgspec, orjson: :func:`dumps` writes integers beyond 64 bits by the standard library.
_encode: Final = encode if encode is not None else dumps
_encode_strict: Final = encode if encode is not None else dumps_strict


class ProtocolError(Exception):
    """The request as a whole is refused with ``status``; ``message`` is safe to return."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Row(NamedTuple):
    """One valid event, ready for the store. ``body`` is its canonical JSON (UTF-8)."""

    event_id: str
    kind: str
    timestamp: str
    person_id: str | None
    anonymous_id: str | None
    name: str | None
    body: bytes


_new_row: Final = tuple.__new__


class Link(NamedTuple):
    """``anonymous_id`` belongs to ``person_id`` (from an identify, or an alias)."""

    anonymous_id: str
    person_id: str
    timestamp: str


class Ingested(NamedTuple):
    rows: list[Row]
    rejected: list[tuple[int, str]]
    links: list[Link]


_DEFAULT = Limits()


def decode_body(
    body: bytes | bytearray, content_encoding: str | None = None, limits: Limits = _DEFAULT
) -> list[Any]:
    """The ``batch`` list of a request body, or a :class:`ProtocolError`."""
    max_bytes = limits.max_batch_bytes
    encoding = (content_encoding or "").strip().lower()
    if encoding == "gzip":
        body = _gunzip(body, max_bytes)
    elif encoding not in _IDENTITY:
        raise ProtocolError(400, f"unsupported Content-Encoding {encoding[:40]!r}; use gzip")
    if len(body) > max_bytes:
        raise ProtocolError(413, f"body above {max_bytes} bytes; send smaller batches")
    # A body holds at most as many ``[`` and ``{`` as it has bytes: most bodies need no
    # count (a pass over the body, 3,800 instructions per event of a client's batch).
    if (len(body) > limits.max_batch_containers
            and body.translate(_SCAN).count(b"[") > limits.max_batch_containers):
        raise ProtocolError(413, f"more than {limits.max_batch_containers} JSON arrays and "
                                 "objects in one body; send smaller batches")
    batch: list[Any] | None = None
    if decode_typed is not None:
        # Typed events for the common body (msgspec reads every integer and float
        # exactly); anything else is decoded again below, the general way (see
        # fanout.collector.typed).
        try:
            batch = decode_typed(body)
        except (DecodeError, RecursionError):  # (msgspec's depth is Python's recursion
            pass  # limit, under the stack already in use; orjson's is 1,024 levels)
    if batch is None:
        data = _loads(body, body.translate(_SCAN).find(_LONG_DIGITS) < 0)
        if not isinstance(data, dict) or not isinstance(data.get("batch"), list):
            raise ProtocolError(400, 'body must be a JSON object {"batch": [event, ...]}')
        batch = data["batch"]
    if len(batch) > limits.max_batch_events:
        raise ProtocolError(413, f"more than {limits.max_batch_events} events in one batch")
    return batch


def _loads(body: bytes | bytearray, exact: bool) -> Any:
    """The body's JSON: orjson where it gives exactly what the standard library would (a
    third of the CPU), the standard library for everything else.

    orjson refuses invalid UTF-8, lone surrogates, NaN and Infinity and too deep nesting
    (the standard library then decides, as it always did), but reads an integer beyond 64
    bits as a float without a word; a body with a run of 19 or more digits anywhere (such
    an integer, or merely a long id or a long fraction: ``exact`` is false) therefore
    skips orjson.
    """
    if _orjson_loads is not None and exact:
        try:
            return _orjson_loads(body)
        except ValueError:  # orjson.JSONDecodeError
            pass
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # Keep the valid events: bad bytes become lone surrogates, caught per event below.
        text = body.decode("utf-8", "surrogateescape")
    try:
        return json.loads(text, parse_constant=_no_constants, parse_float=_finite,
                          parse_int=_integer)
    except (ValueError, RecursionError):
        raise ProtocolError(400, "body is not valid JSON") from None


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class _OutOfRange:
    """A JSON number beyond the range of a float (``1e400``), which the standard library
    reads as infinity, or an integer of more digits than Python converts: no encoder
    takes this, so only its event is rejected (both encoders would store infinity as
    ``null``)."""

    __slots__ = ()


_OUT_OF_RANGE: Final = _OutOfRange()


def _finite(text: str) -> float | _OutOfRange:
    value = float(text)
    return value if value - value == 0.0 else _OUT_OF_RANGE  # inf - inf is NaN


def _integer(text: str) -> int | _OutOfRange:
    """An integer, or, beyond the digits Python converts (4,300 by default), a value only
    its event is rejected for: ``int()`` raising would make the whole body a 400."""
    try:
        return int(text)
    except ValueError:
        return _OUT_OF_RANGE


def _gunzip(body: bytes | bytearray, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error:
        raise ProtocolError(400, "body is not valid gzip") from None
    if len(out) > max_bytes:
        raise ProtocolError(413, f"body above {max_bytes} bytes once decompressed")
    if not inflater.eof:
        raise ProtocolError(400, "body is truncated gzip")
    return out


def validate_batch(batch: Sequence[Any], limits: Limits = _DEFAULT) -> Ingested:
    """Validate each event of ``batch``; never raises for a bad event.

    Every client mistake is a :class:`_Reject` raised by the checks below. The broad
    ``except`` is the last line of defence for a case the checks missed: that event is
    rejected (and the miss logged for us to fix) instead of turning the batch into a 500
    that a client would retry forever.
    """
    max_event = limits.max_event_bytes
    rows: list[Row] = []
    rejected: list[tuple[int, str]] = []
    links: list[Link] = []
    for index, raw in enumerate(batch):
        kind = type(raw)
        if kind is TypedEvent or kind is LooseEvent:
            # The typed fast path, inline (a call per event cost 460 to 820 instructions
            # of about 12,000): a plain track or page as fanout clients send it gets its
            # row here, anything else is judged the long way, by _row. For a TypedEvent
            # the decoder has checked the JSON types, the kind, v, the ids' and name's
            # lengths, that event_id and timestamp are there, and that no text holds
            # U+0000 (fanout.collector.typed), so what _plain checks beyond that is spelled
            # out below; a LooseEvent (its body broke one of those rules somewhere, or may
            # hold U+0000) had its JSON types checked only, and takes all of _plain. Tests
            # hold this path to _row's verdicts and bytes on generated bodies.
            strict = kind is TypedEvent
            kind = raw.kind
            event_id = raw.event_id
            timestamp = raw.timestamp
            person_id = raw.person_id
            anonymous_id = raw.anonymous_id
            name = raw.name
            if (
                strict
                and (kind == "track" or kind == "page") and not event_id.isspace()
                and (person_id is not None or anonymous_id is not None)
                and (person_id is None or not person_id.isspace())
                and (anonymous_id is None or not anonymous_id.isspace())
                and (name is None and kind == "page"
                     or name is not None and not name.isspace())
                and raw.group is None and raw.previous_id is None
                and len(timestamp) == 24 and timestamp[23] == "Z"
                and timestamp[19] == "." and timestamp[10] == "T"
            ) or (
                not strict
                and _plain(kind, raw.v, event_id, timestamp, person_id, anonymous_id, name,
                           raw.group, raw.previous_id)
            ):
                # Its missing fields given the stored document's values (a null decodes
                # as None), it is encoded as it is; its depth is within MAX_DEPTH by type.
                try:
                    _utc_datetime(timestamp)  # (the calendar)
                    raw.v = SCHEMA_VERSION
                    if raw.properties is None:
                        raw.properties = {}
                    if raw.traits is None:
                        raw.traits = {}
                    if raw.context is None:
                        raw.context = {}
                    body = _encode_strict(raw)
                except (ValueError, TypeError):  # the calendar's, or the encoder's
                    pass
                else:
                    if len(body) <= max_event:
                        rows.append(_new_row(Row, (event_id, kind, timestamp, person_id,
                                                   anonymous_id, name, body)))
                        continue
            raw = as_dict(raw)  # type: ignore[misc]  # (None only without msgspec)
        elif kind is dict:
            row = _plain_row(raw, max_event)
            if row is not None:
                rows.append(row)
                continue
        try:
            row, link = _row(raw, max_event)
        except _Reject as exc:
            rejected.append((index, str(exc)))
            continue
        except Exception:
            logger.exception("unexpected error validating event %d; rejected", index)
            rejected.append((index, "the event could not be validated"))
            continue
        rows.append(row)
        if link is not None:
            links.append(link)
    return Ingested(rows, rejected, links)


class _Reject(Exception):
    pass


def _iso(text: str) -> bool:
    """Whether ``text`` is a date-time ``fromisoformat`` reads (the timestamp fast path)."""
    try:
        _dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


# The checks below are the client's (fanout._events.build_event) applied to JSON input,
# written against plain dicts: building an Event and its to_dict() again cost four times
# as much per event, and the server's CPU per event bounds its throughput.


def _ident(raw: dict[str, Any], field: str) -> str | None:
    value = raw.get(field)
    if value is None:
        return None
    if type(value) is not str or not value or len(value) > MAX_ID_LENGTH or value.isspace():
        raise _Reject(f"{field} must be a non-empty string of at most {MAX_ID_LENGTH} "
                      "characters, or null")
    if "\x00" in value:
        raise _Reject(f"{field} must not contain U+0000 (NUL)")
    return value


def _object(raw: dict[str, Any], field: str) -> dict[str, Any] | None:
    value = raw.get(field)
    if value is None or value == {}:
        return None
    if type(value) is not dict:
        raise _Reject(f"{field} must be a JSON object")
    if not _shallow(value, 1):
        raise _Reject(f"{field} is nested more than {MAX_DEPTH} levels deep")
    return value


def _shallow(container: Any, depth: int) -> bool:
    values: Any = container.values() if type(container) is dict else container
    for value in values:
        t = type(value)
        if t is dict or t is list:
            if depth >= MAX_DEPTH or not _shallow(value, depth + 1):
                return False
    return True


def _timestamp(value: Any) -> str:
    """The canonical ``YYYY-MM-DDTHH:MM:SS.mmmZ`` form (what fanout clients send)."""
    if type(value) is not str:
        raise _Reject("timestamp must be an ISO 8601 string")
    try:
        if len(value) == 24 and value[-1] == "Z" and value[19] == "." and value[10] == "T":
            _dt.datetime.fromisoformat(value[:-1])
            return value
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_dt.timezone.utc)
        # Converting to UTC can leave the years 1-9999 (0001-01-01T00:00:00+01:00).
        return format_timestamp(parsed)
    except (ValueError, OverflowError):
        raise _Reject(f"timestamp {value[:40]!r} is not an ISO 8601 date-time "
                      "between the years 1 and 9999 in UTC") from None


def _valid_id(value: Any) -> bool:
    """The common case of :func:`_ident`, as one expression (no exception set up)."""
    return (type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and not value.isspace()
            and "\x00" not in value)


_fromisoformat: Final = _dt.datetime.fromisoformat


def _before_z(text: str) -> _dt.datetime:
    return _fromisoformat(text[:23])


#: ``fromisoformat`` of a ``YYYY-MM-DDTHH:MM:SS.mmmZ`` timestamp, or a ValueError:
#: Python 3.11 reads the ``Z`` itself (no slice to make: 550 of the typed path's 12,000
#: instructions per event). For a 24-character text with ``T``, ``.`` and ``Z`` where the
#: shape has them, it succeeds only where the slice's does (a ``+`` or ``-`` inside would
#: make the ``Z`` part of an offset, which no offset may end with), so it accepts no
#: timestamp :func:`_row` would not store as it is (tests hold the two to that).
_utc_datetime: Final = _fromisoformat if sys.version_info >= (3, 11) else _before_z
#: An event's encoding with at most this many ``{`` and ``[`` bytes has every field within
#: ``MAX_DEPTH``: the event object is one of them, a field nested N levels deep needs N
#: more. Brackets inside strings count too, which only sends more events the long way.
_SHALLOW_BRACKETS: Final = MAX_DEPTH + 1


def _plain_row(raw: dict[str, Any], max_event: int) -> Row | None:
    """The row of a ``track`` or ``page`` event as fanout clients send them, or ``None``:
    then :func:`_row` decides, and names the mistake if there is one.

    Only what ``_row`` would accept, with the same row, gets a row here (tests hold the two
    to that on generated events), for about a fifth less CPU per event (validate_batch of
    client-encoded batches, alternating with the full checks): the JSON types checked here,
    the values by :func:`_plain`.
    """
    get = raw.get
    kind = get("kind", "track")
    event_id = get("event_id")
    person_id = get("person_id")
    anonymous_id = get("anonymous_id")
    name = get("name")
    timestamp = get("timestamp")
    version = get("v")
    properties = get("properties")
    traits = get("traits")
    context = get("context")
    if not (
        type(kind) is str and type(event_id) is str and type(timestamp) is str
        and (version is None or type(version) is int)  # not a bool, which equals 1
        and (person_id is None or type(person_id) is str)
        and (anonymous_id is None or type(anonymous_id) is str)
        and (name is None or type(name) is str)
        and (properties is None or type(properties) is dict)
        and (traits is None or type(traits) is dict)
        and (context is None or type(context) is dict)
        and _plain(kind, version, event_id, timestamp, person_id, anonymous_id, name,
                   get("group"), get("previous_id"))
    ):
        return None
    try:
        body = _encode_strict(_document(
            kind, event_id, timestamp, person_id, anonymous_id, name,
            {} if properties is None else properties, {} if traits is None else traits,
            {} if context is None else context, None, None,
        ))  # fmt: skip
    except (ValueError, TypeError):  # the encoders' errors are TypeErrors, and ValueErrors
        return None
    return _checked_row(body, max_event, event_id, kind, timestamp, person_id, anonymous_id,
                        name)


def _plain(
    kind: str, version: int | None, event_id: str | None, timestamp: str | None,
    person_id: str | None, anonymous_id: str | None, name: str | None, group: Any,
    previous_id: Any,
) -> bool:
    """Whether an event whose fields have the JSON types of a valid one is a plain
    ``track`` or ``page`` the fast paths take: the value checks, one expression of
    C-level checks per field. Events with a group or a previous id, identifies, aliases
    and groups (they link identities or need more checks) always take the long way."""
    if not (
        (kind == "track" or kind == "page")
        and (version is None or version == SCHEMA_VERSION)
        and event_id is not None and 0 < len(event_id) <= MAX_ID_LENGTH
        and not event_id.isspace() and "\x00" not in event_id
        and (person_id is not None or anonymous_id is not None)
        and (person_id is None or (0 < len(person_id) <= MAX_ID_LENGTH
                                   and not person_id.isspace() and "\x00" not in person_id))
        and (anonymous_id is None or (0 < len(anonymous_id) <= MAX_ID_LENGTH
                                      and not anonymous_id.isspace()
                                      and "\x00" not in anonymous_id))
        and ((name is None and kind == "page")
             or (name is not None and 0 < len(name) <= MAX_NAME_LENGTH and not name.isspace()
                 and "\x00" not in name))
        and group is None and previous_id is None
        and timestamp is not None and len(timestamp) == 24 and timestamp[23] == "Z"
        and timestamp[19] == "." and timestamp[10] == "T"
    ):
        return False
    try:
        _fromisoformat(timestamp[:23])
    except ValueError:
        return False
    return True


def _checked_row(
    body: bytes, max_event: int, event_id: str, kind: str, timestamp: str,
    person_id: str | None, anonymous_id: str | None, name: str | None,
) -> Row | None:
    """The row of a plain event encoded as ``body``, if it is within the size limit and
    its nesting depth is: checked on the encoding, not by walking the values (counting
    brackets cost less, in time and in instructions, than walking typical properties). The
    encoder has refused lone surrogates and numbers JSON cannot carry (``_row`` then
    rejects them, or stores an integer beyond 64 bits exactly)."""
    if len(body) > max_event or body.count(b"{") + body.count(b"[") > _SHALLOW_BRACKETS:
        return None
    return _new_row(Row, (event_id, kind, timestamp, person_id, anonymous_id, name, body))


def _document(
    kind: str, event_id: str | None, timestamp: str, person_id: str | None,
    anonymous_id: str | None, name: str | None, properties: dict[str, Any],
    traits: dict[str, Any], context: dict[str, Any], group: Any, previous_id: str | None,
) -> dict[str, Any]:
    """The stored event's document, its keys in the protocol's order: one layout for the
    fast path and the full checks, so the rows they store cannot drift apart."""
    return {
        "v": SCHEMA_VERSION,
        "kind": kind,
        "event_id": event_id,
        "timestamp": timestamp,
        "person_id": person_id,
        "anonymous_id": anonymous_id,
        "name": name,
        "properties": properties,
        "traits": traits,
        "context": context,
        "group": group,
        "previous_id": previous_id,
    }  # fmt: skip


def _row(raw: Any, max_event: int) -> tuple[Row, Link | None]:
    # The common case (a fanout client's event) is checked inline, one expression per
    # field; whatever fails it goes through the helper that names the mistake. Per-event
    # validation bounds the server's throughput, so its cost per event matters.
    if type(raw) is not dict:
        raise _Reject("an event must be a JSON object")
    get = raw.get
    version = get("v")
    if version is not None and (type(version) is not int or version != SCHEMA_VERSION):
        raise _Reject(f"v must be {SCHEMA_VERSION} (the event schema version) or omitted")
    kind = get("kind", "track")
    if type(kind) is not str or kind not in KINDS:
        raise _Reject(f"kind must be one of {', '.join(sorted(KINDS))}")
    event_id = get("event_id")
    if not _valid_id(event_id):
        event_id = _ident(raw, "event_id")
        if event_id is None:
            raise _Reject("event_id is required and must be a string")
    person_id = get("person_id")
    if person_id is not None and not _valid_id(person_id):
        person_id = _ident(raw, "person_id")
    anonymous_id = get("anonymous_id")
    if anonymous_id is not None and not _valid_id(anonymous_id):
        anonymous_id = _ident(raw, "anonymous_id")
    if person_id is None and anonymous_id is None:
        raise _Reject("an event needs a person_id or an anonymous_id")
    name = get("name")
    if name is not None or kind == "track":
        if type(name) is not str or not name or len(name) > MAX_NAME_LENGTH or name.isspace():
            raise _Reject(f"name must be a non-empty string of at most {MAX_NAME_LENGTH} "
                          "characters")
        if "\x00" in name:
            raise _Reject("name must not contain U+0000 (NUL)")
    previous_id = get("previous_id")
    if previous_id is not None:
        previous_id = _ident(raw, "previous_id")
    if kind == "alias" and (previous_id is None or person_id is None):
        raise _Reject("an alias needs a person_id and a previous_id")
    if kind == "identify" and person_id is None:
        raise _Reject("an identify needs a person_id")
    group = get("group")
    if group is not None:
        if type(group) is not dict:
            raise _Reject("group must be an object with 'type' and 'id'")
        group = {"type": _ident(group, "type"), "id": _ident(group, "id")}
        if group["id"] is None or group["type"] is None:
            raise _Reject("group needs a 'type' and an 'id'")
    elif kind == "group":
        raise _Reject("a group event needs a group")
    timestamp = get("timestamp")
    if not (type(timestamp) is str and len(timestamp) == 24 and timestamp[23] == "Z"
            and timestamp[19] == "." and timestamp[10] == "T" and _iso(timestamp[:23])):
        timestamp = _timestamp(timestamp)
    properties = get("properties")
    if not (type(properties) is dict and _shallow(properties, 1)):
        properties = _object(raw, "properties") or {}
    traits = get("traits")
    if traits is None:
        traits = {}
    elif not (type(traits) is dict and _shallow(traits, 1)):
        traits = _object(raw, "traits") or {}
    context = get("context")
    if context is None:
        context = {}
    elif not (type(context) is dict and _shallow(context, 1)):
        context = _object(raw, "context") or {}
    doc = _document(kind, event_id, timestamp, person_id, anonymous_id, name, properties,
                    traits, context, group, previous_id)  # fmt: skip
    try:
        body = _encode(doc)
    except UnicodeEncodeError:
        raise _Reject("the event contains invalid UTF-8 (or a lone surrogate)") from None
    except (TypeError, ValueError):
        raise _Reject("the event holds a number JSON cannot carry (out of range)") from None
    if len(body) > max_event:
        raise _Reject(f"the event is {len(body)} bytes, above the {max_event}-byte limit")
    # tuple.__new__ in C, not the NamedTuple's generated __new__ (a Python call).
    row = _new_row(Row, (event_id, kind, timestamp, person_id, anonymous_id, name, body))
    link = None
    if person_id is not None:
        if kind == "identify" and anonymous_id is not None:
            link = Link(anonymous_id, person_id, timestamp)
        elif kind == "alias" and previous_id is not None:
            link = Link(previous_id, person_id, timestamp)
    return row, link
