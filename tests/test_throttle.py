"""Quiet logs: a failure repeated on every event is one line per interval, with a count and
at most one traceback, instead of a traceback per event."""

from __future__ import annotations

import logging
import threading

import pytest

from fanout._throttle import LOG_INTERVAL, Throttle

CALLS = 1000
THREADS = 4


def test_a_failing_processor_logs_one_traceback_not_one_per_event(make_client, memory, caplog):
    calls = {"n": 0}

    def broken(event):
        calls["n"] += 1
        raise ZeroDivisionError("processor bug")

    client = make_client(providers=[memory], processors=[broken])

    def work(offset: int) -> None:
        for i in range(CALLS // THREADS):
            client.track("x", person_id=f"u{offset + i}")

    with caplog.at_level(logging.DEBUG, logger="fanout"):
        threads = [threading.Thread(target=work, args=(t * 1000,)) for t in range(THREADS)]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
        report = client.flush(timeout=30)
    processor_lines = [r for r in caplog.records if "processor" in r.getMessage()]
    assert calls["n"] == CALLS
    assert len(processor_lines) == 1  # within one interval: the first occurrence only
    assert processor_lines[0].levelno == logging.ERROR
    assert processor_lines[0].exc_info
    assert processor_lines[0].exc_info[0] is ZeroDivisionError
    # The events still went out, unchanged.
    assert report["memory"].delivered == CALLS and len(memory.events) == CALLS


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_next_interval_reports_the_exact_count_with_one_traceback(caplog):
    clock = Clock()
    logger = logging.getLogger("fanout.test_throttle")
    throttle = Throttle(logger, clock=clock)

    def fail_many(n: int) -> None:
        for _ in range(n):
            try:
                raise ValueError("boom")
            except ValueError:
                throttle.error("k", "step %s failed", "parse", exc_info=True)

    with caplog.at_level(logging.DEBUG, logger="fanout.test_throttle"):
        threads = [threading.Thread(target=fail_many, args=(CALLS // THREADS,)) for _ in range(4)]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
        assert len(caplog.records) == 1
        clock.now = LOG_INTERVAL - 0.01
        fail_many(5)
        assert len(caplog.records) == 1  # still within the interval: counted only
        clock.now = LOG_INTERVAL + 0.01
        fail_many(1)
        # Another kind is throttled on its own.
        throttle.warning("other", "queue full")
        throttle.warning("other", "queue full")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "step parse failed",
        f"step parse failed ({CALLS - 1 + 5} more like this since the last report)",
        "queue full",
    ]
    assert [bool(r.exc_info) for r in caplog.records] == [True, True, False]


@pytest.mark.parametrize("level", [logging.WARNING, logging.ERROR])
def test_levels_pass_through(caplog, level):
    throttle = Throttle(logging.getLogger("fanout.test_throttle"), clock=Clock())
    with caplog.at_level(logging.DEBUG, logger="fanout.test_throttle"):
        for _ in range(3):
            throttle.log(level, "k", "x=%d", 1)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(level, "x=1")]
