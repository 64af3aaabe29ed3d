"""The pipe to one delivery process (process mode, :mod:`fanout._relay`): the process,
its frames in both directions, and the counts it reports.

Shared by both sides: the app's relay writes batches with :func:`encode_events`, and the
delivery process (:mod:`fanout._relay_child`) reads them back with :func:`decode_event`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import operator
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

import orjson

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

from ._events import Event, rebuild
from ._lane import released
from ._routing import EventFilter
from .provider import ALL_KINDS

__all__ = [
    "Accepts",
    "ChildLink",
    "NICE",
    "PIPE_BYTES",
    "PUSH_INTERVAL",
    "Routed",
    "decode_event",
    "encode_events",
    "plain_event",
    "resolved",
]

logger = logging.getLogger("fanout.relay")

#: Seconds between the child's unsolicited count reports (only when something changed).
PUSH_INTERVAL: Final = 0.2
#: Bytes the pipe to the child holds (Linux's ``F_SETPIPE_SZ``; the default is 64 KiB)
#: and the child's read buffer: a hand-off of up to :data:`~fanout._relay.RELAY_BATCH`
#: events of about 220 bytes is then one ``write`` that does not wait for the child, and
#: one ``read`` there, instead of the writer blocking half-way and the reader taking it in
#: 8 KiB pieces. Small enough that what a stopped child leaves in the pipe stays bounded.
PIPE_BYTES: Final = 256 * 1024
#: The delivery process's niceness (``os.nice``): when it and the app want the same core,
#: the scheduler gives the app about nine tenths of it, so the providers' work fills idle
#: cycles instead of delaying requests. A child starved for long keeps events in its
#: bounded queues (counted ``queue_full`` past them), as a busy thread would.
NICE: Final = 10


_SIZE = operator.attrgetter("size")


class Routed(Event):
    """An event meant for one provider only (``track(providers=/exclude=)``): same fields,
    plus ``to``. Built without re-validation: it is a copy of a validated event."""

    to: str

    @classmethod
    def of(cls, event: Event, to: str) -> Routed:
        routed = tuple.__new__(cls, event)
        routed.to = to
        return routed


def plain_event(event: Event) -> Event:
    """``event`` without its route: what ``on_error`` and the dead letters get."""
    return tuple.__new__(Event, event) if type(event) is not Event else event


@dataclasses.dataclass(frozen=True)
class Accepts:
    """What one provider's channel in the delivery process takes: its event kinds, its
    per-event size limit and its event filter. An event it would skip on arrival is never
    its to lose, so the app's side does not hold it for that provider."""

    kinds: frozenset[str]
    max_event_bytes: int
    keep: EventFilter | None

    def count(self, batch: Sequence[Event], biggest: int) -> int:
        """How many of ``batch`` (none :class:`Routed`; ``biggest``: the largest size among
        them) this provider's channel will queue."""
        if self.keep is None and self.kinds >= ALL_KINDS and biggest <= self.max_event_bytes:
            return len(batch)  # the common case
        return sum(1 for e in batch if self.takes(e))

    def takes(self, event: Event) -> bool:
        return (
            event.kind in self.kinds
            and event.size <= self.max_event_bytes
            and (self.keep is None or self.keep(event))
        )


def encode_events(batch: Sequence[Event]) -> bytes:
    """The batch as one JSON array of field arrays, in :data:`FIELDS` order.

    One ``orjson.dumps`` call for the whole batch: about 1.6 µs per event here, against 11
    for ``Event.to_json`` (half of it formatting the timestamp), and the timestamp keeps
    its microseconds. Both processes run the same fanout, so the field order is shared.
    """
    return orjson.dumps(batch, default=tuple)


def decode_event(fields: Sequence[Any]) -> Event:
    """An event from :func:`encode_events`' form (every field, ``size`` and ``footprint``
    included), rebuilt without a second check: the app process built it."""
    return rebuild(fields)


#: The package root this fanout was imported from (the directory holding ``fanout/``).
_ROOT: Final = str(Path(__file__).resolve().parent.parent)


def child_command() -> list[str]:
    """The delivery process's command: this interpreter running ``fanout._relay_child`` of
    the same fanout as the app.

    Not ``python -m fanout._relay_child``: ``-m`` puts the current directory first on the
    child's ``sys.path``, so an app started from a directory holding another ``fanout``
    (a checkout of another version) or any module named like one the child imports would
    run that in its delivery process. The package root of the app's own fanout takes that
    first place instead; everything else is found as the app finds it.
    """
    boot = (
        "import runpy, sys; sys.path[0] = sys.argv.pop(1); "
        "runpy.run_module('fanout._relay_child', run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", boot, _ROOT]


def _grow_pipe(fd: int) -> None:
    """Make the pipe on ``fd`` hold :data:`PIPE_BYTES` where the system allows it (a
    smaller limit, or no such call, leaves the pipe as it was: only slower)."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if setsize is None:
        return
    try:
        fcntl.fcntl(fd, setsize, PIPE_BYTES)
    except OSError:
        pass


def resolved(report: Mapping[str, Any]) -> int:
    """Events a child's report says are settled one way or another."""
    losses: Mapping[str, int] = report.get("losses", {})
    return int(report.get("delivered", 0)) + sum(int(n) for n in losses.values())


class ChildLink:
    """One child process: its pipes, the thread reading its answers, its counts."""

    def __init__(
        self,
        hello: bytes,
        names: Sequence[str],
        on_message: Callable[[ChildLink, dict[str, Any]], None],
        filters: Mapping[str, EventFilter | None],
    ) -> None:
        self.names = tuple(names)
        self._filters = dict(filters)
        self._on_message = on_message
        self.proc = subprocess.Popen(
            child_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,  # unbuffered: a forked app process has no buffered bytes to flush
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in: IO[bytes] = self.proc.stdin
        _grow_pipe(self._in.fileno())
        self._out: IO[bytes] = self.proc.stdout
        self.pid = self.proc.pid
        #: Held to write to the child. Reentrant for its owner check: the main thread takes
        #: it with a timeout (``request``, ``close_input``: a hand-off blocked on a full pipe
        #: may hold it), which ``with`` cannot do, so a signal's exception (Ctrl-C during a
        #: flush, a second one during the exit hook's) may come right after the acquire
        #: returned, before the ``try`` began. A plain lock left held there would stop every
        #: later hand-off and make ``unresolved()`` (the exit report) wait forever. An RLock
        #: knows its owner: their ``finally`` releases it, and its release refuses (raises
        #: RuntimeError) when the calling thread does not hold it.
        self.write_lock = threading.RLock()
        self.latest_lock = threading.Lock()
        self._lock = threading.Lock()
        self._next_id = 0
        self._waiting: dict[int, list[Any]] = {}
        self.ready = threading.Event()
        self.error: str | None = None
        self.dead = threading.Event()
        #: Set once the parent has counted this child's death (after ``dead``).
        self.gone = threading.Event()
        #: Events written to this child: for every provider, and per provider (routed).
        self.handed_all = 0
        self.handed_to: dict[str, int] = {}
        #: The batches handed to this child, each with how many of its events each
        #: provider takes, back to the oldest one some provider has not settled (the
        #: oldest let go as the child's counts come back): what a death loses is in there.
        self._held: collections.deque[tuple[Sequence[Event], dict[str, int]]] = (
            collections.deque()
        )
        self._held_n = dict.fromkeys(self.names, 0)
        #: The child reported counts since the held batches were last trimmed.
        self._news = False
        #: Per provider, what its channel in the child takes (from the child's ``ready``).
        self.accepts: dict[str, Accepts] = {}
        #: The child's last reported counts per provider, and how many events it read.
        self.latest: dict[str, dict[str, Any]] = {}
        self.received = 0
        self._write(hello)
        self._reader = threading.Thread(
            target=self._read, name=f"fanout-relay-reader-{self.pid}", daemon=True
        )
        self._reader.start()

    # -- writing ---------------------------------------------------------------------

    def _write(self, frame: bytes) -> None:
        view = memoryview(frame)
        while view:
            view = view[self._in.write(view) :]

    def send(self, frame: bytes, batch: Sequence[Event], routed: bool) -> None:
        """Write one batch frame (``routed``: some of ``batch`` are :class:`Routed`);
        counted as handed off, and held until the child settles it, only once written."""
        with self.write_lock:
            if self.dead.is_set():
                raise BrokenPipeError("the relay child is gone")
            with released():  # a full pipe is a wait, like a network wait
                self._write(frame)
            self._hold(batch, routed)

    def _hold(self, batch: Sequence[Event], routed: bool) -> None:
        """(under ``write_lock``) Count ``batch`` handed off and hold it, with how many of
        its events each provider takes; let go of batches the child has settled."""
        accepts = self.accepts
        if routed:
            counts = dict.fromkeys(self.names, 0)
            for event in batch:
                if type(event) is Routed:
                    to = event.to
                    self.handed_to[to] = self.handed_to.get(to, 0) + 1
                    if to in counts and accepts[to].takes(event):
                        counts[to] += 1
                else:
                    self.handed_all += 1
                    for name, a in accepts.items():
                        counts[name] += a.takes(event)
        else:
            self.handed_all += len(batch)
            biggest = max(map(_SIZE, batch), default=0)  # one C-level pass
            counts = {name: a.count(batch, biggest) for name, a in accepts.items()}
        held, held_n = self._held, self._held_n
        held.append((batch, counts))
        for name, n in counts.items():
            held_n[name] += n
        if not self._news:  # no new counts from the child: nothing more is settled
            return
        self._news = False
        # The settled events of a provider are the oldest it took (a channel settles its
        # queue in order): a batch goes once it is older than every provider's unsettled.
        unresolved = self.unresolved(locked=True)
        while held:
            oldest = held[0][1]
            if any(held_n[name] - n < unresolved[name] for name, n in oldest.items()):
                break
            held.popleft()
            for name, n in oldest.items():
                held_n[name] -= n

    def lost(self, name: str, n: int) -> list[Event]:
        """The ``n`` events a dead child had not settled for ``name``: the newest ``n`` it
        was handed for it, since a channel settles its queue in order (see
        docs/performance.md, "Process delivery", for the two exceptions)."""
        if n <= 0:
            return []
        with self.write_lock:
            accepts = self.accepts[name]
            found: list[Event] = []
            for batch, counts in reversed(self._held):
                if counts.get(name):
                    mine = [
                        e
                        for e in batch
                        if (e.to == name if type(e) is Routed else True) and accepts.takes(e)
                    ]
                    found[:0] = mine
                    if len(found) >= n:
                        break
            return [plain_event(e) for e in found[max(0, len(found) - n) :]]

    def request(self, op: str, deadline: float, **fields: Any) -> dict[str, Any] | None:
        """Ask the child (``flush``, ``shutdown``) and wait for its answer until ``deadline``."""
        slot: list[Any] = [threading.Event(), None]
        with self._lock:
            self._next_id += 1
            rid = self._next_id
            self._waiting[rid] = slot
        lock = self.write_lock
        try:
            # Bounded: a hand-off blocked on a full pipe (a stopped child) holds the lock.
            # The acquire inside the ``try`` (see ``write_lock``).
            if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return None
            if self.dead.is_set():
                return None
            self._write(orjson.dumps({"op": op, "id": rid, **fields}) + b"\n")
        except OSError:
            return None
        finally:
            try:  # inline: a call into Python code first could itself be cut short
                lock.release()
            except RuntimeError:  # not held by this thread: timed out, or never acquired
                pass
        try:
            while not slot[0].wait(min(0.05, max(0.0, deadline - time.monotonic()))):
                if time.monotonic() >= deadline or self.dead.is_set():
                    return slot[1] if slot[0].is_set() else None
            answer: dict[str, Any] = slot[1]
            return answer
        finally:
            with self._lock:
                self._waiting.pop(rid, None)

    def close_input(self, timeout: float = 5.0) -> bool:
        """EOF for the child: it delivers what it holds and exits. ``False`` when a
        hand-off blocked on a full pipe (a stopped child) kept the pipe for ``timeout``."""
        lock = self.write_lock
        try:  # the acquire inside the ``try`` (see ``write_lock``)
            if not lock.acquire(timeout=max(0.0, timeout)):
                return False
            self._in.close()
        except OSError:
            pass
        finally:
            try:  # as in ``request``
                lock.release()
            except RuntimeError:  # not held by this thread
                pass
        return True

    def wait_exit(self, timeout: float) -> bool:
        try:
            self.proc.wait(max(0.0, timeout))
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            logger.warning("fanout: could not stop the relay child %d", self.pid)

    def forget_after_fork(self) -> None:
        """In a forked app process: close our copies of the pipes, nothing else. The
        parent keeps its child; closing the write end here is what lets that child see EOF
        when the parent dies."""
        for stream in (self._in, self._out):
            try:
                stream.close()
            except OSError:
                pass

    # -- reading ---------------------------------------------------------------------

    def _read(self) -> None:
        try:
            for line in self._out:
                try:
                    msg = orjson.loads(line)
                except orjson.JSONDecodeError:
                    logger.warning("fanout: the relay child wrote something unreadable")
                    continue
                self._take(msg)
        except (OSError, ValueError):  # closed under us (fork, shutdown)
            pass
        finally:
            try:
                self._out.close()
            except OSError:
                pass
            self.dead.set()
            self.ready.set()
            with self._lock:
                for slot in self._waiting.values():
                    slot[0].set()
            try:
                self._on_message(self, {"op": "dead"})
            finally:
                self.gone.set()

    def _take(self, msg: dict[str, Any]) -> None:
        reports = msg.get("reports")
        if reports is not None:
            # Not under write_lock: a writer blocked on a full pipe must never stop this
            # thread from reading the child's answers.
            with self.latest_lock:
                self.latest = reports
                self.received = int(msg.get("received", self.received))
                self._news = True
        op = msg.get("op")
        if op == "ready":
            self.accepts = {
                name: Accepts(
                    frozenset(a["kinds"]), int(a["max_event_bytes"]), self._filters.get(name)
                )
                for name, a in msg["accepts"].items()
            }
            self.ready.set()
        elif op == "error":
            self.error = str(msg.get("error", "unknown error"))
            self.ready.set()
        elif op == "reply":
            with self._lock:
                slot = self._waiting.get(int(msg.get("id", 0)))
            if slot is not None:
                slot[1] = msg
                slot[0].set()
        elif op == "failure":
            self._on_message(self, msg)

    def unresolved(self, *, locked: bool = False) -> dict[str, int]:
        """Per provider: events handed to this child that it has not reported settled.

        Under ``write_lock`` (held by the caller when ``locked``), so that a batch is
        either written and counted or neither."""
        if not locked:
            with self.write_lock:
                return self.unresolved(locked=True)
        with self.latest_lock:
            return {
                name: max(
                    0,
                    self.handed_all
                    + self.handed_to.get(name, 0)
                    - resolved(self.latest.get(name, {})),
                )
                for name in self.names
            }
