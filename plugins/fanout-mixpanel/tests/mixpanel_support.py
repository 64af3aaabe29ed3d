"""Helpers shared by the fanout-mixpanel tests: clients aimed at a local server, and request
decoding that turns what either side sent into comparable records.

The harness (client + local server) and the generic decoding (gzip, form or JSON body,
basic auth) come from :mod:`fanout.testing`; what is Mixpanel's lives here. A module with
a plugin-specific name rather than imports from ``conftest``: several plugins' test folders
may run in one pytest session, and each has its own ``conftest``.
"""

from __future__ import annotations

import json
from typing import Any

import fanout_mixpanel
from mixpanel import BufferedConsumer, Mixpanel  # type: ignore[import-untyped]
from pytest_httpserver import HTTPServer
from werkzeug import Request

import fanout
from fanout.testing import (
    ProviderHarness,
    RecordedRequest,
    decode_request,
    recorded,
    server_url,
)

#: Look like real credentials; every secrecy test searches for them (and base64 forms).
TOKEN = "mp_tok_9f3TESTsecretTOKENvalue0123"
API_SECRET = "mp_sec_7c1TESTsecretAPIsecret4567"
ENDPOINTS = ("/track", "/engage", "/groups", "/import")
OK = {"status": 1, "error": None}


def serve_ok(server: HTTPServer) -> HTTPServer:
    """Every Mixpanel endpoint answers as Mixpanel does on success (verbose=1)."""
    for path in ENDPOINTS:
        server.expect_request(path, method="POST").respond_with_json(
            {**OK, "code": 200, "num_records_imported": 1}
        )
    return server


def harness(server: HTTPServer, **kwargs: Any) -> ProviderHarness:
    """The ``mixpanel`` provider in a real client, aimed at ``server``."""
    return ProviderHarness(
        server,
        "mixpanel",
        plugins=[fanout_mixpanel],
        settings={"token": TOKEN},
        url_setting="api_host",
        **kwargs,
    )


def make_client(server: HTTPServer, **kwargs: Any) -> fanout.Client:
    """A real fanout client whose only provider is ``mixpanel``, aimed at ``server``;
    ``mixpanel={...}`` adds or overrides its settings."""
    return harness(server).client(settings=kwargs.pop("mixpanel", {}), **kwargs)


def sdk_consumer(server: HTTPServer, **kwargs: Any) -> BufferedConsumer:
    """The SDK's batching consumer aimed at ``server``.

    Explicit URLs, because ``api_host`` cannot point at a local server: the SDK builds
    ``f"https://{api_host}/track"``, so ``api_host="http://127.0.0.1:…"`` gives a broken URL.
    """
    base = server_url(server)
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


def requests_to(server: HTTPServer, path: str) -> list[RecordedRequest]:
    return recorded(server, path)


def decode(request: RecordedRequest | Request) -> dict[str, Any]:
    """Method, path, auth, the non-data parameters, and the records, whatever the encoding
    (the SDK's form ``data=`` or /import's JSON body)."""
    if not isinstance(request, RecordedRequest):
        request = decode_request(request)  # a werkzeug request, inside a handler
    params = dict(request.params)
    body = request.data()
    if isinstance(body, dict) and request.content_type == "application/x-www-form-urlencoded":
        records: Any = json.loads(body.pop("data"))
        params.update(body)
        encoding = "form"
    else:
        records = body
        encoding = "json"
    if isinstance(records, dict):  # the SDK's unbuffered Consumer sends one object
        records = [records]
    return {
        "method": request.method,
        "path": request.path,
        "auth": request.basic_auth,
        "params": params,
        "encoding": encoding,
        "gzip": request.gzip,
        "records": records,
    }


def records_at(server: HTTPServer, path: str) -> list[dict[str, Any]]:
    return [r for req in requests_to(server, path) for r in decode(req)["records"]]
