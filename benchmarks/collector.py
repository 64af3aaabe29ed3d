"""Events/s committed by the reference collector from one fanout client, and the client's
CPU per event, beside the official PostHog and Segment SDKs sending the same events.

One run, side by side, on this machine:

- **fanout → collector**: a ``fanout.Client`` with only the ``collector`` provider sends N
  ``track()`` calls to ``fanout collector serve`` (a subprocess, SQLite WAL on a temporary
  file); a round ends when ``flush()`` returns, i.e. when the server has *committed* every
  batch (it answers 200 only after the commit). The stored count is checked against N.
- **posthog-python** and **segment-analytics-python** send the same N calls to a local sink
  that reads the body and answers 200 without storing anything (a uvicorn subprocess); a
  round ends when the SDK's ``flush()`` returns.

Events/s is N over the round's wall time; client CPU is ``time.process_time()`` of this
process (caller thread plus the client's worker threads) per event; the servers run in
other processes and are not counted. Rounds alternate between contenders and the medians
are reported with ratios to fanout. No gzip for anyone here: every contender sends JSON as
is (fanout gzips only bodies above 64 KiB by default; ``--gzip`` turns that on).

    python benchmarks/collector.py [--events 50000] [--rounds 3] [--batch 1000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROPERTIES = {
    "plan": "pro",
    "amount": 2900,
    "currency": "USD",
    "items": [{"sku": "A-1", "qty": 2}],
    "coupon": None,
}
FANOUT = [sys.executable, "-c", "from fanout.cli import main; main()"]


# -- servers ------------------------------------------------------------------------------


async def _sink_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI: read the whole body, answer 200 with what the SDKs expect; store nothing."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"status": 1}'})


def _wait_up(url: str, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.05)


@contextmanager
def sink() -> Iterator[str]:
    """The do-nothing sink in a uvicorn subprocess."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--sink"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        _wait_up(url + "/", proc)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def _serve_sink() -> None:
    import uvicorn

    from fanout.collector.server import bind, url_of

    sock = bind("127.0.0.1", 0)
    print(url_of(sock), flush=True)
    config = uvicorn.Config(_sink_app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


@contextmanager
def collector(db: Path) -> Iterator[tuple[str, str]]:
    """``fanout collector serve`` in a subprocess on a fresh database: (url, key)."""
    created = subprocess.run(
        [*FANOUT, "collector", "keys", "create", "--label", "bench", "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip()
    proc = subprocess.Popen(
        [*FANOUT, "collector", "serve", "--port", "0", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().removeprefix("listening on ")
        _wait_up(url + "/v1/health", proc)
        yield url, key
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def _stored(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(n)


# -- contenders: each returns (wall seconds, client CPU seconds) for n events -------------


def fanout_round(url: str, key: str, n: int, batch: int, gzip: bool) -> tuple[float, float]:
    import fanout
    from fanout.providers.collector import CollectorProvider

    provider = CollectorProvider(url, key, gzip_min_bytes=1024 if gzip else None)
    client = fanout.Client(
        providers=[provider],
        environ={},
        register_atexit=False,
        load_entry_points=False,
        batch_size=batch,
        queue_size=n + 1,
    )
    # The provider object carries the same limits the registered spec declares.
    try:
        cpu, start = time.process_time(), time.perf_counter()
        for i in range(n):
            client.track("checkout.finished", person_id=f"user_{i % 1000}", properties=PROPERTIES)
        report = client.flush(timeout=300)
        end, cpu_end = time.perf_counter(), time.process_time()
    finally:
        client.shutdown(timeout=10)
    got = report[provider.name]
    if got.delivered != n:
        raise RuntimeError(f"fanout delivered {got.delivered} of {n}: {got}")
    return end - start, cpu_end - cpu


def posthog_round(url: str, n: int, batch: int) -> tuple[float, float]:
    from posthog import Posthog

    errors: list[object] = []
    client = Posthog(
        "phc_bench",
        host=url,
        flush_at=batch,
        max_queue_size=n + 1,
        on_error=lambda e, b: errors.append(e),
        gzip=False,
    )
    try:
        cpu, start = time.process_time(), time.perf_counter()
        for i in range(n):
            client.capture(
                "checkout.finished", distinct_id=f"user_{i % 1000}", properties=PROPERTIES
            )
        client.flush()
        end, cpu_end = time.perf_counter(), time.process_time()
    finally:
        client.shutdown()
    if errors:
        raise RuntimeError(f"posthog reported errors: {errors[:3]}")
    return end - start, cpu_end - cpu


def segment_round(url: str, n: int, batch: int) -> tuple[float, float]:
    from segment.analytics import Client

    errors: list[object] = []
    client = Client(
        "bench-key",
        host=url,
        upload_size=min(batch, 100),
        gzip=False,
        max_queue_size=n + 1,
        on_error=lambda e, b: errors.append(e),
    )
    try:
        cpu, start = time.process_time(), time.perf_counter()
        for i in range(n):
            client.track(f"user_{i % 1000}", "checkout.finished", PROPERTIES)
        client.flush()
        end, cpu_end = time.perf_counter(), time.process_time()
    finally:
        client.join()
    if errors:
        raise RuntimeError(f"segment reported errors: {errors[:3]}")
    return end - start, cpu_end - cpu


# -- timeline pages -----------------------------------------------------------------------


def _fill(store: Any, project_id: int, n: int, heavy: int) -> None:
    """``n`` events in one project: ``heavy`` of them one person's, the rest spread over
    1,000 people, inserted through the same validation and insert path as the server."""
    from fanout.collector.ingest import validate_batch

    for start in range(0, n, 1000):
        batch = []
        for i in range(start, min(n, start + 1000)):
            person = "heavy" if i % (n // heavy) == 0 else f"user_{i % 1000}"
            second = i // 50
            batch.append({
                "event_id": f"e{i}", "name": "checkout.finished", "person_id": person,
                "timestamp": f"2024-{1 + second // 2_600_000 % 12:02d}-01T00:"
                             f"{second // 60 % 60:02d}:{second % 60:02d}.{i % 1000:03d}Z",
                "properties": PROPERTIES,
            })
        ingested = validate_batch(batch)
        store.insert(project_id, ingested.rows, ingested.links)


def timeline_bench(n: int, heavy: int, pages: int) -> dict[str, float]:
    """p50/p99 of one ``GET /v1/persons/{id}/events`` page (1,000 events) over HTTP."""
    import httpx

    from fanout.collector.keys import INGEST, READ
    from fanout.collector.server import ServerThread
    from fanout.collector.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "timeline.db")
        project = store.create_project("bench")
        store.create_key("bench", (INGEST,), "in")
        _, key = store.create_key("bench", (READ,), "read")
        started = time.perf_counter()
        _fill(store, project.id, n, heavy)
        print(f"stored {n:,} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        times: dict[str, list[float]] = {"heavy (walk)": [], "random person": []}
        with ServerThread(store) as server, httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            cursor = None
            for _ in range(pages):  # walk the heavy person's history page by page
                params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
                t = time.perf_counter()
                page = http.get("/v1/persons/heavy/events", params=params).json()
                times["heavy (walk)"].append(time.perf_counter() - t)
                cursor = page["next_cursor"] or None
            for i in range(pages):
                t = time.perf_counter()
                r = http.get(f"/v1/persons/user_{(i * 7919) % 1000}/events",
                             params={"limit": 1000})
                times["random person"].append(time.perf_counter() - t)
                assert r.status_code == 200
    out = {}
    for name, values in times.items():
        values.sort()
        p50 = values[len(values) // 2] * 1e3
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))] * 1e3
        print(f"timeline {name:<14} {len(values)} pages of <=1000 events: "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        out[f"{name} p50 ms"], out[f"{name} p99 ms"] = p50, p99
    return out


# -- the run ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000, help="fanout/PostHog batch size")
    parser.add_argument("--gzip", action="store_true", help="fanout gzips bodies above 1 KiB")
    parser.add_argument("--only", choices=["fanout", "posthog", "segment"], action="append")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timeline", type=int, metavar="N", default=0,
                        help="only time timeline pages over N stored events (e.g. 1000000)")
    args = parser.parse_args()
    if args.sink:
        _serve_sink()
        return
    if args.timeline:
        print(json.dumps(timeline_bench(args.timeline, heavy=max(1, args.timeline // 10),
                                        pages=100)))
        return
    logging.basicConfig(level=logging.ERROR)
    n, contenders = args.events, args.only or ["fanout", "posthog", "segment"]
    results: dict[str, list[tuple[float, float]]] = {c: [] for c in contenders}
    with tempfile.TemporaryDirectory() as tmp, sink() as sink_url:
        rounds: dict[str, Callable[[int], tuple[float, float]]] = {
            "posthog": lambda r: posthog_round(sink_url, n, args.batch),
            "segment": lambda r: segment_round(sink_url, n, args.batch),
        }

        def fanout_once(r: int) -> tuple[float, float]:
            db = Path(tmp) / f"bench{r}.db"
            with collector(db) as (url, key):
                result = fanout_round(url, key, n, args.batch, args.gzip)
            stored = _stored(db)
            if stored != n:
                raise RuntimeError(f"the collector committed {stored} of {n} events")
            return result

        rounds["fanout"] = fanout_once
        for r in range(args.rounds):
            for name in contenders:
                results[name].append(rounds[name](r))
                wall, cpu = results[name][-1]
                print(
                    f"round {r + 1} {name:<8} {n / wall:>9,.0f} ev/s  "
                    f"{cpu / n * 1e6:6.1f} µs CPU/ev",
                    file=sys.stderr,
                )
    _table(n, results)


def _table(n: int, results: dict[str, list[tuple[float, float]]]) -> None:
    labels = {
        "fanout": "fanout → collector (committed)",
        "posthog": "posthog-python → sink",
        "segment": "segment-analytics-python → sink",
    }
    rate = {k: n / statistics.median(w for w, _ in v) for k, v in results.items()}
    cpu = {k: statistics.median(c for _, c in v) / n * 1e6 for k, v in results.items()}
    base = "fanout" if "fanout" in results else next(iter(results))
    from fanout import _json

    encoder = "orjson" if _json.FAST else "json (standard library)"
    print(
        f"\n{n} events per round, {len(next(iter(results.values())))} rounds, medians; "
        f"{os.cpu_count()} CPUs; fanout's JSON encoder: {encoder}"
    )
    print(
        f"{'contender':<34} {'events/s':>10} {'vs fanout':>10} {'client CPU µs/ev':>17} "
        f"{'vs fanout':>10}"
    )
    for k in results:
        print(
            f"{labels[k]:<34} {rate[k]:>10,.0f} {rate[k] / rate[base]:>9.2f}x "
            f"{cpu[k]:>17.1f} {cpu[k] / cpu[base]:>9.2f}x"
        )
    print(json.dumps({"events": n, "events_per_s": rate, "client_cpu_us_per_event": cpu}))


if __name__ == "__main__":
    main()
