"""Shared helpers: a fanout client wired to the plugin in-process, and request decoding."""

from __future__ import annotations

import gzip
import json
from typing import Any

import fanout_rudderstack
from pytest_httpserver import HTTPServer
from werkzeug import Request

import fanout

#: Looks like a real write key; every secrecy test searches for it and its base64 form.
WRITE_KEY = "2Zq8TESTsecretRUDDERwriteKEY0123"


def decode_body(request: Request) -> dict[str, Any]:
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
    """A real fanout client whose only provider is ``rudderstack``, aimed at ``server``."""
    options: dict[str, Any] = {
        "providers": ["rudderstack"],
        "settings": {"rudderstack": {"write_key": WRITE_KEY, "data_plane_url": base_url(server)}},
        "environ": {},
        "register_atexit": False,
        "load_entry_points": False,
        "plugins": [fanout_rudderstack],
    }
    options.update(kwargs)
    return fanout.Client(**options)
