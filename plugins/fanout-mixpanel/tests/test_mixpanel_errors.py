"""Failure classes, limits and secrecy, against pytest-httpserver on 127.0.0.1.

Each test drives a real ``fanout.Client`` (or, where the exact exception is the point, the
provider itself) and checks what the channel made of the answer: retried and delivered,
dead-lettered, split, or rejected per event, never raised into the caller.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import mixpanel
import pytest
from fanout_mixpanel import MixpanelProvider, insert_id
from mixpanel_support import (
    API_SECRET,
    OK,
    TOKEN,
    decode,
    make_client,
    records_at,
    requests_to,
    serve_ok,
)
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import fanout
from fanout import BatchTooLarge, ConfigError, Event, PermanentError, RetryableError
from fanout.testing import server_url

UTC = dt.timezone.utc
OLD = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
FAST_RETRY = {"mixpanel": {"retry_base": 0.01, "retry_cap": 0.05}}


def _event(i: int, *, timestamp: dt.datetime | None = None, **props: Any) -> Event:
    return Event.from_dict(
        {
            "kind": "track",
            "name": "Clicked",
            "person_id": f"user_{i}",
            "event_id": f"00000000-0000-4000-8000-{i:012d}",
            "timestamp": (timestamp or dt.datetime.now(UTC)).isoformat(),
            "properties": {"i": i, **props},
        }
    )


def _provider(server: HTTPServer, **kwargs: Any) -> MixpanelProvider:
    return MixpanelProvider(TOKEN, api_host=server_url(server), **kwargs)


# -- retryable -------------------------------------------------------------------------


def test_500_is_retried_then_delivered_once(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/track").respond_with_data("upstream down", status=500)
    serve_ok(httpserver)
    client = make_client(httpserver, delivery=FAST_RETRY)
    try:
        eid = client.track("Clicked", person_id="user_1")
        report = client.shutdown(timeout=10)
    finally:
        client.shutdown(timeout=1)
    assert report["mixpanel"].delivered == 1 and report["mixpanel"].retries == 1
    first, second = (decode(r) for r in requests_to(httpserver, "/track"))
    assert first["records"] == second["records"]  # same $insert_id: Mixpanel dedupes
    assert second["records"][0]["properties"]["$insert_id"] == insert_id(eid)


def test_sdk_does_not_retry_http_urls(httpserver: HTTPServer) -> None:
    """Named SDK bug: its retry adapter is mounted for https:// only, so the same 500
    against an http:// URL (a proxy, a local collector) fails after one request."""
    httpserver.expect_request("/track").respond_with_data("upstream down", status=500)
    consumer = mixpanel.Consumer(events_url=f"{server_url(httpserver)}/track", retry_limit=4)
    with pytest.raises(mixpanel.MixpanelException):
        mixpanel.Mixpanel(TOKEN, consumer=consumer).track("user_1", "Clicked")
    assert len(requests_to(httpserver, "/track")) == 1


def test_429_retry_after_is_passed_to_the_channel(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/track").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "7"}
    )
    provider = _provider(httpserver)
    try:
        with pytest.raises(RetryableError) as info:
            provider.send([_event(1)])
    finally:
        provider.close()
    assert info.value.retry_after == 7 and info.value.status_code == 429


def test_429_then_delivered_through_the_client(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/engage").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "0"}
    )
    serve_ok(httpserver)
    client = make_client(httpserver, delivery=FAST_RETRY)
    try:
        client.identify("user_1", traits={"plan": "pro"})
        report = client.shutdown(timeout=10)
    finally:
        client.shutdown(timeout=1)
    assert report["mixpanel"].delivered == 1 and report["mixpanel"].retries == 1
    assert len(requests_to(httpserver, "/engage")) == 2


def test_connection_refused_is_retryable() -> None:
    provider = MixpanelProvider(TOKEN, api_host="http://127.0.0.1:9", timeout=2)
    try:
        with pytest.raises(RetryableError):
            provider.send([_event(1)])
    finally:
        provider.close()


# -- permanent, and secrecy ------------------------------------------------------------


def test_401_is_dead_lettered_and_no_secret_leaks(
    httpserver: HTTPServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A server that echoes the credentials back: the worst case for leaks.
    for path in ("/track", "/import"):
        httpserver.expect_request(path).respond_with_json(
            {"error": f"invalid token {TOKEN} / secret {API_SECRET}", "status": 0}, status=401
        )
    failures: list[fanout.DeliveryFailure] = []
    caplog.set_level(logging.DEBUG, logger="fanout")
    client = make_client(
        httpserver,
        mixpanel={"api_secret": API_SECRET},
        on_error=failures.append,
        dead_letter_dir=str(tmp_path),
        batch_size=1,
    )
    try:
        client.track("Clicked", person_id="user_1")
        client.track("Signed Up", person_id="user_1", timestamp=OLD)  # → /import
        report = client.shutdown(timeout=10)
    finally:
        client.shutdown(timeout=1)
    assert report["mixpanel"].failed == 2 and report["mixpanel"].retries == 0
    assert {f.reason for f in failures} == {"permanent_error"}
    assert {f.status_code for f in failures} == {401}
    dead = (tmp_path / "mixpanel.jsonl").read_text()
    assert len(dead.splitlines()) == 2
    texts = [dead, caplog.text, repr(client), str(report), *(f.error for f in failures)]
    texts += [repr(client.registry.spec("mixpanel"))]
    for text in texts:
        assert TOKEN not in text and API_SECRET not in text
    assert "401" in failures[0].error


def test_track_status_0_is_permanent(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/track").respond_with_json(
        {"status": 0, "error": "data, missing or empty"}
    )
    provider = _provider(httpserver)
    try:
        with pytest.raises(PermanentError, match="missing or empty"):
            provider.send([_event(1)])
    finally:
        provider.close()


def test_repr_and_config_errors_hide_secrets() -> None:
    provider = MixpanelProvider(TOKEN, api_secret=API_SECRET)
    assert TOKEN not in repr(provider) and API_SECRET not in repr(provider)
    with pytest.raises(ConfigError) as info:
        fanout.Client(providers=["mixpanel"], environ={}, register_atexit=False,
                      load_entry_points=False, plugins=[__import__("fanout_mixpanel")])
    assert "MIXPANEL_TOKEN" in str(info.value)
    with pytest.raises(ConfigError) as bad:
        fanout.Client(
            providers=["mixpanel"],
            environ={"MIXPANEL_TOKEN": TOKEN, "MIXPANEL_API_HOST": "ftp://nope"},
            register_atexit=False, load_entry_points=False,
            plugins=[__import__("fanout_mixpanel")],
        )
    assert "MIXPANEL_API_HOST" in str(bad.value) and TOKEN not in str(bad.value)


# -- historical ------------------------------------------------------------------------


def test_historical_without_secret_is_rejected_per_event(httpserver: HTTPServer) -> None:
    serve_ok(httpserver)
    failures: list[fanout.DeliveryFailure] = []
    client = make_client(httpserver, on_error=failures.append)
    try:
        client.track("Recent", person_id="user_1")
        old_id = client.track("Ancient", person_id="user_1", timestamp=OLD)
        report = client.shutdown(timeout=10)
    finally:
        client.shutdown(timeout=1)
    assert report["mixpanel"].delivered == 1 and report["mixpanel"].failed == 1
    assert [e.event_id for f in failures for e in f.events] == [old_id]
    assert "MIXPANEL_API_SECRET" in failures[0].error and "5-day" in failures[0].error
    assert [r["event"] for r in records_at(httpserver, "/track")] == ["Recent"]
    assert requests_to(httpserver, "/import") == []


def test_import_rejections_are_dead_lettered_per_event(httpserver: HTTPServer) -> None:
    def answer(request: Request) -> Response:
        records = decode(request)["records"]
        body = {
            "code": 400,
            "error": "some data points in the request failed validation",
            "status": "Bad Request",
            "num_records_imported": len(records) - 1,
            "failed_records": [{
                "index": 1,
                "insert_id": records[1]["properties"]["$insert_id"],
                "field": "properties.distinct_id",
                "message": "'properties.distinct_id' is invalid: must not be 'anonymous'",
            }],
        }
        return Response(json.dumps(body), status=400, content_type="application/json")

    httpserver.expect_request("/import").respond_with_handler(answer)
    failures: list[fanout.DeliveryFailure] = []
    client = make_client(
        httpserver, mixpanel={"api_secret": API_SECRET}, on_error=failures.append
    )
    try:
        ids = [client.track("Old", person_id=p, timestamp=OLD)
               for p in ("user_1", "anonymous", "user_3")]
        report = client.shutdown(timeout=10)
    finally:
        client.shutdown(timeout=1)
    assert len(requests_to(httpserver, "/import")) == 1
    assert report["mixpanel"].delivered == 2 and report["mixpanel"].failed == 1
    assert [e.event_id for f in failures for e in f.events] == [ids[1]]
    assert "distinct_id" in failures[0].error and "must not be 'anonymous'" in failures[0].error


def test_import_is_gzipped_json(httpserver: HTTPServer) -> None:
    serve_ok(httpserver)
    provider = _provider(httpserver, api_secret=API_SECRET)
    try:
        provider.send([_event(1, timestamp=OLD), _event(2, timestamp=OLD)])
    finally:
        provider.close()
    (request,) = requests_to(httpserver, "/import")
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Content-Type"] == "application/json"
    assert request.params["strict"] == "1"
    records = decode(request)["records"]  # gunzipped, then JSON
    assert [r["properties"]["i"] for r in records] == [1, 2]
    assert records[0]["properties"]["time"] == int(OLD.timestamp() * 1000)


# -- size ------------------------------------------------------------------------------


def test_413_splits_the_batch(httpserver: HTTPServer) -> None:
    def answer(request: Request) -> Response:
        if len(decode(request)["records"]) > 2:
            return Response("request exceeds max limit", status=413)
        return Response(json.dumps(OK), content_type="application/json")

    httpserver.expect_request("/track").respond_with_handler(answer)
    client = make_client(httpserver, batch_size=8, flush_interval=60)
    try:
        ids = [client.track("Clicked", person_id=f"user_{i}") for i in range(8)]
        report = client.shutdown(timeout=10)
    finally:
        client.shutdown(timeout=1)
    assert report["mixpanel"].delivered == 8 and report["mixpanel"].failed == 0
    batches = [decode(r)["records"] for r in requests_to(httpserver, "/track")]
    assert len(batches[0]) == 8  # refused whole, then split in halves until it fits
    accepted = [r["properties"]["$insert_id"] for b in batches if len(b) <= 2 for r in b]
    assert sorted(accepted) == sorted(ids)  # every event delivered exactly once


def test_body_above_the_limit_asks_for_a_split_before_sending(httpserver: HTTPServer) -> None:
    provider = _provider(httpserver)
    blob = "x" * 250_000
    try:
        with pytest.raises(BatchTooLarge):
            provider.send([_event(i, blob=blob) for i in range(10)])
    finally:
        provider.close()
    assert httpserver.log == []


def test_residency_hosts_and_bare_names() -> None:
    from fanout_mixpanel import RESIDENCY_HOSTS, parse_api_host

    for host in RESIDENCY_HOSTS:
        assert parse_api_host(host + "/") == host
    assert parse_api_host("api-eu.mixpanel.com") == "https://api-eu.mixpanel.com"
    with pytest.raises(ValueError):
        parse_api_host("ftp://api.mixpanel.com")
