"""The WSGI middleware and the Flask helper: in-process, under gunicorn, and a Stripe webhook."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import logging
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

import fanout

from .conftest import PYTHON, app_env, free_port, stored

APPS = Path(__file__).parent / "apps"
SECRET = "whsec_test_secret"


@pytest.fixture
def flask_app(collector, monkeypatch):
    from collector.conftest import collector_client

    monkeypatch.syspath_prepend(str(APPS))
    import flask_app as module

    client = collector_client(collector.url, collector.key)
    previous = fanout.set_default_client(client)
    yield module.app
    fanout.set_default_client(previous)
    client.shutdown(timeout=10)


def _signed(payload: bytes, secret: str = SECRET) -> str:
    """The ``Stripe-Signature`` header Stripe sends (scheme v1: HMAC-SHA256 of ``t.payload``)."""
    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def test_flask_requests_carry_the_browser_id_person_and_request_context(flask_app, collector):
    http = flask_app.test_client()
    http.set_cookie("ajs_anonymous_id", "%22seg-anon-1%22")  # Segment's older JSON-quoted form
    r = http.get(
        "/track?i=1&utm_source=mail&utm_campaign=spring",
        headers={
            "User-Agent": "UA/1",
            "Referer": "https://ref.example/",
            "Accept-Language": "de-DE,de;q=0.9",
        },
    )
    assert r.status_code == 200
    r = http.get("/track?i=2", headers={"X-Test-User": "user-5"})
    assert r.status_code == 200
    assert fanout.flush(timeout=10).ok
    first, second = stored(collector)
    assert first["anonymous_id"] == "seg-anon-1" and first.get("person_id") is None
    assert first["context"] == {
        "ip": "127.0.0.0",
        "user_agent": "UA/1",
        "locale": "de-DE",
        "url": "http://localhost/track?i=1&utm_source=mail&utm_campaign=spring",
        "path": "/track",
        "referrer": "https://ref.example/",
        "campaign": {"source": "mail", "name": "spring"},
    }
    assert (second["person_id"], second["anonymous_id"]) == ("user-5", "seg-anon-1")


def test_a_streamed_body_is_tracked_inside_the_request_context(flask_app, collector):
    http = flask_app.test_client()
    r = http.get("/stream", headers={"X-Fanout-Anonymous-Id": "streamer"})
    assert r.data == b"0\n1\n2\n"
    assert fanout.flush(timeout=10).ok
    events = stored(collector)
    assert [e["properties"]["i"] for e in events] == [0, 1, 2]
    assert {e["anonymous_id"] for e in events} == {"streamer"}


def hooked_app():  # type: ignore[no-untyped-def]
    """A Flask app whose ``person_id`` hook names ``X-User``, and fails on ``X-Break``."""
    from flask import Flask, request, stream_with_context

    from fanout.integrations.flask import init_app

    def person() -> str | None:
        if request.headers.get("X-Break"):
            raise LookupError("session store down")
        return request.headers.get("X-User")

    app = Flask("hooked")
    init_app(app, person_id=person)

    @app.get("/quiet")
    def quiet():  # type: ignore[no-untyped-def]
        return "nothing tracked"

    @app.get("/track")
    def track():  # type: ignore[no-untyped-def]
        fanout.track("page.viewed")
        return "tracked"

    @app.get("/stream")
    def stream():  # type: ignore[no-untyped-def]
        def body():  # type: ignore[no-untyped-def]
            for i in range(2):
                fanout.track("chunk.sent", properties={"i": i})
                yield f"{i}\n"

        wrap = stream_with_context if request.args.get("with_context") else iter
        return app.response_class(wrap(body()), mimetype="text/plain")

    return app


def test_a_failing_person_id_hook_is_logged_and_the_request_goes_on(
    default_client, collector, caplog
):
    """As with the ASGI middleware's hook: the error is logged (logger ``fanout``), the
    request is served, its events carry the browser's id and no person."""
    http = hooked_app().test_client()
    broken = {"X-Break": "1", "X-Fanout-Anonymous-Id": "visitor-1"}
    with caplog.at_level(logging.ERROR, logger="fanout"):
        responses = [http.get(path, headers=broken) for path in ("/quiet", "/track")]
    assert [(r.status_code, r.text) for r in responses] == [
        (200, "nothing tracked"),
        (200, "tracked"),
    ]
    failures = [r for r in caplog.records if r.name == "fanout"]
    assert [(r.levelno, r.exc_info and r.exc_info[0]) for r in failures] == [
        (logging.ERROR, LookupError)
    ] * 2
    assert "person_id hook" in failures[0].getMessage()
    assert default_client.flush(timeout=10).ok
    events = stored(collector)
    assert [(e["name"], e.get("person_id"), e["anonymous_id"]) for e in events] == [
        ("page.viewed", None, "visitor-1")
    ]


@pytest.mark.parametrize("with_context", [False, True], ids=["plain", "stream_with_context"])
def test_a_streamed_body_keeps_its_person_and_the_next_request_has_none(
    default_client, collector, with_context
):
    """Flask's teardown runs when ``wsgi_app`` returns, before the server iterates the
    body: the person stays for the body's events all the same, and goes no further. The
    two bodies are alive at once in this thread (the test client reads a body's first
    chunk, then the rest when asked): the second request, another visitor's, has none."""
    http = hooked_app().test_client()
    query = {"with_context": "1"} if with_context else {}
    first = http.get(
        "/stream",
        query_string=query,
        headers={"X-User": "user-7", "X-Fanout-Anonymous-Id": "visitor-1"},
    )
    second = http.get("/stream", query_string=query, headers={"X-Fanout-Anonymous-Id": "visitor-2"})
    assert [second.data, first.data] == [b"0\n1\n"] * 2
    assert default_client.flush(timeout=10).ok
    events = stored(collector)
    got = sorted((e["anonymous_id"], e["properties"]["i"], e.get("person_id")) for e in events)
    assert got == [
        ("visitor-1", 0, "user-7"),
        ("visitor-1", 1, "user-7"),
        ("visitor-2", 0, None),
        ("visitor-2", 1, None),
    ]
    assert {e["name"] for e in events} == {"chunk.sent"}


def test_a_redelivered_stripe_webhook_is_stored_once(flask_app, collector):
    payload = json.dumps(
        {
            "id": "evt_1PqTest",
            "object": "event",
            "type": "checkout.session.completed",
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": "cs_test_1",
                    "object": "checkout.session",
                    "client_reference_id": "user-9",
                    "amount_total": 4200,
                    "currency": "eur",
                }
            },
        }
    ).encode()
    http = flask_app.test_client()
    codes = [
        http.post(
            "/stripe/webhook", data=payload, headers={"Stripe-Signature": _signed(payload)}
        ).status_code
        for _ in range(2)  # Stripe redelivers when it saw no 2xx in time
    ]
    forged = http.post(
        "/stripe/webhook",
        data=payload,
        headers={"Stripe-Signature": _signed(payload, "whsec_wrong")},
    )
    assert codes == [204, 204] and forged.status_code == 400
    report = fanout.flush(timeout=10)
    assert report.ok
    assert report["collector"].delivered == 2  # sent twice ...
    events = stored(collector)
    assert len(events) == 1  # ... stored once
    (event,) = events
    assert (event["event_id"], event["person_id"]) == ("evt_1PqTest", "user-9")
    assert event["properties"] == {"amount_total": 4200, "currency": "eur"}


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gunicorn") is None,
    reason="gunicorn is not installed (it comes with the test extra)",
)
def test_gunicorn_preload_three_sync_workers_sigterm_loses_nothing(collector, tmp_path):
    port = free_port()
    env = app_env(collector, FANOUT_FLUSH_INTERVAL="30", FANOUT_SHUTDOWN_TIMEOUT="20")
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "gunicorn",
                "flask_app:app",
                "--preload",
                "--workers",
                "3",
                "--bind",
                f"127.0.0.1:{port}",
                "--graceful-timeout",
                "30",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
            with httpx.Client(timeout=10) as http:
                ids = [
                    http.get(f"{url}/track", params={"i": n % 140}).json()["event_id"]
                    for n in range(150)
                ]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert len(ids) == 150 and len(set(ids)) == 140  # sent: 150 calls, 140 distinct ids
    events = stored(collector)
    assert sorted(e["event_id"] for e in events) == sorted(set(ids)), log.read_text()[-3000:]


def test_wsgi_same_request_again_recalls_one_context_and_a_new_visitor_reads_anew():
    """Called as a server calls it (a fresh environ per request): a repeated request shares
    one context object from its second time (the first, maybe a new visitor's only one, is
    read and not kept); another visitor, or a visitor without ids, never gets it."""
    from fanout import _context
    from fanout.integrations.wsgi import FanoutMiddleware

    seen: list[fanout.RequestContext | None] = []

    def app(environ, start_response):
        seen.append(_context.current())
        start_response("204 No Content", [])
        return [b""]

    def environ(**headers: str) -> dict[str, str]:
        return {
            "REQUEST_METHOD": "GET",
            "wsgi.url_scheme": "https",
            "PATH_INFO": "/p",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "utm_source=mail",
            "REMOTE_ADDR": "203.0.113.9",
            "SERVER_NAME": "shop.example",
            "SERVER_PORT": "443",
            **headers,
        }

    middleware = FanoutMiddleware(app)
    v1 = {"HTTP_X_FANOUT_ANONYMOUS_ID": "v1"}
    for env in (
        environ(**v1),
        environ(**v1),
        environ(**v1),
        environ(HTTP_X_FANOUT_ANONYMOUS_ID="v2"),
        environ(),
        environ(),
    ):
        list(middleware(env, lambda status, headers, exc_info=None: None))
    assert seen[0] == seen[1] and seen[0] is not seen[1]
    assert seen[1] is seen[2] and seen[1].anonymous_id == "v1"
    assert seen[1].values["campaign"] == {"source": "mail"}
    assert seen[3].anonymous_id == "v2" and seen[3].values == seen[1].values
    # no id at all: a generated one, new for each request
    assert seen[4].anonymous_id_generated and seen[5].anonymous_id_generated
    assert seen[4].anonymous_id != seen[5].anonymous_id


def test_wsgi_header_values_that_are_not_text_are_left_out_as_before():
    """A server's oddity (a bytes or list header value in the environ) is ignored, as the
    headers dict the middleware built before ignored it; an unhashable one cannot be kept,
    so that request is read each time, never failed."""
    from fanout import _context
    from fanout.integrations.wsgi import FanoutMiddleware

    seen: list[fanout.RequestContext | None] = []

    def app(environ, start_response):
        seen.append(_context.current())
        start_response("204 No Content", [])
        return [b""]

    base = {
        "REQUEST_METHOD": "GET",
        "wsgi.url_scheme": "https",
        "PATH_INFO": "/p",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "203.0.113.9",
        "HTTP_HOST": "shop.example",
        "HTTP_X_FANOUT_ANONYMOUS_ID": "v1",
    }
    middleware = FanoutMiddleware(app)
    for odd in ({"HTTP_USER_AGENT": b"bytes-ua"}, {"HTTP_REFERER": ["a", "list"]}) * 3:
        list(middleware({**base, **odd}, lambda status, headers, exc_info=None: None))
    assert len(seen) == 6
    for ctx in seen:
        assert ctx is not None and ctx.anonymous_id == "v1"
        assert dict(ctx.values) == {
            "ip": "203.0.113.9",
            "url": "https://shop.example/p",
            "path": "/p",
        }
