"""Flask: ``init_app(app)`` wraps the app in fanout's WSGI middleware.

Every request runs inside ``fanout.context(...)`` filled from the request (the browser's
ids, IP, user agent, URL, referrer, locale, ``utm_*``). ``person_id`` is an optional
callable, run at the start of each request inside Flask's request context, that returns the
logged-in user's id (``lambda: current_user.get_id()`` with Flask-Login), or ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, g

from .._context import RequestContext, enter, lazy, leave, own
from .wsgi import FanoutMiddleware

__all__ = ["init_app"]


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
            pid = get_person_id()
            if pid is not None:
                # Over the middleware's context, and as lazy: merged on the first event.
                g._fanout_person_token = enter(lazy(_person, str(pid)))

        @app.teardown_request
        def _exit_person(exc: BaseException | None) -> None:
            token: Any = g.pop("_fanout_person_token", None)
            if token is not None:
                leave(token)

    return app


def _person(person_id: str) -> RequestContext:
    return own(person_id=person_id)
