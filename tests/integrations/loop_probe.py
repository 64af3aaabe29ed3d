"""A loop probe for the awaitable flushes: they must never block the event loop.

The provider's ``send()`` waits until a probe task on the loop has ticked while that send
was waiting: if the flush blocked the loop, the probe could never tick, the send would stay
blocked and the flush would end at its deadline with events pending. No clock is read: the
outcome is counted, not timed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from fanout import Event

#: Ticks of the probe, during a send, before the provider delivers.
TICKS = 5


class GatedProvider:
    """Delivers only once the loop probe ticked while a send was waiting; keeps what it
    delivered."""

    name = "gated"

    def __init__(self) -> None:
        self.sending = threading.Event()
        self.gate = threading.Event()
        self.delivered: list[Event] = []

    def send(self, batch: Sequence[Event]) -> None:
        self.sending.set()
        if not self.gate.wait(timeout=30):
            raise TimeoutError("the probe never ticked during the send: the loop was blocked")
        self.delivered.extend(batch)

    def close(self) -> None:
        self.gate.set()


async def loop_probe(provider: GatedProvider, ticks: list[int]) -> None:
    """Tick on the loop; once a send waits, count ticks and open the gate after TICKS."""
    while True:
        await asyncio.sleep(0.001)
        if provider.sending.is_set():
            ticks.append(1)
            if len(ticks) >= TICKS:
                provider.gate.set()
