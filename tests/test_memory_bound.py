"""An honest memory bound: ``FANOUT_QUEUE_BYTES`` counts what queued events really hold,
whatever their shape, and batches are cut by the encoded size, escapes included.

Measured with tracemalloc on the shapes that fooled the old estimate (38x off: 2,000 empty
lists per event, 200 ints of 1,000 digits, control characters).
"""

from __future__ import annotations

import gc
import logging
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from test_poison import Collector

import fanout
from fanout._events import build_event
from fanout._queue import MemoryQueue
from fanout.collector.protocol import MAX_BATCH_BYTES

N = 30  # events per shape


def _nested(depth: int, i: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": i}
    for k in range(depth):
        value = {f"n{k}": value}
    return value


# Fresh values per event (nothing shared between events but literal keys), as a request
# handler's data would be.
SHAPES: dict[str, Callable[[int], dict[str, Any]]] = {
    "no properties": lambda i: {},
    "2,000 empty lists": lambda i: {"l": [[] for _ in range(2000)]},
    "2,000 empty dicts": lambda i: {"l": [{} for _ in range(2000)]},
    "200 ints of 19 digits": lambda i: {"n": [10**18 + j + i for j in range(200)]},
    "2,000 ints": lambda i: {"n": [300 + j + i for j in range(2000)]},
    "2,000 floats": lambda i: {"f": [j + i + 0.5 for j in range(2000)]},
    "nested dicts, depth 30": lambda i: _nested(30, i),
    "1,000 one-key dicts": lambda i: {"d": [{f"k{j}": j + i} for j in range(1000)]},
    "2,000 keys": lambda i: {f"key{j}-{i}": j for j in range(2000)},
    "10,000 quotes": lambda i: {"q": '"' * 10_000 + str(i)},
    "10,000 control characters": lambda i: {"c": "\x01" * 10_000 + str(i)},
    "2,000 short non-ASCII strings": lambda i: {
        "s": [chr(0x100 + j % 500) + str(i) for j in range(2000)]
    },
    "10,000 emoji": lambda i: {"e": "\N{GRINNING FACE}" * 10_000 + str(i)},
    "10,000 euro signs": lambda i: {"e": "\N{EURO SIGN}" * 10_000 + str(i)},
}


def held_by_queue(make: Callable[[int], dict[str, Any]]) -> tuple[int, int, MemoryQueue]:
    """(bytes tracemalloc sees the queued events hold, the queue's own count, the queue)."""
    queue = MemoryQueue(max_events=10**9, max_bytes=10**12)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(N):
            queued = queue.put(
                build_event("track", name="x", person_id=f"user-{i}", properties=make(i))
            )
            assert queued == i + 1
        gc.collect()
        real = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return real, queue.nbytes, queue


@pytest.mark.parametrize("shape", SHAPES)
def test_queue_bytes_are_within_2x_of_real_memory(shape):
    real, accounted, queue = held_by_queue(SHAPES[shape])
    assert len(queue) == N
    ratio = real / accounted
    assert 0.5 <= ratio <= 2.0, f"{shape}: real {real} vs accounted {accounted}"
    # Everything taken leaves the count at zero: no drift.
    assert len(queue.take(N, 10**12)) == N
    assert queue.nbytes == 0


@pytest.mark.parametrize("shape", SHAPES)
def test_size_is_the_encoded_size_escapes_included(shape):
    e = build_event("track", name="x", person_id="u", properties=SHAPES[shape](7))
    assert 0 <= e.size - len(e.to_json()) <= 32


def test_a_full_queue_of_the_worst_shape_holds_at_most_2x_its_bound():
    bound = 1024 * 1024
    queue = MemoryQueue(max_events=10**9, max_bytes=bound)
    make = SHAPES["2,000 empty lists"]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        accepted = refused = 0
        for i in range(20):
            event = build_event("track", name="x", person_id="u", properties=make(i))
            if queue.put(event):
                accepted += 1
            else:
                refused += 1
            del event
        gc.collect()
        real = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    footprint = queue.take(1, 10**12)[0].footprint
    assert accepted == bound // footprint  # identical events: an exact count
    assert accepted == 9 and refused == 20 - accepted
    assert real <= 2 * bound  # was 24x the bound with the old estimate


def test_integers_of_1000_digits_never_reach_a_queue():
    with pytest.raises(Exception, match=r"2\*\*63") as info:
        build_event("track", name="x", person_id="u", properties={"n": [10**999] * 200})
    assert type(info.value).__name__ == "InvalidEvent"


def test_control_characters_do_not_make_the_collector_refuse_batches(
    httpserver, make_client, caplog
):
    collector = Collector()
    httpserver.expect_request("/v1/batch", method="POST").respond_with_handler(collector)
    client = make_client(
        providers=["collector"],
        settings={"collector": {"url": httpserver.url_for("/").rstrip("/"), "key": "sk_test"}},
        batch_size=100,
        flush_interval=3600,
    )
    sent = 40
    # 40,000 control characters: 40 KB in memory, 240 KB on the wire each.
    ids = [
        client.track("x", person_id="u", properties={"c": "\x02" * 40_000, "i": i})
        for i in range(sent)
    ]
    with caplog.at_level(logging.DEBUG, logger="fanout"):
        report = client.flush(timeout=60)["collector"]
    assert report.delivered == sent and report.failed == 0 and report.pending == 0
    assert sorted(collector.ids) == sorted(ids)  # each once
    # Batches cut by the encoded size: 4 MiB (the provider's limit) / ~240 KB = 17 events,
    # so 17 + 17 + 6, and no batch was refused and split on the way.
    assert collector.requests == 3
    assert max(collector.bodies) <= MAX_BATCH_BYTES
    assert not [r for r in caplog.records if "too large" in r.getMessage()]


def test_the_same_event_counts_the_same_whatever_was_encoded_before():
    """A non-ASCII string's size in memory changes once its UTF-8 copy is cached; the
    accounting must not, or an event read back from a spool differs from the original."""
    text = "".join(["é", "ü", str(time.time_ns())])  # a fresh string, never encoded
    first = fanout.Event("track", name="x", person_id="u", properties={"t": text}, event_id="e")
    second = fanout.Event("track", name="x", person_id="u", properties={"t": text}, event_id="e")
    assert first.footprint == second.footprint and first.size == second.size
