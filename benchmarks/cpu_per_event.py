"""Process CPU per event delivered: each provider alone, all four together, the official SDKs.

    python benchmarks/cpu_per_event.py [--events 20000] [--rate 4000] [--reps 3] [--quick]

Each case runs in a fresh process that tracks ``--events`` events paced at ``--rate`` per
second (as an app would, not in one burst), then flushes; the figure is that process's
whole CPU time (``time.process_time``: the caller's thread and every background thread)
from the first call until everything was delivered, divided by the events tracked. So it
counts what the caller pays and what delivery takes from the app's cores: mapping,
encoding, gzip, HTTP, thread wake-ups. Building the client is not counted.

Every case sends to the same local sink process (``_sink.py``), whose own CPU is not
counted. fanout's cases check that every provider delivered every event; the SDKs' cases
check that their flush returned and the sink received requests.

Cases run interleaved, one repetition of every case after another, and the figures are
medians over repetitions. Ratios are against the PostHog SDK with its one backend, measured
in the same run; the target for posthog + segment + mixpanel + collector is at most 0.4.
``floor`` is the paced loop alone (no analytics). ``four-process`` is "all four" with
``FANOUT_DELIVERY=process``: the app's CPU plus its delivery process's, read from ``/proc``
over the same span (the delivery process's start-up, during the warm-up, is not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _sink import FOUR, Sink, fanout_client, sink_stats  # noqa: E402

PROPS = {"plan": "pro", "amount": 4999, "currency": "usd", "coupon": None, "seats": 3}

#: (case, what it runs); fanout cases name their providers, SDK cases end in ``-sdk``.
CASES: dict[str, tuple[str, ...]] = {
    "floor": (),
    "collector": ("collector",),
    "posthog": ("posthog",),
    "segment": ("segment",),
    "mixpanel": ("mixpanel",),
    "all four": FOUR,
    # The same four in process mode (FANOUT_DELIVERY=process): the app's CPU plus its
    # delivery process's, read from /proc over the same span.
    "four-process": FOUR,
    "posthog-sdk": (),
    "segment-sdk": (),
    "mixpanel-sdk": (),
}
BASELINE = "posthog-sdk"


def _paced(track: Callable[[int], object], events: int, rate: float) -> None:
    """Call ``track(i)`` ``events`` times at ``rate`` per second (sleeping between chunks)."""
    start = time.perf_counter()
    chunk = max(1, int(rate / 200))  # sleep about every 5 ms
    for i in range(events):
        track(i)
        if i % chunk == chunk - 1:
            delay = start + (i + 1) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)


#: Events tracked and flushed before the measurement, so that lazy imports, threads and
#: connections are in place (for every case alike) and only steady-state work is counted.
WARM_UP = 200


def _warm_up(track: Callable[[int], object], flush: Callable[[], object]) -> None:
    for i in range(WARM_UP):
        track(i)
    flush()


def _sdk(case: str, url: str) -> tuple[Callable[[int], object], Callable[[], None], Any]:
    """(track, flush, close) for one official SDK against the sink, with its defaults."""
    if case == "posthog-sdk":
        from posthog import Posthog

        ph = Posthog("phc_bench", host=url)
        return (
            lambda i: ph.capture("checkout.finished", distinct_id="user_123", properties=PROPS),
            ph.flush,
            ph.shutdown,
        )
    if case == "segment-sdk":
        from segment.analytics import Client  # type: ignore[import-untyped]

        sg = Client("seg_bench", host=url)
        return (
            lambda i: sg.track("user_123", "checkout.finished", PROPS),
            sg.flush,
            sg.shutdown,
        )
    if case == "mixpanel-sdk":
        from mixpanel import BufferedConsumer, Mixpanel  # type: ignore[import-untyped]

        # The SDK's batching consumer (its default Consumer posts one event per request on
        # the caller's thread). It too sends on the caller's thread, 50 events a request.
        consumer = BufferedConsumer(max_size=50, events_url=f"{url}/track", retry_limit=0)
        mp = Mixpanel("mp_bench", consumer=consumer)
        return (
            lambda i: mp.track("user_123", "checkout.finished", PROPS),
            consumer.flush,
            lambda: None,
        )
    raise ValueError(case)


def child(case: str, url: str, events: int, rate: float) -> dict[str, Any]:
    """Run one case in this process; returns CPU seconds and what was delivered."""
    names = CASES[case]
    if case == "floor":
        c0 = time.process_time()
        _paced(lambda i: None, events, rate)
        cpu = time.process_time() - c0
        ok = True
    elif case.endswith("-sdk"):
        track, flush, close = _sdk(case, url)
        _warm_up(track, flush)
        before = sink_stats(url)
        c0 = time.process_time()
        _paced(track, events, rate)
        flush()
        cpu = time.process_time() - c0
        close()
        ok = sink_stats(url)["requests"] > before["requests"]
    else:
        process = case == "four-process"
        client = fanout_client(url, names, delivery_mode="process" if process else None)

        def track_one(i: int) -> None:
            client.track("checkout.finished", person_id="user_123", properties=PROPS)

        _warm_up(track_one, lambda: client.flush(timeout=60))
        kids0 = _children_cpu()  # the delivery process, started by the warm-up
        c0 = time.process_time()
        _paced(track_one, events, rate)
        report = client.flush(timeout=120)
        cpu = app = time.process_time() - c0
        if process:
            kids = _children_cpu()
            cpu += sum(kids[pid] - kids0.get(pid, 0.0) for pid in kids)
        client.shutdown(timeout=30)
        ok = all(r.delivered == events + WARM_UP for r in report.values()) and not report.timed_out
        return {"cpu": cpu, "app": app, "events": events, "ok": ok}
    return {"cpu": cpu, "app": cpu, "events": events, "ok": ok}


def _children_cpu() -> dict[int, float]:
    """User + system CPU seconds of each live child process of this one, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            try:
                stat = Path(f"/proc/{kid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(kid)] = (int(stat[11]) + int(stat[12])) / tick
    return found


def run_case(case: str, url: str, events: int, rate: float) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            case,
            "--url",
            url,
            "--events",
            str(events),
            "--rate",
            str(rate),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"case {case!r} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["ok"]:
        raise RuntimeError(f"case {case!r} did not deliver every event: {result}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=4_000.0, help="events per second")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="5,000 events, 1 repetition")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.url, args.events, args.rate)))
        return
    if args.quick:
        args.events, args.reps = 5_000, 1
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    t0 = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    with Sink() as url:
        for _ in range(args.reps):
            for case in cases:
                runs[case].append(run_case(case, url, args.events, args.rate))
    us = {c: statistics.median(r["cpu"] for r in runs[c]) / args.events * 1e6 for c in cases}
    base = us.get(BASELINE)
    print(
        f"process CPU per event delivered: {args.events:,} events paced at {args.rate:,.0f}/s, "
        f"median of {args.reps} run(s)"
    )
    print(f"{'case':14} {'providers':42} {'µs/event':>9} {'/posthog-sdk':>13}")
    for case in cases:
        what = "+".join(CASES[case]) or ("(the paced loop only)" if case == "floor" else "SDK")
        ratio = f"{us[case] / base:.2f}" if base else "-"
        print(f"{case:14} {what:42} {us[case]:9.1f} {ratio:>13}")
    if base and "all four" in us:
        print(
            f"\nall four / PostHog SDK: {us['all four'] / base:.2f} (target <= 0.4); "
            f"sum of the four alone: {sum(us.get(n, 0) for n in FOUR):.1f} µs"
        )
    if base and "four-process" in us:
        app = statistics.median(r["app"] for r in runs["four-process"]) / args.events * 1e6
        print(
            f"the four in process mode (app + delivery process) / PostHog SDK: "
            f"{us['four-process'] / base:.2f}; the app's own share {app:.1f} µs/event "
            f"(track() and the hand-off), the delivery process's {us['four-process'] - app:.1f}"
        )
    print(f"(total {time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
