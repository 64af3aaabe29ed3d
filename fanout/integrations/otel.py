"""fanout's delivery counts as OpenTelemetry metrics (the ``fanout-analytics[otel]`` extra).

With ``opentelemetry-api`` installed, every client reports through the global meter
provider (or the one passed to :func:`observer`), so the counts in ``client.stats()`` reach
the dashboards a team already watches. Without it nothing is imported and nothing runs:
the channels have no observer. ``FANOUT_METRICS=off`` turns it off, ``otel`` insists on it.

Instruments (meter ``fanout``), following OpenTelemetry's naming conventions (dotted
lowercase names, UCUM units, ``.duration`` in seconds, attributes namespaced):

============================  =================  ========  ==================================
name                          kind               unit      attributes
============================  =================  ========  ==================================
``fanout.events.delivered``   Counter            {event}   ``fanout.provider``
``fanout.events.failed``      Counter            {event}   ``fanout.provider``, ``error.type``
``fanout.events.dropped``     Counter            {event}   ``fanout.provider``, ``error.type``
``fanout.events.skipped``     Counter            {event}   ``fanout.provider``, ``fanout.reason``
``fanout.queue.events``       ObservableGauge    {event}   ``fanout.provider``
``fanout.queue.bytes``        ObservableGauge    By        ``fanout.provider``
``fanout.request.duration``   Histogram          s         ``fanout.provider``, ``fanout.outcome``
============================  =================  ========  ==================================

``error.type`` and ``fanout.reason`` take the loss reasons of ``client.stats()``
(``retries_exhausted``, ``queue_full``, ``routed``...); ``fanout.outcome`` is ``ok``,
``retryable``, ``permanent``, ``too_large`` or ``error``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics

from ..__about__ import __version__

if TYPE_CHECKING:
    from .._channel import Channel

__all__ = ["OTelObserver", "observer", "watch"]

#: The channels whose queues the gauges read: every client's, weakly. Observable gauges
#: are created once per meter, so their callbacks read this set rather than one client's.
_watched: weakref.WeakSet[Channel] = weakref.WeakSet()


class OTelObserver:
    """A :class:`fanout._observe.DeliveryObserver` that records OpenTelemetry metrics."""

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter("fanout", __version__)
        self._delivered = meter.create_counter(
            "fanout.events.delivered", unit="{event}", description="Events a backend accepted."
        )
        self._lost = {
            "failed": meter.create_counter(
                "fanout.events.failed",
                unit="{event}",
                description="Events that reached a provider and were refused or never "
                "accepted (dead-lettered).",
            ),
            "dropped": meter.create_counter(
                "fanout.events.dropped",
                unit="{event}",
                description="Events that never reached the provider (queue full, closed, "
                "shutdown timeout).",
            ),
            "skipped": meter.create_counter(
                "fanout.events.skipped",
                unit="{event}",
                description="Events not meant for the provider (kind unsupported, routed).",
            ),
        }
        self._duration = meter.create_histogram(
            "fanout.request.duration",
            unit="s",
            description="Time one batch send to a backend took.",
        )
        meter.create_observable_gauge(
            "fanout.queue.events",
            callbacks=[_queue_events],
            unit="{event}",
            description="Events waiting in a provider's queue.",
        )
        meter.create_observable_gauge(
            "fanout.queue.bytes",
            callbacks=[_queue_bytes],
            unit="By",
            description="Approximate bytes waiting in a provider's queue.",
        )

    def attach(self, channels: Sequence[Channel]) -> None:
        watch(channels)

    def delivered(self, provider: str, n: int) -> None:
        self._delivered.add(n, {"fanout.provider": provider})

    def lost(self, provider: str, outcome: str, reason: str, n: int) -> None:
        key = "fanout.reason" if outcome == "skipped" else "error.type"
        self._lost[outcome].add(n, {"fanout.provider": provider, key: reason})

    def request(self, provider: str, seconds: float, outcome: str) -> None:
        self._duration.record(seconds, {"fanout.provider": provider, "fanout.outcome": outcome})


def observer(meter_provider: metrics.MeterProvider | None = None) -> OTelObserver:
    """An observer on ``meter_provider`` (default: OpenTelemetry's global one)."""
    return OTelObserver(meter_provider)


def watch(channels: Iterable[Channel]) -> None:
    """Let the queue gauges see ``channels`` (held weakly)."""
    for channel in channels:
        _watched.add(channel)


def _observations(read: Any) -> Iterator[metrics.Observation]:
    for channel in list(_watched):
        yield metrics.Observation(read(channel), {"fanout.provider": channel.name})


def _queue_events(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    return list(_observations(lambda c: c.pending()))


def _queue_bytes(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    return list(_observations(lambda c: c.queued_bytes()))
