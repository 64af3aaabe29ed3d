"""fanout-segment: the ``segment`` provider for fanout.

Installed, it is found through the ``fanout`` entry-point group; with ``SEGMENT_WRITE_KEY``
set (or ``FANOUT_SEGMENT_WRITE_KEY``) every ``fanout.track()`` also reaches Segment, in the
format the official ``segment-analytics-python`` SDK sends, batched, retried and isolated by
fanout's channel rather than by the SDK's own thread.
"""

from __future__ import annotations

import fanout
from fanout.hookspecs import RegisterProvider
from fanout.provider import BatchLimits, Capability, Setting

from .__about__ import __version__
from ._message import to_message
from ._provider import (
    DEFAULT_HOST,
    MAX_BATCH_EVENTS,
    MAX_MESSAGE_BYTES,
    SegmentProvider,
    parse_host,
)

__all__ = [
    "LIMITS",
    "SETTINGS",
    "SegmentProvider",
    "__version__",
    "register_providers",
    "to_message",
]

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
LIMITS = BatchLimits(
    max_events=MAX_BATCH_EVENTS,
    max_bytes=475_000,
    max_event_bytes=MAX_MESSAGE_BYTES,
)


@fanout.hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        "segment",
        SegmentProvider.from_config,
        settings=SETTINGS,
        limits=LIMITS,
        kinds=frozenset({"identify", "track", "page", "alias", "group"}),
        capabilities=frozenset(
            {
                Capability.HISTORICAL_IMPORT,  # timestamps are kept, however old
                Capability.IDENTITY_MERGE,  # identify(anonymousId + userId), alias
                Capability.GROUPS,
                Capability.DEDUPLICATION,  # event_id → messageId
            }
        ),
        description="Segment HTTP Tracking API (/v1/batch), as segment-analytics-python sends it.",
    )
