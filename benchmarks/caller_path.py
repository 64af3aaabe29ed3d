"""Where the caller's CPU goes in one ``track()``, stage by stage, A/B against another tree.

    python benchmarks/caller_path.py [--rounds 15] [--calls 5000]
    python benchmarks/caller_path.py --against /work/main/.venv/bin/python

Each stage is timed by its own loop on the caller thread's CPU clock (``time.thread_time``,
so other processes on the machine cost it little), in interleaved rounds; the figure is the
minimum over rounds, in µs per call. Stages: the event id, the timestamp, the encoder's one
call, the walk over a 5-key properties dict, ``build_event``, one channel's ``emit``, the
client's fan-out (``_dispatch``) to 1 and 4 providers, ``track()`` with 1 and 4, and with
1 inside an open request context (as under the middleware; ``Context.run`` adds ~0.1 µs).

``--against PYTHON`` runs this same script under another interpreter (another checkout's
virtualenv, whose ``fanout`` it imports) in alternation with this one, and prints both
columns and their ratio: the A/B the README's figures come from. Private names are used on
purpose: this measures the internals, and only those both trees have.
"""

from __future__ import annotations

import argparse
import contextvars
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

from hot_path import fanout_client  # the same clients as the hot-path benchmark

import fanout
from fanout import _context, _validate
from fanout._events import ReadOnlyDict, build_event, checked_context, new_event_id
from fanout._json import dumps_strict

PROPS = {"plan": "pro", "amount": 4999, "currency": "usd", "coupon": None, "seats": 3}
UTC = dt.timezone.utc




def stages(
    one: fanout.Client, four: fanout.Client
) -> tuple[dict[str, Callable[[], object]], Callable[[], object]]:
    """The timed calls, and what closes the request context they opened."""
    event = build_event("track", name="checkout.finished", person_id="user_123", properties=PROPS)
    channel = one._channels[0]
    in_request = contextvars.copy_context()
    opened = fanout.context(
        person_id="user_123", ip="203.0.113.9", user_agent="Mozilla/5.0", path="/checkout"
    )
    in_request.run(opened.__enter__)  # closed by measure(), in the same Context
    in_middleware = contextvars.copy_context()
    values = {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0", "path": "/checkout"}
    request = _context.RequestContext(person_id="user_123", values=checked_context(values))
    in_middleware.run(_context.activate, request)  # the WSGI middleware's way: no reset
    encoded = ("0" * 36, "user_123", None, "checkout.finished", None, None, None, PROPS, {}, {})
    timed: dict[str, Callable[[], object]] = {
        "event id": new_event_id,
        "timestamp (datetime.now)": lambda: dt.datetime.now(UTC),
        "encoder call (size, surrogates)": lambda: dumps_strict(encoded),
        "walk of 5 properties": lambda: _validate.check_mapping(
            PROPS, "properties", [100_000], ReadOnlyDict
        ),
        "build_event": lambda: build_event(
            "track", name="checkout.finished", person_id="user_123", properties=PROPS
        ),
        "Channel.emit (null)": lambda: channel.emit(event),
        "fan-out, 1 provider": lambda: one._dispatch(event),
        "fan-out, 4 providers": lambda: four._dispatch(event),
        "track(), 1 provider": lambda: one.track(
            "checkout.finished", person_id="user_123", properties=PROPS
        ),
        "track(), 4 providers": lambda: four.track(
            "checkout.finished", person_id="user_123", properties=PROPS
        ),
        # Inside ``fanout.context(...)``: ids, ip, user agent, path.
        "track(), 1 provider, context open": lambda: in_request.run(
            one.track, "checkout.finished", properties=PROPS
        ),
        # As the middleware opens one: its values checked once per request.
        "track(), 1 provider, middleware ctx": lambda: in_middleware.run(
            one.track, "checkout.finished", properties=PROPS
        ),
    }
    return timed, lambda: in_request.run(opened.__exit__, None, None, None)


def measure(rounds: int, calls: int) -> dict[str, float]:
    """Minimum over ``rounds`` of the thread CPU µs per call of each stage."""
    one, four = fanout_client(1), fanout_client(4)
    try:
        timed, close = stages(one, four)
        best = dict.fromkeys(timed, float("inf"))
        clock = time.thread_time_ns
        for _ in range(rounds):
            for label, call in timed.items():
                c0 = clock()
                for _ in range(calls):
                    call()
                best[label] = min(best[label], (clock() - c0) / calls / 1000)
        close()
        return best
    finally:
        one.shutdown(timeout=30)
        four.shutdown(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3, help="alternating runs per side (A/B)")
    parser.add_argument("--against", help="the other side's python (another checkout's venv)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.rounds, args.calls)))
        return
    sides = {"this": sys.executable}
    if args.against:
        sides["other"] = args.against
    results: dict[str, dict[str, float]] = {}
    for _ in range(args.runs):
        for side, python in sides.items():
            out = subprocess.run(
                [python, __file__, "--json", "--rounds", str(args.rounds), "--calls",
                 str(args.calls)],
                check=True, capture_output=True, text=True, cwd=os.path.dirname(__file__),
            ).stdout  # fmt: skip
            run = json.loads(out)
            mins = results.setdefault(side, run)
            for label, value in run.items():
                mins[label] = min(mins[label], value)
    print(f"Python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.2f}; "
          f"thread CPU µs per call, min of {args.runs} runs x {args.rounds} rounds")  # fmt: skip
    header = f"{'stage':34} {'this':>8}"
    if args.against:
        header += f" {'other':>8} {'this/other':>11}"
    print(header)
    for label, value in results["this"].items():
        line = f"{label:34} {value:8.3f}"
        if args.against:
            other = results["other"][label]
            line += f" {other:8.3f} {value / other:11.2f}"
        print(line)


if __name__ == "__main__":
    main()
