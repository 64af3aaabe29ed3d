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

__all__ = ["READ_HEADERS", "context_kwargs"]

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
    cookies = parse_cookie_header(headers.get("cookie", ""))
    ids = read_browser_ids(headers, cookies)
    ip = client_ip
    if trust_forwarded:
        forwarded = headers.get("x-forwarded-for", "").split(",")[0].strip()
        ip = forwarded or ip
    host = host or headers.get("host")
    url = f"{scheme}://{host}{path}" + (f"?{query}" if query else "") if host else None
    campaign: dict[str, str] = {}
    if "utm_" in query:
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
    locale = headers.get("accept-language", "").split(",")[0].split(";")[0]
    return {
        "anonymous_id": ids.anonymous_id,
        "session_id": ids.session_id,
        "ip": sanitize(ip, 64),
        "user_agent": sanitize(headers.get("user-agent"), MAX_TEXT_LENGTH),
        "locale": sanitize(locale, 35),
        "url": sanitize(url, MAX_TEXT_LENGTH),
        "path": sanitize(path, MAX_TEXT_LENGTH),
        "referrer": sanitize(headers.get("referer"), MAX_TEXT_LENGTH),
        "campaign": campaign or None,
    }
