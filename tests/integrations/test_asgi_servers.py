"""The ASGI middleware under real servers: SIGTERM right after the last response loses nothing.

uvicorn re-raises SIGTERM after its graceful stop, so the exit hook never runs; the
middleware's lifespan shutdown must deliver what is queued (``FANOUT_FLUSH_INTERVAL=30``
keeps every event queued until then). 300 requests carry 280 distinct event ids: the
collector must store exactly 280, once each.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import h11
import httpx
import pytest

from .conftest import PYTHON, app_env, free_port, stored

REQUESTS = 300
UNIQUE = 280


def _wait_ready(proc: subprocess.Popen[bytes], url: str) -> None:
    # Each worker imports the app on its own; poll until the health route answers.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become ready")


def _drive(url: str) -> list[str]:
    ids = []
    with httpx.Client(timeout=10) as http:
        for n in range(REQUESTS):
            r = http.get(f"{url}/track", params={"i": n % UNIQUE})
            r.raise_for_status()
            ids.append(r.json()["event_id"])
    return ids


def _sigterm_and_wait(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise


def _run(collector, argv: list[str], log: Path) -> tuple[list[str], str]:
    port = free_port()
    env = app_env(collector, FANOUT_FLUSH_INTERVAL="30", FANOUT_SHUTDOWN_TIMEOUT="20")
    gunicorn = "gunicorn" in argv
    bind = ["--bind", f"127.0.0.1:{port}"] if gunicorn else ["--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen([*argv, *bind], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_ready(proc, f"http://127.0.0.1:{port}")
            ids = _drive(f"http://127.0.0.1:{port}")
            # SIGTERM right after the last response, as Docker / Kubernetes / systemd send it.
            _sigterm_and_wait(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return ids, log.read_text(errors="replace")


def _check(collector, ids: list[str], output: str) -> None:
    assert len(ids) == REQUESTS  # sent: one track() per request
    assert len(set(ids)) == UNIQUE
    events = stored(collector)
    stored_ids = [e["event_id"] for e in events]
    assert len(stored_ids) == UNIQUE, output[-3000:]  # lost: 0, duplicates stored: 0
    assert sorted(stored_ids) == sorted(set(ids))
    assert all(e["name"] == "request.handled" for e in events)
    # the request context reached every event: a generated anonymous id and the peer IP
    assert all(e["context"]["ip"] == "127.0.0.0" for e in events)
    assert all(e["context"]["path"] == "/track" for e in events)


def test_uvicorn_two_workers_sigterm_after_last_response_loses_nothing(collector, tmp_path):
    argv = [PYTHON, "-m", "uvicorn", "asgi_app:app", "--workers", "2", "--host", "127.0.0.1",
            "--no-access-log"]
    ids, output = _run(collector, argv, tmp_path / "server.log")
    _check(collector, ids, output)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gunicorn") is None,
    reason="gunicorn is not installed (it comes with the test extra)",
)
def test_gunicorn_uvicorn_worker_preload_sigterm_loses_nothing(collector, tmp_path):
    argv = [PYTHON, "-m", "gunicorn", "asgi_app:app", "--preload", "--workers", "3",
            "--worker-class", "uvicorn.workers.UvicornWorker", "--graceful-timeout", "30"]
    ids, output = _run(collector, argv, tmp_path / "server.log")
    _check(collector, ids, output)


def _read_responses(sock: socket.socket, requests: list[str]) -> list[bytes]:
    """Send ``requests`` in one write (pipelined) and read their responses' bodies, each
    checked for a 200 (h11, uvicorn's own HTTP/1.1 library, as the client: Django's
    responses come chunked)."""
    conn = h11.Connection(h11.CLIENT)
    sock.sendall("".join(requests).encode())
    bodies: list[bytes] = []
    for n in range(len(requests)):
        if n:
            conn.start_next_cycle()
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))  # (state)
        conn.send(h11.EndOfMessage())
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                assert data, "the server closed the connection"
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                assert event.status_code == 200, event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        bodies.append(body)
    return bodies


#: app -> (the path of request n, the event id its response names). Django's: its own
#: middleware inside the ASGI one, a sync and an async view by turns.
PIPELINED_APPS = {
    "asgi_app:app": lambda n: ("/track", f"req-{n}"),
    "django_servers:asgi": lambda n: (
        ("/atrack", f"areq-{n}") if n % 4 < 2 else ("/track", f"req-{n}")
    ),
}


@pytest.mark.parametrize("app", list(PIPELINED_APPS))
def test_pipelined_requests_under_uvicorn_never_inherit_each_others_context(
    collector, tmp_path, app
):
    """uvicorn starts a pipelined request's task from inside the previous request's
    ``send`` (its ``on_response_complete``), so the task copies the previous request's
    context variables, fanout's request context included (cpython#140947; uvicorn's
    opt-in ``reset_contextvars``). A request context must not take that leftover as its
    enclosing one: a visitor with no id would get the previous visitor's anonymous id,
    session and campaign. Ten requests in one write, every other one from an identified
    visitor, the rest from no one."""
    port = free_port()
    env = app_env(collector, FANOUT_FLUSH_INTERVAL="30", FANOUT_SHUTDOWN_TIMEOUT="20",
                  DJANGO_SETTINGS_MODULE="django_site",
                  DJANGO_TEST_DB=str(tmp_path / "db.sqlite3"))
    argv = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port",
            str(port), "--no-access-log", "--http", "httptools"]
    route = PIPELINED_APPS[app]
    requests = []
    for n in range(10):
        if n % 2 == 0:
            extra = f"X-Fanout-Anonymous-Id: visitor-{n}\r\nX-Fanout-Session-Id: session-{n}\r\n"
            query = f"i={n}&utm_source=src-{n}"
        else:
            extra, query = "", f"i={n}"
        path = route(n)[0]
        requests.append(f"GET {path}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n")
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_ready(proc, f"http://127.0.0.1:{port}")
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                bodies = _read_responses(sock, requests)  # pipelined: all in one write
            assert [json.loads(b)["event_id"] for b in bodies] == [route(n)[1] for n in range(10)]
            _sigterm_and_wait(proc)  # (uvicorn re-raises it: -15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    events = {e["properties"]["i"]: e for e in stored(collector)}
    assert sorted(events) == list(range(10)), log.read_text(errors="replace")[-3000:]
    for n in range(0, 10, 2):
        assert events[n]["anonymous_id"] == f"visitor-{n}"
        assert events[n]["context"]["session_id"] == f"session-{n}"
        assert events[n]["context"]["campaign"] == {"source": f"src-{n}"}
    unknown = [events[n] for n in range(1, 10, 2)]
    seen = [(e["anonymous_id"], sorted(e["context"])) for e in unknown]
    # each its own generated id, nothing of the visitor before it
    assert len({e["anonymous_id"] for e in unknown}) == 5, seen
    assert not any(e["anonymous_id"].startswith("visitor-") for e in unknown), seen
    assert not any({"session_id", "campaign"} & set(e["context"]) for e in unknown), seen
