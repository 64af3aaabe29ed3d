"""``fanout.context``: ids, canonical context and properties filled into every call.

Each test sends through the real collector provider to the reference collector and counts
what it stored.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import uuid

import pytest

import fanout
from fanout import InvalidEvent

from .conftest import stored


def test_context_fills_what_calls_leave_out_and_explicit_arguments_win(collector, clients):
    client = clients(collector.url, collector.key)
    with fanout.context(
        anonymous_id="anon-1",
        session_id="sess-1",
        ip="203.0.113.9",
        user_agent="Mozilla/5.0 test",
        url="https://shop.example/cart?utm_source=news",
        path="/cart",
        referrer="https://news.example/",
        campaign={"source": "news"},
        properties={"plan": "free", "region": "eu"},
    ):
        client.track("cart.viewed")
        client.track(
            "cart.viewed",
            anonymous_id="explicit-anon",
            properties={"plan": "pro"},
            context={"ip": "198.51.100.1"},
        )
        client.page("/cart")
    assert client.flush(timeout=10).ok
    first, second, page = stored(collector)
    assert first["anonymous_id"] == "anon-1" and first.get("person_id") is None
    assert first["properties"] == {"plan": "free", "region": "eu"}
    assert first["context"] == {
        "session_id": "sess-1",
        "ip": "203.0.113.0",  # FANOUT_IP=anonymize, the default
        "user_agent": "Mozilla/5.0 test",
        "url": "https://shop.example/cart?utm_source=news",
        "path": "/cart",
        "referrer": "https://news.example/",
        "campaign": {"source": "news"},
    }
    assert second["anonymous_id"] == "explicit-anon"
    assert second["properties"] == {"plan": "pro", "region": "eu"}
    assert second["context"]["ip"] == "198.51.100.0"
    assert second["context"]["session_id"] == "sess-1"
    assert page["kind"] == "page" and page["anonymous_id"] == "anon-1"
    assert page["properties"] == {"plan": "free", "region": "eu", "path": "/cart"}
    assert collector.store.count_events() == 3


def test_nested_contexts_inherit_and_override(collector, clients):
    client = clients(collector.url, collector.key)
    with fanout.context(anonymous_id="a", ip="192.0.2.1", properties={"x": 1}):
        with fanout.context(person_id="u1", properties={"y": 2}):
            client.track("inner")
        client.track("outer")
    client.track("outside", person_id="u2")
    assert client.flush(timeout=10).ok
    inner, outer, outside = stored(collector)
    assert (inner["person_id"], inner["anonymous_id"]) == ("u1", "a")
    assert inner["properties"] == {"x": 1, "y": 2}
    assert inner["context"] == {"ip": "192.0.2.0"}
    assert outer.get("person_id") is None and outer["properties"] == {"x": 1}
    assert outside["person_id"] == "u2" and not outside.get("context")
    assert outside.get("anonymous_id") is None


def test_identify_links_the_browser_id_and_the_timeline_joins(collector, clients):
    client = clients(collector.url, collector.key)
    with fanout.context(anonymous_id="browser-42"):
        client.track("landing.viewed")
        client.identify("user-42", traits={"email_domain": "example.com"})
        client.track("signup.finished", person_id="user-42")
    assert client.flush(timeout=10).ok
    assert collector.store.linked_ids(collector.project_id, "user-42") == ["browser-42"]
    # the collector's timeline joins the visitor's earlier event to the person
    names = [e.get("name") or e["kind"] for e in collector.timeline("user-42")["events"]]
    assert names == ["landing.viewed", "identify", "signup.finished"]
    assert collector.store.count_events() == 3


def test_no_id_at_all_gets_one_generated_id_per_context_and_is_never_linked(collector, clients):
    client = clients(collector.url, collector.key)
    with fanout.context(ip="192.0.2.7") as ctx:
        client.page("/")  # a first-time visitor: must not raise InvalidEvent
        client.track("button.clicked")
        client.identify("user-7")
    with fanout.context():
        client.page("/")
    assert client.flush(timeout=10).ok
    page, click, identify, other = stored(collector)
    generated = ctx.anonymous_id
    assert ctx.anonymous_id_generated and generated is not None
    assert uuid.UUID(generated).version == 4
    assert page["anonymous_id"] == click["anonymous_id"] == generated
    assert identify.get("anonymous_id") is None and identify["person_id"] == "user-7"
    assert collector.store.linked_ids(collector.project_id, "user-7") == []
    assert other["anonymous_id"] != generated
    assert collector.store.count_events() == 4


def test_outside_a_context_a_call_without_ids_is_still_invalid(collector, clients):
    client = clients(collector.url, collector.key)
    with pytest.raises(InvalidEvent):
        client.track("nobody")
    assert client.flush(timeout=10).ok
    assert collector.store.count_events() == 0


def test_context_follows_asyncio_tasks_and_copied_contexts_but_not_plain_threads(
    collector, clients
):
    client = clients(collector.url, collector.key)

    async def handler(n: int) -> None:
        with fanout.context(anonymous_id=f"visitor-{n}"):
            await asyncio.sleep(0)
            # a task created inside the context copies it
            await asyncio.gather(*(asyncio.create_task(step(n, i)) for i in range(3)))

    async def step(n: int, i: int) -> None:
        await asyncio.sleep(0.001 * (3 - i))
        client.track("step", properties={"n": n, "i": i})

    async def main() -> None:
        await asyncio.gather(*(handler(n) for n in range(5)))

    asyncio.run(main())

    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            client.track("copied")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def bare_thread() -> None:
        try:
            client.track("bare")
        except InvalidEvent as exc:
            errors.append(exc)

    with fanout.context(anonymous_id="threaded"):
        copied = threading.Thread(target=contextvars.copy_context().run, args=(in_thread,))
        bare = threading.Thread(target=bare_thread)
        copied.start(), bare.start()
        copied.join(), bare.join()
    assert client.flush(timeout=10).ok
    events = stored(collector)
    steps = [e for e in events if e["name"] == "step"]
    assert len(steps) == 15
    assert all(e["anonymous_id"] == f"visitor-{e['properties']['n']}" for e in steps)
    (copied_event,) = [e for e in events if e["name"] == "copied"]
    assert copied_event["anonymous_id"] == "threaded"
    assert len(errors) == 1 and isinstance(errors[0], InvalidEvent)  # the bare thread's
    assert collector.store.count_events() == 16


def test_module_level_context_and_default_client(collector):
    from collector.conftest import collector_client

    client = collector_client(collector.url, collector.key)
    previous = fanout.set_default_client(client)
    try:
        with fanout.context(person_id="mod-user"):
            fanout.track("module.call")
        report = fanout.shutdown(timeout=10)
    finally:
        fanout.set_default_client(previous)
    assert report.ok
    (event,) = stored(collector)
    assert event["person_id"] == "mod-user"


# -- the middleware's context: read when the first event is built ----------------------


class _HeaderAuth:
    """Starlette authentication from an ``X-User`` header: enough to have a ``scope["user"]``."""

    async def authenticate(self, conn):
        from starlette.authentication import AuthCredentials, SimpleUser

        name = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


def _starlette_app(client, person_id):
    """A Starlette app: auth inside, fanout's middleware outside it, a mounted sub-app."""
    from starlette.applications import Starlette
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from fanout.integrations.asgi import FanoutMiddleware

    async def quiet(request):
        return PlainTextResponse("nothing tracked")

    async def buy(request):
        client.track("item.bought")
        client.track("item.bought.again")
        return PlainTextResponse("ok")

    shop = Starlette(routes=[Route("/items", buy, methods=["POST"])])
    inner = Starlette(routes=[Route("/quiet", quiet), Mount("/shop", app=shop)])
    inner.add_middleware(AuthenticationMiddleware, backend=_HeaderAuth())
    return FanoutMiddleware(inner, person_id=person_id)


def _requests(app, *calls):
    import httpx

    async def run():
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="https://shop.example") as http:
            return [(await http.request(method, url, headers=headers)).status_code
                    for method, url, headers in calls]

    return asyncio.run(run())


def test_asgi_person_id_hook_sees_inner_auth_and_runs_only_when_something_is_tracked(
    collector, clients
):
    pytest.importorskip("starlette", reason="needs starlette (the collector extra)")
    client = clients(collector.url, collector.key)
    seen: list[str] = []

    def person_id(scope):
        seen.append(scope["path"])
        user = scope.get("user")  # set by the AuthenticationMiddleware *inside* fanout's
        return user.username if user is not None and user.is_authenticated else None

    app = _starlette_app(client, person_id)
    codes = _requests(
        app,
        ("GET", "/quiet", {"X-User": "ada"}),  # tracks nothing: the hook never runs
        ("POST", "/shop/items?utm_source=mail", {"X-User": "ada", "X-Fanout-Anonymous-Id": "v1"}),
        ("POST", "/shop/items", {"X-Fanout-Anonymous-Id": "v2"}),  # not logged in
    )
    assert codes == [200, 200, 200]
    assert client.flush(timeout=10).ok
    # once per request that tracked (two events each), never for the quiet one
    assert seen == ["/shop/items", "/shop/items"]
    events = stored(collector)
    assert [(e["name"], e.get("person_id"), e["anonymous_id"]) for e in events] == [
        ("item.bought", "ada", "v1"),
        ("item.bought.again", "ada", "v1"),
        ("item.bought", None, "v2"),
        ("item.bought.again", None, "v2"),
    ]
    # read from the scope as the server gave it: Mount's in-place root_path is not doubled
    assert events[0]["context"]["url"] == "https://shop.example/shop/items?utm_source=mail"
    assert events[0]["context"]["path"] == "/shop/items"
    assert events[0]["context"]["campaign"] == {"source": "mail"}
    assert collector.store.count_events() == 4


def test_asgi_person_id_hook_that_raises_is_logged_and_the_events_still_go(
    collector, clients, caplog
):
    pytest.importorskip("starlette", reason="needs starlette (the collector extra)")
    client = clients(collector.url, collector.key)

    def person_id(scope):
        raise LookupError("session store down")

    app = _starlette_app(client, person_id)
    assert _requests(app, ("POST", "/shop/items", {"X-Fanout-Anonymous-Id": "v3"})) == [200]
    assert client.flush(timeout=10).ok
    events = stored(collector)
    assert [(e.get("person_id"), e["anonymous_id"]) for e in events] == [(None, "v3")] * 2
    assert "person_id hook failed" in caplog.text and "session store down" in caplog.text
    assert collector.store.count_events() == 2


def test_threads_racing_to_read_one_request_read_it_once_and_share_one_generated_id(
    collector, clients
):
    """The request is read once: threads that race for it wait for the first read."""
    import time

    from fanout.integrations.asgi import FanoutMiddleware

    client = clients(collector.url, collector.key)
    start = threading.Barrier(8)
    calls: list[int] = []

    def person_id(scope):
        calls.append(1)
        time.sleep(0.05)  # a slow session lookup: lets every racing thread reach the read
        return None  # a first-time visitor: the anonymous id is generated

    def in_thread(n: int) -> None:
        start.wait(timeout=10)
        client.track("raced", properties={"n": n})

    async def app(scope, receive, send):
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(in_thread, n))
            for n in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    codes = _requests(FanoutMiddleware(app, person_id=person_id), ("GET", "/", {}), ("GET", "/", {}))
    assert codes == [204, 204]
    assert client.flush(timeout=10).ok
    assert len(calls) == 2  # once per request
    events = stored(collector)
    assert len(events) == 16
    first = {e["anonymous_id"] for e in events[:8]}
    second = {e["anonymous_id"] for e in events[8:]}
    assert len(first) == 1 and len(second) == 1 and first != second
    assert uuid.UUID(first.pop()).version == 4
    assert collector.store.count_events() == 16


def test_asgi_same_request_again_recalls_one_context_and_the_person_is_never_kept():
    """Repeated requests share one context object from their second time (so what events
    derive from it is kept too; a request seen once, a new visitor, is not kept at all);
    the person hook's answer is per request, never recalled with it."""
    from fanout import _context
    from fanout.integrations.asgi import FanoutMiddleware

    seen: list[fanout.RequestContext | None] = []
    people = iter(["ada", None, "bo"])

    async def app(scope, receive, send):
        seen.append(_context.current())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    request = ("GET", "/p?utm_source=mail", {"X-Fanout-Anonymous-Id": "v9"})
    assert _requests(FanoutMiddleware(app), request, request, request) == [204, 204, 204]
    assert seen[0] is not seen[1] and seen[0] == seen[1]  # the first time: read, not kept
    assert seen[1] is seen[2] and seen[1].anonymous_id == "v9" and seen[1].person_id is None
    hooked = FanoutMiddleware(app, person_id=lambda scope: next(people))
    assert _requests(hooked, request, request, request) == [204, 204, 204]
    assert [(c.person_id, c.anonymous_id) for c in seen[3:]] == [
        ("ada", "v9"), (None, "v9"), ("bo", "v9")]
    assert seen[4].values is seen[5].values and seen[5].values["campaign"] == {"source": "mail"}


def test_request_context_is_read_only_compares_by_value_and_round_trips():
    ctx = fanout.RequestContext(person_id="p", values={"ip": "1.2.3.4"})
    with pytest.raises(AttributeError):
        ctx.person_id = "other"  # type: ignore[misc]
    assert ctx == fanout.RequestContext(person_id="p", values={"ip": "1.2.3.4"})
    assert ctx != fanout.RequestContext(person_id="q", values={"ip": "1.2.3.4"})
    assert fanout.RequestContext.from_dict(ctx.to_dict()) == ctx
    assert "person_id='p'" in repr(ctx) and fanout.RequestContext().values == {}

