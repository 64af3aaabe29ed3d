"""The browser's anonymous and session ids, read from request headers and SDK cookies.

So that ``identify()`` at signup joins the server's events to the visitor's browser
session, the integrations read the id the browser's analytics SDK already uses. Order of
precedence (the first source that has an anonymous id wins; the session id comes from the
same source when it has one, else from the next that does):

1. fanout's own headers ``X-Fanout-Anonymous-Id`` / ``X-Fanout-Session-Id``;
2. PostHog's tracing headers ``X-POSTHOG-DISTINCT-ID`` / ``X-POSTHOG-SESSION-ID``;
3. cookies: PostHog ``ph_<token>_posthog``, Segment ``ajs_anonymous_id``, Mixpanel
   ``mp_<token>_mixpanel``, Amplitude ``AMP_<key prefix>``, RudderStack
   ``rl_anonymous_id`` / ``rl_session``.

These are untrusted input: every value has its control characters removed and is capped
(:data:`MAX_ID_LENGTH`); a value that does not decode is ignored, never an error. They are
used for analytics attribution only, never for authentication. A session whose vendor idle
timeout has passed (PostHog, Amplitude and RudderStack: 30 minutes by default) is not
reported. When PostHog's consent cookie ``__ph_opt_in_out_<token>`` is ``0`` (the visitor
opted out), no browser id is read at all: the request gets a generated id instead.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import unquote

import orjson

__all__ = [
    "ACTIVITY_DIGITS",
    "ACTIVITY_MARK",
    "ACTIVITY_MARK_BYTES",
    "MAX_ID_LENGTH",
    "SESSION_IDLE_SECONDS",
    "BrowserIds",
    "Shortcut",
    "NEVER",
    "activity_room",
    "activity_span",
    "parse_cookie_header",
    "read_browser_ids",
    "sdk_cookies",
    "read_browser_ids_until",
    "read_ids",
    "read_request_ids",
    "read_request_ids_from",
    "sanitize",
]

#: Longest id kept; longer values are cut (vendors' ids are UUIDs of 36-46 characters).
MAX_ID_LENGTH: Final = 200
#: Longest cookie value decoded; larger values are ignored rather than parsed.
MAX_COOKIE_LENGTH: Final = 8192
#: The browser SDKs' default session idle timeout (PostHog, Amplitude, RudderStack).
SESSION_IDLE_SECONDS: Final = 30 * 60
#: Decoded PostHog / Mixpanel cookie values kept, per process, by their raw text: the
#: requests of one page share their cookies, and decoding one is most of reading it.
DECODED_COOKIES_KEPT: Final = 256

_a2b_qp = binascii.a2b_qp
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


#: ``(anonymous id, session id, when that session's idle timeout passes)`` of one source;
#: the time is :data:`NEVER` for a session that is not judged by time (or no session).
Found = tuple["str | None", "str | None", float]
#: ``(headers, cookies, now) -> Found`` of one source.
Reader = Callable[[Mapping[str, str], Mapping[str, str], "float | None"], Found]
NEVER: Final = float("inf")


@dataclasses.dataclass(frozen=True)
class BrowserIds:
    """What a request tells about the browser: ids and where they came from."""

    anonymous_id: str | None = None
    session_id: str | None = None
    #: Where ``anonymous_id`` came from (``header:x-fanout-anonymous-id``, ``cookie:posthog``...).
    source: str | None = None
    #: True when the visitor opted out of capturing (PostHog's consent cookie).
    opted_out: bool = False


def sanitize(value: object, limit: int = MAX_ID_LENGTH) -> str | None:
    """``value`` as a clean id: a string without control characters, trimmed and capped."""
    if type(value) is str and len(value) <= limit and value.isprintable():
        return value.strip() or None  # the common case: one C-level scan, no regex
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    cleaned = _CONTROL.sub("", value[: limit * 4]).strip()[:limit]
    return cleaned or None


def parse_cookie_header(header: str) -> dict[str, str]:
    """``Cookie:`` header → {name: raw value}; tolerant of malformed pairs (first one wins).

    Hand-written because ``http.cookies.SimpleCookie`` drops every cookie after one it
    cannot parse, and browsers send values (JSON, ``%``-escapes) it does not expect.
    """
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name or name in out:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out[name] = value
    return out


#: The cookie names (or name prefixes) the readers below look at: PostHog ``ph_<token>_posthog``
#: and its consent cookie, Segment, Mixpanel, Amplitude, RudderStack.
SDK_COOKIE_PREFIXES: Final = (
    "ph_",
    "__ph_opt_in_out_",
    "ajs_anonymous_id",
    "mp_",
    "AMP_",
    "rl_anonymous_id",
    "rl_session",
)


def sdk_cookies(header: str) -> dict[str, str]:
    """The browser SDKs' cookies of a ``Cookie:`` header, and no other, as
    :func:`parse_cookie_header` reads them.

    A site's header often carries tens of cookies (its session, CSRF, consent, A/B tests)
    and fanout reads a few: each pair is only checked for a known name prefix (one C call)
    and the rest skipped unparsed, which halves the cost of a 20-cookie header. The result
    equals ``parse_cookie_header(header)`` without the names outside
    :data:`SDK_COOKIE_PREFIXES` (a property test checks it).
    """
    out: dict[str, str] = {}
    for part in header.split(";"):
        part = part.lstrip()
        if not part.startswith(SDK_COOKIE_PREFIXES):
            continue
        name, sep, value = part.partition("=")
        name = name.rstrip()
        if sep and name not in out:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            out[name] = value
    return out


def read_browser_ids(
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    *,
    now: float | None = None,
) -> BrowserIds:
    """The browser's ids from lower-cased ``headers`` and raw ``cookies``."""
    return read_browser_ids_until(headers, cookies, now=now)[0]


def read_browser_ids_until(
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    *,
    now: float | None = None,
) -> tuple[BrowserIds, float]:
    """:func:`read_browser_ids`, and the time (``time.time()`` scale) until which reading
    the same headers and cookies again gives the same ids: the first idle timeout of a
    session that was found live (:data:`NEVER` if none). A session found over stays over,
    so the result can be kept per raw ``Cookie`` header until then.
    """
    anonymous_id, session_id, source, opted_out, until = read_ids(headers, cookies, now)
    if opted_out:
        return _OPTED_OUT, NEVER
    if anonymous_id is None and session_id is None:
        return _NO_IDS, until
    return BrowserIds(anonymous_id=anonymous_id, session_id=session_id, source=source), until


def read_ids(
    headers: Mapping[str, str], cookies: Mapping[str, str], now: float | None = None
) -> tuple[str | None, str | None, str | None, bool, float]:
    """:func:`read_browser_ids_until` as a plain tuple: ``(anonymous id, session id,
    source, opted out, until)``, for the middleware, which read it for every request that
    tracks and need not build a :class:`BrowserIds` each time."""
    id_headers = _has_id_header(headers)
    if not cookies:
        if not id_headers:
            return _NOTHING  # most requests of a server without a browser SDK
    elif _opted_out(cookies):
        return _NOTHING_OPTED_OUT
    # Sources are read lazily, in order: most requests stop at the first one.
    anonymous_id = source_of = own_session = first_session = None
    until = NEVER
    for source, reader in _SOURCES[id_headers, bool(cookies)]:
        try:
            anon, session, expires = reader(headers, cookies, now)
        except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
            continue  # a malformed cookie is ignored: it is the browser's, not ours
        if expires < until:
            until = expires
        if anonymous_id is None and anon is not None:
            anonymous_id, source_of, own_session = anon, source, session
        if first_session is None:
            first_session = session
        if anonymous_id is not None and (own_session is not None or first_session is not None):
            break
    session_id = own_session if own_session is not None else first_session
    return anonymous_id, session_id, source_of, False, until


#: ``(PostHog value, where it starts in the header, its JSON text if unescaped in C)``:
#: what the shortcut of :func:`read_request_ids_from` read its ids from.
Shortcut = tuple[str, int, "bytes | None"]


def read_request_ids(
    headers: Mapping[str, str], cookie: str | None, now: float | None = None
) -> tuple[str | None, str | None, float]:
    """``(anonymous id, session id, until)`` of :func:`read_ids` for a request's lower-cased
    ``headers`` and raw ``Cookie`` header: the middleware's reading, flat.

    The common browser request (no id header, no consent cookie, a PostHog cookie with
    both ids and a live session) is read with a few C calls: a search for PostHog's
    cookie (not a scan of every pair), its value decoded (the other SDKs' cookies are
    not: PostHog's answered both ids first), each id checked with one C call. Anything
    else takes :func:`_read_scanned`, one scan of every SDK cookie, and through it
    :func:`read_ids`, so the result is always the one ``read_ids`` gives (property tests
    hold the three together).
    """
    return read_request_ids_from(headers, cookie, now)[0]


def read_request_ids_from(
    headers: Mapping[str, str], cookie: str | None, now: float | None = None
) -> tuple[tuple[str | None, str | None, float], Shortcut | None]:
    """:func:`read_request_ids`, and when the shortcut read the ids from the PostHog
    cookie alone, ``(its value, where that starts in cookie, the value's JSON text as
    bytes if unescaped in C, else None)``, else ``None``: what :func:`activity_room` would
    otherwise find and read again."""
    if (
        cookie
        and "__ph_opt_in_out_" not in cookie
        and (not headers or not _has_id_header(headers))
    ):
        posthog = _posthog_value(cookie)
        if posthog is not None:
            value, at = posthog
            try:
                data, text = _decoded_uri_json_and_text(value)
            except (ValueError, TypeError, UnicodeError):
                pass
            else:
                found = _posthog_live_in(data, now)
                if found is not None:
                    return found, (value, at, text)
    return _read_scanned(headers, cookie, now), None


def _posthog_value(cookie: str) -> tuple[str, int] | None:
    """The first ``ph_<token>_posthog`` cookie's raw value (the scan's pick, stripped and
    unquoted) in a ``Cookie`` header, and where that value starts in the header, if it is
    within :data:`MAX_COOKIE_LENGTH`; ``None`` leaves the header to the scan."""
    # The leftmost match, if its name starts its pair; a match inside another pair's value
    # takes the scan.
    match = _POSTHOG_PAIR.search(cookie)
    if match is None:
        return None
    start = match.start()
    begins = cookie.rfind(";", 0, start) + 1
    if begins != start and not cookie[begins:start].isspace():
        return None
    start = match.end()
    ends = cookie.find(";", start)  # the value: a C search, not the regex's
    raw = cookie[start : None if ends < 0 else ends]
    value = raw.strip()
    start += len(raw) - len(raw.lstrip())
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
        start += 1
    if len(value) > MAX_COOKIE_LENGTH:
        return None
    return value, start


#: A PostHog cookie pair from its name: ``ph_<token>_posthog`` (``ph_posthog`` included,
#: as the scan's ``startswith``/``endswith`` take it), spaces and ``=``.
_POSTHOG_PAIR: Final = re.compile(r"ph_(?:[^;=]*_)?posthog\s*=")


def _posthog_live(raw: str, now: float | None) -> tuple[str, str, float] | None:
    """PostHog's ``(anonymous id, session id, idle timeout)`` from its raw cookie value,
    when it has both ids and the session is live; else ``None`` (the scan decides)."""
    try:
        data = _decoded_uri_json(raw)
    except (ValueError, TypeError, UnicodeError):
        return None
    return _posthog_live_in(data, now)


def _posthog_live_in(data: dict[str, Any], now: float | None) -> tuple[str, str, float] | None:
    """:func:`_posthog_live` of the decoded value."""
    sesid = data.get("$sesid")
    if type(sesid) is not list or len(sesid) < 2 or not isinstance(sesid[0], (int, float)):
        return None
    ends: float = sesid[0] / 1000 + SESSION_IDLE_SECONDS
    session = sesid[1]
    if session is None or not (time.time() if now is None else now) <= ends:
        return None  # (written so, a NaN time is not live either)
    if type(session) is not str or len(session) > MAX_ID_LENGTH or not session.isprintable():
        session = sanitize(session)
    else:
        session = session.strip() or None
    anon = data.get("distinct_id")
    if type(anon) is str and len(anon) <= MAX_ID_LENGTH and anon.isprintable():
        anon = anon.strip() or None
    else:
        anon = sanitize(anon)
    if anon is None:
        anon = sanitize(data.get("$device_id"))
    if anon is None or session is None:
        return None
    return anon, session, ends


# -- a returning visitor's new activity time ---------------------------------------------
#
# posthog-js rewrites ``$sesid[0]``, the session's last-activity time in ms, in its cookie as
# the visitor's events are captured: a returning visitor's ``Cookie`` header differs from
# one request to the next in those digits only. The middleware keep a reading per header
# with the digits cut out (:func:`activity_span`), once :func:`activity_room` has proven
# that the reading is the same for any digits there but for the session's idle timeout:
# ``(anonymous id, session id, digits / 1000 + SESSION_IDLE_SECONDS)`` while that time has
# not passed, and a full reading once it has.

#: ``"$sesid":[`` as ``encodeURIComponent`` writes it (posthog-js's cookie): the last-activity
#: time follows it.
ACTIVITY_MARK: Final = "%22%24sesid%22%3A%5B"
ACTIVITY_MARK_BYTES: Final = ACTIVITY_MARK.encode()
_ACTIVITY_COMMA_BYTES: Final = b"%2C"
#: Most digits of a last-activity time cut out: ms since 1970 have 13 until the year 2286;
#: times 1 ms apart stay apart as floats divided by 1000 up to 15 (which the proof needs).
ACTIVITY_DIGITS: Final = 15


def activity_span(cookie: str | bytes) -> tuple[int, int] | None:
    """Where the digits of the number after the header's first ``%22%24sesid%22%3A%5B``
    (``"$sesid":[``) lie, when they are 1 to :data:`ACTIVITY_DIGITS` ASCII digits, without a
    leading zero (JSON refuses one), followed by ``%2C`` (``,``); else ``None``.

    Only a place to cut: whether these digits are the PostHog cookie's ``$sesid[0]`` (and
    not, say, those of a nested or an earlier duplicate ``$sesid``) is :func:`activity_room`'s
    to prove.
    """
    if type(cookie) is bytes:
        mark = cookie.find(ACTIVITY_MARK_BYTES)
        if mark < 0:
            return None
        start = mark + len(ACTIVITY_MARK_BYTES)
        end = cookie.find(_ACTIVITY_COMMA_BYTES, start, start + ACTIVITY_DIGITS + 3)
        if end <= start or (cookie[start] == 48 and end - start > 1):  # 48: b"0"
            return None
    else:
        mark = cookie.find(ACTIVITY_MARK)  # type: ignore[arg-type]
        if mark < 0:
            return None
        start = mark + len(ACTIVITY_MARK)
        end = cookie.find("%2C", start, start + ACTIVITY_DIGITS + 3)  # type: ignore[arg-type]
        if end <= start or (cookie[start] == "0" and end - start > 1):
            return None
    digits = cookie[start:end]
    if not (digits.isdigit() and digits.isascii()):  # str.isdigit() takes other scripts'
        return None
    return start, end


def activity_room(
    cookie: str | bytes,
    span: tuple[int, int],
    found: tuple[str | None, str | None, float],
    now: float | None = None,
    *,
    shortcut: Shortcut | None = None,
) -> int:
    """How many digits (at most :data:`ACTIVITY_DIGITS`) may stand at ``span``
    (:func:`activity_span`) of ``cookie`` and read the same as ``found`` but for the
    session's time: for any such digits ``d`` (no leading zero) and no id header,
    :func:`read_request_ids` gives ``(found[0], found[1], int(d) / 1000 +
    SESSION_IDLE_SECONDS)`` while that time has not passed. ``0`` when that is not proven,
    and then nothing may be kept.

    ``found`` must be ``read_request_ids({}, cookie, now)``. The proof: the header reads the
    PostHog shortcut's way (no consent cookie; the digits inside the value of the PostHog
    cookie it picks), so the reading is :func:`_posthog_live` of that value, and the
    digits, which follow ``"$sesid":[`` and precede a ``,`` once unescaped, can only be a
    JSON number, the first of an array under some ``$sesid`` key; so they are either the
    one number the reading reads, top-level ``$sesid[0]``, or a number it never reads
    (nested, or overridden by a later duplicate key). Reading the value again with other
    digits of the same length tells the two apart: only the first moves the time, and by
    exactly the new digits. Everything else the reading depends on lies outside the
    digits: the same header with other digits takes the same path, the same cookie and
    the same decoding to the same JSON object but for that number.

    ``shortcut``, the second item of :func:`read_request_ids_from` when ``found`` is its
    first, says the shortcut read ``found`` from that value: it is not found and read
    again. And when that value's JSON text has no backslash and one ``"$sesid"`` in all,
    it is not read again with other digits either: without a backslash no string holds a
    quote, so that ``"$sesid"`` is a whole string, the only one; the digits follow it as
    ``"$sesid":[``, so it is a key; the reading found a top-level ``$sesid``, so it is this
    one, and the digits are its first number, which no other key overrides. Other digits
    there leave the same JSON object but for that number, read the same way.
    """
    anon, session, until = found
    if anon is None or session is None:
        return 0
    json = None
    if shortcut is None:
        text = cookie.decode("latin-1") if type(cookie) is bytes else cookie
        assert type(text) is str  # noqa: S101 - narrowed for mypy
        if "__ph_opt_in_out_" in text:
            return 0
        posthog = _posthog_value(text)
        if posthog is None:
            return 0
        value, at = posthog
    else:
        value, at, json = shortcut
    start, end = span[0] - at, span[1] - at
    if start < len(ACTIVITY_MARK) or end + 3 > len(value):  # the digits, in the value
        return 0
    digits = value[start:end]
    number = int(digits)
    other = number - 1 if digits[-1] == "9" else number + 1  # same length, no leading zero
    now = time.time() if now is None else now
    ends = number / 1000 + SESSION_IDLE_SECONDS
    other_ends = other / 1000 + SESSION_IDLE_SECONDS
    if until != ends or ends == other_ends:
        return 0
    # (``bytes.find``, not ``in``: ``in`` first tries its operand as an integer, and raises
    # and clears a formatted TypeError for every bytes one.)
    if json is None or json.find(b"\\") >= 0 or json.count(b'"$sesid"') != 1:
        if (
            shortcut is None and _posthog_live(value, now) != found
        ) or _posthog_live(value[:start] + str(other) + value[end:], now) != (
            anon,
            session,
            other_ends,
        ):
            return 0
    return min(ACTIVITY_DIGITS, MAX_COOKIE_LENGTH - (len(value) - len(digits)))


def _read_scanned(
    headers: Mapping[str, str], cookie: str | None, now: float | None
) -> tuple[str | None, str | None, float]:
    """:func:`read_request_ids` by one scan of every SDK cookie of the header
    (:func:`sdk_cookies`), which also settles the consent cookie and finds PostHog's."""
    cookies = sdk_cookies(cookie) if cookie else {}
    if _has_id_header(headers):
        anon, session, _, _, until = read_ids(headers, cookies, now)
        return anon, session, until
    posthog = None
    for name, value in cookies.items():  # the header's order: the first PostHog cookie
        if name[0] == "_":
            if name.startswith("__ph_opt_in_out_") and value.strip() == "0":
                return None, None, NEVER  # opted out: no browser id at all
        elif (
            posthog is None
            and name.startswith("ph_")
            and name.endswith("_posthog")
            and len(value) <= MAX_COOKIE_LENGTH
        ):
            posthog = value
    if not cookies:
        return None, None, NEVER  # nothing to read
    if posthog is not None:
        found = _posthog_live(posthog, now)
        if found is not None:
            return found  # the source loop would stop at PostHog too
    anon, session, _, _, until = read_ids({}, cookies, now)
    return anon, session, until


_NOTHING: Final = (None, None, None, False, NEVER)
_NOTHING_OPTED_OUT: Final = (None, None, None, True, NEVER)
_NO_IDS: Final = BrowserIds()
_OPTED_OUT: Final = BrowserIds(opted_out=True)
#: The headers a source reads ids from (the rest come from cookies).
_ID_HEADERS: Final = (
    "x-fanout-anonymous-id",
    "x-fanout-session-id",
    "x-posthog-distinct-id",
    "x-posthog-session-id",
)


def _has_id_header(headers: Mapping[str, str]) -> bool:
    """Whether a request carries one of :data:`_ID_HEADERS` (spelled out: a generator over
    them cost more than the test, which runs for every request that tracks)."""
    return bool(headers) and (
        "x-fanout-anonymous-id" in headers
        or "x-fanout-session-id" in headers
        or "x-posthog-distinct-id" in headers
        or "x-posthog-session-id" in headers
    )


def _opted_out(cookies: Mapping[str, str]) -> bool:
    for name, value in cookies.items():
        if name.startswith("__ph_opt_in_out_") and value.strip() == "0":
            return True
    return False


def _clock(now: float | None) -> float:
    """The time sessions are judged at: read only by a source that has a session."""
    return time.time() if now is None else now


def _header_pair(anon_header: str, session_header: str) -> Reader:
    def reader(
        headers: Mapping[str, str], cookies: Mapping[str, str], now: float | None
    ) -> Found:
        anon, session = headers.get(anon_header), headers.get(session_header)
        return (
            None if anon is None else sanitize(anon),
            None if session is None else sanitize(session),
            NEVER,
        )

    return reader


# -- the SDKs' cookies ------------------------------------------------------------------


def _cookie_like(cookies: Mapping[str, str], prefix: str, suffix: str) -> str | None:
    """The first cookie named ``<prefix>…<suffix>`` not over the length cap, or ``None``.

    A loop rather than a generator: creating one cost more than the rest of the reader.
    """
    for name, value in cookies.items():
        if name.startswith(prefix) and name.endswith(suffix) and len(value) <= MAX_COOKIE_LENGTH:
            return value
    return None


def _unquote(raw: str) -> str:
    """``urllib.parse.unquote`` for the SDKs' ``encodeURIComponent`` output, in C.

    The stdlib's version decodes escape by escape in Python, and a PostHog or Mixpanel
    cookie is mostly escapes: it was the largest cost of a request. Anything that is not a
    clean ``%XX`` string takes the stdlib path, as does one with characters past ASCII
    (the header's Latin-1 reading of raw bytes, which ``unquote`` keeps as they are where
    this path would read them as UTF-8 along with the escapes).
    """
    if "%" not in raw:
        return raw
    if "\\" not in raw and raw.isascii():
        try:
            text = raw.replace("%", "\\x").encode("latin-1").decode("unicode_escape")
            return text.encode("latin-1").decode("utf-8")
        except (UnicodeError, ValueError):
            pass
    return unquote(raw)


def _json_object(text: str | bytes) -> dict[str, Any]:
    data = orjson.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _clean_qp(raw: str, unescaped: bytes) -> bool:
    """Whether ``binascii.a2b_qp`` read every ``=`` of ``raw`` (``%`` made ``=``; no other
    ``=``, no line break) as a ``=XX`` escape: each one that is not either ends the text
    (dropped: ``raw`` ends with ``%``) or is copied as ``=`` (a ``=`` left in the bytes).
    A ``%3D`` escape also leaves one: refused too, which only sends that value the slow way.
    """
    return unescaped.find(b"=") < 0 and raw[-1:] != "%"  # (find: see activity_room)


def _decoded_uri_json(raw: str) -> dict[str, Any]:
    """:func:`_decoded_uri_json_and_text`'s object."""
    return _decoded_uri_json_and_text(raw)[0]


def _decoded_uri_json_and_text(raw: str) -> tuple[dict[str, Any], bytes | None]:
    """A URL-encoded JSON object cookie (PostHog, Mixpanel), decoded (a new visitor's
    PostHog cookie, read once, so not kept: see :func:`_uri_json_object`), and the JSON
    text it was read from when the common path below unescaped it, else ``None``.

    The common value (ASCII, every ``%`` a ``%XX`` escape, no ``=`` or line break) is
    unescaped by C code: ``%`` becomes ``=`` (one character for one) and
    ``binascii.a2b_qp`` (quoted-printable, whose ``=XX`` is the same escape) gives the bytes
    that orjson reads, with no text built in between: a third of the cost of the
    ``unicode_escape`` round trip it replaces. A ``%`` that is not a ``%XX`` escape
    leaves a ``=`` in the bytes or ends the text, so :func:`_clean_qp` proves every escape
    was one. Then it is exactly ``urllib.parse.unquote``: the bytes are the escapes' bytes
    and the other characters' own, and being UTF-8 as a whole (else orjson refuses them),
    each run of escapes holds whole characters, which is what ``unquote`` decodes run by
    run. Anything else takes ``unquote`` itself (a property
    test holds the two together).
    """
    text = None
    if "%" in raw:
        data = None
        if raw.isascii() and "=" not in raw and "\n" not in raw and "\r" not in raw:
            unescaped = _a2b_qp(raw.replace("%", "="))
            if _clean_qp(raw, unescaped):
                try:
                    data = orjson.loads(unescaped)
                    text = unescaped
                except ValueError:  # not JSON, or not UTF-8: unquote's replacement decides
                    data = None
        if data is None:
            data = orjson.loads(unquote(raw))
    else:
        data = orjson.loads(raw)
    if type(data) is not dict:
        raise ValueError("not a JSON object")
    return data, text


#: The same, kept by raw text: for the readers of each source, which a returning visitor's
#: requests call with the same cookies (the middleware keep their own readings instead).
_uri_json_object: Final = functools.lru_cache(maxsize=DECODED_COOKIES_KEPT)(_decoded_uri_json)


def _posthog(
    headers: Mapping[str, str], cookies: Mapping[str, str], now: float | None
) -> Found:
    """``ph_<token>_posthog``: URL-encoded JSON written by posthog-js.

    ``distinct_id`` is what ``posthog.get_distinct_id()`` returns; ``$sesid`` is
    ``[last activity ms, session id, session start ms]``.
    """
    raw = _cookie_like(cookies, "ph_", "_posthog")
    if raw is None:
        return None, None, NEVER
    data = _uri_json_object(raw)
    anon = sanitize(data.get("distinct_id")) or sanitize(data.get("$device_id"))
    session, until = None, NEVER
    sesid = data.get("$sesid")
    if isinstance(sesid, list) and len(sesid) >= 2 and isinstance(sesid[0], (int, float)):
        ends = sesid[0] / 1000 + SESSION_IDLE_SECONDS
        if _clock(now) <= ends:
            session = sanitize(sesid[1])
            until = ends if session is not None else NEVER
    return anon, session, until


def _segment(
    headers: Mapping[str, str], cookies: Mapping[str, str], now: float | None
) -> Found:
    """``ajs_anonymous_id``: the raw id, or JSON-quoted (``"%22…%22"``) by older versions."""
    raw = cookies.get("ajs_anonymous_id")
    if raw is None or len(raw) > MAX_COOKIE_LENGTH:
        return None, None, NEVER
    text = _unquote(raw)
    if text.startswith('"'):
        text = orjson.loads(text)
    return sanitize(text), None, NEVER


def _mixpanel(
    headers: Mapping[str, str], cookies: Mapping[str, str], now: float | None
) -> Found:
    """``mp_<token>_mixpanel``: URL-encoded JSON; anonymous ids look like ``$device:<uuid>``."""
    raw = _cookie_like(cookies, "mp_", "_mixpanel")
    if raw is None:
        return None, None, NEVER
    data = _uri_json_object(raw)
    return sanitize(data.get("distinct_id")) or sanitize(data.get("$device_id")), None, NEVER


def _amplitude(
    headers: Mapping[str, str], cookies: Mapping[str, str], now: float | None
) -> Found:
    """``AMP_<first 10 characters of the API key>``: base64 of URL-encoded JSON."""
    for name, raw in cookies.items():
        if not name.startswith("AMP_") or name.startswith("AMP_MKTG_"):
            continue
        if len(raw) > MAX_COOKIE_LENGTH:
            continue
        data = _json_object(unquote(base64.b64decode(unquote(raw)).decode("utf-8")))
        session, until = None, NEVER
        sid, last = data.get("sessionId"), data.get("lastEventTime")
        if isinstance(sid, (int, float)) and not isinstance(sid, bool):
            last_ms = last if isinstance(last, (int, float)) else sid
            ends = last_ms / 1000 + SESSION_IDLE_SECONDS
            if _clock(now) <= ends:
                session = sanitize(int(sid))
                until = ends if session is not None else NEVER
        return sanitize(data.get("deviceId")), session, until
    return None, None, NEVER


_RS_PREFIX: Final = "RS_ENC_v3_"


def _rudder_value(raw: str) -> Any:
    text = unquote(raw)
    if not text.startswith(_RS_PREFIX):
        raise ValueError("not a RudderStack v3 cookie")
    return orjson.loads(base64.b64decode(text[len(_RS_PREFIX) :]))


def _rudderstack(
    headers: Mapping[str, str], cookies: Mapping[str, str], now: float | None
) -> Found:
    """``rl_anonymous_id`` / ``rl_session``: ``RS_ENC_v3_`` + base64 of the JSON value."""
    raw = cookies.get("rl_anonymous_id")
    if raw is None or len(raw) > MAX_COOKIE_LENGTH:
        return None, None, NEVER
    anon = sanitize(_rudder_value(raw))
    session, until = None, NEVER
    raw_session = cookies.get("rl_session")
    if raw_session is not None and len(raw_session) <= MAX_COOKIE_LENGTH:
        try:
            info = _rudder_value(raw_session)
        except (ValueError, binascii.Error):
            info = None
        if isinstance(info, dict) and isinstance(info.get("id"), int):
            expires = info.get("expiresAt")
            if not isinstance(expires, (int, float)):
                session = sanitize(info["id"])
            elif _clock(now) * 1000 <= expires:
                session = sanitize(info["id"])
                until = expires / 1000 if session is not None else NEVER
    return anon, session, until


#: Every source, in order of precedence. The cookie readers take the headers too, so that
#: one loop calls them all without a wrapper (they are only called when there are cookies).
_READERS: Final[tuple[tuple[str, Reader], ...]] = (
    ("header:x-fanout-anonymous-id", _header_pair(*_ID_HEADERS[:2])),
    ("header:x-posthog-distinct-id", _header_pair(*_ID_HEADERS[2:])),
    ("cookie:posthog", _posthog),
    ("cookie:segment", _segment),
    ("cookie:mixpanel", _mixpanel),
    ("cookie:amplitude", _amplitude),
    ("cookie:rudderstack", _rudderstack),
)
#: The sources a request can have, by (any id header, any SDK cookie): only those are
#: called, so a request without cookies calls no cookie reader and the reverse.
_SOURCES: Final = {
    (True, True): _READERS,
    (True, False): _READERS[:2],
    (False, True): _READERS[2:],
}
