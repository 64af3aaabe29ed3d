"""Django: ``"fanout.integrations.django.FanoutMiddleware"`` in ``MIDDLEWARE``.

Sync and async (Django picks the mode that avoids a thread switch). Every request runs
inside a fanout context filled from the request (the browser's ids, IP, user agent, URL,
referrer, locale, ``utm_*``) and, when the request's user is authenticated, their primary
key as ``person_id``. Put it after ``AuthenticationMiddleware``.

The user is read up front, with ``request.auser()`` in async mode so no synchronous
database call runs on the loop; the rest of the request (headers, cookies, ids) is read
when its first event is built, not before. The user cannot wait that long: the first
event may come from an async view that Django runs on an event loop under WSGI, where
``request.user``'s session lookup raises ``SynchronousOnlyOperation``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from .._context import (
    LazyContext,
    RequestContext,
    RequestTokens,
    close_request,
    open_request,
)
from ._request import OPENED, RequestReader
from .wsgi import read_environ

__all__ = ["FanoutMiddleware"]

#: What :meth:`FanoutMiddleware._open` opened: the context, its tokens, the outer one.
_Opened = tuple["LazyContext[Any]", RequestTokens, "LazyContext[Any] | None"]


class FanoutMiddleware:
    """Django middleware: the request's context, and the authenticated user as person."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        #: Keeps its readings like the WSGI and ASGI middleware (``request.META`` holds
        #: the WSGI environ's keys, under either server).
        self._reader = RequestReader()
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        user = getattr(request, "user", None)
        opened = self._open(request, _user_id(user))
        try:
            return self.get_response(request)
        finally:
            self._close(request, opened)

    async def _acall(self, request: Any) -> Any:
        user = None
        if hasattr(request, "auser"):
            user = await request.auser()
        get_response: Callable[[Any], Awaitable[Any]] = self.get_response
        opened = self._open(request, _user_id(user))
        try:
            return await get_response(request)
        finally:
            self._close(request, opened)

    def _open(self, request: Any, person_id: str | None) -> _Opened:
        """Open the request's context (:func:`fanout._context.open_request`: never over a
        context left by another request, as under uvicorn's pipelining), and leave it on
        the request for a second instance of this middleware."""
        outer: LazyContext[Any] | None = getattr(request, "_fanout_context", None)
        if outer is None:  # the ASGI or WSGI middleware's, around Django's application
            scope = getattr(request, "scope", None)  # an ASGIRequest's; else META is the environ
            outer = (scope if isinstance(scope, dict) else request.META).get(OPENED)
        ctx, tokens = open_request(self._read, (request, person_id), outer)
        request._fanout_context = ctx
        return ctx, tokens, outer

    @staticmethod
    def _close(request: Any, opened: _Opened) -> None:
        ctx, tokens, outer = opened
        close_request(ctx, tokens)
        request._fanout_context = outer  # (the context holds the request: no cycle left)

    def _read(self, request_and_person: tuple[Any, str | None]) -> RequestContext:
        request, person_id = request_and_person
        ctx = read_environ(self._reader, request.META, False)
        if person_id is None:
            return ctx
        return RequestContext(person_id, ctx.anonymous_id, False, ctx.values)


def _user_id(user: Any) -> str | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    pk = getattr(user, "pk", None)
    return None if pk is None else str(pk)
