"""One HTTP request → the keyword arguments of ``fanout.context(...)``.

Shared by the ASGI, WSGI and Django middleware so they read the same things the same way:
the browser's ids (:mod:`fanout.integrations.browser`), the client IP, user agent, locale,
URL, path, referrer and the ``utm_*`` campaign parameters.

The client IP is the socket's peer address. ``X-Forwarded-For`` is only read when the
application says it sits behind a proxy it trusts (``trust_forwarded=True``): the header is
set by whoever sends the request, so by default it would let any visitor pick their IP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, Final, Generic, TypeVar
from urllib.parse import unquote_plus

from .._events import checked_context
from .browser import NEVER, read_request_ids, sanitize

__all__ = ["READ_HEADERS", "REQUESTS_KEPT", "RequestReader", "request_values"]

_K = TypeVar("_K")
_V = TypeVar("_V")

#: Every header (lower-cased) that ``request_values`` or the browser-id readers look at.
READ_HEADERS: Final = frozenset({
    "accept-language",
    "cookie",
    "host",
    "referer",
    "user-agent",
    "x-fanout-anonymous-id",
    "x-fanout-session-id",
    "x-forwarded-for",
    "x-posthog-distinct-id",
    "x-posthog-session-id",
})

#: Distinct cookie headers, and distinct requests, whose reading one middleware keeps.
REQUESTS_KEPT: Final = 256
#: Longest URL, referrer or user agent kept.
MAX_TEXT_LENGTH: Final = 2048
_CAMPAIGN: Final = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
}


def request_values(
    headers: Mapping[str, str],
    *,
    client_ip: str | None,
    scheme: str,
    host: str | None,
    path: str,
    query: str,
    trust_forwarded: bool = False,
) -> tuple[str | None, dict[str, Any]]:
    """(the browser's anonymous id, the canonical context values) of one request.

    Values that are absent or empty once sanitised are left out, so the dict can be the
    context's ``values`` as it is.
    """
    anonymous_id, session_id, _ = read_request_ids(headers, headers.get("cookie") or None)
    page = _page_values(headers, client_ip, scheme, host, path, query, trust_forwarded)
    return anonymous_id, {"session_id": session_id, **page} if session_id is not None else page


def _page_values(
    headers: Mapping[str, str],
    client_ip: str | None,
    scheme: str,
    host: str | None,
    path: str,
    query: str,
    trust_forwarded: bool,
) -> dict[str, Any]:
    # ``sanitize`` checks the common case (printable, within its cap) in one C call itself.
    values: dict[str, Any] = {}
    get = headers.get
    ip = client_ip
    if trust_forwarded:
        forwarded = get("x-forwarded-for", "").split(",")[0].strip()
        ip = forwarded or ip
    locale = get("accept-language")
    if locale:
        locale = locale.split(",", 1)[0].split(";", 1)[0]
    host = host or get("host")
    url = None
    if host:
        url = f"{scheme}://{host}{path}?{query}" if query else f"{scheme}://{host}{path}"
    for key, value, cap in (
        ("ip", ip, 64),
        ("user_agent", get("user-agent"), MAX_TEXT_LENGTH),
        ("locale", locale, 35),
        ("url", url, MAX_TEXT_LENGTH),
        ("path", path, MAX_TEXT_LENGTH),
        ("referrer", get("referer"), MAX_TEXT_LENGTH),
    ):
        if value:
            clean = sanitize(value, cap)
            if clean is not None:
                values[key] = clean
    if "utm_" in query:
        campaign = _campaign(query)
        if campaign:
            values["campaign"] = campaign
    return values


class _Kept(Generic[_K, _V]):
    """At most ``size`` recent results by key; the oldest stored goes first.

    Reads take no lock (one dict lookup is atomic); stores do, so concurrent requests
    cannot break the eviction.
    """

    __slots__ = ("_data", "_size", "_lock", "get")

    def __init__(self, size: int) -> None:
        self._data: dict[_K, _V] = {}
        self._size = size
        self._lock = threading.Lock()
        self.get = self._data.get

    def put(self, key: _K, value: _V) -> None:
        data = self._data
        with self._lock:  # under it, each put adds at most one: one eviction keeps the bound
            if len(data) >= self._size:
                del data[next(iter(data))]
            data[key] = value


class RequestReader:
    """Reads requests like :func:`request_values`, keeping recent results (one per
    middleware instance, so nothing is shared between apps).

    A browser sends the same ``Cookie`` header with each request of a page, and the same
    user agent, referrer and locale: decoding the SDKs' cookies and sanitising is most of
    the cost of reading a request. The browser ids are kept per raw ``Cookie`` header and
    id headers, until the first idle timeout of a session they found live; the context
    values per everything they are read from; and the values of the page (all but the
    session) per what they are read from, for the new visitors of one page, who share
    its URL, referrer and often user agent. Values are kept already checked
    (:func:`fanout._events.checked_context`), so the events of the request do not walk them
    again. All are bounded (:data:`REQUESTS_KEPT` entries each).
    """

    __slots__ = ("_ids", "_values", "_pages", "_raw")

    def __init__(self, kept: int = REQUESTS_KEPT) -> None:
        #: A middleware's own key of a request as the server gave it (raw bytes, not yet
        #: decoded) -> (what the middleware made of :meth:`read`'s result, until when).
        self._raw: _Kept[Any, tuple[Any, float]] = _Kept(kept)
        self._ids: _Kept[tuple[str | None, ...], tuple[str | None, str | None, float]] = _Kept(
            kept
        )
        self._values: _Kept[tuple[Any, ...], Mapping[str, Any]] = _Kept(kept)
        self._pages: _Kept[tuple[str | None, ...], dict[str, Any]] = _Kept(kept)

    def read(
        self,
        headers: Mapping[str, str],
        *,
        client_ip: str | None,
        scheme: str,
        host: str | None,
        path: str,
        query: str,
        trust_forwarded: bool = False,
    ) -> tuple[str | None, Mapping[str, Any], float]:
        """(the browser's anonymous id, the checked canonical context values, the time
        until which the same request reads the same; see :func:`read_browser_ids_until`)."""
        get = headers.get
        cookie = get("cookie")
        ids_key = (
            cookie,
            get("x-fanout-anonymous-id"),
            get("x-fanout-session-id"),
            get("x-posthog-distinct-id"),
            get("x-posthog-session-id"),
        )
        found = self._ids.get(ids_key)
        if found is None or (found[2] != NEVER and time.time() > found[2]):
            found = read_request_ids(headers, cookie or None)
            self._ids.put(ids_key, found)
        anonymous_id, session_id, until = found
        trust = trust_forwarded
        page_key = (
            client_ip, get("x-forwarded-for") if trust else None,
            get("user-agent"), get("accept-language"), get("referer"), get("host"),
            scheme, host, path, query,
        )
        values_key = (session_id, page_key)
        values = self._values.get(values_key)
        if values is None:
            page = self._pages.get(page_key)
            if page is None:
                page = _page_values(headers, client_ip, scheme, host, path, query, trust)
                self._pages.put(page_key, page)
            values = checked_context(
                {"session_id": session_id, **page} if session_id is not None else page
            )
            self._values.put(values_key, values)
        return anonymous_id, values, until

    def recall(self, key: Any) -> Any:
        """What :meth:`remember` kept for ``key``, if it still holds now, else ``None``."""
        found = self._raw.get(key)
        if found is None or (found[1] != NEVER and time.time() > found[1]):
            return None
        return found[0]

    def remember(self, key: Any, value: Any, until: float) -> None:
        """Keep ``value`` (not ``None``; made from :meth:`read`'s result, which holds
        until ``until``) under a middleware's own (hashable) key."""
        self._raw.put(key, (value, until))


def _campaign(query: str) -> dict[str, str]:
    campaign: dict[str, str] = {}
    for part in query.split("&", 50)[:50]:
        key, _, value = part.partition("=")
        field = _CAMPAIGN.get(key)
        if field is None or field in campaign:
            continue
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        clean = (
            value.strip() or None
            if len(value) <= 200 and value.isprintable()
            else sanitize(value, 200)
        )
        if clean is not None:
            campaign[field] = clean
    return campaign
