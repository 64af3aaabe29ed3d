"""The channel's queue, behind a small interface.

The channel only needs ``put`` / ``take`` / ``ack`` and a few counts, so a durable on-disk
spool (events surviving a crash) can replace :class:`MemoryQueue` without touching the
client or the providers: ``take`` hands out a batch, ``ack`` says it is resolved
(delivered or dead-lettered) and may be forgotten. The in-memory queue forgets on ``take``.
"""

from __future__ import annotations

import collections
import itertools
import operator
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

from ._events import Event

_SIZE = operator.attrgetter("size")
_FOOTPRINT = operator.attrgetter("footprint")

__all__ = ["EventQueue", "MemoryQueue", "Wake", "take_head"]


class _Sized(Protocol):
    @property
    def size(self) -> int: ...


_S = TypeVar("_S", bound=_Sized)


def take_head(
    items: collections.deque[_S], max_events: int, max_bytes: int
) -> tuple[list[_S], int]:
    """Remove from the head of ``items`` up to ``max_events`` whose ``size`` fit in
    ``max_bytes`` together (at least one when not empty); return them and their size.

    The usual take (the next ``max_events`` fit) runs in C-level passes instead of a
    Python step per event; only a batch cut short by ``max_bytes`` is walked one by one.
    Both queues (memory and spool) take this way; the caller holds its lock.
    """
    n = min(len(items), max_events)
    if not n:
        return [], 0
    batch = list(items) if n == len(items) else list(itertools.islice(items, n))
    size = sum(map(_SIZE, batch))
    if n == 1 or size <= max_bytes:
        if n == len(items):
            items.clear()
        else:
            popleft = items.popleft
            for _ in itertools.repeat(None, n):
                popleft()
        return batch, size
    batch = []
    size = 0
    while items and len(batch) < max_events:
        nxt = items[0].size
        if batch and size + nxt > max_bytes:
            break
        batch.append(items.popleft())
        size += nxt
    return batch, size


class Wake:
    """What a worker thread waits on: a ``threading.Event`` (``set``, ``is_set``, ``wait``,
    ``clear``) that the main thread may set while signals arrive.

    ``Event.set`` takes its condition's lock in Python code, which a signal's exception
    (Ctrl-C, a SIGTERM handler's ``sys.exit``) can leave held: the worker's next ``wait``,
    then the exit hook's ``set``, waited for it forever. Here ``set`` is one C call that
    leaves no lock behind, a token put in a ``queue.SimpleQueue``; ``wait`` takes one (and
    puts it back: set until cleared), ``clear`` takes them all. One thread waits.
    """

    __slots__ = ("_tokens",)

    def __init__(self) -> None:
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()

    def set(self) -> None:
        self._tokens.put(None)

    def is_set(self) -> bool:
        return not self._tokens.empty()

    def wait(self, timeout: float | None = None) -> bool:
        tokens = self._tokens
        try:
            tokens.get(timeout=None if timeout is None else max(0.0, timeout))
        except queue.Empty:
            return False
        tokens.put(None)
        return True

    def clear(self) -> None:
        get = self._tokens.get_nowait
        try:
            while True:
                get()
        except queue.Empty:
            pass


class EventQueue(Protocol):
    """A bounded FIFO of events for one channel."""

    def put(self, event: Event, timeout: float | None = None) -> int:
        """Append ``event``; return how many events are now queued, 0 if there was no room
        (after waiting up to ``timeout``). The count saves the caller a second call."""
        ...

    def take(self, max_events: int, max_bytes: int) -> list[Event]:
        """Remove and return up to ``max_events`` / ``max_bytes`` (encoded) from the head.

        Always returns at least one event when not empty, even one above ``max_bytes``
        (the channel decides what to do with it).
        """
        ...

    def ack(self, batch: Sequence[Event]) -> None:
        """``batch`` (from ``take``) is resolved: delivered or dead-lettered."""
        ...

    def drain(self) -> list[Event]:
        """Remove and return everything (shutdown)."""
        ...

    def reset_after_fork(self) -> None:
        """In a forked child: new locks, and forget the parent's events (it sends them)."""
        ...

    def close(self) -> None:
        """The channel is shut down (after ``drain``): release files, threads. (spool)"""
        ...

    def losses(self) -> Mapping[str, int]:
        """Events the queue itself dropped, by reason (the spool's ``expired``). (spool)"""
        ...

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int:
        """Estimated memory the queued events hold (``Event.footprint``), in bytes."""
        ...

    @property
    def total_put(self) -> int:
        """Events ever accepted by ``put``; ``flush`` waits until that many are resolved."""
        ...


class MemoryQueue:
    """A deque bounded by count and by bytes, so a burst of big events cannot exhaust memory
    while a burst of small ones is not dropped early.

    Two sizes per event, because no one number serves both: the byte bound counts
    ``Event.footprint`` (the memory a queued event holds: an empty list is 56 bytes of it,
    though two on the wire), and batches are cut by ``Event.size`` (the encoded size, JSON
    escapes included: a control character is six bytes of it, though one in memory).
    """

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._items: collections.deque[Event] = collections.deque()
        self._bytes = 0
        #: Events taken or drained so far: with those still queued, every ``put`` ever
        #: accepted (``total_put``), counted off the caller's path.
        self._removed = 0
        self._new_locks()

    def _new_locks(self) -> None:
        # An RLock for its owner, which ``put`` relies on (see there). Only a caller waiting
        # for room under overflow=block uses the condition built on the same lock; never
        # ``with`` the condition: its ``__enter__`` is Python code, which a signal's
        # exception can leave after the lock was taken, before the block begins.
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        self._waiting = 0

    def put(self, event: Event, timeout: float | None = None) -> int:
        size = event.footprint
        # Signals: a handler that raises (Ctrl-C's KeyboardInterrupt, a SIGTERM handler's
        # ``sys.exit``) runs where the interpreter checks for pending calls, which CPython
        # does at the end of every call. An ``acquire()`` before the ``try`` could return,
        # then raise, and leave the lock held for good: the worker and the exit hook's
        # flush waited for it forever (tests/test_signal_safety.py). So the acquire is
        # inside the ``try``, and the ``finally`` releases the lock only if this thread
        # holds it: an RLock refuses (RuntimeError) otherwise, when a signal cut short the
        # acquire itself while it waited. Not ``with``, as safe: its special-method lookups
        # and three-argument ``__exit__`` call cost a third more than this whole ``put``
        # (CPython 3.11: 480 ns, against 360 for the old code and 380 for this), on every
        # put of every channel. The bytes are counted before the append, the last call: an
        # exception at its end leaves the event queued and counted.
        lock = self._lock
        try:
            lock.acquire()
            items = self._items
            n = len(items)
            if n < self.max_events and (self._bytes + size <= self.max_bytes or not n):
                self._bytes += size
                items.append(event)
                return n + 1
        finally:
            try:
                lock.release()
            except RuntimeError:  # not this thread's: the acquire was cut short
                pass
        return self._put_waiting(event, timeout) if timeout else 0

    def put_many(self, events: Sequence[Event]) -> tuple[int, int]:
        """Append the longest head of ``events`` that fits, under one lock; return how many
        of them were queued and how many events are queued now.

        What ``put`` of each in turn would queue until the first without room (so the
        same bounds, the first event of an empty queue always fitting). The delivery
        process (fanout/_relay_child.py) queues each batch the app hands it this way: one
        lock and one C-level extend per channel instead of a ``put`` per event.
        """
        with self._lock:  # (signal-safe; once per batch); the bytes counted before the extend
            items = self._items
            n = len(items)
            head = events[: max(0, self.max_events - n)]
            size = sum(map(_FOOTPRINT, head))
            if self._bytes + size > self.max_bytes:  # rare: cut where the bytes run out
                size = 0
                for k, event in enumerate(head):
                    footprint = event.footprint
                    if self._bytes + size + footprint > self.max_bytes and (n or k):
                        head = head[:k]
                        break
                    size += footprint
            self._bytes += size
            items.extend(head)
            return len(head), n + len(head)

    def _put_waiting(self, event: Event, timeout: float) -> int:
        """``put`` under ``overflow=block``: wait up to ``timeout`` for room."""
        size = event.footprint
        with self._lock:
            deadline = time.monotonic() + timeout
            self._waiting += 1
            try:
                while not self._has_room(event):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return 0
                    self._room.wait(remaining)
            finally:
                self._waiting -= 1
            items = self._items
            self._bytes += size
            items.append(event)
            return len(items)

    def _has_room(self, event: Event) -> bool:
        return len(self._items) < self.max_events and (
            self._bytes + event.footprint <= self.max_bytes or not self._items
        )

    def take(self, max_events: int, max_bytes: int) -> list[Event]:
        with self._lock:
            batch, _ = take_head(self._items, max_events, max_bytes)
            self._bytes -= sum(map(_FOOTPRINT, batch))
            self._removed += len(batch)
            if batch and self._waiting:
                self._room.notify_all()
        return batch

    def ack(self, batch: Sequence[Event]) -> None:
        """Nothing to do: memory forgets on ``take``."""

    def drain(self) -> list[Event]:
        with self._lock:
            batch = list(self._items)
            self._items.clear()
            self._bytes = 0
            self._removed += len(batch)
            if self._waiting:
                self._room.notify_all()
        return batch

    def close(self) -> None:
        """Nothing to release."""

    def losses(self) -> Mapping[str, int]:
        return {}

    def reset_after_fork(self) -> None:
        self._new_locks()
        self._items = collections.deque()
        self._bytes = 0
        self._removed = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def total_put(self) -> int:
        with self._lock:  # both counts at one instant
            return self._removed + len(self._items)
