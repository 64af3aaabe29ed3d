"""The ``webhook`` provider, checked by the receiver code that docs/providers/webhook.md shows.

The verification block is extracted from the docs page and executed as it stands; a real
pytest-httpserver receiver on 127.0.0.1 runs it on every request and answers 401 to what it
refuses. Genuine requests from the provider pass; a forged one (altered body, wrong
secret, no header), a stale replay and a fresh replay of an accepted request are refused.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import fanout
from fanout.providers.webhook import SIGNATURE_HEADER, WebhookProvider

DOCS = Path(__file__).resolve().parent.parent / "docs" / "providers" / "webhook.md"
SECRET = "whsec_Zq8TESTsecretSIGNINGkey0123456789"
PATH = "/hooks/fanout"


def _docs_verify() -> Any:
    """The ``verify`` function exactly as the docs page writes it."""
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(r"<!-- webhook-verify -->\n```python\n(.*?)```", text, re.S)
    assert match, "the verification block is missing from docs/providers/webhook.md"
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), str(DOCS), "exec"), namespace)  # noqa: S102 - the docs' code
    return namespace["verify"]


verify = _docs_verify()


class Receiver:
    """A receiver as the docs describe it: verify, then accept; refusals counted."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.seen: set[str] = set()
        self.accepted: list[dict[str, Any]] = []
        self.refused = 0
        self.raw: list[tuple[bytes, str]] = []

    def __call__(self, request: Request) -> Response:
        body = request.get_data()
        header = request.headers.get(SIGNATURE_HEADER, "")
        self.raw.append((body, header))
        if not verify(body, header, self.secret, self.seen):
            self.refused += 1
            return Response("bad signature", status=401)
        self.accepted.extend(json.loads(body)["events"])
        return Response("", status=204)


def _client(server: HTTPServer, secret: str = SECRET, **kwargs: Any) -> fanout.Client:
    return fanout.Client(
        providers=["webhook"],
        settings={"webhook": {"url": f"http://127.0.0.1:{server.port}{PATH}", "secret": secret}},
        environ={},
        load_entry_points=False,
        register_atexit=False,
        **kwargs,
    )


def _counts(report: Any) -> tuple[int, int, int, int, int]:
    r = report["webhook"]
    return r.delivered, r.failed, r.dropped, r.skipped, r.retries


def test_genuine_batches_verify_and_carry_canonical_events(httpserver: HTTPServer) -> None:
    receiver = Receiver(SECRET)
    httpserver.expect_request(PATH, method="POST").respond_with_handler(receiver)
    client = _client(httpserver, batch_size=3)
    try:
        ids = [
            client.track("Order Completed", person_id="user_123", properties={"n": i})
            for i in range(7)
        ]
        ids.append(client.identify("user_123", traits={"plan": "pro"}))
        ids.append(client.group("company", "acme", person_id="user_123"))
        report = client.shutdown(timeout=10)
    finally:
        client.shutdown(timeout=1)
    assert _counts(report) == (9, 0, 0, 0, 0), report
    assert receiver.refused == 0 and len(receiver.raw) == 3  # batches of 3
    assert sorted(e["event_id"] for e in receiver.accepted) == sorted(ids)  # none twice
    events = [fanout.Event.from_dict(e) for e in receiver.accepted]
    assert [e.to_dict() for e in events] == receiver.accepted  # exactly the canonical form
    assert {e["kind"] for e in receiver.accepted} == {"track", "identify", "group"}


def test_forged_and_replayed_requests_are_refused(httpserver: HTTPServer) -> None:
    receiver = Receiver(SECRET)
    httpserver.expect_request(PATH, method="POST").respond_with_handler(receiver)
    client = _client(httpserver)
    try:
        event_id = client.track("Refund Issued", person_id="user_123", properties={"amount": 10})
        report = client.shutdown(timeout=10)
    finally:
        client.shutdown(timeout=1)
    assert _counts(report) == (1, 0, 0, 0, 0), report
    (body, header) = receiver.raw[0]
    url = f"http://127.0.0.1:{httpserver.port}{PATH}"

    def post(data: bytes, signature: str | None) -> int:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
        return httpx.post(url, content=data, headers=headers, timeout=5).status_code

    forged_body = body.replace(b'"amount":10', b'"amount":10000')
    assert forged_body != body
    assert post(forged_body, header) == 401  # altered body, genuine signature
    forger = WebhookProvider(url, "not-the-secret")
    try:
        with pytest.raises(fanout.PermanentError):  # signed with the wrong secret: 401
            forger.send([fanout.Event.from_dict({"kind": "track", "name": "x", "person_id": "u"})])
    finally:
        forger.close()
    assert post(body, None) == 401  # no signature at all
    assert post(body, header) == 401  # fresh replay of the accepted request
    assert [e["event_id"] for e in receiver.accepted] == [event_id]  # still once
    assert receiver.refused == 4

    # A stale replay: to a receiver that never saw it, after the tolerance has passed.
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert verify(body, header, SECRET, set(), now=timestamp + 301) is False
    assert verify(body, header, SECRET, set(), now=timestamp + 299) is True


def test_refused_signature_is_dead_lettered_and_the_secret_never_shows(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver("the-receivers-other-secret")
    httpserver.expect_request(PATH, method="POST").respond_with_handler(receiver)
    caplog.set_level(logging.DEBUG)
    failures: list[fanout.DeliveryFailure] = []
    client = _client(httpserver, on_error=failures.append)
    try:
        client.track("x", person_id="user_123")
        report = client.shutdown(timeout=10)
        text = repr(client) + repr(report) + caplog.text + " ".join(map(str, failures))
    finally:
        client.shutdown(timeout=1)
    assert _counts(report) == (0, 1, 0, 0, 0), report
    assert receiver.refused == 1 and len(failures) == 1
    assert "401" in str(failures[0])
    assert SECRET not in text


def test_503_is_retried_and_the_retry_verifies(httpserver: HTTPServer) -> None:
    receiver = Receiver(SECRET)
    httpserver.expect_oneshot_request(PATH).respond_with_data("busy", status=503)
    httpserver.expect_request(PATH, method="POST").respond_with_handler(receiver)
    client = _client(httpserver, delivery={"webhook": {"retry_base": 0.01, "retry_cap": 0.05}})
    try:
        event_id = client.track("x", person_id="user_123")
        report = client.shutdown(timeout=10)
    finally:
        client.shutdown(timeout=1)
    assert _counts(report) == (1, 0, 0, 0, 1), report
    assert len(httpserver.log) == 2 and receiver.refused == 0
    assert [e["event_id"] for e in receiver.accepted] == [event_id]


def test_oversized_batch_is_split_before_sending() -> None:
    provider = WebhookProvider("http://127.0.0.1:9/never", SECRET)
    big = fanout.Event.from_dict(
        {"kind": "track", "name": "x", "person_id": "u", "properties": {"blob": "x" * 600_000}}
    )
    try:
        with pytest.raises(fanout.BatchTooLarge):
            provider.send([big, big])
    finally:
        provider.close()
    assert "whsec" not in repr(provider)
