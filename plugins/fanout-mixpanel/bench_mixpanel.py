"""Events/s delivered to Mixpanel's /track: fanout's provider against the SDK's BufferedConsumer.

Both send the same calls, in the same run, to the same local sink answering 200
``{"status": 1}`` (a process of its own, so it does not share the clients'
GIL). A round is N ``track()`` calls from one thread, then wait until everything is
delivered (fanout ``flush()``; ``BufferedConsumer.flush()`` for the SDK, which otherwise
sends on the caller's thread every 50 calls). events/s is N over that wall time; the caller's
cost per call is measured too (mean, and p99 for the SDK, whose 50th call pays for a whole
HTTP request). Rounds alternate between contenders; medians and ratios are reported.

fanout runs with batches of 50 (the SDK's cap, like for like), of 100 (fanout's default)
and of 500 (``FANOUT_MIXPANEL_BATCH_SIZE=500``, a quarter of what /track takes per request):
the worker thread waits for the GIL after each socket call while the caller's loop holds
it, so fewer, larger requests are what lifts the rate.

    python plugins/fanout-mixpanel/bench_mixpanel.py [--events 20000] [--rounds 5]

``benchmarks/vendors.py`` calls :func:`bench` (optionally with its own ``sink_url``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

PROPERTIES = {"plan": "pro", "total": 42.5, "items": [{"sku": "A-1", "qty": 2}], "coupon": None}
TOKEN = "bench-token"


# -- the sink -----------------------------------------------------------------------------
# The repository's shared benchmark sink (benchmarks/_sink.py): a process of its own that
# answers 200 {"status": 1}, which BufferedConsumer and the provider both read as success.

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _sink import Sink as local_sink  # type: ignore[import-not-found]  # noqa: E402

# -- contenders ---------------------------------------------------------------------------


def _fanout_round(url: str, n: int, batch_size: int) -> tuple[float, float, float]:
    import fanout_mixpanel

    import fanout

    client = fanout.Client(
        providers=["mixpanel"],
        settings={"mixpanel": {"token": TOKEN, "api_host": url}},
        environ={},
        register_atexit=False,
        load_entry_points=False,
        plugins=[fanout_mixpanel],
        batch_size=batch_size,
    )
    calls: list[float] = []
    try:
        start = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            client.track("Order Completed", person_id=f"user_{i % 1000}", properties=PROPERTIES)
            calls.append(time.perf_counter() - t)
        report = client.flush(timeout=300)
        end = time.perf_counter()
    finally:
        client.shutdown(timeout=5)
    if report["mixpanel"].delivered != n:
        raise RuntimeError(f"fanout delivered {report['mixpanel'].delivered} of {n}")
    return n / (end - start), _mean_us(calls), _p99_us(calls)


def _sdk_round(url: str, n: int) -> tuple[float, float, float]:
    from mixpanel import BufferedConsumer, Mixpanel  # type: ignore[import-untyped]

    consumer = BufferedConsumer(max_size=50, events_url=f"{url}/track", retry_limit=0)
    mp = Mixpanel(TOKEN, consumer=consumer)
    calls: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        mp.track(f"user_{i % 1000}", "Order Completed", PROPERTIES)
        calls.append(time.perf_counter() - t)
    consumer.flush()
    end = time.perf_counter()
    return n / (end - start), _mean_us(calls), _p99_us(calls)


def _mean_us(samples: list[float]) -> float:
    return statistics.fmean(samples) * 1e6


def _p99_us(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99)] * 1e6


def bench(
    sink_url: str | None = None, *, events: int = 20_000, rounds: int = 5
) -> dict[str, float]:
    """Median events/s and caller cost per contender, plus the ratios.

    Keys: ``fanout_eps`` (batches of 50), ``fanout_100_eps``, ``fanout_500_eps``,
    ``sdk_eps``, ``ratio_vs_sdk`` (fanout/SDK at 50), ``ratio_100_vs_sdk``,
    ``ratio_500_vs_sdk``, ``fanout_call_us``,
    ``fanout_call_p99_us``, ``sdk_call_us``, ``sdk_call_p99_us``.
    """
    logging.getLogger("mixpanel").setLevel(logging.CRITICAL)
    if sink_url is None:
        with local_sink() as url:
            return bench(url, events=events, rounds=rounds)
    contenders: dict[str, Callable[[], tuple[float, float, float]]] = {
        "fanout": lambda: _fanout_round(sink_url, events, 50),
        "fanout_100": lambda: _fanout_round(sink_url, events, 100),
        "fanout_500": lambda: _fanout_round(sink_url, events, 500),
        "sdk": lambda: _sdk_round(sink_url, events),
    }
    for run in contenders.values():  # warm-up: imports, connections
        run()
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            results[name].append(run())

    def med(name: str, i: int) -> float:
        return statistics.median(r[i] for r in results[name])

    return {
        "fanout_eps": med("fanout", 0),
        "fanout_100_eps": med("fanout_100", 0),
        "fanout_500_eps": med("fanout_500", 0),
        "sdk_eps": med("sdk", 0),
        "ratio_vs_sdk": med("fanout", 0) / med("sdk", 0),
        "ratio_100_vs_sdk": med("fanout_100", 0) / med("sdk", 0),
        "ratio_500_vs_sdk": med("fanout_500", 0) / med("sdk", 0),
        "fanout_call_us": med("fanout", 1),
        "fanout_call_p99_us": med("fanout", 2),
        "sdk_call_us": med("sdk", 1),
        "sdk_call_p99_us": med("sdk", 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sink", help="URL of a running sink (default: start one)")
    args = parser.parse_args()
    r = bench(args.sink, events=args.events, rounds=args.rounds)
    print(f"mixpanel /track, {args.events} events x {args.rounds} rounds (medians):")
    print(
        f"  fanout-mixpanel (50)     {r['fanout_eps']:>9,.0f} events/s   caller "
        f"{r['fanout_call_us']:.1f} µs mean, {r['fanout_call_p99_us']:.1f} µs p99"
    )
    print(f"  fanout-mixpanel (100)    {r['fanout_100_eps']:>9,.0f} events/s")
    print(f"  fanout-mixpanel (500)    {r['fanout_500_eps']:>9,.0f} events/s")
    print(
        f"  SDK BufferedConsumer(50) {r['sdk_eps']:>9,.0f} events/s   caller "
        f"{r['sdk_call_us']:.1f} µs mean, {r['sdk_call_p99_us']:.1f} µs p99"
    )
    print(
        f"  ratio fanout / SDK       {r['ratio_vs_sdk']:.2f} (batches of 50), "
        f"{r['ratio_100_vs_sdk']:.2f} (fanout at 100), {r['ratio_500_vs_sdk']:.2f} (at 500)"
    )


if __name__ == "__main__":
    main()
