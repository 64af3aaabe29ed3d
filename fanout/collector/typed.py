"""A ``POST /v1/batch`` body decoded straight into typed events, by msgspec.

Decoding a batch with orjson builds a dict per event, which validation then reads key by
key in interpreted code: about half of the server's decode-and-validate time per event.
msgspec's decoder, given the event's shape, checks every field's JSON type in C while it
decodes and hands back :class:`TypedEvent` objects whose fields are plain attributes, so
what is left in Python is the value checks the decoder cannot make cheaply (non-blank
ids, the timestamp's form and calendar, the kind's own rules).

The shape states types and the value rules every valid event keeps whatever its kind (a
known kind, ``v`` 1, an ``event_id`` and a ``timestamp``, ids and the name of 1 to 512
characters), never a rule of one kind: an identify, an alias, a group, an event with a
group or a previous id all decode here too, and validation takes them the long way. A
body decodes into :class:`TypedEvent` objects when every event's every field has the
JSON type a valid event's would have (or is missing, or ``null`` where validation treats
``null`` as missing) and keeps those rules, and the body cannot hold U+0000. If only the
rules or U+0000 stand in the way, it decodes into :class:`LooseEvent` objects (types
only; validation checks every value). Any other body (a wrong type in one field of one
event, invalid UTF-8, a lone surrogate or a number out of range in a field an event has,
not JSON at all) raises, and :func:`fanout.collector.ingest.decode_body` decodes it again
the general way, where each event is judged alone: the fast decoder never rejects what
the general path would accept, and never decides a rejection itself.
(Unknown keys are skipped unread here, as the general way ignores them too: what they
hold changes no verdict.)

Optional: without msgspec (``pip install 'fanout[collector]'`` brings it; PyPy has no
wheel) :data:`decode_typed` is ``None`` and every body takes the general way.

:data:`encode` is msgspec's JSON encoder, the collector's one encoder of stored events
(general way included, so a stored event reads the same whichever way it came): a
:class:`TypedEvent` is encoded as it is, about half the CPU of building the document as a
dict and encoding that. It writes what orjson writes, byte for byte, but for floats of
10**16 and more, whose exponent it writes without ``+`` (``1e16``; both are JSON and read
back as the same float), and for integers beyond 64 bits, which it writes exactly (orjson
refuses them). It writes a non-finite float as ``null``: no JSON decoder fanout uses
produces one (:func:`fanout.collector.ingest.decode_body` sees to the standard library's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, get_args

from .._events import KINDS, MAX_ID_LENGTH, MAX_NAME_LENGTH, SCHEMA_VERSION
from .._validate import MAX_DEPTH

__all__ = ["DecodeError", "LooseEvent", "TypedEvent", "as_dict", "decode_typed", "encode"]

try:
    import msgspec
except ImportError:  # pragma: no cover - PyPy and platforms without a msgspec wheel
    TypedEvent: Any = None
    LooseEvent: Any = None
    decode_typed: Callable[[bytes | bytearray], list[Any]] | None = None
    as_dict: Callable[[Any], dict[str, Any]] | None = None
    DecodeError: type[Exception] = ValueError
    encode: Callable[[Any], bytes] | None = None
else:
    #: Levels of arrays and objects a typed ``properties``, ``traits`` or ``context`` may
    #: hold inside itself. A deeper one fails the typed decoding, and its body takes the
    #: general way; within it, the event is within ``MAX_DEPTH`` by its type, so the fast
    #: path need not check its depth (counting its encoding's brackets, a sixth of the
    #: typed path's CPU per event). Each level makes the decoder's build at import
    #: longer (3 ms at 3 levels, 16 ms at 5); real events' values rarely nest 3 deep.
    NESTED_LEVELS: Final = 5
    assert NESTED_LEVELS < MAX_DEPTH  # noqa: S101 - the field itself is one level
    _value: Any = str | int | float | bool | None
    for _ in range(NESTED_LEVELS):
        _value = str | int | float | bool | None | list[_value] | dict[str, _value]
    _Object = dict[str, _value]

    # Value rules every valid event keeps, whatever its kind (fanout.collector.ingest._row
    # rejects an event that breaks one), checked by the decoder in C: a body where one
    # event breaks one is decoded again the general way, and only that event rejected.
    # Lengths count characters, as ``len`` does. Blank ids, NUL, the timestamp's form and
    # calendar and the kind's own rules are left to Python (a ``pattern`` here is a call
    # into ``re`` per field: it doubled the decoder's CPU per event).
    _Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    _Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
    _Kind = Literal["track", "page", "identify", "alias", "group"]
    assert set(get_args(_Kind)) == KINDS and SCHEMA_VERSION == 1  # noqa: S101

    class TypedEvent(msgspec.Struct, gc=False, kw_only=True):  # type: ignore[no-redef]
        """One event of the protocol, every field typed as a valid event's, in the
        stored document's order (:func:`fanout.collector.ingest._document`; ``kw_only``
        keeps that order with required fields among defaulted ones). A missing field
        takes the document's value (``v`` 1, ``kind`` ``"track"``, empty objects, else
        ``None``), so a plain event is encoded as the stored event as it is decoded; a
        ``null`` decodes as ``None``, which validation reads as missing, as the general
        way does. :func:`as_dict` of an event is, for validation, the event as the
        general decoder gives it. ``gc=False``: no field can hold a cycle (JSON cannot)."""

        v: Literal[1] | None = 1
        kind: _Kind = "track"
        event_id: _Id
        timestamp: str
        person_id: _Id | None = None
        anonymous_id: _Id | None = None
        name: _Name | None = None
        properties: _Object | None = {}
        traits: _Object | None = {}
        context: _Object | None = {}
        group: dict[str, Any] | None = None
        previous_id: _Id | None = None

    class LooseEvent(msgspec.Struct, gc=False):  # type: ignore[no-redef]
        """:class:`TypedEvent` with types only, for a body one of whose events breaks
        one of its value rules or may hold U+0000: decoded this way, its events are
        still decoded once, and validation checks every value of a plain one (a second
        decoding by the general way cost 60 % more per event of such a body). Defaults
        are what validation reads for a missing field, ``None`` but for ``kind``."""

        v: int | None = None
        kind: str = "track"
        event_id: str | None = None
        timestamp: str | None = None
        person_id: str | None = None
        anonymous_id: str | None = None
        name: str | None = None
        properties: _Object | None = None
        traits: _Object | None = None
        context: _Object | None = None
        group: dict[str, Any] | None = None
        previous_id: str | None = None

    class _Batch(msgspec.Struct, gc=False):
        """``{"batch": [event, ...], ...}``; other top-level keys (``sent_at``) ignored."""

        batch: list[TypedEvent]

    class _LooseBatch(msgspec.Struct, gc=False):
        batch: list[LooseEvent]

    _decode_batch: Final = msgspec.json.Decoder(_Batch).decode
    _decode_loose: Final = msgspec.json.Decoder(_LooseBatch).decode

    def _decode_typed(body: bytes | bytearray) -> list[Any]:
        """The body's events as :class:`TypedEvent`, else as :class:`LooseEvent`, or
        :data:`DecodeError`.

        A body that may hold U+0000 (JSON can only write it ``\\u0000``) is decoded
        loose, so that no :class:`TypedEvent`'s id or name holds one and the fast path
        need not look (a search of the body costs less than a test of every field).
        """
        if b"\\u0000" not in body:
            try:
                return _decode_batch(body).batch
            except msgspec.ValidationError:  # a rule broken, or a type: try types alone
                pass
        return _decode_loose(body).batch

    decode_typed = _decode_typed
    encode = msgspec.json.Encoder().encode
    as_dict = msgspec.structs.asdict
    DecodeError = msgspec.DecodeError  # ValidationError is a subclass
