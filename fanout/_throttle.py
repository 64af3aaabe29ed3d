"""Throttled logging: a failure that repeats is one line per interval, with a count.

A backend that is down or a processor with a bug fails on every event; a line (or a
traceback) per event would bury the application's own logs and cost the caller's thread
the formatting. The first occurrence of a kind is logged at once, with its traceback when
there is one; later ones within the interval are counted, and the next line says how many
there were. So each kind costs at most one line, and one traceback, per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from . import _lifecycle

__all__ = ["LOG_INTERVAL", "Throttle"]

#: A repeated failure of one kind is logged at most once per this many seconds.
LOG_INTERVAL: Final = 10.0


class Throttle:
    """Logs a repeated message at most once per interval, with the count since the last one.

    Thread-safe: processors fail on the callers' threads, many at once, and the counts
    must add up.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        _lifecycle.register_fork_aware(self)

    def warning(self, key: str, msg: str, *args: object) -> None:
        self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        """Like ``logger.error``; with ``exc_info``, the traceback of the line that is
        logged (at most one per interval) and none for the ones only counted."""
        self.log(logging.ERROR, key, msg, *args, exc_info=exc_info)

    def log(
        self, level: int, key: str, msg: str, *args: object, exc_info: bool = False
    ) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            n = self._suppressed.pop(key, 0)
        if n:
            self._logger.log(
                level,
                "%s (%d more like this since the last report)",
                msg % args,
                n,
                exc_info=exc_info,
            )
        else:
            self._logger.log(level, msg, *args, exc_info=exc_info)

    def _after_fork_in_child(self) -> None:
        # Another thread may have held the lock at fork; the child's copy would stay locked.
        self._lock = threading.Lock()
