"""Helpers for testing code that tracks events: an in-memory provider and a pytest fixture.

In your tests::

    def test_checkout(fanout_events):
        checkout(cart)                       # your code calls fanout.track(...)
        assert fanout_events.names() == ["checkout.finished"]

The ``fanout_events`` fixture is registered automatically (``pytest11`` entry point): it
installs a default client in sync mode whose only provider keeps events in memory, and
restores the previous default client afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ._client import Client
from ._default import set_default_client
from ._events import Event

__all__ = ["InMemoryProvider", "capture_events", "fanout_events", "reset_default_client"]


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


def capture_events(**client_kwargs: Any) -> _Capture:
    """Context manager: a sync in-memory default client for the ``with`` block."""
    return _Capture(client_kwargs)


class _Capture:
    def __init__(self, client_kwargs: dict[str, Any]) -> None:
        self.provider = InMemoryProvider()
        self._kwargs = client_kwargs
        self._previous: Client | None = None
        self.client: Client | None = None

    def __enter__(self) -> InMemoryProvider:
        kwargs: dict[str, Any] = {
            "providers": [self.provider],
            "load_entry_points": False,
            "sync": True,
            "register_atexit": False,
            "environ": {},
        }
        kwargs.update(self._kwargs)
        self.client = Client(**kwargs)
        self._previous = set_default_client(self.client)
        return self.provider

    def __exit__(self, *exc: object) -> None:
        set_default_client(self._previous)
        if self.client is not None:
            self.client.shutdown(timeout=5)


def reset_default_client() -> None:
    """Shut down and forget the default client (structlog's ``reset_defaults`` for fanout)."""
    client = set_default_client(None)
    if client is not None:
        client.shutdown(timeout=1)


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:

    @pytest.fixture
    def fanout_events() -> Iterator[InMemoryProvider]:
        """The events your code tracked during the test, via the default client."""
        with capture_events() as provider:
            yield provider
