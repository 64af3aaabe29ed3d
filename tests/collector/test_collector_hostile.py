"""Malformed bodies and hostile events: the right status, and no valid event lost."""

from __future__ import annotations

import gzip
import json

import httpx

from fanout.collector.protocol import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_EVENT_BYTES


def _event(i: int, **overrides):
    event = {
        "v": 1,
        "kind": "track",
        "event_id": f"ok-{i}",
        "timestamp": "2024-05-01T10:00:00.000Z",
        "person_id": "p",
        "name": "valid",
        "properties": {"i": i},
    }
    event.update(overrides)
    return event


def _nested(depth: int):
    value: object = "bottom"
    for _ in range(depth):
        value = {"d": value}
    return value


def test_malformed_bodies_are_400_and_store_nothing(collector):
    cases = {
        "not json": b"this is not json",
        "json, not an object": b"[1, 2, 3]",
        "no batch": b'{"events": []}',
        "batch not a list": b'{"batch": {"kind": "track"}}',
        "truncated": b'{"batch": [{"kind": "track"',
        "invalid utf-8 outside strings": b'{"batch": [\xff\xfe]}',
        "json nested beyond any parser": b'{"batch": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    }
    for label, body in cases.items():
        response = collector.post(body)
        assert response.status_code == 400, label
        assert "error" in response.json(), label
    bad_gzip = collector.post(b"not gzip", headers={"Content-Encoding": "gzip"})
    assert bad_gzip.status_code == 400
    truncated = gzip.compress(json.dumps({"batch": [_event(1)]}).encode())[:-10]
    assert collector.post(truncated, headers={"Content-Encoding": "gzip"}).status_code == 400
    unknown = collector.post(b"{}", headers={"Content-Encoding": "br"})
    assert unknown.status_code == 400
    assert collector.store.count_events() == 0
    assert httpx.get(f"{collector.url}/v1/health").json()["ok"] is True


def test_oversized_requests_are_413(collector):
    too_many = {"batch": [_event(i) for i in range(MAX_BATCH_EVENTS + 1)]}
    assert collector.post(too_many).status_code == 413
    too_big = b'{"batch": ["' + b"x" * (MAX_BATCH_BYTES + 1) + b'"]}'
    assert collector.post(too_big).status_code == 413
    # A gzip bomb: tiny on the wire, above the limit once inflated; refused, not inflated.
    bomb = gzip.compress(b'{"batch": ["' + b"0" * (MAX_BATCH_BYTES * 4) + b'"]}')
    assert len(bomb) < MAX_BATCH_BYTES // 100
    assert collector.post(bomb, headers={"Content-Encoding": "gzip"}).status_code == 413
    # Amplification: 200,000 arrays cost ~12 MB of objects once decoded; refused unparsed.
    nested = b'{"batch": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    assert collector.post(nested).status_code == 413
    assert collector.store.count_events() == 0


def test_hostile_events_are_rejected_one_by_one_and_the_valid_ones_stored(collector):
    hostile = [
        _event(0),
        _event(100, properties={"blob": "x" * (MAX_EVENT_BYTES + 10)}),  # huge properties
        _event(1),
        _event(101, properties=_nested(40)),  # nesting deeper than the event limit
        _event(102, kind="explode"),  # wrong values and wrong types
        _event(103, event_id=12345),
        _event(104, properties="not an object"),
        _event(105, person_id=["a", "list"]),
        _event(106, timestamp="yesterday-ish"),
        _event(107, person_id=None, anonymous_id=None),
        "a string, not an event",
        None,
        _event(108, name=None),  # a track without a name
        _event(2),
        _event(109, properties={"bad": "\ud800"}),  # a lone surrogate (valid JSON escape)
        _event(3, properties={"ünïcødé": "✓ 日本"}),
    ]
    text = json.dumps({"batch": hostile})
    # Invalid UTF-8 inside a string: rejected alone, the rest of the body still parses.
    body = text.replace('"PLACEHOLDER"', '"x"').encode()
    raw_bad = json.dumps(_event(110, properties={"s": "PLACEHOLDER"})).encode().replace(
        b"PLACEHOLDER", b"\xff\xfe bad bytes")
    body = body[:-2] + b", " + raw_bad + b"]}"

    response = collector.post(body)
    assert response.status_code == 200
    result = response.json()
    rejected = {r["index"] for r in result["rejected"]}
    assert rejected == {1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16}
    assert result["accepted"] == 4 and result["duplicates"] == 0
    assert all(isinstance(r["error"], str) and r["error"] for r in result["rejected"])
    assert sorted(collector.store.event_ids()) == ["ok-0", "ok-1", "ok-2", "ok-3"]
    stored = {e["event_id"]: e for e in collector.timeline("p")["events"]}
    assert stored["ok-3"]["properties"] == {"ünïcødé": "✓ 日本"}


def test_wrong_methods_and_paths(collector):
    assert httpx.get(f"{collector.url}/v1/batch").status_code == 405
    assert httpx.post(f"{collector.url}/v2/batch", json={}).status_code == 404
    r = httpx.get(f"{collector.url}/v1/persons/p/events")
    assert r.status_code == 401


def test_nul_in_ids_and_names_is_a_per_event_rejection_on_both_stores(collector):
    """PostgreSQL's text cannot hold U+0000; both stores refuse it in ids and names alike
    (inside properties it is ordinary JSON, ``\\u0000``, and is stored)."""
    batch = [
        _event(0, properties={"nul": "a\x00b"}),
        _event(100, event_id="evt\x00"),
        _event(101, person_id="p\x00"),
        _event(102, anonymous_id="a\x00", person_id=None),
        _event(103, name="order\x00paid"),
        {"kind": "alias", "event_id": "al", "person_id": "p", "previous_id": "old\x00",
         "timestamp": "2024-05-01T10:00:00.000Z"},
        _event(1),
    ]
    result = collector.post({"batch": batch}).json()
    assert {r["index"] for r in result["rejected"]} == {1, 2, 3, 4, 5}
    assert all("U+0000" in r["error"] for r in result["rejected"])
    assert result["accepted"] == 2 and result["duplicates"] == 0
    assert sorted(collector.store.event_ids()) == ["ok-0", "ok-1"]
    stored = {e["event_id"]: e for e in collector.timeline("p")["events"]}
    assert stored["ok-0"]["properties"] == {"nul": "a\x00b"}
    nobody = collector.timeline("p%00")  # the path's percent-escape is decoded to NUL
    assert nobody["events"] == [] and nobody["anonymous_ids"] == []
    assert nobody["person_id"] == "p\x00"


def test_integers_beyond_64_bits_are_stored_exactly(collector):
    """The request is decoded by orjson where that is exact and by the standard library
    where it is not (a run of 19+ digits): orjson would read these as floats."""
    big = {"u64": 18446744073709551615, "over": 18446744073709551616,
           "neg": -9223372036854775809, "huge": 10**40, "small": 7, "f": 0.1}
    plain = _event(1, properties={"small": 7, "f": 0.1, "id": "x" * 30})
    response = collector.post(json.dumps({"batch": [_event(0, properties=big), plain]}).encode())
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    stored = {e["event_id"]: e for e in collector.timeline("p")["events"]}
    assert stored["ok-0"]["properties"] == big
    assert all(type(v) is int for k, v in stored["ok-0"]["properties"].items() if k != "f")
    assert stored["ok-1"]["properties"] == {"small": 7, "f": 0.1, "id": "x" * 30}
