"""fanout's middleware inside one another for the same request: the inner one's context
encloses the outer one's, and what middleware between them entered.

Each finds the outer one's context where that one left it (the ASGI scope or WSGI
environ under ``"fanout.context"``; for a WSGI app mounted in an ASGI app, whose environ
is new, the request still open in the context it runs in). Each request tracks one event
into the reference collector; the tests count what it stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import Iterable
from typing import Any

import httpx
from asgiref.wsgi import WsgiToAsgi

import fanout
from fanout.integrations.asgi import FanoutMiddleware
from fanout.integrations.wsgi import FanoutMiddleware as WSGIFanoutMiddleware

from .conftest import stored

VISITOR = {"X-Fanout-Anonymous-Id": "visitor-1", "X-Fanout-Session-Id": "session-1"}


async def track_app(scope: Any, receive: Any, send: Any) -> None:
    fanout.track("page.viewed", properties={"where": "asgi"})
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def wsgi_track_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    fanout.track("page.viewed", properties={"where": "wsgi"})
    start_response("204 No Content", [])
    return [b""]


class Auth:
    """An ASGI middleware that names the request's person through ``fanout.context``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        with fanout.context(person_id="user-1"):
            await self.app(scope, receive, send)


def wsgi_auth(app: Any) -> Any:
    def auth(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with fanout.context(person_id="user-1"):
            return list(app(environ, start_response))

    return auth


def _get(app: Any, path: str = "/page") -> int:
    async def main() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as http:
            return (await http.get(path, headers=VISITOR)).status_code

    return asyncio.run(main())


def _check(collector: Any, client: fanout.Client, where: str) -> None:
    assert client.flush(timeout=10).ok
    events = stored(collector)
    assert len(events) == 1
    (event,) = events
    assert event["properties"] == {"where": where}
    assert (event["person_id"], event["anonymous_id"]) == ("user-1", "visitor-1")
    assert event["context"]["session_id"] == "session-1"
    assert event["context"]["path"] == "/page"


def test_asgi_inside_asgi_encloses_the_outer_request_and_what_lies_between(
    collector, default_client
):
    app = FanoutMiddleware(Auth(FanoutMiddleware(track_app)))
    assert _get(app) == 204
    _check(collector, default_client, "asgi")


def test_a_wsgi_app_mounted_in_an_asgi_app_encloses_the_asgi_request(
    collector, default_client
):
    """asgiref's ``WsgiToAsgi`` gives the WSGI app an environ of its own (no
    ``"fanout.context"``) and runs it in a thread with the request task's context."""
    app = FanoutMiddleware(
        WsgiToAsgi(WSGIFanoutMiddleware(wsgi_track_app)), person_id=lambda scope: "user-1"
    )
    assert _get(app) == 204
    _check(collector, default_client, "wsgi")


def test_wsgi_inside_wsgi_encloses_the_outer_request_and_what_lies_between(
    collector, default_client
):
    app = WSGIFanoutMiddleware(wsgi_auth(WSGIFanoutMiddleware(wsgi_track_app)))
    environ = {
        "REQUEST_METHOD": "GET", "wsgi.url_scheme": "http", "PATH_INFO": "/page",
        "SCRIPT_NAME": "", "QUERY_STRING": "", "REMOTE_ADDR": "192.0.2.9",
        "SERVER_NAME": "shop.test", "SERVER_PORT": "80",
        "HTTP_X_FANOUT_ANONYMOUS_ID": "visitor-1", "HTTP_X_FANOUT_SESSION_ID": "session-1",
    }
    statuses: list[str] = []
    body = b"".join(app(environ, lambda status, headers: statuses.append(status)))
    assert (statuses, body) == (["204 No Content"], b"")
    _check(collector, default_client, "wsgi")


def test_a_request_leaves_no_reference_cycle_behind(collector, default_client):
    """The ASGI middleware leaves its context on the scope for a middleware inside it,
    and the context holds the scope: the key is set back on the way out, so a server's
    scope goes when its request does, without waiting for the garbage collector."""

    class Scope(dict[str, Any]):  # a dict that can be weakly referenced
        pass

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    app = FanoutMiddleware(track_app)
    scopes = [
        Scope(type="http", method="GET", path="/page", query_string=b"", scheme="http",
              headers=[(b"host", b"shop.test"), (b"x-fanout-anonymous-id", b"visitor-1")],
              client=("192.0.2.9", 5000), server=("shop.test", 80))
        for _ in range(100)
    ]
    refs = [weakref.ref(scope) for scope in scopes]
    gc.disable()
    try:
        while scopes:
            request = app(scopes.pop(), receive, send)
            with contextlib.suppress(StopIteration):
                request.send(None)  # nothing in it waits: one step runs it all
            del request
        alive = sum(ref() is not None for ref in refs)
    finally:
        gc.enable()
    assert alive == 0
    assert default_client.flush(timeout=10).ok
    assert len(stored(collector)) == 100
