"""One fanout :class:`~fanout.Event` → one RudderStack message.

RudderStack's data plane takes Segment's message format, so the mapping is
fanout-segment's :func:`fanout_segment.message.to_message`; only what ``rudder-sdk-python``
(2.1, ``Client._enqueue`` and ``identify``) does differently is adjusted here:

- ``integrations`` is ``{"All": true}`` when the caller named none (Segment's SDK sends ``{}``);
- ``channel`` is ``"server"``;
- ``timestamp`` is the event's full ``isoformat()`` (microseconds), not milliseconds;
- identify traits travel in ``context.traits``, not at the root of the message;
- ``context.library`` names fanout-rudderstack;
- the canonical ``session_id`` is RudderStack's ``context.sessionId``, a Number, and is sent
  only in that form (:func:`rudderstack_session_id`).
"""

from __future__ import annotations

from typing import Any, Final

from fanout_segment.message import to_message as segment_message

from fanout import Event

from .__about__ import __version__

__all__ = ["CHANNEL", "LIBRARY", "rudderstack_session_id", "to_message"]

#: ``rudderstack.analytics.client.CHANNEL``.
CHANNEL: Final = "server"
LIBRARY: Final = {"name": "fanout-rudderstack", "version": __version__}

#: RudderStack's session ids: integers of at least 10 digits (its manual session tracking
#: refuses shorter ones; its SDKs use the session's start in milliseconds), and no larger
#: than a JavaScript Number holds exactly (``Number.MAX_SAFE_INTEGER``), as the field is one.
MIN_SESSION_ID: Final = 10**9
MAX_SESSION_ID: Final = 2**53 - 1


def rudderstack_session_id(value: object) -> int | None:
    """``context.sessionId`` for a canonical ``session_id``, or ``None`` if it is not one.

    The canonical session is the browser SDK's that the request carried: rudder-js's
    ``rl_session`` (or Amplitude's) is the session's start in milliseconds, read as text,
    and becomes the Number RudderStack wants; another SDK's (a PostHog UUID) is not a
    RudderStack session and is not sent.
    """
    if isinstance(value, str):
        if not (0 < len(value) <= 16 and value.isascii() and value.isdigit()):
            return None
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        return None
    return number if MIN_SESSION_ID <= number <= MAX_SESSION_ID else None


def to_message(event: Event) -> dict[str, Any]:
    """The RudderStack message for ``event``: ``event_id`` as its ``messageId``."""
    message = segment_message(event, library=LIBRARY)
    message["integrations"] = {"All": True}
    message["timestamp"] = event.timestamp.isoformat()
    message["channel"] = CHANNEL
    context = message["context"]
    if event.kind == "identify":
        context["traits"] = message.pop("traits")
    if "session_id" in context:
        session_id = rudderstack_session_id(context.pop("session_id"))
        if session_id is not None:
            context.setdefault("sessionId", session_id)  # a caller's own sessionId wins
    return message
