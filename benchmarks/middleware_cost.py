"""CPU cost of fanout's request middleware per request, beside the same app without it.

The ASGI and WSGI apps are called directly, in this thread (a minimal ``scope`` /
``receive`` / ``send``, or an ``environ`` / ``start_response``): no server and no socket,
whose cost would bury a few microseconds. Each repetition times ``--requests`` requests
through the bare app and through the same app wrapped in the middleware, back to back, on
this thread's CPU clock (``time.thread_time``: fanout's delivery threads are not counted);
the figure printed is the median over repetitions of (with middleware − without).

Requests:

- ``empty``: no cookie and no header at all;
- ``cookies``: a browser's request: PostHog and Segment cookies, user agent, referrer,
  locale and ``utm_*`` parameters;
- ``cookies+headers``: the same with fanout's ``X-Fanout-Anonymous-Id`` / ``-Session-Id``.

Handlers: ``noop`` tracks nothing (most requests); ``track`` calls ``client.track()`` once
(null provider, ``FANOUT_IP=anonymize`` as by default).

With the middleware, that one call's event carries the request's context (ip, user agent,
url, referrer, locale, campaign, session) and the browser's anonymous id; the bare app's
event carries none of it, so (middleware + track) − (bare app + track), printed as ``vs
bare``, also counts what any event pays for carrying those values (their validation, the
``FANOUT_IP`` processor masking the IP, a bigger event), whoever supplies them. The fair
comparison is the same app without the middleware sending the *same event*: its handler
passes the same anonymous id and context to ``track()`` explicitly (plain dicts, built
before timing, as glue code would). ``middleware`` = (middleware + track) − (bare app +
the same event passed explicitly): reading the request, entering the context and merging
it into the call (the middleware checks the context values once, when it reads them; the
explicit call has them checked by ``track()``, as any call passing a context does). That is
the figure held to the target; ``+data`` = (bare app + the same event) − (bare app + track)
is what carrying the values costs by itself.

The ``cookies, new visitor each time`` row gives every request its own PostHog cookie (a new
distinct id and a new session, as a first visit has), so no cache can help it. The
``cookies, new activity time`` row is what a site running posthog-js sends most: the same
visitor and session on every request, but posthog-js rewrites the last-activity time
(``$sesid[0]``, in ms) in its cookie as the visitor's events are captured (its
``SessionIdManager._setSessionId``; recent versions at most once per 5 s), so the raw
``Cookie`` header is new on each request. ``new visitors, others kept`` is the new-visitor
row on a middleware that already keeps a returning visitor (its first 3 requests, then
new visitors): what a busy server's new visitor pays, looking in what is kept first.

The ``sessions of N requests`` rows interleave 20 visitors' sessions on one page; the
``sessions of N, walking pages`` rows walk a site's pages instead, a new page on each
request, referred by the one before, with six browsers (:func:`sessions`). Each run's
visitors are new. The ``walking, warm worker`` rows are the same on a middleware that has
first served other visitors walking the same site (:func:`middleware_of`): a worker that
has run a while, which keeps the site's pages, browsers and referrers, where every other
row's middleware is new and reads them all for the first time.

Every timed run wraps the app in a fresh middleware (built before the clock starts): a
middleware reused across runs would meet each "new" visitor again in the next run.

    python benchmarks/middleware_cost.py [--requests 3000] [--reps 11]
    python benchmarks/middleware_cost.py --instructions [--only asgi|wsgi]

``--instructions`` (needs valgrind) counts instead of timing, for a figure the machine's
load does not move: for each interface and request kind, one process under ``valgrind
--tool=cachegrind`` runs the middleware + ``track()`` and another the bare app sending the
same event, each once with 1 pass and once with 3 passes of ``--requests`` requests (every
process prepares all 3 passes, so the difference is 2 passes of requests and nothing else;
each pass a fresh middleware and fresh header, path and address objects, so no hash or
reading is carried over, as a server gives each request new ones; the garbage collector
off, whose full collections land in one run and not another). The row is the difference
of the two differences per request. Counts repeat to within a few hundred instructions
per request, not exactly: every request has new random event ids (and the new-visitor
rows new visitor and session ids), and the client's delivery thread wakes by the clock.
``≈ µs`` converts it at the rate of the bare app sending the same event, over every row
(its instructions over its CPU time, timed here after the counting, medians of 11 runs per
row): code of the same kind (Python calls, small objects) runs at about 3 k instructions
per µs on this machine, where a tight C loop such as ``sum(range(100))`` runs at twice
that.

``/ target`` is ``middleware`` against the target of 10 µs of CPU per request; ``vs bare``
(last) is the whole difference against the bare app's smaller event. For ``noop`` all three
are the same figure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import fanout
from fanout import _context as fanout_context
from fanout.integrations.asgi import FanoutMiddleware as ASGIMiddleware
from fanout.integrations.wsgi import FanoutMiddleware as WSGIMiddleware

TARGET_US = 10.0
NOW_MS = int(time.time() * 1000)
UA = (
    b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/126 Safari/537.36"
)
QUERY = b"utm_source=news&utm_campaign=spring"


#: The browsers of :func:`sessions`' walking visitors: (user agent, Accept-Language).
BROWSERS = [
    (UA, b"en-GB,en;q=0.9"),
    (UA.replace(b"Chrome/126", b"Chrome/125"), b"en-US,en;q=0.9"),
    (b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
     b"Gecko) Version/17.5 Safari/605.1.15", b"en-US"),
    (b"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
     b"de-DE,de;q=0.8,en;q=0.5"),
    (b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
     b"like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", b"fr-FR"),
    (b"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     b"Chrome/126 Mobile Safari/537.36", b"en-GB"),
]
#: The pages of the site :func:`sessions`' walking visitors walk.
SITE_PATHS = [
    "/", "/cart", "/checkout", "/account", "/search",
    *(f"/products/{n}" for n in range(30)),
    *(f"/category/{name}" for name in ("shoes", "bags", "coats", "hats", "sale")),
]


def posthog_cookie(distinct_id: str, session_id: str, last_ms: int = NOW_MS) -> str:
    """``ph_<token>_posthog`` as posthog-js writes it (encodeURIComponent of JSON);
    ``$sesid`` is [last activity ms, session id, session start ms]."""
    value = {
        "distinct_id": distinct_id,
        "$device_id": distinct_id,
        "$user_state": "anonymous",
        "$sesid": [last_ms, session_id, NOW_MS - 60_000],
        "$initial_person_info": {"r": "https://news.example/article", "u": "https://shop.example/"},
    }
    return "ph_phc_token_posthog=" + quote(json.dumps(value, separators=(",", ":")), safe="")


def cookie_header(distinct_id: str, session_id: str, last_ms: int = NOW_MS) -> bytes:
    return (
        f"{posthog_cookie(distinct_id, session_id, last_ms)}; "
        "ajs_anonymous_id=4f0c7d3e-1111-4222-8333-944445555666; csrftoken=abc123"
    ).encode()


BROWSER = [
    (b"host", b"shop.example"),
    (b"user-agent", UA),
    (b"accept-language", b"en-GB,en;q=0.9"),
    (b"referer", b"https://news.example/article"),
]
FANOUT_HEADERS = [
    (b"x-fanout-anonymous-id", b"0190f5a2-7d1e-7c3b-9a4f-2b1c0d9e8f7a"),
    (b"x-fanout-session-id", b"0190f5a2-7d1e-7c3b-9a4f-bbbbbbbbbbbb"),
]
SAME_VISITOR = cookie_header(
    "0190f5a2-7d1e-7c3b-9a4f-2b1c0d9e8f7a", "0190f5a2-7d1e-7c3b-9a4f-aaaaaaaaaaaa"
)


def scope(headers: list[tuple[bytes, bytes]], query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "https", "path": "/checkout", "raw_path": b"/checkout", "root_path": "",
        "query_string": query, "headers": headers,
        "client": ("203.0.113.9", 50000), "server": ("10.0.0.1", 443),
    }


def environ(s: dict[str, Any]) -> dict[str, Any]:
    """The WSGI ``environ`` of the same request."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET", "wsgi.url_scheme": "https", "PATH_INFO": s["path"],
        "SCRIPT_NAME": "", "QUERY_STRING": s["query_string"].decode(),
        "REMOTE_ADDR": s["client"][0], "SERVER_NAME": "10.0.0.1", "SERVER_PORT": "443",
    }
    for name, value in s["headers"]:
        env["HTTP_" + name.decode().upper().replace("-", "_")] = value.decode("latin-1")
    return env


def requests(kind: str, count: int) -> list[dict[str, Any]]:
    """The scopes to cycle through for one kind of request."""
    if kind == "empty":
        return [scope([])]
    if kind == "cookies":
        return [scope([*BROWSER, (b"cookie", SAME_VISITOR)], QUERY)]
    if kind == "cookies+headers":
        return [scope([*BROWSER, *FANOUT_HEADERS, (b"cookie", SAME_VISITOR)], QUERY)]
    if kind == NEW_ACTIVITY:
        # One visitor, one session; the last-activity time a few ms later on each request.
        anonymous_id, session_id = "0190f5a2-7d1e-7c3b-9a4f-2b1c0d9e8f7a", str(uuid.uuid4())
        return [
            scope([*BROWSER, (b"cookie", cookie_header(anonymous_id, session_id, NOW_MS + i))],
                  QUERY)
            for i in range(count)
        ]
    # A new visitor each request: a new id and a new session, so no reading can be reused.
    # Each from an address of its own, as new visitors come: what is read per page cannot
    # be told apart by the address.
    new_visitors = [
        {**scope([*BROWSER, (b"cookie", cookie_header(str(uuid.uuid4()), str(uuid.uuid4())))],
                 QUERY),
         "client": (f"198.51.{i >> 8 & 255}.{i & 255}", 50000 + i % 10000)}
        for i in range(count)
    ]
    if kind == NEW_KEPT:
        return requests(NEW_ACTIVITY, 3) + new_visitors[3:]
    if kind in SESSIONS:
        return sessions(SESSIONS[kind], count)
    if kind in WALKS:
        return sessions(WALKS[kind], count, walking=True)
    if kind in WARM_WALKS:
        return sessions(WARM_WALKS[kind], count, walking=True)
    return new_visitors


def sessions(
    length: int, count: int, concurrent: int = 20, *, walking: bool = False
) -> list[dict[str, Any]]:
    """``count`` requests of visitors' sessions of ``length`` requests each, ``concurrent``
    of them interleaved (one request of each in turn), each visitor from an address of its
    own: its first request without a cookie (posthog-js has not run yet), every next one
    with its PostHog cookie, the last-activity time a second later each time (posthog-js
    rewrites it at most every 5 s: a new time on every request is the costlier case). A
    session over, a new visitor takes its turn.

    Every request is on one page, with one user agent, unless ``walking``: then each
    visitor has one of a few browsers (:data:`BROWSERS`) and walks the pages of a site
    (:data:`SITE_PATHS`), a page per request, each referred by the one before, the first
    from outside with the campaign's query: what server-rendered pages, each tracking a
    view, see. Their pages' readings are shared only by visitors with the same browser
    coming from the same page."""
    out = []
    active: list[list[Any]] = []  # per turn: [requests made, anonymous id, session id, address]
    for i in range(count):
        turn = i % concurrent
        if turn == len(active) or active[turn][0] == length:
            visitors = next(_VISITORS)
            visitor = [0, str(uuid.uuid4()), str(uuid.uuid4()),
                       f"192.0.{visitors >> 8 & 255}.{visitors & 255}"]
            if turn == len(active):
                active.append(visitor)
            else:
                active[turn] = visitor
        made, anonymous_id, session_id, address = active[turn][:4]
        headers = list(BROWSER)
        query = QUERY
        page: dict[str, Any] = {}
        if walking:
            if made == 0:
                active[turn].append(visitors)  # the walk's seed: its visitor's number
            seed = active[turn][4]
            path = SITE_PATHS[(seed * 7 + made * 13 + seed * made) % len(SITE_PATHS)]
            before = SITE_PATHS[(seed * 7 + (made - 1) * 13 + seed * (made - 1))
                                % len(SITE_PATHS)]
            user_agent, locale = BROWSERS[seed % len(BROWSERS)]
            headers = [
                (b"host", b"shop.example"),
                (b"user-agent", user_agent),
                (b"accept-language", locale),
                (b"referer", b"https://news.example/article" if made == 0
                 else b"https://shop.example" + before.encode()),
            ]
            query = QUERY if made == 0 else b""
            page = {"path": path, "raw_path": path.encode()}
        if made:
            cookie = cookie_header(anonymous_id, session_id, NOW_MS + made * 1000)
            headers.append((b"cookie", cookie))
        out.append({**scope(headers, query), **page, "client": (address, 50000 + i % 10000)})
        active[turn][0] = made + 1
    return out


def handlers(client: fanout.Client) -> dict[str, tuple[Callable[..., Any], Callable[..., Any]]]:
    """handler name → (ASGI app, WSGI app)."""

    async def asgi_noop(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def wsgi_noop(environ: Any, start_response: Any) -> list[bytes]:
        start_response("204 No Content", [])
        return [b""]

    track = client.track

    async def asgi_track(scope: Any, receive: Any, send: Any) -> None:
        track("checkout.viewed", person_id="user_1", properties={"plan": "pro"})
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def wsgi_track(environ: Any, start_response: Any) -> list[bytes]:
        track("checkout.viewed", person_id="user_1", properties={"plan": "pro"})
        start_response("204 No Content", [])
        return [b""]

    async def asgi_same(scope: Any, receive: Any, send: Any) -> None:
        anonymous_id, context = scope[SAME_EVENT]
        track("checkout.viewed", person_id="user_1", properties={"plan": "pro"},
              anonymous_id=anonymous_id, context=context)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def wsgi_same(environ: Any, start_response: Any) -> list[bytes]:
        anonymous_id, context = environ[SAME_EVENT]
        track("checkout.viewed", person_id="user_1", properties={"plan": "pro"},
              anonymous_id=anonymous_id, context=context)
        start_response("204 No Content", [])
        return [b""]

    return {
        "noop": (asgi_noop, wsgi_noop),
        "track": (asgi_track, wsgi_track),
        "same": (asgi_same, wsgi_same),
    }


#: The returning visitor whose PostHog cookie differs in its last-activity time only.
NEW_ACTIVITY = "cookies, new activity time"
#: New visitors on a middleware that keeps a returning visitor's reading.
NEW_KEPT = "new visitors, others kept"
#: Visitors' sessions (:func:`sessions`), by their number of requests.
SESSIONS = {f"sessions of {n} requests": n for n in (5, 10, 20)}
#: Visitors' sessions walking a site's pages (:func:`sessions` with ``walking``).
WALKS = {f"sessions of {n}, walking pages": n for n in (5, 10, 20)}
#: The same on a worker that has served the site before (:func:`middleware_of`).
WARM_WALKS = {f"sessions of {n}, walking, warm worker": n for n in (5, 10, 20)}
#: The numbers of :func:`sessions`' visitors, across calls: every call's visitors are new
#: ones, each from an address of its own (unique for the first 65,536).
_VISITORS = itertools.count()
#: Where each request carries, for the bare ``same`` handler, the anonymous id and context
#: the middleware gives its event: what glue code would pass to ``track()`` by hand.
SAME_EVENT = "bench.same_event"


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return None


#: The deferred stages of the clients the handlers track with (:func:`null_client`): the
#: timers complete what they staged on the timed thread, inside the timing, so that a
#: request's context read off its thread (fanout/_deferred.py) is counted all the same.
_STAGES: list[Any] = []


def _hold() -> None:
    """Keep the stages' threads from completing anything until :func:`_drain`: all of the
    reading then runs on the timed thread."""
    for stage in _STAGES:
        stage._busy.acquire()


def _drain() -> None:
    for stage in _STAGES:
        stage.drain()
        stage._busy.release()


def time_asgi(app: Any, scopes: list[dict[str, Any]], n: int) -> float:
    """CPU seconds per request of ``n`` requests through ``app``, on this thread, with the
    reading of their contexts that the client's stage does off the request's thread."""

    async def run() -> float:
        k = len(scopes)
        _hold()
        start = time.thread_time()
        for i in range(n):
            await app(scopes[i % k], _receive, _send)
        _drain()
        return (time.thread_time() - start) / n

    return asyncio.run(run())


def time_wsgi(app: Any, environs: list[dict[str, Any]], n: int) -> float:
    k = len(environs)
    _hold()
    start = time.thread_time()
    for i in range(n):
        body = app(environs[i % k], _start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    _drain()
    return (time.thread_time() - start) / n


#: Interface -> (its timer, its middleware, its handlers' index in :func:`handlers`).
INTERFACES: dict[str, tuple[Callable[[Any, Any, int], float], Any, int]] = {
    "ASGI": (time_asgi, ASGIMiddleware, 0),
    "WSGI": (time_wsgi, WSGIMiddleware, 1),
}


def middleware_of(iface: str, kind: str, n: int) -> Callable[[Any], Any]:
    """How a run wraps its app for ``kind``: in a new middleware; for the warm-worker rows,
    in one that has first served ``2 * n`` requests of other visitors walking the same site
    (before any clock starts), as a worker that has run a while has: the site's pages,
    browsers and referrers kept, its visitors all new."""
    timer, wrap, _ = INTERFACES[iface]
    if kind not in WARM_WALKS:
        return wrap  # type: ignore[no-any-return]

    def warmed(app: Any) -> Any:
        middleware = wrap(app)
        scopes = fresh_requests(kind, 2 * n)
        timer(middleware, scopes if iface == "ASGI" else [environ(s) for s in scopes], 2 * n)
        return middleware

    return warmed


def built_context(iface: str, wrap: Any, request: Any) -> Any:
    """The context the middleware gives ``request``, read the way a tracking call reads it."""
    seen: list[Any] = []

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        seen.append(fanout_context.current())

    def wsgi(environ: Any, start_response: Any) -> list[bytes]:
        seen.append(fanout_context.current())
        return []

    if iface == "ASGI":
        asyncio.run(wrap(asgi)(request, _receive, _send))
    else:
        wrap(wsgi)(request, _start_response)
    return seen[0]


def add_same_event(iface: str, wrap: Any, requests: list[dict[str, Any]]) -> None:
    """Store in each request the event the middleware would give its ``track()`` call.

    Each read by a middleware of its own, so the timed middleware's kept readings stay cold.
    The values are copied into plain dicts: what a handler without the middleware passes.
    """
    for request in requests:
        ctx = built_context(iface, wrap, request)
        anonymous_id = None if ctx.anonymous_id_generated else ctx.anonymous_id
        request[SAME_EVENT] = (anonymous_id, dict(ctx.values) or None)


def paired_us(
    timer: Callable[[Any, Any, int], float],
    bare: Any,
    wrap: Callable[[Any], Any],
    app: Any,
    reqs: Any,
    n: int,
    reps: int,
) -> tuple[float, float]:
    """(median bare µs per request, median of (``wrap(app)`` − bare) µs), runs interleaved.

    Each run of the wrapped app gets a new middleware, built before its clock starts, so
    what one run kept cannot serve the next (the new-visitor row's visitors stay new).
    """
    bares, diffs = [], []
    timer(bare, reqs, n // 10 or 1)  # warm both paths up
    timer(wrap(app), reqs, n // 10 or 1)
    for rep in range(reps):
        if rep % 2:  # alternate the order, so drift in the machine's load cancels out
            w = timer(wrap(app), reqs, n)
            b = timer(bare, reqs, n)
        else:
            b = timer(bare, reqs, n)
            w = timer(wrap(app), reqs, n)
        bares.append(b)
        diffs.append(w - b)
    return statistics.median(bares) * 1e6, statistics.median(diffs) * 1e6


def reference_us(reps: int) -> float:
    """This machine's speed now: CPU µs of ``sum(range(100))``.

    Every figure scales with it: compare it before comparing figures taken on two machines
    (or on one shared machine under two different loads).
    """
    runs = []
    for _ in range(reps):
        start = time.thread_time()
        for _ in range(20_000):
            sum(range(100))
        runs.append((time.thread_time() - start) / 20_000)
    return statistics.median(runs) * 1e6


def fresh(request: dict[str, Any]) -> dict[str, Any]:
    """``request`` (a scope or an environ) with new objects for its header values, as a
    server makes for each request: nothing hashed or read before is carried over."""
    copy = dict(request)
    for name, value in request.items():
        if name == "headers":
            copy[name] = [(bytes(bytearray(n)), bytes(bytearray(v))) for n, v in value]
        elif type(value) is bytes:
            copy[name] = bytes(bytearray(value))
        elif type(value) is str:  # decoding makes a new str, with no hash computed yet
            copy[name] = value.encode("utf-8").decode("utf-8")
        elif name in ("client", "server"):  # the scope's (host, port)
            copy[name] = (value[0].encode().decode(), value[1])
    return copy


def fresh_requests(kind: str, n: int) -> list[dict[str, Any]]:
    """``n`` requests of ``kind``, each of new objects (:func:`fresh`)."""
    base = requests(kind, n)
    return [fresh(base[i % len(base)]) for i in range(n)]


def with_same_event(iface: str, scopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``scopes`` as ``iface`` takes them (WSGI: environs), each holding the event the
    middleware gives it (:func:`add_same_event`)."""
    reqs = scopes if iface == "ASGI" else [environ(s) for s in scopes]
    add_same_event(iface, INTERFACES[iface][1], reqs)
    return reqs


def null_client() -> fanout.Client:
    """The client every handler tracks with: the null provider, nothing from the outside."""
    client = fanout.Client(
        providers=["null"], environ={}, load_entry_points=False, register_atexit=False
    )
    if client._stage is not None:
        _STAGES.append(client._stage)
    return client


def count_run(iface: str, kind: str, app_name: str, passes: int, n: int) -> None:
    """The body of one ``--instructions`` process: a warm-up and 3 passes prepared, the
    warm-up and ``passes`` of them run."""
    import gc

    client = null_client()
    timer, _, index = INTERFACES[iface]
    apps = handlers(client)
    wrap = middleware_of(iface, kind, n)
    # A warm worker is one middleware for all passes (its visitors new in each): a pass
    # then meets what the passes before it kept, which the one-pass run does not, but
    # after the warm-up that is next to nothing (the site is kept by then).
    shared = wrap(apps["track"][index]) if kind in WARM_WALKS else None
    prepared = []
    for _ in range(4):  # the first to warm up with
        reqs = [fresh(r) for r in with_same_event(iface, fresh_requests(kind, n))]
        app = (shared or wrap(apps["track"][index])) if app_name == "mw" else apps["same"][index]
        prepared.append((app, reqs))
    warm_app, warm_reqs = prepared[0]  # imports and first calls, in both runs alike
    timer(warm_app, warm_reqs, min(n, 50))
    gc.collect()
    gc.disable()  # to the end: a collection after the passes would grow with them
    for app, reqs in prepared[4 - passes:]:
        timer(app, reqs, n)
    client.shutdown(timeout=5)


def _instructions_of(args: list[str]) -> int:
    """Instructions of this script run with ``args`` under cachegrind."""
    import os
    import re
    import subprocess
    import sys

    out = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, os.path.abspath(__file__), *args],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
    ).stderr
    found = re.search(r"I\s+refs:\s+([\d,]+)", out)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {out[-500:]}")
    return int(found.group(1).replace(",", ""))


def instructions(n: int, only: str | None, kinds: list[str]) -> None:
    """The ``--instructions`` table (see the module docstring), two processes at a time."""
    import concurrent.futures

    jobs: dict[tuple[str, str, str, int], Any] = {}
    ifaces = [i for i in ("ASGI", "WSGI") if not only or only == i.lower()]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for iface in ifaces:
            for kind in kinds:
                for app in ("mw", "same"):
                    for passes in (1, 3):
                        jobs[iface, kind, app, passes] = pool.submit(
                            _instructions_of,
                            ["--count", iface, kind, app, str(passes), "--requests", str(n)],
                        )
        counted = {key: job.result() for key, job in jobs.items()}
    client = null_client()
    apps = handlers(client)
    rows = []
    try:
        for iface in ifaces:
            timer, _, index = INTERFACES[iface]
            same = apps["same"][index]
            for kind in kinds:
                per = {app: (counted[iface, kind, app, 3] - counted[iface, kind, app, 1]) / (2 * n)
                       for app in ("mw", "same")}
                reqs = with_same_event(iface, fresh_requests(kind, n))
                same_us = statistics.median(timer(same, reqs, n) for _ in range(11)) * 1e6
                rows.append((iface, kind, per["mw"] - per["same"], per["same"], same_us))
    finally:
        client.shutdown(timeout=5)
    rate = sum(row[3] for row in rows) / sum(row[4] for row in rows)
    print(f"{n} requests per pass; instructions per request of the middleware + track() "
          f"minus the bare app sending the same event (valgrind cachegrind), and ≈ µs at the "
          f"same-event app's rate here, {rate / 1000:.2f} k instructions per µs; "
          f"target {TARGET_US:.0f} µs\n")
    print(f"{'':5} {'request':36} {'middleware':>12} {'≈ µs':>7} {'/ target':>8} "
          f"{'same event':>12} {'its µs':>7}")
    for iface, kind, own, same_instr, same_us in rows:
        print(f"{iface:5} {kind:36} {own:12,.0f} {own / rate:7.1f} "
              f"{own / rate / TARGET_US:7.2f}x {same_instr:12,.0f} {same_us:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per timed run")
    parser.add_argument("--reps", type=int, default=11, help="repetitions (median taken)")
    parser.add_argument("--only", choices=["asgi", "wsgi"], help="time one interface only")
    parser.add_argument("--kind", action="append", metavar="REQUEST",
                        help="only this kind of request (repeatable; the table's names)")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions under valgrind instead of timing")
    parser.add_argument("--count", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    kinds = ["empty", "cookies", "cookies+headers", NEW_ACTIVITY, "cookies, new visitor each time",
             NEW_KEPT, *SESSIONS, *WALKS, *WARM_WALKS]
    if args.kind:
        unknown = set(args.kind) - set(kinds)
        if unknown:
            parser.error(f"unknown --kind {sorted(unknown)}; one of {kinds}")
        kinds = [kind for kind in kinds if kind in args.kind]
    if args.count:
        iface, kind, app_name, passes = args.count
        count_run(iface, kind, app_name, int(passes), args.requests)
        return
    if args.instructions:
        instructions(args.requests, args.only, kinds)
        return
    client = null_client()
    apps = handlers(client)
    print(
        f"fanout {fanout.__version__} from {fanout.__file__.rsplit('/', 2)[0]}\n"
        f"{args.requests} requests per run, median of {args.reps} runs, "
        f"CPU µs per request on the calling thread, the reading of the request contexts\n"
        f"the client's stage does off the request's thread included; target {TARGET_US:.0f} µs\n"
    )
    print(f"{'':5} {'request':36} {'handler':8} {'bare app':>9} {'track()':>8} {'+data':>7} "
          f"{'middleware':>10} {'/ target':>8} {'vs bare':>8}")
    try:
        for iface, (timer, _, index) in INTERFACES.items():
            if args.only and args.only != iface.lower():
                continue
            for kind in kinds:
                reqs = with_same_event(iface, requests(kind, args.requests))
                wrap = middleware_of(iface, kind, args.requests)
                noop_bare, noop_mw = paired_us(
                    timer, apps["noop"][index], wrap, apps["noop"][index], reqs,
                    args.requests, args.reps,
                )
                track_bare, track_mw = paired_us(
                    timer, apps["track"][index], wrap, apps["track"][index], reqs,
                    args.requests, args.reps,
                )
                same_bare, fair = paired_us(
                    timer, apps["same"][index], wrap, apps["track"][index], reqs,
                    args.requests, args.reps,
                )
                print(f"{iface:5} {kind:36} {'noop':8} {noop_bare:9.2f} {'':>8} {'':>7} "
                      f"{noop_mw:10.2f} {noop_mw / TARGET_US:7.2f}x {noop_mw:8.2f}", flush=True)
                print(f"{iface:5} {kind:36} {'track':8} {track_bare:9.2f} "
                      f"{track_bare - noop_bare:8.2f} {same_bare - track_bare:7.2f} "
                      f"{fair:10.2f} {fair / TARGET_US:7.2f}x {track_mw:8.2f}", flush=True)
    finally:
        client.shutdown(timeout=5)
    print(f"\nmachine reference: sum(range(100)) = {reference_us(args.reps):.2f} µs CPU; "
          "the figures scale with it")


if __name__ == "__main__":
    main()
