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
from urllib.parse import urlsplit

from fanout.http import encode_json
from fanout.provider import Event

from .__about__ import __version__

__all__ = [
    "GROUP_TYPE_TRAIT",
    "LIBRARY",
    "MESSAGE_GROWTH",
    "MESSAGE_OVERHEAD",
    "PAGE_KEYS",
    "encode_batch",
    "to_message",
    "timestamp_text",
]

_UTC = _dt.timezone.utc

#: A message :func:`to_message` builds is at most :data:`MESSAGE_GROWTH` times its event's
#: encoded size (``Event.size``, an upper bound) plus :data:`MESSAGE_OVERHEAD` bytes. It
#: holds the event's fields under names no longer than fanout's, each at most twice (a page
#: field in a page call's ``properties`` and in ``context.page``), a page URL's query twice
#: more (``search`` in both), and its fixed keys, timestamp and ``context.library``.
MESSAGE_GROWTH: Final = 4
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
#: Canonical keys that Segment nests under ``context.page``: the request's page.
PAGE_FIELDS: Final = ("url", "path", "referrer")
#: analytics.js's page fields (its ``PageContext``): what a page call's ``properties`` and
#: ``context.page`` share.
PAGE_KEYS: Final = ("path", "referrer", "search", "title", "url")

_NO_PAGE: Final[Mapping[str, Any]] = {}


def _search(url: str) -> str | None:
    """``url``'s query as ``location.search`` reads it (with its ``?``); ``None`` if empty."""
    query = url.split("#", 1)[0].partition("?")[2]
    return "?" + query if query else None


def _path(request: Mapping[str, Any]) -> Any:
    """The request's path: its own, else its URL's."""
    path = request.get("path")
    url = request.get("url")
    if path is None and isinstance(url, str):
        try:
            return urlsplit(url).path or "/"
        except ValueError:  # e.g. "http://[::1" - an unclosed IPv6 bracket
            return None
    return path


def _page_fields(request: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """Page fields as analytics.js's ``addPageContext`` merges them: the call's own (``own``)
    over the request's (``request``: ``url``, ``path``, ``referrer``).

    The request's ``url`` and ``path`` describe one page: when ``own`` names another (a
    ``url`` or ``path`` of its own that differs), they are left out and only the request's
    ``referrer`` fills in. ``search`` is the query of the ``url`` sent, unless ``own`` gives
    one, so that no field contradicts another.
    """
    if ("url" in own and own["url"] != request.get("url")) or (
        "path" in own and own["path"] != _path(request)
    ):
        fields = {"referrer": request["referrer"]} if "referrer" in request else {}
    else:
        fields = dict(request)
    fields.update(own)
    if "search" not in own:
        url = fields.get("url")
        search = _search(url) if isinstance(url, str) else None
        if search is not None:
            fields["search"] = search
    return fields


def _context(
    event: Event, library: Mapping[str, str], own: Mapping[str, Any] = _NO_PAGE
) -> dict[str, Any]:
    """The message's ``context``; ``own`` is a page call's page properties.

    ``context.page`` is what analytics.js sends: the request's page fields, under the call's
    (``own``), under an explicit ``context={"page": {...}}``, which wins. An event with
    neither request page fields nor an explicit ``page`` (made outside a request) has none,
    as the server SDK sends none.
    """
    if not event.context:  # the common server-side call: nothing but the library
        return {"library": dict(library)}
    context: dict[str, Any] = {}
    request: dict[str, Any] = {}
    explicit: Any = None
    for key, value in event.context.items():
        if key in PAGE_FIELDS:
            request[key] = value
        elif key == "page":
            explicit = value
        else:
            context[CONTEXT_FIELDS.get(key, key)] = value
    if explicit is not None and not isinstance(explicit, Mapping):
        context["page"] = explicit  # the caller's, whatever it is
    elif request or explicit:
        context["page"] = _page_fields(request, {**own, **explicit} if explicit else own)
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
    # where Segment's page spec keeps them. Within a request, analytics.js's merge: the
    # request's page fields fill what the call's properties leave out.
    properties: Mapping[str, Any] = event.properties
    own = {k: properties[k] for k in PAGE_KEYS if k in properties}
    context = _context(event, library, own)
    request = {k: event.context[k] for k in PAGE_FIELDS if k in event.context}
    if request:
        properties = {**_page_fields(request, own), **properties}
    return {
        "integrations": {},
        "anonymousId": event.anonymous_id,
        "properties": properties,
        "timestamp": timestamp_text(event),
        "category": None,
        "context": context,
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

    ``overhead`` is a promise about ``build``: no message is longer than
    :data:`MESSAGE_GROWTH` times its event's ``size`` plus ``overhead`` bytes
    (:data:`MESSAGE_OVERHEAD` holds for :func:`to_message` and builders that add a few
    fixed fields to it). With it, a batch whose largest event cannot reach
    ``max_message_bytes`` is written in one encoder call, byte for byte what encoding
    message by message writes, without a call and a copy per event.
    """
    if (
        overhead is not None
        and batch
        and MESSAGE_GROWTH * max(map(_SIZE, batch)) + overhead <= max_message_bytes
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
