"""End to end: fanout.Client → collector provider → real server → SQLite."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pytest

from fanout.collector.protocol import Limits

from .conftest import Failures


def test_events_arrive_once_and_redeliveries_are_reported_as_duplicates(collector, clients):
    client = clients(collector.url, collector.key)
    ids = [client.track("signup", person_id=f"u{i}", properties={"i": i}) for i in range(25)]
    # A Stripe webhook delivered three times: twice in one batch, once in a later batch.
    client.track("checkout.finished", person_id="u1", event_id="evt_1", properties={"n": 1})
    client.track("checkout.finished", person_id="u1", event_id="evt_1", properties={"n": 2})
    assert client.flush(10).ok
    client.track("checkout.finished", person_id="u1", event_id="evt_1", properties={"n": 3})
    report = client.flush(10)

    assert report.ok and report["collector"].delivered == 28
    assert sorted(collector.store.event_ids()) == sorted([*ids, "evt_1"])
    stored = collector.timeline("u1")["events"]
    finished = [e for e in stored if e["event_id"] == "evt_1"]
    assert [e["properties"]["n"] for e in finished] == [1]  # the first delivery wins

    # The server reports the redelivery itself as a duplicate, not as accepted.
    again = collector.post({"batch": [finished[0]], "sent_at": "2024-01-01T00:00:00Z"})
    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}


def test_identify_stitches_the_anonymous_past_into_the_person_timeline(collector, clients):
    client = clients(collector.url, collector.key)
    client.page("/", anonymous_id="anon-a", timestamp="2024-05-01T10:00:00Z")
    client.track("cart.viewed", anonymous_id="anon-a", timestamp="2024-05-01T10:01:00Z")
    client.page("/", anonymous_id="anon-other", timestamp="2024-05-01T10:01:30Z")
    client.identify("ada", anonymous_id="anon-a", timestamp="2024-05-01T10:02:00Z")
    client.track("checkout.finished", person_id="ada", timestamp="2024-05-01T10:03:00Z")
    # Sent last but happened first: the timeline is in event time, not arrival order.
    client.track("ad.clicked", anonymous_id="anon-a", timestamp="2024-05-01T09:59:00Z")
    assert client.flush(10).ok

    data = collector.timeline("ada")
    assert data["anonymous_ids"] == ["anon-a"]
    assert [(e["kind"], e["name"], e["timestamp"]) for e in data["events"]] == [
        ("track", "ad.clicked", "2024-05-01T09:59:00.000Z"),
        ("page", None, "2024-05-01T10:00:00.000Z"),
        ("track", "cart.viewed", "2024-05-01T10:01:00.000Z"),
        ("identify", None, "2024-05-01T10:02:00.000Z"),
        ("track", "checkout.finished", "2024-05-01T10:03:00.000Z"),
    ]
    assert collector.timeline("nobody") == {"person_id": "nobody", "anonymous_ids": [],
                                            "events": [], "next_cursor": None}


def test_alias_links_a_previous_id_too(collector, clients):
    client = clients(collector.url, collector.key)
    client.track("old.event", person_id="legacy-7", timestamp="2024-01-01T00:00:00Z")
    client.alias("ada", "legacy-7", timestamp="2024-01-02T00:00:00Z")
    assert client.flush(10).ok
    names = [e["name"] or e["kind"] for e in collector.timeline("ada")["events"]]
    assert names == ["alias"]  # legacy-7 was a person id, not an anonymous one
    client.track("anon.event", anonymous_id="legacy-7", timestamp="2024-01-01T00:00:01Z")
    assert client.flush(10).ok
    names = [e["name"] or e["kind"] for e in collector.timeline("ada")["events"]]
    assert names == ["anon.event", "alias"]


def test_bad_key_is_permanent_dead_lettered_and_never_leaks(
    collector, clients, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    bad_key = "sk_" + "x" * 43 + "-secret-marker"
    failures = Failures()
    caplog.set_level(logging.DEBUG)
    client = clients(collector.url, bad_key, on_error=failures,
                     dead_letter_dir=str(tmp_path / "dead"))
    for i in range(5):
        client.track("signup", person_id=f"u{i}")
    report = client.flush(10)

    assert report["collector"].failed == 5 and report["collector"].delivered == 0
    assert report["collector"].losses == {"permanent_error": 5}
    assert report["collector"].retries == 0  # a 401 is not retried
    # One failure per batch the worker took: usually one, two when it woke for the first
    # event before the other four were queued. Every one is a 401 and all five are named.
    assert {f.status_code for f in failures.items} == {401}
    assert sum(len(f.events) for f in failures.items) == 5
    assert all("401" in f.error for f in failures.items)
    assert collector.store.count_events() == 0
    dead = (tmp_path / "dead").read_text() if (tmp_path / "dead").is_file() else "".join(
        p.read_text() for p in (tmp_path / "dead").glob("*")
    )
    assert "signup" in dead  # the events were dead-lettered...
    for text in (dead, caplog.text, repr(client), repr(client._channels[0].provider),
                 *(f.error for f in failures.items), *map(repr, failures.items)):
        assert bad_key not in text and "secret-marker" not in text  # ...without the key


def test_revoked_key_gets_401(collector):
    ok = collector.post({"batch": []})
    assert ok.status_code == 200
    (info,) = [k for k in collector.store.list_keys() if k.scopes == ("ingest",)]
    assert collector.store.revoke_key(info.id)
    denied = collector.post({"batch": []})
    assert denied.status_code == 401 and collector.key not in denied.text
    assert collector.post({"batch": []}, key="").status_code == 401
    no_header = httpx.post(f"{collector.url}/v1/batch", json={"batch": []})
    assert no_header.status_code == 401


def test_413_splits_the_batch_until_it_fits(start_collector, clients):
    collector = start_collector(limits=Limits(max_batch_events=7))
    client = clients(collector.url, collector.key, batch_size=50)
    ids = [client.track("e", person_id="p", properties={"i": i}) for i in range(50)]
    report = client.flush(20)
    assert report.ok and report["collector"].delivered == 50
    assert sorted(collector.store.event_ids()) == sorted(ids)
    # Split into halves until each fits: 50 → 25 → 13/12 → 7/6 ... more requests than one.
    assert report["collector"].batches > 7


def test_429_is_retried_after_the_servers_retry_after(start_collector, clients):
    collector = start_collector(rate_limit=40, burst=40)
    client = clients(collector.url, collector.key, batch_size=40)
    started = time.monotonic()
    ids = [client.track("e", person_id="p", properties={"i": i}) for i in range(80)]
    report = client.flush(30)
    elapsed = time.monotonic() - started
    assert report.ok and report["collector"].delivered == 80
    assert report["collector"].retries >= 1
    assert sorted(collector.store.event_ids()) == sorted(ids)
    # Retry-After: 1 was honoured rather than the 0.02 s backoff (a lower bound only,
    # which a slow machine cannot break).
    assert elapsed >= 0.9


def test_per_event_rejections_dead_letter_only_those_events(start_collector, clients):
    collector = start_collector(limits=Limits(max_event_bytes=2_000))
    failures = Failures()
    client = clients(collector.url, collector.key, on_error=failures)
    small = [client.track("small", person_id="p", properties={"i": i}) for i in range(6)]
    big = client.track("big", person_id="p", properties={"blob": "x" * 5_000})
    report = client.flush(10)
    assert report["collector"].delivered == 6 and report["collector"].failed == 1
    assert [e.event_id for e in failures.events] == [big]
    assert "2000-byte limit" in failures.items[0].error
    assert sorted(collector.store.event_ids()) == sorted(small)


def test_large_batches_are_gzipped_and_stored(collector, clients):
    client = clients(collector.url, collector.key, batch_size=500)
    ids = [client.track("e", person_id="p", properties={"text": "lorem ipsum " * 20, "i": i})
           for i in range(500)]
    assert client.flush(20).ok
    assert sorted(collector.store.event_ids()) == sorted(ids)
