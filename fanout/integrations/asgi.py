"""ASGI middleware (Starlette, FastAPI, Django's ASGI app, any ASGI 3 app).

Two jobs, and no delivery of its own:

- every HTTP or WebSocket request runs inside a fanout context filled from the request
  (the browser's ids, IP, user agent, URL, referrer, locale, ``utm_*``, and the person the
  optional ``person_id`` hook names), so calls in the handler need not repeat them. The
  request is read only when its first event is built, from a copy of the scope taken on
  the way in: a request that tracks nothing costs one copied dict and one context
  variable;
- on the ASGI lifespan shutdown it flushes and shuts the client down within
  ``FANOUT_SHUTDOWN_TIMEOUT``, before the server reports the shutdown complete. uvicorn
  re-raises SIGTERM after its graceful stop, so the interpreter's exit hook never runs:
  without this, what was still queued when the container stopped was lost.

If the wrapped app does not speak the lifespan protocol (it raises or returns on the
``lifespan`` scope), the middleware answers the protocol itself, so the flush still happens.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from .. import _default
from .._client import Client
from .._context import RequestContext, close_request, open_request, person_off_thread
from .._events import checked_context
from .._report import FlushReport
from ._request import KEY_HEADERS, OPENED, RequestReader, request_values

__all__ = ["FanoutMiddleware", "read_scope"]

#: Raw ASGI header name -> its slot in a request's key (``KEY_HEADERS``; ASGI names are
#: lower-case), or ``_UNREAD`` for the headers browsers send that nothing reads: one lookup
#: settles most headers of a request, and only a name in neither set is lower-cased and
#: looked up again.
_UNREAD: Final = -1
_ELSEWHERE: Final = -2
_HEADER_SLOTS: Final[dict[bytes, int]] = {
    **dict.fromkeys(
        (
            b"accept", b"accept-encoding", b"cache-control", b"connection", b"content-length",
            b"content-type", b"dnt", b"if-modified-since", b"if-none-match", b"origin",
            b"pragma", b"priority", b"sec-ch-ua", b"sec-ch-ua-mobile", b"sec-ch-ua-platform",
            b"sec-fetch-dest", b"sec-fetch-mode", b"sec-fetch-site", b"sec-fetch-user",
            b"sec-gpc", b"te", b"traceparent", b"upgrade-insecure-requests", b"authorization",
            b"x-forwarded-proto", b"x-real-ip", b"x-request-id", b"x-requested-with",
        ),
        _UNREAD,
    ),
    **{name.encode("latin-1"): slot for slot, name in enumerate(KEY_HEADERS)},
}
_KEY_HEADERS: Final = len(KEY_HEADERS)
_COOKIE: Final = KEY_HEADERS.index("cookie")
_FORWARDED: Final = KEY_HEADERS.index("x-forwarded-for")
_HOST: Final = KEY_HEADERS.index("host")

logger = logging.getLogger("fanout")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: ``person_id(scope)``: the authenticated user's id for this request, or ``None``.
PersonId = Callable[[Scope], "str | None"]


def _path(scope: Scope) -> str:
    """The path the client asked for: the scope's ``path``, which holds ``root_path``
    (the ASGI spec, uvicorn since 0.26, Starlette's ``Mount`` since 0.35: ``root_path`` only
    says which part of it the app is mounted at), or ``root_path`` + ``path`` from a
    server that still strips it (a whole-segment prefix test tells them apart)."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if not root or path == root or path.startswith(root if root[-1] == "/" else root + "/"):
        return path
    return root + path


class FanoutMiddleware:
    """``app = FanoutMiddleware(app)``: request context in, flush on lifespan shutdown.

    ``client`` defaults to fanout's default client (the one ``fanout.track()`` uses).
    ``trust_forwarded=True`` takes the client IP from ``X-Forwarded-For``: only behind a
    proxy that sets it. ``shutdown_timeout`` defaults to ``FANOUT_SHUTDOWN_TIMEOUT``.

    ``person_id(scope)`` returns the authenticated user's id (or ``None``). It is called
    at most once per request, when the request's first event is built, with the live
    scope: it sees what inner middleware put there (Starlette's ``AuthenticationMiddleware``
    sets ``scope["user"]``). It must not block; an exception from it is logged and the
    request goes on without a person.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: Client | None = None,
        trust_forwarded: bool = False,
        shutdown_timeout: float | None = None,
        person_id: PersonId | None = None,
    ) -> None:
        self.app = app
        self.client = client
        self.trust_forwarded = trust_forwarded
        self.shutdown_timeout = shutdown_timeout
        self.person_id = person_id
        self._reader = RequestReader()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "http" or kind == "websocket":
            # The copy keeps the request as the server gave it: routers rewrite the live
            # scope in place (Starlette's Mount extends root_path) before a handler tracks.
            outer = scope.get(OPENED)
            ctx, tokens = open_request(self._read, (dict(scope), scope), outer, self._detach)
            scope[OPENED] = ctx  # for a FanoutMiddleware inside this one: the same request
            try:
                await self.app(scope, receive, send)
            finally:
                close_request(ctx, tokens)
                scope[OPENED] = outer  # (the context holds the scope: no cycle left behind)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _read(self, scopes: tuple[Scope, Scope]) -> RequestContext:
        """The request's own context, read on the request's thread: on the first event
        of the request, not before (unless the client reads it off the thread: see
        :meth:`_detach`)."""
        snapshot, live = scopes
        return self._read_detached((snapshot, self._person(live)))

    def _detach(
        self, read: object, scopes: tuple[Scope, Scope]
    ) -> tuple[Callable[[Any], RequestContext], Any, bool]:
        """On the request's thread, at its first event handed to the client's deferred
        stage (:meth:`fanout._context.LazyContext.detach`): the ``person_id`` hook called
        with the live scope, the headers copied (an inner middleware may still change the
        list in place), and the rest of the reading left to any thread."""
        snapshot, live = scopes
        person = self._person(live)
        headers = snapshot.get("headers")
        if type(headers) is list:
            snapshot["headers"] = tuple(headers)  # (the snapshot is this request's own copy)
        return self._read_detached, (snapshot, person), person_off_thread(person)

    def _person(self, live: Scope) -> str | None:
        """What the ``person_id`` hook says of the request (``None`` without one, or when
        it fails: logged)."""
        if self.person_id is None:
            return None
        try:
            found = self.person_id(live)
            return None if found is None else str(found) or None
        except Exception:  # noqa: BLE001 - the app's hook must not fail its events
            logger.exception("fanout: the ASGI middleware's person_id hook failed")
            return None

    def _read_detached(self, source: tuple[Scope, str | None]) -> RequestContext:
        """The context of the request's ``snapshot``, with the hook's ``person``."""
        snapshot, person = source
        ctx = read_scope(self._reader, snapshot, self.trust_forwarded)
        if person is None:
            return ctx
        return RequestContext(person, ctx.anonymous_id, False, ctx.values)

    async def _shutdown(self) -> None:
        try:
            if self.client is not None:
                report: FlushReport = await self.client.ashutdown(self.shutdown_timeout)
            else:
                report = await _default.ashutdown(self.shutdown_timeout)
        except Exception:  # noqa: BLE001 - never fail the host's shutdown
            logger.exception("fanout: shutdown on ASGI lifespan failed")
            return
        if not report.ok:
            logger.warning("fanout: at lifespan shutdown, not everything was delivered: %r", report)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        received: list[str] = []
        sent: list[str] = []

        async def receive_wrapper() -> Message:
            message = await receive()
            received.append(message["type"])
            return message

        async def send_wrapper(message: Message) -> None:
            sent.append(message["type"])
            if message["type"] == "lifespan.shutdown.complete":
                await self._shutdown()
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:
            if "lifespan.startup.complete" in sent:
                await self._shutdown()
                raise
            logger.debug("the ASGI app does not handle lifespan; fanout answers it", exc_info=True)
        else:
            if "lifespan.startup.complete" in sent:
                if "lifespan.shutdown.complete" not in sent:
                    await self._shutdown()
                return
            if "lifespan.startup.failed" in sent:
                return
        # The app does not speak lifespan: answer it, so the shutdown flush still happens.
        if "lifespan.startup" not in received:
            await receive()
        await send({"type": "lifespan.startup.complete"})
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        await self._shutdown()
        await send({"type": "lifespan.shutdown.complete"})


def read_scope(reader: RequestReader, scope: Scope, trust: bool) -> RequestContext:
    """The context (without a person) of one ASGI request's ``scope``, read through
    ``reader``, which keeps its readings: from its second time, the same object for the
    same request (so the events of repeated requests share it, and what is derived from
    it). Django's ASGI requests are read by it too (their ``request.scope``).

    The request's key (:meth:`RequestReader.read_key`) holds the header values as the
    server gave them, bytes not yet decoded: the reader decodes only what it reads on
    a miss (a new visitor's cookie; a new page's headers), and every bytes value's
    hash, computed once for the whole key, serves its slices (the ids' and the page's
    keys) too. Nothing is decoded for a request read before.
    """
    found: list[bytes | None] = [None] * _KEY_HEADERS
    for raw_name, raw_value in scope.get("headers") or ():
        slot = _HEADER_SLOTS.get(raw_name, _ELSEWHERE)
        if slot == _ELSEWHERE:
            slot = _HEADER_SLOTS.get(raw_name.lower(), _UNREAD)
        if slot >= 0:  # only the headers read are kept
            before = found[slot]
            if before is not None:  # a repeated header: joined as one
                raw_value = before + (b"; " if slot == _COOKIE else b", ") + raw_value
            found[slot] = raw_value
    if not trust:
        found[_FORWARDED] = None
    client = scope.get("client")
    host = None
    if not found[_HOST]:  # no Host header (HTTP/1.0): the server's address
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else None
    key: Any = (
        *found,
        client[0] if client else None,
        scope.get("scheme", "http"),
        host,
        _path(scope),
        scope.get("query_string") or b"",
        trust,
    )
    try:
        return reader.context(key)
    except (TypeError, AttributeError):  # a server that puts odd values in the scope
        text = [None if value is None else bytes(value).decode("latin-1") for value in found]
        return _unkept_context(text, scope, host or text[_HOST], trust)


def _unkept_context(
    found: list[str | None], scope: Scope, host: str | None, trust: bool
) -> RequestContext:
    """A request whose scope holds unhashable values: read, never kept."""
    client = scope.get("client")
    pairs = zip(KEY_HEADERS, found, strict=True)
    headers = {name: value for name, value in pairs if value is not None}
    anonymous_id, values = request_values(
        headers,
        client_ip=client[0] if client else None,
        scheme=scope.get("scheme", "http"),
        host=host,
        path=_path(scope),
        query=(scope.get("query_string") or b"").decode("latin-1"),
        trust_forwarded=trust,
    )
    return RequestContext(None, anonymous_id, False, checked_context(values))
