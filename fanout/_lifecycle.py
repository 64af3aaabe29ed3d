"""The process lifecycle: one at-fork hook and one exit hook, over weak sets.

This is the one documented piece of process-wide state besides the default client. Every
channel and client registers here instead of installing hooks of its own, so a process that
builds and drops a thousand clients still has exactly one ``os.register_at_fork`` hook and
one ``atexit`` callback, and nothing registered here is kept alive by it.

Exit paths covered here:

- **Normal exit** (end of the script, ``sys.exit``, an uncaught exception, Ctrl-C that ends
  the main thread): ``atexit`` shuts every open client down within its shutdown timeout.
- **multiprocessing children** leave through ``os._exit``, which skips ``atexit``, but
  multiprocessing runs its own finalizers first (``util._exit_function`` at the end of
  ``BaseProcess._bootstrap``): fanout registers one in every child that has a client,
  whether the client was inherited through a fork (from the parent, or from a forkserver
  that preloaded it), built while a spawn or forkserver child imports the main module or
  unpickles its target (before the bootstrap), or built once the child runs. The fork and
  forkserver bootstraps clear the finalizers registered before them, then run the
  after-fork callbacks, from which fanout registers it again (``_install_mp_finalizer``).
- **Exit already under way**: a client built once fanout's exit hook has run, or while the
  interpreter runs its ``atexit`` callbacks, would never be shut down (Python never runs a
  callback registered while they run), so it delivers each call before returning
  (:func:`exit_started`, ``Client._send_at_exit``).
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
from typing import Any, Protocol

__all__ = [
    "register_client",
    "register_fork_aware",
    "shutdown_all",
    "hook_counts",
    "exit_started",
    "threads_allowed",
]

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
        #: The multiprocessing finalizer registered in this process (one per process), and
        #: the pid it belongs to: a forked child inherits the parent's, which does not run.
        self.mp_finalizer: Any = None
        self.mp_finalizer_pid: int | None = None
        #: ``_mp_after_fork`` is in ``multiprocessing.util``'s after-fork registry (which a
        #: forked child inherits along with this flag).
        self.mp_after_fork = False
        self.exiting = False
        #: The exit hook has run (``atexit``, or a multiprocessing child's finalizer):
        #: nothing shuts down a client built after it.
        self.exit_hook_ran = False
        #: A thread failed to start (Python 3.12.0 refuses them once exit has begun).
        self.threads_refused = False


_registry = _Registry()


def register_client(client: _Closable) -> None:
    """Shut ``client`` down at interpreter exit (and before a multiprocessing child exits)."""
    _install()
    _registry.clients.add(client)
    _install_mp_finalizer()


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
    _registry.exit_hook_ran = True
    try:
        for client in list(_registry.clients):
            try:
                client._shutdown_at_exit()
            except Exception:  # noqa: BLE001 - exit must go on
                logger.exception("fanout: shutdown at exit failed")
    finally:
        _registry.exiting = False


def exit_started() -> bool:
    """Whether this process has begun to exit, so that nothing will shut down a client built now.

    True once fanout's exit hook has run (``atexit``, or a multiprocessing child's finalizer),
    and on the main thread while the interpreter runs its exit callbacks: by then
    ``threading._shutdown`` has marked the main thread stopped. A callback registered while
    they run never runs, so this also covers a process whose first client is built in an
    ``atexit`` handler (fanout's own hook was never installed). Other threads are not asked:
    while the main thread waits for non-daemon threads at the end of the script, the main
    thread is stopped too, and a client built on one of those threads is shut down normally.
    """
    if _registry.exit_hook_ran:
        return True
    main = threading.main_thread()
    return threading.current_thread() is main and not main.is_alive()


def threads_allowed() -> bool:
    """Whether a new thread can still start: this tries one. Python 3.12.0 refuses them
    once exit has begun, ``atexit`` callbacks included (3.11 and 3.13 allow them there)."""
    if _registry.threads_refused:
        return False
    try:
        threading.Thread(target=_nothing, name="fanout-probe", daemon=True).start()
    except RuntimeError:
        _registry.threads_refused = True
        return False
    return True


def _nothing() -> None:
    pass


def _install() -> None:
    # Called when a client or channel is built, never per event: the lock is cheap here.
    with _registry.lock:
        if _registry.installed:
            return
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
            _registry.fork_hooks += 1
        atexit.register(shutdown_all)
        _registry.exit_hooks += 1
        _registry.installed = True


def _before_fork() -> None:
    # A request's context not read yet, which the client's deferred stage may be reading
    # on another thread (holding its lock), is read now: the child then has its ids.
    from . import _context

    try:
        _context.read_before_fork()
    except Exception:  # noqa: BLE001 - a fork must not fail over analytics
        logger.exception("fanout: reading the request context before a fork failed")


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
        _register_mp_after_fork(util)


def _install_mp_finalizer() -> None:
    """Have a multiprocessing child shut its clients down before it leaves.

    A child whose bootstrap has run (``parent_process()`` is set) registers the finalizer
    directly. Before it, a spawn or forkserver child imports the main module and unpickles
    its target, importing the worker module, while ``current_process()._inheriting`` is
    set and ``parent_process()`` is still ``None``; a forkserver also imports its preloaded
    modules before forking children. A finalizer registered then is kept by spawn's
    bootstrap, but cleared by fork's and forkserver's, which then run the after-fork
    callbacks: register one of those too, which re-registers it. Outside multiprocessing
    the callback only ever runs in the bootstrap of a child started later.
    """
    util = sys.modules.get("multiprocessing.util")
    process = sys.modules.get("multiprocessing.process")
    if util is None or process is None:
        return  # not a multiprocessing child; a fork later is seen by _after_fork_in_child
    _register_mp_after_fork(util)
    current = process.current_process()
    if process.parent_process() is not None or getattr(current, "_inheriting", False):
        _register_mp_finalizer()


def _register_mp_after_fork(util: Any) -> None:
    if not _registry.mp_after_fork:
        _registry.mp_after_fork = True
        util.register_after_fork(_registry, _mp_after_fork)


def _mp_after_fork(_: object) -> None:
    # In a multiprocessing child's bootstrap, which has just cleared the finalizers.
    _register_mp_finalizer()


def _register_mp_finalizer() -> None:
    from multiprocessing import util

    finalizer = _registry.mp_finalizer
    if (
        finalizer is not None
        and _registry.mp_finalizer_pid == os.getpid()
        and finalizer.still_active()
    ):
        return
    _registry.mp_finalizer_pid = os.getpid()
    # A high priority: run before multiprocessing tears down its own queues and pipes.
    _registry.mp_finalizer = util.Finalize(None, shutdown_all, exitpriority=100)
    _registry.mp_finalizers += 1
