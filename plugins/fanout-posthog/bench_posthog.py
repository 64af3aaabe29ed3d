"""Events/s delivered to a local sink: fanout's ``posthog`` provider against posthog-python.

Both sides do the same work in the same run: N ``capture``/``track`` calls of the same
event, then ``flush``, against a sink in a separate process (so that it does not share
the GIL with the client under test) that answers ``200 {"status": 1}`` and counts the
events it decoded. The figure is N / (time from the first call until the flush returned),
and a run only counts when the sink saw all N events. Rounds alternate SDK and fanout so
that drift on a noisy machine hits both; medians are reported, with the ratio.

Usage::

    python plugins/fanout-posthog/bench_posthog.py [--events 20000] [--rounds 5]

or, from ``benchmarks/vendors.py``::

    from bench_posthog import bench_delivery   # with plugins/fanout-posthog on sys.path
    result = bench_delivery(events=20000, rounds=5)
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "phc_benchBENCHbench0123456789"
PROPERTIES: dict[str, Any] = {
    "plan": "pro",
    "amount": 49.5,
    "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
    "coupon": None,
    "source": "webhook",
}


# -- the sink (runs in its own process) ------------------------------------------------------


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as PostHog's ingestion does
    # One write per response and no Nagle: otherwise headers and body go in two segments
    # and delayed ACKs cap every client at about 25 requests/s, measuring nothing but TCP.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    events = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        n = len(json.loads(body).get("batch", ()))
        with _Sink.lock:
            _Sink.events += n
        self._reply(b'{"status": 1}')

    def do_GET(self) -> None:  # noqa: N802
        with _Sink.lock:
            count = _Sink.events
            if self.path == "/reset":
                _Sink.events = 0
        self._reply(str(count).encode())

    def _reply(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


def _serve() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    print(server.server_address[1], flush=True)
    server.serve_forever()


@contextmanager
def sink() -> Iterator[str]:
    """Start the sink process; yield its base URL; stop it."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--sink"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _sink_count(url: str, *, reset: bool = False) -> int:
    with urllib.request.urlopen(url + ("/reset" if reset else "/count"), timeout=10) as r:
        return int(r.read())


# -- the two senders ---------------------------------------------------------------------


def run_sdk(url: str, events: int, *, gzip_body: bool = False) -> float:
    """Seconds for posthog-python to deliver ``events`` captures (its default consumer)."""
    import posthog

    client = posthog.Posthog(API_KEY, host=url, max_queue_size=events + 1, gzip=gzip_body)
    try:
        start = time.perf_counter()
        for i in range(events):
            client.capture("order.paid", distinct_id=f"user_{i % 1000}", properties=PROPERTIES)
        client.flush()
        return time.perf_counter() - start
    finally:
        client.shutdown()


def run_fanout(url: str, events: int, *, gzip_body: bool = True) -> float:
    """Seconds for fanout's posthog provider to deliver ``events`` tracks (defaults)."""
    import fanout_posthog

    import fanout

    client = fanout.Client(
        providers=["posthog"],
        settings={"posthog": {"api_key": API_KEY, "host": url, "gzip": gzip_body}},
        environ={},
        register_atexit=False,
        load_entry_points=False,
        plugins=[fanout_posthog],
        queue_size=events + 1,
    )
    try:
        start = time.perf_counter()
        for i in range(events):
            client.track("order.paid", person_id=f"user_{i % 1000}", properties=PROPERTIES)
        report = client.flush(timeout=120)
        elapsed = time.perf_counter() - start
        if not report.ok:
            raise RuntimeError(f"fanout did not deliver everything: {report!r}")
        return elapsed
    finally:
        client.shutdown(timeout=10)


def bench_delivery(events: int = 20_000, rounds: int = 5) -> dict[str, Any]:
    """Median events/s per variant, and fanout's ratio against the SDK's default.

    Variants: the SDK as shipped (no gzip) and with ``gzip=True``; fanout as shipped (gzip
    from 1 KiB) and with gzip off. A round whose sink count is not exactly ``events`` is
    an error, not a figure.
    """
    variants: dict[str, Callable[[str, int], float]] = {
        "posthog-sdk": lambda u, n: run_sdk(u, n),
        "posthog-sdk gzip": lambda u, n: run_sdk(u, n, gzip_body=True),
        "fanout-posthog": lambda u, n: run_fanout(u, n),
        "fanout-posthog no-gzip": lambda u, n: run_fanout(u, n, gzip_body=False),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    with sink() as url:
        for run in variants.values():  # warm-up: imports, connections, caches
            _sink_count(url, reset=True)
            run(url, min(events, 2000))
        for _ in range(rounds):
            for name, run in variants.items():
                _sink_count(url, reset=True)
                seconds = run(url, events)
                got = _sink_count(url)
                if got != events:
                    raise RuntimeError(f"{name}: sink received {got} of {events} events")
                rates[name].append(events / seconds)
    medians = {name: statistics.median(r) for name, r in rates.items()}
    base = medians["posthog-sdk"]
    return {
        "events": events,
        "rounds": rounds,
        "events_per_second": medians,
        "ratio_vs_sdk": {name: m / base for name, m in medians.items()},
        "all_rounds": rates,
    }


def _print(result: dict[str, Any]) -> None:
    print(f"{result['events']} events x {result['rounds']} rounds, sink answering 200")
    for name, eps in result["events_per_second"].items():
        ratio = result["ratio_vs_sdk"][name]
        print(f"  {name:<24} {eps:>9,.0f} events/s   x{ratio:.2f} vs posthog-sdk")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.sink:
        _serve()
        return
    _print(bench_delivery(args.events, args.rounds))


if __name__ == "__main__":
    main()
