"""The seam between channels and a metrics system: what a channel reports as it works.

A channel already counts everything for ``client.stats()``; an observer gets the same
outcomes as they happen, so they can become metrics on the dashboards a team already
watches (:mod:`fanout.integrations.otel`). With no observer the channel calls nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._channel import Channel

__all__ = ["DeliveryObserver"]


class DeliveryObserver(Protocol):
    """Called from the channels' threads; must be cheap and must not raise."""

    def attach(self, channels: Sequence[Channel]) -> None:
        """Called once when a client is built, with its channels (for queue gauges)."""

    def delivered(self, provider: str, n: int) -> None:
        """``n`` events were accepted by ``provider``'s backend."""

    def lost(self, provider: str, outcome: str, reason: str, n: int) -> None:
        """``n`` events ended without delivery: ``outcome`` is ``failed``, ``dropped`` or
        ``skipped``; ``reason`` is one of :data:`fanout._report.LOSS_REASONS`."""

    def request(self, provider: str, seconds: float, outcome: str) -> None:
        """One send to the backend took ``seconds``; ``outcome`` is ``ok``, ``retryable``,
        ``permanent``, ``too_large`` or ``error`` (the provider raised something else)."""
