"""Events/s delivered to Segment's /v1/batch: fanout's provider against the official SDK.

Both send the same calls, in the same run, to the same local sink answering 200 (a uvicorn
process of its own, so it does not share the clients' GIL). A round is: N ``track()`` calls
from one thread, then wait until everything is delivered (fanout ``flush()``, SDK
``flush()`` = ``queue.join()``); events/s is N over that wall time. Rounds alternate between
the contenders and the medians are reported, with their ratio.

Both batch 100 events per request and gzip every body (``gzip=True`` for the SDK, which is
what fanout always does); the SDK's default (no gzip) is measured too, for reference.

    python plugins/fanout-segment/bench_segment.py [--events 20000] [--rounds 5]

``benchmarks/vendors.py`` calls :func:`bench` (optionally with its own ``sink_url``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

PROPERTIES = {"plan": "pro", "total": 42.5, "items": [{"sku": "A-1", "qty": 2}], "coupon": None}


# -- the sink -----------------------------------------------------------------------------


async def _sink_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI: read the whole body, answer 200 ``{}``; ``GET /count`` says how many POSTs."""
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        body = json.dumps({"requests": _SINK_REQUESTS[0]}).encode()
    else:
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        _SINK_REQUESTS[0] += 1
        body = b"{}"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


_SINK_REQUESTS = [0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def local_sink() -> Iterator[str]:
    """A uvicorn sink on 127.0.0.1 in a child process; stopped on exit."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/count", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the benchmark sink did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


# -- contenders ---------------------------------------------------------------------------


def _fanout_round(url: str, n: int) -> tuple[float, float]:
    import fanout_segment

    import fanout

    client = fanout.Client(
        providers=["segment"],
        settings={"segment": {"write_key": "bench-key", "host": url}},
        environ={},
        register_atexit=False,
        load_entry_points=False,
        plugins=[fanout_segment],
        batch_size=100,
    )
    try:
        start = time.perf_counter()
        for i in range(n):
            client.track("Order Completed", person_id=f"user_{i % 1000}", properties=PROPERTIES)
        called = time.perf_counter()
        report = client.flush(timeout=300)
        end = time.perf_counter()
    finally:
        client.shutdown(timeout=5)
    if report["segment"].delivered != n:
        raise RuntimeError(f"fanout delivered {report['segment'].delivered} of {n}")
    return n / (end - start), (called - start) / n * 1e6


def _sdk_round(url: str, n: int, *, gzip: bool) -> tuple[float, float]:
    from segment.analytics import Client  # type: ignore[import-untyped]

    errors: list[object] = []
    client = Client(
        "bench-key",
        host=url,
        gzip=gzip,
        upload_size=100,
        max_queue_size=n + 1,  # the SDK drops on a full queue; measure delivery, not loss
        on_error=lambda exc, batch: errors.append(exc),
    )
    try:
        start = time.perf_counter()
        for i in range(n):
            client.track(f"user_{i % 1000}", "Order Completed", PROPERTIES)
        called = time.perf_counter()
        client.flush()
        end = time.perf_counter()
    finally:
        client.join()
    if errors:
        raise RuntimeError(f"the SDK reported {len(errors)} errors: {errors[0]}")
    return n / (end - start), (called - start) / n * 1e6


def bench(
    sink_url: str | None = None, *, events: int = 20_000, rounds: int = 5
) -> dict[str, float]:
    """Median events/s (and caller µs per call) for each contender, plus the ratio.

    Keys: ``fanout_eps``, ``sdk_gzip_eps``, ``sdk_plain_eps``, ``ratio_vs_sdk_gzip``,
    ``ratio_vs_sdk_plain``, ``fanout_call_us``, ``sdk_call_us``.
    """
    logging.getLogger("segment").setLevel(logging.CRITICAL)
    if sink_url is None:
        with local_sink() as url:
            return bench(url, events=events, rounds=rounds)
    contenders: dict[str, Callable[[], tuple[float, float]]] = {
        "fanout": lambda: _fanout_round(sink_url, events),
        "sdk_gzip": lambda: _sdk_round(sink_url, events, gzip=True),
        "sdk_plain": lambda: _sdk_round(sink_url, events, gzip=False),
    }
    for run in contenders.values():  # warm-up: imports, connections
        run()
    eps: dict[str, list[float]] = {k: [] for k in contenders}
    call_us: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            rate, us = run()
            eps[name].append(rate)
            call_us[name].append(us)
    med = {k: statistics.median(v) for k, v in eps.items()}
    return {
        "fanout_eps": med["fanout"],
        "sdk_gzip_eps": med["sdk_gzip"],
        "sdk_plain_eps": med["sdk_plain"],
        "ratio_vs_sdk_gzip": med["fanout"] / med["sdk_gzip"],
        "ratio_vs_sdk_plain": med["fanout"] / med["sdk_plain"],
        "fanout_call_us": statistics.median(call_us["fanout"]),
        "sdk_call_us": statistics.median(call_us["sdk_gzip"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sink", help="URL of a running sink (default: start one)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        import uvicorn

        uvicorn.run(
            _sink_app, host="127.0.0.1", port=args.serve, log_level="error", access_log=False
        )
        return
    result = bench(args.sink, events=args.events, rounds=args.rounds)
    print(f"segment, {args.events} events x {args.rounds} rounds (medians):")
    print(
        f"  fanout-segment      {result['fanout_eps']:>10,.0f} events/s"
        f"   caller {result['fanout_call_us']:.1f} µs/call"
    )
    print(
        f"  SDK gzip=True       {result['sdk_gzip_eps']:>10,.0f} events/s"
        f"   caller {result['sdk_call_us']:.1f} µs/call"
    )
    print(f"  SDK gzip=False      {result['sdk_plain_eps']:>10,.0f} events/s")
    print(
        f"  ratio fanout / SDK  {result['ratio_vs_sdk_gzip']:.2f} (gzip), "
        f"{result['ratio_vs_sdk_plain']:.2f} (default, no gzip)"
    )


if __name__ == "__main__":
    main()
