"""The typed decoding (msgspec, fanout.collector.typed) gives exactly the verdicts and the
stored bytes of the general decoding (orjson or the standard library, then each event
judged alone), on any body: it only makes the common body cheaper.

The general decoding is reached directly (``ingest._loads``), the way ``decode_body``
falls back to it, so each body is judged both ways in the same test.
"""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.test_collector_events_fuzz import events, json_values
from fanout._events import KINDS, MAX_ID_LENGTH, MAX_NAME_LENGTH
from fanout.collector import ingest
from fanout.collector.ingest import ProtocolError, decode_body, validate_batch
from fanout.collector.protocol import Limits
from fanout.collector.typed import NESTED_LEVELS, LooseEvent, TypedEvent
from fanout.providers.collector import CollectorProvider

BASE = {"kind": "track", "event_id": "e0", "name": "x", "person_id": "p",
        "timestamp": "2024-05-01T10:00:00.000Z"}


def general(body: bytes) -> list[object]:
    """The batch as the general decoding reads it (what ``decode_body`` falls back to)."""
    exact = body.translate(ingest._SCAN).find(ingest._LONG_DIGITS) < 0
    batch: list[object] = ingest._loads(body, exact)["batch"]
    return batch


def both(body: bytes) -> tuple[ingest.Ingested, ingest.Ingested, type | None]:
    """(verdicts via decode_body, verdicts via the general decoding, the class of the
    events if decode_body took the typed way: TypedEvent, or LooseEvent)."""
    decoded = decode_body(body)
    typed = type(decoded[0]) if decoded and type(decoded[0]) in (TypedEvent, LooseEvent) else None
    return validate_batch(decoded), validate_batch(general(body)), typed


def encodings(batch: list[object]) -> list[bytes]:
    """The same batch as different clients write it: orjson (fanout), the standard
    library escaping non-ASCII, and with spaces."""
    out = [json.dumps({"batch": batch}).encode(), json.dumps({"batch": batch}, indent=1).encode()]
    try:
        out.append(orjson.dumps({"batch": batch}))
    except TypeError:  # an integer beyond 64 bits, a lone surrogate: orjson refuses
        pass
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events() | json_values, max_size=12))
def test_any_body_gets_the_verdicts_and_bytes_of_the_general_decoding(batch):
    for body in encodings(batch):
        fast, reference, _ = both(body)
        assert fast == reference


# Events whose every field has the JSON type the typed decoding expects (or is missing or
# null), with any values: blank, NUL, at and past the length limits, odd timestamps,
# every kind and some that are none, nesting up to the typed levels. Text without lone
# surrogates, so such a body decodes typed exactly when it keeps the rules the typed
# shape states (``keeps_the_typed_rules``).
TIMESTAMPS = [
    "2024-05-01T10:00:00.000Z", "2024-02-30T10:00:00.000Z", "2024-02-29T10:00:00.000Z",
    "2023-02-29T10:00:00.000Z", "2024-12-31T23:59:60.000Z", "2024-05-01T24:00:00.000Z",
    "2024-05-01 10:00:00.000Z", "2024-05-01T10:00:00,000Z", "2024-W18-3T10:00:00.000Z",
    "20240501T10:00:00.0000Z", "2024-05-01T10:00-01.000Z", "2024-05-01T10+01:00.000Z",
    "2024-05-01T10:00:00.00+1Z", "2024-05-01T10:00:00.000z", "0000-05-01T10:00:00.000Z",
    "2024-05-01T10:00:00.000+00:00", "2024-05-01T10:00:00Z", "2024-05-01", "",
]
BLANK = [" ", "\t", "\n \r", "\u00a0", "\u3000", "\u2028", "\x1c", "\x85", " \u200b "]
text = st.text(st.characters(codec="utf-8"), max_size=8) | st.sampled_from(
    ["", "a\x00b", "\x00", "x" * 511, "x" * 512, "x" * 513, "é" * 512, "é" * 513,
     "\U0001f600" * 512, "\U0001f600" * 513, " x" * 256, "track", "page", "identify",
     "alias", "group", "Track", "other", *BLANK, *TIMESTAMPS])
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(
    allow_nan=False, allow_infinity=False) | text
objects = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(text, inner, max_size=3), max_leaves=8).filter(
    lambda v: _depth(v) <= NESTED_LEVELS).flatmap(
    lambda v: st.dictionaries(text, st.just(v), max_size=2))
TYPED = {"v": st.none() | st.integers(0, 2), "kind": st.sampled_from(
    ["track", "page", "identify", "alias", "group", "other", "Track", ""]) | text,
    "event_id": st.none() | text, "timestamp": st.none() | st.sampled_from(TIMESTAMPS) | text, "person_id": st.none() | text, "anonymous_id": st.none() | text,
    "name": st.none() | text, "properties": st.none() | objects, "traits": st.none() | objects,
    "context": st.none() | objects, "group": st.none() | st.fixed_dictionaries(
        {"type": text, "id": text}), "previous_id": st.none() | text}


def keeps_the_typed_rules(event: dict[str, object]) -> bool:
    """The value rules fanout.collector.typed's shape states, written out plainly."""
    def fits(value: object, most: int) -> bool:
        return type(value) is str and 1 <= len(value) <= most

    return (event.get("v") in (None, 1) and event.get("kind", "track") in KINDS
            and fits(event.get("event_id"), MAX_ID_LENGTH) and type(event.get("timestamp")) is str
            and all(event.get(field) is None or fits(event[field], MAX_ID_LENGTH)
                    for field in ("person_id", "anonymous_id", "previous_id"))
            and (event.get("name") is None or fits(event["name"], MAX_NAME_LENGTH)))


def _depth(value: object) -> int:
    if type(value) is dict:
        return 1 + max(map(_depth, value.values()), default=0)
    if type(value) is list:
        return 1 + max(map(_depth, value), default=0)
    return 0


@st.composite
def typed_events(draw):
    event = dict(BASE)
    for field in draw(st.lists(st.sampled_from(sorted(TYPED)), unique=True)):
        if draw(st.booleans()):
            event.pop(field, None)
        else:
            event[field] = draw(TYPED[field])
    return event


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(typed_events(), min_size=1, max_size=12))
def test_typed_events_are_decoded_typed_and_judged_as_the_general_way_judges_them(batch):
    body = orjson.dumps({"batch": batch})
    fast, reference, typed = both(body)
    # Every field of the expected type: this body took the typed way, as TypedEvents if
    # (and only if) every event keeps the rules their shape states.
    strict = b"\\u0000" not in body and all(map(keeps_the_typed_rules, batch))
    assert typed is (TypedEvent if strict else LooseEvent)
    assert fast == reference
    assert len(fast.rows) + len(fast.rejected) == len(batch)


def test_a_fanout_clients_body_is_decoded_the_typed_way_and_stored_the_same():
    provider = CollectorProvider("http://127.0.0.1:9", "sk_x", gzip_min_bytes=None)
    from fanout import Event

    events_ = [Event(kind="track", name="checkout.finished", person_id=f"u{i}",
                     properties={"plan": "pro", "amount": 29.5, "items": [{"sku": "A"}]},
                     event_id=f"id{i}") for i in range(50)]
    body = provider.encode(events_)
    fast, reference, typed = both(body)
    assert typed is TypedEvent
    assert len(fast.rows) == 50 and not fast.rejected
    assert fast == reference


def test_nesting_beyond_the_typed_levels_takes_the_general_way_and_is_stored():
    deep: object = "leaf"
    for _ in range(NESTED_LEVELS + 1):
        deep = [deep]
    batch = [{**BASE, "event_id": "deep", "properties": {"a": deep}},
             {**BASE, "event_id": "plain"}]
    body = orjson.dumps({"batch": batch})
    decoded = decode_body(body)
    assert type(decoded[0]) is dict  # not typed: its value nests too deep for the type
    result = validate_batch(decoded)
    assert [r.event_id for r in result.rows] == ["deep", "plain"] and not result.rejected
    assert json.loads(result.rows[0].body)["properties"]["a"] == deep
    too_deep: object = "leaf"
    for _ in range(40):
        too_deep = [too_deep]
    result = validate_batch(decode_body(orjson.dumps(
        {"batch": [{**BASE, "properties": {"a": too_deep}}]})))
    assert [i for i, _ in result.rejected] == [0] and not result.rows


def test_an_unknown_key_nested_past_the_recursion_limit_takes_the_general_way():
    """msgspec raises RecursionError (not a DecodeError) for a value nested about 1,000
    levels deep, even under a key no event reads; orjson reads 1,024 levels. The body
    must take the general way like any other the typed decoder refuses, not escape as an
    exception (a 500, retried forever)."""
    event = orjson.dumps(BASE)[:-1] + b',"zz":' + b"[" * 1000 + b'"leaf"' + b"]" * 1000 + b"}"
    body = b'{"batch":[' + event + b"," + orjson.dumps({**BASE, "event_id": "e1"}) + b"]}"
    decoded = decode_body(body)
    assert type(decoded[0]) is dict  # the general way
    result = validate_batch(decoded)
    assert [r.event_id for r in result.rows] == ["e0", "e1"] and not result.rejected
    assert result.rows[0].body == validate_batch([{**BASE}]).rows[0].body  # no "zz"


@pytest.mark.parametrize("filler", ["", "1234567890123456789"])  # exact, and not
def test_a_number_beyond_a_float_rejects_its_event_only(filler):
    # orjson refuses the body, the standard library reads 1e400 as infinity: the event is
    # rejected, never stored as null (msgspec's encoder writes infinity so).
    body = (b'{"batch":[{"event_id":"inf","name":"x","person_id":"p","timestamp":'
            b'"2024-05-01T10:00:00.000Z","properties":{"x":1e400,"f":"' + filler.encode()
            + b'"}},{"event_id":"ok","name":"x","person_id":"p",'
            b'"timestamp":"2024-05-01T10:00:00.000Z"}]}')
    result = validate_batch(decode_body(body))
    assert [r.event_id for r in result.rows] == ["ok"]
    assert result.rejected == [(0, "the event holds a number JSON cannot carry (out of range)")]


def test_large_floats_are_written_alike_whichever_way_the_event_came():
    plain = {**BASE, "event_id": "t", "properties": {"f": 1e16, "g": 2.5e-7}}
    identify = {**BASE, "kind": "identify", "event_id": "i", "anonymous_id": "a",
                "traits": {"f": 1e16, "g": 2.5e-7}}
    result = validate_batch(decode_body(orjson.dumps({"batch": [plain, identify]})))
    assert len(result.rows) == 2 and len(result.links) == 1
    assert b'"f":1e16,"g":2.5e-7' in result.rows[0].body
    assert b'"f":1e16,"g":2.5e-7' in result.rows[1].body


def test_an_integer_python_will_not_convert_rejects_its_event_only():
    # 4,301 digits: past Python's int() limit. It made the whole body a 400 ("not valid
    # JSON"), taking the good event with it.
    body = (b'{"batch":[{"event_id":"ok","name":"x","person_id":"p","timestamp":'
            b'"2024-05-01T10:00:00.000Z"},{"event_id":"huge","name":"x","person_id":"p",'
            b'"timestamp":"2024-05-01T10:00:00.000Z","properties":{"n":'
            + b"9" * 4301 + b"}}]}")
    result = validate_batch(decode_body(body))
    assert [r.event_id for r in result.rows] == ["ok"]
    assert result.rejected == [(1, "the event holds a number JSON cannot carry (out of range)")]


EDGES = [("kind", k) for k in ["other", "Track", "", "page", "identify", "alias", "group"]] + [
    ("v", v) for v in [0, 2, None, 1]] + [
    (field, value) for field in ("event_id", "person_id", "anonymous_id", "name", "previous_id")
    for value in ["", "x" * 512, "x" * 513, "é" * 513, "\U0001f600" * 512, "a\x00b", *BLANK]
] + [("timestamp", t) for t in TIMESTAMPS] + [
    ("group", {"type": "company", "id": "c1"}), ("properties", None), ("traits", None),
    ("context", None), ("person_id", None), ("name", None), ("event_id", None)]


@pytest.mark.parametrize(("field", "value"), EDGES)
def test_each_rule_at_its_edge_gets_the_general_verdict(field, value):
    batch = [{**BASE, "event_id": "edge", "anonymous_id": "a", field: value},
             {**BASE, "event_id": "fine"}]
    body = orjson.dumps({"batch": batch})
    fast, reference, typed = both(body)
    assert fast == reference
    strict = b"\\u0000" not in body and keeps_the_typed_rules(batch[0])
    assert typed is (TypedEvent if strict else LooseEvent)
    assert [row.event_id for row in fast.rows][-1] == "fine"


def test_a_mixed_body_decodes_typed_and_links_as_the_general_way_does():
    batch = [{**BASE, "event_id": "t"},
             {**BASE, "event_id": "i", "kind": "identify", "anonymous_id": "a", "name": None},
             {**BASE, "event_id": "al", "kind": "alias", "previous_id": "old"},
             {**BASE, "event_id": "g", "kind": "group", "group": {"type": "co", "id": "c"}},
             {**BASE, "event_id": "tg", "group": {"type": "co", "id": "c"}},
             {**BASE, "event_id": "tp", "previous_id": "old"}]
    fast, reference, typed = both(orjson.dumps({"batch": batch}))
    assert typed is TypedEvent and fast == reference
    assert [row.event_id for row in fast.rows] == ["t", "i", "al", "g", "tg", "tp"]
    assert len(fast.links) == 2


@settings(max_examples=3000, deadline=None)
@given(st.dictionaries(st.integers(0, 22).filter(lambda i: i not in (10, 19)),
                       st.sampled_from("0123456789-+:.,TWZz _\u0660"), max_size=5))
def test_the_fast_timestamp_check_accepts_only_what_the_general_one_stores_as_it_is(edits):
    # The typed path reads a YYYY-MM-DDTHH:MM:SS.mmmZ timestamp with its Z; _row, with the
    # Z sliced off: mutations of a valid one, kept to the shape both paths require.
    chars = list("2024-05-01T10:00:00.000Z")
    for position, char in edits.items():
        chars[position] = char
    text = "".join(chars)
    try:
        ingest._utc_datetime(text)
    except ValueError:
        return
    assert ingest._iso(text[:23])


def test_the_container_limit_counts_only_bodies_longer_than_it():
    # Each [ or { is a byte: a body of at most max_batch_containers bytes cannot exceed
    # the limit, so it is not scanned; a longer one still is, strings included.
    limits = Limits(max_batch_containers=40)
    short = b'{"batch":[[],[],[],[],[],[],[],[],[],[],[],[],[],[],[]]}'
    assert len(short) <= 60 and len(decode_body(short, limits=Limits(max_batch_containers=60))) == 15
    with pytest.raises(ProtocolError) as raised:
        decode_body(b'{"batch":[' + b",".join([b"[]"] * 40) + b"]}", limits=limits)
    assert raised.value.status == 413
    with pytest.raises(ProtocolError):
        decode_body(orjson.dumps({"batch": [{**BASE, "name": "[" * 40}]}), limits=limits)
    assert len(decode_body(orjson.dumps({"batch": [{**BASE, "name": "[" * 30}]}),
                           limits=limits)) == 1
