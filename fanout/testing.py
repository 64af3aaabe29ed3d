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

from collections.abc import Iterator
from typing import Any

from ._client import Client
from ._default import set_default_client
from .providers.memory import InMemoryProvider

__all__ = ["InMemoryProvider", "capture_events", "fanout_events", "reset_default_client"]


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
