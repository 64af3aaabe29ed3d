"""fanout events → PostHog ``/batch/`` messages, the way posthog-python builds them.

Each function mirrors one official SDK call, so that the parity tests can hold the two
side by side (``posthog`` 7.x, ``client.py``):

- ``track``    ≙ ``capture(name, distinct_id=..., properties=...)``
- ``identify`` ≙ ``capture("$identify", properties={"$set": traits, "$anon_distinct_id": ...})``
- ``page``     ≙ ``capture("$pageview", properties={"$current_url": ..., ...})``
- ``alias``    ≙ ``alias(previous_id=..., distinct_id=...)``  (``$create_alias``)
- ``group``    ≙ ``group_identify(group_type, group_key, properties, distinct_id=...)``

``capture()`` merges the SDK's system context (``$python_version``, ``$os``…) into the
properties and every call is enriched with ``$lib``, ``$lib_version``, ``$geoip_disable``
and ``$is_server``; :class:`MessageBuilder` does the same, computing the system context
once with the SDK's own helper instead of once per event.
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from posthog.utils import system_context

from fanout.http import encode_json
from fanout.provider import Event

__all__ = ["EVENT_ID_NAMESPACE", "MessageBuilder", "is_posthog_session_id", "posthog_uuid"]

#: The namespace of the UUIDv5 a non-UUID ``event_id`` becomes. Fixed forever: changing it
#: would give a redelivered webhook a new ``uuid`` and PostHog would count it twice.
#: (It is ``uuid5(NAMESPACE_URL, "https://pypi.org/project/fanout-posthog/#event_id")``.)
EVENT_ID_NAMESPACE: Final = uuid.UUID("4e2ec7d4-798e-5b0b-a0a9-c40f408d1e08")

#: fanout ``context`` keys with a PostHog property of their own. Like the rest of the context
#: they fill in only what the call's properties leave out (explicit arguments win, as in
#: posthog-python's ``add_context_tags``), and ``session_id`` only in PostHog's form
#: (:func:`is_posthog_session_id`). Other context keys have no PostHog meaning on a
#: server-side event.
CONTEXT_PROPERTIES: Final[Mapping[str, str]] = {
    "ip": "$ip",
    "user_agent": "$raw_user_agent",
    "session_id": "$session_id",
}

#: Canonical context keys → the properties posthog-js sends on every browser event, so
#: that a server-side event shows in the same web-analytics breakdowns. They fill in only
#: what the event's properties do not already say (a page's own URL wins).
PAGE_CONTEXT_PROPERTIES: Final[Mapping[str, str]] = {
    "url": "$current_url",
    "path": "$pathname",
    "referrer": "$referrer",
    "locale": "$browser_language",
}

#: ``context.campaign`` keys → posthog-js's campaign properties (``utm_*`` as in the URL).
CAMPAIGN_PROPERTIES: Final[Mapping[str, str]] = {
    "source": "utm_source",
    "medium": "utm_medium",
    "name": "utm_campaign",
    "term": "utm_term",
    "content": "utm_content",
}

#: ``Client.page()`` puts these in ``properties``; PostHog's web analytics reads them under
#: its own names (the names posthog-js sends on ``$pageview``).
PAGE_PROPERTIES: Final[Mapping[str, str]] = {
    "url": "$current_url",
    "path": "$pathname",
    "referrer": "$referrer",
    "title": "title",
}


#: The form ``str(uuid.UUID(...))`` produces; such an id passes through unchanged, without
#: building a UUID object per event on the worker.
_CANONICAL_UUID: Final = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)
_IS_CANONICAL: Final = _CANONICAL_UUID.fullmatch

#: A UUIDv7 in its text form, either case: what posthog-js makes a session id, and the only
#: ``$session_id`` PostHog builds a session from (its sessions table takes an event only when
#: the id casts to a UUID whose version is 7).
_SESSION_ID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_IS_SESSION_ID: Final = _SESSION_ID.fullmatch


def is_posthog_session_id(value: object) -> bool:
    """Whether ``value``, a canonical ``session_id``, is a PostHog session: a UUIDv7.

    The canonical session is the browser SDK's that the request carried, whichever SDK that
    was; RudderStack's and Amplitude's are the session's start in milliseconds (digits),
    which PostHog cannot use, so they are not sent as ``$session_id``.
    """
    return isinstance(value, str) and _IS_SESSION_ID(value) is not None


def posthog_uuid(event_id: str) -> str:
    """The PostHog ``uuid`` for a fanout ``event_id``: the same UUID, or a UUIDv5 of it.

    posthog-python silently swaps a non-UUID ``uuid`` for a random one, which would make
    every redelivery of a Stripe webhook (``evt_...``) a new event. A UUIDv5 in a fixed
    namespace maps the same id to the same UUID every time, in every process.
    """
    if _IS_CANONICAL(event_id):
        return event_id  # fanout's own ids (UUIDv7): already what str(UUID(...)) gives
    try:
        return str(uuid.UUID(event_id))
    except ValueError:
        return str(uuid.uuid5(EVENT_ID_NAMESPACE, event_id))


_UTC = _dt.timezone.utc
_DATETIME = _dt.datetime


def encoder_writes_isoformat() -> bool:
    """Whether fanout's encoder writes a UTC ``datetime`` as ``isoformat()`` does (orjson
    does; the standard library's fallback refuses datetimes)."""
    probes = (_DATETIME(2026, 1, 2, 3, 4, 5, 60, _UTC), _DATETIME(2026, 1, 2, 3, 4, 5, 0, _UTC))
    try:
        return all(encode_json(p) == b'"' + p.isoformat().encode() + b'"' for p in probes)
    except (TypeError, ValueError):
        return False


class MessageBuilder:
    """Builds one PostHog message per event; its state is only what every message shares.

    With ``native_timestamps`` (the default where fanout's encoder is orjson) a UTC
    ``timestamp`` is left a ``datetime`` for the encoder to write: orjson writes exactly
    ``isoformat()``'s text (microseconds when non-zero, ``+00:00``), in C, where formatting
    it here cost a worker about 2 µs per event. Pass ``False`` for string timestamps.
    """

    def __init__(
        self, *, lib: str, lib_version: str, native_timestamps: bool | None = None
    ) -> None:
        self._lib = lib
        self._lib_version = lib_version
        self._native_timestamps = (
            encoder_writes_isoformat() if native_timestamps is None else native_timestamps
        )
        # posthog-python adds these to every capture(); they do not change in a process.
        self._system: dict[str, Any] = system_context()
        # What ends every message's properties when the event has no context (no IP).
        self._tail: dict[str, Any] = {
            "$lib": lib,
            "$lib_version": lib_version,
            "$geoip_disable": True,
            "$is_server": True,
        }
        # ... and both together, for the common case's one merge per event.
        self._system_tail: dict[str, Any] = {**self._system, **self._tail}

    def message(self, event: Event) -> dict[str, Any]:
        kind = event.kind
        context = event.context
        ts = event.timestamp
        timestamp: Any = (
            ts
            if self._native_timestamps and type(ts) is _DATETIME and ts.tzinfo is _UTC
            else ts.isoformat()
        )
        if kind == "track" and not context and event.group_id is None:
            # The common case in one dict display: what the general path below builds.
            event_id = event.event_id
            return {
                "properties": {**event.properties, **self._system_tail},
                "timestamp": timestamp,
                "distinct_id": event.person_id or event.anonymous_id or "",  # distinct_id
                "event": event.name or "",
                "uuid": event_id if _IS_CANONICAL(event_id) else posthog_uuid(event_id),
            }
        if kind == "track":
            name: str = event.name or ""
            props = {**event.properties, **self._system}
            if event.group_type is not None and event.group_id is not None:
                props["$groups"] = {event.group_type: event.group_id}
            distinct_id = event.distinct_id
        elif kind == "identify":
            name = "$identify"
            props = {"$set": dict(event.traits)}
            if event.anonymous_id is not None and event.anonymous_id != event.person_id:
                props["$anon_distinct_id"] = event.anonymous_id
            props.update(self._system)
            distinct_id = event.distinct_id
        elif kind == "page":
            name = "$pageview"
            props = _page_properties(event.properties)
            if event.name is not None:
                props.setdefault("page_name", event.name)
            props.update(self._system)
            distinct_id = event.distinct_id
        elif kind == "alias":
            name = "$create_alias"
            previous = event.previous_id or ""
            props = {"distinct_id": previous, "alias": event.person_id}
            distinct_id = previous
        elif kind == "group":
            name = "$groupidentify"
            props = {
                "$group_type": event.group_type,
                "$group_key": event.group_id,
                "$group_set": dict(event.traits),
            }
            distinct_id = event.distinct_id
        else:  # pragma: no cover - the core validates kinds
            raise ValueError(f"unknown event kind {kind!r}")

        # GeoIP stays on when the context has the visitor's IP (whichever $ip is sent).
        geoip = False
        if context:
            _fill_from_context(props, context)
            geoip = context.get("ip") is not None
        props["$lib"] = self._lib
        props["$lib_version"] = self._lib_version
        if not geoip:
            # posthog-python's default (disable_geoip=True): without the visitor's IP,
            # PostHog would locate every server-side event at the server.
            props["$geoip_disable"] = True
        props["$is_server"] = True
        return {
            "properties": props,
            "timestamp": timestamp,
            "distinct_id": distinct_id,
            "event": name,
            "uuid": posthog_uuid(event.event_id),
        }


def _fill_from_context(props: dict[str, Any], context: Mapping[str, Any]) -> None:
    """The canonical context as PostHog properties, only where the event has none (explicit
    properties win); a domain or host is derived from the URL that is actually sent."""
    for key, target in CONTEXT_PROPERTIES.items():
        value = context.get(key)
        if value is not None and target not in props:
            if key == "session_id" and not is_posthog_session_id(value):
                continue
            props[target] = value
    for key, target in PAGE_CONTEXT_PROPERTIES.items():
        value = context.get(key)
        if value is not None:
            props.setdefault(target, value)
    url = context.get("url")
    if isinstance(url, str) and "$host" not in props:
        # The host of the $current_url sent (perhaps the caller's), else, for a bare path,
        # the request's.
        current = props.get("$current_url")
        if isinstance(current, str):
            host = _host(current) or _host(url)
            if host:
                props["$host"] = host
    if isinstance(context.get("referrer"), str) and "$referring_domain" not in props:
        # The domain of the $referrer sent, which may be the caller's (a page()'s referrer).
        referrer = props.get("$referrer")
        if isinstance(referrer, str):
            props["$referring_domain"] = _host(referrer) or "$direct"
    campaign = context.get("campaign")
    if isinstance(campaign, Mapping):
        for key, target in CAMPAIGN_PROPERTIES.items():
            value = campaign.get(key)
            if value is not None:
                props.setdefault(target, value)


def _host(url: str) -> str:
    """``url``'s host (with its port), as a browser's ``URL.host`` reads it; ``""`` for a
    path or text that is no URL."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:  # e.g. "http://[::1" - an unclosed IPv6 bracket
        return ""
    return netloc.rpartition("@")[2]


def _page_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    props = {PAGE_PROPERTIES.get(k, k): v for k, v in properties.items()}
    url = props.get("$current_url")
    if isinstance(url, str):
        host = _host(url)
        if host:
            props.setdefault("$host", host)
    elif isinstance(props.get("$pathname"), str):
        # A bare path is still the page that was viewed; PostHog needs $current_url to
        # show it at all.
        props["$current_url"] = props["$pathname"]
    return props
