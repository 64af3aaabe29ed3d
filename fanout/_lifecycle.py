"""The process lifecycle: one at-fork hook and one exit hook, over weak sets.

This is the one documented piece of process-wide state besides the default client. Every
channel and client registers here instead of installing hooks of its own, so a process that
builds and drops a thousand clients still has exactly one ``os.register_at_fork`` hook and
one ``atexit`` callback, and nothing registered here is kept alive by it.

Exit paths covered here:

- **Normal exit** (end of the script, ``sys.exit``, an uncaught exception, Ctrl-C that ends
  the main thread): ``atexit`` shuts every open client down within its shutdown timeout.
- **multiprocessing children** leave through ``os._exit``, which skips ``atexit``, but
  multiprocessing runs its own finalizers first. A child started with the fork method gets
  one registered through ``multiprocessing.util.register_after_fork`` (the child's
  bootstrap clears inherited finalizers, then runs after-fork callbacks); a client built in
  a spawned child registers one directly.
- **Forked children** get fresh channel runtimes (threads, locks, empty queues): the parent
  keeps and sends what it had queued.

``docs/lifecycle.md`` has the whole table, including the exits no hook sees (``kill -9``,
``os._exit`` outside multiprocessing) and what covers them.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import weakref
from typing import Protocol

__all__ = ["register_client", "register_fork_aware", "shutdown_all", "hook_counts"]

logger = logging.getLogger("fanout")


class _Closable(Protocol):
    def _shutdown_at_exit(self) -> None: ...


class _ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


class _Registry:
    """What the hooks act on: weak sets, so registration never keeps anything alive."""

    def __init__(self) -> None:
        self.clients: weakref.WeakSet[_Closable] = weakref.WeakSet()
        self.fork_aware: weakref.WeakSet[_ForkAware] = weakref.WeakSet()
        self.lock = threading.Lock()
        self.installed = False
        self.fork_hooks = 0
        self.exit_hooks = 0
        self.mp_finalizers = 0
        #: The pid whose multiprocessing finalizer is registered (one per process).
        self.mp_finalizer_pid: int | None = None
        self.exiting = False


_registry = _Registry()


def register_client(client: _Closable) -> None:
    """Shut ``client`` down at interpreter exit (and before a multiprocessing child exits)."""
    _install()
    _registry.clients.add(client)
    _install_mp_finalizer_in_child()


def register_fork_aware(obj: _ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every forked child, while ``obj`` lives."""
    _install()
    _registry.fork_aware.add(obj)


def hook_counts() -> dict[str, int]:
    """How many hooks this module installed (tests check that it stays at one each)."""
    return {
        "at_fork": _registry.fork_hooks,
        "atexit": _registry.exit_hooks,
        "multiprocessing_finalizers": _registry.mp_finalizers,
        "clients": len(_registry.clients),
        "fork_aware": len(_registry.fork_aware),
    }


def shutdown_all() -> None:
    """Shut down every registered client that is still open; log what could not be sent."""
    if _registry.exiting:
        return
    _registry.exiting = True
    try:
        for client in list(_registry.clients):
            try:
                client._shutdown_at_exit()
            except Exception:  # noqa: BLE001 - exit must go on
                logger.exception("fanout: shutdown at exit failed")
    finally:
        _registry.exiting = False


def _install() -> None:
    # Called when a client or channel is built, never per event: the lock is cheap here.
    with _registry.lock:
        if _registry.installed:
            return
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _registry.fork_hooks += 1
        atexit.register(shutdown_all)
        _registry.exit_hooks += 1
        _registry.installed = True


def _after_fork_in_child() -> None:
    # The parent's lock may have been held by another thread at the fork.
    _registry.lock = threading.Lock()
    _registry.exiting = False
    for obj in list(_registry.fork_aware):
        try:
            obj._after_fork_in_child()
        except Exception:  # noqa: BLE001 - a broken channel must not break the child
            logger.exception("fanout: resetting %r after fork failed", obj)
    util = sys.modules.get("multiprocessing.util")
    if util is not None and _registry.clients:
        # A multiprocessing child clears inherited finalizers in its bootstrap and then
        # runs the after-fork callbacks: register the finalizer from one of those.
        util.register_after_fork(_registry, _mp_after_fork)


def _mp_after_fork(_: object) -> None:
    _registry.mp_finalizer_pid = None  # the bootstrap has just cleared the finalizers
    _register_mp_finalizer()


def _install_mp_finalizer_in_child() -> None:
    """A client built inside a multiprocessing child (spawn, forkserver) registers directly."""
    mp = sys.modules.get("multiprocessing")
    if mp is None or mp.parent_process() is None:
        return
    _register_mp_finalizer()
    # Spawn's bootstrap clears finalizers registered while the main module was imported.
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util.register_after_fork(_registry, _mp_after_fork)


def _register_mp_finalizer() -> None:
    from multiprocessing import util

    if _registry.mp_finalizer_pid == os.getpid():
        return
    _registry.mp_finalizer_pid = os.getpid()
    # A high priority: run before multiprocessing tears down its own queues and pipes.
    util.Finalize(None, shutdown_all, exitpriority=100)
    _registry.mp_finalizers += 1
