"""Test helpers: a fanout client wired to the plugin in-process, and request decoding.

Servers come from pytest-httpserver's ``httpserver`` fixture (127.0.0.1, stopped at the end
of the session, cleared after every test).
"""

from __future__ import annotations

import json
from typing import Any

import fanout_amplitude
from pytest_httpserver import HTTPServer
from werkzeug import Request

import fanout

#: Looks like a real API key; every secrecy test searches for it.
API_KEY = "amp_Zq8TESTsecretAPIkey0123456789ab"
PATH = "/2/httpapi"


def decode_body(request: Request) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(request.get_data())
    return result


def api_requests(server: HTTPServer, path: str = PATH) -> list[Request]:
    return [req for req, _ in server.log if req.path == path]


def endpoint(server: HTTPServer, path: str = PATH) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def make_client(
    server: HTTPServer, settings: dict[str, Any] | None = None, **kwargs: Any
) -> fanout.Client:
    """A real fanout client whose only provider is ``amplitude``, aimed at ``server``."""
    options: dict[str, Any] = {
        "providers": ["amplitude"],
        "settings": {
            "amplitude": {"api_key": API_KEY, "server_url": endpoint(server), **(settings or {})}
        },
        "environ": {},
        "register_atexit": False,
        "load_entry_points": False,
        "plugins": [fanout_amplitude],
    }
    options.update(kwargs)
    return fanout.Client(**options)
