"""The ``memory`` provider: keeps every batch it is sent, for tests and the demo.

It lives with the other built-in providers (not in :mod:`fanout.testing`) so that the
provider registry never imports the test helpers, which import the client: that was an
import cycle (``_client → _plugins → providers → testing → _client``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from .._events import Event

__all__ = ["InMemoryProvider"]


class InMemoryProvider:
    """Keeps every batch it is sent. Thread-safe; ``name`` defaults to ``memory``."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._lock = threading.Lock()
        self.batches: list[list[Event]] = []
        self.closed = False

    def send(self, batch: Sequence[Event]) -> None:
        with self._lock:
            self.batches.append(list(batch))

    def close(self) -> None:
        self.closed = True

    def after_fork(self) -> None:
        """A forked child starts with no events: the parent's belong to the parent."""
        self._lock = threading.Lock()
        self.batches = []

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return [e for batch in self.batches for e in batch]

    def names(self) -> list[str | None]:
        return [e.name for e in self.events]

    def of_kind(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def clear(self) -> None:
        with self._lock:
            self.batches.clear()
