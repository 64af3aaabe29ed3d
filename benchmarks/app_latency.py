"""What an app feels: a real uvicorn + Starlette app's latency and CPU with analytics inside it.

    python benchmarks/app_latency.py [--quick] [--rounds 9] [--duration 1] [--cases ...]
    python benchmarks/app_latency.py --middleware [--quick] [--requests 1000]

One uvicorn worker serves a Starlette endpoint that does a little work (builds and encodes a
small order summary) and tracks one event per request. Each case is its own app process,
all of them up for the whole run:

- ``none``: no analytics (the baseline every "added" figure is measured against);
- ``none-2``: a second no-analytics app, measured like the others: what "added" reads when
  nothing is added (the noise band);
- ``fanout-1`` / ``fanout-4`` / ``fanout-8``: fanout delivering to 1 (posthog), 4 (posthog,
  segment, mixpanel, collector) or 8 (those and a second instance of each) providers;
- ``fanout-1p`` / ``fanout-4p`` / ``fanout-8p``: the same in process mode
  (``FANOUT_DELIVERY=process``): the app hands each event once to a delivery process that
  runs the providers;
- ``posthog-sdk``: the PostHog SDK alone, with its defaults and its one backend;
- (by ``--cases`` only) ``fanout-1+mw``: ``fanout-1`` with
  ``fanout.integrations.asgi.FanoutMiddleware`` around the app, so its event carries the
  request's context and the browser's id;
- ``fanout-1+ctx``: ``fanout-1`` sending that same event without the middleware (the id and
  context passed to ``track()`` by hand, computed once). ``fanout-1+ctx`` minus
  ``fanout-1`` is what carrying and delivering the context costs the process.
  ``fanout-1+mw`` minus ``fanout-1+ctx`` is the middleware's own CPU, but two processes'
  CPU over 1 s loads moves by tens of µs per request from load to load: ``--middleware``
  measures it instead.

``--middleware`` (:mod:`_middleware_ab`): the middleware's own CPU per request, held to
its target of 10 µs, inside one uvicorn process serving the same app with and without
it, each request sent to both in turn and timed on the server's thread, for several
kinds of request (untracked, a returning visitor, visitors walking pages, a new visitor);
every request's two events checked to be the same. ``--requests`` pairs per round, 5
rounds, in 3 app processes per row (``--quick``: half the pairs, 3 rounds, 1 process).

Every request carries what a browser with the PostHog and Segment SDKs sends (their
cookies, user agent, referrer, locale), whatever the case, so all cases parse the same bytes.

Every backend is one local sink process (``_sink.py``) answering 200. Two loads, each bounded
by ``--duration`` seconds:

- **closed loop at saturation**: ``wrk -t1 -c8`` (Debian's ``wrk``; a Python closed-loop
  generator if it is missing), as many requests as the app can serve;
- **open loop at a fixed rate**: requests scheduled at ``--rate`` per second (default: half
  of the no-analytics maximum, measured at the start of the run by the closed-loop load
  above) by a Python generator in its own process, each latency measured
  from the request's scheduled time, so a stall counts for every request it delays (no
  coordinated omission).

Reported per case: requests/s, p50 / p99 / p99.9 latency, and CPU per request (user + system
from ``/proc``, from the start of the load until every tracked event was delivered) of the
app process alone and of the app with its delivery process (the ``p`` cases' second
process; the same figure for the others).

How the figures are compared, on a noisy shared machine: many short repetitions (default 9
of 1 s loads; ``--quick``: 5), each running every case once, in an order rotated per
repetition, each case between two runs of ``none``::

    none A none B none C ... none

A case's *added* figures in a repetition are its figure minus each of the two ``none``
runs beside it (seconds apart, so the machine's other load and its drift weigh on both
alike); the table gives their median over repetitions. ``none-2`` goes through the same
steps; the median size of its added p99 is the **noise band**. Each target is then
judged on the medians: *met* or *NOT met* only when the two sides differ by more than the
band, *within noise* otherwise:

- fanout-4's added p99 at most the PostHog SDK's added p99;
- fanout-8's added p99 at most 1.25x fanout-1's, at saturation and at the fixed rate;
- the same two for the process-mode cases (fanout-4p, fanout-8p against fanout-1p).

The load average at the start and the end is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _sink import PROVIDER_SETS, Sink  # noqa: E402

#: Every case; ``--cases`` picks among them (default: :data:`DEFAULT_CASES`).
CASES = (
    "none",
    "fanout-1",
    "fanout-4",
    "fanout-8",
    "fanout-1p",  # process mode (FANOUT_DELIVERY=process): see fanout_process_client
    "fanout-4p",
    "fanout-8p",
    "posthog-sdk",
    "fanout-1+mw",  # fanout-1 with the ASGI middleware around the app
    "fanout-1+ctx",  # fanout-1 sending the same event as +mw, without the middleware
)
#: The issue's cases (the middleware's two are asked for by name).
DEFAULT_CASES = CASES[:8]
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# -- the app (``--serve``) ---------------------------------------------------------------


def build_app(case: str, sink: str, port: int = 0) -> Any:
    """The Starlette app for ``case``: ``GET /`` does the work and tracks one event."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    tracked = 0
    track: Any = None
    flush: Any = None
    close: Any = None
    if case.startswith("fanout-"):
        from _sink import fanout_client

        size = case.split("-")[1].split("+")[0]
        if size.endswith("p"):
            client = fanout_process_client(sink, PROVIDER_SETS[int(size[:-1])])
        else:
            client = fanout_client(sink, PROVIDER_SETS[int(size)])

        def track(person: str, props: dict[str, Any]) -> None:
            client.track("order.viewed", person_id=person, properties=props)

        if case.endswith("+ctx"):
            anonymous_id, context = same_event(port)

            def track(person: str, props: dict[str, Any]) -> None:
                client.track(
                    "order.viewed",
                    person_id=person,
                    properties=props,
                    anonymous_id=anonymous_id,
                    context=context,
                )

        def flush() -> dict[str, Any]:
            report = client.flush(timeout=60)
            return {"delivered": [r.delivered for r in report.values()]}

        def close() -> None:
            client.shutdown(timeout=5)

    elif case == "posthog-sdk":
        from posthog import Posthog

        ph = Posthog("phc_bench", host=sink)

        def track(person: str, props: dict[str, Any]) -> None:
            ph.capture("order.viewed", distinct_id=person, properties=props)

        def flush() -> dict[str, Any]:
            ph.flush()
            return {"delivered": None}

        close = ph.shutdown

    async def order(request: Request) -> JSONResponse:
        nonlocal tracked
        n = int(request.query_params.get("n", "7"))
        rows = [{"sku": f"sku-{i}", "qty": (i * n) % 5, "price": (i * 13) % 100} for i in range(60)]
        total = sum(r["qty"] * r["price"] for r in rows)
        if track is not None:
            track(f"user_{n}", {"total": total, "items": len(rows), "currency": "usd"})
            tracked += 1
        return JSONResponse({"total": total, "top": rows[:5]})

    async def flush_endpoint(request: Request) -> JSONResponse:
        result = await asyncio.to_thread(flush) if flush is not None else {"delivered": None}
        return JSONResponse({"tracked": tracked, **result})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close is not None:
            close()

    app: Any = Starlette(
        routes=[Route("/", order), Route("/_flush", flush_endpoint)], lifespan=lifespan
    )
    if case.endswith("+mw"):
        from fanout.integrations.asgi import FanoutMiddleware

        app = FanoutMiddleware(app, client=client)
    return app


def same_event(port: int) -> tuple[str | None, dict[str, Any]]:
    """The browser's id and the context ``FanoutMiddleware`` gives this app's requests."""
    from fanout.integrations._request import request_values

    headers = {name.lower(): value for name, value in browser_headers().items()}
    headers["host"] = f"127.0.0.1:{port}"
    return request_values(
        headers, client_ip="127.0.0.1", scheme="http", host=None, path="/", query=""
    )


def browser_headers() -> dict[str, str]:
    """What a browser running the PostHog and Segment SDKs sends with each request."""
    now_ms = int(time.time() * 1000)
    posthog = json.dumps(
        {
            "distinct_id": "0190f5a2-7d1e-7c3b-9a4f-2b1c0d9e8f7a",
            "$device_id": "0190f5a2-7d1e-7c3b-9a4f-2b1c0d9e8f7a",
            "$user_state": "anonymous",
            "$sesid": [now_ms, "0190f5a2-7d1e-7c3b-9a4f-aaaaaaaaaaaa", now_ms - 60_000],
        },
        separators=(",", ":"),
    )
    return {
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126 Safari/537.36",
        "Accept-Language": "en-GB,en;q=0.9",
        "Referer": "https://news.example/article",
        "Cookie": f"ph_phc_bench_posthog={urllib.parse.quote(posthog, safe='')}; "
        "ajs_anonymous_id=4f0c7d3e-1111-4222-8333-944445555666; csrftoken=abc123",
    }


def fanout_process_client(sink: str, names: tuple[str, ...]) -> Any:
    """The ``fanout-Np`` cases: the same providers, delivered by a process beside the app."""
    from _sink import sink_environ

    import fanout

    env = {**sink_environ(sink), "FANOUT_DELIVERY": "process"}
    return fanout.Client(providers=list(names), environ=env, register_atexit=False)


def serve(case: str, port: int, sink: str) -> None:
    import uvicorn

    uvicorn.run(
        build_app(case, sink, port),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="asyncio",
    )


# -- the Python load generator (``--load``) -----------------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive connection: sends a GET, reads the response by Content-Length."""

    def __init__(self, gen: _LoadGen) -> None:
        self.gen = gen
        self.buf = b""
        self.scheduled = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, scheduled: float) -> None:
        self.scheduled = scheduled
        assert self.transport is not None
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].lower()
        i = head.find(b"content-length:")
        length = int(head[i + 15 :].split(b"\r\n", 1)[0]) if i >= 0 else 0
        if len(self.buf) < end + 4 + length:
            return
        ok = head.startswith(b"http/1.1 200")
        self.buf = self.buf[end + 4 + length :]
        self.gen.done(self, ok)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)


class _LoadGen:
    """Open loop (``rate`` > 0: requests on a fixed schedule, queued when every connection
    is busy, latency from the scheduled time) or closed loop (``rate`` == 0: ``conns``
    connections each sending its next request when the last one is answered)."""

    def __init__(self, host: str, port: int, rate: float, duration: float, conns: int) -> None:
        self.host, self.port = host, port
        self.rate, self.duration, self.conns = rate, duration, conns
        extra = "".join(f"{k}: {v}\r\n" for k, v in browser_headers().items())
        self.request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
        self.latencies: list[float] = []
        self.errors = 0
        self.free: list[_Conn] = []
        self.waiting: deque[float] = deque()
        self.open = 0
        self.max_conns = max(conns, 256)
        self.end = 0.0
        self.finished: asyncio.Future[None] | None = None

    async def _connect(self) -> None:
        self.open += 1
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError:
            self.open -= 1
            self.errors += 1
            return
        self._dispatch(conn)

    def _dispatch(self, conn: _Conn) -> None:
        now = time.perf_counter()
        if self.rate == 0:
            if now < self.end:
                conn.send(now)
                return
        elif self.waiting:
            conn.send(self.waiting.popleft())
            return
        self.free.append(conn)
        self._check_finished()

    def done(self, conn: _Conn, ok: bool) -> None:
        now = time.perf_counter()
        if ok:
            self.latencies.append(now - conn.scheduled)
        else:
            self.errors += 1
        self._dispatch(conn)

    def lost(self, conn: _Conn) -> None:
        self.open -= 1
        if conn in self.free:
            self.free.remove(conn)
        self._check_finished()

    def _check_finished(self) -> None:
        if (
            self.finished is not None
            and not self.finished.done()
            and time.perf_counter() >= self.end
            and not self.waiting
            and len(self.free) >= self.open
        ):
            self.finished.set_result(None)

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self.finished = loop.create_future()
        start = time.perf_counter()
        self.end = start + self.duration
        if self.rate == 0:
            await asyncio.gather(*(self._connect() for _ in range(self.conns)))
        else:
            await asyncio.gather(*(self._connect() for _ in range(self.conns)))
            i = 0
            while True:
                now = time.perf_counter()
                if now >= self.end:
                    break
                due = start + i / self.rate
                while due <= now:  # everything due by now, on the schedule's own times
                    if self.free:
                        self.free.pop().send(due)
                    else:
                        self.waiting.append(due)
                        if self.open < self.max_conns:
                            loop.create_task(self._connect())
                    i += 1
                    due = start + i / self.rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
        self._check_finished()
        try:
            await asyncio.wait_for(self.finished, 30)
        except asyncio.TimeoutError:
            self.errors += len(self.waiting)
        elapsed = time.perf_counter() - start
        for conn in self.free:
            if conn.transport is not None:
                conn.transport.close()
        lat = sorted(self.latencies)
        n = len(lat)

        def pct(p: float) -> float:
            return lat[min(n - 1, int(n * p / 100))] * 1e6 if n else float("nan")

        return {
            "requests": n,
            "seconds": elapsed,
            "errors": self.errors,
            "p50": pct(50),
            "p99": pct(99),
            "p999": pct(99.9),
        }


def load(url: str, rate: float, duration: float, conns: int) -> dict[str, Any]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    return asyncio.run(_LoadGen(host, int(port), rate, duration, conns).run())


# -- orchestration -------------------------------------------------------------------------

_WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %f, "errors": %d, "p50": %d, "p99": %d, "p999": %d}\\n',
    summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _descendants(pid: int) -> list[int]:
    """``pid``'s child processes and theirs (the delivery process of the ``p`` cases)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def _tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and every live descendant (a child that exited is not counted: the
    delivery process lives as long as the app)."""
    total = 0.0
    for p in [pid, *_descendants(pid)]:
        with contextlib.suppress(OSError):
            total += _cpu_seconds(p)
    return total


def _get(url: str, timeout: float = 120) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


class Server:
    """``with Server(case, sink) as server:`` the app in its own process at ``server.url``,
    stopped on exit."""

    def __init__(self, case: str, sink: str, switch_interval: float = 0.0) -> None:
        self.case, self.sink, self.switch_interval = case, sink, switch_interval

    def __enter__(self) -> Server:
        port = _free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                self.case,
                "--port",
                str(port),
                "--sink",
                self.sink,
            ],
        )
        self.url = url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=2).read()
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    raise RuntimeError(f"app for {self.case} did not start") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _wrk(url: str, duration: float, conns: int, script: str) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "-s", script, url + "/"],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    result: dict[str, Any] = json.loads(line)
    return result


def _pyload(url: str, rate: float, duration: float, conns: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            url,
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--conns",
            str(conns),
        ],
        capture_output=True,
        text=True,
        timeout=duration + 90,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(
    server: Server, mode: str, args: argparse.Namespace, script: str | None
) -> dict[str, Any]:
    """One load against a running app; adds CPU per request (the load and the flush)."""
    pid, url = server.proc.pid, server.url
    cpu0, tree0 = _cpu_seconds(pid), _tree_cpu_seconds(pid)
    if mode == "closed":
        if script is not None:
            result = _wrk(url, args.duration, args.conns, script)
        else:
            result = _pyload(url, 0, args.duration, args.conns)
    else:
        result = _pyload(url, args.rate, args.duration, args.conns)
    flushed = _get(url + "/_flush")
    cpu = _cpu_seconds(pid) - cpu0
    tree = _tree_cpu_seconds(pid) - tree0
    if flushed["delivered"] is not None and any(
        d != flushed["tracked"] for d in flushed["delivered"]
    ):
        raise RuntimeError(f"{server.case}: not every tracked event was delivered: {flushed}")
    if result["errors"]:
        raise RuntimeError(f"{server.case} {mode}: {result['errors']} failed requests")
    result["rps"] = result["requests"] / result["seconds"]
    result["cpu_us"] = cpu / max(1, result["requests"]) * 1e6
    result["cpu_all_us"] = tree / max(1, result["requests"]) * 1e6
    return result


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


#: The control: a second no-analytics app, run in a variant's slot. Its "added" figures
#: are what the method reads when nothing is added: the noise band.
CONTROL = "none-2"


def _added(sequence: list[tuple[str, dict[str, Any]]], key: str) -> dict[str, list[float]]:
    """Per case, two figures per repetition: the case's ``key`` minus each of the two
    ``none`` runs beside it (every case runs between two), so the machine's other load,
    and its drift, weigh on both sides of each difference alike. Single differences, not
    the difference to the two runs' mean: with a tail figure's right skew, a mean of two
    runs sits above a single run's median, and the medians would lean negative."""
    out: dict[str, list[float]] = {}
    for i, (case, result) in enumerate(sequence):
        if case == "none":
            continue
        before, after = sequence[i - 1][1], sequence[i + 1][1]
        out.setdefault(case, []).extend((result[key] - before[key], result[key] - after[key]))
    return out


def _band(added: dict[str, list[float]]) -> float:
    """The noise band: the median size of the control's added figure (no analytics
    minus no analytics), in the figure's unit."""
    return statistics.median(abs(x) for x in added[CONTROL])


def report(
    sequences: list[list[tuple[str, dict[str, Any]]]], cases: list[str], title: str
) -> tuple[dict[str, float], float]:
    """The table for one load; returns the median added p99 per case (ms) and the band."""
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    added: dict[str, dict[str, list[float]]] = {}
    for seq in sequences:
        for case, result in seq:
            runs[case].append(result)
    for key in ("p99", "p999", "cpu_us", "cpu_all_us"):
        per_case: dict[str, list[float]] = {}
        for seq in sequences:
            for case, values in _added(seq, key).items():
                per_case.setdefault(case, []).extend(values)
        added[key] = per_case
    band = _band(added["p99"]) / 1000
    print(f"\n{title}")
    print(
        f"{'case':12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} "
        f"{'CPU µs/req':>11} {'+p99 ms':>8} {'+p99.9 ms':>10} {'+CPU µs':>8} "
        f"{'all CPU µs':>11} {'+all µs':>8}"
    )
    medians: dict[str, float] = {}
    for case in cases:
        rs = runs[case]
        p50, p99, p999 = (_median(rs, k) / 1000 for k in ("p50", "p99", "p999"))
        if case == "none":
            plus = f"{'':8} {'':10} {'':8}"
            plus_all = ""
        else:
            medians[case] = statistics.median(added["p99"][case]) / 1000
            plus = (
                f"{medians[case]:8.2f} {statistics.median(added['p999'][case]) / 1000:10.2f} "
                f"{statistics.median(added['cpu_us'][case]):8.0f}"
            )
            plus_all = f"{statistics.median(added['cpu_all_us'][case]):8.0f}"
        print(
            f"{case:12} {_median(rs, 'rps'):8,.0f} {p50:8.2f} {p99:8.2f} {p999:9.2f} "
            f"{_median(rs, 'cpu_us'):11.0f} {plus} {_median(rs, 'cpu_all_us'):11.0f} {plus_all}"
        )
    control = ", ".join(f"{x / 1000:+.1f}" for x in added["p99"][CONTROL])
    print(
        f"noise band ±{band:.2f} ms: the median size of {CONTROL}'s added p99 (no analytics "
        f"minus no analytics: {control} ms; median {medians[CONTROL]:+.2f})"
    )
    return medians, band


def verdict(lhs: float, rhs: float, band: float) -> str:
    """``lhs <= rhs`` decided against the noise band: met or not met only when the
    difference is larger than the band, "within noise" otherwise."""
    diff = lhs - rhs
    if diff < -band:
        return "met"
    if diff > band:
        return "NOT met"
    return f"within noise ({diff:+.2f} ms, band ±{band:.2f})"


def _targets(mode: str, added: dict[str, float], band: float, suffix: str = "") -> None:
    """The issue's two targets, for the in-process cases (``suffix=""``) or the
    process-mode ones (``suffix="p"``)."""
    c1, c4, c8 = (f"fanout-{n}{suffix}" for n in (1, 4, 8))
    f1, f4, f8, ph = (added.get(c) for c in (c1, c4, c8, "posthog-sdk"))
    if f4 is not None and ph is not None:
        print(
            f"  {mode:10}: {c4} +p99 {f4:6.2f} ms <= PostHog SDK's {ph:6.2f} ms: "
            + verdict(f4, ph, band)
        )
    if f8 is not None and f1 is not None:
        bound = 1.25 * f1 if f1 > 0 else f1  # 1.25x a negative figure would lower the bar
        print(
            f"  {mode:10}: {c8} +p99 {f8:6.2f} ms <= 1.25 x {c1}'s {f1:6.2f} ms: "
            + verdict(f8, bound, band)
        )


def _by_case(sequences: list[list[tuple[str, dict[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    """Each case's runs, one per repetition (``none``: every one of its runs)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for seq in sequences:
        for case, result in seq:
            runs.setdefault(case, []).append(result)
    return runs


def _middleware_cost(*modes: dict[str, list[dict[str, Any]]]) -> None:
    """The middleware's own CPU per request: fanout-1+mw minus fanout-1+ctx (the same event
    without it), paired by round; and what the context costs the event, beside it."""
    for name, runs in zip(("saturation", "fixed rate"), modes, strict=True):
        if not all(c in runs for c in ("fanout-1", "fanout-1+mw", "fanout-1+ctx")):
            continue

        own = _cpu_diff(runs, "fanout-1+mw", "fanout-1+ctx")
        carried = _cpu_diff(runs, "fanout-1+ctx", "fanout-1")
        print(
            f"  {name}: FanoutMiddleware's own CPU {own:.1f} µs/req (+mw minus +ctx, "
            f"target < 10); the context in the event {carried:.1f} µs/req (+ctx minus fanout-1)"
        )


def _cpu_diff(runs: dict[str, list[dict[str, Any]]], a: str, b: str) -> float:
    """Median over rounds of case ``a``'s CPU per request minus case ``b``'s."""
    pairs = zip(runs[a], runs[b], strict=True)
    return statistics.median(x["cpu_us"] - y["cpu_us"] for x, y in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per load")
    parser.add_argument("--rounds", type=int, default=9, help="repetitions over every case")
    parser.add_argument("--conns", type=int, default=8, help="closed-loop connections")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="fixed rate (default: half the max of 'none')"
    )
    parser.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help=f"comma-separated, among {', '.join(CASES)}",
    )
    parser.add_argument("--quick", action="store_true", help="5 repetitions of 1 s loads")
    parser.add_argument(
        "--switch-interval", type=float, default=0.0, help="sys.setswitchinterval in the app"
    )
    parser.add_argument(
        "--middleware",
        action="store_true",
        help="instead: the request middleware's own CPU per request inside uvicorn",
    )
    parser.add_argument(
        "--requests", type=int, default=1000, help="--middleware: request pairs per round"
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        if args.switch_interval:
            sys.setswitchinterval(args.switch_interval)
        serve(args.serve, args.port, args.sink)
        return
    if args.load:
        print(json.dumps(load(args.load, args.rate, args.duration, args.conns)))
        return
    if args.middleware:
        from _middleware_ab import run as middleware_run

        if args.quick:
            middleware_run(args.requests // 2, 3, processes=1)
        else:
            middleware_run(args.requests, 5, processes=3)
        return
    if args.quick:
        args.rounds, args.duration = 5, 1.0
    cases = [c.strip() for c in args.cases.split(",") if c.strip() not in ("", "none", CONTROL)]
    cases = ["none", CONTROL, *cases]
    variants = cases[1:]
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    closed: list[list[tuple[str, dict[str, Any]]]] = []
    opened: list[list[tuple[str, dict[str, Any]]]] = []
    have_wrk = shutil.which("wrk") is not None
    sinks = Sink()
    with tempfile.TemporaryDirectory() as tmp, sinks as sink, contextlib.ExitStack() as stack:
        # The sink stands for backends on other machines: its CPU (eight providers' worth
        # of requests in the 8-provider cases) should not be taken from the app's cores.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, sinks.proc.pid, 19)
        script = None
        if have_wrk:
            script = os.path.join(tmp, "report.lua")
            headers = "".join(
                f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n"
                for k, v in browser_headers().items()
            )
            Path(script).write_text(headers + _WRK_LUA)
        # Every app runs for the whole benchmark; loads take turns, so that the machine's
        # other work falls on all cases alike.
        servers = {c: stack.enter_context(Server(c, sink, args.switch_interval)) for c in cases}
        for server in servers.values():  # imports, connections, the first batches
            _pyload(server.url, 0, 1.0, args.conns)
        if not args.rate:
            # Half the no-analytics maximum, as the issue says, measured by the same
            # closed-loop load as the saturation figures (wrk when present). The Python
            # generator's own figure came out above wrk's (3,230 req/s "half" against
            # 4,647 for wrk's maximum), a rate the fanout-4/8 apps could not serve.
            top = measure(servers["none"], "closed", args, script)
            args.rate = round(0.5 * top["rps"], -1)
            print(f"fixed rate: {args.rate:,.0f} req/s (half of none's {top['rps']:,.0f})")
        for rep in range(args.rounds):
            # One repetition: every variant once, in an order rotated per repetition, each
            # between two runs of the no-analytics app: none A none B none C ... none.
            shift = rep % len(variants)
            order = variants[shift:] + variants[:shift]
            for mode, sequences in (("closed", closed), ("open", opened)):
                seq = [("none", measure(servers["none"], mode, args, script))]
                for case in order:
                    seq.append((case, measure(servers[case], mode, args, script)))
                    seq.append(("none", measure(servers["none"], mode, args, script)))
                sequences.append(seq)
            print(
                f"  repetition {rep + 1}/{args.rounds}: p99 ms, closed "
                + " ".join(f"{c} {r['p99'] / 1000:.1f}" for c, r in closed[-1])
                + " | open "
                + " ".join(f"{c} {r['p99'] / 1000:.1f}" for c, r in opened[-1]),
                flush=True,
            )
    load1 = os.getloadavg()
    gen = f"wrk -t1 -c{args.conns}" if have_wrk else f"Python closed loop, {args.conns} conns"
    print(
        f"\nuvicorn + Starlette, 1 worker; {args.duration:g} s per load; {args.rounds} "
        "repetitions; plain columns: medians over repetitions; + columns: median over "
        "repetitions of (case minus each of the two none runs beside it)"
        + (f"; switch interval {args.switch_interval * 1000:g} ms" if args.switch_interval else "")
        + f"\nload average (1/5/15 min) {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f} at the "
        f"start, {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} at the end"
    )
    a_closed, b_closed = report(closed, cases, f"closed loop at saturation ({gen})")
    a_open, b_open = report(
        opened, cases, f"open loop at {args.rate:,.0f} req/s (half the no-analytics maximum)"
    )
    print("\ntargets (met / NOT met only beyond the noise band):")
    # At half the maximum rate a request should wait less than at saturation; when the
    # no-analytics app's median is worse, the machine (not the app) set the figures.
    sat_p50 = _median(_by_case(closed)["none"], "p50")
    rate_p50 = _median(_by_case(opened)["none"], "p50")
    overloaded = rate_p50 > sat_p50
    for suffix in ("", "p"):
        _targets("saturation", a_closed, b_closed, suffix)
        if not overloaded:
            _targets("fixed rate", a_open, b_open, suffix)
    if overloaded:
        print(
            f"  fixed rate: no verdict: the no-analytics app's p50 at {args.rate:,.0f} req/s "
            f"({rate_p50 / 1000:.1f} ms) is above its p50 at saturation "
            f"({sat_p50 / 1000:.1f} ms): the machine could not give it that rate"
        )
    _middleware_cost(_by_case(closed), _by_case(opened))
    print(f"(total {time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
