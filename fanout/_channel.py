"""One channel per enabled provider: its queue, its worker thread, batching, retries, stats.

The caller's side (:meth:`Channel.emit`) only appends to a bounded queue and, once a full
batch is waiting, wakes the worker: no I/O, no serialisation, no lock held across I/O. The
worker (:meth:`Channel._run`) waits up to the flush interval, takes batches within the
provider's limits, sends them, and resolves every event exactly one way: delivered,
failed (dead-lettered, ``on_error``) or dropped, each counted by reason. Nothing is lost
without a count.

The channel knows nothing of HTTP; the provider knows nothing of threads.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from . import _lifecycle, _random
from ._config import DEFAULT_BATCH_SIZE, Delivery
from ._deadletter import DeadLetters
from ._events import Event
from ._exceptions import BatchTooLarge, PermanentError, RetryableError
from ._lane import LANE, DeliveryLane
from ._observe import DeliveryObserver
from ._queue import EventQueue, MemoryQueue, Wake
from ._report import (
    DROPPED_REASONS,
    FAILED_REASONS,
    SKIPPED_REASONS,
    ChannelReport,
    DeliveryFailure,
)
from ._retry import Backoff
from ._routing import compile_filter
from ._throttle import LOG_INTERVAL, Throttle
from .provider import ALL_KINDS, BatchLimits, Provider, close_provider, provider_after_fork

__all__ = ["Channel", "ChannelLike", "LOG_INTERVAL", "hand_over"]

ErrorCallback = Callable[[DeliveryFailure], None]
Redactor = Callable[[str], str]


class Claim:
    """The events of one delivery, each resolved exactly once: by the worker, or by a
    deadline that gave up on the worker.

    A hung backend can hold a send past shutdown's (or sync mode's) deadline. The deadline
    then :meth:`take` s what is still unresolved and dead-letters it; when the send finally
    returns, :meth:`settle` hands the worker nothing left to count, so no event is counted
    twice or not at all.
    """

    __slots__ = ("_lock", "_events", "_open", "taken")

    def __init__(self, events: Sequence[Event]) -> None:
        self._lock = threading.Lock()
        self._events = events
        # Built only when a delivery resolves in parts (splits, partial successes): the
        # common case, the whole batch at once, costs no per-event work.
        self._open: dict[int, Event] | None = None
        self.taken = False

    def settle(self, events: Sequence[Event]) -> list[Event]:
        """The ones among ``events`` still unresolved, now resolved by the caller."""
        with self._lock:
            if self.taken:
                return []
            if self._open is None:
                if events is self._events:
                    self._open = {}
                    return list(events)
                self._open = {id(e): e for e in self._events}
            pop = self._open.pop
            return [e for e in events if pop(id(e), None) is not None]

    def take(self) -> list[Event]:
        """Everything still unresolved; later :meth:`settle` calls get nothing."""
        with self._lock:
            self.taken = True
            out = list(self._events) if self._open is None else list(self._open.values())
            self._open = {}
            return out


class _Unencodable(Exception):
    """Internal: the provider's encoder refused the batch (raised before any request)."""


_SIZE = operator.attrgetter("size")

#: What JSON encoders raise for a value they cannot write (orjson: a TypeError subclass).
_ENCODE_ERRORS = (UnicodeEncodeError, OverflowError, TypeError, ValueError)
#: ValueErrors that are about a response, not the batch: not an encoding failure.
_DECODE_ERRORS = (UnicodeDecodeError, json.JSONDecodeError)


def _send_encoded(provider: Provider, batch: list[Event]) -> None:
    """``provider.send(batch)``, with an encoder's refusal told apart from other bugs."""
    try:
        provider.send(batch)
    except _ENCODE_ERRORS as exc:
        if isinstance(exc, _DECODE_ERRORS):
            raise
        raise _Unencodable(f"{type(exc).__name__}: {exc}") from exc


class ChannelLike(Protocol):
    """What the client uses of a channel: a :class:`Channel`, or in process mode one
    provider's endpoint (fanout/_relay.py), whose events go through the one relay channel."""

    name: str
    options: Delivery

    def emit(self, event: Event) -> None: ...
    def skip_routed(self) -> None: ...
    def report(self) -> ChannelReport: ...
    def request_flush(self) -> int: ...
    def wait(self, target: int, deadline: float) -> bool: ...
    def end_flush(self) -> None: ...
    def begin_shutdown(self) -> None: ...
    def finish_shutdown(self, deadline: float) -> None: ...


def hand_over(
    failure: DeliveryFailure,
    dead_letters: DeadLetters | None,
    on_error: ErrorCallback | None,
    logger: logging.Logger,
) -> None:
    """What every failed delivery gets: a dead letter, then an ``on_error`` call. Never
    raises. Shared with process delivery (fanout/_relay.py), whose losses of its own (a
    delivery process that died, a hand-off that never happened) take this same path."""
    if dead_letters is not None:
        try:
            dead_letters.write(failure)
        except Exception:  # noqa: BLE001 - it does not raise; if it ever did, go on
            logger.exception("writing dead letters for %s raised", failure.provider)
    if on_error is not None:
        try:
            on_error(failure)
        except Exception:  # noqa: BLE001 - a broken callback must not stop delivery
            logger.exception("on_error callback raised")


class Channel:
    """Delivers events to one provider, isolated from every other channel."""

    def __init__(
        self,
        name: str,
        provider: Provider,
        *,
        options: Delivery | None = None,
        limits: BatchLimits | None = None,
        kinds: frozenset[str] = ALL_KINDS,
        dead_letters: DeadLetters | None = None,
        on_error: ErrorCallback | None = None,
        redact: Redactor | None = None,
        queue: EventQueue | None = None,
        observer: DeliveryObserver | None = None,
        lane: DeliveryLane = LANE,
    ) -> None:
        self.name = name
        self._lane = lane
        self.observer = observer
        self.provider = provider
        self.options = options or Delivery()
        self.limits = limits or BatchLimits()
        self.kinds = kinds
        self._dead_letters = dead_letters
        self._on_error = on_error
        self._redact: Redactor = redact or (lambda s: s)
        # spool: `is None`, not `or`: an empty queue is falsy (it has __len__)
        self._queue: EventQueue = (
            queue
            if queue is not None
            else MemoryQueue(self.options.queue_size, self.options.queue_bytes)
        )
        wanted = self.options.batch_size or self.limits.preferred_events or DEFAULT_BATCH_SIZE
        self._batch_events = max(1, min(wanted, self.limits.max_events))
        self._batch_bytes = self.limits.max_bytes
        self._backoff = Backoff(self.options.retry_base, self.options.retry_cap)
        self._sync = self.options.sync
        self._accepts = compile_filter(self.options.events, self.options.exclude_events, name)
        self._block = self.options.overflow == "block"
        #: Every event goes to the queue: no kind, pattern or sync mode to decide on first.
        self._plain = kinds >= ALL_KINDS and self._accepts is None and not self._sync
        #: ... and into a memory queue, which can take a whole batch at once (emit_many).
        self._bulk = self._plain and type(self._queue) is MemoryQueue
        self.logger = logging.getLogger(f"fanout.channel.{name}")
        self._throttle = Throttle(self.logger)
        self._init_runtime()
        self._closed = False
        self._provider_closed = False
        _lifecycle.register_fork_aware(self)
        if len(self._queue):  # spool: events recovered from dead processes go out now
            self._ensure_worker()
            self._wake.set()

    def set_default_batch_size(self, events: int) -> None:
        """Send up to ``events`` per batch where neither the delivery options
        (``FANOUT_BATCH_SIZE``) nor the provider (``BatchLimits.preferred_events``) chose a
        size, instead of ``DEFAULT_BATCH_SIZE``; capped by the provider's limit. For the
        delivery process of process mode (fanout/_relay_child.py), before its first event."""
        if self.options.batch_size is None and self.limits.preferred_events is None:
            self._batch_events = max(1, min(events, self.limits.max_events))

    def _init_runtime(self) -> None:
        """Thread state; rebuilt in a forked child, where the parent's threads do not exist."""
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Set from the caller's thread (a full batch, flush, shutdown), where a signal's
        # exception (Ctrl-C, a SIGTERM handler's ``sys.exit``) may land at any call: a
        # ``threading.Event`` takes a Python-level lock that it could leave held, for the
        # worker and the exit hook to wait on forever; a ``Wake`` leaves none. For the same
        # reason the progress condition's lock is taken by ``with`` on the C lock itself
        # (``Condition.__enter__`` is Python code): tests/test_signal_safety.py.
        self._wake = Wake()
        self._stop = Wake()  # shutdown requested: drain, then exit
        self._abort = Wake()  # shutdown deadline passed: give up retrying
        self._progress_lock = threading.Lock()
        self._progress = threading.Condition(self._progress_lock)
        self._stats_lock = threading.Lock()
        self._flushes = 0
        self._inflight = 0
        #: The claim on the batch being sent, which shutdown's deadline may take over.
        self._inflight_claim: Claim | None = None
        self._resolved = 0  # events taken from the queue and resolved (worker only)
        self.delivered = 0
        self.retries = 0
        self.batches = 0
        self._losses: dict[str, int] = {}

    # -- caller's side -------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Queue ``event`` without blocking (unless ``overflow=block``); never raises."""
        # The common case first, in as few steps as it takes: an open channel that takes
        # every kind and event (``_plain``), the event queued, the worker running and no
        # full batch waiting yet. Anything else goes the long way round, which decides it.
        if self._plain and not self._closed:
            queued = self._queue.put(event)
            if 0 < queued < self._batch_events and self._thread is not None:
                return
            self._queued(event, queued)
            return
        if self._closed:
            self._lose("closed", 1, "events tracked after shutdown are dropped")
            return
        if event.kind not in self.kinds:
            self._count_skip(1)
            return
        if self._accepts is not None and not self._accepts(event):
            self.skip_routed()
            return
        if self._sync:  # the client delivers sync channels itself (Client._dispatch)
            self.deliver_now(event, time.monotonic() + self.options.request_timeout * 2)
            return
        self._queued(event, self._queue.put(event))

    def emit_many(self, events: Sequence[Event]) -> None:
        """``emit`` each of ``events`` in order, queued under one lock where the channel
        takes every event as it comes (``_plain``) into a memory queue: what the delivery
        process does with each batch the app hands it (fanout/_relay_child.py). Events
        without room go the one-by-one way, which waits (``overflow=block``) or counts them.
        """
        if not (self._bulk and not self._closed):
            for event in events:
                self.emit(event)
            return
        queue = self._queue
        assert isinstance(queue, MemoryQueue)
        done, queued = queue.put_many(events)
        if done:
            if self._thread is None:
                self._ensure_worker()
            if queued >= self._batch_events and not self._wake.is_set():
                self._wake.set()
        for event in events[done:]:
            self.emit(event)

    def _queued(self, event: Event, queued: int) -> None:
        """After the first ``put`` of ``event``, which returned ``queued``: wait for room
        (``overflow=block``) or count the drop; start the worker; wake it for a full batch."""
        queue = self._queue
        if not queued and self._block:
            queued = queue.put(event, self.options.block_timeout)
        if not queued:
            self._lose(
                "queue_full",
                1,
                "queue full (%d events / %d bytes); event dropped",
                len(queue),
                queue.nbytes,
            )
            return
        if self._thread is None:
            self._ensure_worker()
        # Wake the worker once per full batch, not on every call while it is still on its
        # way: setting an Event takes its Condition's lock in Python code. No wake-up is
        # lost, because the worker clears the flag before it looks at the queue.
        if queued >= self._batch_events and not self._wake.is_set():
            self._wake.set()

    def _ensure_worker(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._stop.is_set():
                return
            thread = threading.Thread(target=self._run, name=f"fanout-{self.name}", daemon=True)
            thread.start()
            self._thread = thread
            self.logger.debug("worker started (pid %d)", os.getpid())

    # -- worker --------------------------------------------------------------------------

    def _run(self) -> None:
        interval = self.options.flush_interval
        while True:
            # Jitter keeps many processes started together from sending in lockstep.
            woken = self._wake.wait(interval * _random.uniform(0.9, 1.1))
            self._wake.clear()
            stopping = self._stop.is_set()
            drain = stopping or self._flushes > 0 or not woken
            try:
                self._send_queued(drain)
            except Exception:  # noqa: BLE001 - the worker must outlive any bug
                self.logger.exception("unexpected error in the %s channel worker", self.name)
            if stopping and (len(self._queue) == 0 or self._abort.is_set()):
                return

    def _send_queued(self, drain: bool) -> None:
        """Send full batches; with ``drain``, everything queued, partial batch included."""
        queue = self._queue
        while len(queue) >= self._batch_events or (drain and len(queue) > 0):
            if self._abort.is_set():
                return
            # Taken and marked in flight under one lock: a flush waiter woken in between
            # would otherwise see nothing queued and nothing in flight, and return early.
            with self._progress_lock:
                batch = queue.take(self._batch_events, self._batch_bytes)
                if not batch:
                    return
                claim = Claim(batch)
                self._inflight = len(batch)
                self._inflight_claim = claim
            try:
                self._deliver(batch, claim)
            finally:
                queue.ack(batch)
                with self._progress_lock:
                    if self._inflight_claim is claim:  # not taken over by shutdown
                        self._inflight = 0
                        self._inflight_claim = None
                        self._resolved += len(batch)
                    self._progress.notify_all()

    def _deliver(
        self, batch: list[Event], claim: Claim, *, deadline: float | None = None
    ) -> None:
        """Send ``batch`` until it is resolved: retries, splitting and dead letters.

        Every outcome is settled through ``claim``, so a deadline that took the batch over
        while the provider was still sending makes the late outcome a no-op.
        """
        max_bytes = self.limits.max_event_bytes
        # One C-level pass over the sizes; the lists are built only when something is over.
        if batch and max(map(_SIZE, batch)) > max_bytes:
            too_big = [e for e in batch if e.size > max_bytes]
            batch = [e for e in batch if e.size <= max_bytes]
            self._fail(
                claim.settle(too_big),
                "too_large",
                f"event above {self.name}'s limit of {self.limits.max_event_bytes} bytes",
            )
        attempt = 0  # counts failures, not rate-limit answers (429)
        budget = time.monotonic() + self.options.retry_timeout
        if deadline is not None:
            budget = min(budget, deadline)
        observer = self.observer
        # The worker runs provider code in the shared lane (see _lane.py); sync mode's
        # senders do not take it.
        lane = self._lane if deadline is None else None
        while batch:
            started = time.perf_counter() if observer is not None else 0.0
            try:
                if lane is None:
                    _send_encoded(self.provider, batch)
                else:
                    with lane.held():
                        _send_encoded(self.provider, batch)
            except _Unencodable as exc:
                # Defence in depth: validation keeps such values out, but a provider's own
                # encoder may refuse more. Split like a 413 until only the culprit is left.
                if observer is not None:
                    observer.request(self.name, time.perf_counter() - started, "unencodable")
                self._split(batch, claim, deadline, "unencodable", str(exc), None)
                return
            except BatchTooLarge as exc:
                if observer is not None:
                    observer.request(self.name, time.perf_counter() - started, "too_large")
                self._split(batch, claim, deadline, "too_large", str(exc), exc.status_code)
                return
            except PermanentError as exc:
                if observer is not None:
                    observer.request(self.name, time.perf_counter() - started, "permanent")
                self._permanent(batch, exc, claim)
                return
            except RetryableError as exc:
                if observer is not None:
                    observer.request(self.name, time.perf_counter() - started, "retryable")
                if claim.taken:
                    return
                delay = self._backoff.delay(attempt, exc.retry_after)
                error, status = str(exc), exc.status_code
                rate_limited = status == 429
                if exc.pending is not None or exc.rejected:
                    batch = self._partial(batch, exc, claim)
                    if not batch:
                        return
            except Exception as exc:  # noqa: BLE001 - a provider bug must not kill the worker
                if observer is not None:
                    observer.request(self.name, time.perf_counter() - started, "error")
                if claim.taken:
                    return
                self.logger.exception("provider %s raised unexpectedly; will retry", self.name)
                delay = self._backoff.delay(attempt)
                error, status = f"{type(exc).__name__}: {exc}", None
                rate_limited = False
            else:
                if observer is not None:
                    observer.request(self.name, time.perf_counter() - started, "ok")
                self._count_delivered(len(claim.settle(batch)))
                return
            if not rate_limited:
                attempt += 1
            limit = self.options.max_retries
            if limit is not None and attempt > limit:
                self._fail(claim.settle(batch), "retries_exhausted", error, status)
                return
            if time.monotonic() + delay > budget:
                why = "sync deadline" if deadline is not None else "FANOUT_RETRY_TIMEOUT"
                self._fail(
                    claim.settle(batch), "retries_exhausted", f"{error} ({why} reached)", status
                )
                return
            with self._stats_lock:
                self.retries += 1
            self._throttle.warning(
                "retry",
                "%s: %s; retrying %d event(s) in %.1fs",
                self.name,
                self._redact(error),
                len(batch),
                delay,
            )
            if deadline is not None:
                time.sleep(delay)
            elif self._abort.wait(delay):
                self._fail(claim.settle(batch), "shutdown_timeout", error, status)
                return

    def _split(
        self,
        batch: list[Event],
        claim: Claim,
        deadline: float | None,
        reason: str,
        error: str,
        status: int | None,
    ) -> None:
        """Send the halves of a batch refused as a whole (413, or an event the provider's
        encoder cannot write), until only the culprit is left; it is dead-lettered."""
        if claim.taken:
            return
        if len(batch) == 1:
            self._fail(claim.settle(batch), reason, error, status)
            return
        mid = len(batch) // 2
        self.logger.debug("batch of %d refused (%s); splitting", len(batch), reason)
        self._deliver(batch[:mid], claim, deadline=deadline)
        self._deliver(batch[mid:], claim, deadline=deadline)

    def _partial(self, batch: list[Event], exc: RetryableError, claim: Claim) -> list[Event]:
        """Resolve what a partly delivered batch says; return the events still to retry."""
        n = len(batch)
        rejected = {i: r for i, r in (exc.rejected or {}).items() if 0 <= i < n}
        pending = [i for i in (range(n) if exc.pending is None else exc.pending) if 0 <= i < n]
        pending = [i for i in pending if i not in rejected]
        for i, reason in rejected.items():
            self._fail(
                claim.settle([batch[i]]), "permanent_error", f"{exc}: {reason}", exc.status_code
            )
        keep = set(pending) | set(rejected)
        delivered = claim.settle([e for i, e in enumerate(batch) if i not in keep])
        if delivered:
            self._count_delivered(len(delivered))
        return [batch[i] for i in pending]

    def _permanent(self, batch: list[Event], exc: PermanentError, claim: Claim) -> None:
        if exc.rejected is None:
            self._fail(claim.settle(batch), "permanent_error", str(exc), exc.status_code)
            return
        rejected = {i: r for i, r in exc.rejected.items() if 0 <= i < len(batch)}
        for i, reason in rejected.items():
            self._fail(
                claim.settle([batch[i]]), "permanent_error", f"{exc}: {reason}", exc.status_code
            )
        self._count_delivered(
            len(claim.settle([e for i, e in enumerate(batch) if i not in rejected]))
        )

    def deliver_now(self, event: Event, deadline: float, claim: Claim | None = None) -> None:
        """Sync mode: deliver ``event`` in the calling thread, retrying until ``deadline``
        (monotonic); never raises. The client runs several of these in parallel and takes
        ``claim`` over when its one deadline passes."""
        if self._closed:
            self._lose("closed", 1, "events tracked after shutdown are dropped")
            return
        if event.kind not in self.kinds:
            self._count_skip(1)
            return
        if self._accepts is not None and not self._accepts(event):
            self.skip_routed()
            return
        try:
            self._deliver([event], claim or Claim([event]), deadline=deadline)
        except Exception:  # noqa: BLE001 - never raise into business code
            self.logger.exception("unexpected error delivering to %s", self.name)

    def abandon(self, claim: Claim, why: str) -> None:
        """Dead-letter what ``claim`` still holds (a deadline passed); count it once."""
        events = claim.take()
        if events:
            self._fail(events, "sync_timeout", why)

    # -- accounting ----------------------------------------------------------------------

    def _count_delivered(self, n: int) -> None:
        if not n:
            return
        with self._stats_lock:
            self.delivered += n
            self.batches += 1
        if self.observer is not None:
            self.observer.delivered(self.name, n)

    def _observe_loss(self, reason: str, n: int) -> None:
        if self.observer is None:
            return
        outcome = (
            "failed"
            if reason in FAILED_REASONS
            else "skipped"
            if reason in SKIPPED_REASONS
            else "dropped"
        )
        self.observer.lost(self.name, outcome, reason, n)

    def _count_skip(self, n: int, reason: str = "unsupported_kind") -> None:
        with self._stats_lock:
            self._losses[reason] = self._losses.get(reason, 0) + n
        self._observe_loss(reason, n)

    def skip_routed(self) -> None:
        """Count one event routed away from this provider (never silently)."""
        self._count_skip(1, "routed")

    def _lose(self, reason: str, n: int, msg: str, *args: object) -> None:
        """Count ``n`` events dropped before reaching the provider, and say so (throttled)."""
        with self._stats_lock:
            self._losses[reason] = self._losses.get(reason, 0) + n
        self._observe_loss(reason, n)
        self._throttle.warning(reason, "%s: " + msg, self.name, *args)

    def _fail(
        self, events: Sequence[Event], reason: str, error: str, status: int | None = None
    ) -> None:
        """Dead-letter ``events``: count, write, call ``on_error``. Never raises."""
        if not events:
            return
        error = self._redact(error)
        with self._stats_lock:
            self._losses[reason] = self._losses.get(reason, 0) + len(events)
        self._observe_loss(reason, len(events))
        self._throttle.warning(
            "fail:" + reason,
            "%s: %d event(s) failed (%s): %s",
            self.name,
            len(events),
            reason,
            error,
        )
        failure = DeliveryFailure(self.name, reason, error, tuple(events), status)
        hand_over(failure, self._dead_letters, self._on_error, self.logger)

    # -- flush and shutdown --------------------------------------------------------------

    def pending(self) -> int:
        return len(self._queue) + self._inflight

    def queued_bytes(self) -> int:
        """Approximate bytes waiting in the queue (the metrics gauge reads it)."""
        return self._queue.nbytes

    def request_flush(self) -> int:
        """Ask the worker to send everything queued now; returns the target to wait for."""
        with self._progress_lock:
            self._flushes += 1
            target = self._queue.total_put
        self._wake.set()
        return target

    def wait(self, target: int, deadline: float) -> bool:
        """Wait until ``target`` queued events are resolved, or ``deadline`` (monotonic)."""
        with self._progress_lock:
            while self._resolved < target and self.pending() > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(min(remaining, 0.1))
        return True

    def end_flush(self) -> None:
        with self._progress_lock:
            self._flushes -= 1

    def begin_shutdown(self) -> None:
        self._closed = True
        self._stop.set()
        self._wake.set()

    def finish_shutdown(self, deadline: float) -> None:
        """After the shared deadline: stop retrying, dead-letter what never left, close."""
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self._abort.set()
                self._wake.set()
                thread.join(0.05)
            if thread.is_alive():
                # The provider is still inside send() (a hung backend): the batch in flight
                # is resolved here, like everything else still pending at the deadline.
                with self._progress_lock:
                    claim, self._inflight_claim = self._inflight_claim, None
                    if claim is not None:
                        self._resolved += self._inflight
                        self._inflight = 0
                inflight = claim.take() if claim is not None else []
                if inflight:
                    self._fail(
                        inflight,
                        "shutdown_timeout",
                        f"{len(inflight)} event(s) were being sent when shutdown's deadline "
                        "passed",
                    )
        leftover = self._queue.drain()
        self._queue.close()  # spool: what a durable queue kept stays on disk for the next process
        if leftover:
            self._fail(
                leftover,
                "shutdown_timeout",
                f"{len(leftover)} event(s) still queued when shutdown's deadline passed",
            )
        if thread is None or not thread.is_alive():
            self._close_provider()

    def _close_provider(self) -> None:
        if self._provider_closed:
            return
        self._provider_closed = True
        try:
            close_provider(self.provider)
        except Exception:  # noqa: BLE001 - closing is best effort
            self.logger.exception("closing provider %s raised", self.name)

    def report(self) -> ChannelReport:
        with self._stats_lock:
            losses = dict(self._losses)
            for reason, n in self._queue.losses().items():  # spool: expired, spool_corrupt
                losses[reason] = losses.get(reason, 0) + n
            delivered, retries, batches = self.delivered, self.retries, self.batches
        return ChannelReport(
            provider=self.name,
            delivered=delivered,
            failed=sum(n for r, n in losses.items() if r in FAILED_REASONS),
            dropped=sum(n for r, n in losses.items() if r in DROPPED_REASONS),
            skipped=sum(n for r, n in losses.items() if r in SKIPPED_REASONS),
            pending=self.pending(),
            retries=retries,
            batches=batches,
            losses=losses,
        )

    # -- fork ----------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """The parent keeps (and sends) its queued events; the child starts empty."""
        self._init_runtime()
        self._lane.reset_after_fork()
        self._queue.reset_after_fork()
        if self._dead_letters is not None:
            self._dead_letters.reset_after_fork()
        try:
            provider_after_fork(self.provider)
        except Exception:  # noqa: BLE001
            self.logger.exception("provider %s after_fork raised", self.name)

