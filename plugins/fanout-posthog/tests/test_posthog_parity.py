"""The same calls through posthog-python and through fanout must make the same request.

Each test drives the official SDK (``sync_mode=True``: it posts before returning) and a
real ``fanout.Client`` with the ``posthog`` provider against the same pytest-httpserver,
decodes both ``/batch/`` requests and compares method, path, auth and the body field by
field. The only differences allowed are the ones in :data:`ALLOWED_DIFFERENCES`, which
``docs/providers/posthog.md`` lists too.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from fanout_posthog import EVENT_ID_NAMESPACE, posthog_uuid
from posthog.version import VERSION as SDK_VERSION
from posthog_support import API_KEY, make_client
from pytest_httpserver import HTTPServer

import fanout
from fanout.testing import RecordedRequest, recorded

#: Where the two requests may differ, and why. Everything else must be equal.
ALLOWED_DIFFERENCES = {
    "header User-Agent": "names the sending library (posthog-python/7.x vs fanout-posthog/…)",
    "body sent_at": "the moment each request left",
    "properties.$lib": "library name: posthog-python vs fanout-posthog",
    "properties.$lib_version": "library version",
    "uuid, timestamp (only when the caller gave none)": "generated per call by each library",
}

CEST = dt.timezone(dt.timedelta(hours=2))


def recent() -> dt.datetime:
    """A live (non-historical) timestamp with microseconds and a non-UTC offset."""
    return (dt.datetime.now(CEST) - dt.timedelta(minutes=3)).replace(microsecond=123456)


def exchange(server: HTTPServer, send: Callable[[], Any]) -> RecordedRequest:
    """Run ``send`` and return the one ``/batch/`` request it caused."""
    before = len(recorded(server, "/batch/"))
    send()
    new = recorded(server, "/batch/")[before:]
    assert len(new) == 1, f"expected one request, got {len(new)}"
    return new[0]


def via_fanout(
    server: HTTPServer, client: fanout.Client, call: Callable[[], Any]
) -> RecordedRequest:
    def send() -> None:
        call()
        report = client.flush(timeout=10)
        assert report.ok, report

    return exchange(server, send)


def assert_same_request(
    sdk_req: RecordedRequest, fan_req: RecordedRequest, *, generated_ids: bool = False
) -> None:
    assert sdk_req.method == fan_req.method == "POST"
    assert sdk_req.path == fan_req.path == "/batch/"
    assert sdk_req.params == fan_req.params == {}
    assert sdk_req.headers["Content-Type"] == fan_req.headers["Content-Type"] == "application/json"
    assert "Authorization" not in sdk_req.headers and "Authorization" not in fan_req.headers
    assert sdk_req.headers["User-Agent"].startswith("posthog-python/")
    assert fan_req.headers["User-Agent"].startswith("fanout-posthog/")

    sdk, fan = sdk_req.json(), fan_req.json()
    assert set(sdk) == set(fan) == {"api_key", "batch", "historical_migration", "sent_at"}
    assert sdk["api_key"] == fan["api_key"] == API_KEY  # auth travels in the body
    assert sdk["historical_migration"] is fan["historical_migration"]
    for body in (sdk, fan):
        assert dt.datetime.fromisoformat(body["sent_at"]).tzinfo is not None
    assert len(sdk["batch"]) == len(fan["batch"]) == 1
    s_msg, f_msg = sdk["batch"][0], fan["batch"][0]

    assert s_msg["properties"].pop("$lib") == "posthog-python"
    assert f_msg["properties"].pop("$lib") == "fanout-posthog"
    assert s_msg["properties"].pop("$lib_version") == SDK_VERSION
    assert f_msg["properties"].pop("$lib_version") == fanout_posthog_version()
    if generated_ids:
        for msg in (s_msg, f_msg):
            uuid.UUID(msg.pop("uuid"))
            assert dt.datetime.fromisoformat(msg.pop("timestamp")).tzinfo is not None
    assert set(s_msg) == set(f_msg)
    for field in s_msg:
        if field == "properties":
            assert set(s_msg[field]) == set(f_msg[field])
            for key, value in s_msg[field].items():
                assert f_msg[field][key] == value, f"properties.{key}"
        else:
            assert f_msg[field] == s_msg[field], field


def fanout_posthog_version() -> str:
    from fanout_posthog import __version__

    return __version__


# -- the calls ------------------------------------------------------------------------------


def test_identify_without_anonymous_id(server, client, sdk_factory):
    ts, eid = recent(), str(uuid.uuid4())
    traits = {"email": "max@example.com", "plan": "pro", "seats": 3}
    sdk = sdk_factory()
    a = exchange(server, lambda: sdk.capture(
        "$identify", distinct_id="user_1", properties={"$set": traits}, timestamp=ts, uuid=eid
    ))
    b = via_fanout(server, client, lambda: client.identify(
        "user_1", traits=traits, timestamp=ts, event_id=eid
    ))
    assert_same_request(a, b)
    msg = b.json()["batch"][0]
    assert msg["event"] == "$identify" and msg["properties"]["$set"] == traits
    assert "$anon_distinct_id" not in msg["properties"]


def test_identify_with_anonymous_id_merges_the_visitor(server, client, sdk_factory):
    ts, eid = recent(), str(uuid.uuid4())
    traits = {"email": "max@example.com"}
    sdk = sdk_factory()
    a = exchange(server, lambda: sdk.capture(
        "$identify",
        distinct_id="user_1",
        properties={"$set": traits, "$anon_distinct_id": "anon_42"},
        timestamp=ts,
        uuid=eid,
    ))
    b = via_fanout(server, client, lambda: client.identify(
        "user_1", anonymous_id="anon_42", traits=traits, timestamp=ts, event_id=eid
    ))
    assert_same_request(a, b)
    props = b.json()["batch"][0]["properties"]
    assert props["$anon_distinct_id"] == "anon_42"


NESTED = {
    "cart": {
        "items": [
            {"sku": "A-1", "price": Decimal("19.99"), "qty": 2,
             "added_at": dt.datetime(2025, 3, 1, 9, 30, 15, 250000, tzinfo=CEST)},
            {"sku": "B-2", "price": Decimal("0.10"), "qty": 1, "gift": True},
        ],
        "coupon": None,
    },
    "order_id": uuid.UUID("6f1d3c1e-8a4b-4c2d-9e0f-112233445566"),
    "total": Decimal("40.08"),
    "paid_at": dt.datetime(2025, 3, 1, 7, 31, 0, 1, tzinfo=dt.timezone.utc),
    "ship_on": dt.date(2025, 3, 4),
    "tags": ["new", "mobile"],
    "score": 0.25,
    # Makes the body large enough that both sides gzip it (fanout from 1 KiB on).
    "note": "lorem ipsum " * 200,
}


def test_track_with_nested_datetime_decimal_uuid_gzipped(server, client, sdk_factory):
    ts, eid = recent(), str(uuid.uuid4())
    sdk = sdk_factory(gzip=True)
    a = exchange(server, lambda: sdk.capture(
        "order.paid", distinct_id="user_1", properties=NESTED, timestamp=ts, uuid=eid
    ))
    b = via_fanout(server, client, lambda: client.track(
        "order.paid", person_id="user_1", properties=NESTED, timestamp=ts, event_id=eid
    ))
    assert a.headers["Content-Encoding"] == b.headers["Content-Encoding"] == "gzip"
    assert_same_request(a, b)
    props = b.json()["batch"][0]["properties"]
    assert props["cart"]["items"][0]["price"] == 19.99
    assert props["cart"]["items"][0]["added_at"] == "2025-03-01T09:30:15.250000+02:00"
    assert props["order_id"] == "6f1d3c1e-8a4b-4c2d-9e0f-112233445566"
    assert b.json()["batch"][0]["timestamp"] == ts.astimezone(dt.timezone.utc).isoformat()


def test_page(server, client, sdk_factory):
    ts, eid = recent(), str(uuid.uuid4())
    url = "https://shop.example.com/cart?step=2"
    sdk = sdk_factory()
    a = exchange(server, lambda: sdk.capture(
        "$pageview",
        distinct_id="user_1",
        properties={
            "$current_url": url,
            "$host": "shop.example.com",
            "$pathname": "/cart",
            "$referrer": "https://search.example/",
            "title": "Your cart",
            "page_name": "Cart",
            "variant": "b",
        },
        timestamp=ts,
        uuid=eid,
    ))
    b = via_fanout(server, client, lambda: client.page(
        url,
        person_id="user_1",
        title="Your cart",
        name="Cart",
        referrer="https://search.example/",
        properties={"variant": "b"},
        timestamp=ts,
        event_id=eid,
    ))
    assert_same_request(a, b)


def test_alias(server, client, sdk_factory):
    ts, eid = recent(), str(uuid.uuid4())
    sdk = sdk_factory()
    a = exchange(server, lambda: sdk.alias(
        previous_id="anon_42", distinct_id="user_1", timestamp=ts, uuid=eid
    ))
    b = via_fanout(server, client, lambda: client.alias(
        "user_1", "anon_42", timestamp=ts, event_id=eid
    ))
    assert_same_request(a, b)
    msg = b.json()["batch"][0]
    assert msg["event"] == "$create_alias" and msg["distinct_id"] == "anon_42"


def test_group(server, client, sdk_factory):
    ts, eid = recent(), str(uuid.uuid4())
    traits = {"name": "Acme", "employees": 11, "founded": dt.date(2001, 1, 1)}
    sdk = sdk_factory()
    a = exchange(server, lambda: sdk.group_identify(
        "company", "acme", traits, timestamp=ts, uuid=eid, distinct_id="user_1"
    ))
    b = via_fanout(server, client, lambda: client.group(
        "company", "acme", person_id="user_1", traits=traits, timestamp=ts, event_id=eid
    ))
    assert_same_request(a, b)
    props = b.json()["batch"][0]["properties"]
    assert (props["$group_type"], props["$group_key"]) == ("company", "acme")


def test_historical_event_uses_historical_migration(server, client, sdk_factory):
    ts = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)).replace(microsecond=5)
    eid = str(uuid.uuid4())
    sdk = sdk_factory(historical_migration=True)
    a = exchange(server, lambda: sdk.capture(
        "invoice.paid", distinct_id="user_1", properties={"n": 1}, timestamp=ts, uuid=eid
    ))
    b = via_fanout(server, client, lambda: client.track(
        "invoice.paid", person_id="user_1", properties={"n": 1}, timestamp=ts, event_id=eid
    ))
    assert b.json()["historical_migration"] is True
    assert_same_request(a, b)


def test_recent_event_is_not_historical(server, client):
    b = via_fanout(server, client, lambda: client.track(
        "x", person_id="u", timestamp=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=47)
    ))
    assert b.json()["historical_migration"] is False


def test_callers_event_id_maps_deterministically(server, client, sdk_factory):
    """A Stripe id is not a UUID: fanout sends its UUIDv5, the same on every delivery."""
    ts, stripe_id = recent(), "evt_1NqXyZ2eZvKYlo2C0abcdEFG"
    expected = str(uuid.uuid5(EVENT_ID_NAMESPACE, stripe_id))
    assert posthog_uuid(stripe_id) == expected
    sdk = sdk_factory()
    a = exchange(server, lambda: sdk.capture(
        "checkout.finished", distinct_id="user_1", timestamp=ts, uuid=expected
    ))
    b = via_fanout(server, client, lambda: client.track(
        "checkout.finished", person_id="user_1", timestamp=ts, event_id=stripe_id
    ))
    assert_same_request(a, b)
    c = via_fanout(server, client, lambda: client.track(
        "checkout.finished", person_id="user_1", timestamp=ts, event_id=stripe_id
    ))
    assert c.json()["batch"][0]["uuid"] == b.json()["batch"][0]["uuid"] == expected


def test_sdk_silently_replaces_a_non_uuid_id(server, sdk_factory):
    """The SDK misbehaviour the mapping above exists for: two deliveries, two uuids."""
    sdk = sdk_factory()
    sent = [
        exchange(server, lambda: sdk.capture(
            "checkout.finished", distinct_id="user_1", uuid="evt_1NqXyZ2eZvKYlo2C0abcdEFG"
        )).json()["batch"][0]["uuid"]
        for _ in range(2)
    ]
    assert sent[0] != sent[1]
    assert "evt_1NqXyZ2eZvKYlo2C0abcdEFG" not in sent


def test_generated_ids_when_the_caller_gives_none(server, client, sdk_factory):
    sdk = sdk_factory()
    a = exchange(server, lambda: sdk.capture("signup", distinct_id="user_1", properties={"a": 1}))
    b = via_fanout(server, client, lambda: client.track(
        "signup", person_id="user_1", properties={"a": 1}
    ))
    assert_same_request(a, b, generated_ids=True)


def test_anonymous_track_with_visitor_ip(server, sdk_factory):
    """A context IP becomes ``$ip`` and GeoIP stays on (the SDK's ``disable_geoip=False``)."""
    ts, eid = recent(), str(uuid.uuid4())
    sdk = sdk_factory(disable_geoip=False)
    a = exchange(server, lambda: sdk.capture(
        "viewed", distinct_id="anon_9", properties={"$ip": "203.0.113.0"}, timestamp=ts, uuid=eid
    ))
    client = make_client(server, ip="anonymize")
    try:
        b = via_fanout(server, client, lambda: client.track(
            "viewed", anonymous_id="anon_9", context={"ip": "203.0.113.77"},
            timestamp=ts, event_id=eid,
        ))
    finally:
        client.shutdown(timeout=5)
    assert_same_request(a, b)


def test_small_bodies_are_sent_plain(server, client):
    b = via_fanout(server, client, lambda: client.track("x", person_id="u"))
    assert "Content-Encoding" not in b.headers


def test_sync_mode_posts_before_returning(server, sdk_factory):
    """``sync=True`` (serverless): like the SDK's ``sync_mode``, the request is made before
    the call returns, and it is the same request."""
    ts, eid = recent(), str(uuid.uuid4())
    sdk = sdk_factory()
    a = exchange(server, lambda: sdk.capture(
        "cron.ran", distinct_id="job_1", timestamp=ts, uuid=eid
    ))
    client = make_client(server, sync=True)
    try:
        b = exchange(server, lambda: client.track(
            "cron.ran", person_id="job_1", timestamp=ts, event_id=eid
        ))
    finally:
        client.shutdown(timeout=5)
    assert_same_request(a, b)


# -- the request context: what it fills, and what it leaves to the call ----------------------

#: posthog-js session ids: UUIDv7 (the request's, and one the caller names explicitly).
CONTEXT_SESSION = "0190a0b0-c0d0-7e00-8000-000000000001"
EXPLICIT_SESSION = "0190a0b0-c0d0-7e00-8000-0000000000ff"


def test_explicit_properties_win_over_the_request_context(server, sdk_factory):
    """A webhook handled inside a request context: the caller's ``$ip``, ``$session_id`` and
    ``$raw_user_agent`` are sent, as posthog-python's ``add_context_tags`` keeps explicitly
    passed properties over its context; the context's values fill in only what is left out."""
    ts, eid = recent(), str(uuid.uuid4())
    explicit = {
        "$ip": "198.51.100.9",
        "$session_id": EXPLICIT_SESSION,
        "$raw_user_agent": "Stripe/1.0",
    }
    sdk = sdk_factory(disable_geoip=False)  # the context has the visitor's IP: GeoIP stays on
    a = exchange(server, lambda: sdk.capture(
        "webhook.received", distinct_id="user_1", properties=explicit, timestamp=ts, uuid=eid
    ))
    client = make_client(server, ip="keep")
    try:
        with fanout.context(ip="203.0.113.7", user_agent="Browser/1", session_id=CONTEXT_SESSION):
            b = via_fanout(server, client, lambda: client.track(
                "webhook.received", person_id="user_1", properties=explicit,
                timestamp=ts, event_id=eid,
            ))
    finally:
        client.shutdown(timeout=5)
    assert_same_request(a, b)


def test_page_referring_domain_is_the_sent_referrers(server, client, sdk_factory):
    """A page() with its own referrer, in a request with another: ``$referring_domain`` is
    the domain of the ``$referrer`` sent, never the request's."""
    ts, eid = recent(), str(uuid.uuid4())
    url = "https://shop.example/pricing"
    sdk = sdk_factory()
    a = exchange(server, lambda: sdk.capture(
        "$pageview",
        distinct_id="user_1",
        properties={
            "$current_url": url,
            "$host": "shop.example",
            "$pathname": "/pricing",
            "$referrer": "https://news.example/post",
            "$referring_domain": "news.example",
        },
        timestamp=ts,
        uuid=eid,
    ))
    with fanout.context(url="https://shop.example/landing", referrer="https://google.com/"):
        b = via_fanout(server, client, lambda: client.page(
            url, person_id="user_1", referrer="https://news.example/post",
            timestamp=ts, event_id=eid,
        ))
    assert_same_request(a, b)


def test_track_host_and_referring_domain_follow_explicit_urls(server, client, sdk_factory):
    """Explicit ``$current_url`` / ``$referrer`` properties win, and ``$host`` /
    ``$referring_domain`` are derived from them, not from the request's URL and referrer."""
    ts, eid = recent(), str(uuid.uuid4())
    explicit = {"$current_url": "https://app.example:8443/x", "$referrer": "https://news.example/"}
    sdk = sdk_factory()
    a = exchange(server, lambda: sdk.capture(
        "clicked",
        distinct_id="user_1",
        properties={**explicit, "$host": "app.example:8443", "$referring_domain": "news.example"},
        timestamp=ts,
        uuid=eid,
    ))
    with fanout.context(url="https://shop.example/landing", referrer="https://google.com/"):
        b = via_fanout(server, client, lambda: client.track(
            "clicked", person_id="user_1", properties=explicit, timestamp=ts, event_id=eid
        ))
    assert_same_request(a, b)


def test_context_session_id_is_sent_only_as_a_posthog_session(server, client, sdk_factory):
    """``$session_id`` comes from the request only when it is PostHog's: a UUIDv7, as
    posthog-js makes them (PostHog builds sessions from nothing else). RudderStack's and
    Amplitude's sessions (start time in ms, read from rl_session / AMP_ cookies) and other
    UUIDs are not sent."""
    sdk = sdk_factory()
    cases = {
        CONTEXT_SESSION: CONTEXT_SESSION,
        CONTEXT_SESSION.upper(): CONTEXT_SESSION.upper(),  # as the browser sent it
        "1796285879351": None,  # rudder-js's rl_session / Amplitude's session: ms since 1970
        "6f1d3c1e-8a4b-4c2d-9e0f-112233445566": None,  # a UUIDv4
        "sess-42": None,
    }
    for session, sent in cases.items():
        b = _track_in_session(server, client, sdk, session, sent)
        assert b.json()["batch"][0]["properties"].get("$session_id") == sent, session


def _track_in_session(server, client, sdk, session: str, sent: str | None) -> RecordedRequest:
    """A track in a request whose session is ``session``, against the SDK's capture with
    ``$session_id: sent`` (none if ``None``); fanout's request."""
    ts, eid = recent(), str(uuid.uuid4())
    props = {"n": 1} if sent is None else {"n": 1, "$session_id": sent}
    a = exchange(server, lambda: sdk.capture(
        "viewed", distinct_id="user_1", properties=props, timestamp=ts, uuid=eid
    ))
    with fanout.context(session_id=session):
        b = via_fanout(server, client, lambda: client.track(
            "viewed", person_id="user_1", properties={"n": 1}, timestamp=ts, event_id=eid
        ))
    assert_same_request(a, b)
    return b
