"""WSGI middleware (Flask, Django's WSGI app, Pyramid, Bottle, any WSGI app).

Every request runs inside a fanout context filled from the request (the browser's ids,
IP, user agent, URL, referrer, locale, ``utm_*``), including the iteration of a streamed
response body. The ``environ`` is copied on the way in and read only when the request's
first event is built: a request that tracks nothing pays for the copy and a context.
WSGI has no shutdown event: worker processes are flushed by fanout's exit hook (a normal
exit, gunicorn's graceful stop); see ``docs/integrations/wsgi.md``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final
from urllib.parse import quote

from .._context import RequestContext, activate_request, as_is, live_request
from .._events import checked_context
from ._request import _PATH_SAFE, OPENED, READ_HEADERS, RequestReader, request_values

__all__ = ["FanoutMiddleware", "environ_context", "environ_values"]

#: (``environ`` key, header name) of each header read: ``HTTP_USER_AGENT`` -> ``user-agent``.
_ENVIRON_KEYS: Final = tuple(
    ("HTTP_" + name.upper().replace("-", "_"), name) for name in sorted(READ_HEADERS)
)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def environ_context(environ: dict[str, Any], *, trust_forwarded: bool = False) -> dict[str, Any]:
    """The ``fanout.context`` keyword arguments for one WSGI ``environ``."""
    anonymous_id, values = environ_values(environ, trust_forwarded=trust_forwarded)
    return {"anonymous_id": anonymous_id, **values}


def environ_values(
    environ: Mapping[str, Any], *, trust_forwarded: bool = False
) -> tuple[str | None, dict[str, Any]]:
    """(the browser's anonymous id, the canonical context values) of one ``environ``."""
    found: tuple[str | None, dict[str, Any]] = _environ_values(
        request_values, environ, trust_forwarded
    )
    return found


def _environ_values(read: Any, environ: Mapping[str, Any], trust_forwarded: bool) -> Any:
    """``read`` (:func:`request_values` or a :class:`RequestReader`'s) over ``environ``."""
    headers = {}
    for key, name in _ENVIRON_KEYS:
        value = environ.get(key)
        if isinstance(value, str):
            headers[name] = value
    return read(
        headers,
        client_ip=environ.get("REMOTE_ADDR") or None,
        scheme=environ.get("wsgi.url_scheme", "http"),
        host=headers.get("host") or _server_host(environ),
        path=_environ_path(environ),
        query=environ.get("QUERY_STRING", ""),
        trust_forwarded=trust_forwarded,
    )


def _environ_path(environ: Mapping[str, Any]) -> str:
    """The path asked for, as text: ``SCRIPT_NAME`` + ``PATH_INFO``, which a WSGI server
    gives as the path's bytes read as Latin-1 (PEP 3333), read as the UTF-8 they are, as an
    ASGI server gives its path (``/caf%C3%A9`` is ``/café`` under both, and both name the
    page ``/caf%C3%A9``, as the browser does: ``_request._browser_path``). Bytes that are
    not UTF-8 are given back as their escapes (``/caf%E9``); a path already decoded
    (Django's ASGI ``request.META``, whose characters past Latin-1 cannot be bytes) as it is."""
    path: str = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "/")
    if path.isascii():
        return path
    try:
        raw = path.encode("latin-1")
    except UnicodeError:
        return path
    try:
        return raw.decode("utf-8")
    except UnicodeError:
        return quote(raw, safe=_PATH_SAFE)


def _server_host(environ: Mapping[str, Any]) -> str | None:
    name = environ.get("SERVER_NAME")
    return f"{name}:{environ.get('SERVER_PORT', '80')}" if name else None


class FanoutMiddleware:
    """``app = FanoutMiddleware(app)``: each request (and its response body) in a context.

    ``trust_forwarded=True`` takes the client IP from ``X-Forwarded-For``: only behind a
    proxy that sets it.
    """

    def __init__(self, app: WSGIApp, *, trust_forwarded: bool = False) -> None:
        self.app = app
        self.trust_forwarded = trust_forwarded
        self._reader = RequestReader()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        # One contextvars.Context per request, entered for the call and for each chunk of
        # the body: a generator body runs after __call__ has returned.
        # Never over a context another request left in this thread's (or task's) context
        # (see fanout._context.open_request). This request's own is set only in the copy,
        # so a request still open here encloses this one (a WSGI app mounted in an ASGI
        # app, whose environ is new).
        ctx = contextvars.copy_context()
        outer = environ.get(OPENED) or live_request()  # (the same in the copy)
        environ[OPENED] = ctx.run(activate_request, self._read, environ.copy(), outer, as_is)
        result = ctx.run(self.app, environ, start_response)
        if type(result) is list or type(result) is tuple:
            return result  # iterating it runs no code of the app's: no context to enter
        return _Body(result, ctx)

    def _read(self, environ: dict[str, Any]) -> RequestContext:
        return read_environ(self._reader, environ, self.trust_forwarded)


def read_environ(reader: RequestReader, environ: Mapping[str, Any], trust: bool) -> RequestContext:
    """The context (without a person) of one WSGI ``environ`` (or Django's ``request.META``,
    which holds the same keys), read through ``reader``, which keeps its readings.

    The request's key (:meth:`RequestReader.read_key`) is built straight from the environ:
    no headers dict. The same request again reads the same (until a session's idle
    timeout): from its second time, its context is recalled, one object for all.
    """
    get = environ.get
    host = get("HTTP_HOST")
    key: Any = (
        get("HTTP_COOKIE"),
        get("HTTP_X_FANOUT_ANONYMOUS_ID"),
        get("HTTP_X_FANOUT_SESSION_ID"),
        get("HTTP_X_POSTHOG_DISTINCT_ID"),
        get("HTTP_X_POSTHOG_SESSION_ID"),
        get("HTTP_X_FORWARDED_FOR") if trust else None,
        get("HTTP_USER_AGENT"),
        get("HTTP_ACCEPT_LANGUAGE"),
        get("HTTP_REFERER"),
        host,
        get("REMOTE_ADDR") or None,
        get("wsgi.url_scheme", "http"),
        (host if isinstance(host, str) else None) or _server_host(environ),
        _environ_path(environ),
        get("QUERY_STRING", ""),
        trust,
    )
    if not _TEXT_OR_NONE.issuperset(map(type, key[:10])):
        key = _text_headers(key)  # as read_key takes them: text or None
    try:
        return reader.context(key)
    except TypeError:  # a server that puts unhashable values in the environ
        anonymous_id, values = _environ_values(request_values, environ, trust)
        return RequestContext(None, anonymous_id, False, checked_context(values))


#: The types of header values read as they are (anything else: only a str subclass).
_TEXT_OR_NONE: Final = frozenset({str, type(None)})


def _text_headers(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """``key`` with the header values that are not text (a server's oddity) left out."""
    return (
        *(v if isinstance(v, str) else None for v in key[:10]),
        *key[10:],
    )


class _Body:
    """The app's response iterable, iterated and closed inside the request's context."""

    def __init__(self, result: Iterable[bytes], ctx: contextvars.Context) -> None:
        self._result = result
        self._iter: Iterator[bytes] | None = None
        self._ctx = ctx

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._iter is None:
            self._iter = self._ctx.run(iter, self._result)
        return self._ctx.run(next, self._iter)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            self._ctx.run(close)
