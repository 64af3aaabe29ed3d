"""One HTTP request → the keyword arguments of ``fanout.context(...)``.

Shared by the ASGI, WSGI and Django middleware so they read the same things the same way:
the browser's ids (:mod:`fanout.integrations.browser`), the client IP, user agent, locale,
URL, path, referrer and the ``utm_*`` campaign parameters.

The client IP is the socket's peer address. ``X-Forwarded-For`` is only read when the
application says it sits behind a proxy it trusts (``trust_forwarded=True``): the header is
set by whoever sends the request, so by default it would let any visitor pick their IP.
"""

from __future__ import annotations

import array
import re
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, TypeVar
from urllib.parse import quote, unquote_plus

from .._context import _NO_VALUES, RequestContext
from .._events import checked_context, checked_with
from .._recent import Recent
from .browser import (
    ACTIVITY_MARK,
    ACTIVITY_MARK_BYTES,
    NEVER,
    SESSION_IDLE_SECONDS,
    Shortcut,
    activity_room,
    activity_span,
    read_request_ids,
    read_request_ids_from,
    sanitize,
)

__all__ = [
    "KEY_HEADERS", "OPENED", "READ_HEADERS", "REQUESTS_KEPT", "RequestReader", "request_values",
]

#: The ASGI scope or WSGI environ key under which a middleware leaves the context it
#: opened for the request, so a middleware inside it knows it for the same request's
#: (:func:`fanout._context.open_request`'s ``outer``).
OPENED: Final = "fanout.context"

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

#: The headers of a request's key (:meth:`RequestReader.read_key`), in its order: the
#: cookie and id headers (the ids' key), then those of the page.
KEY_HEADERS: Final = (
    "cookie",
    "x-fanout-anonymous-id",
    "x-fanout-session-id",
    "x-posthog-distinct-id",
    "x-posthog-session-id",
    "x-forwarded-for",
    "user-agent",
    "accept-language",
    "referer",
    "host",
)
assert frozenset(KEY_HEADERS) == READ_HEADERS  # noqa: S101 - one list of what is read
_NO_ID_HEADERS: Final = (None,) * 4
_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})
_ACTIVITY_MARK_LENGTH: Final = len(ACTIVITY_MARK)

#: Distinct cookie headers, and distinct requests, whose reading one middleware keeps: a
#: worker process serves this many visitors' sessions at once before their readings push
#: each other out (and every request is read in full again: at 256, 400 interleaved
#: sessions cost 4 times what 20 did). About 2.1 KB per session kept, in all stores
#: (walking visitors' sessions, each with its memo: :class:`_Visitor`).
REQUESTS_KEPT: Final = 2048
#: Slots of each store's table of keys put once (a power of two, four per entry kept).
_SEEN_SLOTS: Final = 4 * REQUESTS_KEPT
_SEEN_MASK: Final = _SEEN_SLOTS - 1
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
    ip = _address(client_ip, headers.get("x-forwarded-for") if trust_forwarded else None)
    return anonymous_id, {
        **_visitor_values(session_id, ip),
        **_page_values(headers, scheme, host, path, query),
    }


def _address(client_ip: Any, forwarded: Any) -> str | None:
    """The client's address, sanitised: the first of ``forwarded`` (``X-Forwarded-For``,
    text or bytes, given only when the application trusts it) if it names one, else the
    socket's peer ``client_ip``."""
    ip = client_ip
    if forwarded:
        if type(forwarded) is bytes:
            forwarded = forwarded.decode("latin-1")
        ip = forwarded.split(",")[0].strip() or ip
    return sanitize(ip, 64) if ip else None


def _visitor_values(session_id: str | None, ip: str | None) -> dict[str, str]:
    """The values of a request that are the visitor's own, in the context's order: its
    session and address (a page's other values are shared by its visitors)."""
    if session_id is None:
        return {} if ip is None else {"ip": ip}
    return {"session_id": session_id} if ip is None else {"session_id": session_id, "ip": ip}


def _page_values(
    headers: Mapping[str, str],
    scheme: str,
    host: str | None,
    path: str,
    query: str,
) -> dict[str, Any]:
    """The values of a request but the visitor's (:func:`_visitor_values`): user agent,
    locale, URL, path, campaign and referrer (:func:`_browser_values`,
    :func:`_location_values`, :func:`_referrer_values`, in that order)."""
    get = headers.get
    return {
        **_browser_values(get("user-agent"), get("accept-language")),
        **_location_values(scheme, host or get("host"), path, query),
        **_referrer_values(get("referer")),
    }


def _browser_values(user_agent: str | None, accept_language: str | None) -> dict[str, str]:
    """The values a visitor's browser sends with every request: user agent and locale."""
    # ``sanitize`` checks the common case (printable, within its cap) in one C call itself.
    values = {}
    if user_agent:
        clean = sanitize(user_agent, MAX_TEXT_LENGTH)
        if clean is not None:
            values["user_agent"] = clean
    if accept_language:
        clean = sanitize(accept_language.split(",", 1)[0].split(";", 1)[0], 35)
        if clean is not None:
            values["locale"] = clean
    return values


#: What a browser's URL parser leaves as it is in a path (WHATWG URL's path percent-encode
#: set is the rest of printable ASCII: space, ``"``, ``#``, ``<``, ``>``, ``?``, `````,
#: ``{``, ``}``), with ``%`` (an escape the server left, or a ``%25`` it decoded).
_PATH_SAFE: Final = "/!$%&'()*+,-.:;=@[\\]^_|~"
_NEEDS_ENCODING: Final = re.compile(r'[^!$-;=@-_a-z|~]').search


def _browser_path(path: str) -> str:
    """``path`` (decoded text, as an ASGI server gives it) percent-encoded as a browser's
    ``location.pathname`` is: what the browser SDKs send for the same page (PostHog's
    ``$pathname``, Segment's ``context.page.path``), so a server event names it alike."""
    if _NEEDS_ENCODING(path) is None:
        return path
    return quote(path, safe=_PATH_SAFE)


def _location_values(scheme: str, host: str | None, path: str, query: str) -> dict[str, Any]:
    """The values of the page requested, whoever requests it: URL, path and campaign."""
    values: dict[str, Any] = {}
    path = _browser_path(path)
    if host:
        url = f"{scheme}://{host}{path}?{query}" if query else f"{scheme}://{host}{path}"
        clean = sanitize(url, MAX_TEXT_LENGTH)
        if clean is not None:
            values["url"] = clean
    if path:
        clean = sanitize(path, MAX_TEXT_LENGTH)
        if clean is not None:
            values["path"] = clean
    if "utm_" in query:
        campaign = _campaign(query)
        if campaign:
            values["campaign"] = campaign
    return values


def _referrer_values(referrer: str | None) -> dict[str, str]:
    """The page the request came from (``Referer``)."""
    clean = sanitize(referrer, MAX_TEXT_LENGTH) if referrer else None
    return {} if clean is None else {"referrer": clean}


class _Kept(Recent[_K, _V]):
    """At most ``size`` recent results by key (:class:`fanout._recent.Recent`), each kept
    from the second time it is put.

    A new visitor's request is seen once: keeping its reading would cost it a store (and
    later an eviction, of an entry long out of the CPU's caches) for a reading no request
    asks for again. So the first :meth:`put` of a key only notes its hash in a fixed table
    (one slot written, nothing allocated or evicted), and the second keeps the value: a
    request that comes back is read twice, then recalled. Two keys sharing a slot only
    push each other back to their first time.
    """

    __slots__ = ("_seen",)

    def __init__(self, size: int) -> None:
        super().__init__(size)
        #: The hash of the key last put once, per slot (``hash & _SEEN_MASK``).
        self._seen = array.array("q", bytes(8 * _SEEN_SLOTS))

    def put(self, key: _K, value: _V) -> None:
        h = hash(key)
        seen = self._seen
        slot = h & _SEEN_MASK
        if seen[slot] != h:  # its first time (or its slot was taken since): noted only
            seen[slot] = h
            return
        self.keep(key, value)


class _Visitor:
    """What a reader keeps of one visitor (one pair of ids read from its cookie or id
    headers) for its next requests, beside its ids.

    A visitor keeps its address and browser from page to page: ``own`` is its session id,
    address, user agent and locale checked as one part (:func:`fanout._events.checked_with`),
    with what they were read from; and ``last`` its last request's context, with the key it
    was read from past the ids (``key[5:]``), recalled as the same object when the visitor
    asks for the same page again with a new cookie (posthog-js's new activity time). Each
    is one tuple swapped whole: threads reading the same visitor at once see one or the
    other, never half of one, and at worst build the same thing twice.
    """

    __slots__ = ("own", "last")

    def __init__(self) -> None:
        self.own: tuple[tuple[Any, ...], Any, Mapping[str, Any]] | None = None
        self.last: tuple[tuple[Any, ...], RequestContext] | None = None


class RequestReader:
    """Reads requests like :func:`request_values`, keeping recent results (one per
    middleware instance, so nothing is shared between apps).

    A browser sends the same ``Cookie`` header with each request of a page, and the same
    user agent, referrer and locale: decoding the SDKs' cookies and sanitising is most of
    the cost of reading a request. What is kept, all bounded (:data:`REQUESTS_KEPT`
    entries each) and kept from a reading's second time (:class:`_Kept`: a new visitor,
    seen once, costs the stores nothing):

    - the browser ids per raw ``Cookie`` header and id headers, until the first idle
      timeout of a session they found live, with what the visitor's next requests reuse
      (:class:`_Visitor`: its own values checked as one part, its last context);
    - the values of a request but the visitor's own, in three parts, each by what it is
      read from and shared by other visitors: the browser (user agent, locale), the page
      (URL, path, campaign) and the referrer. They are kept already checked
      (:func:`fanout._events.checked_context`) and put together without walking them again
      (:func:`fanout._events.checked_with`), so the events of the request skip the walk;
    - a live PostHog session, which posthog-js goes on rewriting (the last-activity time in
      its cookie, as the visitor's events are captured): its ids are kept for the header
      without those digits on its first reading, once proven (a visitor's next request has
      new digits, so a second reading of the same header seldom comes), and its requests
      get their ids back, the session judged live by the new time alone (see
      :meth:`_returning`).
    """

    __slots__ = (
        "_active", "_active_kept", "_browsers", "_ids", "_locations", "_raw", "_referrers",
        "_unprovable",
    )

    def __init__(self, kept: int = REQUESTS_KEPT) -> None:
        #: A middleware's own key of a request as the server gave it (raw bytes, not yet
        #: decoded) -> (what the middleware made of :meth:`read`'s result, until when).
        self._raw: _Kept[Any, tuple[Any, float]] = _Kept(kept)
        #: The ids' part of a request's key -> (anonymous id, session id, until when, the
        #: visitor's memo or ``None`` when no id was found).
        self._ids: _Kept[tuple[Any, ...], _Ids] = _Kept(kept)
        #: The parts of a request's context but the visitor's own (see :meth:`_context`):
        #: by user agent and ``Accept-Language``; by host, scheme, path and query; by
        #: ``Referer``.
        self._browsers: _Kept[tuple[Any, ...], Mapping[str, Any]] = _Kept(kept)
        self._locations: _Kept[tuple[Any, ...], Mapping[str, Any]] = _Kept(kept)
        self._referrers: _Kept[Any, Mapping[str, Any]] = _Kept(kept)
        #: A ``Cookie`` header with its PostHog cookie's last-activity digits cut out ->
        #: (the header before and after them, the anonymous and session ids of any such
        #: header whose session is live, how many digits may stand there, the visitor's
        #: memo): see :meth:`_keep_active`.
        self._active: _Kept[tuple[Any, ...], _Active] = _Kept(kept)
        self._active_kept = self._active._data  # read inline on a miss: no call per request
        #: Sessions whose header :func:`activity_room` could not prove (in order, as a set):
        #: each is tried once, not on each of its requests.
        self._unprovable: dict[str, None] = {}

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
        return self.read_key((
            *map(get, KEY_HEADERS[:5]), get("x-forwarded-for") if trust_forwarded else None,
            *map(get, KEY_HEADERS[6:]), client_ip, scheme, host, path, query, trust_forwarded,
        ))  # fmt: skip

    def read_key(self, key: tuple[Any, ...]) -> tuple[str | None, Mapping[str, Any], float]:
        """:meth:`read` of a request given as its key: the values of :data:`KEY_HEADERS`
        (text, or bytes as an ASGI server gives them, or ``None``; ``x-forwarded-for``
        ``None`` unless trusted), then ``client_ip``, ``scheme``, ``host``, ``path``,
        ``query`` (text or bytes) and ``trust_forwarded``.

        One flat tuple, which the middleware build straight from the server's request and
        also use to recall their own readings: a new visitor's request is read without a
        headers dict, and its ids and page are looked up by slices of it. Bytes are
        decoded (as Latin-1, as HTTP header bytes) only when read, on a miss.
        """
        ctx, until = self._read(key)
        return ctx.anonymous_id, ctx.values, until

    def context(self, key: tuple[Any, ...]) -> RequestContext:
        """The context (without a person) of the request of ``key`` (:meth:`read_key`):
        recalled if a request with this key was read twice and its session still lives,
        else read, and kept if this is its second time: what both middleware do per
        request, in one call. Raises ``TypeError`` for a key that cannot be hashed, unless
        a returning visitor's kept context answers it without hashing it (the same values)."""
        returning = self._returning(key)
        if returning is not None:  # (the whole key is never hashed: see _returning)
            return returning[0]
        found = self._raw.get(key)
        if found is not None and (found[1] == NEVER or time.time() <= found[1]):
            ctx: RequestContext = found[0]
            return ctx
        ctx, until, active = self._read_ids_and_context(key)
        if not active:
            self._raw.put(key, (ctx, until))
        return ctx

    def _read(self, key: tuple[Any, ...]) -> tuple[RequestContext, float]:
        """The context of the request of ``key`` and until when it holds, from what is
        kept where it can be."""
        return self._returning(key) or self._read_ids_and_context(key)[:2]

    def _returning(self, key: tuple[Any, ...]) -> tuple[RequestContext, float] | None:
        """The context of a returning visitor's request whose PostHog cookie is the one of
        a live session kept (:meth:`_keep_active`) but for its last-activity digits, and
        when that session ends; else ``None``.

        posthog-js rewrites those digits as the visitor's events are captured, so a site
        running it sends new ones on most requests; they are proven to change nothing of
        the reading but when the session ends. Such a request is recalled by the header
        without them, and the visitor's last context serves it if it asks for the same
        page (:class:`_Visitor`): looked up before the whole key, which would hash the
        whole ``Cookie`` header (and user agent) of a request that is new by its digits,
        for nothing. Only once something is kept here does a request pay for looking.
        """
        cookie = key[0]
        if not (self._active_kept and cookie and key[1:5] == _NO_ID_HEADERS):
            return None
        kind = type(cookie)
        mark = (
            cookie.find(ACTIVITY_MARK_BYTES) if kind is bytes
            else cookie.find(ACTIVITY_MARK) if kind is str else -1
        )  # fmt: skip
        if mark < 0:
            return None
        start = mark + _ACTIVITY_MARK_LENGTH
        end = cookie.find(b"%2C" if kind is bytes else "%2C", start)
        kept = self._active_kept.get(_short_key(cookie, start, end))
        if kept is None:
            return None
        prefix, suffix, anonymous_id, session_id, room, visitor = kept
        ends = _recalled_until(cookie, start, end, prefix, suffix, room)
        if ends is None:
            return None
        return self._context(key, anonymous_id, session_id, visitor), ends

    def _read_ids_and_context(
        self, key: tuple[Any, ...]
    ) -> tuple[RequestContext, float, bool]:
        """The context of the request of ``key``, its ids kept by the ids' part of the key
        or read in full, until when it holds, and whether its ids were just kept for its
        PostHog cookie's new activity times (:meth:`_returning` then answers the same
        request, and nothing else need keep it: a visitor's next cookie has new digits)."""
        ids_key = key[:5]
        ids = self._ids.get(ids_key)
        active = False
        if ids is None or (ids[2] != NEVER and time.time() > ids[2]):
            ids, active = self._read_ids(key)
            if not active:
                self._ids.put(ids_key, ids)
        anonymous_id, session_id, until, visitor = ids
        return self._context(key, anonymous_id, session_id, visitor), until, active

    def _read_ids(self, key: tuple[Any, ...]) -> tuple[_Ids, bool]:
        """The ids of a request's key read in full, with a new visitor's memo when they
        name one, and whether they were kept for a live PostHog session's new activity
        times (:meth:`_keep_active`); a session whose digits are not provable is noted, not
        tried again."""
        cookie = key[0]
        raw = cookie
        if type(cookie) is bytes:
            cookie = cookie.decode("latin-1")
        found, shortcut = read_request_ids_from(
            _NO_HEADERS if key[1:5] == _NO_ID_HEADERS else _headers(key),
            cookie or None,
        )
        anonymous_id, session_id, until = found
        if anonymous_id is None and session_id is None:
            return (anonymous_id, session_id, until, None), False  # no visitor to keep
        visitor = _Visitor()
        ids = anonymous_id, session_id, until, visitor
        if (
            shortcut is None
            or session_id is None  # (never, when the shortcut read it)
            or session_id in self._unprovable
        ):
            return ids, False
        # A live session read from PostHog's cookie alone (so no id header), kept without
        # its activity digits if provable, on its first reading, as its visitor's next
        # request has new ones.
        if self._keep_active(raw, found, shortcut, visitor):
            return ids, True
        unprovable = self._unprovable  # not provable: not tried again (a bounded set)
        if len(unprovable) >= REQUESTS_KEPT:
            unprovable.clear()
        unprovable[session_id] = None
        return ids, False

    def _context(
        self,
        key: tuple[Any, ...],
        anonymous_id: str | None,
        session_id: str | None,
        visitor: _Visitor | None,
    ) -> RequestContext:
        """The context of the request of ``key``, whose ids are given, put together from
        its parts: a visitor's own values (session, address, browser) and those of the
        page, each shared by other requests (kept as one, a returning visitor's every new
        page was read and checked in full again)."""
        rest = key[5:]
        if visitor is not None:
            last = visitor.last
            if last is not None and last[0] == rest:  # the same page again: the same context
                return last[1]
        location_key = key[9:10] + key[11:15]
        location = self._locations.get(location_key)
        if location is None:
            host_header, scheme, host, path, query = location_key
            location = checked_context(_location_values(
                scheme, host or _text(host_header), path, _text(query) or ""
            ))  # fmt: skip
            self._locations.put(location_key, location)
        referrer_key = key[8]
        referrer = self._referrers.get(referrer_key)
        if referrer is None:
            referrer = checked_context(_referrer_values(_text(referrer_key)))
            self._referrers.put(referrer_key, referrer)
        if visitor is None:
            values = checked_with(
                _visitor_values(session_id, _address(key[10], key[5])),
                self._browser(key[6:8]), location, referrer,
            )  # fmt: skip
            return RequestContext(None, anonymous_id, False, values)
        own = visitor.own
        own_key = key[5:8]
        if own is None or own[0] != own_key or own[1] != key[10]:
            own = (own_key, key[10], checked_with(
                _visitor_values(session_id, _address(key[10], key[5])), self._browser(key[6:8])
            ))  # fmt: skip
            visitor.own = own
        ctx = RequestContext(None, anonymous_id, False, checked_with(
            _NO_VALUES, own[2], location, referrer
        ))  # fmt: skip
        visitor.last = (rest, ctx)
        return ctx

    def _browser(self, browser_key: tuple[Any, ...]) -> Mapping[str, Any]:
        """The checked values of a request's user agent and ``Accept-Language``."""
        browser = self._browsers.get(browser_key)
        if browser is None:
            user_agent, accept_language = browser_key
            browser = checked_context(_browser_values(_text(user_agent), _text(accept_language)))
            self._browsers.put(browser_key, browser)
        return browser

    def _keep_active(
        self,
        cookie: Any,
        found: tuple[str | None, str | None, float],
        shortcut: Shortcut,
        visitor: _Visitor,
    ) -> bool:
        """Keep ``found`` (the ids of ``cookie``, a live session, and the PostHog value they
        were read from by :func:`read_request_ids_from`'s shortcut) and ``visitor`` for the
        same header but for other last-activity digits in its PostHog cookie, if
        :func:`activity_room` proves they read the same: by the header's text after the
        digits (a short key: the header before and after them is compared in full when
        recalled), where they start and the length after them. Whether it was kept (not
        when another thread was storing, or the store keeps nothing). (A
        reading the shortcut did not make is never proven, so it is not tried.)"""
        if type(cookie) is not bytes and type(cookie) is not str:
            return False
        span = activity_span(cookie)
        if span is None:
            return False
        room = activity_room(cookie, span, found, shortcut=shortcut)
        if not room:
            return False
        start, end = span
        return self._active.keep(
            _short_key(cookie, start, end),
            (cookie[:start], cookie[end:], found[0], found[1], room, visitor),
        )

    def recall(self, key: Any) -> Any:
        """What :meth:`remember` kept for ``key``, if it still holds now, else ``None``."""
        found = self._raw.get(key)
        if found is None or (found[1] != NEVER and time.time() > found[1]):
            return None
        return found[0]

    def remember(self, key: Any, value: Any, until: float) -> None:
        """Keep ``value`` (not ``None``; made from :meth:`read`'s result, which holds
        until ``until``) under a middleware's own (hashable) key, from the second time
        it is given for that key (:class:`_Kept`)."""
        self._raw.put(key, (value, until))


#: What a reader keeps of a request's ids: (anonymous id, session id, until, the visitor).
_Ids = tuple["str | None", "str | None", float, "_Visitor | None"]
#: What a reader keeps of a live PostHog session for its new activity times: (the header
#: before and after the digits, anonymous id, session id, room, the visitor).
_Active = tuple[Any, Any, "str | None", "str | None", int, _Visitor]


def _short_key(cookie: Any, start: int, end: int) -> tuple[Any, int, int]:
    """The key ``_active`` keeps a header under, its last-activity digits at ``start:end``
    cut out: the 64 characters after them, where they start and the length after them
    (the header before and after them is compared in full when recalled)."""
    return cookie[end : end + 64], start, len(cookie) - end


def _recalled_until(
    cookie: Any, start: int, end: int, prefix: Any, suffix: Any, room: int
) -> float | None:
    """When the session of a ``Cookie`` header ends, if the header is ``prefix``, then 1 to
    ``room`` ASCII digits without a leading zero at ``start:end``, then ``suffix``, and
    that time (the digits, in ms, plus the idle timeout) has not passed; else ``None``."""
    digits = cookie[start:end]
    if (
        len(prefix) != start
        or not 0 < end - start <= room
        or not (digits.isdigit() and digits.isascii())
        or (end - start > 1 and digits[0] in (48, "0"))  # 48: b"0"[0]
        or not cookie.startswith(prefix)
        or not cookie.endswith(suffix)
        or len(cookie) - end != len(suffix)
    ):
        return None
    ends: float = int(digits) / 1000 + SESSION_IDLE_SECONDS
    if not time.time() <= ends:
        return None
    return ends


def _text(value: Any) -> Any:
    """A request key's value as text: bytes (as an ASGI server gives them) decoded as
    Latin-1, as HTTP header bytes; anything else as it is."""
    return value.decode("latin-1") if type(value) is bytes else value


def _headers(key: tuple[Any, ...]) -> dict[str, str]:
    """The headers of a request's key that it has, by name, as text."""
    pairs = zip(KEY_HEADERS, key[:10], strict=True)
    return {name: _text(value) for name, value in pairs if value is not None}


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
