"""The fanout provider sends what the official Amplitude SDK sends for the same call.

Each case makes one call through ``amplitude.Amplitude`` (its destination plugin and thread
pool, flushed) and the same call through a real ``fanout.Client`` with the ``amplitude``
provider, both against the same pytest-httpserver on 127.0.0.1, then compares the two
requests: method, path, content headers, and the JSON body field by field. The only
differences allowed are the ones listed in ``docs/providers/amplitude.md`` ("Known
differences"):

- ``library`` (``fanout-amplitude/<version>`` against ``amplitude-python/<version>``) and the
  ``User-Agent`` header;
- ``insert_id`` when the caller gave no ``event_id`` (each generates its own).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import fanout_amplitude
import pytest
from amplitude import (  # type: ignore[import-untyped]
    Amplitude,
    BaseEvent,
    Config,
    EventOptions,
    Identify,
)
from amplitude.constants import SDK_LIBRARY, SDK_VERSION  # type: ignore[import-untyped]
from amplitude_support import API_KEY, PATH, api_requests, decode_body, endpoint, make_client
from pytest_httpserver import HTTPServer
from werkzeug import Request

import fanout

UTC = dt.timezone.utc
TS = dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
TS_MS = 1714979289123
HISTORICAL = dt.datetime(2016, 2, 29, 23, 59, 58, 999000, tzinfo=UTC)
STRIPE_EVENT_ID = "evt_1NG8Du2eZvKYlo2CUI79vXWy"
SESSION = 1714979000000


@pytest.fixture
def server(httpserver: HTTPServer) -> HTTPServer:
    httpserver.expect_request(PATH, method="POST").respond_with_json(
        {"code": 200, "events_ingested": 1, "payload_size_bytes": 100, "server_upload_time": 1}
    )
    return httpserver


@pytest.fixture
def sdk(server: HTTPServer) -> Iterator[Amplitude]:
    config = Config(server_url=endpoint(server), flush_interval_millis=50, flush_queue_size=100)
    client = Amplitude(API_KEY, config)
    try:
        yield client
    finally:
        client.shutdown()


def _send_fanout(server: HTTPServer, call: Callable[[fanout.Client], object]) -> Request:
    before = len(api_requests(server))
    client = make_client(server)
    try:
        call(client)
        report = client.shutdown(timeout=10)
    finally:
        client.shutdown(timeout=1)
    assert report.ok, report
    r = report["amplitude"]
    assert (r.delivered, r.failed, r.dropped, r.skipped, r.retries) == (1, 0, 0, 0, 0), r
    requests = api_requests(server)
    assert len(requests) == before + 1
    return requests[-1]


def _send_sdk(server: HTTPServer, sdk: Amplitude, call: Callable[[], object]) -> Request:
    before = len(api_requests(server))
    call()
    for future in sdk.flush():
        if future is not None:
            future.result(timeout=10)
    deadline = time.monotonic() + 10  # the SDK's consumer thread may have sent it instead
    while len(api_requests(server)) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    requests = api_requests(server)
    assert len(requests) == before + 1
    return requests[-1]


def assert_same_request(
    sdk_req: Request, fanout_req: Request, *, caller_event_id: bool
) -> list[dict[str, Any]]:
    """Same request but for the documented allowed differences; returns fanout's events."""
    assert (fanout_req.method, fanout_req.path) == (sdk_req.method, sdk_req.path) == ("POST", PATH)
    for header in ("Content-Type", "Accept", "Content-Encoding"):
        assert fanout_req.headers.get(header) == sdk_req.headers.get(header), header
    assert sdk_req.headers["Content-Type"] == "application/json; charset=UTF-8"

    sdk_body, fanout_body = decode_body(sdk_req), decode_body(fanout_req)
    assert sorted(fanout_body) == sorted(sdk_body)
    assert fanout_body["api_key"] == sdk_body["api_key"] == API_KEY
    assert fanout_body.get("options") == sdk_body.get("options")
    sdk_events, fanout_events = sdk_body["events"], fanout_body["events"]
    assert len(fanout_events) == len(sdk_events)
    for sdk_event, fanout_event in zip(sdk_events, fanout_events, strict=True):
        assert sdk_event["library"] == f"{SDK_LIBRARY}/{SDK_VERSION}"
        assert fanout_event["library"] == f"fanout-amplitude/{fanout_amplitude.__version__}"
        allowed = {"library"} if caller_event_id else {"library", "insert_id"}
        if not caller_event_id:
            assert fanout_event["insert_id"] != sdk_event["insert_id"]
        ours = {k: v for k, v in fanout_event.items() if k not in allowed}
        theirs = {k: v for k, v in sdk_event.items() if k not in allowed}
        assert sorted(ours) == sorted(theirs)
        for key in theirs:  # field by field, so a failure names the field
            assert ours[key] == theirs[key], key
    return list(fanout_events)


def _properties(order_id: object) -> dict[str, Any]:
    return {
        "total": 42.5,
        "currency": "EUR",
        "order_id": order_id,
        "coupon": None,  # dropped at the top level by both
        "cart": {"items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}], "gift": True},
        "tags": ["new", "sale"],
        "note": "x" * 1500,  # cut to 1,024 characters by both
    }


def test_track_with_session_ip_and_device_fields(server: HTTPServer, sdk: Amplitude) -> None:
    sdk_req = _send_sdk(
        server,
        sdk,
        lambda: sdk.track(
            BaseEvent(
                "Order Completed",
                user_id="user_123",
                device_id="device_42",
                time=TS_MS,
                event_properties=_properties("6f1c2a4e-8b0d-4c3e-9f7a-2d5b1e0c9a88"),
                session_id=SESSION,
                ip="203.0.113.0",  # fanout anonymizes context.ip by default (FANOUT_IP)
                user_agent="Mozilla/5.0",
                country="France",
                language="fr-FR",
                location_lat=48.85,
                insert_id=STRIPE_EVENT_ID,
            )
        ),
    )
    fanout_req = _send_fanout(
        server,
        lambda c: c.track(
            "Order Completed",
            person_id="user_123",
            anonymous_id="device_42",
            properties=_properties(uuid.UUID("6f1c2a4e-8b0d-4c3e-9f7a-2d5b1e0c9a88")),
            timestamp=TS,
            event_id=STRIPE_EVENT_ID,
            context={
                "session_id": str(SESSION),  # canonical: text, as fanout.context reads it
                "ip": "203.0.113.9",
                "user_agent": "Mozilla/5.0",
                "country": "France",
                "location_lat": 48.85,
                "locale": "fr-FR",  # canonical locale → Amplitude's language
                "campaign": {"source": "newsletter"},  # no Amplitude event field: not sent
            },
        ),
    )
    (event,) = assert_same_request(sdk_req, fanout_req, caller_event_id=True)
    assert event["insert_id"] == STRIPE_EVENT_ID
    assert event["time"] == TS_MS and event["session_id"] == SESSION
    assert len(event["event_properties"]["note"]) == 1024
    assert "coupon" not in event["event_properties"]


def test_track_decimal_becomes_a_number(server: HTTPServer, sdk: Amplitude) -> None:
    sdk_req = _send_sdk(
        server,
        sdk,
        lambda: sdk.track(
            BaseEvent("Paid", user_id="user_123", time=TS_MS, event_properties={"amount": 19.99})
        ),
    )
    fanout_req = _send_fanout(
        server,
        lambda c: c.track(
            "Paid", person_id="user_123", properties={"amount": Decimal("19.99")}, timestamp=TS
        ),
    )
    assert_same_request(sdk_req, fanout_req, caller_event_id=False)


def test_anonymous_track_uses_device_id(server: HTTPServer, sdk: Amplitude) -> None:
    sdk_req = _send_sdk(
        server,
        sdk,
        lambda: sdk.track(BaseEvent("Viewed Pricing", device_id="anon_4242", time=TS_MS)),
    )
    fanout_req = _send_fanout(
        server, lambda c: c.track("Viewed Pricing", anonymous_id="anon_4242", timestamp=TS)
    )
    (event,) = assert_same_request(sdk_req, fanout_req, caller_event_id=False)
    assert "user_id" not in event and event["device_id"] == "anon_4242"


def test_identify_sets_user_properties(server: HTTPServer, sdk: Amplitude) -> None:
    traits = {"email": "ada@example.com", "plan": "pro", "logins": 3, "vip": True}

    def sdk_call() -> None:
        identify = Identify()
        for key, value in traits.items():
            identify.set(key, value)
        sdk.identify(identify, EventOptions(user_id="user_123", device_id="anon_4242", time=TS_MS))

    sdk_req = _send_sdk(server, sdk, sdk_call)
    fanout_req = _send_fanout(
        server,
        lambda c: c.identify("user_123", anonymous_id="anon_4242", traits=traits, timestamp=TS),
    )
    (event,) = assert_same_request(sdk_req, fanout_req, caller_event_id=False)
    assert event["event_type"] == "$identify"
    assert event["user_properties"] == {"$set": traits}


def test_group_identifies_the_group_and_puts_the_user_in_it(
    server: HTTPServer, sdk: Amplitude
) -> None:
    traits = {"name": "Acme Inc", "employees": 120}

    def sdk_calls() -> None:
        identify = Identify()
        for key, value in traits.items():
            identify.set(key, value)
        options = EventOptions(user_id="user_123", time=TS_MS)
        sdk.group_identify("company", "acme", identify, options)
        sdk.set_group("company", "acme", EventOptions(user_id="user_123", time=TS_MS))

    sdk_req = _send_sdk(server, sdk, sdk_calls)
    fanout_req = _send_fanout(
        server,
        lambda c: c.group("company", "acme", person_id="user_123", traits=traits, timestamp=TS),
    )
    group_event, membership = assert_same_request(sdk_req, fanout_req, caller_event_id=False)
    assert group_event["event_type"] == "$groupidentify"
    assert group_event["group_properties"] == {"$set": traits}
    assert membership["user_properties"] == {"$set": {"company": "acme"}}
    assert membership["insert_id"] == group_event["insert_id"] + ":group"


def test_page_is_amplitudes_page_viewed_event(server: HTTPServer, sdk: Amplitude) -> None:
    sdk_req = _send_sdk(
        server,
        sdk,
        lambda: sdk.track(
            BaseEvent(
                "[Amplitude] Page Viewed",
                device_id="anon_4242",
                time=TS_MS,
                event_properties={
                    "[Amplitude] Page URL": "https://example.com/docs?q=1",
                    "[Amplitude] Page Path": "/docs",
                    "[Amplitude] Page Title": "Docs",
                    "referrer": "https://google.com/",
                },
            )
        ),
    )
    fanout_req = _send_fanout(
        server,
        lambda c: c.page(
            "https://example.com/docs?q=1",
            anonymous_id="anon_4242",
            title="Docs",
            referrer="https://google.com/",
            timestamp=TS,
        ),
    )
    assert_same_request(sdk_req, fanout_req, caller_event_id=False)


def test_historical_event_keeps_its_time(server: HTTPServer, sdk: Amplitude) -> None:
    ms = int(HISTORICAL.timestamp() * 1000)
    sdk_req = _send_sdk(
        server, sdk, lambda: sdk.track(BaseEvent("Legacy Signup", user_id="user_123", time=ms))
    )
    fanout_req = _send_fanout(
        server, lambda c: c.track("Legacy Signup", person_id="user_123", timestamp=HISTORICAL)
    )
    (event,) = assert_same_request(sdk_req, fanout_req, caller_event_id=False)
    assert event["time"] == 1456790398999


def test_min_id_length_option(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_json({"code": 200})
    sdk = Amplitude(
        API_KEY,
        Config(server_url=endpoint(httpserver), flush_interval_millis=50, min_id_length=1),
    )
    try:
        sdk_req = _send_sdk(
            httpserver, sdk, lambda: sdk.track(BaseEvent("Paid", user_id="42", time=TS_MS))
        )
    finally:
        sdk.shutdown()
    client = make_client(httpserver, settings={"min_id_length": 1})
    try:
        client.track("Paid", person_id="42", timestamp=TS)
        report = client.shutdown(timeout=10)
    finally:
        client.shutdown(timeout=1)
    assert report["amplitude"].delivered == 1
    fanout_req = api_requests(httpserver)[-1]
    assert_same_request(sdk_req, fanout_req, caller_event_id=False)
    assert decode_body(fanout_req)["options"] == {"min_id_length": 1}


def test_redelivered_event_keeps_its_insert_id(server: HTTPServer) -> None:
    """A webhook delivered twice becomes two events with one insert_id: Amplitude dedupes."""
    for _ in range(2):
        _send_fanout(
            server,
            lambda c: c.track("Invoice Paid", person_id="user_123", event_id=STRIPE_EVENT_ID),
        )
    ids = [decode_body(r)["events"][0]["insert_id"] for r in api_requests(server)]
    assert ids == [STRIPE_EVENT_ID, STRIPE_EVENT_ID]


@pytest.mark.parametrize("session", ["\u00b2", "\u0661\u0662\u0663", "9" * 30, "12ab", " 12"])
def test_a_session_id_that_is_not_amplitudes_is_left_out(
    server: HTTPServer, session: str
) -> None:
    """A session id from a header anyone can send: "²" made the mapping raise (int()
    refuses what str.isdigit() takes), other scripts' digits became a session. Not
    Amplitude's integer milliseconds: the event goes without one."""
    request = _send_fanout(
        server,
        lambda c: c.track("Viewed", anonymous_id="device_42", context={"session_id": session}),
    )
    (event,) = json.loads(request.get_data())["events"]
    assert event["device_id"] == "device_42" and "session_id" not in event
