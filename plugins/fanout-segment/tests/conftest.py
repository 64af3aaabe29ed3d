"""Shared helpers: a fanout client wired to the plugin in-process, and request decoding.

Servers come from pytest-httpserver's ``httpserver`` fixture (127.0.0.1, stopped at the end
of the session, cleared after every test).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import fanout_segment
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request

import fanout

#: Looks like a real write key; every secrecy test searches for it and its base64 form.
WRITE_KEY = "wk_Zq8TESTsecretWRITEkey0123456789"


def decode_body(request: Request) -> dict[str, Any]:
    """The JSON body of a request, gunzipped when it says it is gzip."""
    data = request.get_data()
    if request.headers.get("Content-Encoding") == "gzip":
        data = gzip.decompress(data)
    result: dict[str, Any] = json.loads(data)
    return result


def batch_requests(server: HTTPServer) -> list[Request]:
    return [req for req, _ in server.log if req.path == "/v1/batch"]


def base_url(server: HTTPServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def make_client(server: HTTPServer, **kwargs: Any) -> fanout.Client:
    """A real fanout client whose only provider is ``segment``, aimed at ``server``."""
    settings = {"write_key": WRITE_KEY, "host": base_url(server)}
    options: dict[str, Any] = {
        "providers": ["segment"],
        "settings": {"segment": settings},
        "environ": {},
        "register_atexit": False,
        "load_entry_points": False,
        "plugins": [fanout_segment],
    }
    options.update(kwargs)
    return fanout.Client(**options)


@pytest.fixture
def client(httpserver: HTTPServer) -> Iterator[fanout.Client]:
    c = make_client(httpserver)
    try:
        yield c
    finally:
        c.shutdown(timeout=5)
