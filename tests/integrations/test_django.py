"""The Django middleware, sync and async: under Django's test clients and real servers.

The authenticated user's primary key becomes ``person_id``; the browser's PostHog cookie
gives the anonymous and session ids.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from .conftest import PYTHON, app_env, free_port, stored

APPS = Path(__file__).parent / "apps"
DISTINCT_ID = "0190f5a2-7d1e-7c3b-9a4f-2b1c0d9e8f7a"
SESSION_ID = "0190f5a2-7d1e-7c3b-9a4f-aaaaaaaaaaaa"


def posthog_cookie() -> tuple[str, str]:
    now_ms = int(time.time() * 1000)
    value = {"distinct_id": DISTINCT_ID, "$device_id": DISTINCT_ID,
             "$sesid": [now_ms, SESSION_ID, now_ms - 1000], "$user_state": "anonymous"}
    return "ph_phc_testtoken_posthog", quote(json.dumps(value, separators=(",", ":")))


@pytest.fixture(scope="module")
def django_project(tmp_path_factory):
    db = tmp_path_factory.mktemp("django") / "db.sqlite3"
    sys.path.insert(0, str(APPS))
    os.environ["DJANGO_SETTINGS_MODULE"] = "django_site"
    os.environ["DJANGO_TEST_DB"] = str(db)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    yield
    sys.path.remove(str(APPS))
    del os.environ["DJANGO_SETTINGS_MODULE"], os.environ["DJANGO_TEST_DB"]


def test_sync_middleware_under_the_test_client(django_project, default_client, collector):
    from django.test import Client

    http = Client()
    pk = http.get("/login", {"user": "alice"}).json()["pk"]
    name, value = posthog_cookie()
    http.cookies[name] = value
    assert http.get("/track", {"i": 1}).status_code == 200
    anon = Client()  # a first-time visitor: no cookie, no user
    assert anon.get("/track", {"i": 2}).status_code == 200
    assert default_client.flush(timeout=10).ok
    logged_in, first_visit = stored(collector)
    assert logged_in["person_id"] == str(pk)
    assert logged_in["anonymous_id"] == DISTINCT_ID
    assert logged_in["context"]["session_id"] == SESSION_ID
    assert logged_in["context"]["path"] == "/track"
    assert first_visit.get("person_id") is None and first_visit["anonymous_id"]


def test_a_returning_visitor_is_read_once_and_kept(
    django_project, default_client, collector, monkeypatch
):
    """The Django middleware keeps its readings like the WSGI and ASGI ones: a visitor whose
    PostHog cookie has a new activity time on each request is read in full once per
    ``Cookie`` header (twice: logging in adds Django's session cookie to it), and every
    event carries its ids (and, once logged in, its person)."""
    from django.test import Client

    from fanout.integrations import _request

    reads: list[object] = []
    real = _request.read_request_ids_from

    def counted(*args: object, **kwargs: object) -> object:
        reads.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_request, "read_request_ids_from", counted)
    http = Client()
    name, value = posthog_cookie()
    now_ms = int(time.time() * 1000)
    for i in range(4):
        if i == 2:
            pk = http.get("/login", {"user": "carol"}).json()["pk"]
        http.cookies[name] = value.replace(f"%5B{value.split('%5B')[1].split('%2C')[0]}",
                                           f"%5B{now_ms + i * 1000}")
        assert http.get("/track", {"i": i}).status_code == 200
    assert len(reads) == 2  # requests 0 and 2: 1 and 3 recalled
    assert default_client.flush(timeout=10).ok
    events = sorted(stored(collector), key=lambda e: e["properties"]["i"])
    assert [e["properties"]["i"] for e in events] == [0, 1, 2, 3]  # each stored once
    assert {e["anonymous_id"] for e in events} == {DISTINCT_ID}
    assert {e["context"]["session_id"] for e in events} == {SESSION_ID}
    assert [e.get("person_id") for e in events] == [None, None, str(pk), str(pk)]


def test_async_middleware_under_the_async_test_client(django_project, default_client, collector):
    from django.test import AsyncClient

    async def main() -> int:
        http = AsyncClient()
        pk = (await http.get("/login", {"user": "bob"})).json()["pk"]
        name, value = posthog_cookie()
        http.cookies[name] = value
        assert (await http.get("/atrack", {"i": 1})).status_code == 200
        assert (await http.get("/track", {"i": 2})).status_code == 200
        return pk

    pk = asyncio.run(main())
    assert default_client.flush(timeout=10).ok
    events = stored(collector)
    assert [e["properties"]["mode"] for e in events] == ["async", "sync"]
    assert {e["person_id"] for e in events} == {str(pk)}
    assert {e["anonymous_id"] for e in events} == {DISTINCT_ID}


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uvicorn-asgi", "gunicorn-wsgi"])
def test_real_server_sigterm_after_last_response_loses_nothing(collector, tmp_path, server):
    env = app_env(collector, FANOUT_FLUSH_INTERVAL="30", FANOUT_SHUTDOWN_TIMEOUT="20",
                  DJANGO_SETTINGS_MODULE="django_site", DJANGO_TEST_DB=str(tmp_path / "db.sqlite3"))
    subprocess.run([PYTHON, "-m", "django", "migrate", "-v", "0"], env=env, check=True, timeout=120)
    port = free_port()
    argv = {
        "uvicorn-asgi": [PYTHON, "-m", "uvicorn", "django_servers:asgi", "--workers", "2",
                         "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        "gunicorn-wsgi": [PYTHON, "-m", "gunicorn", "django_servers:wsgi", "--workers", "2",
                          "--bind", f"127.0.0.1:{port}"],
    }[server]
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.2)
            name, value = posthog_cookie()
            with httpx.Client(base_url=url, timeout=10, cookies={name: value}) as http:
                pk = http.get("/login", params={"user": "carol"}).json()["pk"]
                ids = [http.get("/track" if n % 2 else "/atrack", params={"i": n}).json()["event_id"]
                       for n in range(100)]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert len(set(ids)) == 100  # sent
    events = stored(collector)
    assert sorted(e["event_id"] for e in events) == sorted(ids), log.read_text()[-3000:]
    assert {e["person_id"] for e in events} == {str(pk)}
    assert {e["anonymous_id"] for e in events} == {DISTINCT_ID}


def test_inside_the_asgi_middleware_it_encloses_the_asgi_request(
    django_project, default_client, collector
):
    """Django's middleware inside fanout's ASGI middleware (which answers the lifespan
    for Django's ASGI handler) finds the ASGI one's context on ``request.scope`` and
    encloses it: the person its hook names reaches both views' events."""
    from django.core.asgi import get_asgi_application

    from fanout.integrations.asgi import FanoutMiddleware

    app = FanoutMiddleware(get_asgi_application(), person_id=lambda scope: "user-1")
    headers = {"X-Fanout-Anonymous-Id": "visitor-1"}

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as h:
            return [(await h.get(path, params={"i": i}, headers=headers)).status_code
                    for i, path in enumerate(["/atrack", "/track"])]

    assert asyncio.run(main()) == [200, 200]
    assert default_client.flush(timeout=10).ok
    events = stored(collector)
    assert [e["properties"]["mode"] for e in events] == ["async", "sync"]
    assert [(e["person_id"], e["anonymous_id"]) for e in events] == [("user-1", "visitor-1")] * 2
