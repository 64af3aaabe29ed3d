"""``aflush`` / ``ashutdown`` never block the event loop: a loop probe proves it.

The provider's send() waits until a probe task on the loop has ticked: if the awaitable
flush blocked the loop, the probe could never tick, the send would stay blocked and the
flush would end at its deadline with events pending. No clock is read: the outcome is
counted, not timed.
"""

from __future__ import annotations

import asyncio

import fanout

from .loop_probe import TICKS, GatedProvider, loop_probe

EVENTS = 50


def _run(method: str, make_client) -> tuple[GatedProvider, fanout.FlushReport, int]:
    provider = GatedProvider()
    client = make_client(providers=[provider], flush_interval=30, max_retries=0)
    for i in range(EVENTS):
        client.track("loop.event", person_id="u", event_id=f"e-{i}")

    async def main() -> tuple[fanout.FlushReport, int]:
        ticks: list[int] = []
        probe = asyncio.create_task(loop_probe(provider, ticks))
        report = await getattr(client, method)(timeout=20)
        probe.cancel()
        return report, len(ticks)

    report, ticks = asyncio.run(main())
    return provider, report, ticks


def test_aflush_lets_the_loop_run_while_it_waits(make_client):
    provider, report, ticks = _run("aflush", make_client)
    assert report.ok and not report.timed_out
    assert ticks >= TICKS
    assert sorted(e.event_id for e in provider.delivered) == sorted(f"e-{i}" for i in range(EVENTS))


def test_ashutdown_lets_the_loop_run_while_it_waits(make_client):
    provider, report, ticks = _run("ashutdown", make_client)
    assert report.ok and not report.timed_out
    assert ticks >= TICKS
    assert len(provider.delivered) == EVENTS


def test_module_level_aflush_and_ashutdown_use_the_default_client(make_client):
    provider = GatedProvider()
    provider.gate.set()
    client = make_client(providers=[provider], flush_interval=30)
    previous = fanout.set_default_client(client)
    try:
        fanout.track("default.event", person_id="u")
        flushed = asyncio.run(fanout.aflush(timeout=10))
        fanout.track("default.event", person_id="u")
        final = asyncio.run(fanout.ashutdown(timeout=10))
        assert fanout.set_default_client(None) is None  # ashutdown forgot it
    finally:
        fanout.set_default_client(previous)
    assert flushed.ok and final.ok
    assert len(provider.delivered) == 2
    assert asyncio.run(fanout.aflush()).ok  # no default client: nothing to do
