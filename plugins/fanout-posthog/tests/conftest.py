"""Fixtures: the official SDK and a real fanout client aimed at one local server.

Servers come from pytest-httpserver's ``httpserver`` fixture (127.0.0.1; the plugin stops
it at the end of the session and ``clear()``s it after every test).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import posthog
import pytest
from posthog_support import API_KEY, make_client
from pytest_httpserver import HTTPServer

import fanout
from fanout.testing import server_url


@pytest.fixture
def server(httpserver: HTTPServer) -> HTTPServer:
    """The local PostHog stand-in: ``/batch/`` answers 200 ``{"status": 1}`` unless a test
    installs its own (oneshot or ordered) handlers first."""
    httpserver.expect_request("/batch/", method="POST").respond_with_json({"status": 1})
    return httpserver


@pytest.fixture
def client(server: HTTPServer) -> Iterator[fanout.Client]:
    c = make_client(server)
    try:
        yield c
    finally:
        c.shutdown(timeout=5)


@pytest.fixture
def sdk_factory(server: HTTPServer) -> Iterator[Callable[..., posthog.Posthog]]:
    """Official SDK clients in ``sync_mode`` (each call posts before it returns)."""
    made: list[posthog.Posthog] = []

    def make(**kwargs: Any) -> posthog.Posthog:
        options: dict[str, Any] = {"host": server_url(server), "sync_mode": True}
        options.update(kwargs)
        sdk = posthog.Posthog(API_KEY, **options)
        made.append(sdk)
        return sdk

    try:
        yield make
    finally:
        for sdk in made:
            sdk.shutdown()
