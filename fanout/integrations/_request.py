"""One HTTP request → the keyword arguments of ``fanout.context(...)``.

Shared by the ASGI, WSGI and Django middleware so they read the same things the same way:
the browser's ids (:mod:`fanout.integrations.browser`), the client IP, user agent, locale,
URL, path, referrer and the ``utm_*`` campaign parameters.

The client IP is the socket's peer address. ``X-Forwarded-For`` is only read when the
application says it sits behind a proxy it trusts (``trust_forwarded=True``): the header is
set by whoever sends the request, so by default it would let any visitor pick their IP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote_plus

from .browser import parse_cookie_header, read_browser_ids, sanitize

__all__ = ["READ_HEADERS", "context_kwargs", "request_values"]

#: Every header (lower-cased) that ``context_kwargs`` or the browser-id readers look at.
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

#: Longest URL, referrer or user agent kept.
MAX_TEXT_LENGTH: Final = 2048
_CAMPAIGN: Final = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
}


def context_kwargs(
    headers: Mapping[str, str],
    *,
    client_ip: str | None,
    scheme: str,
    host: str | None,
    path: str,
    query: str,
    trust_forwarded: bool = False,
) -> dict[str, Any]:
    """What ``fanout.context`` should hold for one request (``headers`` lower-cased)."""
    anonymous_id, values = request_values(
        headers, client_ip=client_ip, scheme=scheme, host=host, path=path, query=query,
        trust_forwarded=trust_forwarded,
    )
    return {"anonymous_id": anonymous_id, **values}


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
    cookie = headers.get("cookie")
    ids = read_browser_ids(headers, parse_cookie_header(cookie) if cookie else {})
    values: dict[str, Any] = {}
    if ids.session_id is not None:
        values["session_id"] = ids.session_id
    ip = client_ip
    if trust_forwarded:
        forwarded = headers.get("x-forwarded-for", "").split(",")[0].strip()
        ip = forwarded or ip
    _put(values, "ip", ip, 64)
    _put(values, "user_agent", headers.get("user-agent"), MAX_TEXT_LENGTH)
    language = headers.get("accept-language")
    if language:
        _put(values, "locale", language.split(",")[0].split(";")[0], 35)
    host = host or headers.get("host")
    if host:
        url = f"{scheme}://{host}{path}?{query}" if query else f"{scheme}://{host}{path}"
        _put(values, "url", url, MAX_TEXT_LENGTH)
    _put(values, "path", path, MAX_TEXT_LENGTH)
    _put(values, "referrer", headers.get("referer"), MAX_TEXT_LENGTH)
    if "utm_" in query:
        campaign = _campaign(query)
        if campaign:
            values["campaign"] = campaign
    return ids.anonymous_id, values


def _put(values: dict[str, Any], key: str, value: str | None, limit: int) -> None:
    if value:
        clean = sanitize(value, limit)
        if clean is not None:
            values[key] = clean


def _campaign(query: str) -> dict[str, str]:
    campaign: dict[str, str] = {}
    for part in query.split("&", 50)[:50]:
        key, _, value = part.partition("=")
        field = _CAMPAIGN.get(key)
        if field is None or field in campaign:
            continue
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        clean = sanitize(value, 200)
        if clean is not None:
            campaign[field] = clean
    return campaign
