"""What fanout shows about the ``segment`` provider without importing the Segment SDK.

The entry point imports this module for every process that loads plugins, enabled or
not, so it holds only the declaration: settings, batch limits and the host parser. The SDK
is imported by :mod:`fanout_segment._provider`, when the provider is enabled. The constant
copied from the SDK is checked against it by ``tests/test_plugin.py``.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from fanout.provider import BatchLimits, Setting

__all__ = [
    "DEFAULT_HOST",
    "LIMITS",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_EVENTS",
    "MAX_MESSAGE_BYTES",
    "SETTINGS",
    "parse_host",
]

DEFAULT_HOST: Final = "https://api.segment.io"
#: Segment's HTTP Tracking API: "a maximum of 500KB per batch request and 32KB per call"
#: (the SDK's ``segment.analytics.consumer.MAX_MSG_SIZE``). Read as decimal kilobytes for
#: the batch, to be safe.
MAX_BATCH_BYTES: Final = 500_000
MAX_MESSAGE_BYTES: Final = 32 * 1024
#: At most this many events per batch request (Segment docs; more are accepted with a 200
#: and then dropped).
MAX_BATCH_EVENTS: Final = 2500


def parse_host(value: str) -> str:
    """``SEGMENT_HOST``: an http(s) base URL, without the trailing slash the SDK strips."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL, e.g. https://api.segment.io")
    return value.removesuffix("/")


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "write_key",
        help="Write key of the Segment source (Sources → your source → Settings → API Keys).",
        aliases=("SEGMENT_WRITE_KEY",),
        required=True,
        secret=True,
    ),
    Setting(
        "host",
        help="Tracking API base URL; https://events.eu1.segmentapis.com for EU workspaces.",
        aliases=("SEGMENT_HOST",),
        default=DEFAULT_HOST,
        parse=parse_host,
    ),
)

#: From Segment's HTTP Tracking API docs: 500 KB per batch request, 32 KB per message, 2500
#: messages per batch. ``max_bytes`` is the SDK's own 475,000 (room for the envelope and the
#: per-message fields fanout's size estimate does not count); the provider checks the exact
#: encoded size before sending and splits or rejects what would still exceed the limits.
LIMITS: Final = BatchLimits(
    max_events=MAX_BATCH_EVENTS,
    max_bytes=475_000,
    max_event_bytes=MAX_MESSAGE_BYTES,
)
