"""The vendor providers against the official SDKs, in one run, on local sinks answering 200.

    python benchmarks/vendors.py [--events 20000] [--rounds 5]

1. Events/s delivered per provider against its official SDK doing the same work (each
   plugin's own bench module: ``plugins/fanout-*/bench_*.py``), as ratios.
2. Caller-thread µs per ``track()`` with every provider enabled (posthog, mixpanel, segment,
   amplitude, rudderstack, collector, webhook), against the PostHog SDK's ``capture()``
   alone, both measured here in the same process.
Medians over rounds; the figures are only comparable within one run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
for plugin in (
    "fanout-posthog",
    "fanout-mixpanel",
    "fanout-segment",
    "fanout-amplitude",
    "fanout-rudderstack",
):
    sys.path.insert(0, str(ROOT / "plugins" / plugin))

from _sink import Sink  # noqa: E402
from hot_path import PROPS, measure  # noqa: E402

import fanout  # noqa: E402


def delivery(events: int, rounds: int) -> list[tuple[str, float, float, str]]:
    """(provider, fanout events/s, SDK events/s, how) from each plugin's bench module."""
    rows: list[tuple[str, float, float, str]] = []
    try:
        ph: Any = importlib.import_module("bench_posthog").bench_delivery(events, rounds)
        eps = ph["events_per_second"]
        rows.append(("posthog", eps["fanout-posthog"], eps["posthog-sdk"], "defaults"))
    except ImportError as exc:
        print(f"posthog skipped: {exc}")
    try:
        mp: Any = importlib.import_module("bench_mixpanel").bench(events=events, rounds=rounds)
        # fanout-mixpanel prefers 500 events per request (BatchLimits.preferred_events).
        rows.append(("mixpanel", mp["fanout_500_eps"], mp["sdk_eps"], "defaults: 500 / SDK 50"))
        rows.append(("mixpanel", mp["fanout_100_eps"], mp["sdk_eps"], "BATCH_SIZE=100"))
        rows.append(("mixpanel", mp["fanout_eps"], mp["sdk_eps"], "both 50 events/request"))
    except ImportError as exc:
        print(f"mixpanel skipped: {exc}")
    try:
        sg: Any = importlib.import_module("bench_segment").bench(events=events, rounds=rounds)
        rows.append(("segment", sg["fanout_eps"], sg["sdk_plain_eps"], "SDK default (no gzip)"))
    except ImportError as exc:
        print(f"segment skipped: {exc}")
    try:
        am: Any = importlib.import_module("bench_amplitude").bench(events=events, rounds=rounds)
        rows.append(("amplitude", am["fanout_eps"], am["sdk_eps"], "defaults: 100 / SDK 200"))
    except ImportError as exc:
        print(f"amplitude skipped: {exc}")
    try:
        rs: Any = importlib.import_module("bench_rudderstack").bench(events=events, rounds=rounds)
        rows.append(("rudderstack", rs["fanout_eps"], rs["sdk_eps"], "both 100/request, gzip"))
    except ImportError as exc:
        print(f"rudderstack skipped: {exc}")
    return rows


def caller_cost(calls: int, reps: int) -> tuple[dict[str, float], dict[str, float]]:
    from posthog import Posthog

    with Sink() as url:
        env = {
            "FANOUT_PROVIDERS": "posthog,mixpanel,segment,amplitude,rudderstack,collector,webhook",
            "POSTHOG_API_KEY": "phc_bench",
            "POSTHOG_HOST": url,
            "MIXPANEL_TOKEN": "mp_bench",
            "MIXPANEL_API_HOST": url,
            "SEGMENT_WRITE_KEY": "seg_bench",
            "SEGMENT_HOST": url,
            "FANOUT_COLLECTOR_URL": url,
            "FANOUT_COLLECTOR_KEY": "sk_bench",
            "AMPLITUDE_API_KEY": "amp_bench",
            "AMPLITUDE_SERVER_URL": url + "/2/httpapi",
            "RUDDERSTACK_WRITE_KEY": "rs_bench",
            "RUDDERSTACK_DATA_PLANE_URL": url,
            "FANOUT_WEBHOOK_URL": url + "/hook",
            "FANOUT_WEBHOOK_SECRET": "whsec_bench",
        }
        client = fanout.Client(environ=env, register_atexit=False)
        try:
            four = measure(
                lambda i: client.track("checkout.finished", person_id="user_123", properties=PROPS),
                calls,
                reps,
            )
        finally:
            report = client.shutdown(timeout=120)
        assert all(r.delivered == calls * reps for r in report.values()), report
        ph = Posthog("phc_bench", host=url, max_queue_size=calls * reps + 1)
        try:
            sdk = measure(
                lambda i: ph.capture("checkout.finished", distinct_id="user_123", properties=PROPS),
                calls,
                reps,
            )
        finally:
            ph.shutdown()
    return four, sdk


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = delivery(args.events, args.rounds)
    print(f"(1) delivery to a local sink, {args.events:,} events x {args.rounds} rounds, medians")
    print(f"{'provider':12} {'fanout ev/s':>12} {'SDK ev/s':>10} {'ratio':>7}  settings")
    for name, ours, sdk, how in rows:
        print(f"{name:12} {ours:12,.0f} {sdk:10,.0f} {ours / sdk:7.2f}  {how}")
    four, sdk = caller_cost(min(args.events, 20_000), args.rounds)
    print()
    print("(2) caller-thread µs per call (medians of runs)")
    print(f"{'':44} {'mean':>8} {'p50':>8} {'p99':>8}")
    print(
        f"{'fanout track(), all 7 providers':44} "
        f"{four['mean']:8.1f} {four['p50']:8.1f} {four['p99']:8.1f}"
    )
    print(
        f"{'PostHog SDK capture() alone':44} {sdk['mean']:8.1f} {sdk['p50']:8.1f} {sdk['p99']:8.1f}"
    )
    print(f"ratio of means: {four['mean'] / sdk['mean']:.2f} (target <= 0.25)")
    print(f"\n(total {time.perf_counter() - t0:.0f}s; median of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
