"""The channel: batching, retries, splitting, dead letters, overflow, flush accounting."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from _helpers import GatedProvider, ScriptedProvider

from fanout import BatchLimits, BatchTooLarge, PermanentError, RetryableError
from fanout._channel import Channel
from fanout._config import Delivery
from fanout._deadletter import DeadLetters
from fanout._events import build_event
from fanout._queue import MemoryQueue

FAST = {"retry_base": 0.01, "retry_cap": 0.05, "flush_interval": 0.05}


def events(n, size=0, prefix="e"):
    props = {"pad": "x" * size} if size else None
    return [
        build_event("track", name=f"{prefix}{i}", person_id="u", properties=props) for i in range(n)
    ]


def run_channel(provider, evs, *, limits=None, timeout=10, **options):
    opts = Delivery(**{**FAST, **options})
    failures = []
    ch = Channel(provider.name, provider, options=opts, limits=limits, on_error=failures.append)
    for e in evs:
        ch.emit(e)
    target = ch.request_flush()
    assert ch.wait(target, __import__("time").monotonic() + timeout)
    ch.end_flush()
    return ch, failures


def test_batches_by_count():
    p = ScriptedProvider("p")
    ch, _ = run_channel(p, events(25), batch_size=10)
    assert [len(b) for b in p.seen] == [10, 10, 5]
    assert ch.report().delivered == 25


def test_full_batches_leave_without_a_flush_or_the_interval_under_concurrent_callers():
    """The caller wakes the worker once per full batch; no wake-up may be lost between the
    worker's clearing its flag and callers on other threads filling the next batch."""
    p = ScriptedProvider("p")
    opts = Delivery(**{**FAST, "flush_interval": 60.0, "batch_size": 10})
    ch = Channel("p", p, options=opts)
    per_thread, threads = 500, 4
    evs = events(per_thread * threads)

    def emit(chunk):
        for e in chunk:
            ch.emit(e)

    workers = [
        threading.Thread(target=emit, args=(evs[i * per_thread : (i + 1) * per_thread],))
        for i in range(threads)
    ]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    # No flush: only the full-batch wake-ups can deliver within the 60 s interval.
    deadline = time.monotonic() + 20
    while ch.report().delivered < len(evs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ch.report().delivered == len(evs)
    assert sorted(e.event_id for b in p.seen for e in b) == sorted(e.event_id for e in evs)
    assert all(len(b) == 10 for b in p.seen)
    ch.begin_shutdown()
    ch.finish_shutdown(time.monotonic() + 2)


def test_batches_by_bytes_and_provider_event_limit():
    p = ScriptedProvider("p")
    evs = events(6, size=1000)
    ch, _ = run_channel(p, evs, limits=BatchLimits(max_events=100, max_bytes=2500))
    assert all(sum(e.size for e in b) <= 2500 for b in p.seen)
    assert sum(len(b) for b in p.seen) == 6
    assert ch.report().batches == len(p.seen) > 1


def test_event_above_provider_limit_is_dead_lettered_not_sent():
    p = ScriptedProvider("p")
    small, big = events(1)[0], events(1, size=5000)[0]
    ch, failures = run_channel(p, [small, big], limits=BatchLimits(max_event_bytes=1000))
    assert p.accepted == [small]
    assert failures[0].reason == "too_large" and failures[0].events == (big,)
    r = ch.report()
    assert (r.delivered, r.failed, r.losses["too_large"]) == (1, 1, 1)


def test_retryable_errors_are_retried_then_delivered():
    p = ScriptedProvider("p", [RetryableError("503"), RetryableError("timeout")])
    ch, failures = run_channel(p, events(3))
    assert len(p.seen) == 3 and p.seen[0] == p.seen[2]
    assert failures == []
    r = ch.report()
    assert (r.delivered, r.retries, r.failed) == (3, 2, 0)


def test_unexpected_provider_exceptions_are_retried_and_logged(caplog):
    p = ScriptedProvider("p", [KeyError("bug")])
    with caplog.at_level(logging.ERROR, logger="fanout.channel.p"):
        ch, _ = run_channel(p, events(2))
    assert ch.report().delivered == 2
    assert "raised unexpectedly" in caplog.text


def test_retry_after_is_honoured():
    p = ScriptedProvider("p", [RetryableError("429", retry_after=0.3)])
    times = []
    original = p.send

    def send(batch):
        times.append(__import__("time").monotonic())
        original(batch)

    p.send = send  # type: ignore[method-assign]
    ch, _ = run_channel(p, events(1), retry_base=0.001, retry_cap=0.001)
    assert ch.report().delivered == 1
    # the gap follows Retry-After (0.3 s), not the 1 ms backoff: a lower bound cannot flake
    assert times[1] - times[0] >= 0.29


def test_retries_exhausted_goes_to_dead_letter(tmp_path):
    p = ScriptedProvider("p", [RetryableError("500")] * 10)
    opts = Delivery(**FAST, max_retries=2)
    failures = []
    ch = Channel("p", p, options=opts, dead_letters=DeadLetters(tmp_path), on_error=failures.append)
    evs = events(2)
    for e in evs:
        ch.emit(e)
    assert ch.wait(ch.request_flush(), __import__("time").monotonic() + 10)
    assert len(p.seen) == 3  # first try + 2 retries
    assert failures[0].reason == "retries_exhausted"
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [x["event"]["event_id"] for x in lines] == [e.event_id for e in evs]
    assert lines[0]["reason"] == "retries_exhausted" and lines[0]["error"] == "500"
    assert ch.report().failed == 2


def test_batch_too_large_is_split_in_halves():
    class Picky(ScriptedProvider):
        def send(self, batch):
            self.seen.append(list(batch))
            if len(batch) > 3:
                raise BatchTooLarge("413")
            self.accepted.extend(batch)

    p = Picky("p")
    evs = events(10)
    ch, failures = run_channel(p, evs, batch_size=10)
    assert sorted(e.event_id for e in p.accepted) == sorted(e.event_id for e in evs)
    assert [len(b) for b in p.seen][:3] == [10, 5, 2]
    assert failures == [] and ch.report().delivered == 10


def test_single_event_too_large_fails_permanently():
    p = ScriptedProvider("p", [BatchTooLarge("413")])
    ch, failures = run_channel(p, events(1))
    assert failures[0].reason == "too_large"
    assert ch.report().failed == 1


def test_per_event_rejection_keeps_the_rest_delivered():
    p = ScriptedProvider("p", [PermanentError("bad records", rejected={1: "bad time", 3: "bad"})])
    evs = events(5)
    ch, failures = run_channel(p, evs)
    assert [f.events[0] for f in failures] == [evs[1], evs[3]]
    assert "bad time" in failures[0].error
    r = ch.report()
    assert (r.delivered, r.failed) == (3, 2)


def test_partial_success_retries_only_the_pending_events():
    """RetryableError(pending=...) means the rest were delivered: only those are retried."""
    p = ScriptedProvider("p", [RetryableError("second request failed", pending=[1, 3])])
    evs = events(5)
    ch, failures = run_channel(p, evs)
    assert p.seen == [evs, [evs[1], evs[3]]]
    assert failures == []
    r = ch.report()
    assert (r.delivered, r.failed, r.retries, r.pending) == (5, 0, 1, 0)
    assert sorted(e.event_id for e in p.accepted) == sorted(
        e.event_id for e in [evs[1], evs[3]]
    )  # the scripted backend accepted only the retry; the first attempt "took" the other 3


def test_partial_success_with_rejections_dead_letters_them_and_retries_the_rest():
    p = ScriptedProvider(
        "p", [RetryableError("503", pending=[2, 4], rejected={0: "bad record"}), None]
    )
    evs = events(5)
    ch, failures = run_channel(p, evs)
    assert p.seen[1] == [evs[2], evs[4]]
    assert [f.events for f in failures] == [(evs[0],)]
    assert "bad record" in failures[0].error
    r = ch.report()
    assert (r.delivered, r.failed, r.pending) == (4, 1, 0)


def test_partial_success_with_nothing_pending_is_resolved_without_a_retry():
    p = ScriptedProvider("p", [RetryableError("odd but legal", pending=[])])
    ch, failures = run_channel(p, events(3))
    assert len(p.seen) == 1
    r = ch.report()
    assert (r.delivered, r.retries, r.failed) == (3, 0, 0)


def test_permanent_batch_failure_is_not_retried():
    p = ScriptedProvider("p", [PermanentError("401 unauthorized", status_code=401)])
    ch, failures = run_channel(p, events(4))
    assert len(p.seen) == 1
    assert failures[0].status_code == 401 and len(failures[0].events) == 4


def test_on_error_callback_that_raises_does_not_stop_delivery():
    p = ScriptedProvider("p", [PermanentError("no")])
    opts = Delivery(**FAST, batch_size=1)

    def boom(failure):
        raise RuntimeError("callback bug")

    ch = Channel("p", p, options=opts, on_error=boom)
    for e in events(3):
        ch.emit(e)
    assert ch.wait(ch.request_flush(), __import__("time").monotonic() + 10)
    assert ch.report().delivered == 2 and ch.report().failed == 1


def test_queue_full_drops_new_events_counts_and_logs_once(caplog):
    p = GatedProvider("p")
    opts = Delivery(**FAST, queue_size=5, batch_size=1)
    ch = Channel("p", p, options=opts)
    with caplog.at_level(logging.WARNING, logger="fanout.channel.p"):
        for e in events(50):
            ch.emit(e)
    p.gate.set()
    assert ch.wait(ch.request_flush(), __import__("time").monotonic() + 10)
    r = ch.report()
    assert r.losses["queue_full"] == r.dropped
    assert r.delivered + r.dropped == 50 and r.dropped >= 44
    assert caplog.text.count("queue full") == 1  # throttled: one line, not 44


def test_queue_bounded_by_bytes():
    opts = Delivery(**FAST, queue_bytes=20_000, batch_size=1)
    p = GatedProvider("p")
    ch = Channel("p", p, options=opts)
    for e in events(20, size=2000):
        ch.emit(e)
    assert ch.report().dropped >= 10
    p.gate.set()
    ch.wait(ch.request_flush(), __import__("time").monotonic() + 10)


def test_block_overflow_waits_for_room_instead_of_dropping():
    p = ScriptedProvider("p")
    opts = Delivery(**FAST, queue_size=2, batch_size=1, overflow="block", block_timeout=5)
    ch = Channel("p", p, options=opts)
    for e in events(30):
        ch.emit(e)
    assert ch.wait(ch.request_flush(), __import__("time").monotonic() + 10)
    r = ch.report()
    assert (r.delivered, r.dropped) == (30, 0)


def test_unsupported_kind_is_skipped_and_counted():
    p = ScriptedProvider("p")
    opts = Delivery(**FAST)
    ch = Channel("p", p, options=opts, kinds=frozenset({"track"}))
    ch.emit(build_event("alias", person_id="u", previous_id="a"))
    ch.emit(events(1)[0])
    assert ch.wait(ch.request_flush(), __import__("time").monotonic() + 10)
    r = ch.report()
    assert (r.delivered, r.skipped, r.losses["unsupported_kind"]) == (1, 1, 1)


def test_worker_starts_lazily():
    p = ScriptedProvider("p")
    ch = Channel("p", p, options=Delivery(**FAST))
    assert ch._thread is None
    ch.emit(events(1)[0])
    assert ch._thread is not None and ch._thread.daemon


def test_delivery_options_validate_keyword_arguments(make_client, memory):
    from fanout import ConfigError

    with pytest.raises(ConfigError, match="batch_size"):
        make_client(providers=[memory], batch_size=0)
    with pytest.raises(ConfigError, match="overflow"):
        make_client(providers=[memory], overflow="drop_oldest")


def test_a_provider_may_prefer_its_own_default_batch_size():
    p = ScriptedProvider("p")
    limits = BatchLimits(max_events=2000, preferred_events=7)
    ch, _ = run_channel(p, events(20), limits=limits, batch_size=None)
    assert [len(b) for b in p.seen] == [7, 7, 6]
    p2 = ScriptedProvider("p2")
    ch, _ = run_channel(p2, events(20), limits=limits, batch_size=10)  # explicit setting wins
    assert [len(b) for b in p2.seen] == [10, 10]


class _PreemptedAfterTake(MemoryQueue):
    """A memory queue whose worker is "preempted" right after each take from the second on:
    the events have left the queue but the channel has not marked them in flight yet."""

    def __init__(self) -> None:
        super().__init__(max_events=1_000, max_bytes=10_000_000)
        self.takes = 0

    def take(self, max_events: int, max_bytes: int) -> list:
        batch = super().take(max_events, max_bytes)
        if batch:
            self.takes += 1
            if self.takes > 1:
                time.sleep(0.3)
        return batch


def test_flush_waits_for_a_batch_between_take_and_in_flight():
    # A flush used to return as soon as it saw nothing queued and nothing in flight, which
    # is what a waiter woken by the first batch's completion saw while the worker was
    # between taking the second batch and marking it in flight: 40 of 80 delivered, "ok".
    p = ScriptedProvider("p")
    queue = _PreemptedAfterTake()
    ch = Channel("p", p, options=Delivery(**{**FAST, "batch_size": 40}), queue=queue)
    for e in events(80):
        ch.emit(e)
    target = ch.request_flush()
    assert ch.wait(target, time.monotonic() + 10)
    ch.end_flush()
    assert queue.takes == 2
    assert len(p.accepted) == 80 and ch.report().delivered == 80
    ch.begin_shutdown()
    ch.finish_shutdown(time.monotonic() + 5)
