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
