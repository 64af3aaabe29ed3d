"""Connections under a cap and deadlines: what keeps slow or idle clients from starving
the server.

uvicorn has no deadline for a request's headers (its keep-alive timer only runs between
requests, and the first byte of a request cancels it), and its ``limit_concurrency``
answers 503 to *new* requests once the slow connections fill it, which is what an attacker
wants. So the collector runs uvicorn's httptools protocol with three additions, all on the
event loop, no locks:

- a **header deadline**: a connection that has not finished a request's headers within
  ``header_timeout`` seconds of connecting (or of its previous response) is closed, however
  slowly it trickles bytes;
- a **connection cap**: at ``max_connections``, a new connection evicts the oldest one
  that is still waiting for headers or idle between requests; a connection whose request
  is being served is never evicted, and when every connection is busy the new one is
  closed at once;
- the **descriptor limit** raised to the hard limit at start, and the cap kept below it
  by a reserve and one accept burst (:data:`ACCEPT_BURST`), so ``accept()`` never fails
  with ``EMFILE`` (asyncio then stops accepting for a second and logs every attempt).

And one for speed: each response leaves in **one TCP segment**. uvicorn writes a response's
head and its body with two ``transport.write`` calls, so a client got two segments and was
woken twice per answer; on this machine's loopback, between two virtual CPUs, those two
writes took 8.6 % of the event loop's samples with 100-event batches. The socket is corked
(Linux ``TCP_CORK``) when a request's headers are complete and uncorked when its response
is: the kernel holds the head until the body joins it. (The uncork, which now sends the
segment, takes 6.1 % of those samples: the client is spared a wake-up and a read per
answer more than the server is spared CPU, and events/s moved by less than this machine's
noise.) A request that expects ``100 Continue`` is not corked (that interim answer must
leave at once), and where the socket has no ``TCP_CORK`` (not Linux, not TCP) nothing
changes.

The body deadline lives in the app (:class:`~fanout.collector.app.AppOptions`), because
only the app knows when it is waiting for the client rather than for its own budget.
"""

from __future__ import annotations

import asyncio
import dataclasses
import resource
import socket
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .refusals import RefusalLog

__all__ = ["ConnectionGuard", "ServingLimits", "connection_cap", "guarded_protocol",
           "raise_fd_limit"]

#: Descriptors kept free for the database, log files and the listening socket.
FD_RESERVE: Final = 64
#: Linux's option that holds a socket's partial segments until it is cleared (``None``
#: elsewhere: responses then leave as uvicorn writes them).
_CORK: Final[int | None] = getattr(socket, "TCP_CORK", None)
#: asyncio accepts up to ``backlog`` connections in one go before any callback runs (so
#: before an evicted connection's descriptor is closed); uvicorn passes its ``backlog``
#: both to ``listen()`` and to that loop. The cap leaves room for one such burst.
ACCEPT_BURST: Final = 256


@dataclasses.dataclass(frozen=True)
class ServingLimits:
    max_connections: int = 4096
    header_timeout: float = 10.0
    keep_alive: int = 5


def raise_fd_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; return the soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return int(soft)


def connection_cap(wanted: int, fd_limit: int) -> int:
    """The most connections to keep open under a descriptor limit."""
    return max(16, min(wanted, fd_limit - FD_RESERVE - ACCEPT_BURST))


class ConnectionGuard:
    """The connections of one server, and which of them may be evicted (oldest first)."""

    def __init__(self, max_connections: int, refusals: RefusalLog | None = None) -> None:
        self.max_connections = max_connections
        self.refusals = refusals or RefusalLog()
        self.open = 0
        self.evicted = 0
        self._evictable: dict[Any, None] = {}  # insertion order: oldest first

    def opened(self, conn: Any) -> bool:
        """Count ``conn``; make room if needed. ``False``: no room, close ``conn``."""
        self.open += 1
        if self.open <= self.max_connections:
            return True
        for victim in self._evictable:
            self.evicted += 1
            self.refusals.record(503, "connection cap reached; evicted the oldest idle "
                                 "or header-waiting connection", client=None)
            victim.evict()
            return True
        self.refusals.record(503, "connection cap reached and every connection busy")
        return False

    def closed(self, conn: Any) -> None:
        self.open -= 1
        self._evictable.pop(conn, None)

    def waiting(self, conn: Any) -> None:
        self._evictable[conn] = None

    def busy(self, conn: Any) -> None:
        self._evictable.pop(conn, None)


def guarded_protocol(guard: ConnectionGuard, header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the header deadline and the cap of ``guard``."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _counted = False
        #: The connection's socket while corking it works (see the module docstring).
        _corkable: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._counted = True
            if _CORK is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                    self._corkable = sock
            if not guard.opened(self):
                transport.close()
                return
            self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._headers_arrived()
            if self._counted:
                self._counted = False
                guard.closed(self)
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            # A request pipelined behind one still being answered waits for no deadline
            # yet: on_response_complete arms it when that answer is done.
            if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._await_headers()

        def on_headers_complete(self) -> None:
            self._headers_arrived()
            if self._corkable is not None and not self.expect_100_continue:
                self._cork(1)
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            # super() starts a pipelined request whose headers are in: it is under way,
            # so neither under the header deadline nor evictable, and its answer is
            # corked as its headers had it, unless it expects 100 Continue. (A closing
            # socket sends what it holds anyway.)
            starts_next = bool(self.pipeline)
            if self._corkable is not None and not self.transport.is_closing():
                self._cork(0)
                if starts_next and not getattr(self.pipeline[-1][0],
                                               "waiting_for_100_continue", True):
                    self._cork(1)
            super().on_response_complete()
            if not starts_next and not self.transport.is_closing():
                self._await_headers()

        def _cork(self, on: int) -> None:
            try:
                self._corkable.setsockopt(socket.IPPROTO_TCP, _CORK, on)
            except OSError:  # (closed meanwhile, or a socket that refuses it)
                self._corkable = None

        def _await_headers(self) -> None:
            guard.waiting(self)
            if self._deadline is None:
                self._deadline = self.loop.call_later(header_timeout, self._headers_late)

        def _headers_arrived(self) -> None:
            guard.busy(self)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_late(self) -> None:
            self._deadline = None
            guard.refusals.record(
                408, f"request headers not received within {header_timeout:g} s",
                client=self.client[0] if self.client else None)
            self.evict()

        def evict(self) -> None:
            guard.busy(self)
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedHttpToolsProtocol
