"""How PostHog's answers are classified, end to end through a real channel.

500 is retried and then delivered, 429's Retry-After is the wait the channel uses, 401 is
permanent (dead-lettered, ``on_error``) without the key appearing anywhere, 413 splits the
batch, and a batch mixing live and historical events never posts an event twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import socket
from pathlib import Path

import fanout_posthog
import pytest
from posthog_support import API_KEY, harness, make_client
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import fanout
from fanout.provider import ProviderConfig
from fanout.testing import decode_request, recorded, server_url

OK = json.dumps({"status": 1})


def delivered_uuids(server: HTTPServer) -> list[str]:
    """uuids of every event in a ``/batch/`` request that was answered 200."""
    return [
        msg["uuid"]
        for r in recorded(server, "/batch/")
        if r.status == 200
        for msg in r.json()["batch"]
    ]


def test_500_is_retried_then_delivered(server: HTTPServer) -> None:
    server.expect_oneshot_request("/batch/").respond_with_data("upstream down", status=500)
    client = make_client(server)
    try:
        eid = client.track("paid", person_id="u1", properties={"n": 1})
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=5)
    assert report["posthog"].delivered == 1
    first, second = recorded(server, "/batch/")
    assert first.json()["batch"] == second.json()["batch"]  # the same event, again
    assert delivered_uuids(server) == [eid]
    assert client.stats()["posthog"].failed == 0


def test_429_retry_after_is_the_wait(server: HTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    server.expect_oneshot_request("/batch/").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "2"}
    )
    client = make_client(server)
    try:
        with caplog.at_level(logging.WARNING, logger="fanout"):
            eid = client.track("paid", person_id="u1")
            report = client.flush(timeout=15)
    finally:
        client.shutdown(timeout=5)
    assert report["posthog"].delivered == 1
    assert delivered_uuids(server) == [eid]
    # Without the header the test backoff is 0.05 s; the channel waits the 2 s the header
    # asked for, spread by up to 25 % so that clients sent away together return apart.
    assert re.search(r"retrying 1 event\(s\) in 2\.[0-5]s", caplog.text), caplog.text


def test_provider_reports_retry_after_and_status(server: HTTPServer) -> None:
    server.clear()
    server.expect_request("/batch/").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "7"}
    )
    provider = fanout_posthog.from_config(
        ProviderConfig("posthog", {"api_key": API_KEY, "host": server_url(server)})
    )
    try:
        with pytest.raises(fanout.RetryableError) as info:
            provider.send([_event()])
    finally:
        provider.close()
    assert info.value.retry_after == 7.0 and info.value.status_code == 429


def test_401_is_permanent_and_the_key_never_shows(
    server: HTTPServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A server that echoes the key back in its error body, the worst case for leaks.
    server.clear()
    server.expect_request("/batch/").respond_with_json(
        {"type": "authentication_error", "detail": f"Project API key invalid: {API_KEY}"},
        status=401,
    )
    failures: list[fanout.DeliveryFailure] = []
    client = make_client(server, on_error=failures.append, dead_letter_dir=str(tmp_path))
    try:
        with caplog.at_level(logging.DEBUG):
            client.track("paid", person_id="u1", properties={"plan": "pro"})
            report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=5)
    assert len(recorded(server, "/batch/")) == 1  # not retried
    assert report["posthog"].delivered == 0
    [failure] = failures
    assert failure.reason == "permanent_error" and failure.status_code == 401
    assert "401" in failure.error
    dead = "".join(p.read_text() for p in tmp_path.iterdir())
    assert dead, "the event must be dead-lettered"
    provider = client._channels[0].provider
    for text in (failure.error, repr(failure), dead, caplog.text, repr(client),
                 repr(client.stats()), repr(provider), str(failure)):
        assert API_KEY not in text


def test_400_malformed_is_permanent(server: HTTPServer) -> None:
    server.clear()
    server.expect_request("/batch/").respond_with_data("invalid payload", status=400)
    failures: list[fanout.DeliveryFailure] = []
    client = make_client(server, on_error=failures.append)
    try:
        client.track("paid", person_id="u1")
        client.flush(timeout=10)
    finally:
        client.shutdown(timeout=5)
    assert [f.status_code for f in failures] == [400]
    assert len(recorded(server, "/batch/")) == 1


def test_network_error_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    failures: list[fanout.DeliveryFailure] = []
    client = fanout.Client(
        providers=["posthog"],
        settings={"posthog": {"api_key": API_KEY, "host": f"http://127.0.0.1:{port}"}},
        environ={},
        register_atexit=False,
        load_entry_points=False,
        plugins=[fanout_posthog],
        on_error=failures.append,
        max_retries=2,
        delivery={"posthog": {"retry_base": 0.01, "retry_cap": 0.05}},
    )
    try:
        client.track("paid", person_id="u1")
        client.flush(timeout=10)
    finally:
        client.shutdown(timeout=5)
    [failure] = failures
    assert failure.reason == "retries_exhausted"
    assert "connection failed" in failure.error and API_KEY not in failure.error
    assert client.stats()["posthog"].retries == 2


def _limit_two(request: Request) -> Response:
    if len(decode_request(request).json()["batch"]) > 2:
        return Response("Payload Too Large", status=413)
    return Response(OK, status=200, content_type="application/json")


def test_413_splits_until_it_fits(server: HTTPServer) -> None:
    server.clear()
    server.expect_request("/batch/").respond_with_handler(_limit_two)
    client = make_client(server, batch_size=10)
    try:
        ids = [client.track("e", person_id=f"u{i}", properties={"i": i}) for i in range(5)]
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=5)
    assert report["posthog"].delivered == 5
    assert sorted(delivered_uuids(server)) == sorted(ids)
    assert any(r.status == 413 for r in recorded(server))


def _event(age: dt.timedelta = dt.timedelta(0), name: str = "e") -> fanout.Event:
    return fanout.Event.from_dict({
        "kind": "track",
        "name": name,
        "person_id": "u1",
        "timestamp": (dt.datetime.now(dt.timezone.utc) - age).isoformat(),
    })


def test_mixed_batch_retry_does_not_repost_the_delivered_part(server: HTTPServer) -> None:
    failed_once: list[bool] = []

    def historical_fails_once(request: Request) -> Response:
        if decode_request(request).json()["historical_migration"] and not failed_once:
            failed_once.append(True)
            return Response("busy", status=503)
        return Response(OK, status=200, content_type="application/json")

    server.clear()
    server.expect_request("/batch/").respond_with_handler(historical_fails_once)
    events = [_event(), _event(dt.timedelta(days=9)), _event(), _event(dt.timedelta(days=400))]
    client = make_client(server, batch_size=10)
    try:
        for e in events:
            client.send(e)
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=5)
    assert report["posthog"].delivered == 4
    sent = [m["uuid"] for r in recorded(server) for m in r.json()["batch"]]
    live = {events[0].event_id, events[2].event_id}
    assert [u for u in sent if u in live] == [events[0].event_id, events[2].event_id]  # once
    assert sorted(delivered_uuids(server)) == sorted(e.event_id for e in events)
    flags = [r.json()["historical_migration"] for r in recorded(server)]
    assert flags == [False, True, True]


def test_mixed_batch_permanent_refusal_rejects_only_that_part(server: HTTPServer) -> None:
    def refuse_historical(request: Request) -> Response:
        if decode_request(request).json()["historical_migration"]:
            return Response("historical imports are not enabled", status=400)
        return Response(OK, status=200, content_type="application/json")

    server.clear()
    server.expect_request("/batch/").respond_with_handler(refuse_historical)
    failures: list[fanout.DeliveryFailure] = []
    events = [_event(), _event(dt.timedelta(days=9), "old"), _event()]
    client = make_client(server, batch_size=10, on_error=failures.append)
    try:
        for e in events:
            client.send(e)
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=5)
    assert report["posthog"].delivered == 2
    assert [e.name for f in failures for e in f.events] == ["old"]
    assert all(f.status_code == 400 for f in failures)


def test_mixed_batch_413_on_the_second_part_retries_only_that_part(server: HTTPServer) -> None:
    """The live part is delivered; the historical part's 413 comes back as ``pending``, so
    the channel retries (and then splits) only the historical events."""

    def historical_one_at_a_time(request: Request) -> Response:
        body = decode_request(request).json()
        if body["historical_migration"] and len(body["batch"]) > 1:
            return Response("payload too large", status=413)
        return Response(OK, status=200, content_type="application/json")

    server.clear()
    server.expect_request("/batch/").respond_with_handler(historical_one_at_a_time)
    old = dt.timedelta(days=9)
    events = [_event(), _event(old, "old"), _event(), _event(old, "old"), _event(old, "old")]
    run = harness(server, batch_size=10).run(lambda client: [client.send(e) for e in events])
    report = run.report["posthog"]
    assert report.delivered == 5
    assert (report.failed, report.dropped, report.pending) == (0, 0, 0)
    assert report.retries == 1  # the pending part's one retry; the splits are not retries
    sent = [m["uuid"] for r in run.requests for m in r.json()["batch"]]
    live = [events[0].event_id, events[2].event_id]
    assert [u for u in sent if u in live] == live  # posted once, in the first request
    delivered = [m["uuid"] for r in run.requests if r.status == 200 for m in r.json()["batch"]]
    assert sorted(delivered) == sorted(e.event_id for e in events)  # each exactly once
    assert [len(r.json()["batch"]) for r in run.requests if r.status == 413] == [3, 3, 2]


def test_a_200_that_is_not_posthogs_answer_is_retried_not_counted(server: HTTPServer) -> None:
    """A load balancer's welcome page is not PostHog saying it took the batch."""
    server.clear()
    server.expect_oneshot_request("/batch/").respond_with_data(
        "<html>welcome</html>", status=200, content_type="text/html"
    )
    server.expect_request("/batch/").respond_with_json({"status": 1})
    client = make_client(server, delivery={"posthog": {"retry_base": 0.05}})
    try:
        eid = client.track("paid", person_id="u1")
        report = client.flush(timeout=10)
    finally:
        client.shutdown(timeout=5)
    r = report["posthog"]
    assert (r.delivered, r.failed, r.retries) == (1, 0, 1)
    assert delivered_uuids(server) == [eid, eid]  # the HTML answer, then the real one
