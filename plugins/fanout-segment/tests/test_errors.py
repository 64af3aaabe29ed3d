"""Each failure class, against a real local server: retried, split, rejected or dead-lettered.

No timing assertions: retries are made fast with a small ``retry_base`` where the test is
about *whether* a retry happens, and Retry-After is shown to win over a backoff that would
outlast the flush timeout.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
from pathlib import Path

import pytest
from fanout_segment import SegmentProvider
from pytest_httpserver import HTTPServer
from segment_support import WRITE_KEY, make_client
from werkzeug import Request, Response

from fanout import (
    BatchTooLarge,
    DeliveryError,
    DeliveryFailure,
    Event,
    PermanentError,
    RetryableError,
)
from fanout.testing import RecordedRequest, decode_request, recorded, server_url

FAST_RETRIES = {"segment": {"retry_base": 0.01, "retry_cap": 0.05}}
BASIC = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()


def _message_ids(request: RecordedRequest) -> list[str]:
    return [m["messageId"] for m in request.json()["batch"]]


def test_500_is_retried_then_delivered(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/v1/batch").respond_with_data("upstream down", status=500)
    httpserver.expect_request("/v1/batch").respond_with_json({"success": True})
    client = make_client(httpserver, delivery=FAST_RETRIES)
    try:
        event_id = client.track("Signed Up", person_id="u1")
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=2)
    assert report["segment"].delivered == 1 and report["segment"].retries == 1, report
    attempts = recorded(httpserver, "/v1/batch")
    assert len(attempts) == 2
    assert _message_ids(attempts[0]) == _message_ids(attempts[1]) == [event_id]


def test_429_retry_after_is_honoured(httpserver: HTTPServer) -> None:
    # Retry-After: 1 is honoured as the wait (at least the 0.05 s floor set here), so the
    # retry goes after about a second and the flush (10 s) ends with nothing pending.
    httpserver.expect_oneshot_request("/v1/batch").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "1"}
    )
    httpserver.expect_request("/v1/batch").respond_with_json({"success": True})
    client = make_client(
        httpserver, delivery={"segment": {"retry_base": 0.05, "retry_cap": 120.0}}
    )
    try:
        client.track("Signed Up", person_id="u1")
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=1)
    assert report["segment"].delivered == 1 and report["segment"].pending == 0, report
    assert len(recorded(httpserver, "/v1/batch")) == 2


def test_retry_after_value_reaches_the_channel(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/batch").respond_with_data(
        "", status=429, headers={"Retry-After": "7"}
    )
    provider = SegmentProvider(WRITE_KEY, host=server_url(httpserver))
    with pytest.raises(RetryableError) as info:
        provider.send([Event.from_dict({"kind": "track", "name": "x", "person_id": "u"})])
    provider.close()
    assert info.value.retry_after == 7.0 and info.value.status_code == 429


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (503, RetryableError),
        (460, RetryableError),  # Segment's own retryable 4xx (per the SDK's consumer)
        (400, PermanentError),
        (403, PermanentError),
        (501, PermanentError),  # the SDK does not retry 501 / 505 either
    ],
)
def test_status_classification(
    httpserver: HTTPServer, status: int, error: type[DeliveryError]
) -> None:
    httpserver.expect_request("/v1/batch").respond_with_data("no", status=status)
    provider = SegmentProvider(WRITE_KEY, host=server_url(httpserver))
    try:
        with pytest.raises(error) as info:
            provider.send([Event.from_dict({"kind": "track", "name": "x", "person_id": "u"})])
    finally:
        provider.close()
    assert type(info.value) is error and info.value.status_code == status


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and is closed now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = SegmentProvider(WRITE_KEY, host=f"http://127.0.0.1:{port}", timeout=2)
    try:
        with pytest.raises(RetryableError):
            provider.send([Event.from_dict({"kind": "track", "name": "x", "person_id": "u"})])
    finally:
        provider.close()


def test_401_is_permanent_and_the_write_key_never_leaks(
    httpserver: HTTPServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A hostile or confused server echoing the credentials back in its error body.
    httpserver.expect_request("/v1/batch").respond_with_data(
        f"invalid write key {WRITE_KEY} (Authorization: Basic {BASIC})", status=401
    )
    failures: list[DeliveryFailure] = []
    caplog.set_level(logging.DEBUG)
    client = make_client(
        httpserver, on_error=failures.append, dead_letter_dir=str(tmp_path), delivery=FAST_RETRIES
    )
    try:
        client.track("Signed Up", person_id="u1", properties={"plan": "pro"})
        report = client.flush(timeout=10)
    finally:
        final = client.shutdown(timeout=2)
    assert len(recorded(httpserver, "/v1/batch")) == 1  # never retried
    assert report["segment"].failed == 1 and report["segment"].losses == {"permanent_error": 1}
    assert len(failures) == 1 and failures[0].status_code == 401
    assert "401" in failures[0].error
    dead = (tmp_path / "segment.jsonl").read_text()
    assert json.loads(dead)["reason"] == "permanent_error"
    provider = SegmentProvider(WRITE_KEY, host=server_url(httpserver))
    texts = [
        dead,
        caplog.text,
        failures[0].error,
        str(failures[0]),
        repr(failures[0]),
        repr(client),
        repr(provider),
        repr(report),
        repr(final),
        repr(client.registry.spec("segment")),
    ]
    for text in texts:
        assert WRITE_KEY not in text and BASIC not in text, text


def test_body_is_gzip_json(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/batch").respond_with_json({"success": True})
    client = make_client(httpserver, batch_size=10)
    try:
        ids = [client.track(f"Step {i}", person_id="u1", properties={"i": i}) for i in range(10)]
        client.flush(timeout=10)
    finally:
        client.shutdown(timeout=2)
    (request,) = recorded(httpserver, "/v1/batch")
    assert request.gzip and request.headers["Content-Encoding"] == "gzip"  # gunzipped fine
    body = request.json()
    assert [m["messageId"] for m in body["batch"]] == ids
    assert [m["properties"]["i"] for m in body["batch"]] == list(range(10))


def test_413_splits_until_accepted(httpserver: HTTPServer) -> None:
    def handler(request: Request) -> Response:
        size = len(decode_request(request).json()["batch"])
        return Response("too large", status=413) if size > 2 else Response("{}", status=200)

    httpserver.expect_request("/v1/batch").respond_with_handler(handler)
    client = make_client(httpserver, batch_size=8)
    try:
        ids = [client.track("Item Viewed", person_id="u1", properties={"n": n}) for n in range(8)]
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=2)
    assert report["segment"].delivered == 8 and report["segment"].failed == 0, report
    sizes = [len(r.json()["batch"]) for r in recorded(httpserver, "/v1/batch")]
    assert sizes == [8, 4, 2, 2, 4, 2, 2]
    accepted = [
        mid
        for r in recorded(httpserver, "/v1/batch")
        if len(r.json()["batch"]) <= 2
        for mid in _message_ids(r)
    ]
    assert sorted(accepted) == sorted(ids)  # each exactly once


def _big_event(n: int, size: int) -> Event:
    return Event.from_dict(
        {
            "kind": "track",
            "name": "Blob",
            "person_id": "u",
            "properties": {"blob": "x" * size, "n": n},
        }
    )


def test_oversized_message_rejected_alone_rest_delivered(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/batch").respond_with_json({"success": True})
    provider = SegmentProvider(WRITE_KEY, host=server_url(httpserver))
    batch = [_big_event(0, 10), _big_event(1, 40_000), _big_event(2, 10)]
    try:
        with pytest.raises(PermanentError) as info:
            provider.send(batch)
    finally:
        provider.close()
    assert info.value.rejected is not None and list(info.value.rejected) == [1]
    assert "32768" in info.value.rejected[1]
    (request,) = recorded(httpserver, "/v1/batch")
    assert _message_ids(request) == [batch[0].event_id, batch[2].event_id]


def test_body_above_500kb_is_split_before_sending(httpserver: HTTPServer) -> None:
    provider = SegmentProvider(WRITE_KEY, host=server_url(httpserver))
    batch = [_big_event(n, 30_000) for n in range(20)]  # ~600 KB in all
    try:
        with pytest.raises(BatchTooLarge):
            provider.send(batch)
    finally:
        provider.close()
    assert recorded(httpserver, "/v1/batch") == []


def test_a_200_that_is_not_segments_answer_is_retried_not_counted(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/v1/batch").respond_with_data(
        "<html>welcome</html>", status=200, content_type="text/html"
    )
    httpserver.expect_request("/v1/batch").respond_with_json({"success": True})
    client = make_client(httpserver, delivery={"segment": {"retry_base": 0.05}})
    try:
        client.track("Signed Up", person_id="u1")
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=1)
    r = report["segment"]
    assert (r.delivered, r.failed, r.retries) == (1, 0, 1)
    assert len(httpserver.log) == 2
