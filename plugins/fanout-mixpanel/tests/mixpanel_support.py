"""Helpers shared by the fanout-mixpanel tests: clients aimed at a local server, and request
decoding that turns what either side sent into comparable records.

A module with a plugin-specific name rather than imports from ``conftest``: several plugins'
test folders may run in one pytest session, and each has its own ``conftest``.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any
from urllib.parse import parse_qs

import fanout_mixpanel
from mixpanel import BufferedConsumer, Mixpanel  # type: ignore[import-untyped]
from pytest_httpserver import HTTPServer
from werkzeug import Request

import fanout

#: Look like real credentials; every secrecy test searches for them (and base64 forms).
TOKEN = "mp_tok_9f3TESTsecretTOKENvalue0123"
API_SECRET = "mp_sec_7c1TESTsecretAPIsecret4567"
ENDPOINTS = ("/track", "/engage", "/groups", "/import")
OK = {"status": 1, "error": None}


def base_url(server: HTTPServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def serve_ok(server: HTTPServer) -> HTTPServer:
    """Every Mixpanel endpoint answers as Mixpanel does on success (verbose=1)."""
    for path in ENDPOINTS:
        server.expect_request(path, method="POST").respond_with_json(
            {**OK, "code": 200, "num_records_imported": 1}
        )
    return server


def make_client(server: HTTPServer, **kwargs: Any) -> fanout.Client:
    """A real fanout client whose only provider is ``mixpanel``, aimed at ``server``."""
    settings: dict[str, Any] = {"token": TOKEN, "api_host": base_url(server)}
    settings.update(kwargs.pop("mixpanel", {}))
    options: dict[str, Any] = {
        "providers": ["mixpanel"],
        "settings": {"mixpanel": settings},
        "environ": {},
        "register_atexit": False,
        "load_entry_points": False,
        "plugins": [fanout_mixpanel],
    }
    options.update(kwargs)
    return fanout.Client(**options)


def sdk_consumer(server: HTTPServer, **kwargs: Any) -> BufferedConsumer:
    """The SDK's batching consumer aimed at ``server``.

    Explicit URLs, because ``api_host`` cannot point at a local server: the SDK builds
    ``f"https://{api_host}/track"``, so ``api_host="http://127.0.0.1:…"`` gives a broken URL.
    """
    base = base_url(server)
    return BufferedConsumer(
        events_url=f"{base}/track",
        people_url=f"{base}/engage",
        groups_url=f"{base}/groups",
        import_url=f"{base}/import",
        **kwargs,
    )


def pinned_sdk(
    consumer: Any, *, now: float, insert_id: str | None = None
) -> Mixpanel:
    """The official client with its two overridable clocks pinned (``_now`` and
    ``_make_insert_id`` are the hooks the SDK's own tests override), so that both sides
    describe the same moment and the same dedupe key."""

    class Pinned(Mixpanel):  # type: ignore[misc]
        def _now(self) -> float:
            return now

        def _make_insert_id(self) -> str:
            return insert_id if insert_id is not None else super()._make_insert_id()

    return Pinned(TOKEN, consumer=consumer)


def requests_to(server: HTTPServer, path: str) -> list[Request]:
    return [req for req, _ in server.log if req.path == path]


def basic_auth(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    assert scheme == "Basic", header
    user, _, password = base64.b64decode(value).decode().partition(":")
    return user, password


def raw_body(request: Request) -> bytes:
    data = request.get_data()
    if request.headers.get("Content-Encoding") == "gzip":
        data = gzip.decompress(data)
    return data


def decode(request: Request) -> dict[str, Any]:
    """Method, path, auth, the non-data parameters, and the records, whatever the encoding
    (the SDK's form ``data=`` or /import's JSON body)."""
    body = raw_body(request)
    params: dict[str, str] = {k: v for k, v in request.args.items()}
    content_type = request.headers.get("Content-Type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = {k: v[0] for k, v in parse_qs(body.decode("ascii"), strict_parsing=True).items()}
        records: Any = json.loads(form.pop("data"))
        params.update(form)
        encoding = "form"
    else:
        records = json.loads(body)
        encoding = "json"
    if isinstance(records, dict):  # the SDK's unbuffered Consumer sends one object
        records = [records]
    return {
        "method": request.method,
        "path": request.path,
        "auth": basic_auth(request),
        "params": params,
        "encoding": encoding,
        "gzip": request.headers.get("Content-Encoding") == "gzip",
        "records": records,
    }


def records_at(server: HTTPServer, path: str) -> list[dict[str, Any]]:
    return [r for req in requests_to(server, path) for r in decode(req)["records"]]
