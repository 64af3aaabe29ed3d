"""One lane for the Python work of delivery, shared by every channel's worker in the process.

Each channel keeps its own worker thread, so that a slow or hung backend never holds up
another provider's delivery. But every channel receives the same events: their batches fill
in the same ``track()`` call and all their workers wake together, each wanting the GIL to
map, encode and compress its batch. With N providers the application's threads (an event
loop serving requests) then compete with N runnable workers, every forced GIL switch may hand
the interpreter to another worker rather than back to the app, and each worker preempted by
the OS while holding the GIL stalls everyone. The app's tail latency grew with the number of
providers (``benchmarks/app_latency.py``), and the contention itself cost CPU.

The lane lets one worker at a time run provider code. A worker waiting for the lane sleeps on
a plain lock and does not ask for the GIL, so the app competes with at most one delivery
thread whatever the number of providers. Network waits happen outside the lane:
:class:`fanout.http.HttpSender` leaves it around each request, so a backend that hangs holds
nothing and the other channels go on exactly as before.

A provider that blocks inside its own code (its own HTTP client, a full pipe, a bug) would
hold the lane. So a worker never waits for a holder that has had the lane longer than
``stall`` seconds: it goes on without the lane, as every worker did before the lane existed.
What such a provider can cost another channel is bounded by ``stall``, once.

This is process-wide on purpose: the GIL it shares out is process-wide. After ``fork`` the
child gets a fresh lock (the parent's holder does not exist there): each channel resets its
lane in its own after-fork step, before any worker of the child runs.

The lane is taken without ``with`` (a bounded wait, and held across calls), which a signal's
exception raised right after the acquire would leave held. Only channel workers take it
(``Channel._deliver`` on the worker; sync mode's senders do not), and CPython runs signal
handlers on the main thread alone, so none is raised there. A lane left held anyway would
cost each batch at most ``stall`` of waiting, never an event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

__all__ = ["DeliveryLane", "LANE", "STALL", "released"]

#: Seconds after which a holder is presumed blocked and others stop waiting for it. Mapping,
#: encoding and compressing a full batch takes a few milliseconds.
STALL: Final = 0.05


class DeliveryLane:
    """A lock that workers hold while running provider code, with a bounded wait."""

    def __init__(self, stall: float = STALL) -> None:
        self.stall = stall
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._since = 0.0  # monotonic time the current holder took the lane; 0.0 when free

    def reset_after_fork(self) -> None:
        """In a forked child, before its workers start: a fresh, free lock."""
        self._init_runtime()
        _current.lane = None

    def enter(self) -> bool:
        """Take the lane; ``False`` (without it) if its holder has had it for ``stall``."""
        lock = self._lock
        if not lock.acquire(False):
            since = self._since
            wait = since + self.stall - time.monotonic() if since else self.stall
            if wait <= 0 or not lock.acquire(timeout=wait):
                return False
        self._since = time.monotonic()
        _current.lane = self
        return True

    def leave(self) -> None:
        """Give the lane back (only by the thread that holds it)."""
        if getattr(_current, "lane", None) is self:
            _current.lane = None
            self._since = 0.0
            self._lock.release()

    def holding(self) -> bool:
        """Whether the calling thread holds this lane."""
        return getattr(_current, "lane", None) is self

    @contextmanager
    def held(self) -> Iterator[None]:
        """Run the block in the lane (or without it, past a stalled holder)."""
        entered = self.enter()
        try:
            yield
        finally:
            if entered:
                self.leave()


#: The lane every channel of every client in this process shares.
LANE: Final = DeliveryLane()

#: Which lane, if any, each thread holds: the HTTP code that leaves the lane for a network
#: wait does not know which channel (or which lane, in tests) it runs for.
_current = threading.local()


@contextmanager
def released() -> Iterator[None]:
    """Run the block outside the lane the calling thread holds (a network wait), then take
    it back; a no-op for threads that hold none (sync mode, a provider called directly)."""
    lane: DeliveryLane | None = getattr(_current, "lane", None)
    if lane is None:
        yield
        return
    lane.leave()
    try:
        yield
    finally:
        lane.enter()
