"""``fanout collector serve --workers N``: N server processes sharing one listening socket.

The parent binds the socket, then forks N children; each opens its own store (its own
database connections: nothing opened before the fork is used after it) and runs the
ordinary server (:func:`.server.serve`) on the inherited socket, and the kernel hands
each new connection to one of them. The parent only supervises: it reports ready once
every child is accepting, forwards SIGINT/SIGTERM to the children (each finishes its
in-flight requests, answered only after their commit, then exits), and if one child dies
on its own it stops the others and exits 1, so a supervisor (systemd, Kubernetes)
restarts the whole unit rather than running short-handed unnoticed.

Exactly-once storage across the processes is the store's job, not this module's: the
dedupe key is a unique index in the database (SQLite's file, PostgreSQL's ``event_ids``),
so the same event id sent to two processes at once is stored once. Rate limits must be
shared too, which PostgreSQL's limiter is and SQLite's in-memory one is not: the CLI
refuses ``--rate-limit`` with SQLite and more than one worker.

Fork is POSIX only; behind a load balancer, N separate ``serve`` processes (on one host or
many) work the same way on one PostgreSQL database.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType

from .app import AppOptions
from .guard import ServingLimits
from .server import serve, url_of
from .store import Store

__all__ = ["serve_workers"]


def _child(open_store: Callable[[], Store], sock: socket.socket, ready_fd: int,
           rate_limit: float | None, options: AppOptions | None,
           serving: ServingLimits | None) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    store = open_store()

    def ready(url: str) -> None:
        os.write(ready_fd, b"1")

    serve(store, sock, limiter=store.limiter(rate_limit), options=options, serving=serving,
          on_ready=ready)
    return 0


def serve_workers(
    open_store: Callable[[], Store],
    sock: socket.socket,
    workers: int,
    *,
    rate_limit: float | None = None,
    options: AppOptions | None = None,
    serving: ServingLimits | None = None,
    on_ready: Callable[[str], None] | None = None,
    start_timeout: float = 60.0,
) -> int:
    """Run ``workers`` server processes on ``sock`` until SIGINT/SIGTERM; the exit status
    (0 after a requested stop, 1 if a worker failed)."""
    read_fd, write_fd = os.pipe()
    children: set[int] = set()
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # the child never returns into the caller's code
            os.close(read_fd)
            status = 1
            try:
                status = _child(open_store, sock, write_fd, rate_limit, options, serving)
            except BaseException as exc:  # noqa: BLE001 - reported, then the child exits
                print(f"fanout collector worker {os.getpid()}: {exc}", file=sys.stderr)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        children.add(pid)
    os.close(write_fd)
    stopping = False

    def stop(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        ready = 0
        deadline = time.monotonic() + start_timeout
        while ready < workers and not stopping and time.monotonic() < deadline:
            readable, _, _ = select.select([read_fd], [], [], 0.2)
            if readable:
                got = os.read(read_fd, workers)
                if not got:  # every child closed the pipe: they all died
                    break
                ready += len(got)
            if _reap(children, block=False) and not stopping:
                break
        if ready == workers and on_ready is not None:
            on_ready(url_of(sock))
        elif not stopping:
            status = 1
            stop(signal.SIGTERM, None)
        while children:
            if _reap(children, block=True) and not stopping:
                status = 1  # a worker died on its own: stop the rest
                stop(signal.SIGTERM, None)
    finally:
        os.close(read_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _reap(children: set[int], *, block: bool) -> bool:
    """Collect exited children (at most one when ``block``); whether any exited."""
    exited = False
    while children:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            children.clear()
            break
        except InterruptedError:
            continue
        if pid == 0:
            break
        children.discard(pid)
        exited = True
        if block:
            break
    return exited
