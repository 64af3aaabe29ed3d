"""Worker threads for the app's blocking calls: one queue put to hand a call over, one
wake-up of the event loop to hand its result back.

Every batch costs two hand-offs (the key lookup, then decode, validate and insert), so their
CPU is paid per request on the event loop's GIL. ``loop.run_in_executor`` spends it on
layers this app does not need: a ``concurrent.futures.Future`` with its own condition
variable per call, chained to an asyncio future through two callbacks and a state copy,
and an executor that wakes its threads in turn. Here a call is a tuple put on the idle
thread's own ``SimpleQueue`` (C code), and its result is set on the asyncio future by one
``call_soon_threadsafe``: about half the CPU per hand-off (measured in
``benchmarks/collector.py``'s server CPU per event).

Threads start on demand, up to ``size``, and the most recently idle one takes the next
call (a stack, not a queue), so a server with one or two requests in flight keeps using
the same one or two threads and their memory (each thread that decodes a batch gets its
own malloc arena). Calls beyond ``size`` wait in a backlog for the next thread to finish.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["WorkerThreads"]

_T = TypeVar("_T")
#: A call to run: the future to settle, the function and its arguments.
_Call = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting request was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class WorkerThreads:
    """``await threads.run(fn, *args)`` runs ``fn`` on a worker thread; ``shutdown()`` lets
    the calls already handed over finish, then joins the threads."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_Call | None]] = []
        self._backlog: collections.deque[_Call] = collections.deque()
        self._threads: list[threading.Thread] = []
        self._closed = False

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        call: _Call = (future, fn, args)
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker threads are shut down")
            if self._idle:
                inbox = self._idle.pop()
            elif len(self._threads) < self._size:
                inbox = self._start()
            else:
                self._backlog.append(call)
                inbox = None
        if inbox is not None:
            inbox.put(call)
        return await future

    def _start(self) -> queue.SimpleQueue[_Call | None]:
        inbox: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        thread = threading.Thread(target=self._work, args=(inbox,), daemon=True,
                                  name=f"{self._name}_{len(self._threads)}")
        self._threads.append(thread)
        thread.start()
        return inbox

    def _work(self, inbox: queue.SimpleQueue[_Call | None]) -> None:
        call = inbox.get()
        while call is not None:
            future, fn, args = call
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # noqa: BLE001 - raised where the call is awaited
                result, error = None, exc
            try:
                future.get_loop().call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody awaits the result any more
                pass
            del call, future, fn, args, result, error  # nothing of a batch outlives it
            with self._lock:
                if self._backlog:
                    call = self._backlog.popleft()
                    continue
                if self._closed:
                    return
                self._idle.append(inbox)
            call = inbox.get()

    def shutdown(self) -> None:
        """Refuse new calls, let the ones handed over (and the backlog) finish, join."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            threads = list(self._threads)
        for inbox in idle:
            inbox.put(None)
        for thread in threads:
            thread.join()
