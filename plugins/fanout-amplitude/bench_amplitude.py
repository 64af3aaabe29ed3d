"""Events/s delivered to Amplitude's HTTP V2 API: fanout's provider against the official SDK.

Both send the same calls, in the same run, to the same local sink answering 200
``{"code": 200}`` (benchmarks/_sink.py, a process of its own). A round is N ``track()``
calls from one thread, then wait until everything is delivered: fanout ``flush()``; for the
SDK, ``flush()`` and its futures, then until its callback has counted N successes (it posts
from a pool of 16 threads). events/s is N over that wall time; rounds alternate between
contenders and medians are reported. Both run with their defaults (the SDK: 200 events per
request; fanout: 100) and fanout also at the SDK's 200, like for like.

    python plugins/fanout-amplitude/bench_amplitude.py [--events 20000] [--rounds 5]

``benchmarks/vendors.py`` calls :func:`bench`.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROPERTIES = {"plan": "pro", "total": 42.5, "items": [{"sku": "A-1", "qty": 2}], "coupon": None}
API_KEY = "bench-api-key"

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _sink import Sink as local_sink  # type: ignore[import-not-found]  # noqa: E402


def _fanout_round(url: str, n: int, batch_size: int | None) -> float:
    import fanout_amplitude

    import fanout

    client = fanout.Client(
        providers=["amplitude"],
        settings={"amplitude": {"api_key": API_KEY, "server_url": url + "/2/httpapi"}},
        environ={},
        register_atexit=False,
        load_entry_points=False,
        plugins=[fanout_amplitude],
        **({"batch_size": batch_size} if batch_size else {}),
    )
    try:
        start = time.perf_counter()
        for i in range(n):
            client.track("Order Completed", person_id=f"user_{i % 1000:05d}", properties=PROPERTIES)
        report = client.flush(timeout=300)
        end = time.perf_counter()
    finally:
        client.shutdown(timeout=5)
    if report["amplitude"].delivered != n:
        raise RuntimeError(f"fanout delivered {report['amplitude'].delivered} of {n}")
    return n / (end - start)


def _sdk_round(url: str, n: int) -> float:
    from amplitude import Amplitude, BaseEvent, Config  # type: ignore[import-untyped]

    done = threading.Semaphore(0)
    failures: list[int] = []

    def callback(event: Any, code: int, message: str | None = None) -> None:
        if code != 200:
            failures.append(code)
        done.release()

    client = Amplitude(API_KEY, Config(server_url=url + "/2/httpapi", callback=callback))
    try:
        start = time.perf_counter()
        for i in range(n):
            client.track(
                BaseEvent(
                    "Order Completed",
                    user_id=f"user_{i % 1000:05d}",
                    event_properties=dict(PROPERTIES),
                )
            )
        for future in client.flush():
            if future is not None:
                future.result(timeout=300)
        for _ in range(n):
            if not done.acquire(timeout=300):
                raise RuntimeError("the SDK did not report every event")
        end = time.perf_counter()
    finally:
        client.shutdown()
    if failures:
        raise RuntimeError(f"the SDK failed {len(failures)} events")
    return n / (end - start)


def bench(
    sink_url: str | None = None, *, events: int = 20_000, rounds: int = 5
) -> dict[str, float]:
    """Median events/s: ``fanout_eps`` (defaults), ``fanout_200_eps``, ``sdk_eps``, ratios."""
    logging.getLogger("amplitude").setLevel(logging.CRITICAL)
    if sink_url is None:
        with local_sink() as url:
            return bench(url, events=events, rounds=rounds)
    contenders: dict[str, Callable[[], float]] = {
        "fanout": lambda: _fanout_round(sink_url, events, None),
        "fanout_200": lambda: _fanout_round(sink_url, events, 200),
        "sdk": lambda: _sdk_round(sink_url, events),
    }
    for run in contenders.values():  # warm-up: imports, connections
        run()
    results: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            results[name].append(run())
    med = {k: statistics.median(v) for k, v in results.items()}
    return {
        "fanout_eps": med["fanout"],
        "fanout_200_eps": med["fanout_200"],
        "sdk_eps": med["sdk"],
        "ratio_vs_sdk": med["fanout"] / med["sdk"],
        "ratio_200_vs_sdk": med["fanout_200"] / med["sdk"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    r = bench(events=args.events, rounds=args.rounds)
    print(f"amplitude /2/httpapi, {args.events} events x {args.rounds} rounds (medians):")
    print(f"  fanout-amplitude (100, default)  {r['fanout_eps']:>9,.0f} events/s")
    print(f"  fanout-amplitude (200)           {r['fanout_200_eps']:>9,.0f} events/s")
    print(f"  amplitude-analytics SDK (200)    {r['sdk_eps']:>9,.0f} events/s")
    ratio, ratio_200 = r["ratio_vs_sdk"], r["ratio_200_vs_sdk"]
    print(f"  ratio fanout / SDK               {ratio:.2f} ({ratio_200:.2f} at 200)")


if __name__ == "__main__":
    main()
