"""Backoff between retries, and the backend's own ``Retry-After`` hint."""

from __future__ import annotations

import dataclasses
import email.utils
import random
import time
from typing import Final

__all__ = ["Backoff", "parse_retry_after", "MAX_RETRY_AFTER"]

#: A ``Retry-After`` above this many seconds is honoured only up to it, so one confused
#: backend cannot park a channel for hours.
MAX_RETRY_AFTER: Final = 300.0


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Exponential backoff with ±``jitter`` (a fraction), capped at ``cap`` seconds.

    Jitter spreads the retries of many processes that failed together (a backend
    restart) instead of having them all come back at the same instant.
    """

    base: float = 0.5
    cap: float = 30.0
    jitter: float = 0.5

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, MAX_RETRY_AFTER)
        d: float = min(self.cap, self.base * (2 ** min(attempt, 32)))
        return d * random.uniform(1 - self.jitter, 1 + self.jitter)


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
