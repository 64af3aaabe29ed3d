"""One fanout :class:`~fanout.Event` → the Amplitude event(s) ``amplitude-analytics`` would send.

The shapes are those the official SDK (``amplitude`` 1.x) builds: ``BaseEvent`` /
``IdentifyEvent`` / ``GroupIdentifyEvent`` passed through its ``ContextPlugin`` (``time``,
``insert_id``, ``library``) and ``get_event_body()`` (only the fields that are set, ``None``
values dropped from the top level of the property objects, strings cut to 1,024
characters). The parity tests compare the two on a local server.

- ``track``    ≙ ``client.track(BaseEvent(name, user_id, device_id, event_properties=...))``
- ``identify`` ≙ ``client.identify(Identify().set(k, v)..., EventOptions(user_id, device_id))``
  → ``$identify`` with ``user_properties: {"$set": traits}``
- ``group``    ≙ ``client.group_identify(type, id, Identify().set(...))`` → ``$groupidentify``
  with ``group_properties``; with a person, also ``client.set_group(type, id, ...)`` → an
  ``$identify`` that puts the user in the group (its ``insert_id`` is ``event_id + ":group"``)
- ``page``     ≙ ``client.track(BaseEvent("[Amplitude] Page Viewed", ...))``, the event name
  and ``[Amplitude] Page …`` properties Amplitude's browser SDK uses for page views
- ``alias`` has no equivalent in the HTTP API: the provider does not declare that kind.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, Final

from amplitude import constants  # type: ignore[import-untyped]
from amplitude.event import EVENT_KEY_MAPPING  # type: ignore[import-untyped]

from fanout import Event

__all__ = [
    "CONTEXT_FIELDS",
    "MAX_PROPERTY_KEYS",
    "MAX_STRING_LENGTH",
    "PAGE_EVENT",
    "Unsendable",
    "epoch_millis",
    "to_amplitude",
]

#: The SDK's limits, applied as the SDK applies them (``amplitude.utils.truncate``).
MAX_STRING_LENGTH: Final[int] = constants.MAX_STRING_LENGTH
MAX_PROPERTY_KEYS: Final[int] = constants.MAX_PROPERTY_KEYS

IDENTIFY: Final[str] = constants.IDENTIFY_EVENT
GROUP_IDENTIFY: Final[str] = constants.GROUP_IDENTIFY_EVENT
SET: Final[str] = constants.IDENTITY_OP_SET

#: Amplitude's browser SDK names page views this way; Amplitude's page-view charts read it.
PAGE_EVENT: Final = "[Amplitude] Page Viewed"
PAGE_PROPERTIES: Final[Mapping[str, str]] = {
    "url": "[Amplitude] Page URL",
    "path": "[Amplitude] Page Path",
    "title": "[Amplitude] Page Title",
}

#: Fields fanout fills itself; a context key of the same name never overrides them.
_OWN_FIELDS: Final = frozenset(
    {
        "user_id",
        "device_id",
        "event_type",
        "time",
        "insert_id",
        "library",
        "event_id",
        "event_properties",
        "user_properties",
        "groups",
        "group_properties",
        "plan",
        "ingestion_metadata",
        "price",
        "quantity",
        "revenue",
        "product_id",
        "revenue_type",
        "currency",
    }
)

#: fanout ``context`` keys that are top-level Amplitude fields (``ip``, ``user_agent``,
#: ``session_id``, ``country``, ``os_name``…), with the type the SDK's ``EVENT_KEY_MAPPING``
#: requires. Other context keys have no Amplitude field and are not sent.
CONTEXT_FIELDS: Final[Mapping[str, tuple[str, type]]] = {
    key: (wire, kind)
    for key, (wire, kind) in EVENT_KEY_MAPPING.items()
    if key not in _OWN_FIELDS and kind in (str, int, float)
}

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_MS: Final = _dt.timedelta(milliseconds=1)


class Unsendable(ValueError):
    """An event Amplitude would refuse or the SDK would not send; the text says why."""


def epoch_millis(ts: _dt.datetime) -> int:
    """The SDK's ``time``: integer milliseconds since the epoch (exact, no float rounding)."""
    return (ts - _EPOCH) // _MS


#: fanout's canonical context keys whose Amplitude field has another name (the browser SDK
#: sends ``navigator.language`` as ``language``).
CANONICAL_ALIASES: Final[Mapping[str, str]] = {"locale": "language"}


def _context_fields(context: Mapping[str, Any], out: dict[str, Any]) -> None:
    for key, value in context.items():
        spec = CONTEXT_FIELDS.get(CANONICAL_ALIASES.get(key, key))
        if spec is None or value is None or isinstance(value, bool):
            continue
        wire, kind = spec
        if kind is float and isinstance(value, int):
            value = float(value)
        elif kind is int and isinstance(value, str):
            # The canonical session_id is text (fanout.context reads Amplitude's cookie
            # into it); Amplitude's is the session's start in integer milliseconds. Only
            # ASCII digits, within a signed 64-bit integer: the value may come from a
            # header anyone sends, and str.isdigit() alone takes "²" (which int() refuses)
            # and other scripts' digits.
            if not (value.isascii() and value.isdigit() and len(value) <= 18):
                continue
            value = int(value)
        if isinstance(value, kind):
            out[wire] = value


def _truncated(value: Any, path: str) -> Any:
    """``amplitude.utils.truncate``, except that an object above 1,024 keys is refused
    (the SDK silently replaces it with ``{}``)."""
    if isinstance(value, str):
        return value[:MAX_STRING_LENGTH] if len(value) > MAX_STRING_LENGTH else value
    if isinstance(value, dict):
        if len(value) > MAX_PROPERTY_KEYS:
            raise Unsendable(f"{path} has {len(value)} keys, above Amplitude's {MAX_PROPERTY_KEYS}")
        return {k: _truncated(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_truncated(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _properties(values: Mapping[str, Any], path: str, *, long_strings: bool) -> dict[str, Any]:
    # get_event_body() drops None values at the top level of each property object.
    out = {k: v for k, v in values.items() if v is not None}
    if len(out) > MAX_PROPERTY_KEYS:
        raise Unsendable(f"{path} has {len(out)} keys, above Amplitude's {MAX_PROPERTY_KEYS}")
    if long_strings:
        out = {k: _truncated(v, f"{path}.{k}") for k, v in out.items()}
    return out


class EventBuilder:
    """Builds Amplitude event bodies; holds only what every event shares (``library``)."""

    def __init__(self, *, library: str) -> None:
        self.library = library

    def _base(self, event: Event, event_type: str, insert_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {}
        _context_fields(event.context, body)
        body["event_type"] = event_type
        if event.person_id is not None:
            body["user_id"] = event.person_id
        if event.anonymous_id is not None:
            body["device_id"] = event.anonymous_id
        body["time"] = epoch_millis(event.timestamp)
        body["insert_id"] = insert_id
        body["library"] = self.library
        return body

    def to_amplitude(self, event: Event) -> list[dict[str, Any]]:
        """The Amplitude event bodies for ``event`` (one, or two for a group with a person).

        Raises :class:`Unsendable` for what Amplitude would refuse or the SDK never sends.
        """
        # Strings can only be too long in an event whose encoded size says so; skipping
        # the walk otherwise keeps the common event free of a second pass over its values.
        long_strings = event.size == 0 or event.size > MAX_STRING_LENGTH
        kind = event.kind
        if kind == "track" or kind == "page":
            if kind == "page":
                props = {PAGE_PROPERTIES.get(k, k): v for k, v in event.properties.items()}
                if event.name is not None:
                    props.setdefault("name", event.name)
                body = self._base(event, PAGE_EVENT, event.event_id)
            else:
                props = dict(event.properties)
                body = self._base(event, event.name or "", event.event_id)
            _require_id(event)
            if props:
                body["event_properties"] = _properties(
                    props, "properties", long_strings=long_strings
                )
            return [_cut_fields(body) if long_strings else body]
        if kind == "identify":
            _require_id(event)
            if not event.traits:
                raise Unsendable(
                    "an Amplitude identify needs at least one trait "
                    "(the SDK refuses an empty Identify)"
                )
            body = self._base(event, IDENTIFY, event.event_id)
            body["user_properties"] = {
                SET: _properties(event.traits, "traits", long_strings=long_strings)
            }
            return [_cut_fields(body) if long_strings else body]
        if kind == "group":
            assert event.group_type is not None and event.group_id is not None
            groups = {event.group_type: event.group_id}
            out: list[dict[str, Any]] = []
            traits = {k: v for k, v in event.traits.items() if v is not None}
            if traits:
                body = self._base(event, GROUP_IDENTIFY, event.event_id)
                body["groups"] = dict(groups)
                body["group_properties"] = {
                    SET: _properties(traits, "traits", long_strings=long_strings)
                }
                out.append(body)
            if event.person_id is not None or event.anonymous_id is not None:
                insert_id = event.event_id + ":group" if out else event.event_id
                body = self._base(event, IDENTIFY, insert_id)
                body["groups"] = dict(groups)
                body["user_properties"] = {SET: dict(groups)}
                out.append(body)
            if not out:
                raise Unsendable(
                    "an Amplitude group call needs traits (group properties) or a person "
                    "to put in the group"
                )
            return [_cut_fields(b) for b in out] if long_strings else out
        raise Unsendable(f"Amplitude's HTTP API has no {kind!r} call")


def _require_id(event: Event) -> None:
    if event.person_id is None and event.anonymous_id is None:
        # The SDK's verify_event() raises InvalidEventError for the same event.
        raise Unsendable("Amplitude needs a user_id (person_id) or device_id (anonymous_id)")


def _cut_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The SDK truncates the top-level string fields (ids, names) too."""
    for key, value in body.items():
        if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
            body[key] = value[:MAX_STRING_LENGTH]
    return body


def to_amplitude(event: Event, *, library: str) -> list[dict[str, Any]]:
    """:meth:`EventBuilder.to_amplitude` with a one-off builder (for tests and tools)."""
    return EventBuilder(library=library).to_amplitude(event)
