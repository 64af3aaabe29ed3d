"""A batch queued at once (``MemoryQueue.put_many``, ``Channel.emit_many``): what the
delivery process of process mode does with each hand-off, which must come out exactly as
``put`` / ``emit`` of each event in turn would."""

from __future__ import annotations

import time

import pytest
from _helpers import GatedProvider, ScriptedProvider

from fanout import BatchLimits
from fanout._channel import Channel
from fanout._config import Delivery
from fanout._events import build_event
from fanout._queue import MemoryQueue

FAST = {"retry_base": 0.01, "retry_cap": 0.05, "flush_interval": 0.05}


def events(n, size=0, prefix="e"):
    props = {"pad": "x" * size} if size else None
    return [
        build_event("track", name=f"{prefix}{i}", person_id="u", properties=props)
        for i in range(n)
    ]


def one_by_one(queue, batch):
    """What ``put`` of each event in turn queues, up to the first without room."""
    done = 0
    for event in batch:
        if not queue.put(event):
            break
        done += 1
    return done, len(queue)


@pytest.mark.parametrize(
    ("max_events", "max_bytes", "queued_first", "batch"),
    [
        (100, 10**9, 0, 30),  # everything fits
        (10, 10**9, 4, 30),  # cut by count
        (10, 10**9, 10, 5),  # full already: nothing
        (100, 6_000, 0, 30),  # cut by bytes
        (100, 6_000, 2, 30),  # cut by bytes, behind queued events
        (100, 10, 0, 3),  # one event above the bound: an empty queue still takes it
        (100, 10, 1, 3),  # ... but not behind another
    ],
)
def test_put_many_queues_what_put_by_put_would(max_events, max_bytes, queued_first, batch):
    first = events(queued_first, size=500, prefix="q")
    evs = events(batch, size=500)
    bulk, single = MemoryQueue(max_events, max_bytes), MemoryQueue(max_events, max_bytes)
    for queue in (bulk, single):
        for event in first:
            queue.put(event)
    expected = one_by_one(single, evs)
    assert bulk.put_many(evs) == expected
    assert (len(bulk), bulk.nbytes, bulk.total_put) == (
        len(single),
        single.nbytes,
        single.total_put,
    )
    assert bulk.drain() == single.drain()
    assert bulk.nbytes == 0


def test_emit_many_delivers_every_event_in_order():
    p = ScriptedProvider("p")
    ch = Channel("p", p, options=Delivery(**FAST, batch_size=10))
    evs = events(95)
    for i in range(0, 95, 30):
        ch.emit_many(evs[i : i + 30])
    assert ch.wait(ch.request_flush(), time.monotonic() + 10)
    ch.end_flush()
    r = ch.report()
    assert (r.delivered, r.dropped, r.failed, r.pending) == (95, 0, 0, 0)
    assert [e.event_id for b in p.seen for e in b] == [e.event_id for e in evs]
    assert all(len(b) <= 10 for b in p.seen)


def test_emit_many_counts_what_a_full_queue_drops():
    p = GatedProvider("p")
    ch = Channel("p", p, options=Delivery(**FAST, queue_size=5, batch_size=5))
    ch.emit_many(events(5, prefix="a"))  # the worker takes these and waits at the gate
    deadline = time.monotonic() + 10
    while len(ch._queue) and time.monotonic() < deadline:
        time.sleep(0.01)
    ch.emit_many(events(12, prefix="b"))  # 5 fit, 7 dropped
    p.gate.set()
    assert ch.wait(ch.request_flush(), time.monotonic() + 10)
    ch.end_flush()
    r = ch.report()
    assert (r.delivered, r.dropped, r.losses.get("queue_full")) == (10, 7, 7)
    names = [e.name for b in p.seen for e in b]
    assert names == [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)]


def test_emit_many_waits_for_room_under_overflow_block():
    p = ScriptedProvider("p")
    opts = Delivery(**FAST, queue_size=2, batch_size=1, overflow="block", block_timeout=5)
    ch = Channel("p", p, options=opts)
    ch.emit_many(events(30))
    assert ch.wait(ch.request_flush(), time.monotonic() + 10)
    ch.end_flush()
    r = ch.report()
    assert (r.delivered, r.dropped, len(p.seen)) == (30, 0, 30)


def test_emit_many_on_a_channel_that_picks_events_goes_one_by_one():
    p = ScriptedProvider("p")
    ch = Channel("p", p, options=Delivery(**FAST), kinds=frozenset({"track"}))
    batch = [*events(3), build_event("alias", person_id="u", previous_id="a"), *events(2)]
    ch.emit_many(batch)
    assert ch.wait(ch.request_flush(), time.monotonic() + 10)
    ch.end_flush()
    r = ch.report()
    assert (r.delivered, r.skipped, r.losses["unsupported_kind"]) == (5, 1, 1)


def test_emit_many_after_shutdown_counts_every_event_closed():
    p = ScriptedProvider("p")
    ch = Channel("p", p, options=Delivery(**FAST))
    ch.begin_shutdown()
    ch.finish_shutdown(time.monotonic() + 5)
    ch.emit_many(events(4))
    r = ch.report()
    assert (r.delivered, r.losses["closed"], len(p.seen)) == (0, 4, 0)


@pytest.mark.parametrize(
    ("options", "limits", "expected"),
    [
        ({}, BatchLimits(), 500),  # nobody chose: the delivery process's size
        ({}, BatchLimits(max_events=200), 200),  # capped by the provider's limit
        ({"batch_size": 50}, BatchLimits(), 50),  # FANOUT_BATCH_SIZE wins
        ({}, BatchLimits(preferred_events=2000, max_events=2000), 2000),  # the provider's
    ],
)
def test_set_default_batch_size_only_where_nobody_chose(options, limits, expected):
    p = ScriptedProvider("p")
    ch = Channel("p", p, options=Delivery(**{**FAST, "flush_interval": 30, **options}), limits=limits)
    ch.set_default_batch_size(500)
    ch.emit_many(events(expected + 1))
    assert ch.wait(ch.request_flush(), time.monotonic() + 10)
    ch.end_flush()
    assert [len(b) for b in p.seen] == [expected, 1]
    assert ch.report().delivered == expected + 1
