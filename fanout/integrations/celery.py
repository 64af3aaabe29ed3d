"""Celery: the request's context travels with the task; worker processes flush before exiting.

``setup(app)`` connects four of Celery's signals (nothing is patched):

- ``before_task_publish``: the open ``fanout.context`` (ids, canonical context, properties;
  never a generated anonymous id) goes into the message headers as ``fanout_context``, in
  the form an event would carry it (:meth:`RequestContext.to_dict`: a set property becomes a
  sorted list, an Enum its value...). A context no event could carry (a value with no JSON
  form) is left out, with a throttled warning: publishing never fails over fanout's header;
- ``task_prerun`` / ``task_postrun``: the worker restores that context around the task, so
  ``fanout.track()`` in the task is attributed to the visitor who caused it. Restored like
  any ``fanout.context`` (:meth:`RequestContext.from_dict`): a context with no id (a
  first-time visitor's, whose generated id stays in the request) gets a generated anonymous
  id, one per task; ids and values an event could not carry are dropped;
- ``worker_process_shutdown``: a prefork child flushes and shuts the client down before it
  leaves through ``os._exit`` (which skips every exit hook), including the replacement of a
  child after ``--max-tasks-per-child`` tasks and a warm shutdown;
- ``worker_shutdown``: the same in the main process (``solo`` and ``threads`` pools).

The shutdown is bounded by ``FANOUT_SHUTDOWN_TIMEOUT`` (or ``shutdown_timeout``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Final

from celery import Celery, signals

from .. import _default
from .._client import Client
from .._context import RequestContext, current, use
from .._exceptions import InvalidEvent
from .._throttle import Throttle

__all__ = ["HEADER", "setup"]

logger = logging.getLogger("fanout")

#: The message header that carries the context.
HEADER: Final = "fanout_context"
_SCOPE_ATTR: Final = "_fanout_scope"
#: The hooks' warnings: one line per interval for a failure that repeats on every task.
_throttle = Throttle(logger)


def setup(
    app: Celery, *, client: Client | None = None, shutdown_timeout: float | None = None
) -> None:
    """Connect fanout to ``app``'s tasks and worker processes (call once, where the app is built).

    ``client`` defaults to fanout's default client (the one ``fanout.track()`` uses).
    """

    def publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
        # Runs inside the host app's task.delay(): nothing may escape it. The task is
        # published without the context rather than not at all.
        try:
            ctx = current()
            if ctx is not None and headers is not None:
                headers[HEADER] = ctx.to_dict()
        except Exception as exc:  # noqa: BLE001 - see above
            # The path and the type only: the message may quote a value (a secret, say).
            where = f" at {exc.path}" if isinstance(exc, InvalidEvent) and exc.path else ""
            _throttle.warning(
                "publish",
                "fanout: the context cannot travel with a Celery task (%s%s); "
                "the task is published without it",
                type(exc).__name__,
                where,
            )

    def prerun(task: Any = None, **_: Any) -> None:
        request = getattr(task, "request", None)
        if request is None:
            return
        data = _header(request)
        if data is None:
            return
        try:
            ctx = RequestContext.from_dict(data)  # once per task: one generated id, if any
        except Exception as exc:  # noqa: BLE001 - the task runs, with no context
            _throttle.warning(
                "prerun",
                "fanout: the context of a Celery task could not be restored (%s); "
                "the task runs without it",
                type(exc).__name__,
            )
            return
        scope = contextlib.ExitStack()
        scope.enter_context(use(ctx))
        setattr(request, _SCOPE_ATTR, scope)

    def postrun(task: Any = None, **_: Any) -> None:
        scope = getattr(getattr(task, "request", None), _SCOPE_ATTR, None)
        if isinstance(scope, contextlib.ExitStack):
            scope.close()

    def process_shutdown(**_: Any) -> None:
        try:
            if client is not None:
                report = client.shutdown(shutdown_timeout)
            else:
                report = _default.shutdown(shutdown_timeout)
        except Exception:  # noqa: BLE001 - the worker's exit must go on
            logger.exception("fanout: shutdown of a Celery worker process failed")
            return
        if not report.ok:
            logger.warning("fanout: Celery process exit, not everything was delivered: %r", report)

    # weak=False: the receivers are closures, which nothing else holds; dispatch_uid: a
    # second setup() does not connect them twice.
    for signal, receiver in (
        (signals.before_task_publish, publish),
        (signals.task_prerun, prerun),
        (signals.task_postrun, postrun),
        (signals.worker_process_shutdown, process_shutdown),
        (signals.worker_shutdown, process_shutdown),
    ):
        signal.connect(receiver, weak=False, dispatch_uid=f"fanout.{signal.name}")


def _header(request: Any) -> Mapping[str, Any] | None:
    """The context header: a request attribute (protocol 2) or in ``request.headers``."""
    data = getattr(request, HEADER, None)
    if data is None:
        headers = getattr(request, "headers", None)
        if isinstance(headers, Mapping):
            data = headers.get(HEADER)
    return data if isinstance(data, Mapping) else None
