"""A request's context read off its thread: the client's deferred stage (fanout/_deferred.py).

Each test calls a real middleware as a server calls it (an ASGI scope, a WSGI environ) and
counts the events a real client hands its provider. The figures this is for are
``benchmarks/app_latency.py --middleware``'s; here, that the events are the same events,
none lost, none doubled, and that what must stay on the request's thread stays there.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fanout
from fanout import _deferred
from fanout._events import CONTEXT_ITEMS, Event, build, checked_context, with_request_context
from fanout.integrations import _request, browser
from fanout.integrations.asgi import FanoutMiddleware
from fanout.integrations.wsgi import FanoutMiddleware as WSGIMiddleware
from fanout.testing import InMemoryProvider

UA = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0"


def _client(memory: InMemoryProvider, **kwargs: Any) -> fanout.Client:
    return fanout.Client(
        providers=[memory], environ={}, load_entry_points=False, register_atexit=False, **kwargs
    )


def _scope(path: str, cookie: str | None = None, client: str = "203.0.113.7") -> dict[str, Any]:
    headers = [
        (b"host", b"shop.example"),
        (b"user-agent", UA.encode()),
        (b"referer", b"https://shop.example/"),
        (b"accept-language", b"de-DE,de;q=0.9"),
    ]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "https",
        "query_string": b"utm_source=news",
        "headers": headers,
        "client": (client, 50000),
        "server": ("10.0.0.1", 443),
    }


def _ajs(anonymous_id: str) -> str:
    return "ajs_anonymous_id=" + urllib.parse.quote(f'"{anonymous_id}"')


def _serve(app: Any, scope: dict[str, Any]) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    asyncio.run(app(scope, receive, send))


def _tracking_app(client: fanout.Client, calls: int) -> Callable[..., Any]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for i in range(calls):
            client.track("viewed", properties={"i": i, "path": scope["path"]})

    return app


def _shape(event: Event) -> tuple[Any, ...]:
    return (
        event.kind,
        event.name,
        event.person_id,
        event.anonymous_id,
        dict(event.properties),
        dict(event.context),
        event.size,  # as the full build computes them (the generated ids: the same length)
        event.footprint,
    )


class _NotedReader(_request.RequestReader):
    """The real reader, noting the thread each request is read on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def context(self, key: tuple[Any, ...]) -> Any:
        self.threads.append(threading.current_thread().name)
        return super().context(key)


def _reading_threads(middleware: Any) -> list[str]:
    """The threads ``middleware``'s requests are read on, from now on."""
    reader = _NotedReader()
    middleware._reader = reader
    return reader.threads


def test_the_request_is_read_off_its_thread_and_its_events_are_the_same() -> None:
    """10 requests x 3 events through a client that stages them, and through one that
    reads on the caller's thread (a processor of the application's keeps it there): the
    same 30 events, each read once per request, and never on the request's thread."""
    staged_memory, caller_memory = InMemoryProvider(), InMemoryProvider()
    staged = _client(staged_memory)
    on_caller = _client(caller_memory, processors=[lambda event: event])
    try:
        results = {}
        for name, client in (("staged", staged), ("caller", on_caller)):
            reads_at_end: list[int] = []
            noted: list[list[str]] = []

            async def app(
                scope: Any,
                receive: Any,
                send: Any,
                client: Any = client,
                reads_at_end: list[int] = reads_at_end,
                noted: list[list[str]] = noted,
            ) -> None:
                for i in range(3):
                    client.track("viewed", properties={"i": i, "path": scope["path"]})
                reads_at_end.append(len(noted[0]))  # requests read so far

            middleware = FanoutMiddleware(app, client=client)
            noted.append(_reading_threads(middleware))
            stage = client._stage
            # (the stage's thread held off: what the request read itself is all it read)
            with stage._busy if stage is not None else contextlib.nullcontext():
                for n in range(10):
                    cookie = _ajs(f"visitor-{n % 4}") if n % 5 else None
                    _serve(middleware, _scope(f"/items/{n}", cookie))
            client.flush(timeout=10)
            results[name] = reads_at_end, len(noted[0])
        assert results["caller"] == (list(range(1, 11)), 10)  # on its first event
        assert results["staged"] == ([0] * 10, 10)  # after, once per request
        assert len(staged_memory.events) == len(caller_memory.events) == 30

        def shapes(memory: InMemoryProvider) -> list[tuple[Any, ...]]:
            # a visitor with no id gets a generated one, the same for a request's events
            generated: dict[str, str] = {}
            out = []
            for event in memory.events:
                shape = list(_shape(event))
                if event.context["path"] in ("/items/0", "/items/5"):
                    shape[3] = generated.setdefault(event.context["path"], shape[3])
                    shape[3] = "generated" if shape[3] == generated[event.context["path"]] else "?"
                out.append(tuple(shape))
            return sorted(out, key=repr)

        assert shapes(staged_memory) == shapes(caller_memory)
        assert {
            e.anonymous_id for e in staged_memory.events if e.context["path"] == "/items/1"
        } == {"visitor-1"}
        event = next(e for e in staged_memory.events if e.context["path"] == "/items/1")
        assert dict(event.context) == {
            "ip": "203.0.113.0",  # FANOUT_IP=anonymize, applied when the event is completed
            "user_agent": UA,
            "locale": "de-DE",
            "url": "https://shop.example/items/1?utm_source=news",
            "path": "/items/1",
            "campaign": {"source": "news"},
            "referrer": "https://shop.example/",
        }
        assert all(r.delivered == 30 and r.pending == 0 for r in staged.stats().values())
    finally:
        staged.shutdown(timeout=5)
        on_caller.shutdown(timeout=5)


def test_the_stages_own_thread_reads_and_delivers_without_a_flush() -> None:
    memory = InMemoryProvider()
    client = _client(memory, flush_interval=0.05)
    middleware = FanoutMiddleware(_tracking_app(client, 3), client=client)
    threads = _reading_threads(middleware)
    _serve(middleware, _scope("/alone", _ajs("v-9")))
    deadline = time.monotonic() + 20
    while client.stats()["memory"].delivered < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.stats()["memory"].delivered == 3
    assert threads == ["fanout-deferred"]
    client.shutdown(timeout=5)
    assert [e.anonymous_id for e in memory.events] == ["v-9"] * 3


def test_staged_events_count_as_pending_and_every_flush_or_shutdown_delivers_them() -> None:
    memory = InMemoryProvider()
    client = _client(memory, flush_interval=30)
    middleware = FanoutMiddleware(_tracking_app(client, 5), client=client)
    stage = client._stage
    assert stage is not None
    with stage._busy:  # the stage's thread cannot complete anything meanwhile
        for n in range(4):
            _serve(middleware, _scope(f"/p/{n}", _ajs("v-1")))
        assert len(stage) == 20
        assert client.stats()["memory"].pending == 20
    report = client.flush(timeout=10)
    assert (report["memory"].delivered, report["memory"].pending) == (20, 0)
    assert len(memory.events) == 20
    with stage._busy:
        _serve(middleware, _scope("/last", _ajs("v-1")))
        assert len(stage) == 5
    report = client.shutdown(timeout=10)
    assert (report["memory"].delivered, report["memory"].pending) == (25, 0)
    # After shutdown, nothing is staged: counted as closed, as any call then.
    _serve(middleware, _scope("/after", _ajs("v-1")))
    assert len(stage) == 0
    assert client.stats()["memory"].losses == {"closed": 5}
    assert len(memory.events) == 25
    assert len({e.event_id for e in memory.events}) == 25


def test_a_call_that_stages_after_the_stage_closed_completes_its_own_event() -> None:
    """The race of a call and ``shutdown()``: a call that finds the stage open but appends
    after its last drain completes what it staged itself, never leaving it staged."""
    memory = InMemoryProvider()
    client = _client(memory)
    stage = client._stage
    assert stage is not None
    done: list[Any] = []
    stage._complete = done.append  # count what is completed, not where it goes

    class ClosedOnAppend(deque[Any]):
        def append(self, item: Any) -> None:
            super().append(item)
            stage._closed = True  # what a shutdown between the check and the append does

    stage.items = ClosedOnAppend()
    assert stage.put("item") is True
    assert done == ["item"] and len(stage) == 0
    assert stage.put("later") is False  # closed: the caller completes it
    client.shutdown(timeout=5)


def test_invalid_calls_still_raise_on_the_request_thread_with_nothing_staged() -> None:
    memory = InMemoryProvider()
    client = _client(memory)
    raised: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for bad in ({"x": float("nan")}, {"s": "\ud800"}):
            try:
                client.track("bad", properties=bad)
            except fanout.InvalidEvent as exc:
                raised.append(exc.path or "")
        with pytest.raises(fanout.InvalidEvent):
            client.track("")

    _serve(FanoutMiddleware(app, client=client), _scope("/", _ajs("v")))
    assert raised == ["properties.x", "properties.s"]
    report = client.shutdown(timeout=5)
    assert (report["memory"].delivered, len(memory.events)) == (0, 0)


def test_an_event_near_the_size_limit_is_read_on_the_request_thread() -> None:
    """An event within ``CONTEXT_RESERVE`` of ``FANOUT_MAX_EVENT_BYTES`` is completed on
    the request's thread: if its context takes it over the limit, the call raises there,
    as it always did, rather than the stage finding out later."""
    memory = InMemoryProvider()
    limit = _deferred.CONTEXT_RESERVE + 4096
    client = _client(memory, max_event_bytes=limit)
    middleware = FanoutMiddleware(_tracking_app(client, 0), client=client)
    threads = _reading_threads(middleware)
    outcomes: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for size in (100, 3000, limit - 800):
            try:
                client.track("sized", properties={"blob": "x" * size})
                outcomes.append("sent")
            except fanout.InvalidEvent:
                outcomes.append("raised")

    middleware.app = app
    long_path = "/" + "p" * 1500
    _serve(middleware, _scope(long_path, _ajs("v")))
    assert outcomes == ["sent", "sent", "raised"]
    # The first event was staged (read by the stage's thread), the second read here: once.
    assert threads in (["MainThread"], ["fanout-deferred"])
    report = client.shutdown(timeout=5)
    assert report["memory"].delivered == 2
    assert {len(e.properties["blob"]) for e in memory.events} == {100, 3000}
    assert {e.context["path"] for e in memory.events} == {long_path}


def test_the_person_hook_runs_once_on_the_request_thread_and_an_invalid_id_raises_there() -> None:
    memory = InMemoryProvider()
    client = _client(memory)
    hook_threads: list[str] = []

    def person(scope: Any) -> str:
        hook_threads.append(threading.current_thread().name)
        return scope["path"].rsplit("/", 1)[1]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["user"] = "seen by the hook"
        for _ in range(3):
            try:
                client.track("viewed")
            except fanout.InvalidEvent:
                hook_threads.append("raised")

    middleware = FanoutMiddleware(app, client=client, person_id=person)
    _serve(middleware, _scope("/u/user-7", _ajs("v-7")))
    _serve(middleware, _scope("/u/" + "x" * 600, _ajs("v-8")))
    assert hook_threads == ["MainThread", "MainThread", "raised", "raised", "raised"]
    client.shutdown(timeout=5)
    assert [(e.person_id, e.anonymous_id) for e in memory.events] == [("user-7", "v-7")] * 3


def test_a_requests_events_from_its_threads_share_one_generated_id() -> None:
    """A visitor with no id: the events of its request, tracked from the request's task,
    from threads started with its context and from another task, carry one generated id."""
    memory = InMemoryProvider()
    client = _client(memory)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        client.track("first")
        await asyncio.gather(*(asyncio.to_thread(client.track, "thread") for _ in range(4)))
        await asyncio.create_task(asyncio.sleep(0, client.track("task")))

    for n in range(3):
        _serve(FanoutMiddleware(app, client=client), _scope(f"/n/{n}", None, f"198.51.100.{n}"))
    client.shutdown(timeout=5)
    assert len(memory.events) == 18
    by_request: dict[str, set[str | None]] = {}
    for event in memory.events:
        by_request.setdefault(event.context["path"], set()).add(event.anonymous_id)
    assert sorted(len(ids) for ids in by_request.values()) == [1, 1, 1]
    assert len(set().union(*by_request.values())) == 3
    assert all(e.anonymous_id != "fanout:unread" for e in memory.events)


def test_wsgi_and_flask_requests_are_staged_too() -> None:
    flask = pytest.importorskip("flask")
    from fanout.integrations.flask import init_app

    memory = InMemoryProvider()
    client = _client(memory)
    app = flask.Flask("deferred")

    @app.get("/buy")
    def buy() -> str:
        client.track("bought", properties={"sku": "A"})
        return "ok"

    init_app(app, person_id=lambda: "user-3")
    middleware = app.wsgi_app
    assert isinstance(middleware, WSGIMiddleware)
    threads = _reading_threads(middleware)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/buy",
        "QUERY_STRING": "",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "HTTP_HOST": "shop.example",
        "HTTP_COOKIE": _ajs("v-3"),
        "REMOTE_ADDR": "192.0.2.9",
    }
    stage = client._stage
    assert stage is not None
    with stage._busy:  # the stage's thread held off: nothing read by the requests
        for _ in range(2):
            body = app.wsgi_app(dict(environ), lambda status, headers, exc=None: None)
            assert b"".join(body) == b"ok"
        assert (threads, len(stage)) == ([], 2)
    client.shutdown(timeout=5)
    assert len(threads) == 2  # once per request, once the requests were over
    assert [(e.person_id, e.anonymous_id, e.context["path"]) for e in memory.events] == [
        ("user-3", "v-3", "/buy")
    ] * 2


def test_after_fork_the_child_starts_with_an_empty_stage() -> None:
    """Events staged in the parent are the parent's to send (as its queue's are): a child
    forked while they wait delivers none of them, and its own."""
    memory = InMemoryProvider()
    client = _client(memory, flush_interval=30)
    middleware = FanoutMiddleware(_tracking_app(client, 4), client=client)
    stage = client._stage
    assert stage is not None
    with stage._busy:
        _serve(middleware, _scope("/before", _ajs("parent")))
        assert len(stage) == 4
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its own request, then a flush
            code = 1
            try:
                staged_at_fork = len(stage)
                _serve(middleware, _scope("/child", _ajs("child")))
                client.flush(timeout=10)
                paths = sorted({e.context["path"] for e in memory.events})
                os.write(write, f"{staged_at_fork} {len(memory.events)} {paths}".encode())
                code = 0
            finally:
                os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        told = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert told == "0 4 ['/child']"
    client.shutdown(timeout=5)
    assert len(memory.events) == 4
    assert {e.context["path"] for e in memory.events} == {"/before"}


def test_the_reserve_bounds_every_value_a_request_context_adds() -> None:
    """``CONTEXT_RESERVE`` against the largest context the readers can make: every value
    at its cap, of characters of 4 UTF-8 bytes (or escaped quotes), both ids at theirs."""
    wide = "\U0001f600"
    values = {
        "session_id": wide * browser.MAX_ID_LENGTH,
        "ip": wide * 64,
        "user_agent": wide * _request.MAX_TEXT_LENGTH,
        "locale": wide * 35,
        "url": wide * _request.MAX_TEXT_LENGTH,
        "path": wide * _request.MAX_TEXT_LENGTH,
        "referrer": '"' * _request.MAX_TEXT_LENGTH,
        "campaign": {field: wide * 200 for field in _request._CAMPAIGN.values()},
    }
    bare = build("track", "x", "p", None, None, None, None, None, None, None, None, None, None)
    full = build(
        "track",
        "x",
        "p" * 512,
        wide * browser.MAX_ID_LENGTH,
        None,
        None,
        values,
        None,
        None,
        None,
        None,
        None,
        None,
    )
    assert full.size - bare.size <= _deferred.CONTEXT_RESERVE
    assert full.size - bare.size > _deferred.CONTEXT_RESERVE / 2  # a bound, not a guess
    spent = checked_context(values).spent  # type: ignore[attr-defined]
    assert CONTEXT_ITEMS / 4 < spent <= CONTEXT_ITEMS  # (ids are not counted as items)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
ids = st.none() | st.text(min_size=1, max_size=30).filter(lambda t: not t.isspace())


@given(
    kind=st.sampled_from(["track", "page", "identify", "group"]),
    properties=st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    person_id=ids,
    anonymous_id=ids,
    values=st.fixed_dictionaries(
        {},
        optional={
            "ip": st.text(min_size=1, max_size=20).filter(str.isprintable),
            "url": st.text(min_size=1, max_size=40),
            "session_id": st.text(min_size=1, max_size=20).filter(lambda t: not t.isspace()),
            "campaign": st.dictionaries(st.sampled_from(["source", "name"]), st.text(max_size=9)),
        },
    ),
)
def test_completing_a_staged_event_is_the_full_build(
    kind: str, properties: Any, person_id: Any, anonymous_id: Any, values: dict[str, Any]
) -> None:
    """What the stage adds to an event built from the call's own arguments (the request's
    ids and checked values, :func:`with_request_context`) is what building the whole call
    gives, size and footprint included; an event it cannot make raises as the build does."""
    args: list[Any] = [kind, "name" if kind != "identify" else None]
    rest = [None, None, None, None, None, None]
    if kind == "group":
        rest = [None, None, "company", "c-1", None, None]
    traits = properties if kind in ("identify", "group") else None
    props = None if traits is not None else properties
    stub_person = person_id if kind != "identify" else person_id or "p"
    try:
        context = checked_context(values)
        expected: Any = build(
            *args,
            stub_person,
            anonymous_id,
            props,
            traits,
            context,
            "e-1",
            0.0,
            *rest[2:5],
            None,
        )
    except fanout.InvalidEvent as exc:
        expected = type(exc)
    stub = build(
        *args, stub_person, "fanout:unread", props, traits, None, "e-1", 0.0, *rest[2:5], None
    )
    try:
        got: Any = with_request_context(stub, stub_person, anonymous_id, context or None)
    except fanout.InvalidEvent as exc:
        got = type(exc)
    assert got == expected


@pytest.mark.parametrize(
    "settings",
    [
        {"sync": True},
        {"processors": [lambda event: event]},
        {"spool_dir": "spool"},
        {"overflow": "block"},
        {"defer_context": False},
    ],
    ids=["sync", "processors", "spool", "overflow=block", "defer_context=False"],
)
def test_where_the_caller_must_read_its_context_nothing_is_staged(
    settings: dict[str, Any], tmp_path: Any
) -> None:
    """Sync mode delivers each call before it returns; the application's processors see
    the whole event on the caller's thread; the spool keeps each event on disk as soon as
    it can; ``overflow=block`` makes the caller wait for room: none of them stages. Each request is read on its own thread, on its first
    event, and its events delivered once."""
    if "spool_dir" in settings:
        settings = {"spool_dir": str(tmp_path / "spool")}
    memory = InMemoryProvider()
    client = _client(memory, **settings)
    assert client._stage is None
    reads_at_end: list[int] = []
    noted: list[list[str]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        client.track("a")
        client.track("b")
        reads_at_end.append(len(noted[0]))

    middleware = FanoutMiddleware(app, client=client)
    noted.append(_reading_threads(middleware))
    for n in range(3):
        _serve(middleware, _scope(f"/s/{n}", _ajs("v-s")))
    assert reads_at_end == [1, 2, 3]
    client.shutdown(timeout=10)
    assert (
        sorted((e.name, e.anonymous_id) for e in memory.events)
        == [("a", "v-s")] * 3 + [("b", "v-s")] * 3
    )


# -- what a review of the stage found: each of these failed on its first version ----------


def test_a_requests_events_reach_the_provider_in_call_order() -> None:
    """Staged calls, a call whose context is read on the thread (a ``fanout.context``
    inside the request) and a call too big to stage: delivered in the order made."""
    memory = InMemoryProvider()
    client = _client(memory)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        client.identify("user-1", traits={"plan": "pro"})
        client.track("signup_started")
        with fanout.context(properties={"step": 2}):
            client.track("signup_completed")
        client.track("big", properties={"blob": "x" * (200 * 1024)})
        client.track("after")

    _serve(FanoutMiddleware(app, client=client), _scope("/signup", _ajs("v-1")))
    client.track("outside any request", anonymous_id="cron")
    client.shutdown(timeout=10)
    assert [(e.kind, e.name) for e in memory.events] == [
        ("identify", None),
        ("track", "signup_started"),
        ("track", "signup_completed"),
        ("track", "big"),
        ("track", "after"),
        ("track", "outside any request"),
    ]
    assert {e.anonymous_id for e in memory.events[:5]} == {"v-1"}


def test_flush_keeps_its_deadline_and_a_drain_ends_under_a_steady_load() -> None:
    """While the stage's thread is busy (here: held), ``flush(timeout)`` returns at its
    deadline, timed out, the staged events pending; and a drain completes what was
    staged when it began, not what keeps coming."""
    memory = InMemoryProvider()
    client = _client(memory, flush_interval=30)
    stage = client._stage
    assert stage is not None
    middleware = FanoutMiddleware(_tracking_app(client, 10), client=client)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with stage._busy:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        _serve(middleware, _scope("/a", _ajs("v")))
        done: list[Any] = []
        flusher = threading.Thread(target=lambda: done.append(client.flush(timeout=0.2)))
        flusher.start()
        flusher.join(30)
        assert not flusher.is_alive()
        assert done[0].timed_out and done[0]["memory"].pending == 10
    finally:
        release.set()
        holder.join(10)
    # A steady load: every completion stages one more event (another request's).
    complete = stage._complete
    extra = iter(range(1000))

    def completing(item: Any) -> None:
        complete(item)
        number = next(extra, None)
        if number is not None:  # another request's event, complete, behind
            load = Event("track", name="load", anonymous_id="load", properties={"n": number})
            stage.items.append((load, None, None, None))

    assert client.flush(timeout=10)["memory"].delivered == 10
    with stage._busy:  # (the stage's thread held off, to see what the drain leaves)
        _serve(middleware, _scope("/b", _ajs("v")))
        assert len(stage) == 10
        stage._complete = completing
        assert stage.drain() is True
        assert len(stage) == 10  # the 10 staged meanwhile are left to the stage's thread
        stage._complete = complete
    client.shutdown(timeout=10)
    assert [e.name for e in memory.events] == ["viewed"] * 20 + ["load"] * 10
    assert len({e.event_id for e in memory.events}) == 30


def test_an_exception_during_a_drain_leaves_its_events_staged_not_lost() -> None:
    """Ctrl-C (``KeyboardInterrupt``) in a ``flush()`` while it completes the stage: the
    event being completed stays first in line, and the next flush delivers every event
    once."""
    memory = InMemoryProvider()
    client = _client(memory, flush_interval=30)
    stage = client._stage
    assert stage is not None
    with stage._busy:
        _serve(FanoutMiddleware(_tracking_app(client, 40), client=client), _scope("/", _ajs("v")))
    complete = stage._complete
    calls = iter(range(1000))

    def interrupted(item: Any) -> None:
        if next(calls) == 17:
            raise KeyboardInterrupt
        complete(item)

    stage._complete = interrupted
    with pytest.raises(KeyboardInterrupt):
        client.flush(timeout=10)
    assert len(stage) == 40 - 17
    report = client.flush(timeout=10)
    assert (report["memory"].delivered, report["memory"].pending) == (40, 0)
    client.shutdown(timeout=10)
    assert sorted(e.properties["i"] for e in memory.events) == list(range(40))


@pytest.mark.parametrize(
    "person",
    [json.loads('"user-\\ud800"'), "x" * 600],
    ids=["lone surrogate", "too long"],
)
def test_a_hooks_invalid_person_id_raises_on_the_request_thread(person: str) -> None:
    memory = InMemoryProvider()
    client = _client(memory)
    outcomes: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            client.track("viewed")
            outcomes.append("returned")
        except fanout.InvalidEvent as exc:
            outcomes.append(f"raised ({exc.path})")

    _serve(FanoutMiddleware(app, client=client, person_id=lambda scope: person), _scope("/"))
    report = client.shutdown(timeout=5)
    assert outcomes == ["raised (person_id)"]
    assert (report["memory"].delivered, report["memory"].losses, len(memory.events)) == (0, {}, 0)


def test_a_failing_detach_reads_the_request_on_its_thread_and_the_call_returns() -> None:
    """A hook whose answer cannot even be turned into text: logged, the request read on
    its thread without a person, the call never raising anything but ``InvalidEvent``."""

    class Unloaded:
        def __str__(self) -> str:
            raise ValueError("user not loaded")

    memory = InMemoryProvider()
    client = _client(memory)
    app = _tracking_app(client, 2)
    _serve(FanoutMiddleware(app, client=client, person_id=lambda scope: Unloaded()), _scope("/"))
    client.shutdown(timeout=5)
    assert [(e.person_id, e.anonymous_id is not None) for e in memory.events] == [(None, True)] * 2


def test_the_hook_runs_once_when_an_enclosing_request_context_was_read_first() -> None:
    memory = InMemoryProvider()
    client = _client(memory)
    calls: list[str] = []

    def person(scope: Any) -> str:
        calls.append(scope["path"])
        return "user-1"

    inner = FanoutMiddleware(_tracking_app(client, 1), client=client)

    async def between(scope: Any, receive: Any, send: Any) -> None:
        with fanout.context():  # reads the outer middleware's context on this thread
            pass
        await inner(scope, receive, send)

    _serve(FanoutMiddleware(between, client=client, person_id=person), _scope("/x", _ajs("v")))
    client.shutdown(timeout=5)
    assert calls == ["/x"]
    assert [(e.person_id, e.anonymous_id) for e in memory.events] == [("user-1", "v")]


def test_staged_events_count_as_pending_only_for_the_providers_they_go_to() -> None:
    a, b = InMemoryProvider(), InMemoryProvider()
    a.name, b.name = "a", "b"
    client = fanout.Client(
        providers=[a, b],
        environ={},
        load_entry_points=False,
        register_atexit=False,
        flush_interval=30,
    )
    stage = client._stage
    assert stage is not None

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for _ in range(10):
            client.track("routed", providers=["a"])

    with stage._busy:
        _serve(FanoutMiddleware(app, client=client), _scope("/", _ajs("v")))
        pending = {name: report.pending for name, report in client.stats().items()}
    assert pending == {"a": 10, "b": 0}
    report = client.shutdown(timeout=5)
    assert (report["a"].delivered, report["b"].losses) == (10, {"routed": 10})


def test_a_request_that_forks_has_the_same_ids_in_both_processes() -> None:
    """Fork inside a request (a visitor with no id: a generated one) while the stage's
    thread is reading that very request: the child does not wait for the lock it held,
    and both processes' events carry one generated id."""
    inside = threading.Event()

    class SlowReader(_request.RequestReader):
        def context(self, key: tuple[Any, ...]) -> Any:
            if threading.current_thread().name == "fanout-deferred":
                inside.set()
                time.sleep(0.3)  # a slow reading: the fork lands inside it
            return super().context(key)

    memory = InMemoryProvider()
    client = _client(memory, flush_interval=0.05)
    told: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        client.track("parent")
        for _ in range(70):  # past BATCH: the stage's thread wakes and starts reading
            client.track("filler")
        assert inside.wait(10)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.alarm(20)  # a hung child is killed, and the test fails below
                client.track("child")
                client.flush(timeout=10)
                os.write(
                    write,
                    " ".join(
                        e.anonymous_id or "" for e in memory.events if e.name == "child"
                    ).encode(),
                )
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read) as pipe:
            told.append(pipe.read())
        _, status = os.waitpid(pid, 0)
        told.append(str(os.waitstatus_to_exitcode(status)))

    middleware = FanoutMiddleware(app, client=client)
    middleware._reader = SlowReader()
    _serve(middleware, _scope("/fork"))
    client.shutdown(timeout=10)
    child_ids, exit_code = told
    assert exit_code == "0"
    parent_ids = {e.anonymous_id for e in memory.events}
    assert len(memory.events) == 71 and len(parent_ids) == 1
    assert child_ids.split() == list(parent_ids)


def test_the_environment_turns_the_stage_off_and_a_bad_value_is_refused() -> None:
    on = fanout.Client(
        providers=["null"], environ={}, load_entry_points=False, register_atexit=False
    )
    off = fanout.Client(
        providers=["null"],
        environ={"FANOUT_DEFER_CONTEXT": "0"},
        load_entry_points=False,
        register_atexit=False,
    )
    assert (on._stage is not None, off._stage is None) == (True, True)
    on.shutdown(timeout=1)
    off.shutdown(timeout=1)
    with pytest.raises(fanout.ConfigError, match="FANOUT_DEFER_CONTEXT"):
        fanout.Client(
            providers=["null"],
            environ={"FANOUT_DEFER_CONTEXT": "maybe"},
            load_entry_points=False,
            register_atexit=False,
        )


# -- and what a second review found ---------------------------------------------------------


class _TrackingObserver:
    """A delivery observer that tracks an event when it is told of a loss (user code run
    inside a completion, on the stage's thread), and has a concurrent request stage one
    meanwhile."""

    def __init__(self, client_of: Callable[[], fanout.Client], serve: Callable[[], None]):
        self.client_of = client_of
        self.serve = serve
        self.fired = False

    def attach(self, channels: Any) -> None:
        pass

    def delivered(self, provider: str, n: int) -> None:
        pass

    def request(self, *args: Any) -> None:
        pass

    def lost(self, provider: str, outcome: str, reason: str, n: int) -> None:
        if not self.fired:
            self.fired = True
            self.client_of().track("meta.lost", person_id="sys", providers=["a"])
            thread = threading.Thread(target=self.serve)  # a concurrent request
            thread.start()
            thread.join(30)


def test_a_drain_begun_again_inside_a_completion_neither_doubles_nor_loses() -> None:
    """A full stage (its limit is b's queue of 16), whose completion runs user code (an
    observer told of the routed skip) that tracks, while another request stages an event:
    every event delivered once, nothing left staged, the stage's thread alive. The first
    version completed the item in hand twice and removed another, never completed."""
    a, b = InMemoryProvider("a"), InMemoryProvider("b")
    clients: list[fanout.Client] = []
    middleware = WSGIMiddleware(lambda environ, start_response: _track_all(environ))

    def _track_all(environ: dict[str, Any]) -> list[bytes]:
        for name in environ["names"]:
            clients[0].track(name, providers=["a"])
        return [b""]

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "REMOTE_ADDR": "192.0.2.4",
    }

    def serve(names: list[str]) -> None:
        middleware(dict(environ, names=names), lambda *args: None)

    observer = _TrackingObserver(lambda: clients[0], lambda: serve(["late"]))
    client = fanout.Client(
        providers=[a, b],
        environ={},
        load_entry_points=False,
        register_atexit=False,
        observer=observer,
        delivery={"b": {"queue_size": 16}},
    )
    clients.append(client)
    stage = client._stage
    assert stage is not None and stage.limit == 16
    serve([f"e{i}" for i in range(16)])
    report = client.flush(timeout=10)
    assert stage._thread is not None and stage._thread.is_alive()
    names = sorted(e.name for e in a.events)
    assert names == sorted([f"e{i}" for i in range(16)] + ["meta.lost", "late"])
    assert (report["a"].delivered, report["a"].pending, len(stage)) == (18, 0, 0)
    client.shutdown(timeout=5)


def test_a_signal_inside_detach_leaves_the_request_read_on_its_thread() -> None:
    """Ctrl-C landing in the person hook while the first call detaches: that call raises
    it; the request's next call reads the request on its thread (the hook is never run
    off it with the live scope)."""
    memory = InMemoryProvider()
    client = _client(memory)
    calls: list[str] = []

    def person(scope: Any) -> str:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return "user-1"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with pytest.raises(KeyboardInterrupt):
            client.track("first")
        client.track("second")

    _serve(FanoutMiddleware(app, client=client, person_id=person), _scope("/", _ajs("v")))
    client.shutdown(timeout=5)
    assert calls == ["MainThread", "MainThread"]
    assert [(e.name, e.person_id, e.anonymous_id) for e in memory.events] == [
        ("second", "user-1", "v")
    ]
