"""Shared fixtures: clients that are always shut down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import fanout
from fanout.testing import InMemoryProvider


@pytest.fixture
def make_client() -> Iterator[Callable[..., fanout.Client]]:
    """Build clients with no environment and no entry points; shut them all down after."""
    clients: list[fanout.Client] = []

    def make(**kwargs: Any) -> fanout.Client:
        kwargs.setdefault("environ", {})
        kwargs.setdefault("load_entry_points", False)
        kwargs.setdefault("register_atexit", False)
        client = fanout.Client(**kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        for channel in client._channels:
            release = getattr(channel.provider, "release", None)
            if release is not None:
                release.set()
        client.shutdown(timeout=2)


@pytest.fixture
def memory() -> InMemoryProvider:
    return InMemoryProvider()
