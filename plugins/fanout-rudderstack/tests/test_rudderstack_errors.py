"""Failure classes against a real local server, every count asserted exactly."""

from __future__ import annotations

import base64
import logging

import pytest
from fanout_rudderstack import RudderStackProvider
from pytest_httpserver import HTTPServer
from rudderstack_support import WRITE_KEY, base_url, batch_requests, decode_body, make_client

import fanout
from fanout import Event, PermanentError

FAST_RETRIES = {"rudderstack": {"retry_base": 0.01, "retry_cap": 0.05}}
BASIC = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()


def test_500_is_retried_then_delivered_once(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/v1/batch").respond_with_data("down", status=500)
    httpserver.expect_request("/v1/batch").respond_with_data("OK")
    client = make_client(httpserver, delivery=FAST_RETRIES)
    try:
        event_id = client.track("Signed Up", person_id="u1")
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=2)
    r = report["rudderstack"]
    assert (r.delivered, r.failed, r.dropped, r.retries) == (1, 0, 0, 1), r
    ids = [[m["messageId"] for m in decode_body(q)["batch"]] for q in batch_requests(httpserver)]
    assert ids == [[event_id], [event_id]]


def test_400_fails_the_batch_without_retry_and_hides_the_key(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A proxy that echoes the Authorization header back must not leak it.
    httpserver.expect_request("/v1/batch").respond_with_data(
        f"Invalid write key Basic {BASIC} ({WRITE_KEY})", status=400
    )
    caplog.set_level(logging.DEBUG)
    failures: list[fanout.DeliveryFailure] = []
    client = make_client(httpserver, on_error=failures.append, delivery=FAST_RETRIES)
    try:
        client.track("a", person_id="u1")
        client.track("b", person_id="u1")
        report = client.flush(timeout=10)
        text = caplog.text + " ".join(map(str, failures)) + repr(client)
    finally:
        client.shutdown(timeout=2)
    r = report["rudderstack"]
    assert (r.delivered, r.failed, r.dropped, r.retries) == (0, 2, 0, 0), r
    assert len(batch_requests(httpserver)) == 1
    assert WRITE_KEY not in text and BASIC not in text


def test_message_above_the_limit_is_rejected_alone(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/batch").respond_with_data("OK")
    provider = RudderStackProvider(WRITE_KEY, base_url(httpserver))
    small = Event.from_dict({"kind": "track", "name": "small", "person_id": "u"})
    huge = Event.from_dict(
        {"kind": "track", "name": "huge", "person_id": "u", "properties": {"b": "x" * (5 << 20)}},
        max_bytes=None,
    )
    try:
        with pytest.raises(PermanentError) as info:
            provider.send([small, huge])
    finally:
        provider.close()
    assert list(info.value.rejected or {}) == [1]
    (request,) = batch_requests(httpserver)
    assert [m["event"] for m in decode_body(request)["batch"]] == ["small"]


def test_settings_from_the_vendor_variables(httpserver: HTTPServer) -> None:
    import fanout_rudderstack

    httpserver.expect_request("/v1/batch").respond_with_data("OK")
    client = fanout.Client(
        environ={
            "RUDDERSTACK_WRITE_KEY": WRITE_KEY,
            "RUDDERSTACK_DATA_PLANE_URL": base_url(httpserver) + "/",
        },
        load_entry_points=False,
        plugins=[fanout_rudderstack],
        register_atexit=False,
    )
    try:
        client.track("x", person_id="u1")
        report = client.shutdown(timeout=10)
    finally:
        client.shutdown(timeout=1)
    assert list(report) == ["rudderstack"] and report["rudderstack"].delivered == 1
    assert len(batch_requests(httpserver)) == 1
