"""A bounded store of recent results by key, safe under threads and across ``os.fork()``.

The request middleware keep their readings in such stores
(:class:`fanout.integrations._request.RequestReader`): they look up on every tracked request
and store rarely, from any thread of a server, in processes a server may fork at any time.
(The IP processor no longer needs one: it keeps a context's masked form on the context.)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

from ._lifecycle import register_fork_aware

__all__ = ["Recent"]

_K = TypeVar("_K")
_V = TypeVar("_V")


class Recent(Generic[_K, _V]):
    """At most ``size`` results by key; the oldest kept goes first.

    Reads take no lock (``get``: one dict lookup, atomic). Stores do, so concurrent
    threads cannot break the bound, and never wait for it: a store skipped only costs a
    later caller one more computation. A forked child gets a new lock, as it may have
    inherited this one held by a thread that does not exist there. The oldest entry goes
    by ``OrderedDict.popitem``: a dict's first key is found by skipping the slots of those
    deleted before it, a cost that grows with the store (1.8 µs per eviction at 2,048).

    The store's ``acquire(blocking=False)`` cannot be a ``with``, so a signal's exception
    (Ctrl-C) raised right after it returned, before the ``try``, would leave the lock held.
    That is left as is: no one ever waits for this lock, so it blocks nothing and loses no
    event; this store would only keep nothing more in this process (every reading computed
    again; a forked child gets a new lock), and only in a process that went on after a
    KeyboardInterrupt raised in a request.
    """

    __slots__ = ("_data", "_size", "_lock", "get", "__weakref__")

    def __init__(self, size: int) -> None:
        self._data: OrderedDict[_K, _V] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()
        register_fork_aware(self)
        self.get = self._data.get

    def keep(self, key: _K, value: _V) -> bool:
        """Keep ``value`` under ``key``, unless another thread is storing right now (or
        the size is 0); whether it was kept."""
        data = self._data
        lock = self._lock
        if not lock.acquire(blocking=False):
            return False
        try:  # under it, each store adds at most one: one eviction keeps the bound
            if len(data) >= self._size:
                if not data:  # a size of 0 keeps nothing
                    return False
                data.popitem(last=False)
            data[key] = value
            return True
        finally:
            lock.release()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
