"""The durable queue: a channel's events kept on disk until they are resolved.

:class:`SpoolQueue` is the :class:`~fanout._queue.EventQueue` of a channel when
``FANOUT_SPOOL_DIR`` (or ``Client(spool_dir=...)``) is set. The worker still takes events
from memory; the disk is a write-ahead log read only when a process died with events in it.

- The caller's thread appends to two lists under one lock (the queue, and the events not
  yet written). A writer thread group-commits: every ``COMMIT_INTERVAL`` it encodes what
  arrived, appends it and the latest acknowledgement to the segment with one ``write``,
  then ``fdatasync``. So a power cut loses at most the last commit interval plus one
  ``fdatasync`` (documented as 50 ms), a SIGKILL at most what was not yet written.
  ``FANOUT_SPOOL_SYNC=1`` makes ``put`` wait for its own commit instead.
- One spool per process and provider, so forked workers never share a file: a forked
  child closes its copy of the parent's files (never unlocking them) and starts its own.
- At start, a queue takes over the spools of its provider whose owners are gone
  (:func:`~fanout._spoolfile.lock_if_dead`), copies their waiting lines into its own
  spool, deletes theirs, and the channel delivers them. Event ids make a redelivery of
  something that did arrive count once. The lines are decoded (and validated) by ``take``,
  a batch at a time, not by the take-over, which runs while the client is being built; a
  line that proves unreadable then is counted (``spool_corrupt``) and acknowledged with
  its batch, so the acknowledgement never runs ahead of an event still being sent.
- Any ``OSError`` (unwritable directory, full disk) turns the queue into a memory queue
  with one warning; the caller never sees an exception.

The line format is described in :mod:`fanout._spoolfile`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, cast

from . import _spoolfile as sf
from ._config import (
    FANOUT_SPOOL_DIR,
    FANOUT_SPOOL_MAX_AGE,
    FANOUT_SPOOL_MAX_BYTES,
    FANOUT_SPOOL_SYNC,
    Delivery,
)
from ._events import Event
from ._exceptions import ConfigError, InvalidEvent
from ._queue import Wake, take_head

__all__ = ["COMMIT_INTERVAL", "SpoolOptions", "SpoolQueue"]

logger = logging.getLogger("fanout.spool")

#: Seconds between group commits; with the ``fdatasync`` after each, the loss window.
COMMIT_INTERVAL: Final = 0.02
#: A new segment is started past this size, so resolved events can be deleted.
SEGMENT_BYTES: Final = 8 * 1024 * 1024
#: How long ``put`` waits for its commit in sync mode before giving up (and not raising).
SYNC_WAIT: Final = 5.0


@dataclasses.dataclass(frozen=True)
class SpoolOptions:
    """Spool settings, the same for every provider (``directory=None``: no spool)."""

    directory: Path | None = None
    sync: bool = FANOUT_SPOOL_SYNC.default
    max_bytes: int = FANOUT_SPOOL_MAX_BYTES.default
    max_age: float = FANOUT_SPOOL_MAX_AGE.default

    @classmethod
    def resolve(
        cls, env: Mapping[str, str], directory: str | os.PathLike[str] | None = None
    ) -> SpoolOptions:
        """``directory`` (a keyword argument) first, then the environment."""
        chosen = directory if directory is not None else FANOUT_SPOOL_DIR.read(env)
        if chosen is not None and not str(chosen).strip():
            raise ConfigError("spool_dir must not be empty", variable="spool_dir")

        def pick(var: Any) -> Any:
            value = var.read(env)
            return var.default if value is None else value

        return cls(
            directory=Path(chosen) if chosen is not None else None,
            sync=pick(FANOUT_SPOOL_SYNC),
            max_bytes=pick(FANOUT_SPOOL_MAX_BYTES),
            max_age=pick(FANOUT_SPOOL_MAX_AGE),
        )

    def queue_for(self, provider: str, delivery: Delivery) -> SpoolQueue | None:
        """The spool of one channel, or ``None`` (memory queue) when spooling is off.
        Sync-mode channels send in the caller's thread and keep nothing to spool."""
        if self.directory is None or delivery.sync:
            return None
        return SpoolQueue(
            self.directory,
            provider,
            max_events=delivery.queue_size,
            max_bytes=min(delivery.queue_bytes, self.max_bytes),
            sync=self.sync,
            max_age=self.max_age,
        )


class _Spooled:
    """An event taken over from a dead process's spool, decoded when it is taken: its line,
    or its place in a ``B`` line. ``size`` (the line's length, or its share of the ``B``
    line) stands in for the event's encoded size until then."""

    __slots__ = ("line", "size")

    def __init__(self, line: sf.Payload, size: int) -> None:
        self.line = line
        self.size = size


class SpoolQueue:
    """A bounded FIFO of events for one channel, written ahead to disk."""

    def __init__(
        self,
        root: Path,
        provider: str,
        *,
        max_events: int,
        max_bytes: int,
        sync: bool = False,
        max_age: float = FANOUT_SPOOL_MAX_AGE.default,
        recover: bool = True,
        interval: float = COMMIT_INTERVAL,
    ) -> None:
        self.root = Path(root)
        self.provider = provider
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.sync = sync
        self.max_age = max_age
        self.interval = interval
        self._losses: dict[str, int] = {}
        self._degraded = False
        self._init_state()
        if recover:
            self._recover()

    def _init_state(self) -> None:
        """Everything per process: rebuilt in a forked child."""
        # ``_lock`` is an RLock, for ``put`` (see MemoryQueue.put). Locks are taken with
        # ``with`` on the lock itself, never on a Condition: its ``__enter__`` is Python
        # code, which a signal's exception (Ctrl-C, a SIGTERM handler's ``sys.exit``) can
        # leave with the lock taken and the block not begun.
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        self._commit_lock = threading.Lock()
        self._committed = threading.Condition(self._commit_lock)
        self._waiting = 0
        self._items: collections.deque[Event | _Spooled] = collections.deque()
        self._raw = 0  # _Spooled lines in _items (taken over, not decoded yet)
        self._taken: collections.deque[int] = collections.deque()  # per batch out: to ack
        self._bytes = 0
        self._total = 0  # events ever put (this spool's sequence numbers: 0 .. total-1)
        self._unwritten: list[Event] = []
        self._acked = 0  # events resolved (always the oldest ones: the channel is FIFO)
        self._written = 0  # sequence numbers on disk
        self._acked_written = 0
        self._durable = 0  # sequence numbers on disk and synced
        self._dir: Path | None = None
        self._lock_fd: int | None = None
        self._seg_fd: int | None = None
        self._seg_bytes = 0
        self._segments: list[tuple[int, Path]] = []
        self._thread: threading.Thread | None = None
        self._wake = Wake()  # not a threading.Event: the caller's thread sets it (see Wake)
        self._idle = False
        self._closing = False

    # -- the caller's side -------------------------------------------------------------

    def put(self, event: Event, timeout: float | None = None) -> int:
        size = event.size
        # The acquire inside the ``try``, released only if held, as MemoryQueue.put (see
        # there): a signal's exception never leaves the lock held. The counts go first and
        # the second append runs even if an exception ends the first, so that an event is
        # in both lists (delivered from one, written from the other) or in neither.
        lock = self._lock
        try:
            lock.acquire()
            items = self._items
            n = len(items)
            if not (n < self.max_events and (self._bytes + size <= self.max_bytes or not n)):
                if not timeout or not self._wait_for_room(event, timeout):
                    return 0
                n = len(items)
            self._bytes += size
            self._total = seq = self._total + 1
            try:
                items.append(event)
            finally:
                self._unwritten.append(event)
        finally:
            try:
                lock.release()
            except RuntimeError:  # not this thread's: the acquire was cut short
                pass
        if self._thread is None:
            self._start_writer()
        if self.sync:
            self._wait_committed(seq)
        elif self._idle:
            self._idle = False
            self._wake.set()
        return n + 1

    def _wait_for_room(self, event: Event, timeout: float) -> bool:
        """Called with the lock held (overflow=block)."""
        deadline = time.monotonic() + timeout
        self._waiting += 1
        try:
            while not (
                len(self._items) < self.max_events
                and (self._bytes + event.size <= self.max_bytes or not self._items)
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._room.wait(remaining)
        finally:
            self._waiting -= 1
        return True

    def _wait_committed(self, seq: int) -> None:
        self._wake.set()
        deadline = time.monotonic() + SYNC_WAIT
        with self._commit_lock:
            while self._durable < seq and not self._degraded:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._committed.wait(remaining)

    # -- the worker's side -------------------------------------------------------------

    def take(self, max_events: int, max_bytes: int) -> list[Event]:
        while True:
            with self._lock:
                taken, size = take_head(self._items, max_events, max_bytes)
                self._bytes -= size
                if taken and self._waiting:
                    self._room.notify_all()
                lines = self._raw
            if not lines:
                batch = cast("list[Event]", taken)
                skipped = 0
            else:
                batch, skipped = self._decode(taken, max_bytes)
            with self._lock:
                # Acknowledgements count resolved events from the oldest, so an unreadable
                # line is resolved with the batch it was taken with (or, taken alone, with
                # the batch still in flight before it, or at once if there is none).
                if batch:
                    self._taken.append(len(batch) + skipped)
                elif self._taken:
                    self._taken[-1] += skipped
                else:
                    self._acked += skipped
            if batch or not skipped:
                return batch

    def _decode(
        self, taken: list[Event | _Spooled], max_bytes: int
    ) -> tuple[list[Event], int]:
        """Decode the taken-over lines of a batch, outside the lock (callers keep putting),
        and cut it again by the decoded sizes; what no longer fits goes back to the head.
        Returns the batch and how many unreadable lines it skipped (all before the cut)."""
        batch: list[Event] = []
        skipped = decoded = 0
        size = 0
        rest: list[Event | _Spooled] = []
        for i, item in enumerate(taken):
            if isinstance(item, _Spooled):
                decoded += 1
                try:
                    item = sf.decode_payload(item.line)
                except (InvalidEvent, ValueError, TypeError):
                    skipped += 1
                    continue
            if batch and size + item.size > max_bytes:
                rest = [item, *taken[i + 1 :]]
                break
            batch.append(item)
            size += item.size
        with self._lock:
            self._raw -= decoded
            if rest:
                self._items.extendleft(reversed(rest))
                self._bytes += sum(x.size for x in rest)
            if skipped:
                self._losses["spool_corrupt"] = self._losses.get("spool_corrupt", 0) + skipped
        return batch, skipped

    def ack(self, batch: Sequence[Event]) -> None:
        with self._lock:
            self._acked += self._taken.popleft() if self._taken else len(batch)
        if self._thread is None and not self._closing:  # a taken-over spool acks first
            self._start_writer()
        elif self._idle:
            self._idle = False
            self._wake.set()

    def drain(self) -> list[Event]:
        """At shutdown: events on disk stay there for the next process on this directory
        (still counted by ``len``); only a degraded (memory) spool hands them back."""
        if not self._degraded:
            return []
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._bytes = 0
            self._acked += len(items)
            if self._waiting:
                self._room.notify_all()
        if not any(isinstance(x, _Spooled) for x in items):
            return cast("list[Event]", items)
        batch, _ = self._decode(items, sys.maxsize)
        return batch

    def close(self) -> None:
        """Commit what is left and release the spool; a spool with nothing waiting is
        deleted, one with events stays for the next process."""
        thread = self._thread
        self._closing = True
        self._wake.set()
        if thread is not None and thread.ident is not None:
            thread.join(5.0)
        else:  # no writer, or one a signal's exception kept from starting (_start_writer)
            self._commit()
        with self._lock:
            empty = not self._items and self._acked >= self._total
        if self._dir is not None and (empty or self._degraded):
            if empty:
                sf.remove_spool(self._dir)
        self._close_files(unlock=True)

    def reset_after_fork(self) -> None:
        """In a forked child: close (never unlock) the parent's files and start empty; the
        child's first event opens a spool of its own."""
        self._close_files(unlock=False)
        self._init_state()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def total_put(self) -> int:
        return self._total

    def losses(self) -> Mapping[str, int]:
        """Events this queue dropped itself, by reason (``expired``, ``spool_corrupt``)."""
        return dict(self._losses)

    @property
    def directory(self) -> Path | None:
        """This process's spool directory, once it exists."""
        return self._dir

    @property
    def degraded(self) -> bool:
        return self._degraded

    # -- the writer thread -------------------------------------------------------------

    def _start_writer(self) -> None:
        with self._lock:  # only one writer
            if self._thread is not None:
                return
            thread = threading.Thread(
                target=self._run, name=f"fanout-spool-{self.provider}", daemon=True
            )
            self._thread = thread
        thread.start()

    def _has_work(self) -> bool:
        return bool(self._unwritten) or self._acked != self._acked_written

    def _run(self) -> None:
        while True:
            try:
                self._commit()
            except Exception:  # noqa: BLE001 - the writer must outlive any bug
                logger.exception("spool writer for %s failed", self.provider)
                self._degrade(None)
            if self._closing:
                self._commit()
                return
            if self.sync:
                self._wake.wait()
                self._wake.clear()
            elif self._has_work():
                self._wake.wait(self.interval)
                self._wake.clear()
            else:
                self._idle = True
                if not self._has_work() and not self._closing:
                    self._wake.wait()
                self._wake.clear()
                self._idle = False

    def _commit(self) -> None:
        with self._lock:
            batch = self._unwritten
            self._unwritten = []
            acked = self._acked
        if not batch and acked == self._acked_written:
            return
        if self._degraded:
            self._written += len(batch)
            self._acked_written = acked
            return
        data = bytearray()
        if batch:
            data += b"T %.3f\n" % time.time()
            sf.encode_batch(batch, data)
        if acked != self._acked_written:
            data += b"A %d\n" % acked
        try:
            self._ensure_open()
            self._append(data)
        except OSError as exc:
            self._degrade(exc)
            self._written += len(batch)
            self._acked_written = acked
            return
        self._written += len(batch)
        self._acked_written = acked
        with self._commit_lock:
            self._durable = self._written
            self._committed.notify_all()
        self._rotate()

    def _append(self, data: bytes | bytearray) -> None:
        fd = self._seg_fd
        assert fd is not None
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fdatasync(fd)
        self._seg_bytes += len(data)

    def _ensure_open(self) -> None:
        if self._seg_fd is not None:
            return
        pdir = self.root / self.provider
        pdir.mkdir(parents=True, exist_ok=True)
        spool = pdir / f"{os.getpid()}-{secrets.token_hex(4)}"
        spool.mkdir()
        fd = os.open(spool / sf.LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.3f}\n".encode())
        self._dir, self._lock_fd = spool, fd
        self._open_segment(self._written)

    def _open_segment(self, first_seq: int) -> None:
        assert self._dir is not None
        path = self._dir / sf.segment_name(first_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        old = self._seg_fd
        self._seg_fd, self._seg_bytes = fd, 0
        self._segments.append((first_seq, path))
        self._append(b"H %d\nA %d\n" % (first_seq, self._acked_written))
        if old is not None:
            os.close(old)

    def _rotate(self) -> None:
        """Start a new segment past SEGMENT_BYTES; delete segments wholly resolved."""
        try:
            if self._seg_bytes > SEGMENT_BYTES:
                self._open_segment(self._written)
            while len(self._segments) > 1 and self._segments[1][0] <= self._acked_written:
                _, path = self._segments.pop(0)
                path.unlink()
        except OSError as exc:
            self._degrade(exc)

    def _degrade(self, exc: OSError | None) -> None:
        if self._degraded:
            return
        self._degraded = True
        logger.warning(
            "spool for %s in %s is not writable (%s); keeping events in memory only",
            self.provider,
            self.root,
            exc if exc is not None else "internal error",
        )
        with self._commit_lock:
            self._committed.notify_all()

    def _close_files(self, *, unlock: bool) -> None:
        for fd in (self._seg_fd, self._lock_fd):
            if fd is None:
                continue
            with contextlib.suppress(OSError):
                if unlock and fd == self._lock_fd:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        self._seg_fd = self._lock_fd = None

    # -- recovery ----------------------------------------------------------------------

    def _recover(self) -> None:
        """Take over this provider's spools whose owners are gone (see the module doc)."""
        now = time.time()
        for spool in sf.spool_dirs(self.root, self.provider):
            fd = sf.lock_if_dead(spool)
            if fd is None:
                continue
            try:
                if not self._take_over(spool, now):
                    break
            except OSError as exc:
                self._degrade(exc)
                break
            finally:
                os.close(fd)

    def _take_over(self, spool: Path, now: float) -> bool:
        """Copy ``spool``'s waiting events into this one, then delete it. False (and the
        spool left alone) when they would not fit within this queue's bounds."""
        records = sf.read_spool(spool)
        events: list[tuple[float, sf.Payload]] = []
        corrupt = records.corrupt
        expired = 0
        for spooled, line in records.events:
            if spooled and now - spooled > self.max_age:
                expired += 1
                continue
            events.append((spooled, line))
        data, kept = _copy(events)
        size = sum(x.size for x in kept)
        if events and (
            len(self._items) + len(events) > self.max_events or self._bytes + size > self.max_bytes
        ):
            logger.warning(
                "spool %s (%d events) does not fit in the %s queue; left for later",
                spool,
                len(events),
                self.provider,
            )
            return False
        if events and not self._degraded:
            self._ensure_open()
            self._append(data)
        with self._lock:
            # Kept as read, decoded (and validated) by take() a batch at a time: the
            # take-over, which runs while the client is being built, only reads and copies.
            self._items.extend(kept)
            self._raw += len(events)
            self._bytes += size
            self._total += len(events)
            self._written += len(events)
            self._durable = self._written
        for reason, n in (("expired", expired), ("spool_corrupt", corrupt)):
            if n:
                self._losses[reason] = self._losses.get(reason, 0) + n
        sf.remove_spool(spool)
        if events or expired or corrupt:
            logger.info(
                "took over spool %s: %d event(s) to deliver, %d expired, %d unreadable "
                "(more may prove unreadable when decoded)",
                spool,
                len(events),
                expired,
                corrupt,
            )
        return True


def _copy(events: Sequence[tuple[float, sf.Payload]]) -> tuple[bytes, list[_Spooled]]:
    """What a take-over appends to its own spool for ``events`` (a ``T`` line per spool
    time, then each line as it was: a ``B`` line once, unparsed unless an ack fell inside
    it), and the events as queue items with their sizes."""
    parts: list[bytes] = []
    kept: list[_Spooled] = []
    last = None
    last_batch = None
    for spooled, line in events:
        if spooled != last:
            parts.append(b"T %.3f\n" % spooled)
            last = spooled
        if isinstance(line, bytes):
            parts.append(line + b"\n")
            kept.append(_Spooled(line, len(line)))
            continue
        batch = line[0]
        if batch is not last_batch:
            encoded = batch.line()
            parts.append(encoded)
            last_batch = batch
            each = max(1, len(encoded) // batch.count)  # its share, until decoded
        kept.append(_Spooled(line, each))
    return b"".join(parts), kept
