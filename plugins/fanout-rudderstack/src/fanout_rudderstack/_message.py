"""One fanout :class:`~fanout.Event` → one RudderStack message.

RudderStack's data plane takes Segment's message format, so the mapping is
fanout-segment's :func:`fanout_segment.message.to_message`; only what ``rudder-sdk-python``
(2.1, ``Client._enqueue`` and ``identify``) does differently is adjusted here:

- ``integrations`` is ``{"All": true}`` when the caller named none (Segment's SDK sends ``{}``);
- ``channel`` is ``"server"``;
- ``timestamp`` is the event's full ``isoformat()`` (microseconds), not milliseconds;
- identify traits travel in ``context.traits``, not at the root of the message;
- ``context.library`` names fanout-rudderstack.
"""

from __future__ import annotations

from typing import Any, Final

from fanout_segment.message import to_message as segment_message

from fanout import Event

from .__about__ import __version__

__all__ = ["CHANNEL", "LIBRARY", "to_message"]

#: ``rudderstack.analytics.client.CHANNEL``.
CHANNEL: Final = "server"
LIBRARY: Final = {"name": "fanout-rudderstack", "version": __version__}


def to_message(event: Event) -> dict[str, Any]:
    """The RudderStack message for ``event``: ``event_id`` as its ``messageId``."""
    message = segment_message(event, library=LIBRARY)
    message["integrations"] = {"All": True}
    message["timestamp"] = event.timestamp.isoformat()
    message["channel"] = CHANNEL
    if event.kind == "identify":
        message["context"]["traits"] = message.pop("traits")
    return message
