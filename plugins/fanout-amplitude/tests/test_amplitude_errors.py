"""Each failure class, against a real local server: delivered, re-sent, retried, split,
rejected one by one or dead-lettered, with every count asserted exactly.

No timing assertions: retries are made fast with a small ``retry_base``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from amplitude_support import API_KEY, PATH, api_requests, decode_body, endpoint, make_client
from fanout_amplitude import AmplitudeProvider
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from fanout import BatchTooLarge, DeliveryFailure, Event, PermanentError, RetryableError

FAST_RETRIES = {"amplitude": {"retry_base": 0.01, "retry_cap": 0.05}}


def _insert_ids(request: Request) -> list[str]:
    return [e["insert_id"] for e in decode_body(request)["events"]]


def _event(name: str, user: str = "user_123", **extra: Any) -> Event:
    return Event.from_dict({"kind": "track", "name": name, "person_id": user, **extra})


def _counts(report: Any) -> tuple[int, int, int, int]:
    r = report["amplitude"]
    return r.delivered, r.failed, r.dropped, r.skipped


def _json(data: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


def test_500_is_retried_then_delivered(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request(PATH).respond_with_data("upstream down", status=500)
    httpserver.expect_request(PATH).respond_with_json({"code": 200})
    client = make_client(httpserver, delivery=FAST_RETRIES)
    try:
        event_id = client.track("Signed Up", person_id="user_123")
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=2)
    assert _counts(report) == (1, 0, 0, 0) and report["amplitude"].retries == 1, report
    attempts = api_requests(httpserver)
    assert len(attempts) == 2
    assert _insert_ids(attempts[0]) == _insert_ids(attempts[1]) == [event_id]


def test_400_naming_events_rejects_them_and_resends_the_rest(httpserver: HTTPServer) -> None:
    """Amplitude takes nothing from a 400: the named events are dead-lettered, the others
    are sent again at once, as the SDK's ResponseProcessor does."""
    seen: list[list[str]] = []

    def handler(request: Request) -> Response:
        events = decode_body(request)["events"]
        seen.append([e["event_type"] for e in events])
        bad = [i for i, e in enumerate(events) if e["event_type"].startswith("bad")]
        silenced = [i for i, e in enumerate(events) if e["event_type"] == "silenced"]
        if bad or silenced:
            return _json(
                {
                    "code": 400,
                    "error": "Request missing required field",
                    "events_with_invalid_fields": {"time": bad},
                    "silenced_events": silenced,
                },
                400,
            )
        return _json({"code": 200, "events_ingested": len(events)}, 200)

    httpserver.expect_request(PATH).respond_with_handler(handler)
    failures: list[DeliveryFailure] = []
    client = make_client(httpserver, on_error=failures.append, batch_size=10)
    try:
        for name in ("ok1", "bad1", "ok2", "silenced", "ok3"):
            client.track(name, person_id="user_123")
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=2)
    assert _counts(report) == (3, 2, 0, 0), report
    assert report["amplitude"].retries == 0
    assert seen == [["ok1", "bad1", "ok2", "silenced", "ok3"], ["ok1", "ok2", "ok3"]]
    rejected = sorted(e.name or "" for f in failures for e in f.events)
    assert rejected == ["bad1", "silenced"]
    reasons = " ".join(str(f) for f in failures)
    assert "invalid field 'time'" in reasons or "time" in reasons


def test_400_naming_nothing_fails_the_batch(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH).respond_with_json(
        {"code": 400, "error": f"Invalid API key: {API_KEY}"}, status=400
    )
    failures: list[DeliveryFailure] = []
    client = make_client(httpserver, on_error=failures.append, delivery=FAST_RETRIES)
    try:
        client.track("a", person_id="user_123")
        client.track("b", person_id="user_123")
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=2)
    assert _counts(report) == (0, 2, 0, 0) and report["amplitude"].retries == 0, report
    assert len(api_requests(httpserver)) == 1
    assert failures and all(API_KEY not in str(f) for f in failures)  # echoed key masked


def test_429_rejects_quota_exceeded_and_retries_throttled_later(httpserver: HTTPServer) -> None:
    """One send(): the quota-exceeded user's event is rejected, the not-throttled event is
    re-sent at once, the throttled one makes the batch come back after the SDK's 30 s."""
    calls: list[list[str]] = []

    def handler(request: Request) -> Response:
        events = decode_body(request)["events"]
        calls.append([e["user_id"] for e in events])
        throttled = [i for i, e in enumerate(events) if e["user_id"] in ("hot_user", "quota_user")]
        if throttled:
            return _json(
                {
                    "code": 429,
                    "error": "Too many requests for some devices and users",
                    "throttled_events": throttled,
                    "exceeded_daily_quota_users": {"quota_user": 500000},
                },
                429,
            )
        return _json({"code": 200}, 200)

    httpserver.expect_request(PATH).respond_with_handler(handler)
    provider = AmplitudeProvider(API_KEY, server_url=endpoint(httpserver))
    batch = [_event("a", "calm_user"), _event("b", "hot_user"), _event("c", "quota_user")]
    try:
        with pytest.raises(RetryableError) as info:
            provider.send(batch)
    finally:
        provider.close()
    assert info.value.retry_after == 30.0
    assert info.value.pending == [1]  # only the throttled event comes back
    assert list(info.value.rejected or {}) == [2]  # the quota-exceeded one is dead-lettered
    assert calls == [["calm_user", "hot_user", "quota_user"], ["calm_user"]]


def test_429_with_only_quota_exceeded_is_a_rejection(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request(PATH).respond_with_json(
        {"code": 429, "throttled_events": [1], "exceeded_daily_quota_devices": {"dev_quota": 9}},
        status=429,
    )
    httpserver.expect_request(PATH).respond_with_json({"code": 200})
    provider = AmplitudeProvider(API_KEY, server_url=endpoint(httpserver))
    batch = [
        Event.from_dict({"kind": "track", "name": "a", "anonymous_id": "dev_fine"}),
        Event.from_dict({"kind": "track", "name": "b", "anonymous_id": "dev_quota"}),
    ]
    try:
        with pytest.raises(PermanentError) as info:
            provider.send(batch)
    finally:
        provider.close()
    assert list(info.value.rejected or {}) == [1]
    sent = [[e["device_id"] for e in decode_body(r)["events"]] for r in api_requests(httpserver)]
    assert sent == [["dev_fine", "dev_quota"], ["dev_fine"]]
    assert "daily quota" in (info.value.rejected or {})[1]


def test_413_splits_the_batch_until_it_fits(httpserver: HTTPServer) -> None:
    def handler(request: Request) -> Response:
        if len(decode_body(request)["events"]) > 2:
            return _json({"code": 413, "error": "Payload too large"}, 413)
        return _json({"code": 200}, 200)

    httpserver.expect_request(PATH).respond_with_handler(handler)
    client = make_client(httpserver, batch_size=8)
    try:
        ids = [client.track(f"e{i}", person_id="user_123") for i in range(8)]
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=2)
    assert _counts(report) == (8, 0, 0, 0), report
    accepted = [
        i
        for r in api_requests(httpserver)
        if len(decode_body(r)["events"]) <= 2
        for i in _insert_ids(r)
    ]
    assert sorted(accepted) == sorted(ids)  # each delivered exactly once


def test_request_above_the_v2_limit_is_split_before_sending(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH).respond_with_json({"code": 200})
    provider = AmplitudeProvider(API_KEY, server_url=endpoint(httpserver))
    big = "x" * 1000  # cut to 1,024 characters: many properties make one event large
    props = {f"p{i}": big for i in range(400)}
    batch = [_event("big", properties=props) for _ in range(3)]
    try:
        with pytest.raises(BatchTooLarge):
            provider.send(batch)
        provider.send(batch[:2])  # two events of ~400 KB fit in 1 MB
    finally:
        provider.close()
    assert [len(decode_body(r)["events"]) for r in api_requests(httpserver)] == [2]


def test_unsendable_events_are_rejected_one_by_one(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH).respond_with_json({"code": 200})
    failures: list[DeliveryFailure] = []
    client = make_client(httpserver, on_error=failures.append)
    try:
        client.identify("user_123")  # no traits: the SDK refuses an empty Identify
        client.track("fine", person_id="user_123")
        client.track(
            "too many keys", person_id="user_123", properties={f"k{i}": i for i in range(1100)}
        )
        client.alias("user_123", "anon_4242")  # no Amplitude equivalent: skipped, counted
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=2)
    assert _counts(report) == (1, 2, 0, 1), report
    (request,) = api_requests(httpserver)
    assert [e["event_type"] for e in decode_body(request)["events"]] == ["fine"]
    reasons = sorted(str(f) for f in failures)
    assert any("needs at least one trait" in r for r in reasons), reasons
    assert any("1100 keys" in r for r in reasons), reasons


def test_eu_zone_and_batch_api_endpoints() -> None:
    assert AmplitudeProvider(API_KEY).url == "https://api2.amplitude.com/2/httpapi"
    assert (
        AmplitudeProvider(API_KEY, server_zone="EU").url == "https://api.eu.amplitude.com/2/httpapi"
    )
    batch = AmplitudeProvider(API_KEY, server_zone="EU", use_batch=True)
    assert batch.url == "https://api.eu.amplitude.com/batch" and batch.max_bytes == 20_000_000


def test_environment_settings_and_secrecy(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    import fanout_amplitude

    import fanout

    httpserver.expect_request("/batch").respond_with_data("down", status=503)
    caplog.set_level(logging.DEBUG)
    client = fanout.Client(
        environ={
            "AMPLITUDE_API_KEY": API_KEY,
            "AMPLITUDE_SERVER_URL": endpoint(httpserver, "/batch"),
        },
        providers=["amplitude"],
        load_entry_points=False,
        plugins=[fanout_amplitude],
        register_atexit=False,
        max_retries=0,
    )
    try:
        client.track("x", person_id="user_123")
        report = client.flush(timeout=10)
        text = repr(client) + repr(client.stats()) + caplog.text
    finally:
        client.shutdown(timeout=2)
    assert _counts(report) == (0, 1, 0, 0), report
    assert len(api_requests(httpserver, "/batch")) == 1
    assert API_KEY not in text
