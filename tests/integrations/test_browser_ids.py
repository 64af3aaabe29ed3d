"""Reading the browser's ids from headers and the browser SDKs' cookies.

Cookie values are built the way each SDK writes them (the real-browser tests in
``test_browser_sdks.py`` check the same readers against the SDKs themselves).
"""

from __future__ import annotations

import base64
import json
import os
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fanout.integrations.browser import (
    MAX_ID_LENGTH,
    NEVER,
    SDK_COOKIE_PREFIXES,
    SESSION_IDLE_SECONDS,
    BrowserIds,
    parse_cookie_header,
    read_browser_ids,
    read_browser_ids_until,
    read_ids,
    read_request_ids,
    read_request_ids_from,
    sanitize,
    sdk_cookies,
)

NOW = 1_760_000_000.0
NOW_MS = int(NOW * 1000)


def js_uri(value: object) -> str:
    """``encodeURIComponent(JSON.stringify(value))``."""
    return quote(json.dumps(value, separators=(",", ":")), safe="-_.!~*'()")


def posthog(distinct_id: str, session: str | None = None, last_ms: int = NOW_MS) -> dict[str, str]:
    value: dict[str, object] = {"distinct_id": distinct_id, "$device_id": distinct_id,
                                "$user_state": "anonymous"}
    if session is not None:
        value["$sesid"] = [last_ms, session, last_ms - 5000]
    return {"ph_phc_abc123_posthog": js_uri(value)}


def amplitude(device_id: str, session_ms: int, last_ms: int) -> dict[str, str]:
    value = {"deviceId": device_id, "sessionId": session_ms, "optOut": False,
             "lastEventTime": last_ms, "lastEventId": 3}
    return {"AMP_0123456789": base64.b64encode(js_uri(value).encode()).decode()}


def rudder(value: object) -> str:
    return "RS_ENC_v3_" + base64.b64encode(json.dumps(value).encode()).decode()


def read(headers=None, cookies=None) -> BrowserIds:
    return read_browser_ids(headers or {}, cookies or {}, now=NOW)


def test_posthog_cookie_gives_distinct_id_and_live_session():
    ids = read(cookies=posthog("0190aaaa-0000-7000-8000-000000000001", "sess-ph"))
    assert ids == BrowserIds("0190aaaa-0000-7000-8000-000000000001", "sess-ph", "cookie:posthog")


def test_posthog_session_past_the_idle_timeout_is_over():
    stale = NOW_MS - (SESSION_IDLE_SECONDS + 1) * 1000
    ids = read(cookies=posthog("d1", "sess-old", last_ms=stale))
    assert (ids.anonymous_id, ids.session_id) == ("d1", None)


def test_posthog_consent_cookie_opted_out_reads_no_id_at_all():
    cookies = {**posthog("d1", "s1"), "ajs_anonymous_id": "seg", "__ph_opt_in_out_phc_abc123": "0"}
    ids = read(headers={"x-fanout-anonymous-id": "hdr"}, cookies=cookies)
    assert ids == BrowserIds(opted_out=True)
    opted_in = read(cookies={**posthog("d1"), "__ph_opt_in_out_phc_abc123": "1"})
    assert opted_in.anonymous_id == "d1"


@pytest.mark.parametrize("raw", ["4f0c7d3e-1111-4222-8333-944445555666",
                                 "%224f0c7d3e-1111-4222-8333-944445555666%22"])
def test_segment_cookie_raw_or_json_quoted(raw):
    ids = read(cookies={"ajs_anonymous_id": raw, "ajs_user_id": "%22u1%22"})
    assert (ids.anonymous_id, ids.source) == ("4f0c7d3e-1111-4222-8333-944445555666", "cookie:segment")


def test_mixpanel_cookie_device_id_form():
    value = {"distinct_id": "$device:19a0c1f2-aaaa", "$device_id": "19a0c1f2-aaaa",
             "$initial_referrer": "$direct", "$initial_referring_domain": "$direct"}
    ids = read(cookies={"mp_0123abcd_mixpanel": js_uri(value)})
    assert (ids.anonymous_id, ids.session_id, ids.source) == (
        "$device:19a0c1f2-aaaa", None, "cookie:mixpanel")


def test_amplitude_cookie_base64_of_uri_encoded_json():
    live = read(cookies=amplitude("amp-device", NOW_MS - 60_000, NOW_MS - 1000))
    assert (live.anonymous_id, live.session_id) == ("amp-device", str(NOW_MS - 60_000))
    stale_ms = NOW_MS - (SESSION_IDLE_SECONDS + 60) * 1000
    stale = read(cookies=amplitude("amp-device", stale_ms, stale_ms))
    assert (stale.anonymous_id, stale.session_id) == ("amp-device", None)


def test_rudderstack_cookies_v3_encoded():
    cookies = {"rl_anonymous_id": rudder("rs-anon"),
               "rl_session": rudder({"id": NOW_MS - 10, "expiresAt": NOW_MS + 60_000,
                                     "timeout": 1_800_000, "autoTrack": True})}
    assert read(cookies=cookies) == BrowserIds("rs-anon", str(NOW_MS - 10), "cookie:rudderstack")
    cookies["rl_session"] = rudder({"id": 5, "expiresAt": NOW_MS - 1})
    assert read(cookies=cookies).session_id is None


def test_precedence_fanout_header_then_posthog_header_then_cookies():
    cookies = {**posthog("ph-cookie", "ph-sess"), "ajs_anonymous_id": "seg"}
    both = read({"x-fanout-anonymous-id": "fan", "x-posthog-distinct-id": "ph-hdr",
                 "x-posthog-session-id": "ph-hdr-sess"}, cookies)
    # the anonymous id comes from the first source; its session from the first that has one
    assert (both.anonymous_id, both.session_id, both.source) == (
        "fan", "ph-hdr-sess", "header:x-fanout-anonymous-id")
    assert read({"x-posthog-distinct-id": "ph-hdr"}, cookies).anonymous_id == "ph-hdr"
    assert read({}, cookies).anonymous_id == "ph-cookie"
    assert read({}, {"ajs_anonymous_id": "seg", **amplitude("amp", NOW_MS, NOW_MS)}).anonymous_id == "seg"


def test_untrusted_values_are_sanitised_and_capped():
    ids = read({"x-fanout-anonymous-id": "ab\x00c\r\nd\x7f\u2028e  ",
                "x-fanout-session-id": "s" * 5000})
    assert ids.anonymous_id == "abcde"
    assert ids.session_id == "s" * MAX_ID_LENGTH
    assert sanitize("\x00\x01") is None and sanitize(42) == "42" and sanitize(["x"]) is None


@pytest.mark.parametrize("cookies", [
    {"ph_phc_x_posthog": "%7Bnot json"},
    {"ph_phc_x_posthog": js_uri(["a", "list"])},
    {"mp_t_mixpanel": js_uri({"distinct_id": {"nested": 1}})},
    {"AMP_0123456789": "!!!not base64"},
    {"rl_anonymous_id": "RS_ENC_v3_%%%"},
    {"rl_anonymous_id": "plain-not-encoded"},
    {"ajs_anonymous_id": "%22unterminated"},
    {"ajs_anonymous_id": "x" * 10_000},
])
def test_malformed_or_oversized_cookies_are_ignored_not_errors(cookies):
    assert read(cookies=cookies).anonymous_id is None


def test_parse_cookie_header_tolerates_values_simplecookie_rejects():
    header = 'a=1; ph_phc_x_posthog=%7B%22distinct_id%22%3A%22d%22%7D; broken; b="q"; a=2; j={"x":1}'
    assert parse_cookie_header(header) == {
        "a": "1", "ph_phc_x_posthog": "%7B%22distinct_id%22%3A%22d%22%7D", "b": "q", "j": '{"x":1}'}


def test_no_id_anywhere():
    assert read({"user-agent": "x"}, {"other": "1"}) == BrowserIds()


def test_a_memoised_cookie_is_still_judged_at_the_time_of_each_request():
    """Decoding is kept per raw cookie text; the session's idle timeout is not."""
    cookies = posthog("d-memo", "s-memo")
    assert read(cookies=cookies).session_id == "s-memo"
    later = read_browser_ids({}, cookies, now=NOW + SESSION_IDLE_SECONDS + 1)
    assert (later.anonymous_id, later.session_id) == ("d-memo", None)
    assert read(cookies=cookies).session_id == "s-memo"


def test_no_cookie_and_no_id_header_reads_nothing_else():
    assert read({"user-agent": "x", "referer": "https://a.example/"}, {}) == BrowserIds()
    assert read({"x-posthog-session-id": "s-only"}, {}) == BrowserIds(session_id="s-only")


def test_read_until_names_the_first_live_session_timeout_and_never_for_the_rest():
    """The middleware keep ids per Cookie header until this time, and no longer."""
    last_ms = NOW_MS - 60_000
    ids, until = read_browser_ids_until({}, posthog("d-until", "s-until", last_ms), now=NOW)
    assert ids.session_id == "s-until"
    assert until == last_ms / 1000 + SESSION_IDLE_SECONDS
    over, until = read_browser_ids_until({}, posthog("d-until", "s-until", last_ms),
                                         now=until + 1)
    assert (over.session_id, until) == (None, NEVER)  # over stays over: kept for good
    amp, amp_until = read_browser_ids_until({}, amplitude("dev-u", NOW_MS - 5000, NOW_MS), now=NOW)
    assert (amp.session_id, amp_until) == (str(NOW_MS - 5000), NOW + SESSION_IDLE_SECONDS)
    rl = {"rl_anonymous_id": rudder("rl-u"),
          "rl_session": rudder({"id": 123, "expiresAt": NOW_MS + 9000})}
    assert read_browser_ids_until({}, rl, now=NOW)[1] == (NOW_MS + 9000) / 1000
    assert read_browser_ids_until({"x-fanout-session-id": "h"}, {}, now=NOW)[1] == NEVER
    assert read_browser_ids_until({}, {"__ph_opt_in_out_t": "0"}, now=NOW) == (
        BrowserIds(opted_out=True), NEVER)


def _calls_of(monkeypatch: pytest.MonkeyPatch, name: str) -> list[object]:
    """The arguments of every call the request reader makes to its module's ``name``."""
    from fanout.integrations import _request

    calls: list[object] = []
    real = getattr(_request, name)

    def counted(*a: object, **k: object) -> object:
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(_request, name, counted)
    return calls


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every full reading of a request's ids (``read_request_ids_from``) the reader makes."""
    return _calls_of(monkeypatch, "read_request_ids_from")


def test_request_reader_keeps_reads_bounded_from_their_second_time_and_while_sessions_live(
    reads: list[object],
) -> None:
    """A reading is kept from the second time a request is read (a new visitor, seen once,
    costs the stores nothing), bounded, and only while the session it found lives."""
    import time

    from fanout._events import CheckedDict
    from fanout.integrations._request import RequestReader, request_values

    reader = RequestReader(kept=2)
    live_ms = int(time.time() * 1000)
    cookie = "; ".join(f"{k}={v}" for k, v in posthog("d-kept", "s-kept", live_ms).items())
    headers = {"cookie": cookie, "user-agent": "UA", "host": "shop.example"}
    args = {"client_ip": "203.0.113.9", "scheme": "https", "host": None, "path": "/a",
            "query": "utm_source=x"}
    expected = request_values(headers, **args)
    reads.clear()
    anon, values, until = reader.read(headers, **args)
    assert (anon, values) == expected  # the same reading
    assert type(values) is CheckedDict and values["session_id"] == "s-kept"
    assert until == live_ms / 1000 + SESSION_IDLE_SECONDS
    # Its live PostHog session is proven on its first reading: recalled from the second.
    assert reader.read(headers, **args)[:2] == (anon, values) and len(reads) == 1
    assert reader.read(headers, **args)[:2] == (anon, values) and len(reads) == 1  # kept
    reader.remember("k1", (anon, values), until)
    assert reader.recall("k1") is None  # given once: only noted
    reader.remember("k1", (anon, values), until)
    assert reader.recall("k1") == (anon, values)
    for _ in range(2):
        reader.remember("k-over", (anon, values), time.time() - 1)  # its session timed out
    assert reader.recall("k-over") is None
    for _ in range(2):
        reader.remember("k3", (anon, values), NEVER)
    assert reader.recall("k1") is None and reader.recall("k3") == (anon, values)  # bounded
    nothing = RequestReader(kept=0)  # keeps nothing, and reads as well
    for _ in range(3):
        assert nothing.read(headers, **args)[:2] == expected
        nothing.remember("k", (anon, values), until)
    assert nothing.recall("k") is None


def test_new_visitors_of_one_page_from_their_own_addresses_share_its_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """New visitors come each from an address of its own: the page's values (user agent,
    URL, referrer, campaign) are read once for them all, and each request's context holds
    its own address (the first of a trusted ``X-Forwarded-For``), exactly as a fresh
    reading gives it."""
    from fanout.integrations._request import RequestReader, request_values

    parts = [_calls_of(monkeypatch, name)
             for name in ("_browser_values", "_location_values", "_referrer_values")]
    reader = RequestReader()
    headers = {"user-agent": "UA", "host": "shop.example", "referer": "https://news.example/"}
    args = {"scheme": "https", "host": None, "path": "/a", "query": "utm_source=x"}
    for n in range(6):
        ip = f"198.51.100.{n}"
        read = reader.read(headers, client_ip=ip, **args)[:2]
        assert read == request_values(headers, client_ip=ip, **args)
        assert read[1]["ip"] == ip and read[1]["campaign"] == {"source": "x"}
    # Each part read by the reader twice (the second time keeps it), then recalled; once
    # per fresh reading above.
    assert [len(calls) for calls in parts] == [2 + 6] * 3
    forwarded = {**headers, "x-forwarded-for": " 192.0.2.7 , 10.0.0.1"}
    for trust, ip in ((True, "192.0.2.7"), (False, "198.51.100.9")):
        read = reader.read(forwarded, client_ip="198.51.100.9", trust_forwarded=trust, **args)
        assert read[:2] == request_values(
            forwarded, client_ip="198.51.100.9", trust_forwarded=trust, **args
        )
        assert read[1]["ip"] == ip
    assert list(reader.read(headers, client_ip=None, **args)[1]) == [
        "user_agent", "url", "path", "campaign", "referrer"]  # no address: none made up


def test_visitors_walking_pages_read_only_what_is_new(monkeypatch: pytest.MonkeyPatch) -> None:
    """A returning visitor on a new page, each referred by the one before (server-rendered
    pages, each tracking a view), shares the parts of its context with others: its browser
    (user agent, locale) is read twice in all, a page's URL and campaign twice for all its
    visitors, a referrer twice for all who come from it. Every reading is a fresh one's."""
    from fanout.integrations._request import RequestReader, request_values

    browsers, locations, referrers = (
        _calls_of(monkeypatch, name)
        for name in ("_browser_values", "_location_values", "_referrer_values")
    )
    reader = RequestReader()
    paths = [f"/products/{n}" for n in range(10)]
    for visitor, agent in enumerate(("UA-1", "UA-2", "UA-3")):
        for n, path in enumerate(paths):
            headers = {
                "user-agent": agent, "accept-language": "en-GB,en;q=0.9",
                "host": "shop.example",
                "referer": f"https://shop.example{paths[n - 1]}" if n else "https://news.example/",
            }
            args = {"client_ip": f"198.51.100.{visitor}", "scheme": "https", "host": None,
                    "path": path, "query": "utm_source=x" if n == 0 else ""}
            read = reader.read(headers, **args)[:2]
            fresh = request_values(headers, **args)
            assert read == fresh and list(read[1]) == list(fresh[1])
    fresh_readings = 3 * 10  # request_values' own, one per request above
    assert len(browsers) == 3 * 2 + fresh_readings  # each visitor's twice, then kept
    assert len(locations) == 10 * 2 + fresh_readings  # by the first two visitors only
    assert len(referrers) == 10 * 2 + fresh_readings


def test_a_thousand_interleaved_sessions_are_each_read_once(reads: list[object]) -> None:
    """A busy worker serves many visitors at once: a thousand sessions, interleaved, each
    visitor's cookie with a new activity time on each of its requests, are each read in
    full once (their first request), then recalled, as a fresh reading gives them."""
    import time

    from fanout.integrations._request import REQUESTS_KEPT, RequestReader

    assert REQUESTS_KEPT >= 1000
    now_ms = int(time.time() * 1000)
    reader = RequestReader()

    def key(visitor: int, request: int) -> tuple[object, ...]:
        value = {"distinct_id": f"d-{visitor}", "$device_id": f"d-{visitor}",
                 "$sesid": [now_ms + request, f"s-{visitor}", 5]}
        return ("ph_phc_t_posthog=" + js_uri(value), None, None, None, None, None, "UA",
                None, None, "shop.example", f"198.51.{visitor >> 8}.{visitor & 255}",
                "https", None, "/p", "", False)

    for request in range(4):
        for visitor in range(1000):
            ctx = reader.context(key(visitor, request))
            assert ctx.anonymous_id == f"d-{visitor}"
            assert ctx.values["session_id"] == f"s-{visitor}"
    assert len(reads) == 1000  # each session's first request; 3,000 recalled
    sample = key(999, 9)
    reads.clear()
    assert reader.context(sample) == RequestReader().context(sample) and len(reads) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_a_store_is_locked_reads_and_keeps_without_waiting():
    """A child forked while another thread kept a reading inherits that store's lock held,
    by a thread that does not exist there: its requests are read all the same, never wait,
    and are kept there (the child's stores get new locks); the parent keeps them once its
    lock is free."""
    from _helpers import in_forked_child

    from fanout.integrations._request import RequestReader

    reader = RequestReader()
    key = (None, "anon-f", None, None, None, None, "UA", None, None, "h", "203.0.113.9",
           "https", None, "/", "", False)
    locks = [store._lock for store in (reader._raw, reader._ids, reader._browsers,
                                       reader._locations, reader._referrers)]
    for lock in locks:
        lock.acquire()
    try:
        def read() -> list[object]:
            return [reader.context(key).anonymous_id for _ in range(3)]

        def read_and_keep() -> tuple[list[object], bool]:
            return read(), reader._raw.get(key) is not None

        assert in_forked_child(read_and_keep) == repr((["anon-f"] * 3, True))
        assert read() == ["anon-f"] * 3 and reader._raw.get(key) is None  # not kept here
    finally:
        for lock in locks:
            lock.release()
    reader.context(key)
    assert reader._raw.get(key) is not None  # kept, once free


_COOKIE_TEXT = st.lists(
    st.sampled_from(["a", "b", "=", ";", " ", '"', "\t", "\x1c", "\xa0", "_", "ph_", "_posthog",
                     "__ph_opt_in_out_", "ajs_anonymous_id", "mp_", "AMP_", "rl_session",
                     "rl_anonymous_id", "%7B"]),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(_COOKIE_TEXT)
def test_sdk_cookies_reads_the_sdk_cookies_exactly_as_the_full_parse(header):
    """The middleware scan for the SDKs' names only: it must agree with parsing every pair."""
    full = parse_cookie_header(header)
    wanted = {k: v for k, v in full.items() if k.startswith(SDK_COOKIE_PREFIXES)}
    found = sdk_cookies(header)
    assert found == wanted
    for prefix in SDK_COOKIE_PREFIXES:  # header order within each name family
        assert [k for k in found if k.startswith(prefix)] == [
            k for k in wanted if k.startswith(prefix)]


def test_sdk_cookies_skips_the_site_s_own_cookies():
    header = ('sessionid=abc; graph_x=1; csrftoken=z; ph_phc_t_posthog=%7B%7D; x=ph_y=2; '
              'ajs_anonymous_id="q"; AMP_MKTG_0123456789=m; AMP_0123456789=a')
    assert sdk_cookies(header) == {
        "ph_phc_t_posthog": "%7B%7D", "ajs_anonymous_id": "q",
        "AMP_MKTG_0123456789": "m", "AMP_0123456789": "a"}


_ID = st.sampled_from(["d-1", " d-2 ", "", "\x00\x1b", "x" * (MAX_ID_LENGTH + 5), "é-3", None, 42, True])
_POSTHOG_VALUE = st.one_of(
    st.builds(
        lambda anon, device, sesid: {"distinct_id": anon, "$device_id": device, "$sesid": sesid},
        _ID,
        _ID,
        st.one_of(
            st.none(),
            st.lists(st.one_of(_ID, st.sampled_from([NOW_MS, NOW_MS - 10**8, 1.5e12])),
                     max_size=3),
            st.tuples(st.sampled_from([NOW_MS, NOW_MS - 10**8, True]), _ID).map(list),
        ),
    ),
    st.sampled_from([[1, 2], "text", 7]),
)


_REQUEST_COOKIE = st.lists(
    st.one_of(
        _POSTHOG_VALUE.map(lambda v: "ph_phc_abc123_posthog=" + js_uri(v)),
        st.sampled_from([
            "ph_phc_abc123_posthog=%7Bbad", "__ph_opt_in_out_phc_abc123=0",
            "__ph_opt_in_out_phc_abc123=1", "ajs_anonymous_id=seg-1", "ajs_anonymous_id=%22seg-2%22",
            "mp_tok_mixpanel=" + js_uri({"distinct_id": "$device:mp-1"}),
            "rl_anonymous_id=" + rudder("rl-1"),
            "rl_session=" + rudder({"id": NOW_MS, "expiresAt": NOW_MS + 60_000}),
            "csrftoken=abc", "ph_other=1",
        ]),
    ),
    max_size=5,
).map("; ".join)


@settings(max_examples=400, deadline=None)
@given(_REQUEST_COOKIE, st.sampled_from([{}, {"x-fanout-anonymous-id": "h-1"},
                                         {"x-posthog-session-id": "hs-1"}, {"user-agent": "u"}]))
def test_the_middleware_s_flat_reading_gives_what_the_source_loop_gives(cookie, headers):
    """``read_request_ids`` (the middleware's shortcut: PostHog decoded, nothing after it)
    must agree with ``read_ids`` (every source in order) on ids, session and time."""
    anon, session, _, _, until = read_ids(headers, sdk_cookies(cookie), NOW)
    assert read_request_ids(headers, cookie or None, NOW) == (anon, session, until)


@settings(max_examples=300, deadline=None)
@given(_COOKIE_TEXT, _REQUEST_COOKIE)
def test_the_flat_reading_scans_a_malformed_header_as_sdk_cookies_does(noise, cookie):
    """Its own scan of the header (inlined) must find what ``sdk_cookies`` finds."""
    header = noise + cookie + noise
    anon, session, _, _, until = read_ids({}, sdk_cookies(header), NOW)
    assert read_request_ids({}, header or None, NOW) == (anon, session, until)


def test_the_flat_reading_decodes_no_cookie_after_a_posthog_cookie_with_both_ids(monkeypatch):
    """Segment's, Mixpanel's... cookies are not decoded when PostHog's gave both ids: the
    source loop (the only code that reads them) must not run."""
    import fanout.integrations.browser as browser

    def refuse(*args: object) -> None:
        raise AssertionError("the source loop ran")

    cookie = "; ".join(f"{k}={v}" for k, v in posthog("ph-1", "s-1").items())
    cookie += "; ajs_anonymous_id=seg-1; mp_tok_mixpanel=%7B%7D; rl_anonymous_id=x"
    monkeypatch.setattr(browser, "read_ids", refuse)
    assert read_request_ids({}, cookie, NOW) == (
        "ph-1", "s-1", NOW_MS / 1000 + SESSION_IDLE_SECONDS)


_NEAR_ESCAPES = st.lists(
    st.sampled_from(["a", "%", "%4", "%g1", "%%41", "=", "%0A", "\n", "\r", "\\", "%5C", "é",
                     "%C3%A9", "%C3", "%E2%82", "%ff", "%FF", "%20", "+", "%3D", "%7B", "%22",
                     "=41", "%zz", "%\n", "%\r\n"]),
    max_size=12,
).map("".join)
_ESCAPED_OBJECT = st.dictionaries(
    st.text(max_size=8), st.one_of(st.text(max_size=12), st.integers()), max_size=4
).map(lambda v: quote(json.dumps(v), safe=""))
_ESCAPED_JSON = st.one_of(
    # Real cookies: any JSON object, escaped as encodeURIComponent does.
    _ESCAPED_OBJECT,
    # ... followed by text near escapes (a trailing '%', '=XX'...).
    st.tuples(_ESCAPED_OBJECT, _NEAR_ESCAPES).map("".join),
    # An escaped object whose string holds text near escapes: bad ones, '=', line breaks,
    # backslashes, non-ASCII, bytes that are not UTF-8.
    _NEAR_ESCAPES.map(lambda text: "%7B%22k%22%3A%22" + text + "%22%7D"),
    _NEAR_ESCAPES,
)


@settings(max_examples=600, deadline=None)
@given(st.one_of(_NEAR_ESCAPES, st.text(max_size=4).map(lambda t: quote(t, safe="")),
                 st.tuples(_NEAR_ESCAPES, st.sampled_from(["\xc3\xa9", "\xe9", "\xc3"]),
                           _NEAR_ESCAPES).map("".join)))
@example("\xc3\xa9%2D1")  # UTF-8 bytes read as Latin-1, beside an escape
@example("%C3\xa9")
def test_the_segment_cookie_unescape_is_unquote(raw):
    """Segment's cookie is unescaped in C where that gives what ``urllib.parse.unquote``
    gives, for any text a ``Cookie`` header can hold (its bytes read as Latin-1): a
    value's reading never depends on whether an escape appears elsewhere in it."""
    from urllib.parse import unquote

    from fanout.integrations.browser import _unquote

    assert _unquote(raw) == unquote(raw)


@settings(max_examples=600, deadline=None)
@given(_ESCAPED_JSON)
@example("%7B%7D%")
@example("%7B%22k%22%3A%22=41%22%7D")
def test_the_cookie_decoder_is_unquote_then_json(raw):
    """The PostHog/Mixpanel cookie decoder unescapes in C where it can prove it gives what
    ``urllib.parse.unquote`` gives: the same object, or the same refusal, for any text."""
    from urllib.parse import unquote

    import orjson

    from fanout.integrations.browser import _decoded_uri_json

    try:
        expected = orjson.loads(unquote(raw))
        assert type(expected) is dict
    except (ValueError, AssertionError):
        with pytest.raises(ValueError):
            _decoded_uri_json(raw)
    else:
        assert _decoded_uri_json(raw) == expected


_POSTHOG_NEAR = st.tuples(_NEAR_ESCAPES, _NEAR_ESCAPES, _NEAR_ESCAPES).map(
    lambda parts: (
        "%7B%22distinct_id%22%3A%22d" + parts[0] + "%22%2C%22%24sesid%22%3A%5B" + str(NOW_MS)
        + "%2C%22s" + parts[1] + "%22%5D%7D" + parts[2]
    )
)


def _posthog_near(anon: str, session: str = "", tail: str = "") -> str:
    return (f"%7B%22distinct_id%22%3A%22d{anon}%22%2C%22%24sesid%22%3A%5B{NOW_MS}%2C%22s"
            f"{session}%22%5D%7D{tail}")


@settings(max_examples=600, deadline=None)
@given(st.one_of(_POSTHOG_NEAR, _POSTHOG_VALUE.map(js_uri)))
@example(_posthog_near("=41"))  # quoted-printable's escape, not a URI one
@example(_posthog_near("", tail="%"))  # a trailing '%' (dropped by a2b_qp)
@example(_posthog_near("%3D"))  # an escaped '=': the slow way, same ids
@example(_posthog_near("%4", "%zz"))
@example(_posthog_near("%0A", "\n"))
def test_the_posthog_shortcut_decodes_as_unquote_then_json(raw):
    """The PostHog shortcut's own decoding (the common value, inlined) must read what the
    PostHog source reads after ``urllib.parse.unquote`` and JSON: ids near bad escapes,
    ``=``, line breaks and a trailing ``%`` either read the same or go the slow way."""
    from fanout.integrations.browser import _posthog_live

    anon, session, _, _, until = read_ids({}, {"ph_phc_abc123_posthog": raw}, NOW)
    # Both ids from a live session, or None: the scan decides the rest.
    expected = (anon, session, until) if anon is not None and session is not None else None
    assert _posthog_live(raw, NOW) == expected


# -- a returning visitor's new activity time (posthog-js rewrites $sesid[0]) -------------

_SESID = "%22%24sesid%22%3A%5B"  # "$sesid":[ as encodeURIComponent writes it


def _js_uri_text(text: str) -> str:
    """``encodeURIComponent`` of JSON text written by hand (duplicate keys, odd spacing)."""
    return quote(text, safe="-_.!~*'()")


def _ph_text(*members: str) -> str:
    return "{" + ",".join(members) + "}"


_LIVE_MS = str(NOW_MS - 60_000)
_MEMBER = st.sampled_from([
    '"distinct_id":"d-1"', '"$device_id":"dev-1"', '"distinct_id":""', '"distinct_id":7',
    f'"$sesid":[{_LIVE_MS},"s-1",{NOW_MS - 90_000}]',  # posthog-js's own
    f'"$sesid":[{_LIVE_MS},"s-2"]',  # a duplicate key: the last one counts
    f'"$sesid":[{NOW_MS - 10**8},"s-old"]',  # over
    f'"$sesid":[ {_LIVE_MS} ,"s-3"]',  # spaces: JSON allows them
    f'"\\u0024sesid":[{_LIVE_MS},"s-4"]',  # the same key, escaped
    f'"x":{{"$sesid":[{_LIVE_MS},"s-nested"]}}',  # nested
    f'"a\\"$sesid":[{_LIVE_MS},"s-5"]',  # a key that ends in "$sesid
    f'"$sesid":[{_LIVE_MS}.0,"s-6"]', f'"$sesid":[0{_LIVE_MS},"s-7"]',  # not an int / not JSON
    f'"$sesid":[{"9" * 20},"s-8"]', f'"$sesid":[1{_LIVE_MS}e0,"s-9"]', '"$sesid":[0,"s-0"]',
    f'"$sesid":[{_LIVE_MS},null]', f'"$sesid":[{_LIVE_MS},"s\\u0000"]', '"k":"%22%24sesid"',
])
_POSTHOG_TEXT = st.lists(_MEMBER, min_size=1, max_size=5).map(lambda m: _ph_text(*m))
_ACTIVITY_COOKIE = st.tuples(
    st.lists(st.sampled_from([
        "csrftoken=abc", "ajs_anonymous_id=seg-1", "__ph_opt_in_out_phc_t=0",
        "ph_phc_first_posthog=" + js_uri({"distinct_id": "first", "$sesid": [NOW_MS, "sf"]}),
        "x=" + _SESID + "123%2C", "é=\xa0", "mp_t_mixpanel=" + js_uri({"distinct_id": "mp"}),
    ]), max_size=2),
    _POSTHOG_TEXT.map(_js_uri_text),
    st.sampled_from(["", " ", '"', "\x1c"]),
    st.lists(st.sampled_from(["rl_anonymous_id=" + rudder("rl-1"), "x=1", "ph_z_posthog=%7B%7D"]),
             max_size=2),
).map(lambda p: "; ".join([*p[0], f"ph_phc_t_posthog={p[2]}{p[1]}{p[2]}", *p[3]]))
_DIGITS = st.one_of(
    st.integers(0, 10**15).map(str),
    st.integers(NOW_MS - 2 * 10**6, NOW_MS + 10**6).map(str),
    st.sampled_from(["", "0", "00", "01", "9" * 16, "1" * 40, "١٢", "²", "1 ", "-1", "1.5"]),
)


@settings(max_examples=500, deadline=None)
@given(_ACTIVITY_COOKIE, st.lists(_DIGITS, min_size=1, max_size=4))
@example(f"ph_phc_t_posthog={_js_uri_text(_ph_text(chr(34) + 'distinct_id' + chr(34) + ':1'))}",
         ["5"])
def test_a_new_activity_time_reads_as_the_full_parse_wherever_it_is_proven(cookie, digits_list):
    """The middleware keep a returning visitor's reading by the header without its
    ``$sesid[0]`` digits. Where ``activity_room`` proves it, the full reading of the same
    header with *any* digits there (within the room, while live) must be the kept ids and
    the new time; nested or duplicate ``$sesid`` keys, escapes, spaces, leading zeros,
    huge numbers and other cookies must either read so or not be proven."""
    from fanout.integrations.browser import activity_room, activity_span

    span = activity_span(cookie)
    assert activity_span(cookie.encode("latin-1")) == span  # the ASGI middleware's bytes
    if span is None:
        return
    start, end = span
    found = read_request_ids({}, cookie, NOW)
    room = activity_room(cookie, span, found, NOW)
    assert activity_room(cookie.encode("latin-1"), span, found, NOW) == room
    # The middleware's way: the value the shortcut read the ids from, not found again.
    read, shortcut = read_request_ids_from({}, cookie, NOW)
    assert read == found
    if shortcut is None:
        assert room == 0  # not read the shortcut's way: never proven
    else:
        assert shortcut[0] == cookie[shortcut[1] : shortcut[1] + len(shortcut[0])]
        assert activity_room(cookie, span, found, NOW, shortcut=shortcut) == room
    if not room:
        return
    anon, session, _ = found
    for digits in digits_list:
        changed = cookie[:start] + digits + cookie[end:]
        respan = activity_span(changed)
        if respan is None or len(digits) > room:
            continue  # the middleware read it in full
        assert respan == (start, start + len(digits))
        ends = int(digits) / 1000 + SESSION_IDLE_SECONDS
        if NOW <= ends:
            assert read_request_ids({}, changed, NOW) == (anon, session, ends)


def test_the_activity_time_is_proven_only_where_it_is_the_session_s_own():
    from fanout.integrations.browser import activity_room, activity_span

    def room(*members: str) -> int:
        cookie = "ph_phc_t_posthog=" + _js_uri_text(_ph_text(*members))
        span = activity_span(cookie)
        assert span is not None
        return activity_room(cookie, span, read_request_ids({}, cookie, NOW), NOW)

    live = f'"$sesid":[{_LIVE_MS},"s-1"]'
    assert room('"distinct_id":"d"', live) == 15
    assert room('"distinct_id":"d"', live, f'"$sesid":[{_LIVE_MS},"s-2"]') == 0  # overridden
    assert room('"distinct_id":"d"', f'"x":{{{live}}}', f'"$sesid":[{_LIVE_MS},"s-2"]') == 0
    assert room('"distinct_id":"d"', f'"a\\"$sesid":[{_LIVE_MS},"s"]', live) == 0
    assert room('"distinct_id":"d"', '"\\u0024sesid":[1,"s"]', live) == 15  # the last counts
    assert room(live) == 0  # no anonymous id: the scan decides
    assert room('"distinct_id":"d"', f'"$sesid":[{NOW_MS - 10**8},"s"]') == 0  # over


def test_a_returning_visitor_with_a_new_activity_time_is_recalled_while_live(
    reads: list[object],
) -> None:
    """The reader recalls the ids of a visitor whose cookie only has a new last-activity
    time (from its session's second request: the first reading proves it), on any page,
    the same as a fresh reading, and reads in full one whose new time is over."""
    import time

    from fanout.integrations._request import RequestReader

    now_ms = int(time.time() * 1000)

    def key(last_ms: int, path: str = "/a") -> tuple[object, ...]:
        value = {"distinct_id": "d-a", "$device_id": "d-a", "$sesid": [last_ms, "s-a", 5]}
        cookie = "ph_phc_t_posthog=" + js_uri(value) + "; x=1"
        return (cookie, None, None, None, None, None, "UA", None, None, "shop.example",
                "203.0.113.9", "https", None, path, "", False)

    reader = RequestReader()
    first = [reader.context(key(now_ms + i, f"/{i % 2}")) for i in range(5)]
    assert len(reads) == 1  # the session's first reading; then recalled
    assert first == [RequestReader().context(key(now_ms + i, f"/{i % 2}")) for i in range(5)]
    assert first[4].values["session_id"] == "s-a" and first[4].anonymous_id == "d-a"
    assert first[4].values["path"] == "/0" and first[3].values["path"] == "/1"
    over = key(now_ms - (SESSION_IDLE_SECONDS + 60) * 1000)
    assert reader.context(over) == RequestReader().context(over)
    assert "session_id" not in reader.context(over).values
    asgi_key = (key(now_ms)[0].encode(), *key(now_ms)[1:])  # type: ignore[union-attr]
    assert reader.context(asgi_key) == RequestReader().context(asgi_key)


def test_a_new_activity_time_on_a_page_read_before_recalls_the_whole_context(
    reads: list[object],
) -> None:
    """Once a session is proven (at its first reading), a request of the page it was last
    read on whose cookie only has a new last-activity time gets the context kept for it
    (the same object, nothing read again), while the new time is live; a time that is over
    reads in full, another page gets its own context, and an id header is read in full."""
    import time

    from fanout.integrations._request import RequestReader

    now_ms = int(time.time() * 1000)

    def key(last_ms: int, raw: bool) -> tuple[object, ...]:
        value = {"distinct_id": "d-c", "$device_id": "d-c", "$sesid": [last_ms, "s-c", 5]}
        cookie = "ph_phc_t_posthog=" + js_uri(value) + "; x=1"
        return (cookie.encode() if raw else cookie, None, None, None, None, None, "UA", None,
                None, "shop.example", "203.0.113.9", "https", None, "/p", "", False)

    for raw in (False, True):
        reader = RequestReader()
        reads.clear()
        first, second = reader.context(key(now_ms, raw)), reader.context(key(now_ms + 1, raw))
        later = [reader.context(key(now_ms + 1000 * i, raw)) for i in range(2, 7)]
        assert len(reads) == 1  # the first reading only
        # Proven at the first reading, the page's context kept with the visitor there:
        assert all(ctx is first for ctx in [second, *later])
        fresh = RequestReader().context(key(now_ms + 6000, raw))
        assert first == second == later[0] == later[-1] == fresh
        assert fresh.values["session_id"] == "s-c" and fresh.anonymous_id == "d-c"
        over = key(now_ms - (SESSION_IDLE_SECONDS + 60) * 1000, raw)
        assert reader.context(over) == RequestReader().context(over)
        assert "session_id" not in reader.context(over).values
        other = (*key(now_ms + 7, raw)[:13], "/q", "", False)  # another page: its own
        assert reader.context(other) == RequestReader().context(other)
        assert reader.context(other).values["path"] == "/q"
        headed = (key(now_ms + 8, raw)[0], "anon-h", *key(now_ms + 8, raw)[2:])
        reads.clear()
        assert reader.context(headed) == RequestReader().context(headed)
        assert len(reads) == 2 and reader.context(headed).anonymous_id == "anon-h"


def test_a_returning_visitor_walking_pages_reads_its_own_values_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A returning visitor walking pages, its PostHog cookie with a new activity time on
    each: its session, address and browser are read once (with its first request) and
    kept with it; read again only when its address or browser changes. Its page's context
    is kept too: the same page again, with another new time, is the same object. Every
    reading is a fresh one's, in the same key order."""
    import time

    from fanout.integrations._request import RequestReader

    own = _calls_of(monkeypatch, "_visitor_values")
    now_ms = int(time.time() * 1000)
    reader = RequestReader()

    def key(i: int, path: str, ip: str = "203.0.113.9", agent: str = "UA") -> tuple[object, ...]:
        value = {"distinct_id": "d-w", "$device_id": "d-w", "$sesid": [now_ms + i, "s-w", 5]}
        cookie = ("ph_phc_t_posthog=" + js_uri(value) + "; x=1").encode()
        return (cookie, None, None, None, None, None, agent.encode(), b"en-GB", b"https://r/",
                b"shop.example", ip, "https", None, path, b"", False)

    def read(k: tuple[object, ...]) -> object:
        before = len(own)
        ctx = reader.context(k)
        mine.append(len(own) - before)
        fresh = RequestReader().context(k)
        assert ctx == fresh and list(ctx.values) == list(fresh.values)
        return ctx

    mine: list[int] = []
    walked = [read(key(i, f"/p/{i}")) for i in range(6)]
    assert mine == [1, 0, 0, 0, 0, 0]  # read with the first request, then kept
    assert [ctx.values["path"] for ctx in walked] == [f"/p/{i}" for i in range(6)]
    assert read(key(6, "/p/5")) is walked[5]  # the same page again: the same context
    moved = read(key(7, "/p/6", ip="198.51.100.7"))  # another network: read again
    assert moved.values["ip"] == "198.51.100.7" and mine[-1] == 1
    assert read(key(8, "/p/7", ip="198.51.100.7")).values["ip"] == "198.51.100.7"
    assert mine[-1] == 0
    assert read(key(9, "/p/8", ip="198.51.100.7", agent="UA-2")).values["user_agent"] == "UA-2"
    assert mine[-1] == 1
    assert all(ctx.values["session_id"] == "s-w" for ctx in walked)


def test_a_session_whose_activity_time_is_not_provable_is_tried_once(monkeypatch):
    """A header the proof refuses (here a later duplicate ``$sesid`` overrides the first)
    is read in full on each request, and the proof is not tried again for its session."""
    import time

    from fanout.integrations._request import RequestReader

    tries = _calls_of(monkeypatch, "activity_room")
    now_ms = int(time.time() * 1000)
    reader = RequestReader()
    mine = 0
    for i in range(6):
        text = _ph_text('"distinct_id":"d"', f'"$sesid":[{now_ms + i},"s-x"]',
                        f'"$sesid":[{now_ms},"s-y"]')
        key = ("ph_phc_t_posthog=" + _js_uri_text(text), None, None, None, None, None, "UA",
               None, None, "h", "203.0.113.9", "https", None, "/", "", False)
        fresh = RequestReader().context(key)
        before = len(tries)
        ctx = reader.context(key)
        mine += len(tries) - before
        assert ctx == fresh and ctx.values["session_id"] == "s-y"
    assert mine == 1


@settings(max_examples=300, deadline=None)
@given(_ACTIVITY_COOKIE, st.lists(_DIGITS, min_size=1, max_size=4), st.booleans())
def test_the_reader_recalls_new_activity_times_exactly_as_a_fresh_reading(cookie, digits_list, raw):
    """Whatever the middleware kept for a header (by text, or by the ASGI server's
    bytes), a header with other digits at its last-activity place reads as a fresh
    reader reads it, at the real clock (kept readings are judged at ``time.time()``)."""
    import time

    from fanout.integrations._request import RequestReader
    from fanout.integrations.browser import activity_span

    shift = int(time.time() * 1000) - NOW_MS  # the cookies' times, moved to now
    span = activity_span(cookie)
    if span is not None and cookie[span[0]:span[1]].isdigit():
        moved = str(int(cookie[span[0]:span[1]]) + shift)
        cookie = cookie[:span[0]] + moved + cookie[span[1]:]
        span = activity_span(cookie)
    rest = (None, None, None, None, None, "UA", None, None, "h", "203.0.113.9", "https", None,
            "/", "", False)

    def key(text: str) -> tuple[object, ...]:
        return (text.encode("utf-8") if raw else text, *rest)  # bytes as a server has them

    reader = RequestReader()
    for _ in range(3):
        assert reader.context(key(cookie)) == RequestReader().context(key(cookie))
    if span is None:
        return
    for digits in digits_list:
        if digits.isdigit() and digits.isascii():
            digits = str(int(digits) + shift) if len(digits) > 5 else digits
        changed = key(cookie[:span[0]] + digits + cookie[span[1]:])
        assert reader.context(changed) == RequestReader().context(changed)
