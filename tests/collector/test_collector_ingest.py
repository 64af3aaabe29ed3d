"""validate_batch's stored bodies are each event's own canonical JSON, whatever its strings
hold, and an event that cannot be encoded (or is too large once encoded) is rejected alone,
in index order among the other rejections."""

from __future__ import annotations

import json

from fanout._json import dumps_stdlib
from fanout.collector.ingest import validate_batch
from fanout.collector.protocol import Limits


def _event(i: int, **fields: object) -> dict[str, object]:
    return {"kind": "track", "event_id": f"e{i}", "name": "x", "person_id": f"p{i}",
            "timestamp": "2024-05-01T10:00:00.000Z", **fields}


def _canonical(event: dict[str, object]) -> bytes:
    doc = {"v": 1, "kind": "track", "event_id": event["event_id"],
           "timestamp": event["timestamp"], "person_id": event["person_id"],
           "anonymous_id": None, "name": "x", "properties": event.get("properties", {}),
           "traits": {}, "context": {}, "group": None, "previous_id": None}
    return dumps_stdlib(doc)


def test_each_body_is_its_own_events_json():
    # Strings that hold what the batch's separator is made of: commas, NUL (escaped in
    # JSON), braces, quotes.
    tricky = [",\x00,", "\x00", '"},{"v":1', "é", "日本", "\\", ""]
    batch = [_event(i, properties={"s": s, "n": i, "f": 0.5, "l": [s, {"k": s}]})
             for i, s in enumerate(tricky)]
    result = validate_batch(batch)
    assert result.rejected == []
    assert [row.body for row in result.rows] == [_canonical(e) for e in batch]
    assert [json.loads(row.body)["properties"]["s"] for row in result.rows] == tricky


def test_an_event_that_cannot_be_encoded_is_rejected_alone():
    batch = [
        _event(0),
        _event(1, properties={"bad": "\ud800"}),  # a lone surrogate
        {"kind": "track"},  # no event_id: rejected by validation, before encoding
        _event(3, properties={"big": 2**70}),  # beyond 64 bits: stored exactly
        _event(4, properties={"pad": "y" * 400}),  # too large once encoded
        _event(5),
    ]
    result = validate_batch(batch, Limits(max_event_bytes=400))
    assert [i for i, _ in result.rejected] == [1, 2, 4]
    reasons = dict(result.rejected)
    assert "surrogate" in reasons[1]
    assert "above the 400-byte limit" in reasons[4]
    assert [row.event_id for row in result.rows] == ["e0", "e3", "e5"]
    assert json.loads(result.rows[1].body)["properties"]["big"] == 2**70
    assert [row.body for row in result.rows] == [_canonical(batch[i]) for i in (0, 3, 5)]


def test_identity_links_only_for_stored_events():
    identify = {"kind": "identify", "event_id": "i1", "person_id": "u1", "anonymous_id": "a1",
                "timestamp": "2024-05-01T10:00:00.000Z"}
    oversized = {**identify, "event_id": "i2", "anonymous_id": "a2", "traits": {"x": "y" * 500}}
    result = validate_batch([identify, oversized], Limits(max_event_bytes=400))
    assert [i for i, _ in result.rejected] == [1]
    assert [(link.anonymous_id, link.person_id) for link in result.links] == [("a1", "u1")]
