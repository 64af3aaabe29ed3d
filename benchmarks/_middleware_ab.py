"""The request middleware's own CPU per request inside a real uvicorn server, beside the same
app without it, in the same process: ``app_latency.py --middleware``.

Why not two app processes compared by their CPU over a load (the other cases of
``app_latency.py``): a process's CPU per request moves by tens of µs from one 1 s load to
the next on a shared machine, and the figure sought is a few µs. Here one uvicorn worker
serves two copies of the same Starlette app, each request sent to both in turn over one
keep-alive connection:

- **A**, the app without the middleware, its handler tracking the *same event* the
  middleware gives: the browser's id and the request's context passed to ``track()`` by
  hand, as plain dicts (read beforehand by a third, recording middleware from the same
  request as the server parsed it, as glue code would have built them);
- **B**, the same app inside ``FanoutMiddleware``, its handler tracking without them.

Each request's CPU is taken on the server's thread (``time.thread_time`` around the app,
inside uvicorn: the server's parsing, and fanout's delivery thread, are outside it), so the
pair's difference is the middleware's own CPU for that request: its wrapper, reading the
request, and the event's merge, against the same event's explicit arguments checked by
``track()``. Both copies run amid uvicorn's and Starlette's own code, so both pay what a
real server costs Python code (caches and branch predictors shared with the rest of the
request): what the direct calls of ``middleware_cost.py`` cannot show. Per round, the mean
of the differences (the 1 % largest and smallest left out: a context switch or a full
garbage collection lands on one side of a pair); the median over rounds is printed, with
the bare app's own median CPU per request for scale.

Every event is checked: the server's clients (one per copy, as each app has its own)
keep them in memory, and for every request
the two copies' events must carry the same person, anonymous id and context, one event
per copy and request, or the run fails.

A last row is for scale, not the middleware: :func:`minimal_reading`, the fewest Python
steps that read a returning visitor walking pages (no checks, nothing bounded), in the
handler of a copy without the middleware, against the same copy without it.

The requests are ``middleware_cost.py``'s (a browser's headers and cookies, visitors'
sessions, new visitors), each with the headers a Chrome navigation also sends and the
visitor's address in ``X-Forwarded-For`` (uvicorn takes it from its own address,
127.0.0.1, as from a proxy it trusts by default).
"""

from __future__ import annotations

import itertools
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import middleware_cost as mc  # noqa: E402

#: What Chrome sends with a navigation besides what fanout reads (``mc`` has those).
CHROME = [
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
     b"image/webp,*/*;q=0.8"),
    (b"accept-encoding", b"gzip, deflate, br, zstd"),
    (b"sec-ch-ua", b'"Chromium";v="126", "Not.A/Brand";v="24"'),
    (b"sec-ch-ua-mobile", b"?0"),
    (b"sec-ch-ua-platform", b'"Linux"'),
    (b"sec-fetch-dest", b"document"),
    (b"sec-fetch-mode", b"navigate"),
    (b"sec-fetch-site", b"same-origin"),
    (b"upgrade-insecure-requests", b"1"),
]
#: The request header that tells the server which copy serves a request, and which one.
TAG = b"x-bench"

#: (row, handler, ``middleware_cost`` kind of request). ``noop`` tracks nothing, as most
#: requests: the middleware's wrapper alone. ``floor`` is for scale, not the middleware:
#: :func:`minimal_reading` in the handler of a copy without the middleware, against the
#: same copy without it, what a reading of the fewest Python steps costs in the server.
ROWS = [
    ("untracked request, a returning visitor", "noop", "cookies"),
    ("a returning visitor, one page", "track", "cookies"),
    ("a returning visitor, new activity time", "track", mc.NEW_ACTIVITY),
    ("sessions of 10, walking, warm worker", "track", "sessions of 10, walking, warm worker"),
    ("a new visitor each time", "track", "cookies, new visitor each time"),
    ("no cookie, no header", "track", "empty"),
    ("walking, a minimal reading alone (for scale)", "floor",
     "sessions of 10, walking, warm worker"),
]

#: The PostHog cookie's session field, where its activity digits start (``$sesid":[``).
_SESSION_MARK = b"%22%24sesid%22%3A%5B"
_SLOTS = {b"cookie": 0, b"user-agent": 1, b"accept-language": 2, b"referer": 3, b"host": 4}


def minimal_reading(scope: Any, kept: dict[Any, Any]) -> Any:
    """The fewest Python steps that read a returning PostHog visitor's request: the
    headers' loop, the cookie's activity digits found and the visitor recalled without
    them, the session's end checked, the page's values merged over the visitor's. No
    check of any value, no other SDK, no consent, nothing kept bounded: a floor, not a
    reader."""
    found: list[Any] = [None] * 5
    for name, value in scope["headers"]:
        slot = _SLOTS.get(name)
        if slot is not None:
            found[slot] = value
    cookie, user_agent, _, referrer, host = found
    client = scope["client"][0]
    if cookie is None:
        return None
    start = cookie.find(_SESSION_MARK)
    if start < 0:
        return None
    start += len(_SESSION_MARK)
    end = cookie.find(b"%2C", start)
    key = (cookie[end : end + 64], start, len(cookie) - end)
    visitor = kept.get(key)
    if visitor is None:
        kept[key] = visitor = (
            {"session_id": "s", "ip": client, "user_agent": user_agent.decode("latin-1")},
            user_agent, client,
        )
    own, kept_agent, kept_client = visitor
    if kept_agent != user_agent or kept_client != client:
        return None
    if time.time() > int(cookie[start:end]) / 1000 + 1800:
        return None
    path = scope["path"]
    return {**own, "url": f"https://{host.decode('latin-1')}{path}", "path": path,
            "referrer": referrer.decode("latin-1")}


# -- the server (``--serve``) -------------------------------------------------------------


def build_app(handler: str) -> Any:
    """The timed dispatcher over the two copies of the app (and the recording reader)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    import fanout
    from fanout.integrations._request import RequestReader
    from fanout.integrations.asgi import FanoutMiddleware, read_scope
    from fanout.testing import InMemoryProvider

    # One client per copy, as each app has its own: the bare copy's calls never meet the
    # other's deferred stage (a client sends every call through its stage while it holds
    # events, to keep them in call order, which would move the bare copy's own fan-out off
    # the server's thread too).
    memory, memory_a = InMemoryProvider(), InMemoryProvider()
    client = fanout.Client(
        providers=[memory], environ={}, load_entry_points=False, register_atexit=False
    )
    client_a = fanout.Client(
        providers=[memory_a], environ={}, load_entry_points=False, register_atexit=False
    )
    track, track_a = client.track, client_a.track
    #: request number -> (anonymous id, context), as the recording middleware read them.
    records: dict[int, tuple[str | None, dict[str, Any]]] = {}
    kept: dict[Any, Any] = {}  # minimal_reading's visitors
    times: dict[str, list[tuple[int, float]]] = {"a": [], "b": []}

    def work() -> tuple[list[dict[str, Any]], int]:
        rows = [{"sku": f"sku-{i}", "qty": (i * 7) % 5, "price": (i * 13) % 100} for i in range(60)]
        return rows, sum(r["qty"] * r["price"] for r in rows)

    def copy(side: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> JSONResponse:
            rows, total = work()
            number = request.scope["bench"]
            anonymous_id, context = records.get(number, (None, {}))
            properties = {"total": total, "side": side, "request": number}
            if handler == "floor" and side == "b":
                minimal_reading(request.scope, kept)
            if handler == "track":
                if side == "a":
                    track_a("order.viewed", person_id="user_1", properties=properties,
                          anonymous_id=anonymous_id, context=context)
                else:
                    track("order.viewed", person_id="user_1", properties=properties)
            return JSONResponse({"total": total, "top": rows[:5]})

        return endpoint

    paths = sorted({"/", "/checkout", *mc.SITE_PATHS})
    bare = Starlette(routes=[Route(p, copy("a")) for p in paths])
    wrapped: Any = Starlette(routes=[Route(p, copy("b")) for p in paths])
    if handler != "floor":
        wrapped = FanoutMiddleware(wrapped, client=client)
    recorder = RequestReader()  # the bare side reads its requests apart: its own store
    clock = time.thread_time

    def stage_cpu() -> tuple[float, int]:
        """CPU seconds of the client's deferred stage's thread, and the events it
        completed: the middleware's reading, off the server's thread."""
        stage = client._stage
        thread = None if stage is None else stage._thread
        if stage is None or thread is None or thread.ident is None:
            return 0.0, 0
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident)), stage.completed

    def stats() -> dict[str, Any]:
        off_thread, completed = stage_cpu()  # before the flush, which drains on this thread
        client.flush(timeout=30)
        client_a.flush(timeout=30)
        events: dict[tuple[int, str], list[Any]] = {}
        for event in [*memory.events, *memory_a.events]:
            events.setdefault((event.properties["request"], event.properties["side"]),
                              []).append(event)
        differ = 0
        for number in {n for n, _ in events}:
            a, b = events.get((number, "a"), []), events.get((number, "b"), [])
            if number >= 0 and (
                len(a) != 1 or len(b) != 1
                or (a[0].person_id, a[0].anonymous_id, dict(a[0].context))
                != (b[0].person_id, b[0].anonymous_id, dict(b[0].context))
            ):
                differ += 1
        return {
            "times": times,
            "events": {"a": sum(len(v) for (n, s), v in events.items() if s == "a"),
                       "b": sum(len(v) for (n, s), v in events.items() if s == "b")},
            "differ": differ,
            "stage": {"cpu": off_thread, "completed": completed},
        }

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await wrapped(scope, receive, send)  # the lifespan
        headers = scope["headers"]
        name, tag = headers[-1]
        if name != TAG:
            raise ValueError("every request names its copy")
        scope["headers"] = headers[:-1]
        side, _, number = tag.decode().partition(":")
        scope["bench"] = int(number or -1)
        if side in ("stats", "record"):
            body = b"{}"
            if side == "stats":
                body = json.dumps(stats()).encode()
            else:
                ctx = read_scope(recorder, dict(scope), False)
                records[scope["bench"]] = (ctx.anonymous_id, dict(ctx.values))
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return None
        if side == "warm":
            return await wrapped(scope, receive, send)
        target = bare if side == "a" else wrapped
        start = clock()
        await target(scope, receive, send)
        times[side].append((scope["bench"], clock() - start))
        return None

    return app


def serve(handler: str, port: int) -> None:
    import uvicorn

    uvicorn.run(build_app(handler), host="127.0.0.1", port=port, log_level="warning",
                access_log=False, http="httptools", loop="asyncio")


# -- the client ---------------------------------------------------------------------------


def raw_request(scope: dict[str, Any], tag: bytes) -> bytes:
    """The HTTP/1.1 request a browser sends for ``scope``, through a proxy, tagged."""
    query = scope["query_string"]
    target = scope["path"].encode() + (b"?" + query if query else b"")
    lines = [b"GET " + target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in (*scope["headers"], *CHROME)]
    lines.append(b"x-forwarded-for: " + scope["client"][0].encode())
    lines.append(TAG + b": " + tag)
    return b"\r\n".join(lines) + b"\r\n\r\n"


class Connection:
    """One keep-alive connection; :meth:`get` sends a request and reads its whole response."""

    def __init__(self, port: int) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def get(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = self.buf[:end].lower()
                at = head.find(b"content-length:")
                length = int(head[at + 15 :].split(b"\r\n", 1)[0])
                if len(self.buf) >= end + 4 + length:
                    if not head.startswith(b"http/1.1 200"):
                        raise RuntimeError(f"the app answered {head[:40]!r}")
                    body = self.buf[end + 4 : end + 4 + length]
                    self.buf = self.buf[end + 4 + length :]
                    return body
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the app closed the connection")
            self.buf += data

    def close(self) -> None:
        self.sock.close()


def _requests(kind: str, count: int) -> list[dict[str, Any]]:
    found = mc.requests(kind, count)
    return [found[i % len(found)] for i in range(count)]


def measure_row(handler: str, kind: str, requests: int, rounds: int, warm: int) -> dict[str, Any]:
    """One row: a fresh app process, ``warm`` requests of other visitors through the
    middleware, then ``rounds`` of ``requests`` pairs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", handler, "--port", str(port)], cwd=HERE
    )
    try:
        conn = Connection(port)
        try:
            for scope in _requests(kind, warm):
                conn.get(raw_request(scope, b"warm"))
            planned = [_requests(kind, requests) for _ in range(rounds)]
            numbers = itertools.count()
            tagged = [[(next(numbers), scope) for scope in run] for run in planned]
            for run in tagged:
                for number, scope in run:
                    conn.get(raw_request(scope, b"record:%d" % number))
            for run in tagged:
                for position, (number, scope) in enumerate(run):
                    a = raw_request(scope, b"a:%d" % number)
                    b = raw_request(scope, b"b:%d" % number)
                    for request in (a, b) if position % 2 else (b, a):
                        conn.get(request)
            result = json.loads(conn.get(b"GET / HTTP/1.1\r\nhost: x\r\nx-bench: stats\r\n\r\n"))
        finally:
            conn.close()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    tracked = requests * rounds if handler == "track" else 0
    expected = {"a": tracked, "b": tracked + (warm if handler == "track" else 0)}
    if result["events"] != expected or result["differ"]:
        raise RuntimeError(
            f"{kind}: events {result['events']} (expected {expected}), "
            f"{result['differ']} requests whose two events differ"
        )
    a_times, b_times = dict(result["times"]["a"]), dict(result["times"]["b"])
    shares, bare = [], []
    for run in tagged:
        diffs = sorted((b_times[n] - a_times[n]) * 1e6 for n, _ in run)
        cut = len(diffs) // 100
        shares.append(statistics.fmean(diffs[cut : len(diffs) - cut]))
        bare.append(statistics.median(a_times[n] * 1e6 for n, _ in run))
    stage = result["stage"]
    off = stage["cpu"] / stage["completed"] * 1e6 if stage["completed"] else 0.0
    return {"share": statistics.median(shares), "low": min(shares), "high": max(shares),
            "bare": statistics.median(bare), "off": off}


def run(requests: int, rounds: int, processes: int = 3, warm: int = 600) -> None:
    """Print the table: every row of :data:`ROWS`, each measured in ``processes`` app
    processes of its own, taken in turns (a process's figure moves by a few µs with its
    memory layout, more than its rounds do); the median process is printed, and the
    range of every round of every process."""
    print(f"The middleware's own CPU per request inside uvicorn ({requests} request pairs x "
          f"{rounds} rounds x {processes} app processes per row; µs on the server's thread;"
          f" target {mc.TARGET_US:.0f} µs)")
    found: dict[str, list[dict[str, Any]]] = {row: [] for row, _, _ in ROWS}
    for turn in range(processes):
        for row, handler, kind in ROWS:
            found[row].append(measure_row(handler, kind, requests, rounds, warm))
        print(f"  process {turn + 1}/{processes}: "
              + ", ".join(f"{found[row][-1]['share']:.1f}" for row, _, _ in ROWS), flush=True)
    print(f"{'request':46s} {'bare app':>9s} {'middleware':>11s} {'all rounds':>15s} "
          f"{'/ target':>9s} {'off-thread':>11s} {'whole':>7s}")
    for row, _, _ in ROWS:
        share = statistics.median(f["share"] for f in found[row])
        bare = statistics.median(f["bare"] for f in found[row])
        off = statistics.median(f["off"] for f in found[row])
        low, high = min(f["low"] for f in found[row]), max(f["high"] for f in found[row])
        print(f"{row:46s} {bare:8.1f}  {share:10.1f}  {low:6.1f} - {high:5.1f}  "
              f"{share / mc.TARGET_US:8.2f}x {off:10.1f}  {share + off:6.1f}")
    print("\nmiddleware: CPU on the server's thread, the request path (held to the target).\n"
          "off-thread: CPU per event of the client's deferred stage, which reads each request's\n"
          "context and completes its events off that thread (fanout/_deferred.py); whole: the\n"
          "two added, the middleware's CPU wherever it runs, beside the same event passed by\n"
          "hand (whose checks and IP masking the bare app pays on its own thread).")


if __name__ == "__main__":
    if sys.argv[1:2] != ["--serve"]:
        sys.exit("run by app_latency.py --middleware")
    serve(sys.argv[2], int(sys.argv[4]))
