"""The one immutable ``Event`` type, and the validation that runs on the caller's thread.

Everything a backend could choke on is caught here, before anything is queued: an event
either becomes a fully JSON-safe, size-checked ``Event`` or the call raises ``InvalidEvent``
and no channel sees it. That is what lets the worker threads serialise without surprises
and lets ``track()`` promise "valid or nothing, never half-sent".

Values that have an obvious JSON form are converted once (datetime, date, Decimal, UUID,
Enum, set, tuple), so every provider sees the same canonical values. The walkers that copy,
check and measure an event's mappings live in :mod:`fanout._validate`.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple, NoReturn

from . import _random
from ._exceptions import InvalidEvent
from ._json import dumps
from ._json import dumps_strict as _dumps_strict
from ._validate import _OBJECT_ITEMS, MAX_ITEMS, Budget, _wide, check_dict, check_mapping, wire_size
from ._validate import EVENT_BYTES as _EVENT_BYTES
from ._validate import ITEM_BYTES as _ITEM_BYTES
from ._validate import MAX_DEPTH as MAX_DEPTH  # the collector checks the same depth

__all__ = [
    "CheckedDict",
    "Event",
    "EventKind",
    "ReadOnlyDict",
    "build_event",
    "checked_context",
    "checked_with",
    "rebuild",
    "new_event_id",
    "SCHEMA_VERSION",
]

EventKind = Literal["identify", "track", "page", "alias", "group"]
KINDS: Final[frozenset[str]] = frozenset({"identify", "track", "page", "alias", "group"})

#: Version of the canonical JSON form returned by :meth:`Event.to_dict`.
SCHEMA_VERSION: Final = 1
#: Default upper bound on one event's encoded size (``FANOUT_MAX_EVENT_BYTES``).
DEFAULT_MAX_EVENT_BYTES: Final = 256 * 1024
MAX_ID_LENGTH: Final = 512
MAX_NAME_LENGTH: Final = 512


class ReadOnlyDict(dict[str, Any]):
    """An event's ``properties``, ``traits`` or ``context``: a dict that refuses changes.

    A dict subclass rather than ``MappingProxyType``: JSON encoders (orjson and the
    standard library's C encoder) write a dict subclass directly, while a mapping proxy
    costs a conversion per mapping, per event, per provider. Nested containers are the
    event's private copies, so nothing the caller holds can change a queued event.
    """

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("an event's data is read-only: derive a copy with event.replace(...)")

    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def copy(self) -> dict[str, Any]:
        """A plain, changeable dict."""
        return dict(self)

    def __reduce__(self) -> tuple[type[ReadOnlyDict], tuple[dict[str, Any]]]:
        # Pickling and copy.copy() would otherwise rebuild it through __setitem__.
        return (ReadOnlyDict, (dict(self),))


_EMPTY: Final[Mapping[str, Any]] = ReadOnlyDict()


class CheckedDict(ReadOnlyDict):
    """A context mapping that went through the full check once: ``build_event`` takes it as
    it is, for every event of a request, instead of walking it again.

    Only :func:`checked_context` makes one, and it runs the same check as ``build_event``:
    so an instance is valid by construction, whoever asks for it. It remembers what the
    check measured (payload size, item budget spent) so each event's ``footprint`` and
    item limit stay exactly what the full check would give. The encoder's one call per
    event still runs over it (exact size, lone surrogates).
    """

    __slots__ = ("held", "spent", "masked")
    held: int
    spent: int
    #: What a built-in processor made of it, kept with it for the next event sharing it
    #: (the IP processor: ``(mode, the masked mapping, or None when unchanged)``), or
    #: ``None``.
    masked: tuple[str, Mapping[str, Any] | None] | None

    def __reduce__(self) -> tuple[type[ReadOnlyDict], tuple[dict[str, Any]]]:
        return (ReadOnlyDict, (dict(self),))  # unpickled, it is checked again like any dict


def checked_context(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """``values`` checked as an event's ``context``, once, for many events to reuse.

    Raises ``InvalidEvent`` like ``build_event`` would. The middleware build a request's
    context with it when the request is first read, so its events skip the walk.
    """
    if not values:
        return _EMPTY
    if type(values) is dict and len(values) <= _FLAT_ITEMS:
        # The middleware's parts (user agent, URL, referrer...): text only, measured here
        # as the walk measures it, without its frames.
        held = _texts_held(values)
        if held >= 0:
            flat = CheckedDict(values)
            flat.held, flat.spent, flat.masked = held, _OBJECT_ITEMS + 2 * len(values), None
            return flat
    budget = [MAX_ITEMS]
    out, held = check_mapping(values, "context", budget, CheckedDict)
    assert type(out) is CheckedDict  # noqa: S101 - check_mapping builds with ``make``
    out.held, out.spent, out.masked = held, MAX_ITEMS - budget[0], None
    return out


#: Most items :func:`checked_context` measures without the walk (well within its budget).
_FLAT_ITEMS: Final = 64


def _texts_held(values: Mapping[str, Any]) -> int:
    """What the walk holds for an object's items when every key and value is plain text
    (for each: its key and value, two budget items, and their text, as
    ``_validate._object``'s literals count them); ``-1`` when one is not."""
    held = 0
    for key, text in values.items():
        if type(text) is not str or type(key) is not str:
            return -1
        held += len(key) + 17 + (len(text) if text.isascii() else _wide(text))
    return held


def checked_with(added: Mapping[str, str], *checked: Mapping[str, Any]) -> Mapping[str, Any]:
    """``checked_context({**added, **part, ...})`` for ``checked`` mappings that
    :func:`checked_context` made (or empty ones), with keys of their own: only the texts
    of ``added`` are measured, and the parts' measures are added up.

    The middleware keep the parts of a request's context checked once, each by what it is
    read from (the browser's user agent and locale, the page's URL and campaign, the
    referrer: each shared by other requests), and put them together with each visitor's
    session id and address without walking them again: a new visitor, or a returning one
    on a new page, would otherwise send the whole context through the walk. The result,
    its ``held`` and ``spent`` are exactly what the full check gives (a test holds them
    together); anything else (an unchecked part, two parts or ``added`` sharing a key, a
    value of ``added`` that is not a plain string) takes the full check.
    """
    if not added and len(checked) == 1:
        only = checked[0]
        return only if type(only) is CheckedDict else checked_context(only)
    held, spent, count = 0, _OBJECT_ITEMS, len(added)
    for part in checked:
        if not part:  # (an empty part holds nothing: its measures are not an item's)
            continue
        if type(part) is CheckedDict:
            held += part.held  # (a non-empty object's held is its items', with nothing more)
            spent += part.spent - _OBJECT_ITEMS
            count += len(part)
        else:
            count = -1  # an unchecked part: never the merged length, the full check below
            break
    # The middleware's cases, merged by the interpreter's own opcodes (``dict.update``
    # goes through the argument parser).
    if len(checked) == 3:
        first, second, third = checked
        merged = {**added, **first, **second, **third}
    elif len(checked) == 1:
        merged = {**added, **checked[0]}
    else:
        merged = dict(added)
        for part in checked:
            merged.update(part)
    if len(merged) != count:  # an unchecked part, or a key given twice
        return checked_context(merged)
    if not merged:
        return _EMPTY
    if added:
        texts = _texts_held(added)
        if texts < 0:
            return checked_context(merged)
        held += texts
        spent += 2 * len(added)
    if spent > MAX_ITEMS:
        return checked_context(merged)  # raises, naming the limit
    out = CheckedDict(merged)
    out.held, out.spent, out.masked = held, spent, None
    return out


_UTC = _dt.timezone.utc
_getrandbits = _random.getrandbits
_time_ns = time.time_ns
_now = _dt.datetime.now
_fromiso = _dt.datetime.fromisoformat
_tuple_new = tuple.__new__
_NONE: Final[tuple[Mapping[str, Any], int]] = (_EMPTY, 0)
#: rand_a (12 bits) as text with the hyphen after it, for each value: a lookup, not a format.
_RAND_A: Final = tuple(f"{i:03x}-" for i in range(4096))
#: rand_b of a UUIDv7 with its variant bits (0b10) set above 62 random bits.
_VARIANT: Final = 0x8000_0000_0000_0000
#: (Unix millisecond, its id prefix "tttttttt-tttt-7", where its counter starts): what the
#: ids of one millisecond share, formatted once. Swapped as one tuple, so a thread never
#: sees half of it.
_millisecond: tuple[int, str, int] = (-1, "", 0)
_counter = itertools.count()


def new_event_id() -> str:
    """A UUIDv7 string (RFC 9562): unique, and ordered by creation time.

    Time order keeps a collector's primary-key index append-mostly, and the format is a
    valid UUID so vendors that insist on one (PostHog) take it unchanged. Layout: 48 bits
    of Unix milliseconds, the version, a 12-bit counter starting at a random value each
    millisecond (rand_a: RFC 9562's "fixed bit-length dedicated counter"), the variant and
    62 random bits (rand_b). Ids made by one process within one millisecond differ by the
    counter as well as by their random bits.

    The random bits come from fanout's own generator (:mod:`fanout._random`), never the
    application's ``random.seed``: it is reseeded in a forked child, so a parent and its
    child never share them. Event ids need uniqueness, not secrecy. The millisecond's
    prefix is formatted once for all its ids, which makes an id
    about a sixth cheaper than formatting all 128 bits each time.
    """
    global _millisecond
    ms = _time_ns() // 1_000_000
    now = _millisecond
    if now[0] != ms:
        h = f"{ms:012x}"
        now = _millisecond = (ms, f"{h[:8]}-{h[8:]}-7", _getrandbits(12))
    # The variant's top bit makes it always 16 hex digits after "0x": hex() needs no
    # padding, and costs less than a printf-style "%016x".
    b = hex(_VARIANT | _getrandbits(62))
    return f"{now[1]}{_RAND_A[(now[2] + next(_counter)) & 0xFFF]}{b[2:6]}-{b[6:]}"


class _EventFields(NamedTuple):
    # The storage: a tuple with C-level field getters. Only build_event creates these
    # directly (tuple.__new__), after validating; every public way goes through Event.
    kind: EventKind
    event_id: str
    timestamp: _dt.datetime
    person_id: str | None = None
    anonymous_id: str | None = None
    name: str | None = None
    properties: Mapping[str, Any] = _EMPTY
    traits: Mapping[str, Any] = _EMPTY
    context: Mapping[str, Any] = _EMPTY
    group_type: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    size: int = 0
    footprint: int = 0


class Event(_EventFields):
    """One analytics call, validated and immutable, shared by every channel.

    ``properties``, ``traits`` and ``context`` are read-only mappings of JSON-safe values.
    ``size`` is the encoded size in bytes (an upper bound of :meth:`to_json`'s length, JSON
    escapes included), used for batch limits and ``FANOUT_MAX_EVENT_BYTES``. ``footprint``
    estimates the memory the event holds while queued, used for ``FANOUT_QUEUE_BYTES``.
    Processors derive changed copies with :meth:`replace`.

    Valid by construction: ``Event(...)``, :meth:`replace`, ``_replace``, ``_make`` and
    unpickling all validate exactly as ``track()`` does and raise ``InvalidEvent`` naming the
    path, so no processor, import or ``Client.send()`` can fan out an event a backend would
    choke on. ``event_id`` and ``timestamp`` default to a new id and now; ``size`` and
    ``footprint`` are always computed, never taken. The one thing not applied is the size
    limit, which is each client's setting (``FANOUT_MAX_EVENT_BYTES``); the channels still
    refuse an event above their provider's limit.

    A tuple rather than a frozen dataclass: it is immutable the same way, and building one
    costs a seventh of a frozen dataclass's ``__init__`` (0.7 µs against 5.8 µs measured
    here), which matters because one is built on the caller's thread per call.
    """

    __slots__ = ()

    def __new__(
        cls,
        kind: str,
        event_id: str | None = None,
        timestamp: Any = None,
        person_id: str | None = None,
        anonymous_id: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        group_type: str | None = None,
        group_id: str | None = None,
        previous_id: str | None = None,
        size: int | None = None,  # accepted for tuple round trips; always recomputed
        footprint: int | None = None,  # likewise
    ) -> Event:
        return build_event(
            kind,
            event_id=event_id,
            timestamp=timestamp,
            person_id=person_id,
            anonymous_id=anonymous_id,
            name=name,
            properties=properties,
            traits=traits,
            context=context,
            group_type=group_type,
            group_id=group_id,
            previous_id=previous_id,
            max_bytes=None,
        )

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> Event:  # type: ignore[override]
        # Typed for Event, not the generic tuple type the base declares.
        """Build from a sequence of field values, validated like ``Event(...)``."""
        return cls(*iterable)

    def _replace(self, /, **changes: Any) -> Event:
        """The same as :meth:`replace`: validated."""
        return self.replace(**changes)

    @property
    def distinct_id(self) -> str:
        """The id a backend should attribute the event to: the person, else the visitor."""
        return self.person_id or self.anonymous_id or ""

    def replace(self, **changes: Any) -> Event:
        """Return a copy with ``changes`` applied; the new values are validated again."""
        data = self._asdict()
        unknown = set(changes) - set(data)
        if unknown:
            raise TypeError(f"Event has no field(s) {sorted(unknown)}")
        data.update(changes)
        return Event(**data)

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form: fanout's native wire format and dead-letter format.

        A new dict the caller may change; its mappings are copies of the event's.
        """
        data = self._canonical()
        data["properties"] = dict(self.properties)
        data["traits"] = dict(self.traits)
        data["context"] = dict(self.context)
        return data

    def to_json(self) -> bytes:
        """:meth:`to_dict` as compact UTF-8 JSON, encoded without copying the mappings."""
        return dumps(self._canonical())

    def _canonical(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "kind": self.kind,
            "event_id": self.event_id,
            "timestamp": format_timestamp(self.timestamp),
            "person_id": self.person_id,
            "anonymous_id": self.anonymous_id,
            "name": self.name,
            "properties": self.properties,
            "traits": self.traits,
            "context": self.context,
            "group": (
                {"type": self.group_type, "id": self.group_id}
                if self.group_id is not None
                else None
            ),
            "previous_id": self.previous_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, max_bytes: int | None = None) -> Event:
        """Rebuild (and re-validate) an event from :meth:`to_dict` output or an import file."""
        if not isinstance(data, Mapping):
            raise InvalidEvent("an event must be a JSON object")
        group = data.get("group") or {}
        if not isinstance(group, Mapping):
            raise InvalidEvent("group must be an object with 'type' and 'id'", path="group")
        return build_event(
            kind=data.get("kind", "track"),
            event_id=data.get("event_id"),
            timestamp=data.get("timestamp"),
            person_id=data.get("person_id"),
            anonymous_id=data.get("anonymous_id"),
            name=data.get("name"),
            properties=data.get("properties"),
            traits=data.get("traits"),
            context=data.get("context"),
            group_type=group.get("type"),
            group_id=group.get("id"),
            previous_id=data.get("previous_id"),
            max_bytes=max_bytes,
        )


def format_timestamp(ts: _dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``, as most collectors expect.

    Formatted field by field: half the cost of ``isoformat()`` plus slicing, and workers
    format one per event.
    """
    if ts.tzinfo is not _UTC:  # events are normalised to UTC; others are converted
        ts = ts.astimezone(_UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 - faster than an f-string
        ts.year,
        ts.month,
        ts.day,
        ts.hour,
        ts.minute,
        ts.second,
        ts.microsecond // 1000,
    )


#: The ".mmmZ" end of a timestamp for each millisecond: a lookup, not a format.
_MILLIS: Final = tuple(f".{i:03d}Z" for i in range(1000))


def format_timestamps(stamps: Iterable[_dt.datetime]) -> list[str]:
    """:func:`format_timestamp` of each of ``stamps``, the same text, for a whole batch.

    A batch's events were mostly tracked within the same second, so the
    "YYYY-MM-DDTHH:MM:SS" part is formatted once per second met and the milliseconds are
    looked up: the printf-style format of seven numbers was most of the per-event cost of
    the collector's wire mapping (about 1.9 of its 2.3 µs). Exact whatever the order: the
    prefix is remembered by all six of its fields, not assumed from the last event.
    """
    out: list[str] = []
    append = out.append
    millis = _MILLIS
    last: tuple[int, ...] = ()
    prefix = ""
    for ts in stamps:
        if ts.tzinfo is not _UTC:
            ts = ts.astimezone(_UTC)
        key = (ts.second, ts.minute, ts.hour, ts.day, ts.month, ts.year)
        if key != last:
            last = key
            prefix = "%04d-%02d-%02dT%02d:%02d:%02d" % (  # noqa: UP031 - as format_timestamp
                ts.year, ts.month, ts.day, ts.hour, ts.minute, ts.second
            )  # fmt: skip
        append(prefix + millis[ts.microsecond // 1000])
    return out


# -- validation -------------------------------------------------------------------------
#
# The mappings' walkers live in _validate.py; here, the fields' own checks. Plain values are
# checked inline and anything else pays for a call, because this runs for every call.


def _mapping(value: Any, field: str, budget: Budget) -> tuple[Mapping[str, Any], int]:
    if (type(value) is dict or type(value) is ReadOnlyDict) and not value:
        return _EMPTY, 0
    return check_mapping(value, field, budget, ReadOnlyDict)


def _identifier(value: Any, field: str) -> str | None:
    if value is None:
        return None
    try:
        if type(value) is int or isinstance(value, uuid.UUID):
            text = str(value)
        elif isinstance(value, str):
            text = str.__str__(value)  # a subclass's plain text, whatever its __str__ does
        else:
            raise InvalidEvent(
                f"{field} must be a string, not {type(value).__name__}", path=field
            )
    except InvalidEvent:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. an int too long for str()
        raise InvalidEvent(
            f"{field} could not be read as a string ({type(exc).__name__})", path=field
        ) from None
    if not text or text.isspace():
        raise InvalidEvent(f"{field} must not be empty", path=field)
    if len(text) > MAX_ID_LENGTH:
        raise InvalidEvent(f"{field} is longer than {MAX_ID_LENGTH} characters", path=field)
    return text


def _plain_id(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and not value.isspace()


def _kind(value: Any) -> str:
    if isinstance(value, str) and str.__str__(value) in KINDS:
        return str.__str__(value)
    shown = str.__str__(value) if isinstance(value, str) else type(value).__name__
    raise InvalidEvent(f"unknown event kind {shown[:40]!r}", path="kind")


def _timestamp(value: Any) -> _dt.datetime:
    try:
        return _checked_timestamp(value)
    except InvalidEvent:
        raise
    except Exception as exc:  # noqa: BLE001 - a datetime (subclass) out of range or odd tzinfo
        raise InvalidEvent(
            f"timestamp could not be read as a date-time ({type(exc).__name__})",
            path="timestamp",
        ) from None


def _checked_timestamp(value: Any) -> _dt.datetime:
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(str.__str__(value).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEvent(
                f"timestamp {str.__str__(value)[:40]!r} is not an ISO 8601 date-time",
                path="timestamp",
            ) from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            value = _dt.datetime.fromtimestamp(value, _UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidEvent("timestamp is out of range", path="timestamp") from None
    if not isinstance(value, _dt.datetime):
        raise InvalidEvent(
            "timestamp must be a timezone-aware datetime, an ISO 8601 string or epoch seconds",
            path="timestamp",
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidEvent(
            "timestamp must be timezone-aware (a naive datetime is ambiguous); "
            "use datetime.now(timezone.utc)",
            path="timestamp",
        )
    return value.astimezone(_UTC)


#: The checked fields encoded together in one call, and the names that paths start with.
_ENCODED: Final = (
    "event_id",
    "person_id",
    "anonymous_id",
    "name",
    "group_type",
    "group_id",
    "previous_id",
    "properties",
    "traits",
    "context",
)
#: What Event.to_json() adds to those fields' encoding, at most: keys, kind, timestamp.
_ENVELOPE: Final = 180


_CONTEXT_INDEX: Final = _EventFields._fields.index("context")


def with_masked_context(event: Event, context: Mapping[str, Any]) -> Event:
    """``event`` with ``context`` replaced, without validating again: for built-in
    processors that only drop keys or replace string values by shorter or equal ASCII
    (the IP processor), which cannot make a valid event invalid or larger.

    The full check of :meth:`Event.replace` walks and encodes the whole event again (15-20
    µs per tracked request); this keeps the old ``size`` and ``footprint``, which stay upper
    bounds. Not for user code: processors that add data use ``event.replace``.
    """
    fields = list(event)
    if not context:
        fields[_CONTEXT_INDEX] = _EMPTY
    else:  # a mapping this function made before is shared, not copied
        fields[_CONTEXT_INDEX] = context if type(context) is ReadOnlyDict else ReadOnlyDict(context)
    return _tuple_new(Event, tuple(fields))


#: Keys and values a request's context (a middleware's reading) counts
#: against ``MAX_ITEMS`` at most (tests/integrations/test_deferred_reading.py holds it).
CONTEXT_ITEMS: Final = 64


def has_room_for_context(event: Event, max_bytes: int | None, reserve: int) -> bool:
    """Whether ``event`` can take a request's context (at most ``reserve`` bytes encoded
    and :data:`CONTEXT_ITEMS` items) and stay within ``max_bytes`` and ``MAX_ITEMS``: its
    ``footprint`` counts ``ITEM_BYTES`` per item, so it bounds the items it holds."""
    return (max_bytes is None or event.size + reserve <= max_bytes) and (
        event.footprint // _ITEM_BYTES + CONTEXT_ITEMS <= MAX_ITEMS
    )


def with_request_context(
    event: Event, person_id: Any, anonymous_id: Any, context: Mapping[str, Any] | None
) -> Event:
    """``event`` (built from a call's own arguments, no context of its own) with the ids
    and the checked ``context`` (a :class:`CheckedDict`, or ``None``) of its request, read
    since: what :func:`build` gives for the whole call, without walking its properties or
    traits again. Its ``size`` and ``footprint`` are :func:`build`'s, exactly: the encoded
    ids and context replace those the event was built with. The caller made sure it has
    room (:func:`has_room_for_context`)."""
    if person_id is not None and not _plain_id(person_id):
        person_id = _identifier(person_id, "person_id")
    if anonymous_id is not None and not _plain_id(anonymous_id):
        anonymous_id = _identifier(anonymous_id, "anonymous_id")
    if person_id is None and anonymous_id is None:
        raise InvalidEvent("an event needs a person_id or an anonymous_id", path="person_id")
    (kind, eid, ts, old_person, old_anonymous, name, props, trts, _, gtype, gid, prev,
     size, footprint) = event  # fmt: skip
    size += (
        len(_dumps_strict(person_id)) + len(_dumps_strict(anonymous_id))
        - len(_dumps_strict(old_person)) - len(_dumps_strict(old_anonymous))
    )  # fmt: skip
    footprint += (
        len(person_id or "") + len(anonymous_id or "")
        - len(old_person or "") - len(old_anonymous or "")
    )  # fmt: skip
    ctx: Mapping[str, Any] = _EMPTY
    if context:
        if type(context) is not CheckedDict:
            raise TypeError("with_request_context takes a checked context")
        ctx = context
        size += len(_dumps_strict(ctx)) - 2  # ({} before)
        footprint += context.held + _ITEM_BYTES * context.spent
    return _tuple_new(
        Event,
        (kind, eid, ts, person_id, anonymous_id, name, props, trts, ctx, gtype, gid, prev,
         size, footprint),
    )  # fmt: skip


def rebuild(fields: Sequence[Any]) -> Event:
    """An event from all of its fields, as another process of this same fanout encoded a
    built ``Event`` with orjson (the process-delivery pipe: ``fanout._relay_link``).

    Not checked again: the sending process built it through :func:`build_event`, and the
    pipe is private to the two processes (a spool file, which anyone could edit, is read
    back through the full check instead). Only the shapes change on the way: the
    timestamp is parsed back from its ISO text and the mappings are made read-only again;
    ``size`` and ``footprint`` are taken as they were computed. This saves the child the
    validation walk per event, which was a quarter of process delivery's extra CPU.
    """
    (kind, eid, ts, person_id, anonymous_id, name, props, traits, ctx, gtype, gid, prev,
     size, footprint) = fields  # fmt: skip
    return _tuple_new(
        Event,
        (kind, eid, _fromiso(ts), person_id, anonymous_id, name,
         ReadOnlyDict(props) if props else _EMPTY, ReadOnlyDict(traits) if traits else _EMPTY,
         ReadOnlyDict(ctx) if ctx else _EMPTY, gtype, gid, prev, size, footprint),
    )  # fmt: skip


def build_event(
    kind: str,
    *,
    name: Any = None,
    person_id: Any = None,
    anonymous_id: Any = None,
    properties: Any = None,
    traits: Any = None,
    context: Any = None,
    event_id: Any = None,
    timestamp: Any = None,
    group_type: Any = None,
    group_id: Any = None,
    previous_id: Any = None,
    max_bytes: int | None = DEFAULT_MAX_EVENT_BYTES,
) -> Event:
    """Validate one call and build its ``Event``; raise ``InvalidEvent`` naming the culprit.

    Nothing else escapes, whatever the arguments are (a property-based test throws arbitrary
    values at it): the checks below name the field or key path, and a last net turns
    anything they did not foresee into an ``InvalidEvent`` too.
    """
    return build(
        kind, name, person_id, anonymous_id, properties, traits, context, event_id,
        timestamp, group_type, group_id, previous_id, max_bytes,
    )  # fmt: skip


def build(
    kind: Any,
    name: Any,
    person_id: Any,
    anonymous_id: Any,
    properties: Any,
    traits: Any,
    context: Any,
    event_id: Any,
    timestamp: Any,
    group_type: Any,
    group_id: Any,
    previous_id: Any,
    max_bytes: int | None,
) -> Event:
    """:func:`build_event` with positional arguments: what ``Client.track()`` calls.

    Keyword arguments cost a dict per hop on the caller's thread (a ``track()`` went
    through two); this takes the values as they are. Same checks, same result.
    """
    try:
        if type(kind) is not str or kind not in KINDS:
            kind = _kind(kind)
        # None and plain, valid strings are by far the common cases; only the rest pays for
        # a call to the full check (the test of _plain_id, inlined).
        if person_id is not None and not (
            type(person_id) is str
            and 0 < len(person_id) <= MAX_ID_LENGTH
            and not person_id.isspace()
        ):
            person_id = _identifier(person_id, "person_id")
        if anonymous_id is not None and not (
            type(anonymous_id) is str
            and 0 < len(anonymous_id) <= MAX_ID_LENGTH
            and not anonymous_id.isspace()
        ):
            anonymous_id = _identifier(anonymous_id, "anonymous_id")
        if person_id is None and anonymous_id is None:
            raise InvalidEvent("an event needs a person_id or an anonymous_id", path="person_id")
        if name is not None or kind == "track":
            if type(name) is not str or not name or len(name) > MAX_NAME_LENGTH or name.isspace():
                raise InvalidEvent(
                    f"the event name must be a non-empty string of at most {MAX_NAME_LENGTH} "
                    "characters",
                    path="name",
                )
        eid: str = (
            new_event_id()
            if event_id is None
            else (event_id if _plain_id(event_id) else _identifier(event_id, "event_id"))  # type: ignore[assignment]
        )
        gtype = gid = prev = None
        if group_type is not None or group_id is not None or kind == "group":
            gtype = _identifier(group_type, "group_type")
            gid = _identifier(group_id, "group_id")
            if kind == "group" and (gtype is None or gid is None):
                raise InvalidEvent(
                    "a group call needs a group_type and a group_id", path="group_id"
                )
        if previous_id is not None or kind == "alias":
            prev = _identifier(previous_id, "previous_id")
            if kind == "alias" and prev is None:
                raise InvalidEvent("an alias call needs a previous_id", path="previous_id")
        budget = [MAX_ITEMS]
        # A plain dict, the common case, goes straight to the walker; an empty one is the
        # shared empty mapping.
        props: Mapping[str, Any]
        if type(properties) is dict and properties:
            props, n1 = check_dict(properties, "properties", budget, ReadOnlyDict)
        elif properties is None or type(properties) is dict:
            props, n1 = _NONE
        else:
            props, n1 = _mapping(properties, "properties", budget)
        trts, n2 = _mapping(traits, "traits", budget) if traits is not None else _NONE
        ctx: Mapping[str, Any]
        if context is None:
            ctx, n3 = _NONE
        elif type(context) is CheckedDict:  # checked when its request was read: not again
            ctx, n3 = context, context.held
            budget[0] -= context.spent
            if budget[0] < 0:
                raise InvalidEvent(
                    f"context holds more than {MAX_ITEMS:,} keys and values in all (the limit "
                    "per event)",
                    path="context",
                )
        else:
            ctx, n3 = _mapping(context, "context", budget)
        # One encoder call checks every string for lone surrogates and gives the exact size.
        values = (eid, person_id, anonymous_id, name, gtype, gid, prev, props, trts, ctx)
        try:
            size = _ENVELOPE + len(_dumps_strict(values))
        except Exception:  # noqa: BLE001 - wire_size names the culprit and raises
            size = _ENVELOPE + wire_size(values, _ENCODED)
        if max_bytes is not None and size > max_bytes:
            raise InvalidEvent(
                f"the event is {size} bytes encoded, above the {max_bytes}-byte limit "
                "(FANOUT_MAX_EVENT_BYTES)",
                path="properties",
            )
        # memory_estimate(), inlined: the text held, and a cost per key, value and object.
        footprint = (
            _EVENT_BYTES
            + n1 + n2 + n3 + len(eid) + len(name or "") + len(person_id or "")
            + len(anonymous_id or "") + _ITEM_BYTES * (MAX_ITEMS - budget[0])
        )  # fmt: skip
        ts = _now(_UTC) if timestamp is None else _timestamp(timestamp)
        # The NamedTuple's own __new__ would check the fields by keyword again.
        return _tuple_new(
            Event,
            (kind, eid, ts, person_id, anonymous_id, name, props, trts, ctx, gtype, gid, prev,
             size, footprint),
        )  # fmt: skip
    except InvalidEvent:
        raise
    except Exception as exc:  # noqa: BLE001 - the promise: track() raises only InvalidEvent
        raise InvalidEvent(f"the event could not be validated ({type(exc).__name__})") from None
