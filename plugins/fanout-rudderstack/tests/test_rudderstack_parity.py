"""The fanout provider sends what rudder-sdk-python sends for the same call.

Each case makes one call through ``rudderstack.analytics.client.Client`` (sync mode, gzip)
and the same call through a real ``fanout.Client`` with the ``rudderstack`` provider, both
against the same pytest-httpserver on 127.0.0.1, then compares the two requests: method,
path, auth and content headers, and the JSON body field by field. The only differences
allowed are those listed in ``docs/providers/rudderstack.md`` ("Known differences"):

- ``context.library`` and the ``User-Agent`` header;
- ``sentAt`` (each stamps its own send time);
- ``messageId`` when the caller gave no ``event_id`` (each generates its own).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import fanout_rudderstack
import pytest
from pytest_httpserver import HTTPServer
from rudderstack.analytics.client import Client as RudderClient  # type: ignore[import-untyped]
from rudderstack.analytics.version import VERSION as SDK_VERSION  # type: ignore[import-untyped]
from rudderstack_support import WRITE_KEY, base_url, batch_requests, decode_body, make_client
from werkzeug import Request

import fanout
from fanout.integrations.wsgi import FanoutMiddleware

UTC = dt.timezone.utc
TS = dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
STRIPE_EVENT_ID = "evt_1NG8Du2eZvKYlo2CUI79vXWy"


@pytest.fixture
def server(httpserver: HTTPServer) -> HTTPServer:
    httpserver.expect_request("/v1/batch", method="POST").respond_with_data("OK")
    return httpserver


@pytest.fixture
def sdk(server: HTTPServer) -> Iterator[RudderClient]:
    # sync_mode: the SDK posts from the calling thread; no consumer thread is started.
    yield RudderClient(WRITE_KEY, host=base_url(server), sync_mode=True, gzip=True)


def _send_fanout(server: HTTPServer, call: Callable[[fanout.Client], object]) -> Request:
    before = len(batch_requests(server))
    client = make_client(server)
    try:
        call(client)
        report = client.shutdown(timeout=10)
    finally:
        client.shutdown(timeout=1)
    r = report["rudderstack"]
    assert (r.delivered, r.failed, r.dropped, r.skipped, r.retries) == (1, 0, 0, 0, 0), r
    assert len(batch_requests(server)) == before + 1
    return batch_requests(server)[-1]


def _send_sdk(server: HTTPServer, call: Callable[[], object]) -> Request:
    before = len(batch_requests(server))
    call()
    assert len(batch_requests(server)) == before + 1
    return batch_requests(server)[-1]


def assert_same_request(
    sdk_req: Request, fanout_req: Request, *, caller_event_id: bool
) -> dict[str, Any]:
    """Same request but for the documented allowed differences; returns fanout's message."""
    assert (fanout_req.method, fanout_req.path) == (sdk_req.method, sdk_req.path)
    assert sdk_req.path == "/v1/batch"
    expected_auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    assert sdk_req.headers["Authorization"] == fanout_req.headers["Authorization"] == expected_auth
    for header in ("Content-Type", "Content-Encoding"):
        assert fanout_req.headers.get(header) == sdk_req.headers.get(header), header
    sdk_body, fanout_body = decode_body(sdk_req), decode_body(fanout_req)
    assert sorted(fanout_body) == sorted(sdk_body) == ["batch", "sentAt"]
    for body in (sdk_body, fanout_body):
        assert dt.datetime.fromisoformat(body["sentAt"]).utcoffset() == dt.timedelta(0)
    (sdk_msg,), (fanout_msg,) = sdk_body["batch"], fanout_body["batch"]
    assert sdk_msg["context"].pop("library") == {"name": "analytics-python", "version": SDK_VERSION}
    assert fanout_msg["context"].pop("library") == {
        "name": "fanout-rudderstack",
        "version": fanout_rudderstack.__version__,
    }
    if not caller_event_id:
        assert sdk_msg.pop("messageId") != fanout_msg.pop("messageId")
    assert sorted(fanout_msg) == sorted(sdk_msg)
    for key in sdk_msg:  # field by field, so a failure names the field
        assert fanout_msg[key] == sdk_msg[key], key
    result: dict[str, Any] = fanout_msg
    return result


def test_identify_puts_traits_in_the_context(server: HTTPServer, sdk: RudderClient) -> None:
    traits = {"email": "ada@example.com", "plan": "pro", "logins": 3}
    sdk_req = _send_sdk(
        server, lambda: sdk.identify("user_123", traits, timestamp=TS, anonymous_id="anon_42")
    )
    fanout_req = _send_fanout(
        server,
        lambda c: c.identify("user_123", anonymous_id="anon_42", traits=traits, timestamp=TS),
    )
    message = assert_same_request(sdk_req, fanout_req, caller_event_id=False)
    assert message["context"]["traits"] == traits and "traits" not in message


def test_track_with_nested_values(server: HTTPServer, sdk: RudderClient) -> None:
    order = uuid.UUID("6f1c2a4e-8b0d-4c3e-9f7a-2d5b1e0c9a88")

    def props(total: object, order_id: object) -> dict[str, Any]:
        return {
            "total": total,
            "order_id": order_id,
            "cart": {"items": [{"sku": "A-1", "qty": 2}], "coupon": None, "first": True},
        }

    sdk_req = _send_sdk(
        server,
        lambda: sdk.track(
            "user_123",
            "Order Completed",
            # The SDK drops a key holding a UUID (its clean() cannot serialise one); it is
            # given the string, which is what fanout sends for a UUID value.
            props(Decimal("42.50"), str(order)),
            context={"locale": "en-GB"},
            timestamp=TS,
            message_id=STRIPE_EVENT_ID,
        ),
    )
    fanout_req = _send_fanout(
        server,
        lambda c: c.track(
            "Order Completed",
            person_id="user_123",
            properties=props(Decimal("42.50"), order),
            context={"locale": "en-GB"},
            timestamp=TS,
            event_id=STRIPE_EVENT_ID,
        ),
    )
    message = assert_same_request(sdk_req, fanout_req, caller_event_id=True)
    assert message["messageId"] == STRIPE_EVENT_ID
    assert message["integrations"] == {"All": True} and message["channel"] == "server"


def test_page(server: HTTPServer, sdk: RudderClient) -> None:
    sdk_req = _send_sdk(
        server,
        lambda: sdk.page(
            anonymous_id="anon_42",
            name="Docs",
            properties={"url": "https://example.com/docs", "path": "/docs", "title": "Docs"},
            timestamp=TS,
        ),
    )
    fanout_req = _send_fanout(
        server,
        lambda c: c.page(
            "https://example.com/docs",
            anonymous_id="anon_42",
            name="Docs",
            title="Docs",
            timestamp=TS,
        ),
    )
    assert_same_request(sdk_req, fanout_req, caller_event_id=False)


def test_alias(server: HTTPServer, sdk: RudderClient) -> None:
    sdk_req = _send_sdk(
        server, lambda: sdk.alias(previous_id="anon_42", user_id="user_123", timestamp=TS)
    )
    fanout_req = _send_fanout(server, lambda c: c.alias("user_123", "anon_42", timestamp=TS))
    assert_same_request(sdk_req, fanout_req, caller_event_id=False)


def test_group_carries_group_type_as_a_trait(server: HTTPServer, sdk: RudderClient) -> None:
    traits = {"name": "Acme Inc", "employees": 120}
    sdk_req = _send_sdk(
        server,
        lambda: sdk.group("user_123", "acme", {**traits, "group_type": "company"}, timestamp=TS),
    )
    fanout_req = _send_fanout(
        server,
        lambda c: c.group("company", "acme", person_id="user_123", traits=traits, timestamp=TS),
    )
    assert_same_request(sdk_req, fanout_req, caller_event_id=False)


# -- the request context ------------------------------------------------------------------


def test_session_is_context_session_id_a_number(server: HTTPServer, sdk: RudderClient) -> None:
    """The canonical session goes out as RudderStack's ``context.sessionId``, a Number,
    when it is RudderStack's (an integer of at least 10 digits: the session's start in ms,
    as rudder-js's ``rl_session`` holds it); a session in another vendor's form (a PostHog
    UUID) or too short for RudderStack is not sent at all."""
    cases = {
        "1796285879351": 1796285879351,
        "0190a0b0-c0d0-7e00-8000-000000000001": None,
        "12345": None,
    }
    for session, sent in cases.items():
        message = _track_in_session(server, sdk, session, sent)
        assert message["context"].get("sessionId") == sent, session
        assert "session_id" not in message["context"]


def _track_in_session(
    server: HTTPServer, sdk: RudderClient, session: str, sent: int | None
) -> dict[str, Any]:
    """A track in a request whose session is ``session``, against the SDK's with
    ``context.sessionId: sent`` (none if ``None``); fanout's message."""
    context = {"locale": "en-GB"} if sent is None else {"locale": "en-GB", "sessionId": sent}
    sdk_req = _send_sdk(
        server,
        lambda: sdk.track("user_123", "Checkout", {"n": 1}, context=context, timestamp=TS),
    )

    def call(c: fanout.Client) -> None:
        with fanout.context(session_id=session, locale="en-GB"):
            c.track("Checkout", person_id="user_123", properties={"n": 1}, timestamp=TS)

    return assert_same_request(sdk_req, _send_fanout(server, call), caller_event_id=False)


def _rs_cookie(value: object) -> str:
    """A rudder-js v3 cookie value: ``RS_ENC_v3_`` + base64 of the JSON."""
    return "RS_ENC_v3_" + base64.b64encode(json.dumps(value).encode()).decode()


def test_rl_session_cookie_becomes_the_session_id(server: HTTPServer) -> None:
    """From the browser's ``rl_session`` cookie, through the WSGI middleware, to the
    message: the session's start (``id``, ms) as ``context.sessionId``."""
    now_ms = int(time.time() * 1000)
    start = now_ms - 60_000
    session = {"id": start, "expiresAt": now_ms + 1_800_000, "timeout": 1_800_000}
    cookie = f"rl_anonymous_id={_rs_cookie('rs-anon-1')}; rl_session={_rs_cookie(session)}"

    def call(c: fanout.Client) -> None:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            c.track("Checkout")
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/checkout",
            "SERVER_NAME": "shop.example",
            "SERVER_PORT": "80",
            "HTTP_HOST": "shop.example",
            "HTTP_COOKIE": cookie,
            "wsgi.url_scheme": "http",
        }
        assert list(FanoutMiddleware(app)(environ, lambda *a: None)) == [b"ok"]

    (message,) = decode_body(_send_fanout(server, call))["batch"]
    assert message["anonymousId"] == "rs-anon-1"
    assert message["context"]["sessionId"] == start
    assert "session_id" not in message["context"]


def test_page_in_a_request_merges_page_fields(server: HTTPServer, sdk: RudderClient) -> None:
    """RudderStack shares Segment's page merge (analytics.js's addPageContext): the call's
    page fields win in ``properties`` and ``context.page``, the request's fill the rest."""
    url = "https://shop.example/docs?v=2"
    page = {
        "url": url,
        "path": "/docs",
        "title": "Docs",
        "referrer": "https://google.com/",
        "search": "?v=2",
    }
    sdk_req = _send_sdk(
        server,
        lambda: sdk.page(
            anonymous_id="anon_42",
            name="Docs",
            properties=page,
            context={"page": page},
            timestamp=TS,
        ),
    )

    def call(c: fanout.Client) -> None:
        with fanout.context(
            anonymous_id="anon_42",
            url="https://shop.example/landing?x=1",
            path="/landing",
            referrer="https://google.com/",
        ):
            c.page(url, name="Docs", title="Docs", timestamp=TS)

    assert_same_request(sdk_req, _send_fanout(server, call), caller_event_id=False)
