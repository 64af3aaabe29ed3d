"""Whatever a client puts in an event, it is that event's rejection, never a 500.

Hypothesis builds events from a valid one by replacing any field with any JSON value
(wrong types everywhere, deep and wide values, integers beyond 64 bits, lone surrogates)
and timestamps anywhere in (and at the edges of) the years 1-9999 with any UTC offset.
"""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.collector.ingest import _plain_row, _Reject, _row, validate_batch
from fanout.collector.protocol import MAX_EVENT_BYTES

FIELDS = ["v", "kind", "event_id", "timestamp", "person_id", "anonymous_id", "name",
          "properties", "traits", "context", "group", "previous_id"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec=None, exclude_categories=())),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=12,
)
timestamps = st.datetimes(
    min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59),
    timezones=st.none() | st.timezones() | st.builds(
        dt.timezone, st.timedeltas(min_value=dt.timedelta(hours=-23, minutes=-59),
                                   max_value=dt.timedelta(hours=23, minutes=59))),
).map(lambda d: d.isoformat())
field_values = {
    **{f: json_values for f in FIELDS},
    "timestamp": timestamps | json_values,
    "kind": st.sampled_from(["track", "page", "identify", "alias", "group"]) | json_values,
    "group": st.fixed_dictionaries({"type": json_values, "id": json_values}) | json_values,
}


@st.composite
def events(draw):
    event = {"kind": "track", "event_id": f"e{draw(st.integers(0, 10**6))}", "name": "x",
             "person_id": "p", "timestamp": "2024-05-01T10:00:00.000Z"}
    for field in draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=len(FIELDS))):
        if draw(st.booleans()):
            event.pop(field, None)
        else:
            event[field] = draw(field_values[field])
    return event


EDGES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z",
         "9999-12-31T23:59:59.999Z", "2024-13-01T00:00:00Z", "2024-05-01 10:00:00.000Z",
         "2024-05-01T10:00:00.000+23:59"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events() | json_values, max_size=20))
def test_validation_never_raises_and_accounts_for_every_event(batch):
    result = validate_batch(batch)
    assert len(result.rows) + len(result.rejected) == len(batch)
    for _, reason in result.rejected:
        assert reason != "the event could not be validated"  # the safety net never fires
    for row in result.rows:
        stored = json.loads(row.body)
        assert len(row.timestamp) == 24 and row.timestamp.endswith("Z")
        assert stored["timestamp"] == row.timestamp and stored["event_id"] == row.event_id


def test_out_of_range_and_odd_timestamps():
    batch = [{"event_id": f"t{i}", "name": "x", "person_id": "p", "timestamp": ts}
             for i, ts in enumerate(EDGES)]
    result = validate_batch(batch)
    assert [i for i, _ in result.rejected] == [0, 1, 4]
    assert [r.timestamp for r in result.rows] == [
        "0001-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z", "2024-05-01T10:00:00.000Z",
        "2024-04-30T10:01:00.000Z"]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(batch=st.lists(events(), min_size=1, max_size=30))
def test_the_server_answers_200_and_stores_exactly_the_valid_events(collector, batch):
    before = collector.store.count_events()
    ids_before = set(collector.store.event_ids())
    response = collector.post(json.dumps({"batch": batch}).encode(),
                              headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    result = response.json()
    rejected = {r["index"] for r in result["rejected"]}
    assert result["accepted"] + result["duplicates"] + len(rejected) == len(batch)
    assert collector.store.count_events() == before + result["accepted"]
    new = set(collector.store.event_ids()) - ids_before
    valid_ids = {e["event_id"] for i, e in enumerate(batch) if i not in rejected}
    assert new <= valid_ids and len(new) == result["accepted"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events() | json_values)
def test_the_fast_path_accepts_only_what_the_full_checks_accept_and_stores_the_same(event):
    """``_plain_row`` (fanout clients' track and page events, most of the traffic) must
    give either no answer or exactly the row of the full checks, never its own verdict."""
    fast = _plain_row(event, MAX_EVENT_BYTES) if type(event) is dict else None
    try:
        full = _row(event, MAX_EVENT_BYTES)
    except _Reject:
        full = None
    if fast is not None:
        assert full is not None and full == (fast, None)


def test_the_fast_path_takes_the_common_events_and_leaves_the_rest():
    base = {"kind": "track", "event_id": "e1", "name": "x", "person_id": "p",
            "timestamp": "2024-05-01T10:00:00.000Z", "properties": {"a": [1, {"b": None}]}}
    assert _plain_row(base, MAX_EVENT_BYTES) == _row(base, MAX_EVENT_BYTES)[0]
    page = {**base, "kind": "page", "name": None, "anonymous_id": "a", "person_id": None}
    assert _plain_row(page, MAX_EVENT_BYTES) == _row(page, MAX_EVENT_BYTES)[0]
    deep: dict = {}
    inner = deep
    for _ in range(40):  # too deep only past 32 levels: the full walk decides
        inner["x"] = inner = {}
    nul = {**base, "properties": {"nul": "a\x00b"}}  # NUL: allowed here, not in the ids
    assert _plain_row(nul, MAX_EVENT_BYTES) == _row(nul, MAX_EVENT_BYTES)[0]
    nested = {**base, "properties": {"ok": [[["a"]]], "deep": deep}}
    left = [
        {**base, "kind": "identify"},  # links identities
        {**base, "previous_id": "x"},
        {**base, "group": {"type": "t", "id": "i"}},
        {**base, "context": []},  # not an object: the full checks name the mistake
        {**base, "name": "a\x00b"},
        {**base, "properties": {"s": "\ud800"}},  # the encoder refuses a lone surrogate
        {**base, "timestamp": "2024-02-30T10:00:00.000Z"},
        {**base, "v": True},
        nested,
    ]
    for event in left:
        assert _plain_row(event, MAX_EVENT_BYTES) is None, event
    verdicts = validate_batch(left)
    assert [i for i, _ in verdicts.rejected] == [3, 4, 5, 6, 7, 8]
    assert [r.event_id for r in verdicts.rows] == ["e1"] * 3
    # Beyond 64 bits: stored exactly, by msgspec's encoder on the fast path too.
    big = {**base, "properties": {"big": 2**70}}
    assert _plain_row(big, MAX_EVENT_BYTES) == _row(big, MAX_EVENT_BYTES)[0]
    assert json.loads(_row(big, MAX_EVENT_BYTES)[0].body)["properties"]["big"] == 2**70
