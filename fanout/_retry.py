"""Backoff between retries, and the backend's own ``Retry-After`` hint."""

from __future__ import annotations

import dataclasses
import email.utils
import time
from typing import Final

from . import _random

__all__ = ["Backoff", "parse_retry_after", "MAX_RETRY_AFTER"]

#: A ``Retry-After`` above this many seconds is honoured only up to it, so one confused
#: backend cannot park a channel for long (the batch's time budget keeps running).
MAX_RETRY_AFTER: Final = 60.0
#: ``Retry-After`` waits are stretched by up to this fraction, so that the many clients a
#: rate limit sent away together do not all come back in the same instant.
RETRY_AFTER_SPREAD: Final = 0.25


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter and a floor, capped at ``cap`` seconds.

    Full jitter (a uniform draw up to the exponential bound, AWS's recommendation) spreads
    the retries of many processes that failed together; the floor (``base``) keeps a
    backend that answers ``Retry-After: 0``, a past date or a negative value from being
    hammered in a tight loop.
    """

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        if retry_after is not None:
            wait = min(max(retry_after, self.base), MAX_RETRY_AFTER)
            return wait * _random.uniform(1.0, 1.0 + RETRY_AFTER_SPREAD)
        bound: float = min(self.cap, self.base * (2 ** min(attempt, 32)))
        return max(self.base, _random.uniform(0.0, bound))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date; else ``None``."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
