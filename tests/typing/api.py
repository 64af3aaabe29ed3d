"""Typed usage of fanout's public API, checked by ``mypy --strict`` in CI (not run by pytest).

Each ``# type: ignore[code]`` below marks a call that must be a type error. mypy's
``warn_unused_ignores`` (part of ``--strict``) fails the check if one of them stops being an
error, so a signature that loosens (``**kwargs: Any``) is caught as surely as one that breaks
the valid calls.
"""

from __future__ import annotations

import datetime as dt

import fanout
from fanout import Client, Event, FlushReport


def valid_module_calls() -> None:
    event_id: str = fanout.track(
        "checkout.finished",
        person_id="user_123",
        properties={"amount": 4999},
        event_id="evt_stripe_1",
        timestamp=dt.datetime.now(dt.timezone.utc),
    )
    fanout.identify("user_123", anonymous_id="anon_1", traits={"plan": "pro"})
    fanout.page("/pricing", anonymous_id="anon_1", title="Pricing")
    fanout.alias("user_123", "anon_1")
    fanout.group("company", "acme", person_id="user_123", traits={"seats": 3})
    report: FlushReport = fanout.flush(timeout=2.0)
    fanout.shutdown(1)
    del event_id, report


def valid_client_calls(client: Client) -> None:
    client.track("x", anonymous_id="a")
    client.send(Event("track", name="x", person_id="u"))
    with Client(providers=["null"], batch_size=10) as c:
        c.flush()


def module_calls_that_must_not_type_check() -> None:
    fanout.track("x", persn_id="u")  # type: ignore[call-arg]
    fanout.track("x", person_id=123)  # type: ignore[arg-type]
    fanout.track(123, person_id="u")  # type: ignore[arg-type]
    fanout.identify(person_id="u", trait={})  # type: ignore[call-arg]
    fanout.page("/", anonymous_id="a", titel="t")  # type: ignore[call-arg]
    fanout.alias("u")  # type: ignore[call-arg]
    fanout.group("company", "acme", person="u")  # type: ignore[call-arg]
    fanout.flush(timeout="soon")  # type: ignore[arg-type]
    n: int = fanout.track("x", person_id="u")  # type: ignore[assignment]
    del n


def client_calls_that_must_not_type_check(client: Client) -> None:
    client.track("x", persn_id="u")  # type: ignore[call-arg]
    client.track("x", person_id=123)  # type: ignore[arg-type]
