"""CPU cost of fanout's request middleware per request, beside the same app without it.

Calls the ASGI and WSGI apps directly (no server, no socket) with a browser-like request:
a PostHog cookie, a Segment cookie, a user agent, a referrer and utm_* parameters. Prints the
median time per request of several runs, with and without the middleware, and the difference
(the middleware's own cost: reading ids and cookies, building and entering the context).

    python benchmarks/middleware_cost.py [requests per run]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any
from urllib.parse import quote

from fanout.integrations.asgi import FanoutMiddleware as ASGIMiddleware
from fanout.integrations.wsgi import FanoutMiddleware as WSGIMiddleware

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
RUNS = 7
SESSION = [int(time.time() * 1000), "0190f5a2-7d1e-7c3b-9a4f-aaaaaaaaaaaa", 0]
PH = quote(json.dumps({"distinct_id": "0190f5a2-7d1e-7c3b-9a4f-2b1c0d9e8f7a", "$sesid": SESSION}))
COOKIE = (
    f"ph_phc_token_posthog={PH}; ajs_anonymous_id=4f0c7d3e-1111-4222-8333-944445555666; "
    "csrftoken=abc"
)
HEADERS = [
    (b"host", b"shop.example"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126 Safari/537.36"),
    (b"accept-language", b"en-GB,en;q=0.9"),
    (b"referer", b"https://news.example/article"),
    (b"cookie", COOKIE.encode()),
]
SCOPE: dict[str, Any] = {
    "type": "http", "method": "GET", "scheme": "https", "path": "/checkout", "root_path": "",
    "query_string": b"utm_source=news&utm_campaign=spring", "headers": HEADERS,
    "client": ("203.0.113.9", 50000), "server": ("10.0.0.1", 443),
}
ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET", "wsgi.url_scheme": "https", "PATH_INFO": "/checkout",
    "SCRIPT_NAME": "",
    "QUERY_STRING": "utm_source=news&utm_campaign=spring", "REMOTE_ADDR": "203.0.113.9",
    **{"HTTP_" + k.decode().upper().replace("-", "_"): v.decode() for k, v in HEADERS},
}


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    return None


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    return [b""]


async def _receive() -> dict[str, Any]:
    return {"type": "http.request"}


async def _send(message: Any) -> None:
    return None


def time_asgi(app: Any) -> float:
    async def run() -> float:
        start = time.process_time()
        for _ in range(N):
            await app(SCOPE, _receive, _send)
        return (time.process_time() - start) / N

    return asyncio.run(run())


def time_wsgi(app: Any) -> float:
    start = time.process_time()
    for _ in range(N):
        body = app(ENVIRON, None)
        for _chunk in body:
            pass
        getattr(body, "close", lambda: None)()
    return (time.process_time() - start) / N


def median_us(fn: Any, app: Any) -> float:
    return statistics.median(fn(app) for _ in range(RUNS)) * 1e6


def main() -> None:
    print(f"{N} requests per run, median of {RUNS} runs, CPU time per request")
    for label, fn, bare, wrapped in (
        ("ASGI", time_asgi, asgi_app, ASGIMiddleware(asgi_app)),
        ("WSGI", time_wsgi, wsgi_app, WSGIMiddleware(wsgi_app)),
    ):
        base, with_mw = median_us(fn, bare), median_us(fn, wrapped)
        print(f"{label}: bare app {base:6.2f} µs, with fanout's middleware {with_mw:6.2f} µs, "
              f"middleware cost {with_mw - base:6.2f} µs")


if __name__ == "__main__":
    main()
