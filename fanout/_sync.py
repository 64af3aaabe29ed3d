"""Sync mode: one call delivered to every sync provider in parallel, within one deadline.

Serverless functions freeze or end between requests, so ``FANOUT_SYNC=1`` delivers each
call before it returns. Done one provider after another, three providers down with a 1 s
request timeout cost 3.8 s per call and a refused connection held one ``track()`` for 13 s.
Here each provider gets its own short-lived daemon thread and the caller waits for all of
them together, at most ``FANOUT_SYNC_TIMEOUT``; whatever did not make it by then is
dead-lettered and counted (``sync_timeout``) through the delivery's claim, so a send that
returns later cannot count it again. Daemon threads rather than a pool: nothing to rebuild
after a fork, nothing a hung backend can hold at interpreter exit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from ._channel import Channel, Claim
from ._events import Event

__all__ = ["deliver_sync"]


def deliver_sync(channels: Sequence[Channel], event: Event, timeout: float) -> None:
    """Deliver ``event`` to every channel in parallel; return by ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    if len(channels) == 1 and channels[0].options.request_timeout * 2 < timeout:
        # One provider whose retries end before the deadline anyway: no thread needed.
        channels[0].deliver_now(event, deadline)
        return
    jobs: list[tuple[Channel, Claim, threading.Thread]] = []
    for channel in channels:
        claim = Claim([event])
        thread = threading.Thread(
            target=channel.deliver_now,
            args=(event, deadline, claim),
            name=f"fanout-sync-{channel.name}",
            daemon=True,
        )
        thread.start()
        jobs.append((channel, claim, thread))
    for channel, claim, thread in jobs:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            channel.abandon(claim, f"not delivered within FANOUT_SYNC_TIMEOUT ({timeout:g}s)")
