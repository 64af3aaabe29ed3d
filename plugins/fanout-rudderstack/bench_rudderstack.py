"""Events/s delivered to a RudderStack data plane: fanout's provider against rudder-sdk-python.

Both send the same calls, in the same run, to the same local sink answering 200
(benchmarks/_sink.py, a process of its own). A round is N ``track()`` calls from one thread,
then wait until everything is delivered (fanout ``flush()``; the SDK's ``flush()`` =
``queue.join()``, its ``on_error`` counting failures). Both batch 100 events per request and
gzip every body (the SDK's defaults). Rounds alternate; medians and the ratio are reported.
The SDK's queue holds 10,000 events by default; it is sized to N so that it drops nothing.

    python plugins/fanout-rudderstack/bench_rudderstack.py [--events 20000] [--rounds 5]

``benchmarks/vendors.py`` calls :func:`bench`.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROPERTIES = {"plan": "pro", "total": 42.5, "items": [{"sku": "A-1", "qty": 2}], "coupon": None}
WRITE_KEY = "bench-write-key"

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _sink import Sink as local_sink  # type: ignore[import-not-found]  # noqa: E402


def _fanout_round(url: str, n: int) -> float:
    import fanout_rudderstack

    import fanout

    client = fanout.Client(
        providers=["rudderstack"],
        settings={"rudderstack": {"write_key": WRITE_KEY, "data_plane_url": url}},
        environ={},
        register_atexit=False,
        load_entry_points=False,
        plugins=[fanout_rudderstack],
    )
    try:
        start = time.perf_counter()
        for i in range(n):
            client.track("Order Completed", person_id=f"user_{i % 1000}", properties=PROPERTIES)
        report = client.flush(timeout=300)
        end = time.perf_counter()
    finally:
        client.shutdown(timeout=5)
    if report["rudderstack"].delivered != n:
        raise RuntimeError(f"fanout delivered {report['rudderstack'].delivered} of {n}")
    return n / (end - start)


def _sdk_round(url: str, n: int) -> float:
    from rudderstack.analytics.client import Client  # type: ignore[import-untyped]

    errors: list[Any] = []
    client = Client(
        WRITE_KEY, host=url, max_queue_size=n + 1, on_error=lambda e, b: errors.append(e)
    )
    try:
        start = time.perf_counter()
        for i in range(n):
            client.track(f"user_{i % 1000}", "Order Completed", PROPERTIES)
        client.flush()
        end = time.perf_counter()
    finally:
        client.shutdown()
    if errors:
        raise RuntimeError(f"the SDK failed {len(errors)} batches")
    return n / (end - start)


def bench(
    sink_url: str | None = None, *, events: int = 20_000, rounds: int = 5
) -> dict[str, float]:
    """Median events/s: ``fanout_eps``, ``sdk_eps`` and ``ratio_vs_sdk``."""
    logging.getLogger("rudderstack").setLevel(logging.CRITICAL)
    if sink_url is None:
        with local_sink() as url:
            return bench(url, events=events, rounds=rounds)
    contenders: dict[str, Callable[[], float]] = {
        "fanout": lambda: _fanout_round(sink_url, events),
        "sdk": lambda: _sdk_round(sink_url, events),
    }
    for run in contenders.values():  # warm-up
        run()
    results: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            results[name].append(run())
    med = {k: statistics.median(v) for k, v in results.items()}
    return {
        "fanout_eps": med["fanout"],
        "sdk_eps": med["sdk"],
        "ratio_vs_sdk": med["fanout"] / med["sdk"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    r = bench(events=args.events, rounds=args.rounds)
    print(f"rudderstack /v1/batch, {args.events} events x {args.rounds} rounds (medians):")
    print(f"  fanout-rudderstack        {r['fanout_eps']:>9,.0f} events/s")
    print(f"  rudder-sdk-python         {r['sdk_eps']:>9,.0f} events/s")
    print(f"  ratio fanout / SDK        {r['ratio_vs_sdk']:.2f}")


if __name__ == "__main__":
    main()
