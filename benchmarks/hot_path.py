"""Caller-thread cost of ``track()``, beside the floor and the PostHog SDK, in one run.

    python benchmarks/hot_path.py [--calls 20000] [--reps 5]

Prints mean / p50 / p99 µs per call for: ``queue.Queue.put_nowait(dict)`` (the floor),
fanout with 1 provider (null) and with 4 (null, memory, console to /dev/null, a second
memory), and, when ``posthog`` is installed, ``Posthog.capture()`` against a local sink.
Then a burst of 50,000 events with default settings (drops must be 0), the PostHog SDK's
drops for a burst of 20,000 with its defaults, and the memory each queued event costs.
Medians over repetitions; ratios against PostHog from the same run.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import queue
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fanout  # noqa: E402
from fanout import _json as fanout_json  # noqa: E402
from fanout.testing import InMemoryProvider  # noqa: E402

PROPS = {"plan": "pro", "amount": 4999, "currency": "usd", "coupon": None, "seats": 3}


def measure(
    call: Callable[[int], object], calls: int, reps: int, *, pace: float = 0.0
) -> dict[str, float]:
    """Per-call cost over ``reps`` runs; summary statistics are medians across runs.

    ``mean``/``p50``/``p99`` are wall-clock µs on the caller's thread, which include waiting
    for the GIL while background threads (fanout's workers, the SDKs' consumers) run.
    ``cpu`` is the caller thread's own CPU µs per call (``time.thread_time``), the work the
    call itself does: read once per run rather than around each call, because reading that
    clock is a system call (about 1 µs here, more than some of the calls measured) and the
    kernel entries around every call slow the Python code between them. It includes the
    two ``perf_counter`` reads per call (vDSO, some 0.05 µs each). ``pace`` sleeps that many
    seconds between calls, outside the timed region, as a request handler waiting on I/O
    would: background threads then run in the gaps instead of competing with the caller;
    paced runs read the CPU clock around each call, since the sleeps must stay out of it.
    """
    means, p50s, p99s, cpus = [], [], [], []
    clock = time.perf_counter_ns
    cpu_clock = time.thread_time_ns
    sleep = time.sleep
    for _ in range(reps):
        samples = [0] * calls
        cpu = 0
        if pace:
            for i in range(calls):
                c0 = cpu_clock()
                t0 = clock()
                call(i)
                samples[i] = clock() - t0
                cpu += cpu_clock() - c0
                sleep(pace)
        else:
            c0 = cpu_clock()
            for i in range(calls):
                t0 = clock()
                call(i)
                samples[i] = clock() - t0
            cpu = cpu_clock() - c0
        samples.sort()
        means.append(sum(samples) / calls)
        p50s.append(samples[calls // 2])
        p99s.append(samples[int(calls * 0.99)])
        cpus.append(cpu / calls)
    return {
        "mean": statistics.median(means) / 1000,
        "p50": statistics.median(p50s) / 1000,
        "p99": statistics.median(p99s) / 1000,
        "cpu": statistics.median(cpus) / 1000,
    }


def fanout_client(n_providers: int) -> fanout.Client:
    providers: list[str | fanout.Provider] = [
        "null",
        "memory",
        "console",
        InMemoryProvider("memory2"),
    ]
    return fanout.Client(
        providers=providers[:n_providers],
        settings={"console": {"file": os.devnull}} if n_providers >= 3 else None,
        load_entry_points=False,
        environ={},
        register_atexit=False,
    )


def bench_fanout(n: int, calls: int, reps: int, pace: float = 0.0) -> dict[str, float]:
    client = fanout_client(n)
    try:
        return measure(
            lambda i: client.track("checkout.finished", person_id="user_123", properties=PROPS),
            calls,
            reps,
            pace=pace,
        )
    finally:
        client.shutdown(timeout=30)


def bench_queue(calls: int, reps: int) -> dict[str, float]:
    q: queue.Queue[dict[str, object]] = queue.Queue()

    def put(i: int) -> None:
        q.put_nowait({"event": "checkout.finished", "distinct_id": "user_123", "properties": PROPS})

    return measure(put, calls, reps)


@contextmanager
def posthog_sdk(**options: Any) -> Iterator[Any]:
    """The PostHog SDK's client sending to a local sink process, or ``None`` when the
    ``posthog`` package is not installed; shut down (and the sink stopped) on exit."""
    try:
        from posthog import Posthog
    except ImportError:
        yield None
        return
    from _sink import Sink

    with Sink() as url:
        ph = Posthog("phc_benchmark", host=url, **options)
        try:
            yield ph
        finally:
            ph.shutdown()


def bench_posthog(calls: int, reps: int, pace: float = 0.0) -> dict[str, float] | None:
    # A queue large enough that the SDK does not drop during the measurement.
    with posthog_sdk(max_queue_size=calls * reps + 1) as ph:
        if ph is None:
            return None
        return measure(
            lambda i: ph.capture("checkout.finished", distinct_id="user_123", properties=PROPS),
            calls,
            reps,
            pace=pace,
        )


def burst(n: int) -> dict[str, float]:
    """``n`` events as fast as possible with default settings, 4 providers; count drops."""
    client = fanout_client(4)
    t0 = time.perf_counter()
    for i in range(n):
        client.track("burst", person_id=f"u{i % 100}", properties={**PROPS, "i": i})
    elapsed = time.perf_counter() - t0
    report = client.shutdown(timeout=120)
    return {
        "events": n,
        "seconds": elapsed,
        "dropped": sum(r.dropped for r in report.values()),
        "delivered_min": min(r.delivered for r in report.values()),
    }


def posthog_burst(n: int) -> dict[str, float] | None:
    """The same burst through the PostHog SDK with its default settings, to a local sink:
    ``capture()`` returns ``None`` for every event its full queue drops."""
    with posthog_sdk() as ph:
        if ph is None:
            return None
        # After the client is built: it sets its logger's level. One warning per drop.
        logging.getLogger("posthog").setLevel(logging.CRITICAL)
        t0 = time.perf_counter()
        results = [
            ph.capture("burst", distinct_id=f"u{i % 100}", properties={**PROPS, "i": i})
            for i in range(n)
        ]
        elapsed = time.perf_counter() - t0
    return {"events": n, "seconds": elapsed, "dropped": sum(r is None for r in results)}


def memory_per_event(n: int) -> float:
    """Bytes per queued event (shared by all channels), from tracemalloc."""
    client = fanout.Client(
        providers=[InMemoryProvider("a"), InMemoryProvider("b")],
        load_entry_points=False,
        environ={},
        register_atexit=False,
        flush_interval=3600,
        batch_size=10_000_000 // 1000,
    )
    for ch in client._channels:
        ch._batch_events = 10**9  # keep everything queued while measuring
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        client.track("burst", person_id=f"u{i % 100}", properties={**PROPS, "i": i})
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    queued = client.stats()["a"].pending
    client.shutdown(timeout=30)
    return (after - before) / max(queued, 1)


def _table(rows: list[tuple[str, dict[str, float] | None]]) -> None:
    base = rows[-1][1]
    print(f"{'':32} {'mean':>8} {'p50':>8} {'p99':>8} {'cpu':>8} {'mean/posthog':>13}")
    for name, r in rows:
        if r is None:
            print(f"{name:32} (posthog not installed)")
            continue
        ratio = f"{r['mean'] / base['mean']:.2f}" if base else "-"
        print(
            f"{name:32} {r['mean']:8.2f} {r['p50']:8.2f} {r['p99']:8.2f} {r['cpu']:8.2f} "
            f"{ratio:>13}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--burst", type=int, default=50_000)
    parser.add_argument("--posthog-burst", type=int, default=20_000)
    parser.add_argument("--pace", type=float, default=0.001, help="seconds between paced calls")
    args = parser.parse_args()

    rows: list[tuple[str, dict[str, float] | None]] = [
        ("queue.Queue.put_nowait(dict)", bench_queue(args.calls, args.reps)),
        ("fanout track(), 1 provider", bench_fanout(1, args.calls, args.reps)),
        ("fanout track(), 4 providers", bench_fanout(4, args.calls, args.reps)),
        ("posthog capture() (SDK)", bench_posthog(args.calls, args.reps)),
    ]
    encoder = "orjson" if fanout_json.FAST else "json (standard library)"
    print(f"Python {sys.version.split()[0]}, JSON encoder: {encoder}")
    print(f"back-to-back calls: {args.calls:,} x {args.reps} reps (medians of runs), µs")
    _table(rows)
    paced_calls = max(1, args.calls // 10)
    paced: list[tuple[str, dict[str, float] | None]] = [
        ("fanout track(), 4 providers", bench_fanout(4, paced_calls, args.reps, args.pace)),
        ("posthog capture() (SDK)", bench_posthog(paced_calls, args.reps, args.pace)),
    ]
    print()
    print(
        f"paced calls ({args.pace * 1000:g} ms of I/O between calls, as in a request handler): "
        f"{paced_calls:,} x {args.reps} reps, µs"
    )
    _table(paced)
    four, ph = rows[2][1], rows[3][1]
    assert four is not None
    print()
    print(f"4 providers, back-to-back: p99 / mean = {four['p99'] / four['mean']:.2f} (target < 3)")
    if ph:
        print(
            f"4 providers, back-to-back: mean / PostHog capture() = "
            f"{four['mean'] / ph['mean']:.2f} (target <= 0.25); caller CPU ratio "
            f"{four['cpu'] / ph['cpu']:.2f}"
        )
    pf, pp = paced[0][1], paced[1][1]
    if pf and pp:
        print(
            f"4 providers, paced: mean / PostHog capture() = {pf['mean'] / pp['mean']:.2f}; "
            f"p99 / mean = {pf['p99'] / pf['mean']:.2f}"
        )
    b = burst(args.burst)
    print()
    print(
        f"burst of {b['events']:,} events, default settings, 4 providers: "
        f"{b['seconds']:.2f}s on the caller, dropped {b['dropped']}, "
        f"every provider delivered >= {b['delivered_min']:,}"
    )
    ph_burst = posthog_burst(args.posthog_burst)
    if ph_burst:
        print(
            f"burst of {ph_burst['events']:,} events, PostHog SDK defaults: "
            f"{ph_burst['seconds']:.2f}s on the caller, dropped {ph_burst['dropped']:,} "
            f"({ph_burst['dropped'] / ph_burst['events']:.0%})"
        )
    per = memory_per_event(20_000)
    print(f"memory per queued event (shared by every channel): {per:,.0f} bytes")


if __name__ == "__main__":
    main()
