"""A per-key token bucket counted in events, answered with 429 and ``Retry-After``."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """``rate`` events per second per key, bursts up to ``burst`` events.

    A batch larger than the burst costs the whole burst (never more), so any batch the
    protocol allows can pass once the bucket is full. ``rate=None`` disables the limit.
    """

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

    def acquire(self, key_id: int, events: int) -> float | None:
        """Take ``events`` from ``key_id``'s bucket: ``None`` if allowed, else seconds to wait."""
        if self.rate is None:
            return None
        cost = min(float(max(events, 1)), self.burst)
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= cost:
                self._buckets[key_id] = (tokens - cost, now)
                return None
            self._buckets[key_id] = (tokens, now)
            return (cost - tokens) / self.rate

    @staticmethod
    def retry_after_header(wait: float) -> str:
        """Whole seconds, rounded up (the header's delta-seconds form)."""
        return str(max(1, math.ceil(wait)))
