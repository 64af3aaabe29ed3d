"""One fanout :class:`~fanout.Event` → the Mixpanel records the official SDK would send.

Pure functions, no I/O: the provider decides where each record goes (``/track`` or
``/import`` by age) and how it travels. The shapes are those of ``mixpanel.Mixpanel``
(mixpanel-python 5.4): ``track()`` puts ``token``, ``distinct_id``, ``time``,
``$insert_id``, ``mp_lib`` and ``$lib_version`` first and lets the caller's properties
override them; ``people_*`` and ``group_*`` records carry ``$token`` and ``$time``;
``alias()`` sends ``$create_alias`` with only ``distinct_id``, ``alias`` and ``token``.
The parity tests compare both on a local server, so a drift shows up there.

Values arrive JSON-safe from fanout's validation (``Decimal`` → float, ``datetime`` → ISO
8601 with its microseconds and offset, ``UUID`` → str), which is where fanout parts ways
with the SDK: its serializer raises ``TypeError`` for ``Decimal`` and ``UUID`` and cuts a
``datetime`` down to whole seconds without its offset.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from fanout.provider import Event

from .__about__ import __version__

__all__ = [
    "Endpoint",
    "LIB",
    "PAGE_EVENT",
    "Record",
    "insert_id",
    "to_records",
]

#: Where a record goes; ``import`` is chosen by the provider for old events, never here.
Endpoint = Literal["track", "engage", "groups", "import"]
Record = tuple[Endpoint, dict[str, Any]]

#: ``mp_lib``: who built the event (the SDK says ``python``). Informational only.
LIB: Final = "fanout-mixpanel"
#: The event a page view becomes: Mixpanel's own page-view event (what the JavaScript SDK's
#: ``track_pageview()`` sends), so server-side page views land in the same reports.
PAGE_EVENT: Final = "$mp_web_page_view"
#: fanout page() property → Mixpanel's page-view property (the names ``track_pageview``
#: uses). Properties not listed here are sent under their own names.
PAGE_PROPERTIES: Final = {
    "url": "$current_url",
    "path": "current_url_path",
    "title": "current_page_title",
    "referrer": "$referrer",
}

#: Canonical context keys → the properties mixpanel-browser sends on every event. Mixpanel
#: has no raw user-agent, session or locale property: those context keys are not sent.
CONTEXT_PROPERTIES: Final = {
    "url": "$current_url",
    "referrer": "$referrer",
}
#: ``context.campaign`` keys → mixpanel-browser's campaign properties (``utm_*``).
CAMPAIGN_PROPERTIES: Final = {
    "source": "utm_source",
    "medium": "utm_medium",
    "name": "utm_campaign",
    "term": "utm_term",
    "content": "utm_content",
}

_INSERT_ID: Final = re.compile(r"[A-Za-z0-9-]{1,36}\Z")
_INSERT_ID_MATCH: Final = _INSERT_ID.match


def insert_id(event_id: str) -> str:
    """``event_id`` as a valid ``$insert_id``, the same for the same id on every run.

    Mixpanel takes at most 36 characters, letters, digits and ``-``. fanout's own ids
    (UUIDv7) fit and pass unchanged; anything else (``evt_1NG8…`` from Stripe, long ids) is
    replaced by the first 36 hex digits of its SHA-256, the derivation Mixpanel's import
    docs suggest, so a redelivered webhook maps to the same key every time.
    """
    if _INSERT_ID_MATCH(event_id):
        return event_id
    return hashlib.sha256(event_id.encode("utf-8")).hexdigest()[:36]


def timestamp_seconds(event: Event) -> float:
    """``time`` / ``$time`` as the SDK sends them: float seconds since the epoch."""
    return event.timestamp.timestamp()


def import_time(event: Event) -> int:
    """``time`` for ``/import``: integer milliseconds, the form Mixpanel's import docs use,
    which keeps the millisecond precision Mixpanel stores."""
    return round(event.timestamp.timestamp() * 1000)


def _identity(event: Event) -> dict[str, Any]:
    """``$device_id`` / ``$user_id``: with both present, Simplified ID Merge links the
    visitor to the person from any event; Original ID Merge ignores them."""
    out: dict[str, Any] = {}
    if event.anonymous_id is not None:
        out["$device_id"] = event.anonymous_id
        if event.person_id is not None:
            out["$user_id"] = event.person_id
    return out


def _ip(event: Event) -> Any:
    return event.context.get("ip")


def event_record(
    event: Event, token: str, name: str, properties: Mapping[str, Any]
) -> dict[str, Any]:
    """What ``Mixpanel.track(distinct_id, name, properties)`` builds (a /track record)."""
    # Inlined (this runs once per event on the worker): timestamp_seconds, _ip and
    # _identity, each only where the event has what it reads.
    props: dict[str, Any] = {
        "token": token,
        "distinct_id": event.person_id or event.anonymous_id or "",
        "time": event.timestamp.timestamp(),
        "$insert_id": insert_id(event.event_id),
        "mp_lib": LIB,
        "$lib_version": __version__,
    }
    context = event.context
    if context:
        ip = context.get("ip")
        if ip is not None:
            props["ip"] = ip
    if event.anonymous_id is not None:
        props.update(_identity(event))
    if context:
        props.update(_context_properties(context))
        if (
            properties
            and "$referrer" in properties
            and "$referring_domain" in props
            and "$referring_domain" not in properties
        ):
            # The caller's $referrer (a page()'s referrer) won over the context's: the
            # domain is the one of the referrer sent, never the context's.
            referrer = properties["$referrer"]
            if isinstance(referrer, str):
                props["$referring_domain"] = _referring_domain(referrer)
            else:
                del props["$referring_domain"]
    props.update(properties)
    return {"event": name, "properties": props}


def _referring_domain(referrer: str) -> str:
    """``$referring_domain`` for ``referrer``: its host, ``$direct`` when it has none."""
    try:
        host = urlsplit(referrer).hostname
    except ValueError:  # e.g. "http://[::1" - an unclosed IPv6 bracket
        host = None
    return host or "$direct"


def _context_properties(context: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical context under mixpanel-browser's names; the event's properties win."""
    out: dict[str, Any] = {}
    for key, target in CONTEXT_PROPERTIES.items():
        value = context.get(key)
        if value is not None:
            out[target] = value
    referrer = context.get("referrer")
    if isinstance(referrer, str):
        out["$referring_domain"] = _referring_domain(referrer)
    campaign = context.get("campaign")
    if isinstance(campaign, Mapping):
        for key, target in CAMPAIGN_PROPERTIES.items():
            value = campaign.get(key)
            if value is not None:
                out[target] = value
    return out


def _profile(event: Event, token: str, operation: str, value: Any) -> dict[str, Any]:
    """What ``Mixpanel.people_update`` builds; ``context.ip`` goes in as ``$ip`` (meta)."""
    record: dict[str, Any] = {
        "$token": token,
        "$time": timestamp_seconds(event),
        "$distinct_id": event.person_id,
        operation: value,
    }
    ip = _ip(event)
    if ip is not None:
        record["$ip"] = ip
    return record


def _identify(event: Event, token: str) -> list[Record]:
    records: list[Record] = [("engage", _profile(event, token, "$set", dict(event.traits)))]
    if event.anonymous_id is not None and event.anonymous_id != event.person_id:
        # Mixpanel's server-side "Create Identity": an $identify event on /track, needing
        # only the project token ($merge would need the API secret and is meant for two
        # known users). $device_id + $user_id make it count under Simplified ID Merge too.
        records.append(
            (
                "track",
                event_record(
                    event,
                    token,
                    "$identify",
                    {"$identified_id": event.person_id, "$anon_id": event.anonymous_id},
                ),
            )
        )
    return records


def _track(event: Event, token: str) -> list[Record]:
    return [("track", event_record(event, token, event.name or "", event.properties))]


def _page(event: Event, token: str) -> list[Record]:
    props: dict[str, Any] = {}
    for key, value in event.properties.items():
        props[PAGE_PROPERTIES.get(key, key)] = value
    url = event.properties.get("url")
    if isinstance(url, str) and "current_domain" not in props:
        host = urlsplit(url).hostname
        if host:
            props["current_domain"] = host
    if event.name is not None:
        props.setdefault("page_name", event.name)
    return [("track", event_record(event, token, PAGE_EVENT, props))]


def _alias(event: Event, token: str) -> list[Record]:
    # Exactly Mixpanel.alias(alias_id=person_id, original=previous_id): no time and no
    # $insert_id, because creating the same alias twice is harmless.
    return [
        (
            "track",
            {
                "event": "$create_alias",
                "properties": {
                    "distinct_id": event.previous_id,
                    "alias": event.person_id,
                    "token": token,
                },
            },
        )
    ]


def _group(event: Event, token: str) -> list[Record]:
    records: list[Record] = [
        (
            "groups",
            {
                "$token": token,
                "$time": timestamp_seconds(event),
                "$group_key": event.group_type,
                "$group_id": event.group_id,
                "$set": dict(event.traits),
            },
        )
    ]
    if event.person_id is not None:
        # Membership: the group key as a list property on the person's profile, added with
        # $union so that a person can belong to several groups of one type. Anonymous
        # visitors get no profile (Mixpanel advises against profiles for them).
        records.append(
            ("engage", _profile(event, token, "$union", {event.group_type: [event.group_id]}))
        )
    return records


_BUILDERS: Final[dict[str, Callable[[Event, str], list[Record]]]] = {
    "identify": _identify,
    "track": _track,
    "page": _page,
    "alias": _alias,
    "group": _group,
}


def to_records(event: Event, token: str) -> list[Record]:
    """The Mixpanel records for ``event``, each with the endpoint the SDK would post it to."""
    return _BUILDERS[event.kind](event, token)
