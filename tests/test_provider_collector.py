"""The collector provider's request body: each event is ``Event.to_dict()`` minus its null
and empty fields, with the timestamps of a whole batch formatted together."""

from __future__ import annotations

import datetime as dt
import json

from fanout._events import build_event
from fanout.providers.collector import CollectorProvider

UTC = dt.timezone.utc


def _events():
    base = dt.datetime(2024, 12, 31, 23, 59, 59, 999500, tzinfo=UTC)
    yield build_event("track", name="order.paid", person_id="u1", properties={"plan": "pro"},
                      timestamp=base)
    yield build_event("track", name="signup", anonymous_id="a1", event_id="e-1",
                      context={"ip": "127.0.0.1"}, timestamp=base + dt.timedelta(microseconds=600))
    yield build_event("identify", person_id="u1", anonymous_id="a1", traits={"email": "x@y.z"},
                      timestamp=base - dt.timedelta(days=366))
    yield build_event("page", name="Home", person_id="u1", properties={"path": "/"},
                      timestamp=dt.datetime(2024, 6, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))))
    yield build_event("alias", person_id="u2", previous_id="a1", timestamp=base)
    yield build_event("group", person_id="u1", group_type="company", group_id="c-9",
                      traits={"seats": 12}, timestamp=base + dt.timedelta(seconds=61))
    yield build_event("track", name="x", person_id="u3", group_type="team", group_id="t-1")


def test_each_event_on_the_wire_is_its_canonical_form_without_nulls():
    batch = list(_events())
    body = json.loads(CollectorProvider("http://127.0.0.1:9", "sk_test").encode(batch))
    expected = [
        {k: v for k, v in e.to_dict().items() if v is not None and v != {}} for e in batch
    ]
    assert body["batch"] == expected
    assert [list(w) for w in body["batch"]] == [list(x) for x in expected]  # key order too
    assert [w["timestamp"] for w in body["batch"]] == [
        "2024-12-31T23:59:59.999Z", "2025-01-01T00:00:00.000Z", "2023-12-31T23:59:59.999Z",
        "2024-06-01T10:00:00.000Z", "2024-12-31T23:59:59.999Z", "2025-01-01T00:01:00.999Z",
        expected[-1]["timestamp"],
    ]  # fmt: skip
    assert {"sent_at", "batch"} == set(body)
