"""The page a request's events name (``path``, ``url``) is the one the client asked for,
under an ASGI server and a WSGI server alike.

Both servers run for real on 127.0.0.1 in this process: uvicorn (whose scope ``path``
holds ``root_path``, per the ASGI spec) and the standard library's ``wsgiref`` (whose
``PATH_INFO`` is the path's bytes read as Latin-1, per PEP 3333).
"""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from .conftest import stored

pytest.importorskip("uvicorn", reason="needs uvicorn (the collector extra)")

#: (what the client asks for, the path every event must name: what the browser's
#: ``location.pathname`` is, and its SDKs send): a plain path, paths with UTF-8 escapes
#: (``café``, ``日本``), escapes a browser makes of ASCII (a space, ``#``), an escape the
#: server decodes to a character a path may hold as it is (``%41`` is ``A``).
PATHS = [
    ("/items", "/items"),
    ("/caf%C3%A9", "/caf%C3%A9"),
    ("/%E6%97%A5%E6%9C%AC/x", "/%E6%97%A5%E6%9C%AC/x"),
    ("/a%20b%23c", "/a%20b%23c"),
    ("/%41b", "/Ab"),
]


def _get(port: int, target: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target, headers={"Host": "shop.example", "X-Fanout-Anonymous-Id": "v1"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _serve_asgi(app: Any, root_path: str) -> Iterator[int]:
    import uvicorn

    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="error", lifespan="off", root_path=root_path
    )
    server = uvicorn.Server(config)
    ready = threading.Event()
    ports: list[int] = []

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        ports.append(server.servers[0].sockets[0].getsockname()[1])
        ready.set()
        await task

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(20), "uvicorn did not start"
    try:
        yield ports[0]
    finally:
        server.should_exit = True
        thread.join(20)
        assert not thread.is_alive()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


def _serve_wsgi(app: Any) -> Iterator[int]:
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _asgi_app(client: Any) -> Callable[..., Any]:
    from fanout.integrations.asgi import FanoutMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        client.track("page.seen")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return FanoutMiddleware(app, client=client)


def _wsgi_app(client: Any) -> Callable[..., Any]:
    from fanout.integrations.wsgi import FanoutMiddleware

    def app(environ: Any, start_response: Any) -> list[bytes]:
        client.track("page.seen")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return FanoutMiddleware(app)


def _pages(collector: Any) -> list[tuple[str, str]]:
    return [(e["context"]["path"], e["context"]["url"]) for e in stored(collector)]


@pytest.mark.parametrize("root_path", ["", "/api"])
def test_uvicorn_root_path_is_named_once(collector, clients, root_path):
    """uvicorn ``--root-path /api`` behind a proxy that strips ``/api``: uvicorn gives the
    app ``path`` ``/api/items`` for ``/items`` (the ASGI spec: ``path`` holds
    ``root_path``); the middleware prepended it a second time (``/api/api/items``)."""
    client = clients(collector.url, collector.key)
    served = _serve_asgi(_asgi_app(client), root_path)
    port = next(served)
    try:
        assert [_get(port, "/items") for _ in range(3)] == [200] * 3
    finally:
        served.close()
    assert client.flush(timeout=10).ok
    page = (root_path + "/items", f"http://shop.example{root_path}/items")
    assert _pages(collector) == [page] * 3
    assert collector.store.count_events() == 3


def test_an_asgi_server_that_strips_root_path_from_path_is_read_whole(collector, clients):
    """A server or router that still gives ``path`` without ``root_path`` (the scope shape
    of uvicorn before 0.26): the page is ``root_path`` + ``path``, and a ``path`` that only
    begins with the same letters is not taken for one that holds it."""
    import httpx

    client = clients(collector.url, collector.key)
    inner = _asgi_app(client)

    async def strip(scope: Any, receive: Any, send: Any) -> None:
        scope = {**scope, "root_path": "/api", "path": scope["path"].removeprefix("/api")}
        await inner(scope, receive, send)

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=strip)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.example") as http:
            return [(await http.get(p)).status_code for p in ("/api/items", "/api/apix")]

    assert asyncio.run(run()) == [200, 200]
    assert client.flush(timeout=10).ok
    assert _pages(collector) == [
        ("/api/items", "http://shop.example/api/items"),
        ("/api/apix", "http://shop.example/api/apix"),
    ]
    assert collector.store.count_events() == 2


@pytest.mark.parametrize(("target", "path"), PATHS)
def test_asgi_and_wsgi_servers_name_the_same_page(collector, clients, target, path):
    """The same request to uvicorn and to wsgiref names the same page, as the browser names
    it: a WSGI path is its bytes read as Latin-1 (it was ``/cafÃ©``), an ASGI path decoded
    text (it was ``/café``), and ``/a b`` was no URL."""
    client = clients(collector.url, collector.key)
    statuses = []
    for served in (_serve_asgi(_asgi_app(client), ""), _serve_wsgi(_wsgi_app(client))):
        port = next(served)
        try:
            statuses += [_get(port, target), _get(port, target)]  # a miss, then kept
        finally:
            served.close()
    assert statuses == [200] * 4
    assert client.flush(timeout=10).ok
    page = (path, f"http://shop.example{path}")
    assert _pages(collector) == [page] * 4
    assert collector.store.count_events() == 4


def test_a_wsgi_path_that_is_not_utf8_is_kept_as_given(collector, clients):
    """``%E9`` alone is not UTF-8: the path keeps its escape, not dropped and not failing
    the request."""
    client = clients(collector.url, collector.key)
    served = _serve_wsgi(_wsgi_app(client))
    port = next(served)
    try:
        assert _get(port, "/caf%E9") == 200
    finally:
        served.close()
    assert client.flush(timeout=10).ok
    assert _pages(collector) == [("/caf%E9", "http://shop.example/caf%E9")]
    assert collector.store.count_events() == 1
