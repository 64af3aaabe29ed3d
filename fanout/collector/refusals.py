"""Logging refused requests (401, 403, 408, 413, 429) at a bounded rate, without the key.

A client with a revoked key, or an attacker, can be refused thousands of times a second;
one log line each would fill the disk (a slowloris run once wrote 150 MB of log in a
minute). So each status is logged at most once per ``interval`` seconds, and that line
says how many refusals of the same status were not logged since the last one. A line
names the client address, the key's id and project when the key was valid, and the
reason, never the key or any request content.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["RefusalLog"]


class RefusalLog:
    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger or logging.getLogger("fanout.collector.refusals")
        self._interval = interval
        self._clock = clock
        self._last: dict[int, float] = {}
        self._suppressed: dict[int, int] = {}
        self._lock = threading.Lock()

    def record(self, status: int, reason: str, *, client: str | None = None,
               key_id: int | None = None) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(status)
            if last is not None and now - last < self._interval:
                self._suppressed[status] = self._suppressed.get(status, 0) + 1
                return
            self._last[status] = now
            suppressed = self._suppressed.pop(status, 0)
        self._logger.warning(
            "refused %d from %s%s: %s (%d more %d refusal(s) since the last line)",
            status,
            client or "unknown client",
            f" with key {key_id}" if key_id is not None else "",
            reason,
            suppressed,
            status,
        )
