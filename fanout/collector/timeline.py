"""Timeline pages: an opaque cursor, and pages bounded in events and in bytes.

A person's timeline is ordered by event time, then by arrival (a store-assigned sequence
number), so ``(timestamp, seq)`` of the last event returned is a stable position: events
stored later with an earlier timestamp do not shift the pages already read. The cursor is
that pair, base64url-encoded; clients treat it as opaque.

A page stops at ``limit`` events or when the next event would take it past ``max_bytes``
(always at least one event, so a page can exceed the cap by at most one event of at most
``MAX_EVENT_BYTES``). The stores hand back each event's stored JSON as bytes and the app
joins them into the response without decoding them: reading a large timeline costs one
page of memory, not the whole history.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Final, NamedTuple

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_PAGE_BYTES",
    "MAX_LIMIT",
    "MAX_PAGE_BYTES",
    "Cursor",
    "Page",
    "decode_cursor",
    "cut",
    "encode_cursor",
]

DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 10_000
#: Bytes of event JSON per page, by default and at most (``max_bytes=`` query parameter).
DEFAULT_PAGE_BYTES: Final = 1024 * 1024
MAX_PAGE_BYTES: Final = 8 * 1024 * 1024


class Cursor(NamedTuple):
    """The position after the last event of a page."""

    timestamp: str
    seq: int


class Page(NamedTuple):
    events: list[bytes]  # each event's stored JSON
    next_cursor: Cursor | None  # None: this was the last page


def encode_cursor(cursor: Cursor) -> str:
    raw = f"{cursor.seq}|{cursor.timestamp}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """The cursor of ``text``; ``ValueError`` for anything a server did not hand out."""
    if len(text) > 200:
        raise ValueError("cursor too long")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("malformed cursor") from None
    seq, sep, timestamp = raw.partition("|")
    if not sep or not seq.isdigit() or len(timestamp) != 24 or not timestamp.endswith("Z"):
        raise ValueError("malformed cursor")
    return Cursor(timestamp, int(seq))


def cut(rows: Iterable[tuple[bytes, str, int]], limit: int, max_bytes: int) -> Page:
    """A page from ``(body, timestamp, seq)`` rows in timeline order, read lazily: at most
    one row past the page is read (to know whether there is a next page)."""
    events: list[bytes] = []
    size = 0
    last: tuple[str, int] | None = None
    for body, timestamp, seq in rows:
        if len(events) >= limit or (events and size + len(body) > max_bytes):
            assert last is not None
            return Page(events, Cursor(*last))
        events.append(body)
        size += len(body)
        last = (timestamp, seq)
    return Page(events, None)
