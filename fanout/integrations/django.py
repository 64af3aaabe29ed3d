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

A ``StreamingHttpResponse``'s body runs after the middleware has returned, when the
server iterates it (a sync iterator under WSGI, an async one under ASGI): it is iterated
inside the request's context too, as the WSGI middleware does it, in a copy of the
``contextvars`` context the view returned in, and so is the code that runs when the body
is closed early (a generator's ``finally``): a sync body's close by ``response.close()``,
an async body's close when the server drops it (the client gone), even when the garbage
collector finalizes it later, during another request. The request is over when its body
ends or is closed; any other response closes it on the way out, as before.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from .._context import (
    LazyContext,
    RequestContext,
    RequestTokens,
    close_request,
    end_request,
    leave_request,
    open_request,
    person_off_thread,
)
from ._request import OPENED, RequestReader
from .asgi import read_scope
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
        response = None
        try:
            response = self.get_response(request)
        finally:
            self._close(request, opened, response)
        return response

    async def _acall(self, request: Any) -> Any:
        user = None
        if hasattr(request, "auser"):
            user = await request.auser()
        get_response: Callable[[Any], Awaitable[Any]] = self.get_response
        opened = self._open(request, _user_id(user))
        response = None
        try:
            response = await get_response(request)
        finally:
            self._close(request, opened, response)
        return response

    def _open(self, request: Any, person_id: str | None) -> _Opened:
        """Open the request's context (:func:`fanout._context.open_request`: never over a
        context left by another request, as under uvicorn's pipelining), and leave it on
        the request for a second instance of this middleware."""
        outer: LazyContext[Any] | None = getattr(request, "_fanout_context", None)
        if outer is None:  # the ASGI or WSGI middleware's, around Django's application
            scope = getattr(request, "scope", None)  # an ASGIRequest's; else META is the environ
            outer = (scope if isinstance(scope, dict) else request.META).get(OPENED)
        ctx, tokens = open_request(self._read, (request, person_id), outer, self._detach)
        request._fanout_context = ctx
        return ctx, tokens, outer

    @staticmethod
    def _close(request: Any, opened: _Opened, response: Any) -> None:
        """On the way out: the request is over, unless its response streams a body the
        server has yet to iterate (its events carry the request's context too)."""
        ctx, tokens, outer = opened
        if getattr(response, "streaming", False) and _runs_code(response):
            _stream_in_context(response, ctx, tokens)
        else:
            close_request(ctx, tokens)
        request._fanout_context = outer  # (the context holds the request: no cycle left)

    def _read(self, request_and_person: tuple[Any, str | None]) -> RequestContext:
        request, person_id = request_and_person
        return self._read_detached(_snapshot(request, person_id, copy=False))

    def _detach(
        self, read: object, request_and_person: tuple[Any, str | None]
    ) -> tuple[Callable[[Any], RequestContext], Any, bool]:
        """On the request's thread, at its first event handed to the client's deferred
        stage (:meth:`fanout._context.LazyContext.detach`): a copy of what the request's
        reading needs, the rest of it left to any thread."""
        request, person_id = request_and_person
        return (
            self._read_detached, _snapshot(request, person_id), person_off_thread(person_id)
        )

    def _read_detached(self, source: tuple[bool, Any, str | None]) -> RequestContext:
        """The context of a request's :func:`_snapshot`."""
        is_scope, found, person_id = source
        if is_scope:
            ctx = read_scope(self._reader, found, False)
        else:
            ctx = read_environ(self._reader, found, False)
        if person_id is None:
            return ctx
        return RequestContext(person_id, ctx.anonymous_id, False, ctx.values)


def _snapshot(
    request: Any, person_id: str | None, *, copy: bool = True
) -> tuple[bool, Any, str | None]:
    """What a Django request's reading needs (copied, unless read at once): its ASGI
    scope (an ASGI request's META is no WSGI environ: no ``wsgi.url_scheme``, its path
    decoded text, not Latin-1 bytes: the scope is read as the ASGI middleware reads it),
    else its ``META`` (the WSGI environ's keys); and the person."""
    scope = getattr(request, "scope", None)
    if not copy:
        return (True, scope, person_id) if isinstance(scope, dict) else (
            False, request.META, person_id
        )
    if isinstance(scope, dict):
        scope = dict(scope)
        headers = scope.get("headers")
        if type(headers) is list:
            scope["headers"] = tuple(headers)
        return True, scope, person_id
    return False, dict(request.META), person_id


def _user_id(user: Any) -> str | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    pk = getattr(user, "pk", None)
    return None if pk is None else str(pk)


def _runs_code(response: Any) -> bool:
    """Whether iterating the streamed ``response`` may run the app's code: not for a
    ``FileResponse`` of a file, which the server reads (or hands to ``wsgi.file_wrapper``)."""
    return getattr(response, "file_to_stream", None) is None


def _stream_in_context(response: Any, ctx: LazyContext[Any], tokens: RequestTokens) -> None:
    """Hand the request's context over to ``response``'s streamed body, which the server
    iterates after the middleware has returned.

    The body gets a copy of the ``contextvars`` context the view returned in, where
    ``ctx`` is still current and still the request's own: one request, one context, so a
    visitor without ids keeps the anonymous id generated for the view's events. The live
    context is restored as :func:`~fanout._context.close_request` restores it (the
    server's thread or task serves other requests next), but ``ctx`` is not over yet: it
    is when the body ends, fails or is closed (``response.close()`` closes it, as Django
    closes any iterator with a ``close`` it is given).

    The code that runs when the body is closed early (the view generator's ``finally``)
    runs in that context too: a sync body's closers are run by the body's own ``close``,
    and an async body that ends early closes the view's iterator itself.
    """
    content = response.streaming_content  # (Django's own wrapper: runs nothing yet)
    body_context = contextvars.copy_context()
    leave_request(tokens)
    if getattr(response, "is_async", False):
        # The view's own async iterator, under Django's wrapper: closing the wrapper does
        # not close it, and no closer is registered for it (an async generator has no
        # ``close``), so the collector would finalize it later, in whatever context is
        # current then (another request's). ``_iterator`` is Django's private attribute
        # (4.2+: ``aiter()`` of the content given, which the wrapper iterates); without
        # it, only the wrapper is closed, as before.
        inner = getattr(response, "_iterator", None)
        response.streaming_content = _AsyncBody(content, body_context, ctx, inner)
    else:
        # Django registered the content's ``close`` (the view generator's) in
        # ``_resource_closers`` when the response was built, and ``response.close()``
        # calls it there, outside the request's context: the body's ``close`` calls it
        # instead, inside (as the WSGI middleware closes its app's body). A private
        # attribute (Django 3.0+): without a list there, Django calls them as before.
        closers = getattr(response, "_resource_closers", None)
        held: list[Callable[[], object]] = []
        if isinstance(closers, list):
            held = closers[:]
            closers.clear()  # (the body's own ``close`` is registered next, in their place)
        response.streaming_content = _Body(content, body_context, ctx, held)


class _Body:
    """A sync streamed body, each chunk produced and its closers run inside its request's
    context."""

    __slots__ = ("_content", "_context", "_request", "_closers")

    def __init__(
        self,
        content: Iterator[bytes],
        context: contextvars.Context,
        request: LazyContext[Any],
        closers: list[Callable[[], object]],
    ) -> None:
        self._content: Iterator[bytes] | None = content
        self._context: contextvars.Context | None = context
        self._request: LazyContext[Any] | None = request
        #: The response's closers registered before this body (the view generator's
        #: ``close``), for :meth:`close` to run in the request's context.
        self._closers = closers

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        content, context = self._content, self._context
        if content is None or context is None:  # ended, or closed
            raise StopIteration
        try:
            return context.run(next, content)
        except BaseException:  # StopIteration included: the body is done either way
            self._end()
            raise

    def _end(self) -> None:
        request = self._request
        self._content = self._request = None
        if request is not None:
            end_request(request)

    def close(self) -> None:
        """Run the response's closers of the body in the request's context (as Django's
        ``response.close()`` would: each of them, in order), then end the request."""
        closers, context = self._closers, self._context
        self._closers, self._context = [], None
        error: Exception | None = None
        try:
            if context is not None:
                for closer in closers:
                    try:
                        context.run(closer)
                    except Exception as exc:  # noqa: BLE001 - the next ones run all the same
                        error = error or exc
        finally:
            self._end()
        if error is not None:
            raise error  # (Django's ``close()`` drops it, as it drops its closers' own)


class _AsyncBody:
    """An async streamed body, each step of it run inside its request's context.

    An async generator does the iterating, so the request also ends when the server drops
    the body half-way (a client gone: asyncio finalizes the generator); ``close()`` ends
    it when the body is never iterated (Django's ``response.close()`` calls it). The two
    share the request in a list, not each other: no cycle to wait for the collector.
    """

    __slots__ = ("_chunks", "_request")

    def __init__(
        self,
        content: AsyncIterator[bytes],
        context: contextvars.Context,
        request: LazyContext[Any],
        inner: object,
    ) -> None:
        self._request = [request]
        self._chunks = _chunks_in(content, context, self._request, inner)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    def close(self) -> None:
        _end_held(self._request)


async def _chunks_in(
    content: AsyncIterator[bytes],
    context: contextvars.Context,
    request: list[LazyContext[Any]],
    inner: object,
) -> AsyncIterator[bytes]:
    """``content``'s chunks, each step in ``context``. A body that ends early (cancelled,
    closed, or finalized once the server dropped it) closes ``content`` and ``inner`` (the
    view's iterator under Django's wrapper ``content``) in ``context``, so the view's
    ``finally`` runs in its request's context, not later in another's."""
    done = False
    try:
        while True:
            try:
                chunk = await _InContext(context, context.run(content.__anext__))
            except StopAsyncIteration:
                done = True
                return
            yield chunk
    finally:
        try:
            if not done:
                try:
                    await _aclose_in(context, content)
                finally:
                    if inner is not content:
                        await _aclose_in(context, inner)
        finally:
            _end_held(request)


async def _aclose_in(context: contextvars.Context, iterator: object) -> None:
    """``iterator.aclose()`` (an async generator's), run in ``context``."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await _InContext(context, context.run(aclose))


def _end_held(request: list[LazyContext[Any]]) -> None:
    try:
        ended = request.pop()
    except IndexError:  # ended already
        return
    end_request(ended)


class _InContext:
    """Awaits ``awaitable`` with each of its steps run in ``context`` (what asyncio's task
    does with its own context), for the step of a body the server's task awaits.

    An async generator first iterated in a step (the view's, Django's wrapper of it, any
    the body starts) is finalized in a copy of ``context`` too (:class:`_FinalizeIn`): one
    the server drops half-way is closed by the event loop in a task of its own once it is
    garbage, and by the cyclic collector it can be garbage at any time, in another
    request's task. (Its finalizer is the thread's at its first iteration, so each step
    runs with it; it is put back before the step's future goes to the server's task.)
    """

    __slots__ = ("_context", "_awaitable")

    def __init__(self, context: contextvars.Context, awaitable: Awaitable[Any]) -> None:
        self._context = context
        self._awaitable = awaitable

    def __await__(self) -> Generator[Any, Any, Any]:
        context = self._context
        steps = _step_in(context, self._awaitable.__await__)
        step: Callable[[Any], Any] = steps.send
        arg: Any = None
        while True:
            try:
                yielded = _step_in(context, step, arg)
            except StopIteration as done:
                return done.value
            try:
                arg = yield yielded  # a future for the task to wait on, passed through
            except GeneratorExit:
                _step_in(context, steps.close)
                raise
            except BaseException as exc:  # noqa: BLE001 - a cancellation: into the step
                step, arg = steps.throw, exc
            else:
                step = steps.send


def _step_in(context: contextvars.Context, step: Callable[..., Any], *args: Any) -> Any:
    """``step(*args)`` in ``context``, with the thread's async generator finalizer (the
    event loop's) run in ``context`` for the generators the step first iterates."""
    firstiter, finalizer = _get_asyncgen_hooks()
    if finalizer is None:  # no event loop's: nothing finalizes them in a task
        return context.run(step, *args)
    if isinstance(finalizer, _FinalizeIn):  # a body's inside another's (nested middleware)
        own = _FinalizeIn(context, finalizer.finalizer)
    else:
        own = _FinalizeIn(context, finalizer)
    _set_asyncgen_hooks(firstiter, own)
    try:
        return context.run(step, *args)
    finally:
        _set_asyncgen_hooks(firstiter, finalizer)


_get_asyncgen_hooks = sys.get_asyncgen_hooks
_set_asyncgen_hooks = sys.set_asyncgen_hooks


class _FinalizeIn:
    """An event loop's async generator finalizer, called in a copy of ``context`` (a copy:
    ``context`` may be running here, when a step drops the generator). asyncio's and
    uvloop's schedule the generator's ``aclose()`` in a new task, which copies the
    context current when it is scheduled: the request's, not the collector's caller's."""

    __slots__ = ("_context", "finalizer")

    def __init__(self, context: contextvars.Context, finalizer: Callable[[Any], object]) -> None:
        self._context = context
        self.finalizer = finalizer

    def __call__(self, agen: Any) -> None:
        self._context.copy().run(self.finalizer, agen)
