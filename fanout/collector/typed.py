"""A ``POST /v1/batch`` body decoded straight into typed events, by msgspec.

Decoding a batch with orjson builds a dict per event, which validation then reads key by
key in interpreted code: about half of the server's decode-and-validate time per event.
msgspec's decoder, given the event's shape, checks every field's JSON type in C while it
decodes and hands back :class:`TypedEvent` objects whose fields are plain attributes, so
what is left in Python is the value checks JSON types cannot express (non-blank ids, no
NUL, the timestamp's calendar, the nesting depth).

The shape only states types, never values: a body decodes here when every event's every
field has the JSON type a valid event's would have (or is missing, or ``null`` where
validation treats ``null`` as missing). Any other body (a wrong type in one field of one
event, invalid UTF-8, a lone surrogate or a number out of range in a field an event has,
not JSON at all) raises,
and :func:`fanout.collector.ingest.decode_body` decodes it again the general way, where
each event is judged alone: the fast decoder never rejects what the general path would
accept, and never decides a rejection itself. (Unknown keys are skipped unread here, as
the general way ignores them too: what they hold changes no verdict.)

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
from typing import Any, Final

from .._validate import MAX_DEPTH

__all__ = ["DecodeError", "TypedEvent", "as_dict", "decode_typed", "encode"]

try:
    import msgspec
except ImportError:  # pragma: no cover - PyPy and platforms without a msgspec wheel
    TypedEvent: Any = None
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

    class TypedEvent(msgspec.Struct, gc=False):  # type: ignore[no-redef]
        """One event of the protocol, every field typed as a valid event's, in the
        stored document's order (:func:`fanout.collector.ingest._document`), so that
        once its missing fields are given the document's values (``v`` 1, empty
        objects) it is encoded as the stored event. Defaults are what validation reads
        for a missing field (``fanout.collector.ingest._row`` reads ``kind`` with
        ``"track"``, every other field with ``None``), so :func:`as_dict` of an event is,
        for validation, the event as the general decoder gives it. ``gc=False``: no
        field can hold a cycle (JSON cannot)."""

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

    _decode_batch: Final = msgspec.json.Decoder(_Batch).decode

    def _decode_typed(body: bytes | bytearray) -> list[Any]:
        """The body's events as :class:`TypedEvent`, or :data:`DecodeError`."""
        return _decode_batch(body).batch

    decode_typed = _decode_typed
    encode = msgspec.json.Encoder().encode
    as_dict = msgspec.structs.asdict
    DecodeError = msgspec.DecodeError  # ValidationError is a subclass
