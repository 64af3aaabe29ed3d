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
- a full stage (as many events as the smallest queue of the client holds) hands nothing
  more over: calls read their context themselves, and the channels' own bounds apply;
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
from collections.abc import Callable, Sequence
from typing import Any, Final

from . import _lifecycle
from ._lane import LANE
from ._queue import Wake

__all__ = ["BATCH", "CONTEXT_RESERVE", "DeferredStage", "INTERVAL"]

logger = logging.getLogger("fanout")

#: Seconds a staged event waits at most before its context is read, when fewer than a
#: batch are staged: small beside the channels' flush interval (1 s by default), which
#: it adds to.
INTERVAL: Final = 0.05
#: Events staged that wake the stage's thread at once.
BATCH: Final = 64
#: Events the stage's thread completes between two chances it gives other threads to take
#: the GIL (a new visitor's reading is tens of µs inside a server: about 1 ms per chunk).
CHUNK: Final = 16
#: Bytes a request's context may add to an event, encoded, at most: the middleware's
#: values are each capped (the ids at 200 characters, user agent, URL, path and referrer
#: at 2,048, a person at 512...), 4 bytes per character at worst. An event within this
#: of ``FANOUT_MAX_EVENT_BYTES`` is completed on the caller's thread, so that the call
#: raises ``InvalidEvent`` itself (tests/test_deferred.py holds the caps to this).
CONTEXT_RESERVE: Final = 64 * 1024


class DeferredStage:
    """Events waiting for their request's context, completed by ``complete`` in order.

    ``complete(items)`` takes a batch of what :meth:`put` was given and hands the events
    to the channels; it must not raise (the client's completes every item it can and
    logs the rest). One thread completes at a time: the stage's, or a draining caller.
    """

    def __init__(self, complete: Callable[[Sequence[Any]], None], limit: int) -> None:
        self._complete = complete
        self.limit = limit
        self._items: deque[Any] = deque()
        #: Items completed so far, by the stage's thread or a drain (benchmarks read it).
        self.completed = 0
        self._init_runtime()
        self._closed = False
        _lifecycle.register_fork_aware(self)

    def _init_runtime(self) -> None:
        self._wake = Wake()
        #: Held while a batch is completed: by the stage's thread, or by :meth:`drain`.
        self._busy = threading.RLock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has begun: nothing more is staged."""
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any) -> bool:
        """Stage ``item``; ``False`` (nothing staged) when the stage is full or closed,
        or no thread can start: the caller then completes its event itself."""
        items = self._items
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
            if self._items:
                # One delivery thread at a time runs Python code (see _lane.py): the
                # application competes with one, however many providers and stages.
                with LANE.held():
                    self.drain(_yielding=True)

    def drain(self, *, _yielding: bool = False) -> None:
        """Complete everything staged now, on the calling thread (after any batch the
        stage's thread is completing)."""
        items = self._items
        size = CHUNK if _yielding else 256
        with self._busy:
            while items:
                batch = []
                pop = items.popleft
                try:
                    for _ in range(min(len(items), size)):
                        batch.append(pop())
                except IndexError:  # (only this thread takes: cannot happen)
                    pass
                self._complete(batch)
                self.completed += len(batch)
                if _yielding:
                    # The GIL, given up between chunks: a request's thread waiting for it
                    # gets it now rather than after the interpreter's switch interval
                    # (5 ms), which a long batch would otherwise make it wait.
                    time.sleep(0)

    def close(self) -> None:
        """Stage nothing more; complete what is staged; stop the thread."""
        self._closed = True
        self.drain()
        self._stop = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    def _after_fork_in_child(self) -> None:
        """The parent completes and sends what it staged; the child starts empty."""
        self._items = deque()
        self._init_runtime()
