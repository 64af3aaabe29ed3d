"""fanout's native collector protocol, version 1: the numbers both sides agree on.

The client (``fanout.providers.collector``) and the reference server (``fanout.collector``)
import these constants from here, so the limits a client batches by are the limits the
server enforces; ``docs/protocol.md`` documents the same values. Standard library only: the
core imports this module, and the server's dependencies stay behind the ``collector`` extra.
"""

from __future__ import annotations

import dataclasses
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "BATCH_PATH",
    "HEALTH_PATH",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_CONTAINERS",
    "MAX_BATCH_EVENTS",
    "MAX_EVENT_BYTES",
    "PROTOCOL_VERSION",
    "KEY_PREFIX",
    "Limits",
    "parse_url",
]

#: Bumped only for an incompatible change; the version is also the first path segment.
PROTOCOL_VERSION: Final = 1
BATCH_PATH: Final = "/v1/batch"
HEALTH_PATH: Final = "/v1/health"
PERSON_EVENTS_PATH: Final = "/v1/persons/{person_id}/events"

#: Most events in one ``POST /v1/batch``; more is answered 413.
MAX_BATCH_EVENTS: Final = 1000
#: Most bytes of one request body *after* gzip decoding; more is answered 413.
MAX_BATCH_BYTES: Final = 5 * 1024 * 1024
#: Most bytes of one event as compact UTF-8 JSON; a larger event is rejected on its own.
MAX_EVENT_BYTES: Final = 512 * 1024
#: Most JSON arrays and objects (``[`` and ``{``, counted in the raw body, strings
#: included) in one request body; more is answered 413. Each costs a Python object of
#: ~60 bytes when decoded, so this bounds what a hostile body of empty lists inflates to
#: (~6 MB instead of ~120 MB); real batches hold a few per event.
MAX_BATCH_CONTAINERS: Final = 100_000


@dataclasses.dataclass(frozen=True)
class Limits:
    """The limits a server enforces; the defaults are the protocol's. A server may lower
    them (the tests do, to exercise 413 and per-event rejections with small data)."""

    max_batch_events: int = MAX_BATCH_EVENTS
    max_batch_bytes: int = MAX_BATCH_BYTES
    max_event_bytes: int = MAX_EVENT_BYTES
    max_batch_containers: int = MAX_BATCH_CONTAINERS


#: Server keys look like ``sk_`` + 43 URL-safe characters (256 random bits).
KEY_PREFIX: Final = "sk_"


def parse_url(value: str) -> str:
    """A collector's base URL (the ``url`` setting): http(s), without ``/v1/...``."""
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// base URL, e.g. http://127.0.0.1:8765")
    if url.endswith(BATCH_PATH):
        url = url[: -len(BATCH_PATH)]
    if url.endswith("/v1"):
        raise ValueError(
            "give the collector's base URL without /v1 (fanout adds /v1/batch), "
            f"e.g. {url[: -len('/v1')]}"
        )
    return url
