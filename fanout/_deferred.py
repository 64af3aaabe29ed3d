"""The deferred stage: a request's events wait here while their context is read off the
request's thread.

A middleware opens each request's context unread (:class:`fanout._context.LazyContext`),
and the first event of a request used to read it on the request's thread: the browser's
cookies decoded, the ids found, the page's values checked, tens of µs of Python in a real
server for a new visitor or a new page (``benchmarks/app_latency.py --middleware``), added
to every tracked request's latency. The reading needs nothing of the request's thread but
what the middleware's ``detach`` captures there (its ``person_id`` hook, a copy of the
headers), so the call now builds the event from its own arguments, validated as before
(``InvalidEvent`` is still raised by the call), and leaves it here with its context. This
stage's thread reads the contexts, completes the events (ids, context, the built-in IP
processor) and hands them to the channels, in batches, where one reading after another
runs with the CPU's caches and branch predictors warm.

Nothing waits here unseen:

- :meth:`DeferredStage.drain` completes everything staged on the calling thread:
  ``flush()`` and ``shutdown()`` call it first, so the exit hook, ``flush_after``, the
  Celery and multiprocessing hooks and the ASGI lifespan deliver staged events as they
  deliver queued ones;
- once the stage is closed (shutdown), a call that stages after the last drain completes
  its own event at once;
- a full stage (:data:`LIMIT` events, or fewer if a queue of the client holds fewer)
  hands nothing more over: calls read their context themselves, after completing what is
  staged (so a request's events keep their order), and the channels' own bounds apply;
- while anything is staged, every call of the client goes through the stage, completed
  or not, so that events reach the providers in the order they were tracked;
- the thread is a daemon, like the channels' workers: an ``os._exit`` without a flush
  loses what is staged, as it loses what is queued.

After ``os.fork()`` the child starts with an empty stage: the parent completes and sends
what it staged, as it sends what it queued.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from . import _lifecycle
from ._lane import LANE
from ._queue import Wake

__all__ = [
    "BATCH", "CALLER_DRAIN", "CHUNK", "CONTEXT_RESERVE", "DeferredStage", "INTERVAL", "LIMIT",
]

logger = logging.getLogger("fanout")

#: Seconds a staged event waits at most before its context is read, when fewer than a
#: batch are staged: small beside the channels' flush interval (1 s by default), which
#: it adds to.
INTERVAL: Final = 0.05
#: Events staged that wake the stage's thread at once.
BATCH: Final = 64
#: Events completed between two turns: the stage's thread gives other threads a chance at
#: the GIL, and a draining caller and the stage's thread take turns (a new visitor's
#: reading is tens of µs inside a server: about 1 ms per chunk).
CHUNK: Final = 16
#: Seconds a call waits, at most, completing what is staged before its own event when the
#: stage takes nothing more (full: the stage's thread far behind): past that, the event goes
#: out at once, ahead of what is still staged, rather than hold the request up (or wait on
#: a completion that waits on the request).
CALLER_DRAIN: Final = 0.01
#: Most events staged, whatever the queues hold: completing them all (CPU only, tens of
#: µs each) is what ``shutdown()`` may have to do before its channels' deadline.
LIMIT: Final = 4096
#: Bytes a request's context may add to an event, encoded, at most: the middleware's
#: values are each capped (the ids at 200 characters, user agent, URL, path and referrer
#: at 2,048, a person at 512...), 4 bytes per character at worst. An event within this
#: of ``FANOUT_MAX_EVENT_BYTES`` is completed on the caller's thread, so that the call
#: raises ``InvalidEvent`` itself (tests/test_deferred.py holds the caps to this).
CONTEXT_RESERVE: Final = 64 * 1024


class DeferredStage:
    """Events waiting for their request's context, completed by ``complete`` in order.

    ``complete(item)`` completes one item of what :meth:`put` was given and hands its
    event to the channels; it must not raise. An item leaves the stage only once it has
    been handed over: an exception a signal raises in between (Ctrl-C in a ``flush()``)
    leaves it at the front, to be completed again (its event id is the same, which the
    backends deduplicate), never lost. One thread completes at a time (``_busy``, taken
    per chunk): the stage's, or a draining caller.
    """

    def __init__(self, complete: Callable[[Any], None], limit: int) -> None:
        self._complete = complete
        self.limit = limit
        #: Items in the order they were staged; completed from the front.
        self.items: deque[Any] = deque()
        #: Items completed so far, by the stage's thread or a drain (benchmarks read it).
        self.completed = 0
        self._init_runtime()
        self._closed = False
        _lifecycle.register_fork_aware(self)

    def _init_runtime(self) -> None:
        self._wake = Wake()
        #: Held while a chunk is completed: by the stage's thread, or by :meth:`drain`.
        self._busy = threading.RLock()
        #: The thread completing items now (``threading.get_ident()``), or ``None``: a
        #: drain that thread begins again (a signal handler's ``flush()``, user code the
        #: completion runs) returns at once instead of completing the item in hand twice.
        self._owner: int | None = None
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has begun: nothing more is staged."""
        return self._closed

    def __len__(self) -> int:
        return len(self.items)

    def put(self, item: Any) -> bool:
        """Stage ``item``; ``False`` (nothing staged) when the stage is full or closed,
        or no thread can start: the caller then completes its event itself."""
        items = self.items
        if self._closed or len(items) >= self.limit:
            return False
        if self._thread is None and not self._start():
            return False
        items.append(item)  # one C call: nothing a signal could leave half done
        if self.closed:  # closed since: its last drain may have run before the append
            self.drain()
        elif len(items) == BATCH:
            self._wake.set()
        return True

    def _start(self) -> bool:
        with self._start_lock:
            if self._thread is not None:
                return True
            if self._stop:
                return False
            thread = threading.Thread(target=self._run, name="fanout-deferred", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # the interpreter is shutting down
                return False
            self._thread = thread
            logger.debug("deferred stage started (pid %d)", os.getpid())
            return True

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(INTERVAL)
            self._wake.clear()
            if not self.items:
                continue
            try:
                # One delivery thread at a time runs Python code (see _lane.py): the
                # application competes with one, however many providers and stages.
                with LANE.held():
                    self._drain(len(self.items), None, True)
            except Exception:  # noqa: BLE001 - the stage's thread must outlive any bug
                logger.exception("fanout: unexpected error in the deferred stage")

    def drain(self, deadline: float | None = None) -> bool:
        """Complete what is staged now, on the calling thread (taking turns with the
        stage's thread, chunk by chunk); ``False`` if ``deadline`` (monotonic) passed
        first. Items staged meanwhile are left to the stage's thread: a drain under a
        steady load ends."""
        return self._drain(len(self.items), deadline, False)

    def _drain(self, count: int, deadline: float | None, yielding: bool) -> bool:
        """Complete at most ``count`` items from the front, in chunks of :data:`CHUNK`."""
        items = self.items
        complete = self._complete
        busy = self._busy
        me = threading.get_ident()
        if self._owner == me:  # begun again inside a completion of this thread's
            return False
        while count > 0 and items:
            wait = -1.0 if deadline is None else deadline - time.monotonic()
            if deadline is not None and wait <= 0:
                return False
            # The acquire inside the ``try``, the release refused when it was not taken
            # (as the queues do: fanout/_queue.py): a signal's exception raised right
            # after the acquire cannot leave the stage held. (A thread that holds it
            # already takes it again at once: a failed acquire never owned it.)
            try:
                if not busy.acquire(timeout=wait):
                    return False
                self._owner = me
                for _ in range(min(count, CHUNK)):
                    if not items:
                        break
                    item = items[0]
                    complete(item)
                    if items and items[0] is item:  # once handed over (see the class)
                        items.popleft()
                    self.completed += 1
                    count -= 1
            finally:
                if self._owner == me:
                    self._owner = None
                try:
                    busy.release()
                except RuntimeError:  # not taken: the deadline passed, or a signal came
                    pass
            if yielding:
                # The GIL, given up between chunks: a request's thread waiting for it
                # gets it now rather than after the interpreter's switch interval
                # (5 ms), which a long batch would otherwise make it wait.
                time.sleep(0)
        return True

    def close(self, deadline: float | None = None) -> None:
        """Stage nothing more; complete everything staged (at most :attr:`limit` items,
        CPU only: no item waits on anything, so this may overrun ``deadline`` by that
        much, to queue them where shutdown counts what it cannot send); stop the thread,
        waiting for it until ``deadline`` at most."""
        self._closed = True
        self._drain(len(self.items), None, False)
        self._stop = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            wait = 1.0 if deadline is None else deadline - time.monotonic()
            thread.join(max(0.0, min(1.0, wait)))

    def _after_fork_in_child(self) -> None:
        """The parent completes and sends what it staged; the child starts empty."""
        self.items = deque()
        self._init_runtime()
