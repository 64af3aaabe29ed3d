"""Running the app under uvicorn: in the foreground (the CLI) or in a thread (demo, tests).

The listening socket is bound here, not by uvicorn, so ``port=0`` can pick a free port and
the URL actually bound is known (and printed) before the first request; ``SO_REUSEADDR``
lets a restarted server take the same port at once. SIGINT and SIGTERM stop the server
gracefully: it stops accepting, lets in-flight requests finish (each is answered only after
its commit), closes the store, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from . import require_extra

require_extra()

import uvicorn  # noqa: E402

from .app import AppOptions, create_app  # noqa: E402
from .guard import (  # noqa: E402
    ACCEPT_BURST,
    ConnectionGuard,
    ServingLimits,
    connection_cap,
    guarded_protocol,
    raise_fd_limit,
)
from .ratelimit import Limiter  # noqa: E402
from .refusals import RefusalLog  # noqa: E402
from .store import Store  # noqa: E402

logger = logging.getLogger("fanout.collector")

__all__ = ["CollectorServer", "ServerThread", "bind", "serve"]


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket; ``port=0`` lets the OS pick a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this on Linux. Without it, a response written in two
    # parts (headers, body) waits for the client's delayed ACK: 40 ms per request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


#: Seconds between two reports of accept() failing at the descriptor limit.
EXHAUSTION_LOG_INTERVAL = 10.0


def _quiet_descriptor_exhaustion(loop: asyncio.AbstractEventLoop) -> None:
    """Report accept() failing at the descriptor limit once per interval, with a count.

    Under a flood of connections (slowloris) asyncio logs a full traceback each time
    accept() hits EMFILE, then retries a second later: a log of hundreds of lines a minute
    while the connection cap is already evicting. Everything else goes to the previous
    handler unchanged.
    """
    previous = loop.get_exception_handler()
    state = {"last": -EXHAUSTION_LOG_INTERVAL, "count": 0}

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            state["count"] += 1
            now = time.monotonic()
            if now - state["last"] >= EXHAUSTION_LOG_INTERVAL:
                logger.warning(
                    "descriptor limit reached: accept() failed %d time(s) since the last "
                    "report; new connections wait in the backlog",
                    state["count"],
                )
                state["last"], state["count"] = now, 0
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class CollectorServer(uvicorn.Server):
    """uvicorn's server, with a ready callback and signal handling that exits cleanly."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None = None):
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        _quiet_descriptor_exhaustion(asyncio.get_running_loop())
        await super().startup(sockets)
        if self.started and self._on_ready is not None:
            self._on_ready()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the captured signal after shutting down, which turns a clean
        # stop into a KeyboardInterrupt or a death by SIGTERM. Stop, then return instead.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._signalled) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _signalled(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def _config(app: object, serving: ServingLimits, refusals: RefusalLog) -> uvicorn.Config:
    cap = connection_cap(serving.max_connections, raise_fd_limit())
    guard = ConnectionGuard(cap, refusals)
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=serving.keep_alive,
        backlog=ACCEPT_BURST,
        # httptools (the collector extra installs it) with the deadlines and cap of guard.py.
        http=guarded_protocol(guard, serving.header_timeout),
        ws="none",
    )


def _app(store: Store, limiter: Limiter | None, options: AppOptions | None,
         refusals: RefusalLog) -> object:
    return create_app(store, limiter=limiter, options=options, refusals=refusals)


def serve(
    store: Store,
    sock: socket.socket,
    *,
    limiter: Limiter | None = None,
    options: AppOptions | None = None,
    serving: ServingLimits | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve on ``sock`` in the foreground until SIGINT/SIGTERM; closes the store after."""
    url = url_of(sock)
    refusals = RefusalLog()
    server = CollectorServer(
        _config(_app(store, limiter, options, refusals), serving or ServingLimits(), refusals),
        on_ready=(lambda: on_ready(url)) if on_ready is not None else None,
    )
    server.run(sockets=[sock])


class ServerThread:
    """The collector in a background thread of this process: ``start()``, ``url``, ``stop()``.

    Used by ``fanout demo`` and the tests. ``stop()`` shuts down gracefully and joins, so
    nothing is left running; the store is closed with the server.
    """

    def __init__(
        self,
        store: Store,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limiter: Limiter | None = None,
        options: AppOptions | None = None,
        serving: ServingLimits | None = None,
    ) -> None:
        self.store = store
        self._sock = bind(host, port)
        self.url = url_of(self._sock)
        self.port: int = self._sock.getsockname()[1]
        self._ready = threading.Event()
        refusals = RefusalLog()
        self._server = CollectorServer(
            _config(_app(store, limiter, options, refusals), serving or ServingLimits(),
                    refusals),
            on_ready=self._ready.set,
        )
        self._thread = threading.Thread(target=self._run, name="fanout-collector", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
        finally:
            self._ready.set()
            self._sock.close()

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None or not self._server.started:
            self.stop()
            raise RuntimeError(f"the collector did not start: {self._error!r}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
