"""Group commit: the writes that queued up while one transaction committed go in the next
one together.

A store with one writer (SQLite's one connection) serialises its inserts on a lock. Each
request's insert joins a queue, then takes the lock; whoever gets the lock first (the
leader) commits every insert queued by then in one transaction and hands each its own
result, and the others, finding theirs done when they get the lock, return at once. Each
caller still returns only after the transaction holding its rows committed (the collector
answers 200 only then), but N concurrent batches cost one commit, and the index pages
they share are written to the WAL once instead of N times. With one or two requests in
flight there is nothing to group and it costs a list append.

One batch's failure must not fail another's: when a group's transaction fails, each of its
inserts is retried alone, in its own transaction, and only the one that fails again reports
the error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

_J = TypeVar("_J")
_R = TypeVar("_R")


class _Ticket(Generic[_J, _R]):
    __slots__ = ("job", "result", "error", "done")

    def __init__(self, job: _J) -> None:
        self.job = job
        self.result: _R | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommit(Generic[_J, _R]):
    """``submit(job)`` runs ``commit(jobs)`` (one transaction, one result per job, in
    order) under ``lock`` for every job queued at the time; returns this job's result."""

    def __init__(self, lock: threading.Lock,
                 commit: Callable[[Sequence[_J]], list[_R]]) -> None:
        self._lock = lock
        self._commit = commit
        self._queued: list[_Ticket[_J, _R]] = []
        self._queue_lock = threading.Lock()

    @property
    def queued(self) -> int:
        """Writes waiting for the next transaction."""
        with self._queue_lock:
            return len(self._queued)

    def submit(self, job: _J) -> _R:
        ticket: _Ticket[_J, _R] = _Ticket(job)
        with self._queue_lock:
            self._queued.append(ticket)
        with self._lock:
            if not ticket.done:  # nobody took it: lead the group queued so far
                with self._queue_lock:
                    group, self._queued = self._queued, []
                self._run(group)
        if ticket.error is not None:
            raise ticket.error
        assert ticket.done
        return ticket.result  # type: ignore[return-value]  # done without error: a result

    def _run(self, group: list[_Ticket[_J, _R]]) -> None:
        try:
            try:
                results = self._commit([t.job for t in group])
            except Exception as exc:  # noqa: BLE001 - handed to the caller whose batch it is
                if len(group) == 1:
                    group[0].error = exc
                    return
                for ticket in group:  # each alone: a failure is its own batch's
                    self._run([ticket])
                return
            for ticket, result in zip(group, results, strict=True):
                ticket.result = result
                ticket.done = True
        finally:
            for ticket in group:
                if not ticket.done:
                    if ticket.error is None:
                        ticket.error = RuntimeError("the write was interrupted")
                    ticket.done = True
