"""fanout-segment: the ``segment`` provider for fanout.

Installed, it is found through the ``fanout`` entry-point group; with ``SEGMENT_WRITE_KEY``
set (or ``FANOUT_SEGMENT_WRITE_KEY``) every ``fanout.track()`` also reaches Segment, in the
format the official ``segment-analytics-python`` SDK sends, batched, retried and isolated by
fanout's channel rather than by the SDK's own thread.

This module is the entry point, imported by every process that loads plugins, so it holds
only the declaration (from ``_declaration``); the provider is imported when the provider
is enabled, or when one of its names below is first used (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from fanout.provider import Capability, RegisterProvider, hookimpl, lazy_exports

from .__about__ import __version__
from ._declaration import LIMITS, SETTINGS

if TYPE_CHECKING:
    from ._provider import SegmentProvider
    from .message import to_message

__all__ = [
    "LIMITS",
    "SETTINGS",
    "SegmentProvider",
    "__version__",
    "register_providers",
    "to_message",
]

#: Public names imported on first use: name → module.
_LAZY: Final = {"to_message": ".message", "SegmentProvider": "._provider"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        "segment",
        "fanout_segment._provider:SegmentProvider.from_config",
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
