"""Turning one ``POST /v1/batch`` body into rows to store, rejections, and identity links.

Pure functions, no HTTP and no storage, so every rule of the protocol is testable alone.
The rules protect the store and the rest of the batch:

- A body that is not a batch (not gzip when it says so, not JSON, no ``batch`` list) is a
  :class:`ProtocolError` 400; a body above the byte or event limit is 413, checked before
  and during decoding so a gzip bomb cannot inflate past the limit.
- Each event is validated on its own with the same rules as the client
  (:meth:`fanout.Event.from_dict`) plus what the server needs: a string ``event_id`` (the
  dedupe key), valid UTF-8 text, and at most ``MAX_EVENT_BYTES`` once encoded. A bad event
  is rejected by index; the valid events of the same batch are still stored.
- Invalid UTF-8 inside a JSON string does not fail the whole body: it is decoded with
  ``surrogateescape`` and the events that carry it are rejected one by one.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from .._events import Event
from .._exceptions import InvalidEvent
from .protocol import Limits

__all__ = ["Ingested", "Link", "ProtocolError", "Row", "decode_body", "validate_batch"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_IDENTITY: Final = frozenset({"", "identity"})


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
    body: bytes, content_encoding: str | None = None, limits: Limits = _DEFAULT
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
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # Keep the valid events: bad bytes become lone surrogates, caught per event below.
        text = body.decode("utf-8", "surrogateescape")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(400, "body is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("batch"), list):
        raise ProtocolError(400, 'body must be a JSON object {"batch": [event, ...]}')
    batch: list[Any] = data["batch"]
    if len(batch) > limits.max_batch_events:
        raise ProtocolError(413, f"more than {limits.max_batch_events} events in one batch")
    return batch


def _gunzip(body: bytes, max_bytes: int) -> bytes:
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
    """Validate each event of ``batch``; never raises for a bad event."""
    max_event = limits.max_event_bytes
    rows: list[Row] = []
    rejected: list[tuple[int, str]] = []
    links: list[Link] = []
    for index, raw in enumerate(batch):
        try:
            row, link = _row(raw, max_event)
        except _Reject as exc:
            rejected.append((index, str(exc)))
            continue
        rows.append(row)
        if link is not None:
            links.append(link)
    return Ingested(rows, rejected, links)


class _Reject(Exception):
    pass


def _row(raw: Any, max_event: int) -> tuple[Row, Link | None]:
    if not isinstance(raw, dict):
        raise _Reject("an event must be a JSON object")
    event_id = raw.get("event_id")
    if type(event_id) is not str:
        raise _Reject("event_id is required and must be a string")
    try:
        event = Event.from_dict(raw, max_bytes=None)
    except InvalidEvent as exc:
        raise _Reject(str(exc)) from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise _Reject(f"invalid event: {type(exc).__name__}") from None
    doc = event.to_dict()
    try:
        body = _dumps(doc).encode("utf-8")
    except UnicodeEncodeError:
        raise _Reject("the event contains invalid UTF-8 (or a lone surrogate)") from None
    if len(body) > max_event:
        raise _Reject(f"the event is {len(body)} bytes, above the {max_event}-byte limit")
    timestamp: str = doc["timestamp"]
    row = Row(event.event_id, event.kind, timestamp, event.person_id, event.anonymous_id,
              event.name, body)
    link = None
    if event.person_id is not None:
        if event.kind == "identify" and event.anonymous_id is not None:
            link = Link(event.anonymous_id, event.person_id, timestamp)
        elif event.kind == "alias" and event.previous_id is not None:
            link = Link(event.previous_id, event.person_id, timestamp)
    return row, link
