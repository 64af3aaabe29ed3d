"""One fanout :class:`~fanout.Event` → one Segment message, shaped as the official SDK shapes it.

A public module: other Segment-compatible providers (fanout-rudderstack) build their
messages with :func:`to_message` and adjust only what their SDK does differently, so the
mapping lives in one place.

The shapes below are those ``segment.analytics.Client`` (segment-analytics-python 2.4)
builds in ``identify``/``track``/``page``/``alias``/``group`` and ``_enqueue``: the same keys,
including the ones it sends as ``null`` (``anonymousId``, ``category``, ``name``), an empty
``integrations`` object, ``context.library``, ``messageId`` and a millisecond ISO 8601
``timestamp``. The parity tests compare the two on a local server, so a drift in either
shows up there rather than in Segment's debugger.

The SDK's ``clean()`` is not applied: fanout's event validation has already made every value
JSON-safe (``Decimal`` → float and ``datetime`` → ISO string, as ``clean`` and the SDK's
serializer do), and it keeps ``UUID`` values as strings where ``clean`` silently drops the
whole key that holds one.
"""

from __future__ import annotations

import datetime as _dt
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from fanout.http import encode_json
from fanout.provider import Event

from .__about__ import __version__

__all__ = [
    "GROUP_TYPE_TRAIT",
    "LIBRARY",
    "MESSAGE_OVERHEAD",
    "encode_batch",
    "to_message",
    "timestamp_text",
]

_UTC = _dt.timezone.utc

#: A message :func:`to_message` builds is at most twice its event's encoded size
#: (``Event.size``, an upper bound) plus this many bytes: it holds the event's fields once
#: under names no longer than fanout's, the page URL's query a second time at most
#: (``context.page.search``), and its fixed keys, timestamp and ``context.library``.
MESSAGE_OVERHEAD: Final = 2048
_SIZE = operator.attrgetter("size")

#: ``context.library``: who built the message. Segment shows it in its debugger; it is
#: informational, so it names fanout-segment rather than borrowing the SDK's name.
LIBRARY: Final = {"name": "fanout-segment", "version": __version__}

#: Trait that carries fanout's ``group_type`` on group calls (Segment has no group type;
#: destinations such as Amplitude and Mixpanel read the type from a configurable trait).
GROUP_TYPE_TRAIT: Final = "group_type"


def timestamp_text(event: Event) -> str:
    """The SDK's ``timestamp.isoformat(timespec="milliseconds")`` for fanout's UTC stamps.

    Formatted field by field: the same text at a fraction of ``isoformat``'s cost, once per
    event on the worker thread.
    """
    ts = event.timestamp
    if ts.tzinfo is not _UTC and ts.utcoffset():  # fanout normalises to UTC; anything else
        # takes the slow, exact path
        return ts.isoformat(timespec="milliseconds")
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03d+00:00" % (  # noqa: UP031 - faster than f-string
        ts.year,
        ts.month,
        ts.day,
        ts.hour,
        ts.minute,
        ts.second,
        ts.microsecond // 1000,
    )


#: Canonical context keys → Segment's ``context`` fields (its Spec's "Context" page and what
#: analytics.js sends); keys not listed (``ip``, ``locale``, ``campaign``, which already
#: have Segment's names, and any other key) go in unchanged.
CONTEXT_FIELDS: Final = {"user_agent": "userAgent"}
#: Canonical keys that Segment nests under ``context.page``.
PAGE_FIELDS: Final = ("url", "path", "referrer")


def _context(event: Event, library: Mapping[str, str]) -> dict[str, Any]:
    if not event.context:  # the common server-side call: nothing but the library
        return {"library": dict(library)}
    context: dict[str, Any] = {}
    page: dict[str, Any] = {}
    for key, value in event.context.items():
        if key in PAGE_FIELDS:
            page[key] = value
        else:
            context[CONTEXT_FIELDS.get(key, key)] = value
    if page:
        url = page.get("url")
        if isinstance(url, str) and "?" in url:
            page.setdefault("search", "?" + url.split("?", 1)[1].split("#", 1)[0])
        context["page"] = page
    context["library"] = dict(library)
    return context


def _identify(event: Event, library: Mapping[str, str]) -> dict[str, Any]:
    return {
        "integrations": {},
        "anonymousId": event.anonymous_id,
        "timestamp": timestamp_text(event),
        "context": _context(event, library),
        "type": "identify",
        "userId": event.person_id,
        "traits": event.traits,
        "messageId": event.event_id,
    }


def _track(event: Event, library: Mapping[str, str]) -> dict[str, Any]:
    return {
        "integrations": {},
        "anonymousId": event.anonymous_id,
        "properties": event.properties,
        "timestamp": timestamp_text(event),
        "context": _context(event, library),
        "userId": event.person_id,
        "type": "track",
        "event": event.name,
        "messageId": event.event_id,
    }


def _page(event: Event, library: Mapping[str, str]) -> dict[str, Any]:
    # fanout's page() already put url / path / title / referrer into properties, which is
    # where Segment's page spec keeps them.
    return {
        "integrations": {},
        "anonymousId": event.anonymous_id,
        "properties": event.properties,
        "timestamp": timestamp_text(event),
        "category": None,
        "context": _context(event, library),
        "userId": event.person_id,
        "type": "page",
        "name": event.name,
        "messageId": event.event_id,
    }


def _alias(event: Event, library: Mapping[str, str]) -> dict[str, Any]:
    return {
        "integrations": {},
        "previousId": event.previous_id,
        "timestamp": timestamp_text(event),
        "context": _context(event, library),
        "userId": event.person_id,
        "type": "alias",
        "messageId": event.event_id,
        "anonymousId": None,
    }


def _group(event: Event, library: Mapping[str, str]) -> dict[str, Any]:
    traits = dict(event.traits)
    if event.group_type is not None:
        # The caller's own trait of that name wins: it is their data.
        traits.setdefault(GROUP_TYPE_TRAIT, event.group_type)
    return {
        "integrations": {},
        "anonymousId": event.anonymous_id,
        "timestamp": timestamp_text(event),
        "groupId": event.group_id,
        "context": _context(event, library),
        "userId": event.person_id,
        "traits": traits,
        "type": "group",
        "messageId": event.event_id,
    }


_BUILDERS: Final[dict[str, Callable[[Event, Mapping[str, str]], dict[str, Any]]]] = {
    "identify": _identify,
    "track": _track,
    "page": _page,
    "alias": _alias,
    "group": _group,
}


def to_message(event: Event, *, library: Mapping[str, str] = LIBRARY) -> dict[str, Any]:
    """The Segment message for ``event``: JSON-ready, ``event_id`` as its ``messageId``.

    ``properties`` and ``traits`` are the event's own read-only mappings (encoders write
    them as objects; copying them per event and provider would only cost time): copy one
    before changing it. The message itself and its ``context`` are new dicts.

    ``library`` is ``context.library``: who built the message (a provider reusing this
    mapping names itself).
    """
    return _BUILDERS[event.kind](event, library)


def encode_batch(
    batch: Sequence[Event],
    *,
    build: Callable[[Event], dict[str, Any]],
    vendor: str,
    max_message_bytes: int,
    trailer: Mapping[str, Any],
    overhead: int | None = None,
) -> tuple[bytes, dict[int, str]]:
    """A ``/v1/batch`` body (``{"batch": [...], **trailer}``) and the indices of messages
    too large to send, each with why: the Tracking API's envelope, which Segment and
    RudderStack (and any Segment-compatible API) share.

    ``overhead`` is a promise about ``build``: no message is longer than twice its event's
    ``size`` plus ``overhead`` bytes (:data:`MESSAGE_OVERHEAD` holds for :func:`to_message`
    and builders that add a few fixed fields to it). With it, a batch whose largest event
    cannot reach ``max_message_bytes`` is written in one encoder call, byte for byte what
    encoding message by message writes, without a call and a copy per event.
    """
    if (
        overhead is not None
        and batch
        and 2 * max(map(_SIZE, batch)) + overhead <= max_message_bytes
    ):
        return encode_json({"batch": [build(e) for e in batch], **trailer}), {}
    parts: list[bytes] = []
    rejected: dict[int, str] = {}
    for i, event in enumerate(batch):
        data = encode_json(build(event))
        if len(data) > max_message_bytes:
            rejected[i] = (
                f"message is {len(data)} bytes, above {vendor}'s "
                f"{max_message_bytes}-byte limit per message"
            )
            continue
        parts.append(data)
    if not parts:
        return b"", rejected
    return b'{"batch":[' + b",".join(parts) + b"]," + encode_json(dict(trailer))[1:], rejected
