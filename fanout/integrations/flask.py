"""Flask: ``init_app(app)`` wraps the app in fanout's WSGI middleware.

Every request runs inside ``fanout.context(...)`` filled from the request (the browser's
ids, IP, user agent, URL, referrer, locale, ``utm_*``). ``person_id`` is an optional
callable, run at the start of each request inside Flask's request context, that returns the
logged-in user's id (``lambda: current_user.get_id()`` with Flask-Login), or ``None``. An
exception from it is logged (logger ``"fanout"``) and the request goes on without a person,
as with the ASGI middleware's hook.

The person stays for the rest of the request, its streamed body included, which the
server iterates after Flask's teardown (with or without ``stream_with_context``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, g, request

from .._context import RequestContext, enter, lazy, leave, live_request, own, person_off_thread
from ._request import OPENED
from .wsgi import FanoutMiddleware

__all__ = ["init_app"]

logger = logging.getLogger("fanout")


def init_app(
    app: Flask,
    *,
    person_id: Callable[[], str | None] | None = None,
    trust_forwarded: bool = False,
) -> Flask:
    """Add fanout's request context to ``app``; returns ``app``."""
    app.wsgi_app = FanoutMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, trust_forwarded=trust_forwarded
    )
    if person_id is not None:
        get_person_id = person_id

        @app.before_request
        def _enter_person() -> None:
            try:
                found = get_person_id()
            except Exception:  # noqa: BLE001 - the app's hook must not fail its requests
                logger.exception("fanout: the Flask person_id hook failed")
                return
            pid = None if found is None else str(found) or None
            if pid is None:
                return
            # Over the middleware's context, and as lazy: merged on the first event.
            token = enter(lazy(_person, pid, _detach))
            # Inside the middleware, this is the request's own contextvars.Context, which
            # the middleware enters for every chunk of the body and discards after it: the
            # person is left there, for the body's events (Flask's teardown runs before
            # the server iterates the body). Anywhere else (a request dispatched without
            # app.wsgi_app), the teardown leaves it.
            opened = request.environ.get(OPENED)
            if opened is None or live_request() is not opened:
                g._fanout_person_token = token

        @app.teardown_request
        def _exit_person(exc: BaseException | None) -> None:
            token: Any = g.pop("_fanout_person_token", None)
            if token is not None:
                leave(token)

    return app


def _person(person_id: str) -> RequestContext:
    return own(person_id=person_id)


def _detach(
    read: Callable[[str], RequestContext], person_id: str
) -> tuple[Callable[[str], RequestContext], str, bool]:
    """The person's context may be merged on any thread (the client's deferred stage),
    unless the hook's id is not a valid one: then the call raises, on its thread."""
    return read, person_id, person_off_thread(person_id)
