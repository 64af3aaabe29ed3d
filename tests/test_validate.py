"""Poison-proof events: whatever a backend's JSON cannot carry is refused on the caller's
thread, with the path of the culprit, and nothing but ``InvalidEvent`` ever escapes."""

from __future__ import annotations

import collections.abc
import decimal
import enum
import json
import tracemalloc

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fanout
from fanout import InvalidEvent
from fanout._events import DEFAULT_MAX_EVENT_BYTES, build_event
from fanout._json import dumps_stdlib, dumps_strict
from fanout._validate import MAX_DEPTH, MAX_INT, MAX_ITEMS

SURROGATE = "bad\ud800"


def track(**kwargs):
    kwargs.setdefault("name", "x")
    kwargs.setdefault("person_id", "u")
    return build_event("track", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"name": SURROGATE}, "name"),
        ({"person_id": SURROGATE}, "person_id"),
        ({"anonymous_id": "\udfff"}, "anonymous_id"),
        ({"event_id": "e-\udc80"}, "event_id"),
        ({"properties": {"ok": "é", "k": SURROGATE}}, "properties.k"),
        ({"properties": {SURROGATE: 1}}, "properties.bad\\ud800"),
        ({"properties": {"a": [1, {"b": ["x", SURROGATE]}]}}, "properties.a[1].b[1]"),
        ({"context": {"page": {SURROGATE: "x"}}}, "context.page.bad\\ud800"),
    ],
)
def test_lone_surrogates_are_refused_at_their_path(kwargs, path):
    with pytest.raises(InvalidEvent) as info:
        track(**kwargs)
    assert info.value.path == path
    assert "surrogate" in str(info.value)
    str(info.value).encode("utf-8")  # the message itself is printable anywhere


def test_surrogates_in_group_alias_and_identify_fields():
    for kind, kwargs, path in [
        ("group", {"group_type": "c", "group_id": SURROGATE}, "group_id"),
        ("group", {"group_type": SURROGATE, "group_id": "g"}, "group_type"),
        ("alias", {"previous_id": SURROGATE}, "previous_id"),
        ("identify", {"traits": {"n": SURROGATE}}, "traits.n"),
    ]:
        with pytest.raises(InvalidEvent) as info:
            build_event(kind, person_id="u", **kwargs)
        assert info.value.path == path


def test_integer_range_is_signed_64_bits():
    e = track(properties={"max": MAX_INT, "min": -MAX_INT, "list": [MAX_INT]})
    assert json.loads(e.to_json())["properties"] == {
        "max": MAX_INT,
        "min": -MAX_INT,
        "list": [MAX_INT],
    }

    class Big(enum.IntEnum):
        HUGE = 2**64

    cases = [
        ({"n": MAX_INT + 1}, "properties.n"),
        ({"n": -MAX_INT - 1}, "properties.n"),
        ({"l": [0, 10**5000]}, "properties.l[1]"),
        ({"b": True, "e": Big.HUGE}, "properties.e"),
    ]
    for props, path in cases:
        with pytest.raises(InvalidEvent, match=r"2\*\*63") as info:
            track(properties=props)
        assert info.value.path == path
    with pytest.raises(InvalidEvent) as info:
        track(person_id=10**5000)  # str() of it raises ValueError in CPython
    assert info.value.path == "person_id"


@pytest.mark.parametrize(
    "value", [float("nan"), float("-inf"), decimal.Decimal("1e400"), decimal.Decimal("sNaN")]
)
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(InvalidEvent, match="cannot represent") as info:
        track(properties={"a": [value]})
    assert info.value.path == "properties.a[0]"


def test_cycles_are_refused_with_their_path():
    loop: list = [1]
    loop.append(loop)
    with pytest.raises(InvalidEvent, match="contains itself") as info:
        track(properties={"l": loop})
    assert info.value.path == "properties.l" + "[1]" * (MAX_DEPTH - 1)
    d: dict = {}
    d["d"] = d
    with pytest.raises(InvalidEvent, match="contains itself"):
        track(context={"d": d})


class CountingList(list):
    """A list that counts how often it is iterated: the walker's visits, deterministically."""

    visits = 0

    def __iter__(self):
        type(self).visits += 1
        return super().__iter__()


def test_a_shared_structure_repeated_a_million_times_costs_a_bounded_walk():
    CountingList.visits = 0
    leaf = CountingList(range(10))
    value: object = leaf
    for _ in range(6):
        value = [value] * 10  # 10**6 references to the same leaf, 10**7 integers
    tracemalloc.start()
    try:
        with pytest.raises(InvalidEvent, match="100,000 keys and values") as info:
            track(properties={"p": value})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.path.startswith("properties.p[0][0]")
    # Each leaf visit spends 10 of the budget: at most MAX_ITEMS / 10 of a million visits.
    assert 0 < CountingList.visits <= MAX_ITEMS // 10
    assert peak < 20 * 1024 * 1024  # was 120+ MB before the budget


def test_an_over_wide_container_is_refused_before_it_is_copied():
    CountingList.visits = 0
    wide = CountingList([0]) * (MAX_ITEMS + 1)
    wide = CountingList(wide)
    with pytest.raises(InvalidEvent, match="keys and values") as info:
        track(properties={"w": wide})
    assert info.value.path == "properties.w"
    assert CountingList.visits == 0
    # The budget is per event: two halves in two mappings are over it too.
    half = [0] * (MAX_ITEMS // 2)
    with pytest.raises(InvalidEvent, match="keys and values"):
        track(properties={"a": half}, context={"b": half})
    assert track(properties={"a": [0] * 1000}).properties["a"] == [0] * 1000


def test_size_counts_json_escapes():
    control = "\x01" * 10_000  # six bytes each on the wire: \u0001
    e = track(properties={"c": control, "q": '"\\' * 1000})
    encoded = e.to_json()
    assert len(encoded) > 60_000 + 4_000
    assert 0 <= e.size - len(encoded) <= 32
    # FANOUT_MAX_EVENT_BYTES applies to the encoded size, escapes included.
    with pytest.raises(InvalidEvent, match="FANOUT_MAX_EVENT_BYTES"):
        track(properties={"c": "\x1f" * (DEFAULT_MAX_EVENT_BYTES // 6 + 1)})


def test_size_is_a_close_upper_bound_for_every_kind():
    events = [
        track(),
        build_event("identify", person_id="u", traits={"a": [1.5, None, True]}),
        build_event("group", person_id="u", group_type="c", group_id="g"),
        build_event("alias", person_id="u", previous_id="p"),
        build_event("page", anonymous_id="a" * 512, name="n\n" * 256, event_id="e" * 512),
    ]
    for e in events:
        assert 0 <= e.size - len(e.to_json()) <= 32, e.kind


class Hostile:
    """A custom object whose every protocol method raises."""

    def __repr__(self):
        raise RuntimeError("repr")

    __str__ = __repr__

    def __iter__(self):
        raise RuntimeError("iter")

    def __len__(self):
        raise RuntimeError("len")


class BadStr(str):
    def __str__(self):
        raise RuntimeError("str")

    def isspace(self):
        raise RuntimeError("isspace")


class BadMapping(dict):
    pass


class RaisingMapping:
    """Registered as a Mapping, raising when read."""

    def __getitem__(self, key):
        raise KeyError(key)

    def __len__(self):
        return 1

    def __iter__(self):
        raise RuntimeError("iter")


collections.abc.Mapping.register(RaisingMapping)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"properties": {"h": Hostile()}}, "properties.h"),
        ({"properties": {"s": BadStr("x")}}, None),  # accepted: its plain text
        ({"properties": {BadStr("k"): 1}}, None),
        ({"properties": {Hostile(): 1}}, "properties"),
        ({"properties": RaisingMapping()}, "properties"),
        ({"properties": {"m": RaisingMapping()}}, "properties.m"),
        ({"person_id": BadStr("u")}, None),
        ({"timestamp": BadStr("2024-01-01T00:00:00Z")}, None),
        ({"timestamp": Hostile()}, "timestamp"),
        ({"timestamp": float("nan")}, "timestamp"),
        ({"properties": {"s": frozenset([Hostile()])}}, "properties.s[0]"),
        ({"properties": {"b": b"bytes"}}, "properties.b"),
    ],
)
def test_hostile_objects_raise_only_invalid_event(kwargs, path):
    if path is None:
        e = track(**kwargs)
        dumps_strict(e.to_dict())
        return
    with pytest.raises(InvalidEvent) as info:
        track(**kwargs)
    assert info.value.path == path


def test_hostile_kind_and_page_url():
    with pytest.raises(InvalidEvent):
        fanout.Event([], person_id="u")
    with pytest.raises(InvalidEvent):
        fanout.Event(Hostile(), person_id="u")
    assert fanout.Event(BadStr("track"), name="x", person_id="u").kind == "track"


def test_client_calls_raise_only_invalid_event(make_client, memory):
    client = make_client(providers=[memory])
    bad_calls = [
        lambda: client.page("http://[::1", person_id="u"),
        lambda: client.page("/p", person_id="u", properties=[("a", 1)]),
        lambda: client.page("/p", person_id="u", properties=RaisingMapping()),
        lambda: client.page("/p", person_id="u", title=SURROGATE),
        lambda: client.identify("u", traits={"n": 2**64}),
        lambda: client.alias("u", SURROGATE),
        lambda: client.group("c", "g", person_id="u", traits={"x": float("inf")}),
        lambda: client.track(SURROGATE, person_id="u"),
    ]
    for call in bad_calls:
        with pytest.raises(InvalidEvent):
            call()
    client.page("/ok", person_id="u")
    report = client.flush(timeout=10)
    assert len(memory.events) == 1
    assert report["memory"].delivered == 1 and report["memory"].failed == 0


def assert_encodes_everywhere(event: fanout.Event) -> None:
    """What every provider's encoder does with an accepted event must succeed."""
    data = event.to_dict()
    assert len(dumps_strict(data)) <= event.size
    dumps_stdlib(data)  # the fallback: no ValueError (nan), no UnicodeEncodeError
    json.dumps(data, allow_nan=False)  # the vendors' SDKs: ensure_ascii=True


# -- property-based: arbitrary nested Python values at every call ------------------------

SURROGATES = st.text(
    alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),
    min_size=1,
    max_size=3,
)
TEXT = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.characters(max_codepoint=0x20), max_size=8),  # control characters
    st.builds(lambda a, s: a + s, st.text(max_size=5), SURROGATES),
    st.builds(BadStr, st.text(max_size=5)),
)


class Color(enum.Enum):
    RED = "red"
    LOOP = ("x",)


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([MAX_INT, MAX_INT + 1, -MAX_INT - 1, 2**64]),
    st.builds(pow, st.sampled_from([10, -10]), st.sampled_from([400, 5000])),  # huge ints
    st.floats(),
    st.decimals(),
    TEXT,
    st.binary(max_size=5),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.dates(),
    st.uuids(),
    st.sampled_from([Color.RED, Color.LOOP]),
    st.builds(Hostile),
    st.builds(RaisingMapping),
    st.builds(object),
)
KEYS = st.one_of(TEXT, st.integers(), st.none(), st.builds(Hostile))


def _recursive(children):
    return st.one_of(
        st.lists(children, max_size=5),
        st.tuples(children, children),
        st.dictionaries(KEYS, children, max_size=5),
        st.frozensets(st.one_of(st.integers(), st.text(max_size=3)), max_size=4),
        st.builds(_self_containing, st.lists(children, max_size=3)),
    )


def _self_containing(items):
    items.append(items)
    return items


VALUES = st.recursive(SCALARS, _recursive, max_leaves=25)
ANY = st.one_of(VALUES, st.dictionaries(KEYS, VALUES, max_size=5))
ID = st.one_of(st.none(), st.just("u"), TEXT, st.integers(), st.uuids(), VALUES)


# Hypothesis warns when the global ``random`` state changes while it generates data. Here
# that is other tests' channel workers (jitter) and event ids drawn on other threads, not
# the strategies, which use no randomness of their own.
_threads_use_random = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
)


@_threads_use_random
def test_no_input_raises_anything_but_invalid_event(make_client, memory):
    # The calls run with a processor that keeps every event and drops it before the
    # channels, so no worker thread runs (and draws random jitter) while hypothesis
    # generates; the accepted events are then sent through a real channel.
    captured: list[fanout.Event] = []

    def keep(event: fanout.Event) -> None:
        captured.append(event)

    client = make_client(providers=["null"], processors=[keep])
    counts = {"accepted": 0, "refused": 0}

    @settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        call=st.sampled_from(["track", "identify", "page", "alias", "group", "Event"]),
        a=ID,
        b=ID,
        person_id=ID,
        anonymous_id=ID,
        mapping=ANY,
        context=ANY,
        event_id=ID,
        timestamp=st.one_of(st.none(), st.datetimes(timezones=st.timezones()), VALUES),
    )
    # Most generated calls are refused; these two make sure both outcomes are met in every
    # run, whatever the examples drawn (a run once drew no accepted call in 400).
    @example(call="track", a="signed_up", b=None, person_id="u", anonymous_id=None,
             mapping={"plan": "pro"}, context={}, event_id=None, timestamp=None)
    @example(call="track", a=None, b=None, person_id="u", anonymous_id=None,
             mapping={}, context={}, event_id=None, timestamp=None)
    def check(call, a, b, person_id, anonymous_id, mapping, context, event_id, timestamp):
        common = {"event_id": event_id, "timestamp": timestamp, "context": context}
        try:
            if call == "track":
                client.track(
                    a, person_id=person_id, anonymous_id=anonymous_id, properties=mapping, **common
                )
            elif call == "identify":
                client.identify(person_id, anonymous_id=anonymous_id, traits=mapping, **common)
            elif call == "page":
                client.page(
                    a, person_id=person_id, title=b, properties=mapping, referrer=b, **common
                )
            elif call == "alias":
                client.alias(person_id, a, **common)
            elif call == "group":
                client.group(a, b, person_id=person_id, traits=mapping, **common)
            else:
                captured.append(
                    fanout.Event(a, name=b, person_id=person_id, properties=mapping, **common)
                )
        except InvalidEvent as exc:
            str(exc).encode("utf-8")  # a printable message, whatever the input held
            counts["refused"] += 1
            return
        counts["accepted"] += 1

    check()
    # The strategies produce both outcomes (a check that cannot fail is a defect).
    assert counts["accepted"] > 0 and counts["refused"] > 0
    assert len(captured) == counts["accepted"]
    for e in captured:
        assert_encodes_everywhere(e)
    sender = make_client(providers=[memory])
    for e in captured:
        sender.send(e)
    report = sender.flush(timeout=30)
    assert len(memory.events) == counts["accepted"]
    assert report["memory"].delivered == counts["accepted"]
    assert report["memory"].failed == 0 and report["memory"].dropped == 0


@_threads_use_random
def test_hypothesis_generates_the_poisons_it_claims():
    # A check that cannot fail is a defect: make sure the strategies reach the bad values.
    seen = {"surrogate": False, "control": False}

    @settings(max_examples=300, deadline=None)
    @given(TEXT)
    def probe(text):
        plain = str.__str__(text)
        if any(0xD800 <= ord(c) <= 0xDFFF for c in plain):
            seen["surrogate"] = True
        if any(ord(c) < 0x20 for c in plain):
            seen["control"] = True

    probe()
    assert seen == {"surrogate": True, "control": True}
