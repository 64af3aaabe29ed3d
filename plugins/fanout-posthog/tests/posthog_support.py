"""Helpers shared by the tests (a uniquely named module, so that several plugins' test
directories can run in one pytest session without their helpers colliding)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import fanout_posthog
from pytest_httpserver import HTTPServer
from werkzeug import Request

import fanout

#: Looks like a real project key; every secrecy test searches for it.
API_KEY = "phc_TESTsecretPROJECTkey0123456789abcdefXYZ"


def decode_body(request: Request) -> dict[str, Any]:
    """The JSON body of a request, gunzipped when it says it is gzip."""
    data = request.get_data()
    if request.headers.get("Content-Encoding") == "gzip":
        data = gzip.decompress(data)
    result: dict[str, Any] = json.loads(data)
    return result


def batch_requests(server: HTTPServer) -> list[Request]:
    return [req for req, _ in server.log if req.path == "/batch/"]


def base_url(server: HTTPServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def make_client(server: HTTPServer, *, settings: dict[str, Any] | None = None, **kwargs: Any):
    """A real fanout client whose only provider is ``posthog``, aimed at ``server``."""
    options: dict[str, Any] = {
        "providers": ["posthog"],
        "settings": {"posthog": {"api_key": API_KEY, "host": base_url(server), **(settings or {})}},
        "environ": {},
        "register_atexit": False,
        "load_entry_points": False,
        "plugins": [fanout_posthog],
        # Retries in tests should not idle; the backoff schedule itself is the core's.
        "delivery": {"posthog": {"retry_base": 0.05, "retry_cap": 0.2}},
    }
    options.update(kwargs)
    return fanout.Client(**options)
