"""What a channel reports: delivery counts, losses by reason, and delivery failures."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Final

from ._events import Event

__all__ = [
    "ChannelReport",
    "DeliveryFailure",
    "DROPPED_REASONS",
    "FAILED_REASONS",
    "SKIPPED_REASONS",
    "FlushReport",
    "LOSS_REASONS",
]

#: Every reason an event may fail or be dropped, as counted in ``ChannelReport.losses``.
LOSS_REASONS: Final = (
    "queue_full",  # the queue was full (overflow policy)
    "permanent_error",  # the backend refused the batch or the event
    "retries_exhausted",  # retryable failures outlasted FANOUT_RETRY_TIMEOUT (or MAX_RETRIES)
    "too_large",  # the event is above the provider's per-event limit
    "unencodable",  # the provider's encoder refused the event (validation let it through)
    "shutdown_timeout",  # still undelivered when shutdown's deadline passed
    "sync_timeout",  # sync mode: not delivered within FANOUT_SYNC_TIMEOUT
    "closed",  # tracked after shutdown
    "unsupported_kind",  # the provider cannot represent this kind of event (skipped)
    "routed",  # routed away: FANOUT_<P>_EVENTS / _EXCLUDE_EVENTS or providers=/exclude= (skipped)
    "expired",  # spool: waited longer than FANOUT_SPOOL_MAX_AGE in a dead process's spool
    "spool_corrupt",  # spool: a record of a dead process's spool could not be read
    "relay_lost",  # process mode: the delivery process died before reporting it settled
)

#: Reached the provider and were refused or never accepted: counted as ``failed``.
FAILED_REASONS: Final = frozenset(
    {"permanent_error", "retries_exhausted", "too_large", "sync_timeout", "unencodable"}
)
#: Never reached the provider: counted as ``dropped``.
DROPPED_REASONS: Final = frozenset(
    {"queue_full", "closed", "shutdown_timeout", "expired", "spool_corrupt"}  # spool: last two
    | {"relay_lost"}  # process mode (fanout/_relay.py)
)
#: Not meant for the provider: counted as ``skipped``.
SKIPPED_REASONS: Final = frozenset({"unsupported_kind", "routed"})


@dataclasses.dataclass(frozen=True)
class ChannelReport:
    """One provider's counts since the client started, and what is pending now.

    ``failed`` counts events that reached the provider and were refused or never accepted
    (dead-lettered); ``dropped`` counts events that never reached it (queue full, closed,
    shutdown timeout); ``skipped`` counts events of a kind the provider cannot represent
    and events routed away from it.
    """

    provider: str
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    skipped: int = 0
    pending: int = 0
    retries: int = 0
    batches: int = 0
    losses: Mapping[str, int] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.pending == 0 and self.failed == 0 and self.dropped == 0


class FlushReport(Mapping[str, ChannelReport]):
    """``flush()`` / ``shutdown()`` result: provider name → :class:`ChannelReport`."""

    def __init__(self, reports: Mapping[str, ChannelReport], *, timed_out: bool = False):
        self._reports = dict(reports)
        #: True when the deadline passed with events still pending.
        self.timed_out = timed_out

    def __getitem__(self, name: str) -> ChannelReport:
        return self._reports[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._reports)

    def __len__(self) -> int:
        return len(self._reports)

    @property
    def ok(self) -> bool:
        """Everything delivered: nothing pending, failed or dropped anywhere."""
        return all(r.ok for r in self._reports.values())

    @property
    def pending(self) -> int:
        return sum(r.pending for r in self._reports.values())

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{n}: delivered={r.delivered} failed={r.failed} dropped={r.dropped} "
            f"pending={r.pending}"
            for n, r in self._reports.items()
        )
        return f"<FlushReport {inner}>"

    def table(self) -> str:
        """A fixed-width table for terminals (the CLI and the demo print it)."""
        head = ("provider", "delivered", "failed", "dropped", "skipped", "pending")
        rows = [head] + [
            (n, str(r.delivered), str(r.failed), str(r.dropped), str(r.skipped), str(r.pending))
            for n, r in self._reports.items()
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        def line(row: tuple[str, ...]) -> str:
            cells = [
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            return "  ".join(cells)

        return "\n".join(line(row) for row in rows)


@dataclasses.dataclass(frozen=True)
class DeliveryFailure:
    """Passed to ``on_error`` when events are dead-lettered; never raised to callers."""

    provider: str
    reason: str
    error: str
    events: tuple[Event, ...]
    status_code: int | None = None
