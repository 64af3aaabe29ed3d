from __future__ import annotations

import datetime as dt
import enum
import os
import time
import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fanout
from fanout import Event, InvalidEvent
from fanout._events import build_event, format_timestamp, format_timestamps, new_event_id


class Plan(enum.Enum):
    PRO = "pro"


def test_track_event_has_id_and_aware_utc_timestamp():
    e = build_event("track", name="signup", person_id="u1")
    assert uuid.UUID(e.event_id).version == 7
    assert e.timestamp.tzinfo is not None and e.timestamp.utcoffset() == dt.timedelta(0)
    assert e.distinct_id == "u1"


def test_event_ids_are_unique_and_time_ordered():
    ids = [new_event_id() for _ in range(2000)]
    assert len(set(ids)) == 2000
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


def test_event_ids_are_uuid7_carrying_the_creation_millisecond():
    before = time.time_ns() // 1_000_000
    raw = [new_event_id() for _ in range(500)]
    after = time.time_ns() // 1_000_000
    ids = [uuid.UUID(s) for s in raw]
    assert [str(u) for u in ids] == raw  # canonical form: lowercase, hyphens in place
    assert {(u.version, u.variant) for u in ids} == {(7, uuid.RFC_4122)}
    assert all(before <= u.int >> 80 <= after for u in ids)
    # 74 random bits: every position of the random part varies across 500 ids.
    random_part = [u.int & ((1 << 62) - 1) for u in ids]
    assert all(len({(r >> bit) & 1 for r in random_part}) == 2 for bit in range(62))


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone.utc), "2024-05-01T12:30:15.123Z"),
        (dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc), "0001-01-01T00:00:00.000Z"),
        (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone.utc), "9999-12-31T23:59:59.999Z"),
        (dt.datetime(2024, 1, 1, 1, 0, 0, 500, tzinfo=dt.timezone(dt.timedelta(hours=2))), "2023-12-31T23:00:00.000Z"),
    ],
)
def test_timestamps_are_utc_with_milliseconds(when, text):
    assert format_timestamp(when) == text
    assert build_event("track", name="x", person_id="u", timestamp=when).to_dict()["timestamp"] == text
    assert format_timestamps([when, when]) == [text, text]


#: Aware date-times in UTC and other offsets.
WHEN = st.datetimes(
    min_value=dt.datetime(1000, 1, 1), max_value=dt.datetime(9000, 1, 1),
    timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=2)),
                               dt.timezone(dt.timedelta(hours=-9, minutes=-30))]),
)  # fmt: skip
#: Gaps between a batch's events, in µs: within a second, to the next, and a whole minute,
#: hour, day, month or year apart (the same second of another minute...), either way.
STEP = st.one_of(
    st.integers(-2_500_000, 2_500_000),
    st.sampled_from([n * sign * 1_000_000 for n in (60, 3600, 86400, 31 * 86400, 365 * 86400)
                     for sign in (1, -1)]),
)  # fmt: skip


# too_slow: drawing 60 date-times can pass its limit on a loaded machine; timing is not the point
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(WHEN, max_size=20), st.lists(STEP, max_size=40))
def test_batch_timestamps_are_each_events_own_text(stamps, steps):
    """The batch formatter remembers a second's text between events: whatever the order,
    the offsets and the gaps (same second, the next, a millisecond's edge, the same second
    of another minute or day), each text is exactly ``format_timestamp``'s."""
    when = stamps[0] if stamps else dt.datetime(2024, 12, 31, 23, 59, 59, 998000, tzinfo=dt.timezone.utc)
    for step in steps:  # runs of close events, as a batch holds
        when = when + dt.timedelta(microseconds=step)
        stamps.append(when)
    assert format_timestamps(stamps) == [format_timestamp(s) for s in stamps]


def test_conversions_to_json_values():
    when = dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    e = build_event(
        "track",
        name="x",
        person_id=42,
        properties={
            "when": when,
            "day": dt.date(2024, 5, 1),
            "price": Decimal("19.99"),
            "id": u,
            "plan": Plan.PRO,
            "tags": {"b", "a"},
            "pair": (1, 2),
            "nested": {"deep": [{"x": Decimal("1")}]},
        },
    )
    assert e.person_id == "42"
    assert dict(e.properties) == {
        "when": "2024-05-01T12:30:15.123456+02:00",
        "day": "2024-05-01",
        "price": 19.99,
        "id": str(u),
        "plan": "pro",
        "tags": ["a", "b"],
        "pair": [1, 2],
        "nested": {"deep": [{"x": 1.0}]},
    }


def test_event_is_immutable_and_snapshots_caller_data():
    props = {"items": [1, 2]}
    e = build_event("track", name="x", person_id="u", properties=props)
    props["items"].append(3)
    props["new"] = True
    assert dict(e.properties) == {"items": [1, 2]}
    with pytest.raises(TypeError):
        e.properties["x"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        e.name = "y"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"name": "x"}, "person_id"),
        ({"name": "", "person_id": "u"}, "name"),
        ({"name": 5, "person_id": "u"}, "name"),
        ({"name": "x", "person_id": ""}, "person_id"),
        (
            {"name": "x", "person_id": "u", "properties": {"a": {"b": [1, float("nan")]}}},
            "properties.a.b[1]",
        ),
        ({"name": "x", "person_id": "u", "properties": {"a": float("inf")}}, "properties.a"),
        ({"name": "x", "person_id": "u", "properties": {"a": {1: "x"}}}, "properties.a"),
        ({"name": "x", "person_id": "u", "properties": {"o": [object()]}}, "properties.o[0]"),
        ({"name": "x", "person_id": "u", "properties": {"d": Decimal("NaN")}}, "properties.d"),
        ({"name": "x", "person_id": "u", "properties": ["not", "a", "dict"]}, "properties"),
        ({"name": "x", "person_id": "u", "timestamp": dt.datetime(2024, 1, 1)}, "timestamp"),
        ({"name": "x", "person_id": "u", "timestamp": "yesterday"}, "timestamp"),
        ({"name": "x", "person_id": "u", "context": {"b": b"bytes"}}, "context.b"),
    ],
)
def test_invalid_input_names_the_culprit(kwargs, path):
    with pytest.raises(InvalidEvent) as info:
        build_event("track", **kwargs)
    assert info.value.path == path
    assert isinstance(info.value, ValueError)
    assert path.split(".")[0] in str(info.value)


def test_deep_nesting_and_cycles_are_refused():
    deep: dict = {}
    cur = deep
    for _ in range(100):
        cur["a"] = {}
        cur = cur["a"]
    with pytest.raises(InvalidEvent, match="nested"):
        build_event("track", name="x", person_id="u", properties=deep)
    cyc: dict = {}
    cyc["self"] = cyc
    with pytest.raises(InvalidEvent, match="nested"):
        build_event("track", name="x", person_id="u", properties=cyc)


def test_size_limit():
    big = {"blob": "x" * 300_000}
    with pytest.raises(InvalidEvent, match="FANOUT_MAX_EVENT_BYTES"):
        build_event("track", name="x", person_id="u", properties=big)
    # non-ASCII text counts by its UTF-8 size, not its length
    with pytest.raises(InvalidEvent):
        build_event("track", name="x", person_id="u", properties={"t": "€" * 90_000})
    assert (
        build_event("track", name="x", person_id="u", properties={"t": "€" * 80_000}).size > 240_000
    )


def test_kind_specific_rules():
    with pytest.raises(InvalidEvent, match="previous_id"):
        build_event("alias", person_id="u")
    with pytest.raises(InvalidEvent, match="group"):
        build_event("group", person_id="u", group_type="company")
    g = build_event("group", person_id="u", group_type="company", group_id="acme")
    assert g.to_dict()["group"] == {"type": "company", "id": "acme"}


def test_round_trip_through_canonical_dict():
    e = build_event(
        "identify",
        person_id="u1",
        anonymous_id="anon",
        traits={"email": "a@example.com"},
        timestamp="2024-02-03T04:05:06.789Z",
        event_id="evt_123",
    )
    again = Event.from_dict(e.to_dict())
    assert again._replace(size=0) == e._replace(size=0)
    assert e.to_dict()["timestamp"] == "2024-02-03T04:05:06.789Z"


def test_replace_revalidates():
    e = build_event("track", name="x", person_id="u")
    assert e.replace(name="y").name == "y"
    with pytest.raises(InvalidEvent):
        e.replace(properties={"bad": object()})


def test_invalid_call_queues_nothing(make_client, memory):
    client = make_client(providers=[memory], sync=True)
    with pytest.raises(InvalidEvent):
        client.track("x", person_id="u", properties={"ok": 1, "bad": {1, object()}})
    client.track("x", person_id="u")
    assert memory.names() == ["x"]
    assert client.stats()["memory"].delivered == 1


def test_page_builds_url_and_path(make_client, memory):
    client = make_client(providers=[memory], sync=True)
    client.page("https://example.com/pricing?x=1", anonymous_id="a", title="Pricing", referrer="r")
    client.page("/docs", anonymous_id="a")
    first, second = memory.events
    assert first.kind == "page"
    assert dict(first.properties) == {
        "url": "https://example.com/pricing?x=1",
        "path": "/pricing",
        "title": "Pricing",
        "referrer": "r",
    }
    assert dict(second.properties) == {"path": "/docs"}
    with pytest.raises(InvalidEvent):
        client.page("", anonymous_id="a")


def test_all_five_kinds_reach_the_provider(make_client, memory):
    client = make_client(providers=[memory], sync=True)
    client.identify("u1", anonymous_id="anon-1", traits={"plan": "pro"})
    client.track("checkout.finished", person_id="u1", event_id="evt_1")
    client.page("/home", person_id="u1")
    client.alias("u1", "anon-1")
    client.group("company", "acme", person_id="u1", traits={"seats": 5})
    assert [e.kind for e in memory.events] == ["identify", "track", "page", "alias", "group"]
    assert memory.events[1].event_id == "evt_1"


def test_public_api_is_small_sorted_and_importable():
    assert fanout.__all__ == sorted(fanout.__all__)
    for name in fanout.__all__:
        assert hasattr(fanout, name), name
    assert repr(fanout.Client).endswith("'fanout.Client'>")
    assert fanout.InvalidEvent.__module__ == "fanout"


# -- valid by construction --------------------------------------------------------------


def test_event_constructor_validates_like_track():
    with pytest.raises(fanout.InvalidEvent) as info:
        fanout.Event("track", name="x", person_id="u", properties={"bad": object()})
    assert info.value.path == "properties.bad"
    with pytest.raises(fanout.InvalidEvent):
        fanout.Event("track", name="x")  # no person_id or anonymous_id
    with pytest.raises(fanout.InvalidEvent):
        fanout.Event("nonsense", person_id="u")


def test_event_constructor_fills_id_timestamp_and_size():
    e = fanout.Event("track", name="x", person_id="u", properties={"a": [1, 2]})
    assert len(e.event_id) == 36 and e.timestamp.tzinfo is not None
    assert e.size > 0
    assert type(e.properties).__name__ == "ReadOnlyDict"
    forged = fanout.Event("track", name="x", person_id="u", size=1)
    assert forged.size > 1  # size is computed, never taken


@pytest.mark.parametrize(
    "derive",
    [
        lambda e: e._replace(properties={"x": object()}),
        lambda e: e.replace(properties={"x": object()}),
        lambda e: type(e)._make([*e[:6], {"x": object()}, *e[7:]]),
    ],
    ids=["_replace", "replace", "_make"],
)
def test_every_public_way_to_derive_an_event_validates(derive):
    e = fanout.Event("track", name="x", person_id="u")
    with pytest.raises(fanout.InvalidEvent) as info:
        derive(e)
    assert info.value.path == "properties.x"


def test_pickle_and_copy_round_trip_keep_a_valid_event():
    import copy
    import pickle

    e = fanout.Event("track", name="x", person_id="u", properties={"n": [1, {"k": "v"}]})
    for other in (pickle.loads(pickle.dumps(e)), copy.copy(e), copy.deepcopy(e)):
        assert other == e and type(other) is fanout.Event


def test_a_context_checked_once_builds_the_same_event_as_a_plain_one():
    """The middleware check a request's context when reading it; its events skip the walk
    but must come out exactly as with the full check (values, size, footprint, limits)."""
    from fanout._events import CheckedDict, checked_context

    values = {"ip": "203.0.113.9", "url": "https://shop.example/é", "campaign": {"source": "n"}}
    checked = checked_context(values)
    assert type(checked) is CheckedDict and checked == values
    with pytest.raises(TypeError):
        checked["ip"] = "1.2.3.4"  # type: ignore[index]
    kw = {"name": "x", "person_id": "u", "event_id": "e", "timestamp": 0}
    plain = build_event("track", context=values, **kw)
    fast = build_event("track", context=checked, **kw)
    assert fast == plain and (fast.size, fast.footprint) == (plain.size, plain.footprint)
    # Checking is construction: what cannot be an event's context cannot be a CheckedDict.
    with pytest.raises(InvalidEvent, match="context.bad"):
        checked_context({"bad": object()})
    # The encoder still runs over it on every event (a lone surrogate is refused).
    with pytest.raises(InvalidEvent):
        build_event("track", context=checked_context({"url": "\ud800"}), **kw)
    # Unpickled, it is a plain read-only dict again: checked like any other.
    import pickle

    assert type(pickle.loads(pickle.dumps(checked))) is not CheckedDict
    assert checked_context({}) == {}


@pytest.mark.parametrize(
    "text", ["0190f5a2-7d1e-7c3b-9a4f-aaaaaaaaaaaa", "sé", "日本", "\U0001f600", "", " x "]
)
@pytest.mark.parametrize(
    "page",
    [{}, {"ip": "203.0.113.9"}, {"url": "https://shop.example/é", "campaign": {"source": "n"}}],
)
def test_a_checked_context_plus_one_string_equals_the_full_check(page, text):
    """The middleware add a visitor's session id to a page's checked values without walking
    them again: the result must be what the full check of the whole gives, in order, with
    the same measures, and build the same event."""
    from fanout._events import CheckedDict, checked_context, checked_with

    fast = checked_with({"session_id": text}, checked_context(page))
    full = checked_context({"session_id": text, **page})
    assert type(fast) is CheckedDict and list(fast.items()) == list(full.items())
    assert (fast.held, fast.spent) == (full.held, full.spent)  # type: ignore[attr-defined]
    kw = {"name": "x", "person_id": "u", "event_id": "e", "timestamp": 0}
    built = build_event("track", context=fast, **kw)
    plain = build_event("track", context={"session_id": text, **page}, **kw)
    assert built == plain and (built.size, built.footprint) == (plain.size, plain.footprint)
    # Anything else takes the full check: an unchecked mapping, a key already there, a
    # value that is not a plain string (refused as the full check refuses it).
    assert checked_with({"ip": text}, checked_context(page)) == {"ip": text, **page}
    assert type(checked_with({"session_id": text}, dict(page) or {"k": 1})) is CheckedDict
    with pytest.raises(InvalidEvent, match="context.session_id"):
        checked_with({"session_id": object()}, checked_context(page))  # type: ignore[dict-item]


_CONTEXT_VALUES = st.one_of(
    st.text(max_size=12), st.integers(-5, 5), st.none(), st.booleans(),
    st.dictionaries(st.sampled_from(["source", "name"]), st.text(max_size=5), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["session_id", "ip", "x"]), st.text(max_size=12)),
    st.lists(st.dictionaries(st.sampled_from(["user_agent", "locale", "url", "path", "campaign",
                                              "referrer", "ip"]), _CONTEXT_VALUES, max_size=4),
             max_size=3),
    st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_checked_parts_put_together_equal_the_full_check(added, parts, checked):
    """The middleware keep a request's context in checked parts (browser, page, referrer)
    and put them together with the visitor's values: the result, in order, and its measures
    are what the full check of the whole gives, whether the parts share keys or not, were
    checked or not."""
    from fanout._events import CheckedDict, checked_context, checked_with

    given = [checked_context(part) if check else part
             for part, check in zip(parts, checked, strict=False)]
    whole: dict[str, object] = dict(added)
    for part in parts:
        whole.update(part)
    fast = checked_with(added, *given)
    full = checked_context(whole)
    assert list(fast.items()) == list(full.items())
    if whole:
        assert type(fast) is CheckedDict
        assert (fast.held, fast.spent) == (full.held, full.spent)  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(
    st.text(max_size=8),
    st.one_of(st.text(st.characters(blacklist_categories=())), _CONTEXT_VALUES),
    max_size=6,
))
def test_checked_context_measures_as_the_walk_does(values):
    """A plain dict of text is measured without the walk (the middleware's parts): its
    result, order and measures are the walk's, whatever the text (non-ASCII and lone
    surrogates included); anything else is walked."""
    from fanout._events import CheckedDict, checked_context
    from fanout._validate import MAX_ITEMS, check_mapping

    checked = checked_context(values)
    budget = [MAX_ITEMS]
    walked, held = check_mapping(values, "context", budget, CheckedDict)
    assert list(checked.items()) == list(walked.items())
    if values:
        assert (checked.held, checked.spent) == (held, MAX_ITEMS - budget[0])  # type: ignore[attr-defined]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_event_ids_of_a_forked_child_differ_from_its_parents():
    # The millisecond prefix and the counter are copied into the child; the random bits
    # are not the parent's (fanout's own generator is reseeded in a forked child).
    new_event_id()  # the parent's millisecond state exists before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its ids and leave without running any exit hook
        try:
            os.write(write, "\n".join(new_event_id() for _ in range(300)).encode())
        finally:
            os._exit(0)
    os.close(write)
    parent = {new_event_id() for _ in range(300)}
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    child = set(b"".join(chunks).decode().split("\n"))
    assert len(child) == 300 and len(parent) == 300
    assert not child & parent
    assert {(uuid.UUID(i).version, uuid.UUID(i).variant) for i in child} == {(7, uuid.RFC_4122)}


def test_ids_neither_follow_nor_shift_the_applications_random_seed():
    """An app that seeds ``random`` (tests, simulations) must not make ids repeat, and
    tracking must not shift the app's own reproducible sequence."""
    import random

    from fanout._context import _random_uuid4
    from fanout._retry import Backoff

    random.seed(7)
    expected = [random.random() for _ in range(3)]
    random.seed(7)
    first = [new_event_id() for _ in range(50)] + [_random_uuid4() for _ in range(50)]
    # Jitter of a Retry-After wait: a continuous draw (the exponential backoff's is floored
    # at its base, so two of its draws can be equal by design).
    delays = [Backoff().delay(0, retry_after=10) for _ in range(5)]
    assert [random.random() for _ in range(3)] == expected  # the app's sequence is its own
    random.seed(7)
    again = [new_event_id() for _ in range(50)] + [_random_uuid4() for _ in range(50)]
    delays_again = [Backoff().delay(0, retry_after=10) for _ in range(5)]
    # Same seed, same calls: nothing repeats, not even the random parts alone.
    assert not {i[-17:] for i in first} & {i[-17:] for i in again}
    assert len(set(delays) | set(delays_again)) == 10
