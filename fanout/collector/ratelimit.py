"""Per-key token buckets counted in events, answered with 429 and ``Retry-After``.

Every event costs one token: a batch of 1,000 costs 1,000, a timeline read costs the
events it returned. A request is let in when the bucket holds enough tokens to start it
(its cost, capped at the burst) and then pays its full cost, so the bucket may go into
debt; the next request waits until the debt is paid back. The long-run rate per key is
therefore the configured rate, whatever the batch size. :meth:`RateLimiter.check` asks
only whether the bucket has a token left, before a request body is read at all: a key
that is over its limit costs the server no body read and no parsing.

The in-memory limiter is per process. :class:`~fanout.collector.postgres.PostgresStore`
offers one kept in the database, shared by every collector process on it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Limiter", "RateLimiter", "retry_after_header"]


class Limiter(Protocol):
    def check(self, key_id: int) -> float | None:
        """``None`` if the key has a token left, else seconds until it has one."""
        ...

    def acquire(self, key_id: int, events: int) -> float | None:
        """Take ``events`` tokens: ``None`` if allowed, else seconds to wait (nothing taken)."""
        ...

    def charge(self, key_id: int, events: int) -> None:
        """Take ``events`` tokens after the fact (reads), going into debt if need be."""
        ...


class RateLimiter:
    """``rate`` events per second per key, bursts up to ``burst`` events (default: one
    second's worth). ``rate=None`` disables the limit."""

    def __init__(
        self,
        rate: float | None,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else (rate or 0.0)
        self._clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _tokens(self, key_id: int, now: float) -> float:
        assert self.rate is not None
        tokens, last = self._buckets.get(key_id, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def check(self, key_id: int) -> float | None:
        if self.rate is None:
            return None
        with self._lock:
            tokens = self._tokens(key_id, self._clock())
        return None if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def acquire(self, key_id: int, events: int) -> float | None:
        if self.rate is None:
            return None
        cost = float(max(events, 1))
        need = min(cost, self.burst)
        now = self._clock()
        with self._lock:
            tokens = self._tokens(key_id, now)
            if tokens >= need:
                self._buckets[key_id] = (tokens - cost, now)
                return None
            self._buckets[key_id] = (tokens, now)
            return (need - tokens) / self.rate

    def charge(self, key_id: int, events: int) -> None:
        if self.rate is None:
            return
        now = self._clock()
        with self._lock:
            self._buckets[key_id] = (self._tokens(key_id, now) - max(events, 1), now)


def retry_after_header(wait: float) -> str:
    """Whole seconds, rounded up (the header's delta-seconds form)."""
    return str(max(1, math.ceil(wait)))
