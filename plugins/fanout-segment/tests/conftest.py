"""Fixtures. Servers come from pytest-httpserver's ``httpserver`` fixture (127.0.0.1,
stopped at the end of the session, cleared after every test); helpers live in
``segment_support`` so that they never collide with another test folder's ``conftest``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer
from segment_support import make_client

import fanout


@pytest.fixture
def client(httpserver: HTTPServer) -> Iterator[fanout.Client]:
    c = make_client(httpserver)
    try:
        yield c
    finally:
        c.shutdown(timeout=5)
