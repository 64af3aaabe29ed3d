"""The Django middleware, sync and async: under Django's test clients and real servers.

The authenticated user's primary key becomes ``person_id``; the browser's PostHog cookie
gives the anonymous and session ids.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

import fanout
from fanout import _context

from .conftest import PYTHON, app_env, free_port, stored

APPS = Path(__file__).parent / "apps"
DISTINCT_ID = "0190f5a2-7d1e-7c3b-9a4f-2b1c0d9e8f7a"
SESSION_ID = "0190f5a2-7d1e-7c3b-9a4f-aaaaaaaaaaaa"


def posthog_cookie() -> tuple[str, str]:
    now_ms = int(time.time() * 1000)
    value = {
        "distinct_id": DISTINCT_ID,
        "$device_id": DISTINCT_ID,
        "$sesid": [now_ms, SESSION_ID, now_ms - 1000],
        "$user_state": "anonymous",
    }
    return "ph_phc_testtoken_posthog", quote(json.dumps(value, separators=(",", ":")))


@pytest.fixture(scope="module")
def django_project(tmp_path_factory):
    db = tmp_path_factory.mktemp("django") / "db.sqlite3"
    sys.path.insert(0, str(APPS))
    os.environ["DJANGO_SETTINGS_MODULE"] = "django_site"
    os.environ["DJANGO_TEST_DB"] = str(db)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    yield
    sys.path.remove(str(APPS))
    del os.environ["DJANGO_SETTINGS_MODULE"], os.environ["DJANGO_TEST_DB"]


def test_sync_middleware_under_the_test_client(django_project, default_client, collector):
    from django.test import Client

    http = Client()
    pk = http.get("/login", {"user": "alice"}).json()["pk"]
    name, value = posthog_cookie()
    http.cookies[name] = value
    assert http.get("/track", {"i": 1}).status_code == 200
    anon = Client()  # a first-time visitor: no cookie, no user
    assert anon.get("/track", {"i": 2}).status_code == 200
    assert default_client.flush(timeout=10).ok
    logged_in, first_visit = stored(collector)
    assert logged_in["person_id"] == str(pk)
    assert logged_in["anonymous_id"] == DISTINCT_ID
    assert logged_in["context"]["session_id"] == SESSION_ID
    assert logged_in["context"]["path"] == "/track"
    assert first_visit.get("person_id") is None and first_visit["anonymous_id"]


def test_a_returning_visitor_is_read_once_and_kept(
    django_project, default_client, collector, monkeypatch
):
    """The Django middleware keeps its readings like the WSGI and ASGI ones: a visitor whose
    PostHog cookie has a new activity time on each request is read in full once per
    ``Cookie`` header (twice: logging in adds Django's session cookie to it), and every
    event carries its ids (and, once logged in, its person)."""
    from django.test import Client

    from fanout.integrations import _request

    reads: list[object] = []
    real = _request.read_request_ids_from

    def counted(*args: object, **kwargs: object) -> object:
        reads.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_request, "read_request_ids_from", counted)
    http = Client()
    name, value = posthog_cookie()
    now_ms = int(time.time() * 1000)
    for i in range(4):
        if i == 2:
            pk = http.get("/login", {"user": "carol"}).json()["pk"]
        http.cookies[name] = value.replace(
            f"%5B{value.split('%5B')[1].split('%2C')[0]}", f"%5B{now_ms + i * 1000}"
        )
        assert http.get("/track", {"i": i}).status_code == 200
    assert default_client.flush(timeout=10).ok  # (read off the request's thread: by now)
    assert len(reads) == 2  # requests 0 and 2: 1 and 3 recalled
    events = sorted(stored(collector), key=lambda e: e["properties"]["i"])
    assert [e["properties"]["i"] for e in events] == [0, 1, 2, 3]  # each stored once
    assert {e["anonymous_id"] for e in events} == {DISTINCT_ID}
    assert {e["context"]["session_id"] for e in events} == {SESSION_ID}
    assert [e.get("person_id") for e in events] == [None, None, str(pk), str(pk)]


def test_async_middleware_under_the_async_test_client(django_project, default_client, collector):
    from django.test import AsyncClient

    async def main() -> int:
        http = AsyncClient()
        pk = (await http.get("/login", {"user": "bob"})).json()["pk"]
        name, value = posthog_cookie()
        http.cookies[name] = value
        assert (await http.get("/atrack", {"i": 1})).status_code == 200
        assert (await http.get("/track", {"i": 2})).status_code == 200
        return pk

    pk = asyncio.run(main())
    assert default_client.flush(timeout=10).ok
    events = stored(collector)
    assert [e["properties"]["mode"] for e in events] == ["async", "sync"]
    assert {e["person_id"] for e in events} == {str(pk)}
    assert {e["anonymous_id"] for e in events} == {DISTINCT_ID}


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uvicorn-asgi", "gunicorn-wsgi"])
def test_real_server_sigterm_after_last_response_loses_nothing(collector, tmp_path, server):
    env = app_env(
        collector,
        FANOUT_FLUSH_INTERVAL="30",
        FANOUT_SHUTDOWN_TIMEOUT="20",
        DJANGO_SETTINGS_MODULE="django_site",
        DJANGO_TEST_DB=str(tmp_path / "db.sqlite3"),
    )
    subprocess.run([PYTHON, "-m", "django", "migrate", "-v", "0"], env=env, check=True, timeout=120)
    port = free_port()
    argv = {
        "uvicorn-asgi": [
            PYTHON,
            "-m",
            "uvicorn",
            "django_servers:asgi",
            "--workers",
            "2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        "gunicorn-wsgi": [
            PYTHON,
            "-m",
            "gunicorn",
            "django_servers:wsgi",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
        ],
    }[server]
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.2)
            name, value = posthog_cookie()
            with httpx.Client(base_url=url, timeout=10, cookies={name: value}) as http:
                pk = http.get("/login", params={"user": "carol"}).json()["pk"]
                ids = [
                    http.get("/track" if n % 2 else "/atrack", params={"i": n}).json()["event_id"]
                    for n in range(100)
                ]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert len(set(ids)) == 100  # sent
    events = stored(collector)
    assert sorted(e["event_id"] for e in events) == sorted(ids), log.read_text()[-3000:]
    assert {e["person_id"] for e in events} == {str(pk)}
    assert {e["anonymous_id"] for e in events} == {DISTINCT_ID}


def test_inside_the_asgi_middleware_it_encloses_the_asgi_request(
    django_project, default_client, collector
):
    """Django's middleware inside fanout's ASGI middleware (which answers the lifespan
    for Django's ASGI handler) finds the ASGI one's context on ``request.scope`` and
    encloses it: the person its hook names reaches both views' events."""
    from django.core.asgi import get_asgi_application

    from fanout.integrations.asgi import FanoutMiddleware

    app = FanoutMiddleware(get_asgi_application(), person_id=lambda scope: "user-1")
    headers = {"X-Fanout-Anonymous-Id": "visitor-1"}

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as h:
            return [
                (await h.get(path, params={"i": i}, headers=headers)).status_code
                for i, path in enumerate(["/atrack", "/track"])
            ]

    assert asyncio.run(main()) == [200, 200]
    assert default_client.flush(timeout=10).ok
    events = stored(collector)
    assert [e["properties"]["mode"] for e in events] == ["async", "sync"]
    assert [(e["person_id"], e["anonymous_id"]) for e in events] == [("user-1", "visitor-1")] * 2


def test_under_asgi_the_request_is_read_from_its_scope(django_project, default_client, collector):
    """Django's ASGI request keeps no ``wsgi.url_scheme`` in ``request.META`` (and its
    ``PATH_INFO`` is decoded text, not WSGI's Latin-1): read from ``request.scope`` as
    the ASGI middleware reads it, an https request's page was named ``http://``."""
    from django.core.asgi import get_asgi_application

    app = get_asgi_application()
    headers = {"X-Fanout-Anonymous-Id": "visitor-1", "Referer": "https://news.example/a"}

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="https://shop.example") as h:
            return [(await h.get(p, params={"i": 1}, headers=headers)).status_code
                    for p in ("/atrack", "/track")]

    assert asyncio.run(main()) == [200, 200]
    assert default_client.flush(timeout=10).ok
    events = stored(collector)
    assert [e["properties"]["mode"] for e in events] == ["async", "sync"]
    for event in events:
        context = event["context"]
        assert event["anonymous_id"] == "visitor-1"
        assert context["url"] == f"https://shop.example{context['path']}?i=1"
        assert context["referrer"] == "https://news.example/a"
    assert [e["context"]["path"] for e in events] == ["/atrack", "/track"]
    assert collector.store.count_events() == 2


# Streamed bodies: the server iterates a StreamingHttpResponse after the middleware returned.

#: For each streamed body: whether its request was live while the body ran, and a copy of
#: its context there (what a task started by the body holds).
BODIES: list[tuple[bool, contextvars.Context]] = []


def _seen_by_body() -> None:
    BODIES.append((_context.live_request() is not None, contextvars.copy_context()))


def stream_view(request):  # type: ignore[no-untyped-def]
    from django.http import StreamingHttpResponse

    fanout.track("stream.opened", properties={"mode": "sync"})

    def body():  # type: ignore[no-untyped-def]
        _seen_by_body()
        for i in range(2):
            fanout.track("chunk.sent", properties={"i": i, "mode": "sync"})
            yield f"{i}\n"

    return StreamingHttpResponse(body())


async def astream_view(request):  # type: ignore[no-untyped-def]
    from django.http import StreamingHttpResponse

    fanout.track("stream.opened", properties={"mode": "async"})

    async def body():  # type: ignore[no-untyped-def]
        _seen_by_body()
        for i in range(2):
            await asyncio.sleep(0.001)  # the body's task waits on a future mid-step
            fanout.track("chunk.sent", properties={"i": i, "mode": "async"})
            yield f"{i}\n"

    return StreamingHttpResponse(body())


async def hang_view(request):  # type: ignore[no-untyped-def]
    """Streams one chunk, then waits for more until the client goes."""
    from django.http import StreamingHttpResponse

    async def body():  # type: ignore[no-untyped-def]
        _seen_by_body()
        fanout.track("chunk.sent", properties={"i": 0, "mode": "async"})
        yield "0\n"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            fanout.track("stream.aborted")
            raise

    return StreamingHttpResponse(body())


def closing_stream_view(request):  # type: ignore[no-untyped-def]
    """Two chunks from a generator that tracks in its ``finally``: run by the body's
    end, or by ``response.close()`` when the client is gone after the first."""
    from django.http import StreamingHttpResponse

    def body():  # type: ignore[no-untyped-def]
        _seen_by_body()
        try:
            for i in range(2):
                fanout.track("chunk.sent", properties={"i": i, "mode": "sync"})
                yield f"{i}\n"
        finally:
            fanout.track("stream.closed")

    return StreamingHttpResponse(body())


async def aclosing_stream_view(request):  # type: ignore[no-untyped-def]
    """:func:`closing_stream_view`'s async twin: its ``finally`` runs when the generator
    is closed, by whoever closes it."""
    from django.http import StreamingHttpResponse

    async def body():  # type: ignore[no-untyped-def]
        _seen_by_body()
        try:
            for i in range(2):
                fanout.track("chunk.sent", properties={"i": i, "mode": "async"})
                yield f"{i}\n"
        finally:
            fanout.track("stream.closed")

    return StreamingHttpResponse(body())


async def collect_view(request):  # type: ignore[no-untyped-def]
    """A page during which the cyclic garbage collector runs, as it may in any request."""
    from django.http import HttpResponse

    gc.collect()
    fanout.track("page.viewed")
    return HttpResponse(b"ok")


@pytest.fixture
def stream_urls(django_project):
    """``django_site``'s login, and the streaming views above."""
    import types

    import django_site
    from django.test import override_settings
    from django.urls import path

    urls = types.ModuleType("stream_urls")
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("login", django_site.login_view),
        path("stream", stream_view),
        path("astream", astream_view),
        path("hang", hang_view),
        path("closing", closing_stream_view),
        path("aclosing", aclosing_stream_view),
        path("collect", collect_view),
    ]
    BODIES.clear()
    with override_settings(ROOT_URLCONF=urls):
        yield
    BODIES.clear()


def _check_bodies_ended(count: int) -> None:
    """Each body ran inside its live request, which was over once the body was done: no
    longer taken for an enclosing request where the body's context was copied."""
    assert [live for live, _ in BODIES] == [True] * count
    assert [copied.run(_context.live_request) for _, copied in BODIES] == [None] * count


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_streamed_body_is_tracked_in_its_request_context(
    stream_urls, default_client, collector, mode
):
    """A sync generator under Django's ``Client`` (as under WSGI), an async one under
    ``AsyncClient`` (as under ASGI): each chunk's event carries the request's person, ids
    and page; a first-time visitor's view and body share the one id generated for it."""
    from django.test import AsyncClient, Client

    name, value = posthog_cookie()
    path = "/stream" if mode == "sync" else "/astream"
    if mode == "sync":
        http, first_visit = Client(), Client()
        pk = http.get("/login", {"user": "dora"}).json()["pk"]
        http.cookies[name] = value
        bodies = [b"".join(c.get(path).streaming_content) for c in (http, first_visit)]
    else:

        async def main() -> tuple[int, list[bytes]]:
            http, first_visit = AsyncClient(), AsyncClient()
            pk = (await http.get("/login", {"user": "dora"})).json()["pk"]
            http.cookies[name] = value
            bodies = []
            for client in (http, first_visit):
                response = await client.get(path)
                bodies.append(b"".join([chunk async for chunk in response.streaming_content]))
            return pk, bodies

        pk, bodies = asyncio.run(main())
    assert bodies == [b"0\n1\n"] * 2
    assert default_client.flush(timeout=10).ok
    events = stored(collector)
    assert [(e["name"], e["properties"]) for e in events] == [
        ("stream.opened", {"mode": mode}),
        ("chunk.sent", {"i": 0, "mode": mode}),
        ("chunk.sent", {"i": 1, "mode": mode}),
    ] * 2
    logged_in, first_visit = events[:3], events[3:]
    for e in logged_in:
        assert (e["person_id"], e["anonymous_id"]) == (str(pk), DISTINCT_ID)
        assert (e["context"]["session_id"], e["context"]["path"]) == (SESSION_ID, path)
    generated = {e["anonymous_id"] for e in first_visit}
    assert len(generated) == 1 and generated != {DISTINCT_ID}
    assert {e.get("person_id") for e in first_visit} == {None}
    assert {e["context"]["path"] for e in first_visit} == {path}
    _check_bodies_ended(2)


def test_under_the_wsgi_handler_a_body_read_or_closed_early_ends_its_request(
    stream_urls, default_client, collector
):
    """Django's WSGI application called as gunicorn's sync worker calls it, one request
    after another in one thread: a body read to its end, one closed after its first chunk
    (the client gone), and a first-time visitor's next: each body's events carry its own
    request's ids, and nothing of a request reaches the next."""
    from wsgiref.util import setup_testing_defaults

    from django.core.wsgi import get_wsgi_application

    app = get_wsgi_application()

    def call(**headers: str):  # type: ignore[no-untyped-def]
        environ: dict[str, object] = {"PATH_INFO": "/stream", **headers}
        setup_testing_defaults(environ)
        return app(environ, lambda status, headers, exc_info=None: None)

    body = call(HTTP_X_FANOUT_ANONYMOUS_ID="visitor-1")
    assert b"".join(body) == b"0\n1\n"
    body.close()
    body = call(HTTP_X_FANOUT_ANONYMOUS_ID="visitor-2")
    assert next(iter(body)) == b"0\n"
    body.close()
    assert _context.current() is None  # the server's thread, between its requests
    body = call()
    assert b"".join(body) == b"0\n1\n"
    body.close()
    assert default_client.flush(timeout=10).ok
    events = stored(collector)
    assert [(e["name"], e["properties"].get("i"), e["anonymous_id"]) for e in events] == [
        ("stream.opened", None, "visitor-1"),
        ("chunk.sent", 0, "visitor-1"),
        ("chunk.sent", 1, "visitor-1"),
        ("stream.opened", None, "visitor-2"),
        ("chunk.sent", 0, "visitor-2"),
        *[
            (name, i, events[-1]["anonymous_id"])
            for name, i in [("stream.opened", None), ("chunk.sent", 0), ("chunk.sent", 1)]
        ],
    ]
    assert events[-1]["anonymous_id"] not in ("visitor-1", "visitor-2")
    assert {e.get("person_id") for e in events} == {None}
    _check_bodies_ended(3)


def test_under_the_asgi_handler_a_client_gone_mid_body_ends_its_request(
    stream_urls, default_client, collector
):
    """Django's ASGI application, as uvicorn calls it: the client disconnects while the
    async body waits for its next chunk. Django cancels the request's task; the body's
    handler of that cancellation still tracks in the request's context."""
    from django.core.asgi import get_asgi_application

    app = get_asgi_application()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/hang",
        "raw_path": b"/hang",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"shop.test"), (b"x-fanout-anonymous-id", b"visitor-1")],
        "client": ("192.0.2.7", 50000),
        "server": ("shop.test", 80),
    }

    async def main() -> list[dict[str, object]]:
        sent: list[dict[str, object]] = []
        first_chunk = asyncio.Event()
        requested = False

        async def receive() -> dict[str, object]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await first_chunk.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)
            if message.get("body"):
                first_chunk.set()

        await asyncio.wait_for(app(scope, receive, send), timeout=10)
        return sent

    sent = asyncio.run(main())
    assert [m.get("body") for m in sent if m["type"] == "http.response.body"] == [b"0\n"]
    assert default_client.flush(timeout=10).ok
    events = stored(collector)
    assert [(e["name"], e["anonymous_id"], e["context"]["path"]) for e in events] == [
        ("chunk.sent", "visitor-1", "/hang"),
        ("stream.aborted", "visitor-1", "/hang"),
    ]
    assert {e.get("person_id") for e in events} == {None}
    _check_bodies_ended(1)


def test_under_the_wsgi_handler_a_body_closed_early_cleans_up_in_its_request_context(
    stream_urls, default_client, collector
):
    """Under Django's WSGI handler, a generator's ``finally`` run by ``response.close()``
    (a client gone after the first chunk; Django registered the generator's ``close``
    when the response was built) tracks with its own request's ids, as one run by the
    body's end does."""
    from wsgiref.util import setup_testing_defaults

    from django.core.wsgi import get_wsgi_application

    app = get_wsgi_application()

    def call(visitor: str):  # type: ignore[no-untyped-def]
        environ: dict[str, object] = {
            "PATH_INFO": "/closing",
            "HTTP_X_FANOUT_ANONYMOUS_ID": visitor,
        }
        setup_testing_defaults(environ)
        return app(environ, lambda status, headers, exc_info=None: None)

    for visitor in ("visitor-1", "visitor-2"):
        body = call(visitor)
        assert next(iter(body)) == b"0\n"
        body.close()
        assert _context.current() is None  # the server's thread, between its requests
    body = call("visitor-3")
    assert b"".join(body) == b"0\n1\n"
    body.close()
    assert default_client.flush(timeout=10).ok
    events = stored(collector)
    assert Counter((e["name"], e["anonymous_id"], e["context"]["path"]) for e in events) == {
        ("chunk.sent", "visitor-1", "/closing"): 1,
        ("stream.closed", "visitor-1", "/closing"): 1,
        ("chunk.sent", "visitor-2", "/closing"): 1,
        ("stream.closed", "visitor-2", "/closing"): 1,
        ("chunk.sent", "visitor-3", "/closing"): 2,
        ("stream.closed", "visitor-3", "/closing"): 1,
    }
    assert {e.get("person_id") for e in events} == {None}
    _check_bodies_ended(3)


def test_under_the_asgi_handler_a_body_left_mid_way_cleans_up_in_its_request_context(
    stream_urls, default_client, collector
):
    """Under Django's ASGI handler, the client leaves while the server sends the first
    chunk: the body is dropped at its ``yield``, and nothing closes the view's generator
    until the garbage collector finalizes it, here during another visitor's request (the
    event loop closes it in a task copied from the context current then). Its ``finally``
    still tracks with its own request's ids, and the other request's events with theirs."""
    from django.core.asgi import get_asgi_application

    app = get_asgi_application()

    def scope(path: str, visitor: bytes) -> dict[str, object]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"shop.test"), (b"x-fanout-anonymous-id", visitor)],
            "client": ("192.0.2.7", 50000),
            "server": ("shop.test", 80),
        }

    async def leave_mid_body() -> list[object]:
        """visitor-1's client: gone while the first chunk is being sent."""
        bodies: list[object] = []
        gone = asyncio.Event()
        requested = False

        async def receive() -> dict[str, object]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.body":
                bodies.append(message.get("body"))
                gone.set()
                await asyncio.Event().wait()  # a send that never completes: cancelled

        await asyncio.wait_for(app(scope("/aclosing", b"visitor-1"), receive, send), 10)
        return bodies

    async def another_visitor() -> list[object]:
        sent: list[object] = []
        requested = False

        async def receive() -> dict[str, object]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.body":
                sent.append(message.get("body"))

        await asyncio.wait_for(app(scope("/collect", b"visitor-2"), receive, send), 10)
        return sent

    async def main() -> tuple[list[object], list[object]]:
        left = await leave_mid_body()
        other = await another_visitor()  # its view runs the collector
        # The finalizers' aclose() tasks, scheduled with call_soon_threadsafe: let them run.
        await asyncio.sleep(0)
        while tasks := asyncio.all_tasks() - {asyncio.current_task()}:
            await asyncio.gather(*tasks)
        return left, other

    enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # the collector runs in visitor-2's view, not at a time of its choosing
    try:
        left, other = asyncio.run(main())
    finally:
        if enabled:
            gc.enable()
    assert left == [b"0\n"]
    assert other == [b"ok"]
    assert default_client.flush(timeout=10).ok
    events = stored(collector)
    assert Counter((e["name"], e["anonymous_id"], e["context"]["path"]) for e in events) == {
        ("chunk.sent", "visitor-1", "/aclosing"): 1,
        ("stream.closed", "visitor-1", "/aclosing"): 1,
        ("page.viewed", "visitor-2", "/collect"): 1,
    }
    assert {e.get("person_id") for e in events} == {None}
    _check_bodies_ended(1)
